#!/usr/bin/env bash
# Remove what airgap-stage.sh and the uploads left on a node: the image
# archives it placed (listed in IMAGES_MANIFEST), the staged binary and
# install script, and the upload directory, then their parent
# (/var/lib/k3s-cilium) when nothing else of ours (host tuning's saved state)
# is left in it. Runs when the node's air-gap resources are deleted (after
# K3s was uninstalled); idempotent.
#
# Parameters:
#   AIRGAP_DIR       the staged binary and install script
#   IMAGES_MANIFEST  names of the image archives placed in IMAGES_DIR
#   IMAGES_DIR       K3s' image import directory
#   UPLOAD_DIR       where Pulumi uploaded the artifacts
set -euo pipefail
# @params

shopt -s nullglob dotglob

main() {
  local listed removed=0
  if [[ -f $IMAGES_MANIFEST ]]; then
    while read -r listed; do
      if [[ -n $listed && -f "${IMAGES_DIR}/${listed}" ]]; then
        rm -f "${IMAGES_DIR:?}/${listed}"
        removed=$((removed + 1))
      fi
    done <"$IMAGES_MANIFEST"
  fi
  rm -rf "${AIRGAP_DIR:?}" "${UPLOAD_DIR:?}"
  local parent
  local -a left
  for parent in "$(dirname "$AIRGAP_DIR")" "$(dirname "$UPLOAD_DIR")"; do
    left=("$parent"/*)
    if [[ -d $parent ]] && ((${#left[@]} == 0)); then
      rmdir -- "$parent"
    fi
  done
  printf 'airgap: removed images=%d\n' "$removed"
}

main
