#!/usr/bin/env bash
# The lab's stand-in for the `k3s` command on a node of the namespace cluster (issue 22): K3s cannot
# be had here. It does only what the program's scripts ask of K3s' multi-call binary, handing each
# to the upstream tool: `k3s kubectl` (with the admin kubeconfig where K3s keeps it, on servers),
# `k3s crictl` and `k3s ctr` (the node's containerd). Anything else is refused, naming the shim.
# node.py writes it to the node's /usr/local/bin/k3s with these lines filled in:
# @settings
set -euo pipefail
: "${DATAPATH_BIN:?}" "${ADMIN_KUBECONFIG:=}"
readonly CONTAINERD_SOCKET=/run/containerd/containerd.sock

case ${1:-} in
  kubectl)
    shift
    [[ -n $ADMIN_KUBECONFIG ]] || {
      echo "k3s (lab shim): no admin kubeconfig on this node (an agent); run kubectl on a server" >&2
      exit 1
    }
    exec "$DATAPATH_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"
    ;;
  crictl)
    shift
    exec "$DATAPATH_BIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCKET" "$@"
    ;;
  ctr)
    shift
    exec ctr --address "$CONTAINERD_SOCKET" "$@"
    ;;
  *)
    echo "k3s (lab shim): '${1:-}' is not K3s here; only kubectl, crictl and ctr are handed on" >&2
    exit 1
    ;;
esac
