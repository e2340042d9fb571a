# --- progress (components/scripts/progress.bash, inserted by render at the @progress line) ---
# While a long step runs, a line on stderr every PROGRESS_SECONDS says what it
# waits for; the traffic also keeps NAT and bastion idle timeouts from cutting
# the SSH session (pulumi-command sends no keepalives). stdout is untouched:
# it may be parsed or secret.
: "${PROGRESS_SECONDS:=50}"
progress_pid=""

# progress_start <what> [<function printing what is still pending>]: until
# progress_stop, or until this script is gone (checked at every tick).
progress_start() {
  local what=$1 pending=${2:-} parent=$$ started=$SECONDS detail
  progress_stop
  (
    # sleep holds no pipe: a ticker that is stopped mid-sleep does not keep
    # the SSH session (or a caller's capture) open.
    while sleep "$PROGRESS_SECONDS" 2>/dev/null && kill -0 "$parent" 2>/dev/null; do
      detail=""
      if [[ -n $pending ]]; then detail=$("$pending" 2>/dev/null || true); fi
      printf '%s: still waiting for %s%s (%ss so far)\n' \
        "$PROGRESS_LABEL" "$what" "${detail:+: $detail}" "$((SECONDS - started))" >&2
    done
  ) </dev/null >/dev/null &
  progress_pid=$!
}

progress_stop() {
  if [[ -n $progress_pid ]]; then
    kill "$progress_pid" 2>/dev/null || true
    wait "$progress_pid" 2>/dev/null || true
    progress_pid=""
  fi
}
# --- end of progress ---
