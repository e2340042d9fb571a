#!/usr/bin/env bash
# The root file system of the namespace cluster's Cilium image: Debian 12 with what Cilium's own
# runtime image gives the agent (clang-19 and llvm-19, since Cilium 1.19 compiles its datapath on
# the node; iproute2, iptables, ipset, kmod, nsenter), the binaries lab/datapath/build.sh built (the
# hubble CLI among them, /usr/bin/hubble as in Cilium's image),
# the bpf/ sources where the agent looks for them (/var/lib/cilium/bpf) and the scripts the chart's
# init containers run (/init-container.sh, /install-plugin.sh, /cni-uninstall.sh).
#
#   lab/datapath/build-runtime.sh     (root; after lab/datapath/build.sh build cilium, build hubble)
#
# Writes ${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/datapath/rootfs/cilium-runtime (never git);
# a second run with the same packages and binaries does nothing.
set -euo pipefail

CACHE=${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/datapath
MIRROR=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=clang-19,llvm-19,iproute2,iptables,ipset,kmod,util-linux,ca-certificates
TARGET=$CACHE/rootfs/cilium-runtime
CILIUM_BINARIES="cilium-agent cilium-dbg cilium-health cilium-health-responder cilium-cni cilium-mount
cilium-sysctlfix cilium-operator-generic hubble"

log() { printf 'build-runtime: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
[[ -x /usr/lib/cni/loopback ]] || die "no CNI loopback plugin (apt-get install containernetworking-plugins)"
[[ -f $CACHE/stamps/cilium ]] || die "Cilium is not built: lab/datapath/build.sh build cilium"
[[ -f $CACHE/stamps/hubble ]] || die "the hubble CLI is not built: lab/datapath/build.sh build hubble"

# Bump when this script changes what goes into the file system.
RECIPE=3
stamp="recipe $RECIPE $SUITE $PACKAGES $(cat "$CACHE/stamps/cilium") $(cat "$CACHE/stamps/hubble")"
if [[ -f $TARGET/.k3s-cilium-stamp && $(cat "$TARGET/.k3s-cilium-stamp") == "$stamp" ]]; then
  log "up to date: $TARGET"
  exit 0
fi

work=$(mktemp -d "$CACHE/rootfs-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$CACHE/debs"
start=$SECONDS
log "debootstrap $SUITE from $MIRROR with $PACKAGES"
debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$PACKAGES" "$SUITE" "$work/root" "$MIRROR" \
  >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  die "debootstrap failed"
}
root=$work/root
# Cilium's runtime image puts its LLVM tools on PATH under their plain names.
for tool in clang llc llvm-objcopy llvm-strip; do
  ln -sf "/usr/bin/$tool-19" "$root/usr/local/bin/$tool"
done
for binary in $CILIUM_BINARIES; do
  install -m 0755 "$CACHE/bin/$binary" "$root/usr/bin/$binary"
done
# Where the chart's install-cni-binaries copies them from (Cilium's Makefile and runtime image).
install -D -m 0755 "$CACHE/bin/cilium-cni" "$root/opt/cni/bin/cilium-cni"
install -D -m 0755 /usr/lib/cni/loopback "$root/cni/loopback"
mkdir -p "$root/var/lib/cilium"
cp -r "$CACHE/cilium-bpf" "$root/var/lib/cilium/bpf"
install -m 0755 "$CACHE/src/cilium/images/cilium/init-container.sh" "$root/init-container.sh"
install -m 0755 "$CACHE/src/cilium/plugins/cilium-cni/install-plugin.sh" "$root/install-plugin.sh"
install -m 0755 "$CACHE/src/cilium/plugins/cilium-cni/cni-uninstall.sh" "$root/cni-uninstall.sh"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc "$root"/usr/share/man "$root"/var/lib/apt/lists/*
printf '%s\n' "$stamp" >"$root/.k3s-cilium-stamp"
rm -rf "$TARGET"
mkdir -p "$(dirname "$TARGET")"
mv "$root" "$TARGET"
log "built $TARGET in $((SECONDS - start)) s ($(du -sh "$TARGET" | cut -f1))"
