#!/usr/bin/env bash
# Put the air-gap artifacts of one node in place, each verified by sha256
# BEFORE anything is placed: the K3s binary and install script into
# AIRGAP_DIR (k3s-install.sh installs from there), image archives into K3s'
# agent/images directory. An artifact comes from the upload directory (copied
# there by Pulumi over SSH) or from an internal mirror URL (curl or wget).
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
#   AIRGAP_DIR       root-owned directory of the staged binary and install script
#   IMAGES_MANIFEST  where the names of the placed image archives are kept
#   IMAGES_DIR       K3s' image import directory (/var/lib/rancher/k3s/agent/images)
set -euo pipefail
# @params

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

main() {
  local name sha kind source dest mode found staged placed=0 unchanged=0 removed=0
  local -a pending=()
  umask 022
  mkdir -p "$AIRGAP_DIR" "$IMAGES_DIR"
  chmod 0755 "$AIRGAP_DIR"

  # Pass 1: fetch what is missing or different, and verify everything.
  while read -r name sha kind source dest mode; do
    [[ -n $name ]] || continue
    if [[ -f $dest ]] && [[ $(sha256_of "$dest") == "$sha" ]]; then
      unchanged=$((unchanged + 1))
      continue
    fi
    # Staged beside the destination, so that the final move is atomic.
    mkdir -p "$(dirname "$dest")"
    staged="${dest}.airgap-new"
    case $kind in
      file)
        [[ -f $source ]] || fail "${name}: the upload ${source} is missing; run pulumi up again (or --replace its upload)"
        cp -f "$source" "$staged"
        ;;
      url)
        download "$source" "$staged" || fail "${name}: could not download ${source}"
        ;;
      *) fail "${name}: unknown source kind '${kind}'" ;;
    esac
    found=$(sha256_of "$staged")
    if [[ $found != "$sha" ]]; then
      rm -f "$staged"
      fail "sha256 mismatch for ${name} (${source}): expected ${sha}, found ${found}; nothing was placed"
    fi
    pending+=("${staged} ${dest} ${mode}")
  done <<<"$ARTIFACTS"

  # Pass 2: everything verified; place it.
  local entry
  for entry in "${pending[@]}"; do
    read -r staged dest mode <<<"$entry"
    chmod "$mode" "$staged"
    mv -f "$staged" "$dest"
    log "placed ${dest}"
    placed=$((placed + 1))
  done

  # Image archives placed earlier that the stack dropped.
  local wanted listed
  wanted=$(while read -r name _ _ _ dest _; do
    [[ $dest == "${IMAGES_DIR}/"* ]] && printf '%s\n' "$name"
  done <<<"$ARTIFACTS" | sort)
  if [[ -f $IMAGES_MANIFEST ]]; then
    while read -r listed; do
      [[ -n $listed ]] || continue
      if ! grep -qxF -- "$listed" <<<"$wanted" && [[ -f "${IMAGES_DIR}/${listed}" ]]; then
        rm -f "${IMAGES_DIR:?}/${listed}"
        log "removed ${IMAGES_DIR}/${listed}"
        removed=$((removed + 1))
      fi
    done <"$IMAGES_MANIFEST"
  fi
  if [[ ! -f $IMAGES_MANIFEST ]] || [[ $(cat "$IMAGES_MANIFEST") != "$wanted" ]]; then
    printf '%s\n' "$wanted" >"${IMAGES_MANIFEST}.new"
    mv -f "${IMAGES_MANIFEST}.new" "$IMAGES_MANIFEST"
  fi

  printf 'airgap: placed=%d unchanged=%d removed=%d\n' "$placed" "$unchanged" "$removed"
}

main
