# --- download (components/scripts/download.bash, inserted by render at "# @include download") ---
# download <url> <file>: to a file first, so that a failed download is reported
# as such instead of leaving a truncated file; curl or wget, as the K3s install
# script itself takes either (preflight checks that one is there). Needs log().
download() {
  local url=$1 out=$2
  if command -v curl >/dev/null 2>&1; then
    curl -sfL --retry 5 --retry-connrefused --retry-delay 2 -o "$out" "$url"
  elif command -v wget >/dev/null 2>&1; then
    wget -q --tries=5 --retry-connrefused --waitretry=2 -O "$out" "$url"
  else
    log "neither curl nor wget is installed"
    return 1
  fi
}
