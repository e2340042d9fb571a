#!/usr/bin/env bash
# Build the lab's Debian 12 host image, offline except for Debian's mirror.
#
#   lab/hosts/build-image.sh image            build (or reuse) the base image; prints its directory
#   lab/hosts/build-image.sh seed NAME ADDR MAC1 MAC2 OUT
#                                             write a per-host seed disk (hostname, networkd files
#                                             for both NICs by MAC, the NIC2 address,
#                                             the host's pinned SSH host key, the lab's authorized key)
#   lab/hosts/build-image.sh keys             create (or reuse) the lab's SSH key pair; prints its path
#
# Everything goes under ${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/lab/, never into git:
#   image-<hash>/{disk.raw,vmlinuz,initrd.img,stamp}  the base image; <hash> is this script's
#                                                      sha256, so editing the script rebuilds it
#   debs/                                             the .debs debootstrap downloaded (rebuilds reuse them)
#   ssh/id_ed25519{,.pub}                              the lab's client key pair (root's authorized key)
#   hostkeys/<NAME>/ssh_host_ed25519_key{,.pub}        each host's SSH host key, made once and kept,
#                                                      so a host's pinned key is stable across runs
#
# The image: debootstrap bookworm (minbase + systemd, sshd, Debian's kernel, iproute2, iptables,
# curl, tuned, irqbalance) into a directory, then `mkfs.ext4 -d` into a sparse raw disk (no loop
# mount, no root-only mount). QEMU boots it with -kernel/-initrd and root=/dev/vda; the host's
# root disk is a qcow2 overlay over disk.raw, so the base stays untouched. Early at boot
# lab-seed.service mounts the per-host seed disk (/dev/vdb, label LABSEED) and installs from it
# the hostname, the networkd file for NIC2, the SSH host key and root's authorized_keys, before
# networkd and sshd start.
#
# Networking inside the guest (systemd-networkd, matched by the MAC addresses lab/run assigns):
#   NIC1 52:54:00:00:00:xx  QEMU user-mode network (restrict=on: no route out of QEMU), DHCP 10.0.2.15
#   NIC2 52:54:00:56:00:xx  the lab's private L2 segment, static address from the seed disk
# Needs root (debootstrap), debootstrap, e2fsprogs >= 1.43 (mkfs.ext4 -d), ssh-keygen.
set -euo pipefail

SUITE=bookworm
MIRROR=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DISK_SIZE=${LAB_DISK_SIZE:-8G}
PACKAGES=(
  # libpam-systemd provides logind, which tuned's polkitd needs (debootstrap cannot pick between
  # the alternatives default-logind | logind itself).
  systemd systemd-sysv udev dbus kmod procps libpam-systemd
  linux-image-amd64 initramfs-tools
  openssh-server
  iproute2 iptables nftables curl ca-certificates
  tuned irqbalance
  python3 less
)

CACHE=${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}/lab
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SELF" | cut -c1-16)
IMAGE_DIR=$CACHE/image-$HASH

log() { printf 'build-image: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

lab_keys() {
  local dir=$CACHE/ssh
  mkdir -p "$dir"
  chmod 700 "$dir"
  if [[ ! -f $dir/id_ed25519 ]]; then
    ssh-keygen -q -t ed25519 -N '' -C k3s-cilium-lab -f "$dir/id_ed25519.tmp"
    mv "$dir/id_ed25519.tmp.pub" "$dir/id_ed25519.pub"
    mv "$dir/id_ed25519.tmp" "$dir/id_ed25519"
  fi
  printf '%s\n' "$dir/id_ed25519"
}

host_key() {
  local name=$1 dir=$CACHE/hostkeys/$1
  mkdir -p "$dir"
  if [[ ! -f $dir/ssh_host_ed25519_key ]]; then
    ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$dir/tmp_key"
    mv "$dir/tmp_key.pub" "$dir/ssh_host_ed25519_key.pub"
    mv "$dir/tmp_key" "$dir/ssh_host_ed25519_key"
  fi
  printf '%s\n' "$dir"
}

# Files added to the rootfs. Their text is part of this script, so of its hash.
customize_rootfs() {
  local root=$1
  echo lab-host >"$root/etc/hostname"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
  # restrict=on: QEMU's DNS proxy answers nothing outside; the file only has to exist.
  printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"

  # /etc/systemd/network/{10-nic1,20-nic2}.network come from the seed disk (per-host MACs and address).

  mkdir -p "$root/usr/local/sbin"
  cat >"$root/usr/local/sbin/lab-seed" <<'EOF'
#!/bin/sh
# Install this host's identity from the seed disk (label LABSEED) written by lab/hosts/build-image.sh seed.
set -eu
dev=/dev/disk/by-label/LABSEED
i=0
while [ ! -e "$dev" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -e "$dev" ] || { echo "lab-seed: no seed disk" >&2; exit 1; }
mkdir -p /run/lab-seed
mount -o ro "$dev" /run/lab-seed
s=/run/lab-seed
install -m 0644 "$s/hostname" /etc/hostname
cat "$s/hostname" >/proc/sys/kernel/hostname
install -d -m 0755 /etc/systemd/network
install -m 0644 "$s/10-nic1.network" "$s/20-nic2.network" /etc/systemd/network/
install -m 0600 "$s/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 "$s/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 0700 /root/.ssh
install -m 0600 "$s/authorized_keys" /root/.ssh/authorized_keys
umount /run/lab-seed
EOF
  chmod 0755 "$root/usr/local/sbin/lab-seed"
  cat >"$root/etc/systemd/system/lab-seed.service" <<'EOF'
[Unit]
Description=Lab host identity from the seed disk
DefaultDependencies=no
After=systemd-udevd.service systemd-udev-trigger.service local-fs.target
Wants=systemd-udev-trigger.service
Before=systemd-networkd.service ssh.service sysinit.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-seed
[Install]
WantedBy=sysinit.target
EOF

  mkdir -p "$root/etc/ssh/sshd_config.d"
  cat >"$root/etc/ssh/sshd_config.d/lab.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF
  rm -f "$root"/etc/ssh/ssh_host_*

  # Serial console: log in as root without a password on ttyS0 only (the lab's own VM console).
  mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
  cat >"$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
EOF

  chroot "$root" systemctl enable systemd-networkd.service lab-seed.service ssh.service serial-getty@ttyS0.service >/dev/null 2>&1
  # Nothing that waits for or reaches the internet, nothing periodic that competes for the 2 CPUs.
  chroot "$root" systemctl disable systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
    man-db.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service >/dev/null 2>&1 || true
  chroot "$root" systemctl mask systemd-networkd-wait-online.service getty@tty1.service >/dev/null 2>&1 || true
  # A unique machine-id per boot (each overlay boots once).
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
}

cleanup_work() {
  local work=$1 mnt
  while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
  rm -rf --one-file-system "$work"
}

build_image() {
  if [[ -f $IMAGE_DIR/stamp ]]; then
    log "cached: $IMAGE_DIR"
    printf '%s\n' "$IMAGE_DIR"
    return 0
  fi
  [[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 is not installed (apt-get install e2fsprogs)"
  # Global: the EXIT trap runs after this function returned.
  work=$(mktemp -d "$CACHE/build.XXXXXX")
  # The rootfs holds device nodes and root-owned files, and debootstrap mounts /proc and /sys in
  # it while it runs: unmount whatever is still mounted below it, then remove it, whatever happens.
  trap 'cleanup_work "$work"' EXIT
  trap 'exit 130' INT TERM HUP
  local root=$work/rootfs start=$SECONDS
  log "debootstrap $SUITE from $MIRROR into $root"
  local include
  include=$(
    IFS=,
    echo "${PACKAGES[*]}"
  )
  # The downloaded .debs stay in the cache: a rebuild after editing this script downloads nothing.
  mkdir -p "$CACHE/debs"
  debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$include" "$SUITE" "$root" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 ||
    {
      tail -n 30 "$work/debootstrap.log" >&2
      die "debootstrap failed"
    }
  log "debootstrap done in $((SECONDS - start)) s"
  customize_rootfs "$root"
  local out=$work/out
  mkdir -p "$out"
  cp "$(readlink -f "$root/vmlinuz")" "$out/vmlinuz"
  cp "$(readlink -f "$root/initrd.img")" "$out/initrd.img"
  chmod 0644 "$out/vmlinuz" "$out/initrd.img"
  truncate -s "$DISK_SIZE" "$out/disk.raw"
  mkfs.ext4 -q -F -L labroot -d "$root" "$out/disk.raw"
  {
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "seconds=$((SECONDS - start))"
    echo "kernel=$(basename "$(readlink -f "$root/vmlinuz")")"
    echo "script_sha256=$HASH"
  } >"$out/stamp"
  rm -rf "$IMAGE_DIR"
  mv "$out" "$IMAGE_DIR"
  # Older images (another hash) are left for `lab/run clean-cache`.
  log "built $IMAGE_DIR in $((SECONDS - start)) s"
  printf '%s\n' "$IMAGE_DIR"
}

# seed NAME ADDRESS/PREFIX MAC1 MAC2 OUT: a small ext4 disk with this host's identity.
build_seed() {
  local name=$1 address=$2 mac1=$3 mac2=$4 out=$5 keydir key
  [[ $name =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] || die "bad host name '$name'"
  [[ $address =~ ^[0-9.]+/[0-9]+$ ]] || die "bad address '$address' (want a.b.c.d/prefix)"
  [[ $mac1 =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ && $mac2 =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ ]] || die "bad MAC address"
  key=$(lab_keys)
  keydir=$(host_key "$name")
  local dir
  dir=$(mktemp -d)
  cp "$keydir/ssh_host_ed25519_key" "$keydir/ssh_host_ed25519_key.pub" "$dir/"
  cp "$key.pub" "$dir/authorized_keys"
  echo "$name" >"$dir/hostname"
  # networkd matches MACAddress= exactly (no globs): the MACs lab/run gives the NICs.
  cat >"$dir/10-nic1.network" <<EOF
# NIC1: QEMU user-mode network (SSH and the K3s API reach the host through 127.0.0.1 forwards).
[Match]
MACAddress=$mac1
[Network]
DHCP=ipv4
IPv6AcceptRA=no
LinkLocalAddressing=no
[DHCPv4]
UseDNS=no
EOF
  cat >"$dir/20-nic2.network" <<EOF
# NIC2: the lab's private L2 segment.
[Match]
MACAddress=$mac2
[Network]
Address=$address
IPv6AcceptRA=no
LinkLocalAddressing=no
EOF
  rm -f "$out"
  truncate -s 4M "$out"
  mkfs.ext4 -q -F -L LABSEED -d "$dir" "$out"
  rm -rf "$dir"
}

main() {
  mkdir -p "$CACHE"
  case ${1:-} in
    image) build_image ;;
    seed)
      [[ $# -eq 6 ]] || die "usage: $0 seed NAME ADDRESS/PREFIX MAC1 MAC2 OUT"
      build_seed "$2" "$3" "$4" "$5" "$6"
      ;;
    keys) lab_keys ;;
    hostkey)
      [[ $# -eq 2 ]] || die "usage: $0 hostkey NAME"
      host_key "$2"
      ;;
    *) die "usage: $0 image | seed NAME ADDRESS/PREFIX MAC1 MAC2 OUT | keys | hostkey NAME" ;;
  esac
}

main "$@"
