#!/usr/bin/env bash
# Helm, built from its Go module (helm.sh/helm/v3) through the Go module proxy, for the tests that
# render the Cilium chart with `helm template` (tests/stacks/test_airgap_chart.py). Machines that
# reach the proxy but not get.helm.sh or GitHub releases can have it this way.
#
#   lab/helm.sh build     build it unless the pinned version is already there (prints its path)
#   lab/helm.sh path      print the binary's path if it is built, else fail
#
# Cache: ${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/toolchain/bin/helm (never in git).
set -euo pipefail

HELM_VERSION=v3.19.5
CACHE=${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/toolchain
BIN=$CACHE/bin
STAMP=$CACHE/stamps/helm

export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then PATH=/usr/local/go/bin:$PATH; fi

log() { printf 'helm.sh: %s\n' "$*" >&2; }

built() { [[ -x $BIN/helm && -f $STAMP && $(cat "$STAMP") == "$HELM_VERSION" ]]; }

case ${1:-build} in
  build)
    if ! built; then
      command -v go >/dev/null || { log "go is not installed"; exit 1; }
      log "building helm ${HELM_VERSION} from helm.sh/helm/v3 (go install)"
      mkdir -p "$BIN" "$(dirname "$STAMP")"
      GOBIN=$BIN CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
      printf '%s\n' "$HELM_VERSION" >"$STAMP"
    fi
    printf '%s\n' "$BIN/helm"
    ;;
  path)
    built || { log "helm ${HELM_VERSION} is not built: lab/helm.sh build"; exit 1; }
    printf '%s\n' "$BIN/helm"
    ;;
  *)
    log "usage: lab/helm.sh build|path"
    exit 2
    ;;
esac
