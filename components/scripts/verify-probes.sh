#!/usr/bin/env bash
# Probe the smoke nginx Service from this node and print one line per probe
# for `python3 -m verification probes`:
#   probe=<name> target=<ip:port> result=ok|fail code=<http code> attempts=<n> [detail=<text>]
# A probe is ok when an HTTP GET answers 2xx. Each attempt is bounded by
# curl's --connect-timeout/--max-time; a failed attempt is retried up to
# ATTEMPTS times, RETRY_DELAY_SECONDS apart (a NodePort or a route can take
# a moment after a datapath restart), so the whole run is bounded too.
# A failed probe is a result, not an error: the script exits 0 after printing.
#
# Parameters:
#   PROBES         probe names, separated by blanks, from:
#                  localhost-nodeport  127.0.0.1:NODE_PORT
#                  nodeip-nodeport     NODE_IP:NODE_PORT
#                  clusterip           CLUSTER_IP:SERVICE_PORT
#                  remote-pod          REMOTE_POD_IP:SERVICE_PORT (a smoke pod on another node)
#                  loadbalancer        LB_ADDRESS:SERVICE_PORT (the LoadBalancer test Service)
#                  gateway             GATEWAY_TARGET (the test Gateway's address and listener port)
#   NODE_PORT, NODE_IP, CLUSTER_IP, SERVICE_PORT, REMOTE_POD_IP, LB_ADDRESS (empty: none was found)
#   GATEWAY_TARGET  ip:port, [ipv6]:port for an IPv6 address (empty: the Gateway's address is unknown)
#   ATTEMPTS, RETRY_DELAY_SECONDS, CONNECT_TIMEOUT_SECONDS, MAX_TIME_SECONDS
#   PROGRESS_SECONDS  how often a probe being retried prints a progress line (stderr)
set -euo pipefail
# @params
# @progress

: "${NODE_IP:=}"
: "${REMOTE_POD_IP:=}"
: "${LB_ADDRESS:=}"
: "${GATEWAY_TARGET:=}"
: "${SERVICE_PORT:=80}"
: "${ATTEMPTS:=10}"
: "${RETRY_DELAY_SECONDS:=1}"
: "${CONNECT_TIMEOUT_SECONDS:=2}"
: "${MAX_TIME_SECONDS:=3}"
work_dir=$(mktemp -d)
trap 'progress_stop; rm -rf "$work_dir"' EXIT

# @include http-probe

report_missing() {
  local name=$1 why=$2
  printf 'probe=%s target=none result=fail code=000 attempts=0 detail=%s\n' "$name" "$(field "$why")"
}

# probe <name> <target> [curl option...]
probe() {
  progress_start "probe $1 ($2) to answer 2xx, at most $ATTEMPTS attempts"
  probe_http "$1" "$2" "http://$2/" '2??' "${@:3}"
  progress_stop
}

for name in $PROBES; do
  case $name in
    localhost-nodeport) probe "$name" "127.0.0.1:$NODE_PORT" ;;
    nodeip-nodeport)
      if [[ -n $NODE_IP ]]; then probe "$name" "$NODE_IP:$NODE_PORT"; else report_missing "$name" "node IP unknown"; fi
      ;;
    clusterip) probe "$name" "$CLUSTER_IP:$SERVICE_PORT" ;;
    remote-pod)
      if [[ -n $REMOTE_POD_IP ]]; then
        probe "$name" "$REMOTE_POD_IP:$SERVICE_PORT"
      else
        report_missing "$name" "no ready smoke pod on another node"
      fi
      ;;
    loadbalancer)
      if [[ -n $LB_ADDRESS ]]; then
        probe "$name" "$LB_ADDRESS:$SERVICE_PORT"
      else
        report_missing "$name" "LoadBalancer address unknown"
      fi
      ;;
    gateway)
      # --globoff: the brackets of an IPv6 target are the address, not a curl URL range.
      if [[ -n $GATEWAY_TARGET ]]; then
        probe "$name" "$GATEWAY_TARGET" --globoff
      else
        report_missing "$name" "Gateway address unknown"
      fi
      ;;
    *)
      printf 'verify-probes: unknown probe %q\n' "$name" >&2
      exit 2
      ;;
  esac
done
