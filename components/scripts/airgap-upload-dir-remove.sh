#!/usr/bin/env bash
# The delete of the upload directory's command: remove the directory with
# whatever was uploaded into it, and its parent (/var/lib/k3s-cilium) when
# nothing else of ours is left there. CopyToRemote deletes nothing on the
# host, and after a failed stage (not in Pulumi's state, so its delete never
# runs) the uploads would otherwise stay. Idempotent.
#
# Parameters:
#   UPLOAD_DIR  the directory airgap-upload-dir.sh created
set -euo pipefail
# @params

rm -rf -- "${UPLOAD_DIR:?}"
parent=$(dirname "$UPLOAD_DIR")
shopt -s nullglob dotglob
left=("$parent"/*)
if [[ ! -d $parent ]]; then
  printf 'upload-dir=removed parent=absent\n'
elif ((${#left[@]})); then
  printf 'upload-dir=removed parent=kept\n'
else
  rmdir -- "$parent"
  printf 'upload-dir=removed parent=removed\n'
fi
