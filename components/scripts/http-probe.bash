# --- http-probe (components/scripts/http-probe.bash, inserted by render at "# @include http-probe") ---
# One value of a probe or marker line: shell-quoted (it may hold blanks and
# quotes), control characters replaced, so that the line stays one line.
field() {
  local text=${1//[[:cntrl:]]/ }
  printf '%q' "${text:-none}"
}

# probe_http <name> <target> <url> <accepted status glob> [curl option...]: GET
# <url> up to ATTEMPTS times, RETRY_DELAY_SECONDS apart, each attempt bounded
# by CONNECT_TIMEOUT_SECONDS/MAX_TIME_SECONDS, until the HTTP status matches
# the glob (2?? for a 2xx answer), then print the line `python3 -m
# verification` reads:
#   probe=<name> target=<target> result=ok|fail code=<http code> attempts=<n> [detail=<text>]
# A failed probe is a result, not an error: it returns 0. Needs work_dir.
probe_http() {
  local name=$1 target=$2 url=$3 accepted=$4 attempt code detail=""
  shift 4
  for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
    if code=$(curl -sS "$@" -o /dev/null -w '%{http_code}' --connect-timeout "$CONNECT_TIMEOUT_SECONDS" \
      --max-time "$MAX_TIME_SECONDS" "$url" 2>"$work_dir/stderr"); then
      # shellcheck disable=SC2053 # the glob is the point
      if [[ $code == $accepted ]]; then
        printf 'probe=%s target=%s result=ok code=%s attempts=%d\n' "$name" "$(field "$target")" "$code" "$attempt"
        return 0
      fi
      detail="HTTP status $code"
    else
      detail=$(head -n 1 "$work_dir/stderr")
    fi
    if ((attempt < ATTEMPTS)); then sleep "$RETRY_DELAY_SECONDS"; fi
  done
  printf 'probe=%s target=%s result=fail code=%s attempts=%d detail=%s\n' \
    "$name" "$(field "$target")" "$(field "${code:-000}")" "$ATTEMPTS" "$(field "${detail:-no HTTP answer}")"
}
