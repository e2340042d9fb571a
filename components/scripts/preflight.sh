#!/usr/bin/env bash
# Check that a host can run K3s with the stack's Cilium version and features,
# before anything is installed on any node.
#
# Prints one line of facts that becomes the K3sCluster node_info output, e.g.
#   kernel=6.8.0-45-generic os=ubuntu-24.04 arch=x86_64 k3s=absent nic=eth0
#   driver=virtio_net tso_max_size=65536 gso_max_size=65536 xdp_native=yes
#   firewalld=inactive selinux=disabled skipped=bigTcp
# (and, with transparent encryption, a last fact encryption=wireguard:ok or
# encryption=ipsec:missing)
# then, when something is wrong, one line per problem on stderr, each naming
# the node, and exits 1. Every check runs before the script fails so that one
# run shows everything that needs fixing on the host.
#
# Read-only, so running it again is always safe (the WireGuard check adds a
# throwaway link and deletes it again, also when the script is cut short;
# the kernel may load a module on the way), except with
# FIREWALL_OPEN=true: then the ports firewalld closes are opened (permanent
# and runtime, idempotent: an open port stays open), but only when every
# other check passed: a preflight that fails changes nothing on the host, as
# no delete would ever undo it. An opening that fails halfway removes what it
# had added.
#
# Parameters:
#   NODE_NAME          the node's name in the stack, used in every message
#   KERNEL_FLOORS      one "feature=major.minor" line per enabled feature with
#                      a kernel floor (may be empty)
#   MIN_KERNEL         the oldest kernel the pinned Cilium minor (and KPR)
#                      runs on (major.minor[.patch])
#   MIN_KERNEL_REASON  what needs MIN_KERNEL, for the message
#   RHEL_MIN           RHEL-family hosts (RHEL, CentOS, Rocky, Alma) from this
#                      release on satisfy MIN_KERNEL with their 4.18 kernel
#   REQUIRED_COMMANDS  one line per need: "<cmd>[|<alternative>...] <why>"
#   FIREWALL_PORTS     ports the node must accept ("6443/tcp 2379-2380/tcp ...")
#   FIREWALL_SOURCES   networks firewalld must trust (pod and service CIDRs)
#   FIREWALL_OPEN      true: open what firewalld closes instead of failing
#   NIC_ADDRESS        the node's cluster IP; its NIC is inspected (empty: the
#                      NIC of the default route)
#   NIC_FEATURES       one "feature=skip|require" line per enabled feature that
#                      depends on the NIC (bigTcp, xdp): skip = leave it off on
#                      this node and say so (skipped=...), require = a problem
#   XDP_DRIVERS        drivers with native XDP, separated by blanks
#   ENCRYPTION         transparent encryption between nodes: none, wireguard
#                      or ipsec
#   ENCRYPTION_MODULES the kernel modules (or built-ins) that mode needs:
#                      wireguard, or esp4 xfrm_user
#   ENCRYPTION_PROBLEM the problem when some are missing, after "node <name>: ";
#                      @MISSING@ stands for the missing ones
#   SYSFS, OS_RELEASE, SYSTEMD_RUN_DIR, MODULES_DIR   host paths (parameters
#                      for the tests)
set -euo pipefail
# @params

: "${RHEL_MIN:=8.0}"
: "${REQUIRED_COMMANDS:=}"
: "${FIREWALL_PORTS:=}"
: "${FIREWALL_SOURCES:=}"
: "${FIREWALL_OPEN:=false}"
: "${NIC_ADDRESS:=}"
: "${NIC_FEATURES:=}"
: "${XDP_DRIVERS:=}"
: "${ENCRYPTION:=none}"
: "${ENCRYPTION_MODULES:=}"
: "${ENCRYPTION_PROBLEM:=}"
: "${MODULES_DIR:=/lib/modules}"
: "${SYSFS:=/sys}"
: "${OS_RELEASE:=/etc/os-release}"
: "${SYSTEMD_RUN_DIR:=/run/systemd/system}"
# BIG TCP raises GSO/GRO beyond 64 KiB; a NIC whose TSO stops there makes the
# agent warn and run without it (pkg/datapath/linux/bigtcp: probeTSOMaxSize,
# setGROGSOIPv4MaxSize).
readonly GSO_DEFAULT_MAX=65536

problems=()
skipped=()

problem() {
  problems+=("node ${NODE_NAME}: $*")
}

# "6.8.0-45-generic" -> "6.8.0": the part of a kernel release that orders it.
kernel_version_of() {
  [[ $1 =~ ^([0-9]+)\.([0-9]+)(\.[0-9]+)? ]] || return 1
  printf '%s' "${BASH_REMATCH[0]}"
}

# True when version $1 (a.b[.c]) is older than $2 (a.b[.c]); a missing part
# is 0. 10# keeps a part like "08" from being read as octal.
older_than() {
  local have_major have_minor have_patch need_major need_minor need_patch
  IFS=. read -r have_major have_minor have_patch _ <<<"$1"
  IFS=. read -r need_major need_minor need_patch _ <<<"$2"
  have_patch=${have_patch:-0} need_patch=${need_patch:-0}
  ((10#$have_major != 10#$need_major)) && { ((10#$have_major < 10#$need_major)); return; }
  ((10#$have_minor != 10#$need_minor)) && { ((10#$have_minor < 10#$need_minor)); return; }
  ((10#$have_patch < 10#$need_patch))
}

# One field of os-release, read as data: sourcing the file would run it.
os_release_field() {
  local key value
  [[ -r $OS_RELEASE ]] || return 0
  while IFS='=' read -r key value; do
    if [[ $key == "$1" ]]; then
      value=${value#[\"\']}
      printf '%s' "${value%[\"\']}"
      return 0
    fi
  done <"$OS_RELEASE"
}

os_name() {
  local id version
  id=$(os_release_field ID)
  version=$(os_release_field VERSION_ID)
  printf '%s-%s' "${id:-unknown}" "${version:-unknown}"
}

# RHEL and its rebuilds ship 4.18 with the backports Cilium needs; from
# RHEL_MIN on, their kernel counts as MIN_KERNEL.
rhel_equivalent() {
  local version=$1 id like release
  id=$(os_release_field ID)
  like=$(os_release_field ID_LIKE)
  [[ $id == rhel || " $like " == *" rhel "* ]] || return 1
  [[ $version == 4.18 || $version == 4.18.* ]] || return 1
  release=$(os_release_field VERSION_ID)
  [[ -n $release ]] && ! older_than "$release" "$RHEL_MIN"
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
  if ((!too_old)) && older_than "$version" "$MIN_KERNEL" && ! rhel_equivalent "$version"; then
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
  if [[ ! -d $SYSTEMD_RUN_DIR ]]; then
    problem "systemd is not running (no ${SYSTEMD_RUN_DIR}); K3s is installed as a systemd service"
  fi
}

# Each line: "curl|wget the K3s install script": any one of the commands will do.
check_commands() {
  local alternatives why cmd found
  local -a choices
  while read -r alternatives why; do
    [[ -n $alternatives ]] || continue
    IFS='|' read -ra choices <<<"$alternatives"
    found=0
    for cmd in "${choices[@]}"; do
      if command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/local/bin/$cmd ]]; then
        found=1
        break
      fi
    done
    if ((!found)); then
      if ((${#choices[@]} > 1)); then
        problem "none of ${alternatives//|/, } is installed (needed by ${why})"
      else
        problem "required command '${alternatives}' is not installed (needed by ${why})"
      fi
    fi
  done <<<"$REQUIRED_COMMANDS"
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

unit_enabled() {
  command -v systemctl >/dev/null 2>&1 || return 1
  [[ $(systemctl is-enabled "$1" 2>/dev/null) == enabled ]]
}

# nm-cloud-setup rewrites the routing tables K3s and Cilium program, which
# breaks pod networking (k3s-io/k3s#8805; K3s docs, "Requirements").
check_nm_cloud_setup() {
  local unit enabled=()
  for unit in nm-cloud-setup.service nm-cloud-setup.timer; do
    unit_enabled "$unit" && enabled+=("$unit")
  done
  if ((${#enabled[@]})); then
    problem "${enabled[*]} enabled: it breaks K3s networking (k3s-io/k3s#8805);" \
      "run 'systemctl disable ${enabled[*]}' and reboot the node"
  fi
}

# SELinux enforcing: K3s's binaries and containers need the k3s-selinux policy.
selinux_state() {
  local mode
  if command -v getenforce >/dev/null 2>&1; then
    mode=$(getenforce 2>/dev/null) || mode=""
    printf '%s' "${mode,,}"
  elif [[ -r $SYSFS/fs/selinux/enforce ]]; then
    [[ $(<"$SYSFS/fs/selinux/enforce") == 1 ]] && printf 'enforcing' || printf 'permissive'
  else
    printf 'disabled'
  fi
}

k3s_selinux_installed() {
  if command -v rpm >/dev/null 2>&1 && rpm -q k3s-selinux >/dev/null 2>&1; then
    return 0
  fi
  command -v semodule >/dev/null 2>&1 && semodule -l 2>/dev/null | grep -q '^k3s\b'
}

check_selinux() {
  local state=$1
  if [[ $state == enforcing ]] && ! k3s_selinux_installed; then
    problem "SELinux is enforcing but the k3s-selinux policy is not installed; install container-selinux" \
      "and k3s-selinux (K3s docs, 'SELinux Support', e.g. from https://rpm.rancher.io/) or set SELinux permissive"
  fi
}

firewalld_running() {
  command -v firewall-cmd >/dev/null 2>&1 && [[ $(firewall-cmd --state 2>/dev/null) == running ]]
}

# Is port/proto ($1) open in zone $2: a port, a range holding it, or a
# service carrying it. firewall-cmd --query-port matches exact entries only.
port_open() {
  local want=$1 zone=$2 want_port want_proto entry service low high proto
  IFS=/ read -r want_port want_proto <<<"$want"
  local -a entries=()
  read -ra entries <<<"$(firewall-cmd --zone="$zone" --list-ports 2>/dev/null)"
  for service in $(firewall-cmd --zone="$zone" --list-services 2>/dev/null); do
    read -ra more <<<"$(firewall-cmd --info-service="$service" 2>/dev/null | awk '$1 == "ports:" { $1 = ""; print }')"
    entries+=("${more[@]}")
  done
  for entry in "${entries[@]}"; do
    IFS=/ read -r low proto <<<"$entry"
    [[ $proto == "$want_proto" ]] || continue
    high=${low#*-}
    low=${low%-*}
    if ((10#$want_port >= 10#$low && 10#$want_port <= 10#$high)); then
      return 0
    fi
  done
  return 1
}

# The ports K3s and Cilium need, checked in the zone of the node's NIC
# ("trusted" accepts everything), and the pod and service networks in the
# trusted zone (K3s docs, "Requirements": firewalld).
check_firewalld() {
  local nic=$1 zone spec port proto low high source
  local -a closed=() untrusted=()
  zone=""
  if [[ -n $nic ]]; then
    zone=$(firewall-cmd --get-zone-of-interface="$nic" 2>/dev/null) || zone=""
  fi
  [[ -n $zone ]] || zone=$(firewall-cmd --get-default-zone 2>/dev/null) || zone=public
  if [[ $zone != trusted ]]; then
    for spec in $FIREWALL_PORTS; do
      IFS=/ read -r port proto <<<"$spec"
      low=${port%-*} high=${port#*-}
      for ((port = 10#$low; port <= 10#$high; port++)); do
        port_open "$port/$proto" "$zone" || { closed+=("$spec"); break; }
      done
    done
  fi
  for source in $FIREWALL_SOURCES; do
    firewall-cmd --zone=trusted --query-source="$source" >/dev/null 2>&1 || untrusted+=("$source")
  done
  ((${#closed[@]} + ${#untrusted[@]})) || return 0
  if [[ $FIREWALL_OPEN == true ]]; then
    # Opened in main, once every other check passed.
    firewall_zone=$zone
    firewall_closed=("${closed[@]}")
    firewall_untrusted=("${untrusted[@]}")
    return 0
  fi
  if ((${#closed[@]})); then
    problem "firewalld (zone ${zone}) closes ports ${closed[*]} that K3s and Cilium need; open them" \
      "(firewall-cmd --permanent --zone=${zone} --add-port=<port> for each, then firewall-cmd --reload)," \
      "or set k3s.openFirewall: true to have preflight open them"
  fi
  if ((${#untrusted[@]})); then
    problem "firewalld does not trust the pod/service networks ${untrusted[*]}; add each with" \
      "firewall-cmd --permanent --zone=trusted --add-source=<cidr>, or set k3s.openFirewall: true"
  fi
}

firewall_zone=""
firewall_closed=()
firewall_untrusted=()

# Open what check_firewalld found closed, permanent and runtime. Only what
# this run added is recorded: a failure removes exactly that again (an entry
# already in the permanent configuration stays), and the runtime follows the
# permanent configuration only once --reload succeeded.
open_firewall() {
  local spec source error
  local -a added=()
  for spec in "${firewall_closed[@]}"; do
    firewall-cmd --permanent --zone="$firewall_zone" --query-port="$spec" >/dev/null 2>&1 && continue
    if ! error=$(firewall-cmd --permanent --zone="$firewall_zone" --add-port="$spec" 2>&1 >/dev/null); then
      unopen_firewall "firewall-cmd --add-port=${spec} failed: ${error%%$'\n'*}" "${added[@]}"
      return
    fi
    added+=("port ${spec}")
  done
  for source in "${firewall_untrusted[@]}"; do
    firewall-cmd --permanent --zone=trusted --query-source="$source" >/dev/null 2>&1 && continue
    if ! error=$(firewall-cmd --permanent --zone=trusted --add-source="$source" 2>&1 >/dev/null); then
      unopen_firewall "firewall-cmd --add-source=${source} failed: ${error%%$'\n'*}" "${added[@]}"
      return
    fi
    added+=("source ${source}")
  done
  if ! error=$(firewall-cmd --reload 2>&1 >/dev/null); then
    unopen_firewall "firewall-cmd --reload failed: ${error%%$'\n'*}" "${added[@]}"
    return
  fi
  printf 'preflight: node %s: opened %s in firewalld zone %s, trusted %s\n' "$NODE_NAME" \
    "${firewall_closed[*]:-nothing}" "$firewall_zone" "${firewall_untrusted[*]:-nothing}" >&2
}

# unopen_firewall WHY ADDED...: remove the permanent entries this run added.
unopen_firewall() {
  local why=$1 entry kind value left=""
  shift
  for entry in "$@"; do
    read -r kind value <<<"$entry"
    if [[ $kind == port ]]; then
      firewall-cmd --permanent --zone="$firewall_zone" --remove-port="$value" >/dev/null 2>&1 || left+=" ${value}"
    else
      firewall-cmd --permanent --zone=trusted --remove-source="$value" >/dev/null 2>&1 || left+=" ${value}"
    fi
  done
  if [[ -n $left ]]; then
    problem "could not open firewalld for K3s and Cilium (${why}), and could not remove again what it had" \
      "added:${left}"
  else
    problem "could not open firewalld for K3s and Cilium (${why}); its configuration is as it was"
  fi
}

# The NIC holding NIC_ADDRESS, or the one of the default route.
node_nic() {
  local nic=""
  if [[ -n $NIC_ADDRESS ]]; then
    nic=$(ip -o -4 addr show 2>/dev/null | awk -v want="$NIC_ADDRESS" '{ split($4, a, "/") } a[1] == want { print $2; exit }')
  fi
  if [[ -z $nic ]]; then
    nic=$(ip -4 route show default 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
  fi
  printf '%s' "$nic"
}

# A number from `ip -d -j link show dev NIC` ("tso_max_size":65536), or "unknown".
link_number() {
  local field=$1 json=$2 value
  value=$(grep -Eo "\"${field}\": *[0-9]+" <<<"$json" | head -n 1 | grep -Eo '[0-9]+$') || value=""
  printf '%s' "${value:-unknown}"
}

# The driver behind the NIC (device/driver in sysfs), or the kind of a
# virtual device (bond, bridge, vlan) from `ip -d link`.
nic_driver() {
  local nic=$1 json=$2 driver kind
  if driver=$(readlink "$SYSFS/class/net/$nic/device/driver" 2>/dev/null) && [[ -n $driver ]]; then
    printf '%s' "${driver##*/}"
    return
  fi
  kind=$(grep -o '"info_kind":"[^"]*"' <<<"$json" | head -n 1 | cut -d'"' -f4) || kind=""
  printf '%s' "${kind:-unknown}"
}

# Features that depend on the NIC: on a NIC that cannot carry them a preset
# is left off on this node (skipped=...), a forced one is a problem.
check_nic_feature() {
  local feature=$1 mode=$2 nic=$3 why=$4
  if [[ $mode == require ]]; then
    problem "NIC ${nic} cannot carry ${feature}: ${why}; use other NICs (nodeIp) or set features.${feature}: false"
  else
    skipped+=("$feature")
  fi
}

nic_facts=""
check_nic() {
  local nic json driver tso gso native feature mode
  nic=$(node_nic)
  if [[ -z $nic ]]; then
    nic_facts="nic=unknown"
    while IFS='=' read -r feature mode; do
      [[ -n $feature ]] || continue
      check_nic_feature "$feature" "$mode" "unknown" "no NIC holds ${NIC_ADDRESS:-the default route}"
    done <<<"$NIC_FEATURES"
    return
  fi
  json=$(ip -d -j link show dev "$nic" 2>/dev/null) || json=""
  driver=$(nic_driver "$nic" "$json")
  tso=$(link_number tso_max_size "$json")
  gso=$(link_number gso_max_size "$json")
  native=no
  [[ " $XDP_DRIVERS " == *" $driver "* ]] && native=yes
  nic_facts="nic=${nic} driver=${driver} tso_max_size=${tso} gso_max_size=${gso} xdp_native=${native}"
  while IFS='=' read -r feature mode; do
    [[ -n $feature ]] || continue
    case $feature in
      bigTcp)
        if [[ $tso == unknown ]]; then
          check_nic_feature "$feature" "$mode" "$nic" "its tso_max_size cannot be read (ip -d link)"
        elif ((tso <= GSO_DEFAULT_MAX)); then
          check_nic_feature "$feature" "$mode" "$nic" \
            "driver ${driver} has tso_max_size ${tso}, BIG TCP needs more than ${GSO_DEFAULT_MAX}"
        fi
        ;;
      xdp)
        if [[ $native != yes ]]; then
          check_nic_feature "$feature" "$mode" "$nic" "driver ${driver} has no native XDP"
        fi
        ;;
    esac
  done <<<"$NIC_FEATURES"
}

# A module the kernel has or can load: loaded or built in with parameters
# (/sys/module), loadable (modprobe dry run; built-ins pass too) or listed as
# built in. Reads only.
module_available() {
  local name=$1
  [[ -d $SYSFS/module/$name ]] && return 0
  if command -v modprobe >/dev/null 2>&1 && modprobe -n -q "$name" >/dev/null 2>&1; then
    return 0
  fi
  grep -q "/${name}\.ko\$" "$MODULES_DIR/$(uname -r)/modules.builtin" 2>/dev/null
}

# The interface the WireGuard check adds; nothing else is ever given this name.
readonly WG_PROBE=k3scwgprobe
wg_probe_added=0

remove_wg_probe() {
  if ((wg_probe_added)); then
    ip link del dev "$WG_PROBE" >/dev/null 2>&1 || return 1
    wg_probe_added=0
  fi
}

on_exit() {
  local status=$?
  set +e
  remove_wg_probe
  exit "$status"
}
trap on_exit EXIT
# A cut SSH session or a cancelled `pulumi up` removes the probe link too.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Can this kernel make a WireGuard link? Adding one is what the agent does, so
# it also loads the module (or finds it built in) exactly as the agent would,
# and fails where the module cannot load (e.g. an unsigned one under Secure
# Boot). Without ip, what modprobe and sysfs say.
kernel_has_wireguard() {
  command -v ip >/dev/null 2>&1 || { module_available wireguard; return; }
  # Left over by a run killed outright: ours, as its name says.
  if ip link show dev "$WG_PROBE" >/dev/null 2>&1; then
    wg_probe_added=1
    remove_wg_probe || true
  fi
  # Set first: a signal arriving as ip returns must still find it to remove.
  wg_probe_added=1
  if ! ip link add dev "$WG_PROBE" type wireguard >/dev/null 2>&1; then
    wg_probe_added=0
    return 1
  fi
  if ! remove_wg_probe; then
    problem "could not delete the WireGuard probe link ${WG_PROBE} it had added; delete it with" \
      "'ip link del dev ${WG_PROBE}'"
  fi
  return 0
}

# The XFRM netlink interface Cilium programs IPsec through: asking for the
# number of states loads xfrm_user and reads no key. Without ip, what modprobe
# and sysfs say.
kernel_has_xfrm_user() {
  command -v ip >/dev/null 2>&1 || { module_available xfrm_user; return; }
  ip xfrm state count >/dev/null 2>&1
}

encryption_fact=""
check_encryption() {
  local module list
  local -a missing=()
  [[ $ENCRYPTION != none ]] || return 0
  for module in $ENCRYPTION_MODULES; do
    case $module in
      wireguard) kernel_has_wireguard || missing+=("$module") ;;
      xfrm_user) kernel_has_xfrm_user || missing+=("$module") ;;
      *) module_available "$module" || missing+=("$module") ;;
    esac
  done
  if ((${#missing[@]} == 0)); then
    encryption_fact="encryption=${ENCRYPTION}:ok"
    return 0
  fi
  encryption_fact="encryption=${ENCRYPTION}:missing"
  list=$(IFS=,; printf '%s' "${missing[*]}")
  list=${list//,/, }
  if [[ $ENCRYPTION_PROBLEM == *@MISSING@* ]]; then
    problem "${ENCRYPTION_PROBLEM%%@MISSING@*}${list}${ENCRYPTION_PROBLEM#*@MISSING@}"
  else
    problem "${ENCRYPTION_PROBLEM:-the kernel lacks ${list}, needed by ${ENCRYPTION} encryption}"
  fi
}

main() {
  local release arch os k3s_found selinux firewall nic line
  release=$(uname -r)
  arch=$(uname -m)
  os=$(os_name)
  k3s_found=$(installed_k3s)

  check_kernel "$release"
  check_arch "$arch"
  check_systemd
  check_commands
  check_nic
  check_encryption
  check_nm_cloud_setup
  selinux=$(selinux_state)
  check_selinux "$selinux"
  firewall=inactive
  if firewalld_running; then
    firewall=running
    nic=${nic_facts#nic=}
    check_firewalld "${nic%% *}"
  fi
  if ((${#firewall_closed[@]} + ${#firewall_untrusted[@]})); then
    if ((${#problems[@]})); then
      printf 'preflight: node %s: firewalld left as it is until the problems below are fixed' "$NODE_NAME" >&2
      printf ' (k3s.openFirewall would open %s in zone %s, trust %s)\n' "${firewall_closed[*]:-nothing}" \
        "$firewall_zone" "${firewall_untrusted[*]:-nothing}" >&2
    else
      open_firewall
    fi
  fi
  local skipped_list
  skipped_list=$(IFS=,; printf '%s' "${skipped[*]}")

  # Spaces would split a fact in two; none of these values should have any.
  printf 'kernel=%s os=%s arch=%s k3s=%s %s firewalld=%s selinux=%s skipped=%s%s\n' "${release// /_}" "${os// /_}" \
    "${arch// /_}" "${k3s_found// /_}" "$nic_facts" "$firewall" "${selinux:-unknown}" "${skipped_list:-none}" \
    "${encryption_fact:+ $encryption_fact}"

  if ((${#problems[@]})); then
    for line in "${problems[@]}"; do
      printf '%s\n' "$line" >&2
    done
    exit 1
  fi
}

main
