#!/usr/bin/env bash
# An etcd snapshot on the first server before K3s moves to another release,
# named after both releases; the upgrade of any node waits for it. Prints
#   snapshot=<path> name=<name> from=<running> to=<target>
# or, when there is nothing to save,
#   snapshot=none reason=first-install|unchanged|sqlite
# A single server keeps its state in SQLite, which `k3s etcd-snapshot` cannot
# save: then it says so (README "Upgrades": copy the database with K3s stopped).
#
# Parameters:
#   TARGET_VERSION   the release the stack moves to (k3s.version)
#   K3S_DATA_DIR     /var/lib/rancher/k3s
#   K3S              the k3s command
set -euo pipefail
# @params

: "${K3S:=k3s}"
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
PATH="$PATH:/usr/local/bin"
read -ra k3s <<<"$K3S"

if ! command -v "${k3s[0]}" >/dev/null; then
  echo "snapshot=none reason=first-install"
  exit 0
fi
running=$("${k3s[@]}" --version | awk 'NR == 1 { print $3 }')
if [[ $running == "$TARGET_VERSION" ]]; then
  echo "snapshot=none reason=unchanged"
  exit 0
fi
if [[ ! -d $K3S_DATA_DIR/server/db/etcd ]]; then
  echo "snapshot=none reason=sqlite from=$running to=$TARGET_VERSION"
  exit 0
fi
name="k3s-cilium-${running//+/-}-to-${TARGET_VERSION//+/-}"
snapshots=$K3S_DATA_DIR/server/db/snapshots
if ! output=$("${k3s[@]}" etcd-snapshot save --name "$name" 2>&1); then
  printf 'k3s-snapshot: k3s etcd-snapshot save --name %s failed; no node was upgraded:\n%s\n' "$name" "$output" >&2
  exit 1
fi
# K3s appends the node name and a timestamp to the name.
path=$(find "$snapshots" -maxdepth 1 -type f -name "$name-*" -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 |
  cut -d' ' -f2-)
if [[ -z $path ]]; then
  printf 'k3s-snapshot: K3s said it saved %s, but no such file is in %s:\n%s\n' "$name" "$snapshots" "$output" >&2
  exit 1
fi
printf 'snapshot=%s name=%s from=%s to=%s\n' "$path" "$name" "$running" "$TARGET_VERSION"
