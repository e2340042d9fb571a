#!/usr/bin/env bash
# Print what a Cilium debug command says in the Cilium agent pod of one node,
# e.g. `cilium-dbg status --verbose` or `cilium-dbg service list` (`cilium
# ...` on Cilium <= 1.14). Runs as root on a K3s server (kubectl through
# `k3s kubectl`). The output is judged elsewhere (python3 -m verification):
# this script fails only when it cannot collect anything.
#
# Parameters:
#   NODE_NAME        the node whose agent is asked (field selector spec.nodeName)
#   AGENT_COMMAND    the command run in the agent container (words split on blanks)
#   WAIT_FOR         optional extended regex: the command is repeated (ATTEMPTS
#                    times, RETRY_DELAY_SECONDS apart) until its output matches,
#                    e.g. until the agent reports Ok or lists a new service; the
#                    last output is printed either way
#   ATTEMPTS, RETRY_DELAY_SECONDS, POD_READY_TIMEOUT_SECONDS, NAMESPACE, KUBECTL
set -euo pipefail
# @params

: "${KUBECTL:=k3s kubectl}"
: "${NAMESPACE:=kube-system}"
: "${WAIT_FOR:=}"
: "${ATTEMPTS:=10}"
: "${RETRY_DELAY_SECONDS:=3}"
: "${POD_READY_TIMEOUT_SECONDS:=180}"
readonly AGENT_SELECTOR=k8s-app=cilium
readonly AGENT_CONTAINER=cilium-agent

# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
read -ra command <<<"$AGENT_COMMAND"
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

fail() {
  printf 'verify-agent-exec: node %s: %s\n' "$NODE_NAME" "$*" >&2
  exit 1
}

# The node's running agent pod that is not being deleted (a rollout may leave
# a terminating one for a while).
agent_pod() {
  "${kubectl[@]}" -n "$NAMESPACE" get pods -l "$AGENT_SELECTOR" --field-selector "spec.nodeName=$NODE_NAME" \
    -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.phase}{" "}{.metadata.deletionTimestamp}{"\n"}{end}' \
    2>"$work_dir/stderr" | awk '$2 == "Running" && NF == 2 { print $1; exit }'
}

pod=""
for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
  pod=$(agent_pod) || true
  [[ -n $pod ]] && break
  if ((attempt < ATTEMPTS)); then sleep "$RETRY_DELAY_SECONDS"; fi
done
if [[ -z $pod ]]; then
  fail "no running Cilium agent pod ($AGENT_SELECTOR) in namespace $NAMESPACE: $(<"$work_dir/stderr")"
fi
if ! "${kubectl[@]}" -n "$NAMESPACE" wait --for=condition=Ready "pod/$pod" \
  --timeout="${POD_READY_TIMEOUT_SECONDS}s" >/dev/null 2>"$work_dir/stderr"; then
  fail "agent pod $pod not Ready within ${POD_READY_TIMEOUT_SECONDS}s: $(<"$work_dir/stderr")"
fi

# A status command exits 1 when the agent is unhealthy but still prints the
# status: what it printed is the result, its exit code is not.
output=""
for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
  output=$("${kubectl[@]}" -n "$NAMESPACE" exec "$pod" -c "$AGENT_CONTAINER" -- "${command[@]}" \
    2>"$work_dir/stderr") || true
  if [[ -n $output ]] && { [[ -z $WAIT_FOR ]] || grep -Eq -- "$WAIT_FOR" <<<"$output"; }; then
    break
  fi
  if ((attempt < ATTEMPTS)); then sleep "$RETRY_DELAY_SECONDS"; fi
done
if [[ -z $output ]]; then
  fail "'$AGENT_COMMAND' in pod $pod printed nothing after $ATTEMPTS attempts: $(<"$work_dir/stderr")"
fi
printf '%s\n' "$output"
