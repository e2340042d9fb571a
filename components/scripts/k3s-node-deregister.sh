#!/usr/bin/env bash
# Run on the first server when a node leaves the cluster or moves to another
# host. The Node object would otherwise linger NotReady, and K3s would refuse a
# new host under the same name because the node-password secret kept for the
# old one no longer matches ("Node password rejected, duplicate hostname").
# For a server, deleting its Node also makes K3s remove its etcd member.
#
# Parameters:
#   NODE_NAME  the Kubernetes node name to remove
#   K3S_BIN    the k3s binary on this server
set -euo pipefail
# @params

if [[ ! -x $K3S_BIN ]]; then
  # The whole cluster is being taken down, or this server was uninstalled already.
  printf 'k3s-node-deregister: %s not found; nothing to remove for node %s\n' "$K3S_BIN" "$NODE_NAME" >&2
  exit 0
fi

"$K3S_BIN" kubectl delete node "$NODE_NAME" --ignore-not-found --wait=true --timeout=120s
"$K3S_BIN" kubectl --namespace kube-system delete secret "$NODE_NAME.node-password.k3s" --ignore-not-found
