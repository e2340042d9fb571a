#!/usr/bin/env bash
# Print what a Cilium debug command says in this node's Cilium agent
# container, e.g. `cilium-dbg status --verbose` or `cilium-dbg service list`
# (`cilium ...` on Cilium <= 1.14). Runs as root on the node itself through
# K3s' bundled crictl: every check of a node is collected in one SSH session
# on that node, and none needs the API server or the first server. The
# output is judged elsewhere (the verification package): this script fails
# only when it cannot collect anything.
#
# Parameters:
#   NODE_NAME        the node (named in messages)
#   AGENT_COMMAND    the command run in the agent container (words split on blanks)
#   WAIT_FOR         optional extended regex: the command is repeated (ATTEMPTS
#                    times, RETRY_DELAY_SECONDS apart) until its output matches,
#                    e.g. until the agent reports Ok or lists a new service; the
#                    last output is printed either way
#   ATTEMPTS, RETRY_DELAY_SECONDS, CONTAINER_WAIT_SECONDS, CRICTL
set -euo pipefail
# @params

: "${CRICTL:=k3s crictl}"
: "${WAIT_FOR:=}"
: "${ATTEMPTS:=10}"
: "${RETRY_DELAY_SECONDS:=3}"
: "${CONTAINER_WAIT_SECONDS:=180}"
readonly AGENT_CONTAINER=cilium-agent PROGRESS_EVERY_SECONDS=30

# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra crictl <<<"$CRICTL"
read -ra command <<<"$AGENT_COMMAND"
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

fail() {
  printf 'verify-agent-exec: node %s: %s\n' "$NODE_NAME" "$*" >&2
  exit 1
}

# The newest running agent container (a restart may leave an exited one).
agent_container() {
  "${crictl[@]}" ps --name "^${AGENT_CONTAINER}\$" --state Running -q 2>"$work_dir/stderr" | head -n 1
}

container=""
start=$SECONDS
next_progress=$((start + PROGRESS_EVERY_SECONDS))
until container=$(agent_container) && [[ -n $container ]]; do
  if ((SECONDS - start >= CONTAINER_WAIT_SECONDS)); then
    fail "no running $AGENT_CONTAINER container after ${CONTAINER_WAIT_SECONDS}s: $(<"$work_dir/stderr")"
  fi
  if ((SECONDS >= next_progress)); then
    printf 'verify-agent-exec: node %s: waiting for a running %s container (%ss so far)\n' \
      "$NODE_NAME" "$AGENT_CONTAINER" "$((SECONDS - start))" >&2
    next_progress=$((SECONDS + PROGRESS_EVERY_SECONDS))
  fi
  sleep "$RETRY_DELAY_SECONDS"
done

# A status command exits 1 when the agent is unhealthy but still prints the
# status: what it printed is the result, its exit code is not.
output=""
for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
  output=$("${crictl[@]}" exec "$container" "${command[@]}" 2>"$work_dir/stderr") || true
  if [[ -n $output ]] && { [[ -z $WAIT_FOR ]] || grep -Eq -- "$WAIT_FOR" <<<"$output"; }; then
    break
  fi
  if ((attempt < ATTEMPTS)); then sleep "$RETRY_DELAY_SECONDS"; fi
done
if [[ -z $output ]]; then
  fail "'$AGENT_COMMAND' in container $container printed nothing after $ATTEMPTS attempts: $(<"$work_dir/stderr")"
fi
printf '%s\n' "$output"
