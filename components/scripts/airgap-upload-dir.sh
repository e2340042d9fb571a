#!/usr/bin/env bash
# Create the directory Pulumi uploads air-gap artifacts into, owned by the
# SSH user (uploads run as that user, not as root). Idempotent.
#
# Parameters:
#   UPLOAD_DIR  the directory
#   OWNER       the SSH user
set -euo pipefail
# @params

install -d -m 0700 -o "$OWNER" "$UPLOAD_DIR"
printf 'upload-dir=%s owner=%s\n' "$UPLOAD_DIR" "$OWNER"
