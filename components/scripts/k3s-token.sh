#!/usr/bin/env bash
# Print the cluster join token the first server generated (when the stack
# sets no k3sToken). The Pulumi resource running this logs nothing and keeps
# stdout as a secret; the token then reaches the joining nodes on stdin.
#
# Parameters:
#   SERVER_TOKEN_PATH  where K3s keeps it (/var/lib/rancher/k3s/server/token)
set -euo pipefail
# @params

if [[ ! -s $SERVER_TOKEN_PATH ]]; then
  printf 'k3s-token: %s is missing or empty; has K3s started as a server on this node?\n' "$SERVER_TOKEN_PATH" >&2
  exit 1
fi
cat -- "$SERVER_TOKEN_PATH"
