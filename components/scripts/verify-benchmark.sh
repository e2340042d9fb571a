#!/usr/bin/env bash
# Run netperf TCP_RR and TCP_STREAM from the benchmark client pod to the
# netperf server behind its ClusterIP Service, and print both outputs for
# `python3 -m verification benchmark`. Runs as root on a K3s server.
#
# The data connection uses a fixed port (test option -P ,DATA_PORT), since
# the Service forwards only the control and that data port. Results are
# keyword lines (-k); the test banner stays on, as it names the test and
# separates the two runs. Slow figures are a result, not an error: the script
# fails only when neither run printed anything.
#
# Parameters:
#   NAMESPACE, CLIENT_SELECTOR   the client pod (it runs netserver too, to stay up)
#   SERVER_HOST                  the server Service's ClusterIP
#   CONTROL_PORT, DATA_PORT, DURATION_SECONDS, POD_READY_TIMEOUT_SECONDS, KUBECTL
#   PROGRESS_SECONDS             how often a wait prints a progress line (stderr)
set -euo pipefail
# @params
# @progress

: "${KUBECTL:=k3s kubectl}"
: "${CONTROL_PORT:=12865}"
: "${DATA_PORT:=12866}"
: "${DURATION_SECONDS:=10}"
: "${POD_READY_TIMEOUT_SECONDS:=180}"
readonly RR_OUTPUT=MIN_LATENCY,MEAN_LATENCY,P50_LATENCY,P90_LATENCY,P99_LATENCY,MAX_LATENCY,STDDEV_LATENCY,TRANSACTION_RATE
readonly STREAM_OUTPUT=THROUGHPUT,THROUGHPUT_UNITS
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
work_dir=$(mktemp -d)
trap 'progress_stop; rm -rf "$work_dir"' EXIT

fail() {
  printf 'verify-benchmark: %s\n' "$*" >&2
  exit 1
}

progress_start "a Ready benchmark client pod ($CLIENT_SELECTOR), at most ${POD_READY_TIMEOUT_SECONDS}s"
if ! "${kubectl[@]}" -n "$NAMESPACE" wait --for=condition=Ready pod -l "$CLIENT_SELECTOR" \
  --timeout="${POD_READY_TIMEOUT_SECONDS}s" >/dev/null 2>"$work_dir/stderr"; then
  fail "no Ready client pod ($CLIENT_SELECTOR) in $NAMESPACE: $(<"$work_dir/stderr")"
fi
pod=$("${kubectl[@]}" -n "$NAMESPACE" get pods -l "$CLIENT_SELECTOR" --field-selector status.phase=Running \
  -o jsonpath='{.items[0].metadata.name}')
[[ -n $pod ]] || fail "no running client pod ($CLIENT_SELECTOR) in $NAMESPACE"

run() {
  local test=$1 selectors=$2
  "${kubectl[@]}" -n "$NAMESPACE" exec "$pod" -- netperf -H "$SERVER_HOST" -p "$CONTROL_PORT" \
    -l "$DURATION_SECONDS" -t "$test" -- -P ",$DATA_PORT" -k "$selectors" 2>&1 || true
}

progress_start "netperf TCP_RR and TCP_STREAM, ${DURATION_SECONDS}s each"
output="$(run TCP_RR "$RR_OUTPUT")"$'\n'"$(run TCP_STREAM "$STREAM_OUTPUT")"
progress_stop
if [[ -z ${output//[[:space:]]/} ]]; then
  fail "netperf printed nothing in pod $pod"
fi
printf '%s\n' "$output"
