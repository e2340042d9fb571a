#!/usr/bin/env bash
# The SCRIPT_<i> values are whole scripts in single quotes, read through ${!name}:
# shellcheck disable=SC2016,SC2034
# Collect the raw output of every check of one node in a single SSH session:
# each check's own collector script runs in turn, its stdout printed after a
# section line "<SECTION_MARK> <check>", so that each check keeps its own
# assertion (and failure message) while the node sees one session, not one
# per check. A collector that cannot collect does not stop the others; the
# script then fails naming every check it could not collect.
#
# Parameters:
#   NODE_NAME     the node (named in messages)
#   CHECKS        the checks, blank-separated, in the order of SCRIPT_0, SCRIPT_1, ...
#   SCRIPT_<i>    the rendered collector script of the i-th check
#   SECTION_MARK  the prefix of the section lines
#   SKIP_WHEN     optional: a word that, among the words the step before printed
#                 on this script's stdin, means there is nothing to collect yet
#                 (between the nodes of a rollout, "cilium=absent": the cluster's
#                 first install, before Cilium); it is printed, nothing collected
set -uo pipefail
# @params

if [[ -n ${SKIP_WHEN:-} ]] && grep -qxF -- "$SKIP_WHEN" <(tr ' ' '\n'); then
  printf '%s\n' "$SKIP_WHEN"
  exit 0
fi

read -ra names <<<"$CHECKS"
failed=()
for i in "${!names[@]}"; do
  script_var="SCRIPT_$i"
  printf '%s %s\n' "$SECTION_MARK" "${names[i]}"
  if ! bash -c "${!script_var}"; then
    failed+=("${names[i]}")
  fi
done
if ((${#failed[@]} > 0)); then
  printf 'verify-node: node %s: could not collect %s\n' "$NODE_NAME" "${failed[*]}" >&2
  exit 1
fi
