#!/usr/bin/env bash
# Remove K3s and what Cilium left on the host: the delete command of a node's
# install resource (on `pulumi destroy`, or before the node is reinstalled).
#
# K3s's own uninstall script (written by the install script) stops K3s, removes
# its data and its CNI/flannel interfaces, but it knows nothing about Cilium:
# Cilium's host devices, its pinned BPF maps and its CNI config would survive
# and confuse the next CNI installed on this host, so they are removed here.
#
# Idempotent: whatever is already gone is skipped, so a second run (or a run
# on a host where K3s never got installed) succeeds and removes nothing.
#
# Only the resource that installed K3s here may remove it: when a node is
# renamed or changes role in the stack, Pulumi creates the new resource for
# the host first and deletes the old one last; the old one then finds another
# owner in OWNER_MARKER and leaves the host alone.
#
# Parameters:
#   ROLE               server or agent: which K3s uninstall script to run
#   BIN_DIR            where K3s put its uninstall scripts (/usr/local/bin)
#   CILIUM_LINKS       space-separated devices Cilium creates on the host
#   BPF_TC_GLOBALS     directory of Cilium's pinned tc maps (cilium_* in it)
#   BPF_CILIUM_DIR     Cilium's own directory on the BPF filesystem
#   CILIUM_CNI_CONFIG  the CNI config file Cilium writes
#   OWNER              the Pulumi resource running this delete
#   OWNER_MARKER       where the install script recorded the current owner
set -euo pipefail
# @params

log() {
  printf 'k3s-uninstall: %s\n' "$*" >&2
}

uninstaller_for_role() {
  case $ROLE in
    server) printf '%s/k3s-uninstall.sh' "$BIN_DIR" ;;
    agent) printf '%s/k3s-agent-uninstall.sh' "$BIN_DIR" ;;
    *)
      log "ROLE must be server or agent, not '${ROLE}'"
      return 1
      ;;
  esac
}

run_k3s_uninstaller() {
  local uninstaller
  uninstaller=$(uninstaller_for_role)
  if [[ -x $uninstaller ]]; then
    # Its `set -x` trace goes to stderr; stdout stays for the summary line.
    "$uninstaller" >&2
    printf 'k3s=removed'
  else
    printf 'k3s=absent'
  fi
}

remove_cilium_links() {
  local link removed=0
  local -a links
  read -ra links <<<"$CILIUM_LINKS"
  if ! command -v ip >/dev/null 2>&1; then
    log "no 'ip' command: cannot look for Cilium's devices (${CILIUM_LINKS})"
    printf 'links_removed=unknown'
    return 0
  fi
  # Deleting one end of the cilium_host/cilium_net veth pair removes the other
  # too, so each device is looked up right before it is deleted.
  for link in "${links[@]}"; do
    if ip link show dev "$link" >/dev/null 2>&1; then
      ip link delete dev "$link"
      removed=$((removed + 1))
    fi
  done
  printf 'links_removed=%d' "$removed"
}

# Pinned maps keep their memory (and old state such as service entries)
# until unlinked from the BPF filesystem.
remove_bpf_pins() {
  local pins=() removed=0
  shopt -s nullglob
  pins=("${BPF_TC_GLOBALS}"/cilium_*)
  shopt -u nullglob
  if ((${#pins[@]})); then
    rm -f -- "${pins[@]}"
    removed=${#pins[@]}
  fi
  if [[ -e $BPF_CILIUM_DIR ]]; then
    rm -rf -- "$BPF_CILIUM_DIR"
    removed=$((removed + 1))
  fi
  printf 'bpf_pins_removed=%d' "$removed"
}

remove_cni_config() {
  if [[ -e $CILIUM_CNI_CONFIG ]]; then
    rm -f -- "$CILIUM_CNI_CONFIG"
    printf 'cni_config=removed'
  else
    printf 'cni_config=absent'
  fi
}

# The owner recorded by the last install, if any (older installs have none:
# they count as ours).
recorded_owner() {
  if [[ -r $OWNER_MARKER ]]; then
    head -n 1 -- "$OWNER_MARKER"
  fi
}

main() {
  local k3s_state links pins cni current_owner
  current_owner=$(recorded_owner)
  if [[ -n $current_owner && $current_owner != "$OWNER" ]]; then
    log "K3s on this host is now managed by ${current_owner}, not ${OWNER}: leaving it in place"
    printf 'role=%s k3s=kept owner=%s\n' "$ROLE" "$current_owner"
    return 0
  fi
  k3s_state=$(run_k3s_uninstaller)
  links=$(remove_cilium_links)
  pins=$(remove_bpf_pins)
  cni=$(remove_cni_config)
  printf 'role=%s %s %s %s %s\n' "$ROLE" "$k3s_state" "$links" "$pins" "$cni"
}

main
