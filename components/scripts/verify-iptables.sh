#!/usr/bin/env bash
# Print this node's iptables rules for `python3 -m verification
# no-kube-proxy-rules`: every backend (legacy, nft) of every family (IPv4,
# IPv6) that has binaries here, each dump under a marker line
#   ### ipv4-legacy | ### ipv4-nft | ### ipv6-legacy | ### ipv6-nft
# Plain iptables-save picks one backend (the host's alternative, or the one
# K3s's bundled copy prefers), and kube-proxy may have written to the other,
# so both are read; a backend with no tables prints an empty section. Runs as
# root; reads only (the -save commands change nothing).
#
# Fails when no IPv4 dump could be taken or a -save command fails.
set -euo pipefail
# @params

# A host without iptables of its own still has the copy K3s bundles (and
# wrote its rules with); searched last so that the host's own binaries win,
# as in kube-proxy-cleanup.sh.
readonly K3S_BUNDLED_BIN=/var/lib/rancher/k3s/data/current/bin/aux
PATH="${PATH}:${K3S_BUNDLED_BIN}"
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

fail() {
  printf 'verify-iptables: %s\n' "$*" >&2
  exit 1
}

# iptables >= 1.8 names its backend in --version; older releases only had the legacy one.
backend_of() {
  local version
  version=$("$1" --version 2>/dev/null) || version=""
  case $version in
    *nf_tables*) echo nft ;;
    *) echo legacy ;;
  esac
}

dump() {
  local label=$1 save=$2
  printf '### %s\n' "$label"
  if ! "$save" 2>"$work_dir/stderr"; then
    fail "'$save' failed: $(<"$work_dir/stderr")"
  fi
}

dumped_ipv4=0
for family in ipv4 ipv6; do
  case $family in
    ipv4) cmd=iptables ;;
    ipv6) cmd=ip6tables ;;
  esac
  if [[ $family == ipv6 && ! -d /proc/sys/net/ipv6 ]]; then
    printf 'verify-iptables: no IPv6 in this kernel, so no ip6tables rules\n' >&2
    continue
  fi
  declare -A done_backends=()
  for backend in legacy nft; do
    if command -v "$cmd-$backend-save" >/dev/null 2>&1; then
      dump "$family-$backend" "$cmd-$backend-save"
      done_backends[$backend]=1
    fi
  done
  if command -v "$cmd-save" >/dev/null 2>&1 && command -v "$cmd" >/dev/null 2>&1; then
    backend=$(backend_of "$cmd")
    if [[ -z ${done_backends[$backend]:-} ]]; then
      dump "$family-$backend" "$cmd-save"
      done_backends[$backend]=1
    fi
  fi
  if [[ $family == ipv4 && ${#done_backends[@]} -gt 0 ]]; then
    dumped_ipv4=1
  fi
  unset done_backends
done

if ((!dumped_ipv4)); then
  fail "no iptables-save found (neither the host's nor K3s's bundled one in $K3S_BUNDLED_BIN)"
fi
