#!/usr/bin/env bash
# The real datapath lab's binaries (issue 22): upstream Kubernetes, etcd, crictl and Cilium, built
# from the modules the Go proxy serves, and Kubernetes' pause, into a cache outside git. K3s
# itself cannot be had here (the proxy refuses it); nothing here imitates it.
#
#   lab/datapath/build.sh build [all|kubernetes|etcd|crictl|pause|cilium|hubble|coredns|testserver]
#                                     build what is missing (a second run builds nothing)
#   lab/datapath/build.sh versions    print what is built, from which module versions
#
# Cache: ${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/datapath (bin/, src/, stamps/).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/datapath
BIN=$CACHE/bin
SRC=$CACHE/src
STAMPS=$CACHE/stamps

KUBERNETES_VERSION=v1.33.13
# Kubernetes' go.mod points its staging modules (k8s.io/api, ...) at directories of its own
# repository, which its module zip leaves out; each is served as a module of its own at v0.<minor>.
KUBERNETES_STAGING_VERSION=v0.33.13
KUBERNETES_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
# The etcd minor Kubernetes 1.33 is tested with (its cluster/images/etcd builds 3.5.x).
ETCD_VERSION=v3.5.21
CRICTL_VERSION=v1.34.0
CILIUM_VERSION=v1.19.6
# Cilium's own image (images/cilium/Dockerfile) builds these directories; the operator is the
# generic variant (build tag ipam_provider_operator), the one the chart's default image runs.
CILIUM_COMMANDS="cilium-agent=daemon cilium-dbg=cilium-dbg cilium-health=cilium-health
cilium-health-responder=cilium-health/responder cilium-cni=plugins/cilium-cni cilium-mount=tools/mount
cilium-sysctlfix=tools/sysctlfix cilium-operator-generic=operator:ipam_provider_operator"
# Hubble from the same module: the CLI (hubble/, in every agent image as /usr/bin/hubble) and Hubble
# Relay (hubble-relay/, an image of its own), Cilium's own Makefiles' version variables.
HUBBLE_COMMANDS="hubble=hubble hubble-relay=hubble-relay"
# CoreDNS, which K3s deploys by default (its bundled manifest): the version K3s v1.33 ships, with the
# plugins the lab's Corefile uses (lab/cluster/coredns.py), linked into a main module of ours as
# CoreDNS documents for a custom plugin set.
COREDNS_VERSION=v1.12.2
COREDNS_PLUGINS="errors health ready kubernetes cache loadbalance loop log"

# Bump a recipe to rebuild when this script changes how a binary is built.
RECIPE=1

LOG_NAME=datapath-build
# shellcheck source=lab/go-modules.bash
source "$ROOT/lab/go-modules.bash"
export CGO_ENABLED=0

# modtime MODULE VERSION: when the proxy says the version was published (RFC 3339).
modtime() { go list -m -json "$1@$2" | sed -n 's/^\t"Time": "\(.*\)",$/\1/p'; }

# --- Kubernetes -----------------------------------------------------------------------------------
build_kubernetes() {
  local stamp="kubernetes $KUBERNETES_VERSION staging $KUBERNETES_STAGING_VERSION recipe $RECIPE"
  local dir=$SRC/kubernetes packages=() name module_time minor ldflags=() key value
  stamp_ok kubernetes "$stamp" && return
  rm -rf "$dir" && mkdir -p "$dir" "$BIN"
  minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  module_time=$(modtime k8s.io/kubernetes "$KUBERNETES_VERSION")
  # The version every component reports (kubelet's node status, the API server's /version):
  # hack/lib/version.sh sets the same variables in both version packages.
  for key in gitVersion=$KUBERNETES_VERSION gitMajor=1 gitMinor=$minor gitTreeState=clean buildDate=$module_time; do
    value=${key#*=}
    key=${key%%=*}
    ldflags+=("-X k8s.io/client-go/pkg/version.$key=$value" "-X k8s.io/component-base/version.$key=$value")
  done
  for name in $KUBERNETES_COMMANDS; do packages+=("k8s.io/kubernetes/cmd/$name"); done
  (
    cd "$dir"
    printf 'module k3scilium.local/datapath/kubernetes\n\ngo 1.24.0\n\ngodebug default=go1.24\n\nrequire k8s.io/kubernetes %s\n' \
      "$KUBERNETES_VERSION" >go.mod
    local staging
    while read -r staging; do
      go mod edit -replace "$staging=$staging@$KUBERNETES_STAGING_VERSION"
    done < <(sed -n 's#^\t\(k8s.io/[^ ]*\) => \./staging/.*#\1#p' "$(modfile k8s.io/kubernetes "$KUBERNETES_VERSION")")
    go build -trimpath -ldflags "-s -w ${ldflags[*]}" -o "$BIN/" "${packages[@]}"
  )
  stamp_write kubernetes "$stamp"
}

# --- etcd ---------------------------------------------------------------------------------------------
build_etcd() {
  local stamp="etcd $ETCD_VERSION recipe $RECIPE" dir=$SRC/etcd
  stamp_ok etcd "$stamp" && return
  rm -rf "$dir" && mkdir -p "$dir" "$BIN"
  (
    cd "$dir"
    # The server module's go.mod points at its sibling modules by directory: a main module of
    # ours requires the released versions instead and starts the server's own entry point.
    printf 'module k3scilium.local/datapath/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >go.mod
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' >main.go
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .
  )
  stamp_write etcd "$stamp"
}

# --- crictl ---------------------------------------------------------------------------------------------
build_crictl() {
  local stamp="crictl $CRICTL_VERSION recipe $RECIPE"
  stamp_ok crictl "$stamp" && return
  mkdir -p "$BIN"
  GOBIN=$BIN go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  stamp_write crictl "$stamp"
}

# --- pause ------------------------------------------------------------------------------------------------
# The pod sandbox's process, from Kubernetes' own build/pause (a static C program).
build_pause() {
  local stamp="pause $KUBERNETES_VERSION recipe $RECIPE" source
  stamp_ok pause "$stamp" && return
  source=$(moddir k8s.io/kubernetes "$KUBERNETES_VERSION")/build/pause/linux/pause.c
  mkdir -p "$BIN"
  gcc -Os -Wall -Werror -static -DVERSION="\"$KUBERNETES_VERSION-k3s-cilium-lab\"" -o "$BIN/pause" "$source"
  strip "$BIN/pause"
  stamp_write pause "$stamp"
}

# --- the smoke workload ---------------------------------------------------------------------------
# Ours (lab/datapath/testserver): stands in for the nginx image the program deploys.
build_testserver() {
  local stamp digest
  digest=$(cat "$ROOT/lab/datapath/testserver/"{go.mod,main.go} | sha256sum | cut -c1-16)
  stamp="testserver $digest recipe $RECIPE"
  stamp_ok testserver "$stamp" && return
  mkdir -p "$BIN"
  (cd "$ROOT/lab/datapath/testserver" && go build -trimpath -ldflags "-s -w" -o "$BIN/testserver" .)
  stamp_write testserver "$stamp"
}

# --- Cilium -----------------------------------------------------------------------------------------------
build_cilium() {
  local stamp="cilium $CILIUM_VERSION recipe $RECIPE" dir=$SRC/cilium commit module_time version entry
  local name package tags envoy_sha
  stamp_ok cilium "$stamp" && return
  rm -rf "$dir" && mkdir -p "$SRC" "$BIN" "$CACHE/cilium-bpf"
  # A writable copy: the module is its own main module, so its go.mod (replacements included)
  # decides every dependency, as in Cilium's own build.
  cp -r "$(moddir github.com/cilium/cilium "$CILIUM_VERSION")" "$dir"
  chmod -R u+w "$dir"
  commit=$(modinfo github.com/cilium/cilium "$CILIUM_VERSION" Hash)
  module_time=$(modtime github.com/cilium/cilium "$CILIUM_VERSION")
  version="$(cat "$dir/VERSION") ${commit:0:10} $module_time"
  # Makefile.defs: the Envoy version the agent expects, from the image reference it was built for.
  envoy_sha=$(sed -nE 's/^ARG CILIUM_ENVOY_IMAGE=[^:]*:(.*-)?([^:@]*).*/\2/p' "$dir/images/cilium/Dockerfile" | head -n1)
  (
    cd "$dir"
    for entry in $CILIUM_COMMANDS; do
      name=${entry%%=*}
      package=${entry#*=}
      tags=
      case $package in *:*) tags=${package#*:} package=${package%%:*} ;; esac
      log "cilium: $name"
      go build -trimpath -tags "$tags" \
        -ldflags "-s -w -X 'github.com/cilium/cilium/pkg/version.ciliumVersion=$version' -X 'github.com/cilium/cilium/pkg/envoy.requiredEnvoyVersionSHA=$envoy_sha'" \
        -o "$BIN/$name" "./$package"
    done
  )
  # The agent compiles its datapath on the node from these sources (/var/lib/cilium/bpf).
  rm -rf "$CACHE/cilium-bpf" && cp -r "$dir/bpf" "$CACHE/cilium-bpf"
  stamp_write cilium "$stamp"
}

# --- Hubble (CLI and relay) from the Cilium module built above ------------------------------------
build_hubble() {
  local stamp="hubble $CILIUM_VERSION recipe $RECIPE" dir=$SRC/cilium commit module_time version entry name package
  stamp_ok hubble "$stamp" && return
  stamp_ok cilium "cilium $CILIUM_VERSION recipe $RECIPE" || build_cilium
  commit=$(modinfo github.com/cilium/cilium "$CILIUM_VERSION" Hash)
  module_time=$(modtime github.com/cilium/cilium "$CILIUM_VERSION")
  version="$(cat "$dir/VERSION") ${commit:0:10} $module_time"
  (
    cd "$dir"
    for entry in $HUBBLE_COMMANDS; do
      name=${entry%%=*}
      package=${entry#*=}
      log "hubble: $name"
      # hubble/Makefile sets hubble/pkg.Version (v<VERSION>) and the git fields; Makefile.defs the rest.
      go build -trimpath \
        -ldflags "-s -w -X 'github.com/cilium/cilium/pkg/version.ciliumVersion=$version' -X 'github.com/cilium/cilium/hubble/pkg.Version=v$(cat VERSION)' -X 'github.com/cilium/cilium/hubble/pkg.GitHash=${commit:0:10}'" \
        -o "$BIN/$name" "./$package"
    done
  )
  stamp_write hubble "$stamp"
}

# --- CoreDNS ---------------------------------------------------------------------------------------
build_coredns() {
  local stamp="coredns $COREDNS_VERSION plugins $COREDNS_PLUGINS recipe $RECIPE" dir=$SRC/coredns plugin imports=""
  stamp_ok coredns "$stamp" && return
  rm -rf "$dir" && mkdir -p "$dir" "$BIN"
  for plugin in $COREDNS_PLUGINS; do imports+="\t_ \"github.com/coredns/coredns/plugin/$plugin\"\n"; done
  (
    cd "$dir"
    printf 'module k3scilium.local/datapath/coredns\n\ngo 1.24\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >go.mod
    copy_replaces "$(modfile github.com/coredns/coredns "$COREDNS_VERSION")"
    # CoreDNS' own main.go, with only these plugins instead of core/plugin (every plugin).
    printf 'package main\n\nimport (\n\t"github.com/coredns/coredns/coremain"\n%b)\n\nfunc main() { coremain.Run() }\n' \
      "$imports" >main.go
    go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
      -o "$BIN/coredns" .
  )
  stamp_write coredns "$stamp"
}

versions() {
  local name
  for name in kubernetes etcd crictl pause cilium hubble coredns testserver; do
    if [ -f "$STAMPS/$name" ]; then printf '%-11s %s\n' "$name" "$(cat "$STAMPS/$name")"; else printf '%-11s not built\n' "$name"; fi
  done
}

# timed NAME FUNCTION: runs FUNCTION and says how long it took when it built something.
timed() {
  local before start=$SECONDS
  before=$(cat "$STAMPS/$1" 2>/dev/null || true)
  "$2"
  if [ "$before" != "$(cat "$STAMPS/$1")" ]; then log "$1 built in $((SECONDS - start))s"; else log "$1: up to date"; fi
}

build() {
  local what=${1:-all} name
  command -v go >/dev/null || die "go is not installed"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  case $what in
    kubernetes | etcd | crictl | pause | cilium | hubble | coredns | testserver) timed "$what" "build_$what" ;;
    all) for name in kubernetes etcd crictl pause cilium hubble coredns testserver; do timed "$name" "build_$name"; done ;;
    *) die "unknown target '$what' (all, kubernetes, etcd, crictl, pause, cilium, hubble, coredns, testserver)" ;;
  esac
  versions >&2
}

case ${1:-} in
  build) build "${2:-all}" ;;
  versions) versions ;;
  *)
    sed -n '2,10s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
