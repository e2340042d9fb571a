#!/usr/bin/env bash
# Create the directory Pulumi uploads air-gap artifacts into, owned by the
# SSH user (uploads run as that user, not as root). Idempotent. Its delete is
# airgap-upload-dir-remove.sh; a failed create (which no delete would ever
# follow) removes the directories it created.
#
# Parameters:
#   UPLOAD_DIR  the directory
#   OWNER       the SSH user
set -euo pipefail
# @params

created=()
dir=$UPLOAD_DIR
while [[ ! -e $dir ]]; do
  created=("$dir" "${created[@]}")
  dir=$(dirname "$dir")
done
if ! install -d -m 0700 -o "$OWNER" "$UPLOAD_DIR"; then
  for ((index = ${#created[@]} - 1; index >= 0; index--)); do
    rmdir -- "${created[index]}" 2>/dev/null || true
  done
  exit 1
fi
printf 'upload-dir=%s owner=%s\n' "$UPLOAD_DIR" "$OWNER"
