# --- host-tuning-restore (components/scripts/host-tuning-restore.bash, inserted by render at "# @include host-tuning-restore") ---
# restore_saved_tuning LABEL: put back what host-tuning.sh saved under STATE_DIR
# before its first run (NIC IRQ affinities, irqbalance, CPU governors, tuned
# profile, in the reverse order of tuning), then remove the saved state, and
# STATE_DIR's parent (/var/lib/k3s-cilium) when nothing else is left in it.
# Both host-tuning-revert.sh (the delete) and host-tuning.sh (a failed first
# run, which no delete would ever follow) use it, so they cannot drift apart.
#
# Something that is gone from the host (an IRQ of a removed NIC, tuned-adm
# uninstalled) is skipped with a warning. A restore the host refuses is an
# error: its saved state is kept, so that running again retries only what
# failed, and the function returns 1. Messages on stderr start with LABEL;
# stdout gets one line, e.g.
#   tuned=restored governor=restored irqs=8 irqbalance=started
# Needs nullglob, STATE_DIR, SYSFS, PROCFS, TUNED_ADM and SYSTEMCTL.
restore_label=""
restore_failed=0

restore_warn() {
  printf '%s: warning: %s\n' "$restore_label" "$*" >&2
}

restore_error() {
  printf '%s: error: %s\n' "$restore_label" "$*" >&2
  restore_failed=1
}

# restore_value STATE_FILE TARGET: write the saved value back; drop the state once restored.
restore_value() {
  local state=$1 target=$2 value err
  value=$(<"$state")
  if [[ ! -e $target ]]; then
    restore_warn "$target is gone: nothing to restore"
    rm -f "$state"
    return 1
  fi
  if [[ $(<"$target") != "$value" ]] && ! err=$({ printf '%s\n' "$value" >"$target"; } 2>&1); then
    restore_error "could not restore '$value' to $target: $err"
    return 1
  fi
  rm -f "$state"
}

restore_saved_tuning() {
  local state irq cpu profile parent err irqs=0 irqbalance_state=skipped governor_state=skipped tuned_state=skipped
  local -a restore_cmd left
  restore_label=$1
  restore_failed=0

  for state in "$STATE_DIR"/irq/*; do
    irq=${state##*/}
    # A value being saved when the run was cut short: nothing was changed for it yet.
    [[ $irq == *.tmp ]] && continue
    if restore_value "$state" "$PROCFS/irq/$irq/smp_affinity_list"; then
      irqs=$((irqs + 1))
    fi
  done

  if [[ -e $STATE_DIR/irqbalance ]]; then
    if [[ $(<"$STATE_DIR/irqbalance") != active ]]; then
      irqbalance_state="left-stopped"
      rm -f "$STATE_DIR/irqbalance"
    elif ! command -v "$SYSTEMCTL" >/dev/null 2>&1; then
      restore_warn "systemctl not found: irqbalance not started again"
      rm -f "$STATE_DIR/irqbalance"
    elif err=$("$SYSTEMCTL" start irqbalance 2>&1 >/dev/null); then
      irqbalance_state=started
      rm -f "$STATE_DIR/irqbalance"
    else
      restore_error "'$SYSTEMCTL start irqbalance' failed: $err"
    fi
  fi

  for state in "$STATE_DIR"/governor/cpu*; do
    cpu=${state##*/}
    [[ $cpu == *.tmp ]] && continue
    if restore_value "$state" "$SYSFS/devices/system/cpu/$cpu/cpufreq/scaling_governor"; then
      governor_state=restored
    fi
  done

  if [[ -e $STATE_DIR/tuned ]]; then
    profile=$(<"$STATE_DIR/tuned")
    if ! command -v "$TUNED_ADM" >/dev/null 2>&1; then
      restore_warn "tuned-adm not found: tuned profile '$profile' not restored"
      rm -f "$STATE_DIR/tuned"
    else
      if [[ $profile == none ]]; then
        restore_cmd=("$TUNED_ADM" off)
      else
        restore_cmd=("$TUNED_ADM" profile "$profile")
      fi
      if err=$("${restore_cmd[@]}" 2>&1 >/dev/null); then
        tuned_state=restored
        rm -f "$STATE_DIR/tuned"
      else
        restore_error "'${restore_cmd[*]}' failed: $err"
      fi
    fi
  fi

  if ((!restore_failed)); then
    rm -rf "$STATE_DIR"
    parent=$(dirname "$STATE_DIR")
    left=("$parent"/* "$parent"/.[!.]*)
    if [[ -d $parent ]] && ((${#left[@]} == 0)); then
      rmdir -- "$parent"
    fi
  fi
  printf 'tuned=%s governor=%s irqs=%d irqbalance=%s\n' "$tuned_state" "$governor_state" "$irqs" "$irqbalance_state"
  return "$restore_failed"
}
# --- end of host-tuning-restore ---
