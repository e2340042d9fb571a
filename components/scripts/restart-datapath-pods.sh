#!/usr/bin/env bash
# Recreate the pods of every pod-networked workload so that they run on the
# datapath Cilium programs now. Runs as root on a K3s server, after the Cilium
# Helm release is ready.
#
# Cilium sets some things up only when it creates a pod's network device: the
# device type (netkit or veth), its MTU and GSO/GRO limits (BIG TCP), how the
# pod's traffic is routed (tunnel or native routing, eBPF host routing) and
# the bandwidth manager's and BBR's settings. Pods that were running before a
# change keep the old datapath until they are recreated; Cilium's own agents
# are restarted by the chart (rollOutCiliumPods).
#
# Scope: Deployments, DaemonSets and StatefulSets in every namespace but
# SKIP_NAMESPACES whose pods are not hostNetwork (host-network pods have no
# Cilium endpoint; Cilium's agent and operator are among them). kube-system
# goes first (CoreDNS), then the other namespaces. Each workload rolls by its
# own update strategy, so replicated workloads stay available. Bare pods,
# Jobs and CronJobs are left alone, and so are workloads with the OnDelete
# update strategy and paused Deployments (a rollout restart would not
# recreate their pods): those are named in a warning.
#
# Prints: restarted=N ready=N not_ready=N skipped=N
# Fails when a workload that was rolled out before the restart is not rolled
# out again within TIMEOUT_SECONDS; one that was not ready before only warns.
# While it waits, a line on stderr every PROGRESS_SECONDS names the rollouts
# still pending (so an idle timeout never cuts the SSH session).
set -euo pipefail
# @params
# @progress

# The kubectl to use (words split on blanks).
: "${KUBECTL:=k3s kubectl}"
: "${TIMEOUT_SECONDS:=300}"
# Namespaces to leave alone, separated by blanks.
: "${SKIP_NAMESPACES:=}"
# How many rollouts are waited for at the same time.
: "${PARALLEL:=8}"

# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra kubectl <<<"$KUBECTL"
work_dir=$(mktemp -d)
trap 'progress_stop; rm -rf "$work_dir"' EXIT

log() {
  printf 'restart-datapath-pods: %s\n' "$*" >&2
}

# Did the workload finish its last rollout? (does not wait)
rolled_out() {
  local namespace=$1 ref=$2 out
  out=$("${kubectl[@]}" -n "$namespace" rollout status "$ref" --watch=false 2>/dev/null) || return 1
  case $out in
    *"successfully rolled out"* | *"rolling update complete"* | *"roll out complete"*) return 0 ;;
    *) return 1 ;;
  esac
}

# The workloads restarted in this phase whose rollout has no result yet.
pending_rollouts() {
  local file names=()
  for file in "$work_dir"/*.waiting; do
    [[ -e $file && ! -e ${file%.waiting}.result ]] && names+=("$(<"${file%.waiting}.name")")
  done
  local IFS=' '
  printf '%s' "${names[*]}"
}

progress_start "the cilium DaemonSet to roll out, at most ${TIMEOUT_SECONDS}s"
if ! "${kubectl[@]}" -n kube-system rollout status daemonset/cilium --timeout="${TIMEOUT_SECONDS}s" >/dev/null; then
  log "the cilium DaemonSet did not finish rolling out within ${TIMEOUT_SECONDS}s; no workload restarted"
  exit 1
fi
progress_stop

listing=$("${kubectl[@]}" get deployments,daemonsets,statefulsets --all-namespaces -o \
  jsonpath='{range .items[*]}{.kind}{"|"}{.metadata.namespace}{"|"}{.metadata.name}{"|"}{.spec.strategy.type}{.spec.updateStrategy.type}{"|"}{.spec.paused}{"|"}{.spec.template.spec.hostNetwork}{"\n"}{end}')

declare -A skip_namespace=()
for namespace in $SKIP_NAMESPACES; do skip_namespace[$namespace]=1; done

# kube-system first, then the rest, each in listing order.
first=() rest=()
while IFS='|' read -r kind namespace name strategy paused host_network; do
  [[ -n $kind ]] || continue
  [[ $host_network == true || -n ${skip_namespace[$namespace]:-} ]] && continue
  entry="$kind|$namespace|$name|$strategy|$paused"
  if [[ $namespace == kube-system ]]; then first+=("$entry"); else rest+=("$entry"); fi
done <<<"$listing"

restarted=0 ready=0 not_ready=0 skipped=0 regressed=0
n=0
restart_phase() {
  local entry kind namespace name strategy paused ref id reason running=0 pid
  local -a ids=() pids=()
  rm -f "$work_dir"/*.waiting
  progress_start "rollouts, at most ${TIMEOUT_SECONDS}s each" pending_rollouts
  for entry in "$@"; do
    IFS='|' read -r kind namespace name strategy paused <<<"$entry"
    ref="${kind,,}/$name"
    reason=""
    [[ $strategy == OnDelete ]] && reason="update strategy OnDelete"
    [[ $paused == true ]] && reason="paused"
    if [[ -n $reason ]]; then
      log "warning: $namespace/$ref skipped ($reason): recreate its pods to move them to the new datapath"
      skipped=$((skipped + 1))
      continue
    fi
    n=$((n + 1))
    id=$n
    printf '%s/%s\n' "$namespace" "$ref" >"$work_dir/$id.name"
    if rolled_out "$namespace" "$ref"; then echo 1 >"$work_dir/$id.before"; else echo 0 >"$work_dir/$id.before"; fi
    if ! "${kubectl[@]}" -n "$namespace" rollout restart "$ref" >/dev/null 2>"$work_dir/$id.err"; then
      log "warning: could not restart $namespace/$ref: $(<"$work_dir/$id.err")"
      skipped=$((skipped + 1))
      continue
    fi
    restarted=$((restarted + 1))
    ids+=("$id")
    : >"$work_dir/$id.waiting"
    if ((running >= PARALLEL)); then
      wait -n || true
      running=$((running - 1))
    fi
    running=$((running + 1))
    (
      if "${kubectl[@]}" -n "$namespace" rollout status "$ref" --timeout="${TIMEOUT_SECONDS}s" >/dev/null 2>&1; then
        echo ok >"$work_dir/$id.result"
      else
        echo timeout >"$work_dir/$id.result"
      fi
    ) &
    pids+=("$!")
  done
  # The rollouts only: the progress ticker is a child too.
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  progress_stop
  for id in "${ids[@]}"; do
    if [[ $(<"$work_dir/$id.result") == ok ]]; then
      ready=$((ready + 1))
    else
      not_ready=$((not_ready + 1))
      if [[ $(<"$work_dir/$id.before") == 1 ]]; then
        regressed=$((regressed + 1))
        log "error: $(<"$work_dir/$id.name") was rolled out before the restart and is not after ${TIMEOUT_SECONDS}s"
      else
        log "warning: $(<"$work_dir/$id.name") was not ready before the restart and is not now"
      fi
    fi
  done
}

restart_phase "${first[@]}"
restart_phase "${rest[@]}"

printf 'restarted=%d ready=%d not_ready=%d skipped=%d\n' "$restarted" "$ready" "$not_ready" "$skipped"
if ((regressed)); then
  log "$regressed workload(s) did not come back on the new datapath; see above (kubectl describe, cilium status)"
  exit 1
fi
