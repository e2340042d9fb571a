#!/usr/bin/env bash
# Before the Gateway API CRDs are made or the Cilium release needs them, on the
# first server: print what the cluster has of them (`kubectl get crd ... -o json`
# and kubectl's NotFound lines for the absent ones). With WAIT_FOR_ALL=true
# (K3s or another tool installs them), wait until every one exists, at most
# WAIT_SECONDS: K3s' helm controller installs its CRD chart a little after the
# API server starts. The verification package judges the listing (the check
# gateway-api-crds); this script fails only when kubectl cannot run.
#
# Parameters:
#   CRD_NAMES      the CRD names, separated by blanks
#   WAIT_FOR_ALL   true|false
#   WAIT_SECONDS, KUBECTL, PROGRESS_SECONDS
set -euo pipefail
# @params
# @progress

: "${KUBECTL:=k3s kubectl}"
: "${WAIT_SECONDS:=300}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
read -ra crds <<<"$CRD_NAMES"
command -v "${kubectl[0]}" >/dev/null || {
  printf 'gateway-api-crds: %s not found\n' "${kubectl[0]}" >&2
  exit 1
}

if [[ $WAIT_FOR_ALL == true ]]; then
  trap progress_stop EXIT
  deadline=$((SECONDS + WAIT_SECONDS))
  progress_start "the Gateway API CRDs ${CRD_NAMES}, at most ${WAIT_SECONDS}s"
  until "${kubectl[@]}" get crd "${crds[@]}" >/dev/null 2>&1 || ((SECONDS >= deadline)); do
    sleep 3
  done
  progress_stop
fi
"${kubectl[@]}" get crd "${crds[@]}" -o json 2>&1 || true
