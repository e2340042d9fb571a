# Shared by lab/toolchain.sh and lab/datapath/build.sh: building Go modules the proxy serves, into
# a cache outside git, with a stamp per build so that a second run builds nothing.
# The sourcing script sets LOG_NAME and STAMPS.

export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then PATH=/usr/local/go/bin:$PATH; fi

log() { printf '%s: %s\n' "$LOG_NAME" "$*" >&2; }
die() { log "$*"; exit 1; }

stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_write() { mkdir -p "$STAMPS"; printf '%s\n' "$2" >"$STAMPS/$1"; }

# served MODULE VERSION: true when the proxy serves MODULE@VERSION; prints the proxy's answer if not.
served() {
  local out proxy
  # Ask the proxy only: with ",direct" a refused version falls through to git (unreachable here).
  proxy=$(go env GOPROXY)
  proxy=${proxy%,direct}
  proxy=${proxy%|direct}
  if out=$(GOPROXY=$proxy go list -m -json "$1@$2" 2>&1); then return 0; fi
  log "not served by the Go proxy: $1@$2: $(printf '%s' "$out" | grep -m1 -oE '[0-9]{3} [A-Za-z ]+|not found.*|unknown revision.*' || printf '%s' "$out" | tail -n1)"
  return 1
}

# modinfo MODULE VERSION FIELD: a field of `go mod download -json` (Dir, GoMod, Time, ...).
modinfo() { go mod download -json "$1@$2" | sed -n "s/^\t*\"$3\": \"\(.*\)\",\{0,1\}$/\1/p"; }
moddir() { modinfo "$1" "$2" Dir; }
modfile() { modinfo "$1" "$2" GoMod; }

# copy_replaces GOMOD: the module replacements (not local directories) of a dependency's go.mod,
# added to the main module in the current directory (`go install m@v` refuses such modules).
copy_replaces() {
  local old new
  while read -r old new; do
    [ -n "$old" ] && go mod edit -replace "$old=$new"
  done < <(go mod edit -json "$1" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"].get("Version"):
        old = r["Old"]["Path"] + ("@" + r["Old"]["Version"] if r["Old"].get("Version") else "")
        print(old, r["New"]["Path"] + "@" + r["New"]["Version"])
')
}
