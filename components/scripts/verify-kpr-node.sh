#!/usr/bin/env bash
# Print what kube-proxy replacement rests on here, for `python3 -m
# verification kpr-integrity`, read from what runs on this node rather than
# from the stack's config. One part after another, each under a marker line:
#   ### ss                  `ss -ltnp`: the listening TCP sockets and the
#                           processes holding them (kube-proxy's health port
#                           10256 and metrics port 10249, K3s' API load balancer)
#   ### k3s unit=<unit> pid=<pid> started=<Unix time>
#                           K3s' main process, the MainPID of the k3s or
#                           k3s-agent unit (`### k3s unit=none`: neither runs)
#   ### cmdline             its /proc/<pid>/cmdline, one argument a line (a
#                           running K3s retitles itself "/usr/local/bin/k3s
#                           server" and shows no flags there)
#   ### execstart           its unit's ExecStart, one argument a line
#   ### config path=<file> source=default|flag|environment
#                           the config file K3s reads: K3S_CONFIG_FILE in the
#                           unit's environment, else --config/-c, else CONFIG_PATH
#   ### file path=<file> mtime=<Unix time>
#                           every config file that exists, in the order K3s
#                           reads them (the file, then <file>.d/*.yaml and
#                           *.yml by name), each with its disable-kube-proxy lines
#   ### api-server          one probe line (the format of verify-probes.sh):
#                           does the API server Cilium's agent uses answer here
# Only argv[0], the subcommand and the arguments and config lines about
# disable-kube-proxy and the config file leave the node (any other argument
# reads <hidden>): the rest may hold secrets (a token, a datastore password),
# and this output is kept in the Pulumi state. Runs as root: ss names the
# processes of sockets only for root. Fails only when ss cannot list sockets.
#
# Parameters:
#   NODE_NAME        the node (named in messages)
#   CONFIG_PATH      K3s' default config file (/etc/rancher/k3s/config.yaml)
#   API_URL          the API server's URL from k8sServiceHost/k8sServicePort, e.g.
#                    https://127.0.0.1:6444/version (any HTTP answer counts); empty: no probe
#   API_TARGET       its host:port, as the probe line names it
#   ATTEMPTS, RETRY_DELAY_SECONDS, CONNECT_TIMEOUT_SECONDS, MAX_TIME_SECONDS
#   PROC_DIR         where the proc file system is (/proc)
set -euo pipefail
# @params

: "${API_URL:=}"
: "${API_TARGET:=}"
: "${ATTEMPTS:=5}"
: "${RETRY_DELAY_SECONDS:=2}"
: "${CONNECT_TIMEOUT_SECONDS:=2}"
: "${MAX_TIME_SECONDS:=5}"
: "${PROC_DIR:=/proc}"
readonly UNITS=(k3s k3s-agent)
readonly CONFIG_LINE="^[\"']?disable-kube-proxy[+]?[\"']?[[:space:]]*:([[:space:]]|$)"
# Drop-ins in byte order, as K3s (Go's os.ReadDir) reads them.
export LC_ALL=C
# K3s installs itself in /usr/local/bin and ss lives in /usr/sbin, which a user's PATH may lack.
PATH="$PATH:/usr/local/bin:/usr/sbin:/sbin"
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

fail() {
  printf 'verify-kpr-node: node %s: %s\n' "$NODE_NAME" "$*" >&2
  exit 1
}

# @include http-probe

# The arguments one a line: argv[0], the subcommand and those about kube-proxy
# and the config file as they are, any other one <hidden>.
show_args() {
  local arg keep_next=0
  (($# > 0)) || return 0
  printf '%s\n' "$1"
  shift
  for arg in "$@"; do
    if ((keep_next)); then
      printf '%s\n' "$arg"
      keep_next=0
      continue
    fi
    case $arg in
      server | agent | --disable-kube-proxy | --disable-kube-proxy=* | -disable-kube-proxy | -disable-kube-proxy=* | \
        --config=* | -c=*)
        printf '%s\n' "$arg"
        ;;
      --config | -c)
        printf '%s\n' "$arg"
        keep_next=1
        ;;
      *) printf '<hidden>\n' ;;
    esac
  done
}

# The config file named by the first --config/-c argument, as K3s finds it.
config_from_args() {
  local arg next=0
  for arg in "$@"; do
    if ((next)); then
      printf '%s' "$arg"
      return 0
    fi
    case $arg in
      --config | -c) next=1 ;;
      --config=* | -c=*)
        printf '%s' "${arg#*=}"
        return 0
        ;;
    esac
  done
}

# A variable of the unit's environment: Environment=, overridden by its EnvironmentFile= files.
unit_env() {
  local unit=$1 name=$2 value="" word file line quote
  local -a words=()
  read -ra words <<<"$(systemctl show -p Environment --value "$unit" 2>/dev/null || true)"
  for word in "${words[@]}"; do
    if [[ $word == "$name="* ]]; then value=${word#"$name="}; fi
  done
  while read -r file _; do
    file=${file#-}
    [[ -n $file && -r $file ]] || continue
    if line=$(grep -E "^[[:space:]]*(export[[:space:]]+)?${name}=" "$file" | tail -n 1) && [[ -n $line ]]; then
      value=${line#*=}
    fi
  done < <(systemctl show -p EnvironmentFiles --value "$unit" 2>/dev/null || true)
  for quote in '"' "'"; do
    if [[ ${#value} -ge 2 && $value == "$quote"*"$quote" ]]; then value=${value:1:${#value}-2}; fi
  done
  printf '%s' "$value"
}

# When the process started, in Unix time: boot time plus field 22 of /proc/<pid>/stat (clock ticks).
started_at() {
  local stat btime ticks
  local -a fields=()
  stat=$(<"$PROC_DIR/$1/stat") || return 0
  read -ra fields <<<"${stat##*) }"
  btime=$(awk '$1 == "btime" { print $2 }' "$PROC_DIR/stat") || return 0
  ticks=$(getconf CLK_TCK) || return 0
  if [[ ${fields[19]:-} =~ ^[0-9]+$ && $btime =~ ^[0-9]+$ && $ticks =~ ^[0-9]+$ ]]; then
    printf '%s' "$((btime + fields[19] / ticks))"
  fi
}

probe_api() {
  if ! command -v curl >/dev/null 2>&1; then
    printf 'probe=api-server target=%s result=fail code=000 attempts=0 detail=%s\n' \
      "$(field "$API_TARGET")" "$(field "curl is not installed")"
    return 0
  fi
  # Any HTTP status (401 without credentials) is an answer; TLS is not verified: only reachability counts.
  probe_http api-server "$API_TARGET" "$API_URL" '[1-5]??' -k
}

command -v ss >/dev/null 2>&1 || fail "ss (iproute2) is not installed"
printf '### ss\n'
ss -ltnp 2>"$work_dir/stderr" || fail "ss -ltnp failed: $(<"$work_dir/stderr")"

unit=none
pid=0
for candidate in "${UNITS[@]}"; do
  main_pid=$(systemctl show -p MainPID --value "$candidate" 2>/dev/null) || main_pid=0
  if [[ $main_pid =~ ^[0-9]+$ ]] && ((main_pid > 0)) && [[ -r $PROC_DIR/$main_pid/cmdline ]]; then
    unit=$candidate
    pid=$main_pid
    break
  fi
done

config=$CONFIG_PATH
source=default
if [[ $unit == none ]]; then
  printf '### k3s unit=none\n'
else
  printf '### k3s unit=%s pid=%s started=%s\n' "$unit" "$pid" "$(started_at "$pid")"
  printf '### cmdline\n'
  cmdline=()
  mapfile -d '' -t cmdline <"$PROC_DIR/$pid/cmdline" || true
  show_args "${cmdline[@]}"
  execstart=$(systemctl show -p ExecStart --value "$unit" 2>/dev/null | head -n 1) || execstart=""
  argv=""
  if [[ $execstart == *"argv[]="* ]]; then
    argv=${execstart#*"argv[]="}
    argv=${argv%% ;*}
  fi
  exec_args=()
  read -ra exec_args <<<"$argv"
  printf '### execstart\n'
  show_args "${exec_args[@]}"
  from_flag=$(config_from_args "${exec_args[@]}")
  if [[ -n $from_flag ]]; then
    config=$from_flag
    source=flag
  fi
  from_env=$(unit_env "$unit" K3S_CONFIG_FILE)
  if [[ -n $from_env ]]; then
    config=$from_env
    source=environment
  fi
fi

printf '### config path=%s source=%s\n' "$(field "$config")" "$source"
files=()
if [[ -f $config ]]; then files+=("$config"); fi
shopt -s nullglob
for file in "$config.d"/*; do
  lower=${file,,}
  if [[ -f $file && ($lower == *.yaml || $lower == *.yml) ]]; then files+=("$file"); fi
done
shopt -u nullglob
for file in "${files[@]}"; do
  printf '### file path=%s mtime=%s\n' "$(field "$file")" "$(stat -L -c %Y -- "$file")"
  grep -E -- "$CONFIG_LINE" "$file" || true
done

if [[ -n $API_URL ]]; then
  printf '### api-server\n'
  probe_api
fi
