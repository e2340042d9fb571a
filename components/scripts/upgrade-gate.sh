#!/usr/bin/env bash
# What runs now, read on the first server before a version change touches any
# node or the Cilium release; `python3 -m verification upgrade-gate` judges it
# against the stack's target versions. Prints one of
#   cluster=absent                       no K3s here yet: a first install
#   cluster=unreadable detail=<why>      K3s is here but its API does not answer
# or one line per node, one for Cilium and one for what the Cilium component
# last deployed (its ConfigMap RELEASE_STAMP in kube-system):
#   node=<name> kubelet=<v1.33.3+k3s1>
#   cilium=<agent image> | cilium=absent
#   release=<values digest> | release=absent
# and one line per object a Cilium minor up to the target no longer accepts
# (REMOVED_<i>_*: stacks/upgrade.py REMOVALS):
#   removed=<kind> object=<namespace>/<name> | removed=<kind> object=<name>
# Reads only; exits 0 after printing unless it cannot run at all.
#
# Parameters:
#   RELEASE_STAMP, KUBECTL, REQUEST_TIMEOUT_SECONDS
#   REMOVED_COUNT, and for i below it REMOVED_<i>_KIND, REMOVED_<i>_RESOURCE and
#   REMOVED_<i>_EVIDENCE (a jsonpath printed after each object's name, not empty
#   exactly for an object the minor refuses)
set -euo pipefail
# @params

: "${KUBECTL:=k3s kubectl}"
: "${REQUEST_TIMEOUT_SECONDS:=20}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
if ! command -v "${kubectl[0]}" >/dev/null; then
  echo cluster=absent
  exit 0
fi
kubectl+=("--request-timeout=${REQUEST_TIMEOUT_SECONDS}s")

if ! nodes=$("${kubectl[@]}" get nodes -o \
  jsonpath='{range .items[*]}node={.metadata.name} kubelet={.status.nodeInfo.kubeletVersion}{"\n"}{end}' 2>&1); then
  printf 'cluster=unreadable detail=%q\n' "$(tr '\n' ' ' <<<"$nodes")"
  exit 0
fi
printf '%s\n' "$nodes"
image=$("${kubectl[@]}" -n kube-system get daemonset cilium -o \
  jsonpath='{.spec.template.spec.containers[?(@.name=="cilium-agent")].image}' 2>/dev/null) || image=""
printf 'cilium=%s\n' "${image:-absent}"
stamp=$("${kubectl[@]}" -n kube-system get configmap "$RELEASE_STAMP" -o jsonpath='{.data.valuesDigest}' \
  2>/dev/null) || stamp=""
printf 'release=%s\n' "${stamp:-absent}"
for ((i = 0; i < ${REMOVED_COUNT:-0}; i++)); do
  kind_var=REMOVED_${i}_KIND resource_var=REMOVED_${i}_RESOURCE evidence_var=REMOVED_${i}_EVIDENCE
  template="{range .items[*]}{.metadata.namespace}/{.metadata.name} ${!evidence_var}"'{"\n"}{end}'
  # A resource the cluster does not serve (its CRD gone, or never there) has nothing to list.
  listed=$("${kubectl[@]}" get "${!resource_var}" --all-namespaces -o "jsonpath=$template" 2>/dev/null) || continue
  while read -r name evidence; do
    if [[ -n $name && -n $evidence ]]; then printf 'removed=%s object=%s\n' "${!kind_var}" "${name#/}"; fi
  done <<<"$listed"
done
