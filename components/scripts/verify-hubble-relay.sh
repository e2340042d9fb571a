#!/usr/bin/env bash
# Ask Hubble Relay, on a K3s server, whether it reaches every node and serves
# flows, for `python -m verification hubble-relay`. The hubble CLI of a
# Cilium agent container (every agent image has /usr/bin/hubble) is pointed
# at the hubble-relay Service's ClusterIP: the agent pod runs in the host
# network and may not resolve cluster names. It prints
#
#   the output of `hubble status --server <ClusterIP>:<port>` (stdout and stderr), then,
#   when its health check said Ok, that of `hubble observe --server <ClusterIP>:<port> --last 1 -o jsonpb`
#   (one `{"flow": ...}` line per flow)
#
# with no separator: the verification reads the status lines and the flow
# lines wherever they are. Both are asked again, RETRY_DELAY_SECONDS apart
# and for at most WAIT_SECONDS, until the status says `Connected Nodes: N/N`
# (N = EXPECTED_NODES) and a flow line appears; the last answers are printed
# whether or not they got there, and kubectl's error text instead when the
# relay Service cannot be read: the verification judges them and says what
# was missing. Exits 0 after printing; non-zero only when kubectl cannot run.
#
# Parameters:
#   EXPECTED_NODES         the node count the relay must be connected to (empty: any N/N)
#   WAIT_SECONDS           how long to ask again
#   RETRY_DELAY_SECONDS    the pause between two attempts
#   EXEC_TIMEOUT_SECONDS   the bound on each kubectl call
#   NAMESPACE, RELAY_SERVICE, RELAY_PORT   the relay Service (kube-system, hubble-relay, 80)
#   AGENT, AGENT_CONTAINER the pod the hubble CLI runs in (ds/cilium, cilium-agent)
#   KUBECTL
#   PROGRESS_SECONDS       how often the wait prints a progress line (stderr)
set -euo pipefail
# @params
# @progress

: "${KUBECTL:=k3s kubectl}"
: "${EXPECTED_NODES:=}"
: "${WAIT_SECONDS:=180}"
: "${RETRY_DELAY_SECONDS:=5}"
: "${EXEC_TIMEOUT_SECONDS:=30}"
: "${NAMESPACE:=kube-system}"
: "${RELAY_SERVICE:=hubble-relay}"
: "${RELAY_PORT:=80}"
: "${AGENT:=ds/cilium}"
: "${AGENT_CONTAINER:=cilium-agent}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
command -v "${kubectl[0]}" >/dev/null || {
  printf 'verify-hubble-relay: %s not found\n' "${kubectl[0]}" >&2
  exit 1
}
work_dir=$(mktemp -d)
trap 'progress_stop; rm -rf "$work_dir"' EXIT

# What the last attempt still lacked, for the progress lines (a file: the ticker is a subshell).
pending() { cat "$work_dir/missing"; }

# run_bounded <output file> <command...>: stdout and stderr in the file, a line of its own when cut off.
run_bounded() {
  local out=$1 rc=0
  shift
  timeout "$EXEC_TIMEOUT_SECONDS" "$@" >"$out" 2>&1 || rc=$?
  if ((rc == 124)); then
    printf 'verify-hubble-relay: %s did not answer within %ss\n' "$*" "$EXEC_TIMEOUT_SECONDS" >>"$out"
  fi
}

# The relay Service's ClusterIP into $address; kubectl's error in $work_dir/service when it cannot be read.
relay_address() {
  local ip rc=0
  timeout "$EXEC_TIMEOUT_SECONDS" "${kubectl[@]}" -n "$NAMESPACE" get service "$RELAY_SERVICE" \
    -o 'jsonpath={.spec.clusterIP}' >"$work_dir/ip" 2>"$work_dir/service" || rc=$?
  ip=$(<"$work_dir/ip")
  if [[ $ip =~ ^[0-9A-Fa-f.:]+$ && $ip == *[.:]* ]]; then
    if [[ $ip == *:* ]]; then address="[$ip]:$RELAY_PORT"; else address="$ip:$RELAY_PORT"; fi
  elif ((rc == 124)); then
    printf 'verify-hubble-relay: kubectl get service %s/%s did not answer within %ss\n' \
      "$NAMESPACE" "$RELAY_SERVICE" "$EXEC_TIMEOUT_SECONDS" >>"$work_dir/service"
  elif ((rc != 0)) && [[ ! -s $work_dir/service ]]; then
    printf 'verify-hubble-relay: kubectl get service %s/%s failed (exit %s) and said nothing\n' \
      "$NAMESPACE" "$RELAY_SERVICE" "$rc" >"$work_dir/service"
  elif [[ ! -s $work_dir/service ]]; then
    printf 'verify-hubble-relay: Service %s/%s has no ClusterIP (clusterIP: %s)\n' \
      "$NAMESPACE" "$RELAY_SERVICE" "${ip:-none}" >"$work_dir/service"
  fi
}

# ask_hubble <output file> <hubble arguments...>: hubble in the agent container, asking the relay.
ask_hubble() {
  local out=$1
  shift
  run_bounded "$out" "${kubectl[@]}" -n "$NAMESPACE" exec "$AGENT" -c "$AGENT_CONTAINER" -- \
    hubble "$@" --server "$address"
  [[ -s $out ]] || printf 'verify-hubble-relay: hubble %s printed nothing\n' "$1" >"$out"
}

healthy() { grep -Eq '^[[:space:]]*Healthcheck \(via .*\):[[:space:]]*Ok[[:space:]]*$' "$work_dir/status"; }

# `Connected Nodes: n/n`, with n = EXPECTED_NODES when it is set.
all_connected() {
  local line
  while IFS= read -r line; do
    if [[ $line =~ ^[[:space:]]*Connected\ Nodes:[[:space:]]*([0-9]+)/([0-9]+)[[:space:]]*$ ]]; then
      [[ ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" ]] || return 1
      [[ -z $EXPECTED_NODES || ${BASH_REMATCH[1]} == "$EXPECTED_NODES" ]]
      return
    fi
  done <"$work_dir/status"
  return 1
}

has_flow() { grep -Eq '^[[:space:]]*\{.*"flow"[[:space:]]*:[[:space:]]*\{' "$work_dir/observe"; }

connected_line() { grep -Em 1 '^[[:space:]]*Connected Nodes:' "$work_dir/status" || echo 'no Connected Nodes line'; }

# A file as lines: a last line without its newline gets one, so the next output starts a line of its own.
print_lines() {
  cat "$1"
  if [[ -s $1 && -n $(tail -c 1 "$1") ]]; then echo; fi
}

address=""
echo "nothing asked yet" >"$work_dir/missing"
deadline=$((SECONDS + WAIT_SECONDS))
progress_start "Hubble Relay to reach ${EXPECTED_NODES:-every} node(s) and serve a flow, at most ${WAIT_SECONDS}s" pending
while :; do
  : >"$work_dir/observe"
  [[ -n $address ]] || relay_address
  if [[ -z $address ]]; then
    printf 'the Service %s/%s: %s\n' "$NAMESPACE" "$RELAY_SERVICE" "$(head -n 1 "$work_dir/service")" \
      >"$work_dir/missing"
  else
    ask_hubble "$work_dir/status" status
    if ! healthy; then
      printf 'a healthy relay at %s: %s\n' "$address" "$(head -n 1 "$work_dir/status")" >"$work_dir/missing"
    else
      ask_hubble "$work_dir/observe" observe --last 1 -o jsonpb
      if all_connected && has_flow; then break; fi
      missing=""
      all_connected || missing="${EXPECTED_NODES:-all} nodes connected (saw '$(connected_line)')"
      has_flow || missing+="${missing:+; }a flow from hubble observe"
      printf '%s\n' "$missing" >"$work_dir/missing"
    fi
  fi
  ((SECONDS < deadline)) || break
  sleep "$RETRY_DELAY_SECONDS"
done
progress_stop

if [[ -z $address ]]; then
  print_lines "$work_dir/service"
  exit 0
fi
print_lines "$work_dir/status"
print_lines "$work_dir/observe"
