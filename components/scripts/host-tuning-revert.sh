#!/usr/bin/env bash
# Undo host-tuning.sh: restore what it saved under STATE_DIR before its first
# run (NIC IRQ affinities, irqbalance, CPU governors, tuned profile, in the
# reverse order of tuning), then remove the saved state. The restoring itself
# is host-tuning-restore.bash, which host-tuning.sh uses too; it also removes
# /var/lib/k3s-cilium when nothing else of ours is left in it.
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

shopt -s nullglob

# @include host-tuning-restore

failed=0
summary=$(restore_saved_tuning host-tuning-revert) || failed=1
if ((failed)); then
  echo "host-tuning-revert: the state of what failed stays in $STATE_DIR; run again to retry" >&2
fi
printf '%s\n' "$summary"
exit "$failed"
