#!/usr/bin/env bash
# The lab toolchain: builds the Pulumi CLI, a Python language host, the provider plugins the
# program uses and actionlint from their Go modules (the only way to have them on machines that
# reach the Go module proxy but not GitHub or pulumi.com), into a cache outside git, and prints
# the environment that runs Pulumi offline against a temporary file backend. Two of them are our
# own because the proxy refuses upstream's: the language host (lab/langhost) and the command
# provider (lab/command-provider), both for the lab and the tests only.
#
#   lab/toolchain.sh build [all|tests|actionlint|helm|pulumi|langhost|kubernetes|command]
#                                             build what is missing (a second run builds nothing)
#   lab/toolchain.sh env [--test]             print export lines (eval "$(lab/toolchain.sh env)")
#   lab/toolchain.sh versions                 print what is built, and from which module versions
#
# Cache: ${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/toolchain (bin/, providers/, ambient/,
# pulumi-home/, src/, stamps/).
# Versions follow requirements.txt; where the proxy does not serve the pinned version the nearest
# served one below is built instead, and the build says so.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/toolchain
BIN=$CACHE/bin
# Provider plugins are built here (not on PATH) and installed into the lab PULUMI_HOME under the
# version they really are. The Python SDKs ask the engine for the pinned versions; a plugin built
# at another version is also linked into ambient/, which `env` puts on PATH: the engine then uses
# it as an ambient plugin and says so in every run ("using pulumi-resource-X from $PATH").
PROVIDERS=$CACHE/providers
AMBIENT=$CACHE/ambient
SRC=$CACHE/src
STAMPS=$CACHE/stamps
LAB_PULUMI_HOME=$CACHE/pulumi-home

# --- versions -------------------------------------------------------------------------------------
pinned() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$ROOT/requirements.txt"; }
PULUMI_PINNED=$(pinned pulumi)
KUBERNETES_PINNED=$(pinned pulumi-kubernetes)
COMMAND_PINNED=$(pinned pulumi-command)
# The nearest versions the proxy serves (measured 2026-12: pkg/v3 v3.272.0 and
# pulumi-kubernetes/provider/v4 v4.34.2 answer 403; v4.0.0-20260115033456-f47bc2d6f199 is the
# only provider/v4 version served, a master commit of 2026-01-15 between 4.24.0 and 4.29.0).
PULUMI_NEAREST=3.274.0
KUBERNETES_NEAREST=4.0.0-20260115033456-f47bc2d6f199
# The Kubernetes API the provider's schema is generated from: its client-go is v0.33.3. The
# legacy specs are merged in by the provider's own generator (cmd/pulumi-gen-kubernetes).
KUBE_VERSION=v1.33.3
KUBE_LEGACY_VERSIONS="v1.17.0 v1.18.0 v1.19.0 v1.20.0 v1.26.0 v1.28.0 v1.30.0 v1.31.0"
ACTIONLINT_VERSION=1.7.12
# helm renders the real Cilium charts in tests/stacks/test_airgap_chart.py.
HELM_VERSION=3.19.5

# Bump a recipe to force a rebuild of that binary when this script changes how it is built.
RECIPE_PULUMI=1
RECIPE_KUBERNETES=1
RECIPE_ACTIONLINT=1
RECIPE_HELM=1

LOG_NAME=toolchain
# shellcheck source=lab/go-modules.bash
source "$ROOT/lab/go-modules.bash"

# choose NAME PINNED NEAREST MODULE: prints the version to build (the pinned one when served).
choose() {
  local name=$1 pinned=$2 nearest=$3 module=$4
  if served "$module" "v$pinned"; then printf '%s\n' "$pinned"; return; fi
  log "$name: building the nearest served version $nearest instead of the pinned $pinned"
  printf '%s\n' "$nearest"
}

# --- pulumi CLI -------------------------------------------------------------------------------------
build_pulumi() {
  local version stamp dir
  version=$(choose pulumi "$PULUMI_PINNED" "$PULUMI_NEAREST" github.com/pulumi/pulumi/pkg/v3)
  stamp="pulumi $version recipe $RECIPE_PULUMI"
  if stamp_ok pulumi "$stamp" && [ -x "$BIN/pulumi" ]; then return; fi
  dir=$SRC/pulumi
  rm -rf "$dir" && mkdir -p "$dir" "$BIN"
  (
    cd "$dir"
    printf 'module k3scilium.local/toolchain/pulumi\n\ngo 1.26\n\nrequire github.com/pulumi/pulumi/pkg/v3 v%s\n' "$version" >go.mod
    copy_replaces "$(modfile github.com/pulumi/pulumi/pkg/v3 "v$version")"
    # -mod=mod: go build resolves what the CLI imports (no `go mod tidy`: it would fetch test deps).
    go build -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version" \
      -o "$BIN/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
  )
  stamp_write pulumi "$stamp"
}

# --- our own Python language host (lab/langhost) ------------------------------------------------
# The upstream language host's module (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3)
# is refused by the proxy (403), so lab/langhost is our own; the exec script it starts comes
# from the SDK module lab/langhost/go.mod requires.
build_langhost() {
  local sdk stamp
  sdk=$(sed -n 's/^require github.com\/pulumi\/pulumi\/sdk\/v3 v\(.*\)$/\1/p; s/^\tgithub.com\/pulumi\/pulumi\/sdk\/v3 v\(.*\)$/\1/p' "$ROOT/lab/langhost/go.mod")
  [ -n "$sdk" ] || die "lab/langhost/go.mod does not require github.com/pulumi/pulumi/sdk/v3"
  stamp="langhost sdk $sdk source $(source_digest lab/langhost)"
  if stamp_ok langhost "$stamp" && [ -x "$BIN/pulumi-language-python" ] && [ -f "$BIN/pulumi-language-python-exec" ]; then
    return
  fi
  mkdir -p "$BIN"
  (cd "$ROOT/lab/langhost" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath \
    -ldflags "-s -w -X main.version=$sdk-k3s-cilium-lab" -o "$BIN/pulumi-language-python" .)
  install -m 0755 "$(moddir github.com/pulumi/pulumi/sdk/v3 "v$sdk")/python/cmd/pulumi-language-python-exec" \
    "$BIN/pulumi-language-python-exec"
  stamp_write langhost "$stamp"
}

# --- pulumi-resource-kubernetes ---------------------------------------------------------------------
build_kubernetes() {
  local version stamp dir module=github.com/pulumi/pulumi-kubernetes/provider/v4 v spec sdk
  version=$(choose pulumi-resource-kubernetes "$KUBERNETES_PINNED" "$KUBERNETES_NEAREST" "$module")
  stamp="kubernetes $version kube $KUBE_VERSION recipe $RECIPE_KUBERNETES"
  if stamp_ok kubernetes "$stamp" && [ -x "$PROVIDERS/pulumi-resource-kubernetes" ]; then return; fi
  dir=$SRC/kubernetes
  rm -rf "$dir" && mkdir -p "$dir/repo" "$dir/openapi" "$PROVIDERS"
  # A writable copy of the module: the schema is generated into it, then embedded.
  cp -r "$(moddir "$module" "v$version")" "$dir/repo/provider"
  chmod -R u+w "$dir/repo"
  # The Kubernetes OpenAPI specs the Makefile downloads from GitHub, taken from k8s.io/kubernetes.
  for v in $KUBE_VERSION $KUBE_LEGACY_VERSIONS; do
    spec=$(moddir k8s.io/kubernetes "$v")/api/openapi-spec/swagger.json
    cp "$spec" "$dir/openapi/swagger-$v.json"
  done
  (
    cd "$dir/repo/provider"
    # ../sdk (the Go SDK of the same commit) is not in the module zip: use the released Go SDK
    # this go.mod names instead.
    sdk=$(go mod edit -json | python3 -c '
import json, sys
print(next(r["Version"] for r in json.load(sys.stdin)["Require"] if r["Path"] == "github.com/pulumi/pulumi-kubernetes/sdk/v4"))')
    go mod edit -dropreplace github.com/pulumi/pulumi-kubernetes/sdk/v4 -require "github.com/pulumi/pulumi-kubernetes/sdk/v4@$sdk"
    go build -trimpath -o "$dir/pulumi-gen-kubernetes" ./cmd/pulumi-gen-kubernetes
    "$dir/pulumi-gen-kubernetes" schema "$dir/openapi/swagger-$KUBE_VERSION.json" "$dir/repo" >/dev/null
    (cd cmd/pulumi-resource-kubernetes && VERSION=$version go generate ./...)
    go build -trimpath \
      -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$version" \
      -o "$PROVIDERS/pulumi-resource-kubernetes" ./cmd/pulumi-resource-kubernetes
  )
  stamp_write kubernetes "$stamp"
}

# --- pulumi-resource-command: the lab's own (lab/command-provider) ------------------------------------
# The proxy serves no version of github.com/pulumi/pulumi-command/provider (v1.2.1: 404, others: 403),
# so the lab runs its own implementation of pulumi-command 1.2.1's contract. It reports and is
# installed as the version the SDK asks for, so the engine loads it like the real plugin; it says
# what it is in every run ("command provider: lab implementation, lab/command-provider").
build_command() {
  local stamp
  stamp="command $COMMAND_PINNED source $(source_digest lab/command-provider)"
  if stamp_ok command "$stamp" && [ -x "$PROVIDERS/pulumi-resource-command" ]; then return; fi
  mkdir -p "$PROVIDERS"
  (cd "$ROOT/lab/command-provider" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath \
    -ldflags "-s -w -X main.version=$COMMAND_PINNED" -o "$PROVIDERS/pulumi-resource-command" .)
  stamp_write command "$stamp"
}

# source_digest DIR: what a build of our own Go program in DIR depends on (go.mod, go.sum, *.go).
source_digest() {
  cat "$ROOT/$1/go.mod" "$ROOT/$1/go.sum" "$ROOT/$1"/*.go | sha256sum | cut -c1-16
}

# --- actionlint ---------------------------------------------------------------------------------------
# go_install NAME PACKAGE VERSION RECIPE: a module without replace directives, straight from the proxy.
go_install() {
  local stamp="$1 $3 recipe $4"
  if stamp_ok "$1" "$stamp" && [ -x "$BIN/$1" ]; then return; fi
  mkdir -p "$BIN"
  GOBIN=$BIN CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$2@v$3"
  stamp_write "$1" "$stamp"
}

build_actionlint() { go_install actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION" "$RECIPE_ACTIONLINT"; }
build_helm() { go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$RECIPE_HELM"; }

# --- plugins into the lab PULUMI_HOME -------------------------------------------------------------
plugin_version() { sed -n "s/^$1 \([^ ]*\) .*/\1/p" "$STAMPS/$1" 2>/dev/null; }

install_plugins() {
  local name version pinned stamp
  mkdir -p "$AMBIENT"
  for name in kubernetes command; do
    [ -x "$PROVIDERS/pulumi-resource-$name" ] || continue
    version=$(plugin_version "$name")
    case $name in kubernetes) pinned=$KUBERNETES_PINNED ;; command) pinned=$COMMAND_PINNED ;; esac
    if [ "$version" != "$pinned" ]; then
      ln -sfn "$PROVIDERS/pulumi-resource-$name" "$AMBIENT/pulumi-resource-$name"
      log "pulumi-resource-$name $version stands in for the pinned $pinned (on PATH through $AMBIENT)"
    else
      rm -f "$AMBIENT/pulumi-resource-$name"
    fi
    stamp="$(cat "$STAMPS/$name")"
    if stamp_ok "plugin-$name" "$stamp" && [ -d "$LAB_PULUMI_HOME/plugins/resource-$name-v$version" ]; then continue; fi
    rm -rf "$LAB_PULUMI_HOME/plugins/resource-$name-v$version"*
    PULUMI_HOME=$LAB_PULUMI_HOME PULUMI_SKIP_UPDATE_CHECK=true \
      "$BIN/pulumi" plugin install resource "$name" "$version" --file "$PROVIDERS/pulumi-resource-$name" >&2
    stamp_write "plugin-$name" "$stamp"
  done
}

versions() {
  local name note
  for name in pulumi langhost kubernetes command actionlint helm; do
    note=""
    [ "$name" = command ] && note=" (lab implementation, lab/command-provider)"
    if [ -f "$STAMPS/$name" ]; then printf '%-11s %s%s\n' "$name" "$(cat "$STAMPS/$name")" "$note"; else printf '%-11s not built\n' "$name"; fi
  done
  printf 'pinned in requirements.txt: pulumi %s, pulumi-kubernetes %s, pulumi-command %s\n' \
    "$PULUMI_PINNED" "$KUBERNETES_PINNED" "$COMMAND_PINNED"
}

build() {
  local what=${1:-all}
  command -v go >/dev/null || die "go is not installed (Go 1.26 from https://go.dev/dl or /usr/local/go)"
  # One build at a time per cache (parallel test runs share it).
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  case $what in
    actionlint) timed_if_built actionlint build_actionlint ;;
    helm) timed_if_built helm build_helm ;;
    pulumi) timed_if_built pulumi build_pulumi ;;
    langhost) timed_if_built pulumi-language-python build_langhost ;;
    kubernetes) timed_if_built ../providers/pulumi-resource-kubernetes build_kubernetes ;;
    command) timed_if_built ../providers/pulumi-resource-command build_command ;;
    tests | all)
      # Everything the test suite (run-tests.sh) and the lab use.
      timed_if_built actionlint build_actionlint
      timed_if_built helm build_helm
      timed_if_built pulumi build_pulumi
      timed_if_built pulumi-language-python build_langhost
      timed_if_built ../providers/pulumi-resource-command build_command
      timed_if_built ../providers/pulumi-resource-kubernetes build_kubernetes
      install_plugins
      versions >&2
      ;;
    *) die "unknown target '$what' (all, tests, actionlint, helm, pulumi, langhost, kubernetes, command)" ;;
  esac
}

# timed_if_built BINARY FUNCTION: runs FUNCTION; reports the time and size when it built BINARY.
timed_if_built() {
  local name=$1 before after
  before=$(stat -c %Y "$BIN/$name" 2>/dev/null || echo none)
  local start=$SECONDS
  "$2"
  after=$(stat -c %Y "$BIN/$name" 2>/dev/null || echo none)
  if [ "$before" != "$after" ]; then
    log "$name built in $((SECONDS - start))s ($(du -h "$BIN/$name" | cut -f1))"
  else
    log "$name: up to date"
  fi
}

print_env() {
  local state
  state=$(mktemp -d "${TMPDIR:-/tmp}/k3s-cilium-state.XXXXXX")
  printf 'export PATH=%q\n' "$BIN:$AMBIENT:$PATH"
  printf 'export PULUMI_HOME=%q\n' "$LAB_PULUMI_HOME"
  printf 'export PULUMI_SKIP_UPDATE_CHECK=true\n'
  printf 'export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true\n'
  # The environment variable wins over Pulumi.yaml's backend.url (pulumi login does not).
  printf 'export PULUMI_BACKEND_URL=%q\n' "file://$state"
  if [ "${1:-}" = --test ]; then
    printf 'export PULUMI_CONFIG_PASSPHRASE=%q\n' "lab-only-passphrase"
  fi
}

case ${1:-} in
  build) build "${2:-all}" ;;
  env) print_env "${2:-}" ;;
  versions) versions ;;
  *)
    sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
