#!/usr/bin/env bash
# Wait until the CRDs of the LoadBalancer objects are served, on a K3s server,
# after the Cilium release: the operator (not the chart) registers them when it
# starts with the feature on, so they may appear a little after the release is
# ready. Creating an object before its CRD is served fails with "no matches for kind".
#
# Parameters:
#   CRD_NAMES         CRD names, separated by blanks (ciliumloadbalancerippools.cilium.io ...)
#   TIMEOUT_SECONDS   how long to wait for all of them
#   KUBECTL
#   PROGRESS_SECONDS  how often the wait prints a progress line (stderr)
set -euo pipefail
# @params
# @progress

: "${KUBECTL:=k3s kubectl}"
: "${TIMEOUT_SECONDS:=300}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
read -ra crds <<<"$CRD_NAMES"
trap progress_stop EXIT

deadline=$((SECONDS + TIMEOUT_SECONDS))
progress_start "CRDs ${crds[*]} to be established, at most ${TIMEOUT_SECONDS}s"
for crd in "${crds[@]}"; do
  until "${kubectl[@]}" get crd "$crd" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      printf 'loadbalancer-crds: CRD %s not registered within %ss: is the Cilium operator running with the feature on? ' \
        "$crd" "$TIMEOUT_SECONDS" >&2
      printf '(kubectl -n kube-system logs deployment/cilium-operator)\n' >&2
      exit 1
    fi
    sleep 2
  done
  remaining=$((deadline - SECONDS))
  "${kubectl[@]}" wait --for condition=established --timeout="$((remaining > 1 ? remaining : 1))s" "crd/$crd" >/dev/null
done
progress_stop
printf 'loadbalancer-crds: established: %s\n' "${crds[*]}"
