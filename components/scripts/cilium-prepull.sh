#!/usr/bin/env bash
# Before the Cilium release is installed or changes, on every node: the agent
# image of the target release in the node's containerd, so that each agent's
# restart during the rollout does not wait for a pull of a few hundred MB
# (Cilium's upgrade guide pre-pulls for the same reason). Through the CRI, so
# K3s' registries.yaml (air-gap mirrors, credentials) applies. An image
# already present is not pulled again. A pull that fails stops the upgrade
# before the release changes, naming the node and the image. Prints
#   prepull=present|pulled image=<ref>
#
# Parameters:
#   IMAGE                 the agent image reference the release will run
#   PULL_TIMEOUT_SECONDS  bound on the pull
#   CRICTL
set -euo pipefail
# @params

: "${CRICTL:=k3s crictl}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra crictl <<<"$CRICTL"

if "${crictl[@]}" inspecti -q "$IMAGE" >/dev/null 2>&1; then
  echo "prepull=present image=$IMAGE"
  exit 0
fi
if ! output=$(timeout --kill-after=10 "$PULL_TIMEOUT_SECONDS" "${crictl[@]}" pull "$IMAGE" 2>&1); then
  printf 'cilium-prepull: node %s: could not pull %s within %ss; the Cilium release is not changed\n' \
    "$(hostname)" "$IMAGE" "$PULL_TIMEOUT_SECONDS" >&2
  printf 'cilium-prepull: crictl said: %s\n' "$(tail -n 3 <<<"$output")" >&2
  printf 'cilium-prepull: check that the node reaches the registry (airgap.registries mirrors, credentials)\n' >&2
  exit 1
fi
echo "prepull=pulled image=$IMAGE"
