#!/usr/bin/env bash
# Run `cilium connectivity test` on this K3s server and print its output for
# `python3 -m verification connectivity-test` (which reads the summary). A
# failing test is a result, not an error: the output is printed and the script
# exits 0. It fails when the test cannot run: no cilium CLI on this server,
# or no output, or it did not finish within TIMEOUT_SECONDS.
#
# The output is streamed as the CLI prints it (stdout holds exactly what the
# CLI printed), and while the test runs a progress line goes to stderr every
# PROGRESS_SECONDS: a test of up to half an hour is never silent long enough
# for an idle timeout to cut the SSH session.
#
# The cilium CLI is not installed by this program (it is a separate, versioned
# download): install the release matching your Cilium version on the first
# server, e.g. following docs.cilium.io "Install the Cilium CLI":
#   curl -fsSLO https://github.com/cilium/cilium-cli/releases/download/<version>/cilium-linux-amd64.tar.gz{,.sha256sum}
#   sha256sum --check cilium-linux-amd64.tar.gz.sha256sum && tar -C /usr/local/bin -xzf cilium-linux-amd64.tar.gz
#
# Parameters:
#   CILIUM_CLI        the CLI to run (default cilium; searched in PATH and /usr/local/bin)
#   KUBECONFIG_PATH   K3s's admin kubeconfig
#   TIMEOUT_SECONDS   bound on the whole test
#   EXTRA_ARGS        further arguments, separated by blanks
#   PROGRESS_SECONDS  how often a progress line goes to stderr
set -euo pipefail
# @params
# @progress

: "${CILIUM_CLI:=cilium}"
: "${KUBECONFIG_PATH:=/etc/rancher/k3s/k3s.yaml}"
: "${TIMEOUT_SECONDS:=1800}"
: "${EXTRA_ARGS:=}"
PATH="$PATH:/usr/local/bin"
read -ra extra <<<"$EXTRA_ARGS"

fail() {
  printf 'verify-connectivity-test: %s\n' "$*" >&2
  exit 1
}

if ! command -v "$CILIUM_CLI" >/dev/null 2>&1; then
  fail "the cilium CLI ('$CILIUM_CLI') is not installed on this server, so the connectivity test cannot run." \
    "Install the cilium-cli release matching Cilium (docs.cilium.io: 'Install the Cilium CLI') into /usr/local/bin," \
    "or set verify.connectivityTest: false"
fi
export KUBECONFIG=$KUBECONFIG_PATH
work_dir=$(mktemp -d)
trap 'progress_stop; rm -rf "$work_dir"' EXIT

progress_start "cilium connectivity test to finish, at most ${TIMEOUT_SECONDS}s"
status=0
# The CLI's status, not tee's (pipefail alone would report tee's failure too).
timeout --kill-after=30 "$TIMEOUT_SECONDS" "$CILIUM_CLI" connectivity test "${extra[@]}" 2>&1 |
  tee "$work_dir/output" || status=${PIPESTATUS[0]}
progress_stop
if ((status == 124 || status == 137)); then
  fail "the connectivity test did not finish within ${TIMEOUT_SECONDS}s (its output so far is above)"
fi
if [[ ! -s $work_dir/output ]]; then
  fail "'$CILIUM_CLI connectivity test' printed nothing (exit status $status)"
fi
