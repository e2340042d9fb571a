#!/usr/bin/env bash
# The delete of the registries command: remove K3s' registries.yaml, then its
# directory (/etc/rancher/k3s) and that one's parent (/etc/rancher) when
# nothing is left in them. K3s' uninstall removes /etc/rancher/k3s anyway;
# this covers a stack that drops the block, and a host whose K3s install
# never succeeded (so no uninstall ran): airgap-registries.sh created them.
# K3s reads the file only when it starts, so where it runs it is restarted:
# otherwise containerd would keep the old mirrors and credentials until the
# next restart. Idempotent.
#
# Prints "registries=removed" (and " restarted=<unit>"), or "registries=absent".
#
# Parameters:
#   REGISTRIES_PATH    /etc/rancher/k3s/registries.yaml
#   ROLE               server or agent (the unit is k3s or k3s-agent)
#   K3S_BIN            the k3s binary (a restarted server waits for its API)
#   API_READY_TIMEOUT  seconds a restarted server waits for its API server
set -euo pipefail
# @params

readonly API_POLL_SECONDS=2

main() {
  local unit=k3s dir deadline restarted=""
  local -a left
  [[ $ROLE == agent ]] && unit=k3s-agent
  if [[ ! -e $REGISTRIES_PATH ]]; then
    printf 'registries=absent\n'
    return 0
  fi
  rm -f -- "$REGISTRIES_PATH"
  shopt -s nullglob dotglob
  dir=$(dirname "$REGISTRIES_PATH")
  for dir in "$dir" "$(dirname "$dir")"; do
    left=("$dir"/*)
    if [[ ! -d $dir ]] || ((${#left[@]})); then
      continue
    fi
    rmdir -- "$dir"
  done
  if systemctl is-active --quiet "$unit"; then
    printf 'airgap-registries-remove: registries.yaml removed: restarting %s\n' "$unit" >&2
    systemctl restart "$unit"
    restarted=" restarted=${unit}"
    if [[ $ROLE == server ]]; then
      deadline=$((SECONDS + API_READY_TIMEOUT))
      until "$K3S_BIN" kubectl get --raw /readyz >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
          printf 'airgap-registries-remove: the API server did not become ready within %ss\n' "$API_READY_TIMEOUT" >&2
          exit 1
        fi
        sleep "$API_POLL_SECONDS"
      done
    fi
  fi
  printf 'registries=removed%s\n' "$restarted"
}

main
