#!/usr/bin/env bash
# The delete of the registries command: remove K3s' registries.yaml, then its
# directory (/etc/rancher/k3s) and that one's parent (/etc/rancher) when
# nothing is left in them. K3s' uninstall removes /etc/rancher/k3s anyway;
# this covers a stack that drops the block, and a host whose K3s install
# never succeeded (so no uninstall ran): airgap-registries.sh created them.
# Idempotent.
#
# Parameters:
#   REGISTRIES_PATH  /etc/rancher/k3s/registries.yaml
set -euo pipefail
# @params

shopt -s nullglob dotglob
rm -f -- "$REGISTRIES_PATH"
dir=$(dirname "$REGISTRIES_PATH")
for dir in "$dir" "$(dirname "$dir")"; do
  left=("$dir"/*)
  if [[ ! -d $dir ]] || ((${#left[@]})); then
    continue
  fi
  rmdir -- "$dir"
done
printf 'registries=removed\n'
