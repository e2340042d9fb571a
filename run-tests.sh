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
  # The lab (tests/lab, lab/run) boots Debian hosts built with debootstrap under QEMU on a vde switch.
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  command -v qemu-img >/dev/null || missing+=(qemu-utils)
  command -v vde_switch >/dev/null || missing+=(vde2)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  # The lab's command provider is tested against real sshd servers it starts on 127.0.0.1.
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "run-tests.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No service starts on install (openssh-server would listen on port 22): the tests start their own.
  local policy=/usr/sbin/policy-rc.d placed=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && placed=1; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$placed" = 1 ]; then rm -f "$policy"; fi
}

install_python_packages() {
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
}

# The Pulumi CLI, our lab Python language host and command provider, the Kubernetes provider for
# the engine tests (tests/engine), actionlint for tests/test_workflows.py and helm for the real
# chart renders, built from their Go modules into ${K3S_CILIUM_CACHE:-~/.cache/k3s-cilium}/toolchain;
# a second run builds nothing (needs Go 1.26).
install_toolchain() {
  lab/toolchain.sh build tests
}

# Our own Go programs: formatted, vetted, and the lab's command provider tested against real sshd servers.
go_checks() {
  local unformatted
  unformatted=$(gofmt -l lab/command-provider lab/langhost lab/datapath/testserver)
  if [ -n "$unformatted" ]; then
    echo "run-tests.sh: not gofmt-formatted: $unformatted" >&2
    return 1
  fi
  (cd lab/langhost && GOFLAGS=-mod=readonly go vet ./...)
  (cd lab/datapath/testserver && GOFLAGS=-mod=readonly go vet ./...)
  (cd lab/command-provider && GOFLAGS=-mod=readonly go vet ./... && GOFLAGS=-mod=readonly go test -count=1 ./...)
}

install_system_tools
install_python_packages
install_toolchain
.venv/bin/ruff check .
.venv/bin/mypy .
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
go_checks
# Everything but the lab, then the lab's short form (one QEMU host; README "Lab").
.venv/bin/python -m pytest -m "not lab"
.venv/bin/python -m pytest -m lab tests/lab
