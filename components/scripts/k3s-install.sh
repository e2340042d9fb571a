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
# A failed first install (K3s was not installed here when the run started)
# puts the host back as it was: pulumi-command records a command in the state
# only once its create succeeded, so no uninstall would ever run for it. What
# the run wrote is removed (files it replaced are restored), K3s' own
# uninstall script runs if the official install script got as far as writing
# it, and what was there before (registries.yaml, staged image archives)
# survives that uninstall. A failed converge over an existing install leaves
# that install alone: the next run converges again.
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
#   K3S_DATA_DIR           K3s' data directory, which its uninstall script
#                          empties (/var/lib/rancher/k3s)
set -euo pipefail
# @params
# @progress

# How often to ask the API server whether it is ready, and how long one
# request may take.
readonly API_POLL_SECONDS=2
readonly API_REQUEST_TIMEOUT=5s

# Files written here hold the token; nobody but root may read them.
umask 077
first_install=0
work_dir=$(mktemp -d)
trap on_exit EXIT
# A cut SSH session or a cancelled `pulumi up` is a failure too: without these
# traps the EXIT trap would see the status of the last command, not a failure.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

log() {
  printf 'k3s-install: %s\n' "$*" >&2
}

# After a failed first install the failure stays the last line, below the
# one saying what was undone. A subshell's failure is told at once: its
# variables die with it.
failure=""
fail() {
  if ((first_install && BASH_SUBSHELL == 0)); then
    failure=$*
  else
    log "$*"
  fi
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

# --- undoing a failed first install ------------------------------------------------------

undo_dir="${work_dir}/undo"
uninstaller=""
# Files this run wrote (once each; a backup in undo_dir/<index> when one was
# replaced), directories it created (outermost first), what the official
# install script puts in place that was not there, and the directories K3s'
# uninstall script removes wholesale, with what was in them before this run.
written=()
new_dirs=()
installed=()
kept_roots=()
kept=()
problems=()

# Before anything is written: only a host without K3s gets undone.
begin_undo_log() {
  local unit=$1 bin_dir path root
  bin_dir=$(dirname "$K3S_BIN")
  uninstaller="${bin_dir}/k3s-uninstall.sh"
  [[ $ROLE == agent ]] && uninstaller="${bin_dir}/k3s-agent-uninstall.sh"
  if [[ -e $K3S_BIN || -e $uninstaller || -e "${SYSTEMD_DIR}/${unit}.service" ]]; then
    return 0
  fi
  first_install=1
  mkdir "$undo_dir"
  # What the install script writes before its uninstall script exists (a
  # failure in between leaves no uninstaller to remove them) and after it.
  for path in "$K3S_BIN" "${K3S_BIN}.new" "${bin_dir}/k3s-killall.sh" "${bin_dir}/kubectl" "${bin_dir}/crictl" \
    "${bin_dir}/ctr" "${SYSTEMD_DIR}/${unit}.service" "${SYSTEMD_DIR}/${unit}.service.env"; do
    [[ -e $path || -L $path ]] || installed+=("$path")
  done
  # K3s makes its data directory when it starts; its uninstall script empties
  # it but leaves it (and /var/lib/rancher) behind.
  note_new_dirs "$K3S_DATA_DIR"
  # K3s' uninstall script deletes /etc/rancher/k3s and its data directory,
  # with whatever other steps put there first (registries.yaml, the staged
  # image archives): those must come back after it.
  shopt -s globstar dotglob nullglob
  for root in "$(dirname "$CONFIG_PATH")" "$K3S_DATA_DIR"; do
    if [[ -d $root ]]; then
      kept_roots+=("$root")
      kept+=("$root"/**)
    fi
  done
  shopt -u globstar dotglob nullglob
}

# Before a file is written: note it once, with a copy of what it replaces,
# and the directories that writing it creates.
note_write() {
  local path=$1 index
  ((first_install)) || return 0
  for index in "${!written[@]}"; do
    [[ ${written[index]} == "$path" ]] && return 0
  done
  index=${#written[@]}
  written+=("$path")
  if [[ -e $path ]]; then
    cp -p -- "$path" "${undo_dir}/${index}" || return 1
  fi
  note_new_dirs "$(dirname "$path")"
}

note_new_dirs() {
  local dir=$1
  local -a missing=()
  ((first_install)) || return 0
  while [[ ! -e $dir ]]; do
    missing=("$dir" "${missing[@]}")
    dir=$(dirname "$dir")
  done
  new_dirs+=("${missing[@]}")
}

# Hard links (a copy across file systems) of what was in root before this
# run, in a directory beside it that K3s' uninstall script does not touch.
keep_aside() {
  local root=$1 hold=$2 path rel
  for path in "${kept[@]}"; do
    [[ $path == "$root"/?* ]] || continue
    rel=${path#"$root"/}
    if [[ -d $path && ! -L $path ]]; then
      mkdir -p -- "${hold}/${rel}"
      chmod --reference="$path" -- "${hold}/${rel}"
    elif [[ -e $path || -L $path ]]; then
      ln -P -- "$path" "${hold}/${rel}" 2>/dev/null || cp -a -- "$path" "${hold}/${rel}"
    fi
  done
}

put_back() {
  local root=$1 hold=$2 path rel
  [[ -d $root ]] || install -d -m "$(stat -c %a "$hold")" -- "$root"
  for path in "${kept[@]}"; do
    [[ $path == "$root"/?* ]] || continue
    rel=${path#"$root"/}
    [[ -e $path || -L $path ]] && continue
    if [[ -d "${hold}/${rel}" && ! -L "${hold}/${rel}" ]]; then
      install -d -m "$(stat -c %a "${hold}/${rel}")" -- "$path"
    else
      ln -P -- "${hold}/${rel}" "$path" 2>/dev/null || cp -a -- "${hold}/${rel}" "$path"
    fi
  done
}

run_uninstaller() {
  local index root
  local -a holds=()
  for index in "${!kept_roots[@]}"; do
    root=${kept_roots[index]}
    holds[index]=$(mktemp -d "${root%/}.k3s-install-undo.XXXXXX")
    chmod --reference="$root" -- "${holds[index]}"
    keep_aside "$root" "${holds[index]}"
  done
  # Its `set -x` trace is long; only a failure shows its last line.
  if ! "$uninstaller" >"${work_dir}/uninstall.log" 2>&1; then
    problems+=("${uninstaller} failed: $(tail -n 1 "${work_dir}/uninstall.log")")
  fi
  for index in "${!kept_roots[@]}"; do
    put_back "${kept_roots[index]}" "${holds[index]}"
    rm -rf -- "${holds[index]}"
  done
}

# The run failed on a host without K3s: remove what it wrote and installed.
undo_first_install() {
  local index path dir
  local -a left=()
  if [[ -e $uninstaller ]]; then
    run_uninstaller
  fi
  for path in "${installed[@]}"; do
    if [[ -e $path || -L $path ]]; then rm -f -- "$path"; fi
  done
  for ((index = ${#written[@]} - 1; index >= 0; index--)); do
    path=${written[index]}
    rm -f -- "${path}.new"
    if [[ -e "${undo_dir}/${index}" ]]; then
      mkdir -p -- "$(dirname "$path")"
      mv -f -- "${undo_dir}/${index}" "$path"
    else
      rm -f -- "$path"
    fi
  done
  for ((index = ${#new_dirs[@]} - 1; index >= 0; index--)); do
    dir=${new_dirs[index]}
    if [[ -d $dir ]] && ! rmdir -- "$dir" 2>/dev/null; then
      left+=("$dir")
    fi
  done
  if ((${#problems[@]})); then
    log "K3s was not installed on this host before this run, and it could not be put back as it was: ${problems[*]}"
  elif ((${#left[@]})); then
    # K3s' node password (/etc/rancher/node), which K3s' own uninstall keeps
    # too: a retry joins with it instead of being rejected by the servers.
    log "K3s was not installed on this host before this run: it was put back as it was, but for what K3s" \
      "wrote there and its own uninstall keeps (${left[*]})"
  else
    log "K3s was not installed on this host before this run: it was put back as it was"
  fi
}

on_exit() {
  local status=$?
  set +e
  progress_stop
  if ((status != 0 && first_install)); then
    undo_first_install
  fi
  if [[ -n $failure ]]; then
    log "$failure"
  fi
  rm -rf "$work_dir"
  exit "$status"
}

# Write $2 to $1 unless $1 already holds exactly that, replacing it
# atomically so that K3s never reads half a file. Succeeds only when it
# wrote, so callers learn whether anything changed; callers test it in an
# `if`, where errexit is off, so an error stops the script explicitly.
write_if_changed() {
  local path=$1 content=$2 staged
  staged="${work_dir}/staged"
  printf '%s' "$content" >"$staged" || fail "could not write ${staged}"
  if [[ -f $path ]] && cmp -s "$staged" "$path"; then
    return 1
  fi
  note_write "$path" || fail "could not keep a copy of ${path} to put back on failure"
  { mkdir -p "$(dirname "$path")" && install -m 0600 "$staged" "${path}.new" && mv -f "${path}.new" "$path"; } ||
    fail "could not write ${path}"
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
    note_new_dirs "$(dirname "$K3S_BIN")"
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
  begin_undo_log "$unit"

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
