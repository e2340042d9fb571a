#!/usr/bin/env bash
# Print the admin kubeconfig K3s wrote on this server. The Pulumi program
# rewrites its server address and keeps the result as a secret output.
#
# K3s issues client certificates for a year and renews those within 90 days
# of expiry when it starts, rewriting the kubeconfig. So when the admin
# client certificate is older than RENEW_AFTER_DAYS, K3s is restarted first
# and the renewed kubeconfig is printed: replacing this command
# (`pulumi up --replace <its URN>`) renews the kubeconfig in state. Otherwise
# nothing on the host is modified.
#
# stdout holds only the kubeconfig (a secret); progress goes to stderr.
#
# Parameters:
#   KUBECONFIG_PATH    where K3s writes it (/etc/rancher/k3s/k3s.yaml)
#   CLIENT_CERT        the admin client certificate K3s put in it
#   RENEW_AFTER_DAYS   certificate age from which K3s renews it at start
#   SERVICE            the K3s systemd unit on a server (k3s)
#   K3S_BIN            the k3s binary
#   API_READY_TIMEOUT  seconds to wait for the API server after a restart
set -euo pipefail
# @params

readonly API_POLL_SECONDS=2 PROGRESS_EVERY_SECONDS=30

fail() {
  printf 'kubeconfig: %s\n' "$1" >&2
  exit 1
}

wait_for_api_server() {
  local start=$SECONDS last_error
  local next_progress=$((start + PROGRESS_EVERY_SECONDS))
  until last_error=$("$K3S_BIN" kubectl get --raw /readyz --request-timeout=5s 2>&1); do
    ((SECONDS - start < API_READY_TIMEOUT)) ||
      fail "the API server did not become ready within ${API_READY_TIMEOUT}s: ${last_error}"
    if ((SECONDS >= next_progress)); then
      printf 'kubeconfig: waiting for the API server after the restart (%ss so far)\n' "$((SECONDS - start))" >&2
      next_progress=$((SECONDS + PROGRESS_EVERY_SECONDS))
    fi
    sleep "$API_POLL_SECONDS"
  done
}

renew_if_due() {
  [[ -f $CLIENT_CERT ]] || return 0
  local age_days
  age_days=$((($(date +%s) - $(stat -c %Y -- "$CLIENT_CERT")) / 86400))
  ((age_days >= RENEW_AFTER_DAYS)) || return 0
  printf 'kubeconfig: the admin client certificate is %s days old; restarting %s so that K3s renews it\n' \
    "$age_days" "$SERVICE" >&2
  systemctl restart "$SERVICE"
  wait_for_api_server
}

renew_if_due
[[ -s $KUBECONFIG_PATH ]] || fail "$KUBECONFIG_PATH is missing or empty; is K3s running as a server on this node?"
cat -- "$KUBECONFIG_PATH"
