#!/usr/bin/env bash
# Write K3s' registries.yaml (mirrors, rewrites, TLS and credentials) from
# stdin: it holds registry passwords, which never appear on a command line.
# Idempotent: an unchanged file is not touched. A changed file restarts K3s
# where it already runs (it reads registries.yaml only at start); servers
# then wait for their API server. Before K3s is installed the file is only
# written: the install starts K3s with it.
#
# A failure after the file was written (K3s does not come back with it) puts
# the previous file back, or removes it and the directories this run created
# when there was none, and restarts K3s with it again: pulumi-command keeps
# no failed create in its state, so no delete would remove it, and a failed
# update keeps the old file in its state.
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
unit=k3s
[[ $ROLE == agent ]] && unit=k3s-agent
# Set once the new file is about to be written: what a failure must undo.
writing=0
restarted=0
new_dirs=()

log() {
  printf 'airgap-registries: %s\n' "$*" >&2
}

put_back() {
  local index what="the previous registries.yaml is back"
  rm -f -- "${REGISTRIES_PATH}.new"
  if [[ -f "${work_dir}/previous" ]]; then
    mv -f -- "${work_dir}/previous" "$REGISTRIES_PATH"
  else
    rm -f -- "$REGISTRIES_PATH"
    what="registries.yaml is removed again (there was none before)"
  fi
  for ((index = ${#new_dirs[@]} - 1; index >= 0; index--)); do
    rmdir -- "${new_dirs[index]}" 2>/dev/null
  done
  if ((!restarted)); then
    log "$what"
  # K3s reads the file only when it starts; not waited for: a K3s that does
  # not come back would hold the failure up (its unit has no start timeout).
  elif systemctl restart --no-block "$unit"; then
    log "${what}; ${unit} is restarting with it"
  else
    log "${what}, but ${unit} could not be restarted with it"
  fi
}

on_exit() {
  local status=$?
  set +e
  ((status == 0 || !writing)) || put_back
  rm -rf "$work_dir"
  exit "$status"
}
trap on_exit EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

main() {
  local staged="${work_dir}/registries.yaml" deadline dir
  cat >"$staged"
  [[ -s $staged ]] || { log "expected registries.yaml on stdin, got nothing"; exit 1; }
  if [[ -f $REGISTRIES_PATH ]] && cmp -s "$staged" "$REGISTRIES_PATH"; then
    printf 'registries=unchanged\n'
    return 0
  fi
  if [[ -e $REGISTRIES_PATH ]]; then
    cp -p -- "$REGISTRIES_PATH" "${work_dir}/previous"
  fi
  dir=$(dirname "$REGISTRIES_PATH")
  while [[ ! -e $dir ]]; do
    new_dirs=("$dir" "${new_dirs[@]}")
    dir=$(dirname "$dir")
  done
  writing=1
  mkdir -p "$(dirname "$REGISTRIES_PATH")"
  install -m 0600 "$staged" "${REGISTRIES_PATH}.new"
  mv -f "${REGISTRIES_PATH}.new" "$REGISTRIES_PATH"
  if ! systemctl is-active --quiet "$unit"; then
    printf 'registries=written\n'
    return 0
  fi
  log "registries.yaml changed: restarting ${unit}"
  restarted=1
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
