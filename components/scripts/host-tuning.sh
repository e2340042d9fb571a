#!/usr/bin/env bash
# Tune a node's host for Cilium's datapath, after the Cilium tuning guide
# ("Further Considerations"): a tuned network profile, the CPU frequency
# governor "performance", and the IRQs of the node's physical NICs spread
# round-robin over the online CPUs, with irqbalance stopped so that it does
# not move them back.
#
# Runs as root. Idempotent. Before it changes anything it saves, once, what it
# is about to change under STATE_DIR; a later run keeps what the first one
# saved, so host-tuning-revert.sh restores the host as it was before the
# first run. What the host lacks (tuned-adm, cpufreq, systemd, NICs with IRQs)
# is skipped with a warning on stderr, not an error; so is a setting the
# kernel refuses (managed IRQs, a governor the driver does not offer).
#
# Governor, IRQ affinity and the stopped irqbalance last until the next boot;
# the tuned profile persists (tuned re-applies it at boot).
#
# A first run (nothing saved yet) that fails or is cut short puts back what
# it changed, with host-tuning-revert.sh's own code, and removes STATE_DIR:
# pulumi-command keeps no failed create in its state, so the revert (the
# delete) would never run. A later run that fails leaves the saved state for
# the revert. What cannot be saved is not changed: a save that fails stops
# the run.
#
# Prints one line, e.g.
#   tuned=applied governor=performance irqs=8 irqbalance=stopped
# with tuned=applied|skipped, governor=<GOVERNOR>|skipped,
# irqbalance=stopped|not-running|skipped.
set -euo pipefail
# @params

# tuned profile: network-latency (lowest per-packet latency, implies the
# latency-performance profile) or network-throughput (larger socket buffers).
: "${TUNED_PROFILE:=network-latency}"
: "${GOVERNOR:=performance}"
: "${STATE_DIR:=/var/lib/k3s-cilium/host-tuning}"
# Roots of sysfs and procfs and the commands used, parameters for the tests.
: "${SYSFS:=/sys}"
: "${PROCFS:=/proc}"
: "${TUNED_ADM:=tuned-adm}"
: "${SYSTEMCTL:=systemctl}"

readonly CPU_DIR="$SYSFS/devices/system/cpu"
readonly NET_DIR="$SYSFS/class/net"
readonly IRQ_DIR="$PROCFS/irq"

shopt -s nullglob
umask 077
first_run=0
[[ -e $STATE_DIR ]] || first_run=1
work_dir=$(mktemp -d)
trap on_exit EXIT
# A cut SSH session or a cancelled `pulumi up` is a failure too.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

warn() {
  printf 'host-tuning: warning: %s\n' "$*" >&2
}

error() {
  printf 'host-tuning: error: %s\n' "$*" >&2
}

fail() {
  error "$*"
  exit 1
}

# @include host-tuning-restore

on_exit() {
  local status=$? summary
  set +e
  if ((status != 0 && first_run)) && [[ -e $STATE_DIR ]]; then
    if summary=$(restore_saved_tuning host-tuning); then
      printf 'host-tuning: the host was not tuned before this run: it was put back as it was (%s)\n' "$summary" >&2
    else
      printf 'host-tuning: the host was not tuned before this run, and not all of it could be put back; %s\n' \
        "the saved state of what failed stays in ${STATE_DIR} for the revert" >&2
    fi
  fi
  rm -rf "$work_dir"
  exit "$status"
}

# save_once FILE VALUE: record VALUE as the state before tuning, unless a
# previous run already did. Returns 1 when FILE already existed. Callers test
# it, where errexit is off: a save that fails stops the script here, before
# the value it was to keep is changed.
save_once() {
  local file=$1 value=$2
  [[ -e $file ]] && return 1
  { mkdir -p "$(dirname "$file")" && printf '%s\n' "$value" >"$file.tmp" && mv "$file.tmp" "$file"; } ||
    fail "could not save the state before tuning to $file: it is left as it is"
}

# write_value FILE VALUE: write a sysfs/procfs value; on failure warn and return 1.
write_value() {
  local file=$1 value=$2
  if ! { printf '%s\n' "$value" >"$file"; } 2>"$work_dir/err"; then
    warn "could not write '$value' to $file: $(<"$work_dir/err")"
    return 1
  fi
}

# "0-3,6,8-9" -> "0 1 2 3 6 8 9"
expand_cpu_list() {
  local part lo hi cpu
  local -a parts out=()
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then
      lo=${part%-*} hi=${part#*-}
      for ((cpu = lo; cpu <= hi; cpu++)); do out+=("$cpu"); done
    elif [[ -n $part ]]; then
      out+=("$part")
    fi
  done
  echo "${out[*]}"
}

# The active tuned profile, or "none"; fails when tuned-adm cannot tell.
tuned_active() {
  local out
  out=$("$TUNED_ADM" active 2>&1) || return 1
  case $out in
    *"Current active profile:"*) sed -n 's/^Current active profile: *//p' <<<"$out" | head -n 1 ;;
    *"No current active profile"*) echo none ;;
    *) return 1 ;;
  esac
}

# IRQ numbers of network device directory $1 (one per line, sorted): its
# MSI/MSI-X vectors, or for virtio NICs those of the virtio PCI device above
# it, or else its single legacy IRQ.
nic_irqs() {
  local dev=$1 msi subsystem irq
  msi="$dev/device/msi_irqs"
  subsystem=$(readlink -f "$dev/device/subsystem" 2>/dev/null || true)
  if [[ ${subsystem##*/} == virtio ]]; then
    msi="$(readlink -f "$dev/device")/../msi_irqs"
  fi
  if [[ -d $msi ]]; then
    local -a vectors=("$msi"/*)
    ((${#vectors[@]})) && printf '%s\n' "${vectors[@]##*/}" | sort -n
    return 0
  fi
  if [[ -r $dev/device/irq ]]; then
    irq=$(<"$dev/device/irq")
    [[ $irq =~ ^[0-9]+$ && $irq != 0 ]] && echo "$irq"
  fi
  return 0
}

# --- what is there, and its state before tuning --------------------------------------------

tuned_current=""
if ! command -v "$TUNED_ADM" >/dev/null 2>&1; then
  warn "tuned-adm not found: tuned profile skipped"
elif ! tuned_current=$(tuned_active); then
  warn "'$TUNED_ADM active' failed (is the tuned service running?): tuned profile skipped"
  tuned_current=""
else
  save_once "$STATE_DIR/tuned" "$tuned_current" || true
fi

governor_files=("$CPU_DIR"/cpu[0-9]*/cpufreq/scaling_governor)
if ((${#governor_files[@]} == 0)); then
  warn "no cpufreq in $CPU_DIR (cpu*/cpufreq/scaling_governor): CPU governor skipped"
fi
for file in "${governor_files[@]}"; do
  cpu=${file#"$CPU_DIR"/}
  cpu=${cpu%%/*}
  save_once "$STATE_DIR/governor/$cpu" "$(<"$file")" || true
done

have_systemctl=0 irqbalance_active=0
if command -v "$SYSTEMCTL" >/dev/null 2>&1; then
  have_systemctl=1
  if "$SYSTEMCTL" is-active --quiet irqbalance; then
    irqbalance_active=1
    save_once "$STATE_DIR/irqbalance" active || true
  else
    save_once "$STATE_DIR/irqbalance" inactive || true
  fi
else
  warn "systemctl not found: irqbalance left as it is (it may move the NIC IRQs again)"
fi

# --- apply ---------------------------------------------------------------------------------

tuned_state=skipped
if [[ -n $tuned_current ]]; then
  if [[ $tuned_current == "$TUNED_PROFILE" ]]; then
    tuned_state=applied
  elif "$TUNED_ADM" profile "$TUNED_PROFILE" 2>"$work_dir/err"; then
    tuned_state=applied
  else
    warn "'$TUNED_ADM profile $TUNED_PROFILE' failed (profile not installed?): $(<"$work_dir/err")"
  fi
fi

governor_state=skipped
for file in "${governor_files[@]}"; do
  cpu_dir=${file%/scaling_governor}
  available=""
  [[ -r $cpu_dir/scaling_available_governors ]] && available=$(<"$cpu_dir/scaling_available_governors")
  if [[ -n $available && " $available " != *" $GOVERNOR "* ]]; then
    warn "${cpu_dir%/cpufreq}: governor '$GOVERNOR' not offered (available: $available): skipped"
    continue
  fi
  if [[ $(<"$file") == "$GOVERNOR" ]] || write_value "$file" "$GOVERNOR"; then
    governor_state=$GOVERNOR
  fi
done

irqbalance_state=skipped
if ((have_systemctl)); then
  if ((!irqbalance_active)) && [[ $(<"$STATE_DIR/irqbalance") == active ]]; then
    irqbalance_state=stopped # by an earlier run
  elif ((irqbalance_active)); then
    if "$SYSTEMCTL" stop irqbalance 2>"$work_dir/err"; then
      irqbalance_state=stopped
    else
      warn "'$SYSTEMCTL stop irqbalance' failed: $(<"$work_dir/err")"
    fi
  else
    irqbalance_state=not-running
  fi
fi

irqs=0
cpus=()
if [[ -r $CPU_DIR/online ]]; then
  read -ra cpus <<<"$(expand_cpu_list "$(<"$CPU_DIR/online")")"
fi
if ((${#cpus[@]} == 0)); then
  warn "no online CPU list at $CPU_DIR/online: NIC IRQ affinity skipped"
else
  nics=0
  for dev in "$NET_DIR"/*; do
    # Physical NICs have a device; lo, bridges, veth/netkit and Cilium's own devices do not.
    [[ -e $dev/device ]] || continue
    nics=$((nics + 1))
    next=0
    while read -r irq; do
      [[ -n $irq ]] || continue
      affinity="$IRQ_DIR/$irq/smp_affinity_list"
      if [[ ! -e $affinity ]]; then
        warn "${dev##*/}: IRQ $irq has no $affinity: skipped"
        continue
      fi
      cpu=${cpus[next % ${#cpus[@]}]}
      next=$((next + 1))
      fresh=0
      save_once "$STATE_DIR/irq/$irq" "$(<"$affinity")" && fresh=1
      if [[ $(<"$affinity") == "$cpu" ]] || write_value "$affinity" "$cpu"; then
        irqs=$((irqs + 1))
      elif ((fresh)); then
        # Unchanged (the kernel manages this IRQ): nothing to restore.
        rm -f "$STATE_DIR/irq/$irq"
      fi
    done < <(nic_irqs "$dev")
  done
  ((nics)) || warn "no physical NIC (with a device) in $NET_DIR: NIC IRQ affinity skipped"
fi

printf 'tuned=%s governor=%s irqs=%d irqbalance=%s\n' "$tuned_state" "$governor_state" "$irqs" "$irqbalance_state"
