#!/usr/bin/env bash
# Bring one node's K3s (server or agent) to the wanted state: config file,
# cluster token, pinned version, service running. The same script is the
# create and the update command of the node's install resource, so it
# converges rather than assumes a fresh host:
# - K3s missing or another version: run the official install script pinned
#   to K3S_VERSION, which installs or upgrades in place and (re)starts K3s;
# - right version, but the config, the token or the servers' config changed:
#   restart the service so that it reads them again;
# - nothing changed: touch nothing (the service is only started if stopped).
# Servers then wait until their API server answers /readyz. Nodes stay
# NotReady until Cilium is installed, so node readiness is not waited for.
#
# The token arrives on stdin (never on a command line, which a failed
# command prints) and is written to TOKEN_PATH with mode 0600.
#
# Prints one summary line, e.g. "role=agent k3s=v1.33.3+k3s1 action=installed"; a
# server adds its cluster CA's fingerprint ("ca=sha256:..."), which changes only
# when the cluster was created anew: Pulumi reads the token and kubeconfig again then.
#
# Parameters:
#   ROLE                   server or agent (also the K3s subcommand)
#   K3S_VERSION            pinned release, e.g. v1.33.3+k3s1
#   CONFIG_PATH            where K3s reads its config (/etc/rancher/k3s/config.yaml)
#   CONFIG_YAML            the whole config file, rendered by the Pulumi program
#   TOKEN_PATH             where the config's token-file points
#   TOKEN_FROM_STDIN       true when the cluster token is on stdin
#   SERVERS_CONFIG_SHA256  agents: digest of the servers' configs (empty on
#                          servers); agents take settings such as
#                          disable-kube-proxy from a server when they start,
#                          so a new digest restarts them
#   SERVERS_CONFIG_MARKER  where an agent keeps the digest it started with
#   API_READY_TIMEOUT      seconds a server waits for its API server
#   PROGRESS_SECONDS       how often that wait prints a progress line (stderr)
#   INSTALLER_URL          the official install script (https://get.k3s.io)
#   K3S_BIN                where the install script puts k3s (/usr/local/bin/k3s)
#   SYSTEMD_DIR            where it writes the unit (/etc/systemd/system)
#   OWNER                  the Pulumi resource that manages K3s on this host
#   OWNER_MARKER           where OWNER is recorded, for the uninstall script
#   SERVER_CA              servers: the cluster CA certificate K3s generates
#   AIRGAP_BINARY          air-gapped: the verified k3s binary staged by
#                          airgap-stage.sh (empty: download from the internet)
#   AIRGAP_INSTALLER       air-gapped: the verified install script, run with
#                          INSTALL_K3S_SKIP_DOWNLOAD=true
#   AIRGAP_DIGEST          air-gapped: digest of every artifact; a new one
#                          restarts K3s (new images are imported at start)
#   AIRGAP_MARKER          where the digest K3s last started with is kept
set -euo pipefail
# @params
# @progress

# How often to ask the API server whether it is ready, and how long one
# request may take.
readonly API_POLL_SECONDS=2
readonly API_REQUEST_TIMEOUT=5s

# Files written here hold the token; nobody but root may read them.
umask 077
work_dir=$(mktemp -d)
trap 'progress_stop; rm -rf "$work_dir"' EXIT

log() {
  printf 'k3s-install: %s\n' "$*" >&2
}

fail() {
  log "$*"
  exit 1
}

# The systemd unit the install script creates for this role.
unit_name() {
  case $ROLE in
    server) printf 'k3s' ;;
    agent) printf 'k3s-agent' ;;
    *) fail "ROLE must be server or agent, not '${ROLE}'" ;;
  esac
}

# Write $2 to $1 unless $1 already holds exactly that, replacing it
# atomically so that K3s never reads half a file. Succeeds only when it
# wrote, so callers learn whether anything changed.
write_if_changed() {
  local path=$1 content=$2 staged
  staged="${work_dir}/staged"
  printf '%s' "$content" >"$staged"
  if [[ -f $path ]] && cmp -s "$staged" "$path"; then
    return 1
  fi
  mkdir -p "$(dirname "$path")"
  install -m 0600 "$staged" "${path}.new"
  mv -f "${path}.new" "$path"
}

read_token() {
  local token
  token=$(cat)
  [[ -n $token ]] || fail "expected the cluster token on stdin, got nothing"
  printf '%s' "$token"
}

installed_version() {
  [[ -x $K3S_BIN ]] || return 0
  "$K3S_BIN" --version 2>/dev/null | awk 'NR == 1 { print $3 }' || true
}

# @include download

run_installer() {
  local installer="${work_dir}/install.sh"
  if [[ -n $AIRGAP_BINARY ]]; then
    # Air-gapped: the binary goes in place first; the install script then only
    # writes the unit and (re)starts K3s.
    mkdir -p "$(dirname "$K3S_BIN")"
    install -m 0755 "$AIRGAP_BINARY" "${K3S_BIN}.new"
    mv -f "${K3S_BIN}.new" "$K3S_BIN"
    INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_VERSION="$K3S_VERSION" INSTALL_K3S_EXEC="$ROLE" \
      INSTALL_K3S_FORCE_RESTART=true sh "$AIRGAP_INSTALLER" >&2
    return 0
  fi
  if ! download "$INSTALLER_URL" "$installer"; then
    fail "could not download the K3s install script from ${INSTALLER_URL}"
  fi
  # FORCE_RESTART: the config may have changed even when the binary did not.
  INSTALL_K3S_VERSION="$K3S_VERSION" INSTALL_K3S_EXEC="$ROLE" INSTALL_K3S_FORCE_RESTART=true \
    sh "$installer" >&2
}

# Bounded: a server that never answers fails the step with the last error
# rather than hanging the deployment. While it waits (an etcd join can take
# minutes), a progress line goes to stderr every PROGRESS_SECONDS.
wait_for_api_server() {
  local deadline=$((SECONDS + API_READY_TIMEOUT)) last_error
  progress_start "the API server on this node to answer /readyz, at most ${API_READY_TIMEOUT}s"
  until last_error=$("$K3S_BIN" kubectl get --raw /readyz --request-timeout="$API_REQUEST_TIMEOUT" 2>&1); do
    if ((SECONDS >= deadline)); then
      progress_stop
      fail "the API server did not become ready within ${API_READY_TIMEOUT}s: ${last_error}"
    fi
    sleep "$API_POLL_SECONDS"
  done
  progress_stop
}

main() {
  local unit changed=0 action=unchanged version token
  unit=$(unit_name)

  if write_if_changed "$CONFIG_PATH" "$CONFIG_YAML"; then
    changed=1
  fi
  if [[ $TOKEN_FROM_STDIN == true ]]; then
    # A separate assignment, so that a missing token stops the script here.
    token=$(read_token)
    if write_if_changed "$TOKEN_PATH" "${token}"$'\n'; then
      changed=1
    fi
  fi
  if [[ -n $AIRGAP_DIGEST ]] && write_if_changed "$AIRGAP_MARKER" "${AIRGAP_DIGEST}"$'\n'; then
    changed=1
  fi
  if [[ -n $SERVERS_CONFIG_SHA256 ]] && write_if_changed "$SERVERS_CONFIG_MARKER" "${SERVERS_CONFIG_SHA256}"$'\n'; then
    changed=1
  fi

  # Not a reason to restart: only the uninstall script reads it.
  write_if_changed "$OWNER_MARKER" "${OWNER}"$'\n' || true

  version=$(installed_version)
  # The install script and systemctl return once K3s is up: minutes for a joining server.
  progress_start "K3s to be installed or (re)started"
  if [[ $version != "$K3S_VERSION" || ! -f "${SYSTEMD_DIR}/${unit}.service" ]] \
    || { [[ -n $AIRGAP_BINARY ]] && ! cmp -s "$AIRGAP_BINARY" "$K3S_BIN"; }; then
    log "installing K3s ${K3S_VERSION} as ${ROLE} (found: ${version:-none})"
    run_installer
    action=installed
  elif ((changed)); then
    log "configuration changed: restarting ${unit}"
    systemctl restart "$unit"
    action=restarted
  elif ! systemctl is-active --quiet "$unit"; then
    log "${unit} was not running: starting it"
    systemctl start "$unit"
    action=started
  fi
  progress_stop

  local ca=""
  if [[ $ROLE == server ]]; then
    wait_for_api_server
    ca=" ca=sha256:$(sha256sum "$SERVER_CA" | cut -d' ' -f1)"
  fi
  printf 'role=%s k3s=%s action=%s%s\n' "$ROLE" "$(installed_version)" "$action" "$ca"
}

main
