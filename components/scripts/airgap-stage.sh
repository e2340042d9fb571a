#!/usr/bin/env bash
# Put the air-gap artifacts of one node in place, each verified by sha256
# BEFORE anything is placed: the K3s binary and install script into
# AIRGAP_DIR (k3s-install.sh installs from there), image archives into K3s'
# agent/images directory. An artifact comes from the upload directory (copied
# there by Pulumi over SSH) or from an internal mirror URL (curl or wget).
#
# Every artifact is copied or downloaded into a scratch directory and checked
# there; the K3s binary must also say it is the release the stack pins. Only
# then are the destinations created and the files moved in. A failure before
# that leaves the host as it was; a failure while placing puts back what this
# run replaced or created (pulumi-command keeps no failed create in its state,
# so no delete would ever remove it).
#
# Idempotent: an artifact whose destination already holds the expected digest
# is neither fetched nor touched; a second run changes nothing. Image archives
# this script placed earlier and the stack no longer lists are removed.
# A digest mismatch stops the node before anything is placed, naming the
# file, the expected and the found digest.
#
# Prints one summary line, e.g. "airgap: placed=2 unchanged=1 removed=0".
#
# Parameters:
#   ARTIFACTS        one line per artifact:
#                    "<name> <sha256> <file|url> <upload path|url> <destination> <mode>"
#   BINARY_NAME      the name of the K3s binary's line (empty: not staged)
#   K3S_VERSION      the release the stack pins (k3s.version), e.g. v1.33.3+k3s1
#   AIRGAP_DIR       root-owned directory of the staged binary and install script
#   IMAGES_MANIFEST  where the names of the placed image archives are kept
#   IMAGES_DIR       K3s' image import directory (/var/lib/rancher/k3s/agent/images)
set -euo pipefail
# @params

# How long `k3s --version` may take: a file that is no K3s binary may hang.
readonly VERSION_TIMEOUT=30s

log() {
  printf 'airgap-stage: %s\n' "$*" >&2
}

fail() {
  log "$*"
  exit 1
}

sha256_of() {
  sha256sum "$1" | awk '{ print $1 }'
}

# @include download

# --- what this run changed, to be put back if it fails ------------------------------------------

scratch=""
# Directories made for the scratch directory, and those made while placing
# (outermost first).
scratch_dirs=()
new_dirs=()
# "<destination>": placed where nothing was; "<destination> kept": replaced,
# its previous file kept as a hard link beside it until the end.
placed_files=()

put_back() {
  local index entry dest dir
  for ((index = ${#placed_files[@]} - 1; index >= 0; index--)); do
    entry=${placed_files[index]}
    dest=${entry% kept}
    if [[ $entry == *" kept" ]]; then
      # mv refuses two names of one file: the one that failed to be replaced.
      if [[ "${dest}.airgap-old" -ef $dest ]]; then
        rm -f -- "${dest}.airgap-old"
      else
        mv -f -- "${dest}.airgap-old" "$dest"
      fi
    else
      rm -f -- "$dest"
    fi
    rm -f -- "${dest}.airgap-new"
  done
  for ((index = ${#new_dirs[@]} - 1; index >= 0; index--)); do
    dir=${new_dirs[index]}
    [[ -d $dir ]] && rmdir -- "$dir" 2>/dev/null
  done
  if ((${#placed_files[@]} + ${#new_dirs[@]})); then
    log "put back what this run had placed: the artifacts are as they were before it"
  fi
}

on_exit() {
  local status=$?
  set +e
  ((status == 0)) || put_back
  [[ -n $scratch ]] && rm -rf -- "$scratch"
  local index
  for ((index = ${#scratch_dirs[@]} - 1; index >= 0; index--)); do
    rmdir -- "${scratch_dirs[index]}" 2>/dev/null
  done
  exit "$status"
}
trap on_exit EXIT
# A cut SSH session or a cancelled `pulumi up` is a failure too.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Before dest is replaced: keep its previous file (a hard link, no copy of a
# large archive) to put back, or note that there was none.
keep_previous() {
  local dest=$1
  if [[ -e $dest ]]; then
    ln -f -- "$dest" "${dest}.airgap-old" 2>/dev/null || cp -pf -- "$dest" "${dest}.airgap-old"
    placed_files+=("${dest} kept")
  else
    placed_files+=("$dest")
  fi
}

# The directories that `mkdir -p DIR` would create, outermost first.
missing_dirs() {
  local dir=$1
  while [[ ! -e $dir ]]; do
    printf '%s\n' "$dir"
    dir=$(dirname "$dir")
  done | tac
}

# mkdir -p, remembering the directories it creates.
make_dirs() {
  local -a missing
  mapfile -t missing < <(missing_dirs "$1")
  new_dirs+=("${missing[@]}")
  mkdir -p -- "$1"
}

# The scratch directory: on disk beside the staging directory (image archives
# can be large for /tmp, often a tmpfs), removed when the script ends.
make_scratch() {
  local base
  base=$(dirname "$AIRGAP_DIR")
  mapfile -t scratch_dirs < <(missing_dirs "$base")
  mkdir -p -- "$base"
  scratch=$(mktemp -d "${base}/.airgap-stage.XXXXXX")
}

# The version word of `k3s --version` ("k3s version v1.33.3+k3s1 (abc1234)"),
# or a refusal naming what the file is instead.
check_binary_version() {
  local binary=$1 first found
  first=$(timeout "$VERSION_TIMEOUT" "$binary" --version </dev/null 2>/dev/null | head -n 1 | tr -cd '[:print:]') || true
  first=${first:0:200}
  if [[ $first =~ ^k3s\ version\ (v[^[:space:]]+) ]]; then
    found=${BASH_REMATCH[1]}
    [[ $found == "$K3S_VERSION" ]] && return 0
    fail "the staged k3s binary is ${found}, but the stack pins k3s.version ${K3S_VERSION}; nothing was placed"
  fi
  fail "the staged k3s binary is not a K3s release: ${first:-no version output}, but the stack pins" \
    "k3s.version ${K3S_VERSION}; nothing was placed"
}

main() {
  local name sha kind source dest mode found staged index=0 placed=0 unchanged=0 removed=0 binary=""
  local -a pending=()
  umask 022
  make_scratch

  # Pass 1: fetch what is missing or different into the scratch directory,
  # and verify everything. Nothing outside the scratch directory changes.
  while read -r name sha kind source dest mode; do
    [[ -n $name ]] || continue
    if [[ -f $dest ]] && [[ $(sha256_of "$dest") == "$sha" ]]; then
      unchanged=$((unchanged + 1))
      [[ $name == "$BINARY_NAME" ]] && binary=$dest
      continue
    fi
    index=$((index + 1))
    staged="${scratch}/${index}"
    case $kind in
      file)
        [[ -f $source ]] || fail "${name}: the upload ${source} is missing; run pulumi up again (or --replace its upload)"
        cp -f -- "$source" "$staged"
        ;;
      url)
        download "$source" "$staged" || fail "${name}: could not download ${source}"
        ;;
      *) fail "${name}: unknown source kind '${kind}'" ;;
    esac
    found=$(sha256_of "$staged")
    if [[ $found != "$sha" ]]; then
      fail "sha256 mismatch for ${name} (${source}): expected ${sha}, found ${found}; nothing was placed"
    fi
    chmod "$mode" "$staged"
    [[ $name == "$BINARY_NAME" ]] && binary=$staged
    pending+=("${staged} ${dest} ${mode}")
  done <<<"$ARTIFACTS"

  # A binary of another release would be installed under the pinned version's
  # name (k3s-install.sh then reinstalls it on every run); an unchanged one is
  # checked too, since k3s.version may have moved without it.
  if [[ -n $BINARY_NAME ]]; then
    [[ -n $binary ]] || fail "no artifact is named ${BINARY_NAME}, the K3s binary; nothing was placed"
    check_binary_version "$binary"
  fi

  # Pass 2: everything verified; place it. A file replaced is kept as a hard
  # link beside it until every artifact is in place.
  make_dirs "$AIRGAP_DIR"
  chmod 0755 "$AIRGAP_DIR"
  make_dirs "$IMAGES_DIR"
  local entry
  for entry in "${pending[@]}"; do
    read -r staged dest mode <<<"$entry"
    make_dirs "$(dirname "$dest")"
    keep_previous "$dest"
    # Renamed within the destination's directory, so that K3s never sees half a file.
    mv -f -- "$staged" "${dest}.airgap-new"
    mv -f -- "${dest}.airgap-new" "$dest"
    log "placed ${dest}"
    placed=$((placed + 1))
  done

  # Image archives placed earlier (the manifest lists them) that the stack dropped.
  local wanted listed
  local -a dropped=()
  wanted=$(while read -r name _ _ _ dest _; do
    [[ $dest == "${IMAGES_DIR}/"* ]] && printf '%s\n' "$name"
  done <<<"$ARTIFACTS" | sort)
  if [[ -f $IMAGES_MANIFEST ]]; then
    while read -r listed; do
      [[ -n $listed ]] || continue
      if ! grep -qxF -- "$listed" <<<"$wanted" && [[ -f "${IMAGES_DIR}/${listed}" ]]; then
        dropped+=("$listed")
      fi
    done <"$IMAGES_MANIFEST"
  fi
  if [[ ! -f $IMAGES_MANIFEST ]] || [[ $(cat "$IMAGES_MANIFEST") != "$wanted" ]]; then
    keep_previous "$IMAGES_MANIFEST"
    printf '%s\n' "$wanted" >"${IMAGES_MANIFEST}.airgap-new"
    mv -f -- "${IMAGES_MANIFEST}.airgap-new" "$IMAGES_MANIFEST"
  fi

  # Everything is in place: the previous files go, and nothing is put back from here on.
  for entry in "${placed_files[@]}"; do
    if [[ $entry == *" kept" ]]; then
      rm -f -- "${entry% kept}.airgap-old"
    fi
  done
  placed_files=()
  new_dirs=()
  for listed in "${dropped[@]}"; do
    rm -f -- "${IMAGES_DIR:?}/${listed}"
    log "removed ${IMAGES_DIR}/${listed}"
    removed=$((removed + 1))
  done

  printf 'airgap: placed=%d unchanged=%d removed=%d\n' "$placed" "$unchanged" "$removed"
}

main
