#!/usr/bin/env bash
# Remove the iptables rules and chains kube-proxy left behind on a K3s node
# after Cilium's kube-proxy replacement took over services. K3s runs
# kube-proxy inside the k3s process, so disabling it stops the writer but
# leaves its rules in the kernel, where stale service NAT would keep
# competing with Cilium's eBPF datapath.
#
# Runs as root. Idempotent: a run with nothing left to remove writes nothing.
# Optional parameter: XTABLES_LOCK_WAIT_SECONDS (default 30).
# Prints one line per backend and family it inspected, e.g.
#   backend=nft family=ipv4 chains_removed=12 rules_removed=30
# Exits 1 when an iptables command fails (after cleaning what it could) and
# 2 for a bad parameter.
set -euo pipefail
# @params

# A host without iptables of its own still has kube-proxy's rules: K3s wrote
# them with the copy it bundles here. Search it last so that the host's own
# binaries, which K3s prefers too, win.
readonly K3S_BUNDLED_BIN=/var/lib/rancher/k3s/data/current/bin/aux
PATH="${PATH}:${K3S_BUNDLED_BIN}"

# How long iptables-legacy-restore may wait for the xtables lock, which
# kubelet and K3s's network policy controller take all the time.
: "${XTABLES_LOCK_WAIT_SECONDS:=30}"
if [[ ! $XTABLES_LOCK_WAIT_SECONDS =~ ^[0-9]+$ ]]; then
  printf 'kube-proxy-cleanup: XTABLES_LOCK_WAIT_SECONDS must be a number of seconds, not %q\n' \
    "$XTABLES_LOCK_WAIT_SECONDS" >&2
  exit 2
fi

work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

log() {
  printf 'kube-proxy-cleanup: %s\n' "$*" >&2
}

has_commands() {
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || return 1
  done
}

# iptables >= 1.8 names its backend in --version; older releases only had
# the legacy one.
backend_of() {
  local version
  version=$("$1" --version 2>/dev/null) || version=""
  case $version in
    *nf_tables*) echo nft ;;
    *) echo legacy ;;
  esac
}

# An awk program that reads `iptables-save` output and writes, on its first
# line, "# chains_removed=N rules_removed=M" (a comment to iptables-restore),
# then an `iptables-restore --noflush` script with one transaction per table
# that touches only kube-proxy's rules: delete the jumps into kube-proxy
# chains from every chain we keep, flush kube-proxy's chains (which drops
# their jumps into each other), then delete those chains. Each COMMIT is
# atomic, and deleting by rule text rather than by position stays correct if
# another writer reorders a chain in the meantime; if a rule we meant to
# delete is already gone, the whole table's transaction fails unchanged.
#
# Which chains are kube-proxy's (names from kube-proxy's iptables and ipvs
# proxiers, pkg/proxy/{iptables,ipvs}/proxier.go in kubernetes/kubernetes):
# - iptables mode: KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-NODEPORTS,
#   KUBE-POSTROUTING, KUBE-MARK-MASQ, KUBE-FORWARD, KUBE-PROXY-FIREWALL,
#   KUBE-PROXY-CANARY and the per-service KUBE-SVC-/SVL-/SEP-/EXT-/FW-
#   chains; KUBE-XLB- and KUBE-MARK-DROP are from older releases.
# - ipvs mode: KUBE-NODE-PORT, KUBE-LOAD-BALANCER, KUBE-SOURCE-RANGES-FIREWALL,
#   KUBE-IPVS-FILTER, KUBE-IPVS-OUT-FILTER, and KUBE-FIREWALL in the nat
#   table (older ipvs proxiers used it, and KUBE-FIRE-WALL before that, for
#   loadBalancerSourceRanges).
# Deliberately kept, although their names start with KUBE-:
# - KUBE-FIREWALL in the filter table, KUBE-KUBELET-CANARY and
#   KUBE-IPTABLES-HINT: kubelet owns them (pkg/kubelet/kubelet_network_linux.go)
#   and keeps running. KUBE-FIREWALL holds the rule that blocks martian
#   packets to 127.0.0.0/8; kube-proxy writes an identical copy but its own
#   CleanupLeftovers never deletes the chain. Removing the canary would make
#   kubelet re-sync for nothing; the hint chain tells other tools which
#   iptables backend the node uses.
# - Everything else named KUBE-*, notably K3s's embedded kube-router network
#   policy controller (KUBE-ROUTER-*, KUBE-NWPLCY-*, KUBE-POD-FW-*), which
#   still enforces NetworkPolicy unless it was disabled. That is why this is
#   a list of kube-proxy's names and not "every KUBE- chain".
# KUBE-MARK-MASQ, KUBE-MARK-DROP and KUBE-POSTROUTING were also created by
# kubelet before Kubernetes 1.28, but since dockershim's removal only
# kube-proxy used them (KEP-3178, kubernetes/enhancements
# keps/sig-network/3178-iptables-cleanup), so they go with kube-proxy's; if an
# old kubelet recreates them, they sit unused. A rule of someone else's that
# jumps into one of them (e.g. the CNI portmap plugin's externalSetMarkChain
# pointed at KUBE-MARK-MASQ) has to go too, or the chain could not be deleted.
plan_program() {
  cat <<'AWK'
function is_kube_proxy_chain(name) {
  if (name ~ /^KUBE-(SVC|SVL|SEP|EXT|FW|XLB)-/) return 1
  if (name == "KUBE-FIREWALL") return table != "filter"
  return name in kube_proxy_names
}

# Split a rule the way iptables-restore does: blanks separate words and a
# double-quoted word may hold blanks and backslash escapes. A target is the
# word after a -j or -g word, so a comment that mentions "-j KUBE-..." is one
# quoted word and never counts as a jump.
function jumps_to_removed_chain(line,    len, i, c, n, word, started, in_quotes, words) {
  len = length(line)
  n = 0; word = ""; started = 0; in_quotes = 0
  for (i = 1; i <= len; i++) {
    c = substr(line, i, 1)
    if (in_quotes) {
      if (c == "\\" && i < len) { i++; word = word substr(line, i, 1) }
      else if (c == "\"") in_quotes = 0
      else word = word c
    } else if (c == " " || c == "\t") {
      if (started) words[++n] = word
      word = ""; started = 0
    } else if (c == "\"") {
      in_quotes = 1; started = 1
    } else {
      word = word c; started = 1
    }
  }
  if (started) words[++n] = word
  for (i = 1; i < n; i++)
    if ((words[i] == "-j" || words[i] == "-g") && ((table, words[i + 1]) in removed))
      return 1
  return 0
}

BEGIN {
  split("KUBE-SERVICES KUBE-EXTERNAL-SERVICES KUBE-NODEPORTS KUBE-POSTROUTING " \
        "KUBE-MARK-MASQ KUBE-MARK-DROP KUBE-FORWARD KUBE-PROXY-FIREWALL " \
        "KUBE-PROXY-CANARY KUBE-NODE-PORT KUBE-LOAD-BALANCER " \
        "KUBE-SOURCE-RANGES-FIREWALL KUBE-IPVS-FILTER KUBE-IPVS-OUT-FILTER " \
        "KUBE-FIRE-WALL", names, " ")
  for (i in names) kube_proxy_names[names[i]] = 1
  total_chains = 0; total_rules = 0; nout = 0
}

/^\*/ { table = substr($0, 2); nchains = 0; ndeletes = 0; nflushed = 0; next }

/^:/ {
  name = substr($1, 2)
  if (is_kube_proxy_chain(name)) { chains[++nchains] = name; removed[table, name] = 1 }
  next
}

/^-A / {
  if ((table, $2) in removed) { nflushed++; next }
  if (index($0, "KUBE-") && jumps_to_removed_chain($0)) deletes[++ndeletes] = "-D " substr($0, 4)
  next
}

/^COMMIT/ {
  if (nchains + ndeletes > 0) {
    out[++nout] = "*" table
    for (i = 1; i <= ndeletes; i++) out[++nout] = deletes[i]
    for (i = 1; i <= nchains; i++) out[++nout] = "-F " chains[i]
    for (i = 1; i <= nchains; i++) out[++nout] = "-X " chains[i]
    out[++nout] = "COMMIT"
  }
  total_chains += nchains; total_rules += ndeletes + nflushed
  next
}

END {
  print "# chains_removed=" total_chains " rules_removed=" total_rules
  for (i = 1; i <= nout; i++) print out[i]
}
AWK
}

# Remove kube-proxy's state from one backend (legacy or nft) of one family.
# Reading first and writing only when there is something to remove keeps a
# clean node untouched; in particular it never creates legacy tables on a
# node that only uses nft.
clean_backend() {
  local backend=$1 family=$2 save=$3 restore=$4
  local dump plan counts changes errors
  if ! dump=$("$save" 2>"$work_dir/stderr"); then
    log "backend=$backend family=$family: '$save' failed: $(<"$work_dir/stderr")"
    return 1
  fi
  if ! plan=$(awk "$(plan_program)" <<<"$dump" 2>"$work_dir/stderr"); then
    log "backend=$backend family=$family: awk could not read the output of '$save': $(<"$work_dir/stderr")"
    return 1
  fi
  counts=${plan%%$'\n'*}
  if [[ $plan == *$'\n'* ]]; then
    changes=${plan#*$'\n'}
    if ! "$restore" --noflush --wait="$XTABLES_LOCK_WAIT_SECONDS" <<<"$changes" 2>"$work_dir/stderr"; then
      errors=$(<"$work_dir/stderr")
      log "backend=$backend family=$family: '$restore --noflush' failed: $errors"
      # Both backends report the line of their input that failed; show it,
      # since that input exists only here.
      if [[ $errors =~ line\ ([0-9]+) ]]; then
        log "line ${BASH_REMATCH[1]} was: $(sed -n "${BASH_REMATCH[1]}p" <<<"$changes")"
      fi
      log "each table is restored in one transaction: the one that failed is unchanged and running again retries it"
      return 1
    fi
  fi
  printf 'backend=%s family=%s %s\n' "$backend" "$family" "${counts#\# }"
}

# Clean every backend of one family that has binaries on this host: the
# -legacy and -nft variants where installed, and the plain command for the
# backend it implements when no variant covers that backend.
clean_family() {
  local family=$1 cmd backend plain_backend failed=0
  local -A cleaned=()
  case $family in
    ipv4) cmd=iptables ;;
    ipv6) cmd=ip6tables ;;
  esac
  if [[ $family == ipv6 && ! -d /proc/sys/net/ipv6 ]]; then
    log "family=ipv6 skipped: this kernel has no IPv6 (no /proc/sys/net/ipv6), so it has no ip6tables rules"
    return 0
  fi
  for backend in legacy nft; do
    if has_commands "$cmd-$backend-save" "$cmd-$backend-restore"; then
      clean_backend "$backend" "$family" "$cmd-$backend-save" "$cmd-$backend-restore" || failed=1
      cleaned[$backend]=1
    fi
  done
  if has_commands "$cmd" "$cmd-save" "$cmd-restore"; then
    plain_backend=$(backend_of "$cmd")
    if [[ -z ${cleaned[$plain_backend]:-} ]]; then
      clean_backend "$plain_backend" "$family" "$cmd-save" "$cmd-restore" || failed=1
      cleaned[$plain_backend]=1
    fi
  fi
  for backend in legacy nft; do
    if [[ -z ${cleaned[$backend]:-} ]]; then
      log "backend=$backend family=$family skipped: neither $cmd-$backend-save/-restore" \
        "nor a $backend $cmd-save/-restore is installed"
    fi
  done
  return "$failed"
}

main() {
  local family failed=0
  for family in ipv4 ipv6; do
    clean_family "$family" || failed=1
  done
  if ((failed)); then
    log "failed: see the messages above; rules that could be removed were removed"
    exit 1
  fi
}

main
