#!/usr/bin/env bash
# Where Pulumi runs, after the etcd snapshot taken before a K3s version change
# (k3s.upgrade.snapshotTo): copy the snapshot from the first server into
# DEST_DIR over SSH, with the stack's key and its pinned host keys, and check
# the copy's sha256 against the server's. A server that is not reachable the
# way the stack reaches it, or a copy that differs, fails the step, naming why;
# the upgrade does not go on without its copy.
#
# stdin (after this script): the key's passphrase on one line (empty: none),
# then the private key. They go into an ssh-agent of this run's own (through
# files only this user can read, removed once the key is in the agent; the
# agent stops on exit); no secret is ever an argument; ssh never prompts.
# Prints
#   copy=done path=<local file> sha256=<hex> bytes=<n>
#   copy=skipped reason=<why the snapshot step saved nothing>
#
# Parameters:
#   SNAPSHOT, SKIP_REASON   the server's snapshot path, or empty and why
#   DEST_DIR                local directory (created 0700 when missing)
#   HOST, PORT, REMOTE_USER, HOST_KEY      the first server; HOST_KEY pinned or empty
#   BASTION_HOST, BASTION_PORT, BASTION_USER, BASTION_HOST_KEY   the jump host, or empty
#   CONNECT_TIMEOUT_SECONDS
set -euo pipefail
# @params

: "${HOST_KEY:=}"
: "${BASTION_HOST:=}"
: "${BASTION_HOST_KEY:=}"
: "${BASTION_PORT:=22}"
: "${BASTION_USER:=root}"
: "${PORT:=22}"
: "${CONNECT_TIMEOUT_SECONDS:=20}"

fail() {
  printf 'snapshot-fetch: %s\n' "$*" >&2
  exit 1
}

if [[ -z $SNAPSHOT ]]; then
  echo "copy=skipped reason=${SKIP_REASON:-none}"
  exit 0
fi

work=$(mktemp -d)
chmod 700 "$work"
# The key goes into an agent of this run's own: its passphrase reaches ssh-add through an askpass program
# reading a file, never an argument another user could see in the process list.
(
  umask 077
  IFS= read -r passphrase || true
  printf '%s\n' "$passphrase" >"$work/passphrase"
  cat >"$work/key"
  # Answers once: ssh-add asks again after a wrong passphrase, and an askpass that fails ends that.
  printf '#!/bin/sh\ncat %q && rm -f %q\n' "$work/passphrase" "$work/passphrase" >"$work/askpass"
)
chmod 700 "$work/askpass"
eval "$(ssh-agent -s -a "$work/agent.sock")" >/dev/null
trap 'ssh-agent -k >/dev/null 2>&1; rm -rf "$work"' EXIT
SSH_ASKPASS="$work/askpass" SSH_ASKPASS_REQUIRE=force DISPLAY="${DISPLAY:-none}" ssh-add -q "$work/key" \
  </dev/null >/dev/null 2>&1 || fail "the private key does not open with sshPrivateKeyPassword"
rm -f "$work/key"
# ssh offers exactly this key, from the agent.
ssh-add -L >"$work/key.pub"

# Pinned keys are checked; without a pin ssh accepts the server's key (the program warns about unpinned hosts).
known_host_options() {
  local address=$1 ssh_port=$2 pinned=$3 file=$4
  if [[ -n $pinned ]]; then
    printf '[%s]:%s %s\n' "$address" "$ssh_port" "$pinned" >"$file"
    printf '%s\n' -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$file"
  else
    printf '%s\n' -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  fi
}

common=(-i "$work/key.pub" -o BatchMode=yes -o IdentitiesOnly=yes -o "ConnectTimeout=$CONNECT_TIMEOUT_SECONDS" -o LogLevel=ERROR)
mapfile -t node_known < <(known_host_options "$HOST" "$PORT" "$HOST_KEY" "$work/known_hosts")
proxy=()
if [[ -n $BASTION_HOST ]]; then
  mapfile -t bastion_known < <(known_host_options "$BASTION_HOST" "$BASTION_PORT" "$BASTION_HOST_KEY" \
    "$work/bastion_known_hosts")
  jump=(ssh "${common[@]}" "${bastion_known[@]}" -p "$BASTION_PORT" -W '%h:%p' "$BASTION_USER@$BASTION_HOST")
  proxy=(-o "ProxyCommand=$(printf '%q ' "${jump[@]}")")
fi
# A non-root user reads the snapshot through passwordless sudo, like every other command of the program.
read_as=()
[[ $REMOTE_USER == root ]] || read_as=(sudo -n)
remote() {
  local command
  command=$(printf '%q ' "${read_as[@]}" "$@")
  ssh "${common[@]}" "${node_known[@]}" "${proxy[@]}" -p "$PORT" "$REMOTE_USER@$HOST" "${command% }"
}

mkdir -p "$DEST_DIR"
chmod 700 "$DEST_DIR"
target="$DEST_DIR/$(basename "$SNAPSHOT")"
remote_sum=$(remote sha256sum "$SNAPSHOT" 2>"$work/err") ||
  fail "cannot read $SNAPSHOT on $HOST: $(tail -n 2 "$work/err")"
remote cat "$SNAPSHOT" >"$work/snapshot" 2>"$work/err" ||
  fail "cannot copy $SNAPSHOT from $HOST: $(tail -n 2 "$work/err")"
local_sum=$(sha256sum "$work/snapshot" | awk '{ print $1 }')
[[ $local_sum == "${remote_sum%% *}" ]] ||
  fail "the copy of $SNAPSHOT has sha256 $local_sum, the server's is ${remote_sum%% *}"
mv "$work/snapshot" "$target"
chmod 600 "$target"
echo "copy=done path=$target sha256=$local_sum bytes=$(stat -c %s "$target")"
