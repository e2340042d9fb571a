#!/usr/bin/env bash
# Undo host-tuning.sh: restore what it saved under STATE_DIR before its first
# run (NIC IRQ affinities, irqbalance, CPU governors, tuned profile, in the
# reverse order of tuning), then remove the saved state.
#
# Runs as root. Idempotent: with nothing saved it changes nothing. Something
# that is gone from the host (an IRQ of a removed NIC, tuned-adm uninstalled)
# is skipped with a warning. A restore the host refuses is an error: its saved
# state is kept, so that running this again retries only what failed.
#
# Prints one line, e.g.
#   tuned=restored governor=restored irqs=8 irqbalance=started
# with tuned=restored|skipped, governor=restored|skipped,
# irqbalance=started|left-stopped|skipped.
set -euo pipefail
# @params

# Must match the values host-tuning.sh ran with.
: "${STATE_DIR:=/var/lib/k3s-cilium/host-tuning}"
: "${SYSFS:=/sys}"
: "${PROCFS:=/proc}"
: "${TUNED_ADM:=tuned-adm}"
: "${SYSTEMCTL:=systemctl}"

readonly CPU_DIR="$SYSFS/devices/system/cpu"
readonly IRQ_DIR="$PROCFS/irq"

shopt -s nullglob
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT
failed=0

warn() {
  printf 'host-tuning-revert: warning: %s\n' "$*" >&2
}

fail() {
  printf 'host-tuning-revert: error: %s\n' "$*" >&2
  failed=1
}

# restore STATE_FILE TARGET: write the saved value back; drop the state once restored.
restore() {
  local state=$1 target=$2 value
  value=$(<"$state")
  if [[ ! -e $target ]]; then
    warn "$target is gone: nothing to restore"
    rm -f "$state"
    return 1
  fi
  if [[ $(<"$target") != "$value" ]] && ! { printf '%s\n' "$value" >"$target"; } 2>"$work_dir/err"; then
    fail "could not restore '$value' to $target: $(<"$work_dir/err")"
    return 1
  fi
  rm -f "$state"
}

irqs=0
for state in "$STATE_DIR"/irq/*; do
  irq=${state##*/}
  restore "$state" "$IRQ_DIR/$irq/smp_affinity_list" && irqs=$((irqs + 1))
done

irqbalance_state=skipped
if [[ -e $STATE_DIR/irqbalance ]]; then
  if [[ $(<"$STATE_DIR/irqbalance") != active ]]; then
    irqbalance_state=left-stopped
    rm -f "$STATE_DIR/irqbalance"
  elif ! command -v "$SYSTEMCTL" >/dev/null 2>&1; then
    warn "systemctl not found: irqbalance not started again"
    rm -f "$STATE_DIR/irqbalance"
  elif "$SYSTEMCTL" start irqbalance 2>"$work_dir/err"; then
    irqbalance_state=started
    rm -f "$STATE_DIR/irqbalance"
  else
    fail "'$SYSTEMCTL start irqbalance' failed: $(<"$work_dir/err")"
  fi
fi

governor_state=skipped
for state in "$STATE_DIR"/governor/cpu*; do
  cpu=${state##*/}
  restore "$state" "$CPU_DIR/$cpu/cpufreq/scaling_governor" && governor_state=restored
done

tuned_state=skipped
if [[ -e $STATE_DIR/tuned ]]; then
  profile=$(<"$STATE_DIR/tuned")
  if ! command -v "$TUNED_ADM" >/dev/null 2>&1; then
    warn "tuned-adm not found: tuned profile '$profile' not restored"
    rm -f "$STATE_DIR/tuned"
  else
    if [[ $profile == none ]]; then
      restore_cmd=("$TUNED_ADM" off)
    else
      restore_cmd=("$TUNED_ADM" profile "$profile")
    fi
    if "${restore_cmd[@]}" 2>"$work_dir/err"; then
      tuned_state=restored
      rm -f "$STATE_DIR/tuned"
    else
      fail "'${restore_cmd[*]}' failed: $(<"$work_dir/err")"
    fi
  fi
fi

if ((failed)); then
  echo "host-tuning-revert: the state of what failed stays in $STATE_DIR; run again to retry" >&2
else
  rm -rf "$STATE_DIR"
fi
printf 'tuned=%s governor=%s irqs=%d irqbalance=%s\n' "$tuned_state" "$governor_state" "$irqs" "$irqbalance_state"
exit "$failed"
