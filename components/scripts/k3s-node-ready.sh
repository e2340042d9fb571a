#!/usr/bin/env bash
# After a node's install or upgrade, on the first server: wait until the node
# is registered with the target K3s release, and, where Cilium runs (an
# upgrade; on a first install there is no CNI yet and nodes stay NotReady),
# until the node is Ready, its Cilium agent pod is ready and, where the
# verification's smoke Service exists, that Service answers on the node's own
# address and NodePort; on a server of an etcd cluster, until etcd answers
# healthy. Then uncordon it (the drain before the upgrade cordoned it). The
# next node's drain waits for this. Prints
#   node=<name> kubelet=<version> ready=<True|skipped> cilium=ready|absent etcd=ok|none service=ok|none
#
# Parameters:
#   NODE_NAME, TARGET_VERSION, ROLE (server|agent), TIMEOUT_SECONDS
#   SMOKE_NAMESPACE, SMOKE_SERVICE, NODE_PORT (empty: no smoke Service to probe)
#   KUBECTL, PROGRESS_SECONDS
set -euo pipefail
# @params
# @progress

: "${KUBECTL:=k3s kubectl}"
: "${TIMEOUT_SECONDS:=600}"
: "${NODE_PORT:=}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
trap progress_stop EXIT
deadline=$((SECONDS + TIMEOUT_SECONDS))

fail() {
  printf 'k3s-node-ready: node %s: %s within %ss; the upgrade stops here\n' "$NODE_NAME" "$*" "$TIMEOUT_SECONDS" >&2
  exit 1
}

wait_until() {
  local what=$1
  shift
  progress_start "node $NODE_NAME: $what"
  until "$@"; do
    ((SECONDS < deadline)) || fail "$what: not reached"
    sleep 2
  done
  progress_stop
}

kubelet_version() {
  "${kubectl[@]}" get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion}' 2>/dev/null
}
runs_target() { [[ $(kubelet_version) == "$TARGET_VERSION" ]]; }
node_ready() {
  [[ $("${kubectl[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' \
    2>/dev/null) == True ]]
}
cilium_runs() { "${kubectl[@]}" -n kube-system get daemonset cilium >/dev/null 2>&1; }
agent_ready() {
  [[ $("${kubectl[@]}" -n kube-system get pods -l k8s-app=cilium --field-selector "spec.nodeName=$NODE_NAME" \
    -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
etcd_healthy() { [[ $("${kubectl[@]}" get --raw /readyz/etcd 2>/dev/null) == ok ]]; }
# The verification's smoke Service, through this node's own NodePort: its datapath serves again before the
# next node goes (backends on other nodes answer while this one's pods are elsewhere).
node_port_answers() {
  local address
  address=$("${kubectl[@]}" get node "$NODE_NAME" \
    -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}' 2>/dev/null) || return 1
  address=${address%% *}
  [[ -n $address ]] || return 1
  [[ $address == *:* ]] && address="[$address]"
  curl -fsS -o /dev/null --max-time 5 "http://$address:$NODE_PORT/" 2>/dev/null
}

wait_until "registered with K3s $TARGET_VERSION" runs_target
ready=skipped cilium=absent etcd=none service=none
if cilium_runs; then
  wait_until "Ready" node_ready
  wait_until "its Cilium agent ready" agent_ready
  ready=True cilium=ready
  if [[ -n $NODE_PORT ]] &&
    "${kubectl[@]}" -n "$SMOKE_NAMESPACE" get service "$SMOKE_SERVICE" >/dev/null 2>&1; then
    wait_until "the smoke Service answering on its NodePort $NODE_PORT" node_port_answers
    service=ok
  fi
fi
if [[ $ROLE == server ]] && "${kubectl[@]}" get --raw /readyz/etcd >/dev/null 2>&1; then
  wait_until "etcd healthy" etcd_healthy
  etcd=ok
fi
"${kubectl[@]}" uncordon "$NODE_NAME" >/dev/null
echo "node=$NODE_NAME kubelet=$(kubelet_version) ready=$ready cilium=$cilium etcd=$etcd service=$service"
