#!/usr/bin/env bash
# Before a node moves to another K3s release (PURPOSE=upgrade) or leaves the
# cluster (PURPOSE=removal, before its uninstall): cordon it and evict its pods
# through the Eviction API (PodDisruptionBudgets respected), on the first
# server. Nothing to do, and it says so, on a first install (no cluster or no
# such node yet) or, for an upgrade, when the node already runs the target
# release. A drain that does not finish within DRAIN_TIMEOUT_SECONDS fails,
# naming the pods still on the node: the upgrade or removal stops there, this
# node and the ones after it untouched (the node stays cordoned: `kubectl
# uncordon` it once fixed). Prints
#   drain=done|skipped node=<name> [reason=no-cluster|not-registered|current] [from=<running>]
#
# Parameters:
#   NODE_NAME, PURPOSE (upgrade|removal), TARGET_VERSION (upgrade)
#   DRAIN_TIMEOUT_SECONDS, DELETE_EMPTYDIR_DATA (true|false), IGNORE_DAEMONSETS (true|false)
#   KUBECTL
set -euo pipefail
# @params

: "${KUBECTL:=k3s kubectl}"
: "${PURPOSE:=upgrade}"
: "${TARGET_VERSION:=}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"

if ! command -v "${kubectl[0]}" >/dev/null || ! "${kubectl[@]}" get --raw /readyz >/dev/null 2>&1; then
  echo "drain=skipped node=$NODE_NAME reason=no-cluster"
  exit 0
fi
if ! running=$("${kubectl[@]}" get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion}' 2>/dev/null); then
  echo "drain=skipped node=$NODE_NAME reason=not-registered"
  exit 0
fi
if [[ $PURPOSE == upgrade && $running == "$TARGET_VERSION" ]]; then
  echo "drain=skipped node=$NODE_NAME reason=current"
  exit 0
fi

flags=(--timeout="${DRAIN_TIMEOUT_SECONDS}s")
[[ $IGNORE_DAEMONSETS == true ]] && flags+=(--ignore-daemonsets)
[[ $DELETE_EMPTYDIR_DATA == true ]] && flags+=(--delete-emptydir-data)
if ! output=$("${kubectl[@]}" drain "$NODE_NAME" "${flags[@]}" 2>&1); then
  left=$("${kubectl[@]}" get pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
    -o jsonpath='{range .items[?(@.metadata.ownerReferences[0].kind!="DaemonSet")]}{.metadata.namespace}/{.metadata.name} {end}' 2>/dev/null || true)
  printf 'k3s-drain: node %s not drained within %ss; the %s stops before it (the node stays cordoned)\n' \
    "$NODE_NAME" "$DRAIN_TIMEOUT_SECONDS" "$PURPOSE" >&2
  printf 'k3s-drain: pods still on %s: %s\n' "$NODE_NAME" "${left:-none listed}" >&2
  printf 'k3s-drain: kubectl said: %s\n' "$(tail -n 5 <<<"$output")" >&2
  exit 1
fi
echo "drain=done node=$NODE_NAME from=$running"
