#!/usr/bin/env bash
# Check that a host can run K3s with the stack's Cilium features, before
# anything is installed on any node.
#
# Prints one line of facts that becomes the K3sCluster node_info output, e.g.
#   kernel=6.8.0-45-generic os=ubuntu-24.04 arch=x86_64 k3s=absent
# then, when something is wrong, one line per problem on stderr, each naming
# the node, and exits 1. Every check runs before the script fails so that one
# run shows everything that needs fixing on the host.
#
# Read-only: it changes nothing, so running it again is always safe.
#
# Parameters:
#   NODE_NAME          the node's name in the stack, used in every message
#   KERNEL_FLOORS      one "feature=major.minor" line per enabled feature with
#                      a kernel floor (may be empty)
#   MIN_KERNEL         the oldest kernel the stack supports at all (major.minor)
#   MIN_KERNEL_REASON  what needs MIN_KERNEL, for the message
#   REQUIRED_COMMANDS  space-separated commands the install needs
set -euo pipefail
# @params

problems=()

problem() {
  problems+=("node ${NODE_NAME}: $*")
}

# "6.8.0-45-generic" -> "6.8.0": the part of a kernel release that orders it.
kernel_version_of() {
  [[ $1 =~ ^([0-9]+)\.([0-9]+)(\.[0-9]+)? ]] || return 1
  printf '%s' "${BASH_REMATCH[0]}"
}

# True when kernel version $1 (major.minor[.patch]) is older than floor $2
# (major.minor). 10# keeps a part like "08" from being read as octal.
older_than() {
  local have_major have_minor need_major need_minor
  IFS=. read -r have_major have_minor _ <<<"$1"
  IFS=. read -r need_major need_minor <<<"$2"
  ((10#$have_major < 10#$need_major || (10#$have_major == 10#$need_major && 10#$have_minor < 10#$need_minor)))
}

# Each feature's floor is checked on its own so that the message names the
# feature to turn off; the stack-wide floor only when no feature failed, as
# it would repeat the same news.
check_kernel() {
  local release=$1 version feature floor too_old=0
  if ! version=$(kernel_version_of "$release"); then
    problem "cannot read a version from kernel release '${release}'"
    return
  fi
  while IFS='=' read -r feature floor; do
    [[ -n $feature ]] || continue
    if older_than "$version" "$floor"; then
      problem "kernel ${version} is older than ${floor} required by ${feature}"
      too_old=1
    fi
  done <<<"$KERNEL_FLOORS"
  if ((!too_old)) && older_than "$version" "$MIN_KERNEL"; then
    problem "kernel ${version} is older than ${MIN_KERNEL} required by ${MIN_KERNEL_REASON}"
  fi
}

# K3s and Cilium publish amd64 and arm64 images; uname says x86_64/aarch64.
check_arch() {
  case $1 in
    x86_64 | amd64 | aarch64 | arm64) ;;
    *) problem "architecture $1 is not supported (amd64 or arm64 only)" ;;
  esac
}

# The install script registers K3s as a systemd unit; /run/systemd/system
# exists exactly when systemd is the running init (sd_booted(3)).
check_systemd() {
  if [[ ! -d /run/systemd/system ]]; then
    problem "systemd is not running (no /run/systemd/system); K3s is installed as a systemd service"
  fi
}

check_commands() {
  local cmd
  local -a wanted
  read -ra wanted <<<"$REQUIRED_COMMANDS"
  for cmd in "${wanted[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
      problem "required command '${cmd}' is not installed"
    fi
  done
}

# One field of /etc/os-release, read as data: sourcing the file would run it.
os_release_field() {
  local key value
  [[ -r /etc/os-release ]] || return 0
  while IFS='=' read -r key value; do
    if [[ $key == "$1" ]]; then
      value=${value#[\"\']}
      printf '%s' "${value%[\"\']}"
      return 0
    fi
  done </etc/os-release
}

os_name() {
  local id version
  id=$(os_release_field ID)
  version=$(os_release_field VERSION_ID)
  printf '%s-%s' "${id:-unknown}" "${version:-unknown}"
}

# An existing K3s is reported, not refused: the install step adopts it when
# its version matches and upgrades it in place otherwise.
installed_k3s() {
  local k3s_bin version
  # sudo's secure_path may leave /usr/local/bin, where K3s installs, out.
  if ! k3s_bin=$(command -v k3s 2>/dev/null); then
    if [[ ! -x /usr/local/bin/k3s ]]; then
      printf 'absent'
      return 0
    fi
    k3s_bin=/usr/local/bin/k3s
  fi
  version=$("$k3s_bin" --version 2>/dev/null | awk 'NR == 1 { print $3 }') || version=""
  printf '%s' "${version:-unknown}"
}

main() {
  local release arch os k3s_found line
  release=$(uname -r)
  arch=$(uname -m)
  os=$(os_name)
  k3s_found=$(installed_k3s)

  check_kernel "$release"
  check_arch "$arch"
  check_systemd
  check_commands

  # Spaces would split a fact in two; none of these values should have any.
  printf 'kernel=%s os=%s arch=%s k3s=%s\n' "${release// /_}" "${os// /_}" "${arch// /_}" "${k3s_found// /_}"

  if ((${#problems[@]})); then
    for line in "${problems[@]}"; do
      printf '%s\n' "$line" >&2
    done
    exit 1
  fi
}

main
