#!/usr/bin/env bash
# Where the smoke workload runs, for the probes: runs as root on a K3s server
# once the smoke Deployment is rolled out, and prints
#   node=<name> ip=<InternalIP>                          one line per node
#   pod=<name> node=<node> ip=<pod IP> ready=True|False  one line per smoke pod
# The Pulumi program picks, for each node, a ready pod on another node.
#
# Parameters:
#   NAMESPACE, SELECTOR    the smoke pods (e.g. app.kubernetes.io/name=k3s-cilium-smoke)
#   DEPLOYMENT             waited for with `rollout status` (ROLLOUT_TIMEOUT_SECONDS)
#   KUBECTL
#   PROGRESS_SECONDS       how often the rollout wait prints a progress line (stderr)
set -euo pipefail
# @params
# @progress

: "${KUBECTL:=k3s kubectl}"
: "${ROLLOUT_TIMEOUT_SECONDS:=180}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
trap progress_stop EXIT

progress_start "deployment $NAMESPACE/$DEPLOYMENT to roll out, at most ${ROLLOUT_TIMEOUT_SECONDS}s"
if ! "${kubectl[@]}" -n "$NAMESPACE" rollout status "deployment/$DEPLOYMENT" \
  --timeout="${ROLLOUT_TIMEOUT_SECONDS}s" >/dev/null; then
  printf 'verify-smoke-pods: deployment %s/%s not rolled out within %ss\n' \
    "$NAMESPACE" "$DEPLOYMENT" "$ROLLOUT_TIMEOUT_SECONDS" >&2
  exit 1
fi
progress_stop
"${kubectl[@]}" get nodes -o \
  jsonpath='{range .items[*]}node={.metadata.name} ip={.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}'
"${kubectl[@]}" -n "$NAMESPACE" get pods -l "$SELECTOR" --field-selector status.phase=Running -o \
  jsonpath='{range .items[*]}pod={.metadata.name} node={.spec.nodeName} ip={.status.podIP} ready={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}'
