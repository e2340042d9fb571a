#!/usr/bin/env bash
# Remove what airgap-stage.sh and the uploads left on a node: the image
# archives it placed (listed in IMAGES_MANIFEST), the staged binary and
# install script, and the upload directory. Runs when the node's air-gap
# resources are deleted (after K3s was uninstalled); idempotent.
#
# Parameters:
#   AIRGAP_DIR       the staged binary and install script
#   IMAGES_MANIFEST  names of the image archives placed in IMAGES_DIR
#   IMAGES_DIR       K3s' image import directory
#   UPLOAD_DIR       where Pulumi uploaded the artifacts
set -euo pipefail
# @params

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
  printf 'airgap: removed images=%d\n' "$removed"
}

main
