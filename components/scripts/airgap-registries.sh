#!/usr/bin/env bash
# Write K3s' registries.yaml (mirrors, rewrites, TLS and credentials) from
# stdin: it holds registry passwords, which never appear on a command line.
# Idempotent: an unchanged file is not touched. A changed file restarts K3s
# where it already runs (it reads registries.yaml only at start); servers
# then wait for their API server. Before K3s is installed the file is only
# written: the install starts K3s with it.
#
# Prints one line: "registries=unchanged", "registries=written" or
# "registries=written restarted=<unit>".
#
# Parameters:
#   REGISTRIES_PATH    /etc/rancher/k3s/registries.yaml
#   ROLE               server or agent (k3s or k3s-agent unit)
#   K3S_BIN            the k3s binary, for the API readiness check
#   API_READY_TIMEOUT  seconds a restarted server waits for its API server
set -euo pipefail
# @params

readonly API_POLL_SECONDS=2

umask 077
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

log() {
  printf 'airgap-registries: %s\n' "$*" >&2
}

main() {
  local unit=k3s staged="${work_dir}/registries.yaml" deadline
  [[ $ROLE == agent ]] && unit=k3s-agent
  cat >"$staged"
  [[ -s $staged ]] || { log "expected registries.yaml on stdin, got nothing"; exit 1; }
  if [[ -f $REGISTRIES_PATH ]] && cmp -s "$staged" "$REGISTRIES_PATH"; then
    printf 'registries=unchanged\n'
    return 0
  fi
  mkdir -p "$(dirname "$REGISTRIES_PATH")"
  install -m 0600 "$staged" "${REGISTRIES_PATH}.new"
  mv -f "${REGISTRIES_PATH}.new" "$REGISTRIES_PATH"
  if ! systemctl is-active --quiet "$unit"; then
    printf 'registries=written\n'
    return 0
  fi
  log "registries.yaml changed: restarting ${unit}"
  systemctl restart "$unit"
  if [[ $ROLE == server ]]; then
    deadline=$((SECONDS + API_READY_TIMEOUT))
    until "$K3S_BIN" kubectl get --raw /readyz >/dev/null 2>&1; do
      ((SECONDS < deadline)) || { log "the API server did not become ready within ${API_READY_TIMEOUT}s"; exit 1; }
      sleep "$API_POLL_SECONDS"
    done
  fi
  printf 'registries=written restarted=%s\n' "$unit"
}

main
