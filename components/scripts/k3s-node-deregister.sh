#!/usr/bin/env bash
# Run on the first server when a node leaves the cluster or moves to another
# host. The Node object would otherwise linger NotReady, and K3s would refuse a
# new host under the same name because the node-password secret kept for the
# old one no longer matches ("Node password rejected, duplicate hostname").
# For a server, deleting its Node also makes K3s remove its etcd member.
#
# Bounded and never the reason a destroy wedges: when the API server does not
# answer (the whole cluster is being destroyed and etcd has lost quorum, or
# this server is already gone) there is nothing left to deregister from, so
# the script says so and exits 0. Every kubectl call is limited to
# REQUEST_TIMEOUT_SECONDS, so the whole run takes at most about four times that.
# A delete the API server refuses while it answers still fails the step.
#
# Idempotent: the deletes ignore what is already gone.
#
# Parameters:
#   NODE_NAME                the Kubernetes node name to remove
#   K3S_BIN                  the k3s binary on this server
#   REQUEST_TIMEOUT_SECONDS  bound on each API request (default 20)
set -euo pipefail
# @params

: "${REQUEST_TIMEOUT_SECONDS:=20}"

say() {
  # stdout is the step's output in `pulumi destroy`; stderr is shown with a failure.
  printf 'k3s-node-deregister: %s\n' "$*"
  printf 'k3s-node-deregister: %s\n' "$*" >&2
}

if [[ ! -x $K3S_BIN ]]; then
  # The whole cluster is being taken down, or this server was uninstalled already.
  say "$K3S_BIN not found; nothing to remove for node $NODE_NAME"
  exit 0
fi

# kubectl through K3s, each call cut off after REQUEST_TIMEOUT_SECONDS even
# when the connection hangs (an API server waiting for an etcd without quorum).
kubectl() {
  timeout --kill-after=5 "$REQUEST_TIMEOUT_SECONDS" "$K3S_BIN" kubectl \
    --request-timeout="${REQUEST_TIMEOUT_SECONDS}s" "$@"
}

api_answers() {
  kubectl get --raw /readyz >/dev/null 2>&1
}

skip_api_gone() {
  say "the API server on this server does not answer within ${REQUEST_TIMEOUT_SECONDS}s (cluster being" \
    "destroyed, or etcd without quorum); skipping deregistration of node $NODE_NAME"
  exit 0
}

api_answers || skip_api_gone

run_or_skip() {
  local error
  if ! error=$(kubectl "$@" 2>&1 >/dev/null); then
    api_answers || skip_api_gone
    say "could not remove node $NODE_NAME: $error"
    exit 1
  fi
}

run_or_skip delete node "$NODE_NAME" --ignore-not-found --wait=true --timeout="${REQUEST_TIMEOUT_SECONDS}s"
run_or_skip --namespace kube-system delete secret "$NODE_NAME.node-password.k3s" --ignore-not-found
say "removed node $NODE_NAME and its node-password secret"
