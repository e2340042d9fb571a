#!/usr/bin/env bash
# Print the admin kubeconfig K3s wrote on this server. The Pulumi program
# rewrites its server address and keeps the result as a secret output; the
# file is printed unchanged so that nothing on the host is modified.
#
# Parameters:
#   KUBECONFIG_PATH  where K3s writes it (/etc/rancher/k3s/k3s.yaml)
set -euo pipefail
# @params

if [[ ! -s $KUBECONFIG_PATH ]]; then
  printf 'kubeconfig: %s is missing or empty; is K3s running as a server on this node?\n' "$KUBECONFIG_PATH" >&2
  exit 1
fi
cat -- "$KUBECONFIG_PATH"
