#!/usr/bin/env bash
# Print one Kubernetes object as JSON for the verification, on a K3s server,
# once a field of it is set: the LoadBalancer test Service's address
# (.status.loadBalancer.ingress) or the L2 announcement lease's holder
# (.spec.holderIdentity). The object is printed whether or not the field
# got set in time, and kubectl's error when it cannot be read: the
# verification package judges it and says what was missing. Exits 0 after
# printing; non-zero only when kubectl itself cannot run.
#
# Parameters:
#   NAMESPACE, OBJECT   e.g. kube-system and lease/cilium-l2announce-k3s-cilium-verify-smoke-lb
#   READY_JSONPATH      kubectl jsonpath that prints something once the object is ready
#   WAIT_SECONDS        how long to wait for it
#   KUBECTL
#   PROGRESS_SECONDS    how often the wait prints a progress line (stderr)
set -euo pipefail
# @params
# @progress

: "${KUBECTL:=k3s kubectl}"
: "${WAIT_SECONDS:=120}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
command -v "${kubectl[0]}" >/dev/null || {
  printf 'verify-object: %s not found\n' "${kubectl[0]}" >&2
  exit 1
}
trap progress_stop EXIT

deadline=$((SECONDS + WAIT_SECONDS))
progress_start "$NAMESPACE/$OBJECT to have $READY_JSONPATH, at most ${WAIT_SECONDS}s"
until [[ -n $("${kubectl[@]}" -n "$NAMESPACE" get "$OBJECT" -o "jsonpath=$READY_JSONPATH" 2>/dev/null) ]]; do
  ((SECONDS < deadline)) || break
  sleep 2
done
progress_stop
"${kubectl[@]}" -n "$NAMESPACE" get "$OBJECT" -o json 2>&1 || true
