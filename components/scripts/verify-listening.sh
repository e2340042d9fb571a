#!/usr/bin/env bash
# Print this node's listening TCP sockets with their processes (`ss -ltnp`),
# once something listens on PORT or WAIT_SECONDS have passed: e.g. the Cilium
# agent's Hubble metrics server on 9965, which starts a little after the agent
# reports Ok. Runs as root (ss names the processes of sockets only for root).
# The verification package judges who listens; this script fails only when ss
# cannot list sockets.
#
# Parameters:
#   PORT, WAIT_SECONDS
set -euo pipefail
# @params

: "${WAIT_SECONDS:=60}"
# ss lives in /usr/sbin, which a user's PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"

deadline=$((SECONDS + WAIT_SECONDS))
until [[ -n $(ss -Hltn "sport = :$PORT") ]] || ((SECONDS >= deadline)); do
  sleep 2
done
ss -ltnp
