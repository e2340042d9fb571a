"""k3s-node-deregister.sh is bounded and skips when the API is gone, so destroying an HA cluster completes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from components import scripts
from tests.shell import lint

# A k3s stub: the API's state is a file in the sandbox (up, gone, hang, forbidden).
STUB = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "{calls}"
state=$(cat "{state}")
case "$state" in
  gone) echo "The connection to the server 127.0.0.1:6443 was refused" >&2; exit 1 ;;
  hang) sleep 300 ;;
  forbidden)
    case "$*" in *readyz*) echo ok ;; *) echo "Error from server (Forbidden): nodes is forbidden" >&2; exit 1 ;; esac ;;
  quorum-lost-mid-run)
    case "$*" in
      *readyz*) if [ -e "{state}.probed" ]; then echo "etcdserver: request timed out" >&2; exit 1; fi
                touch "{state}.probed"; echo ok ;;
      *) echo "etcdserver: request timed out" >&2; exit 1 ;;
    esac ;;
  *) echo ok ;;
esac
"""


def setup(tmp_path: Path, state: str, timeout: int = 20) -> tuple[str, Path]:
    calls, state_file = tmp_path / "calls.log", tmp_path / "state"
    state_file.write_text(state)
    stub = tmp_path / "k3s"
    stub.write_text(STUB.format(calls=calls, state=state_file))
    stub.chmod(0o755)
    params = {"NODE_NAME": "server-3", "K3S_BIN": str(stub), "REQUEST_TIMEOUT_SECONDS": timeout}
    return scripts.render("k3s-node-deregister", params), calls


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)


def test_removes_node_and_secret_when_the_api_answers(tmp_path: Path) -> None:
    script, calls = setup(tmp_path, "up")
    lint(script, tmp_path, "k3s-node-deregister.sh")
    for _ in range(2):  # idempotent
        result = run(script)
        assert result.returncode == 0, result.stderr
    assert "removed node server-3 and its node-password secret" in result.stdout
    lines = calls.read_text().splitlines()
    assert "kubectl --request-timeout=20s delete node server-3 --ignore-not-found --wait=true --timeout=20s" in lines
    assert ("kubectl --request-timeout=20s --namespace kube-system delete secret server-3.node-password.k3s "
            "--ignore-not-found") in lines


def test_skips_with_a_message_when_the_api_is_gone(tmp_path: Path) -> None:
    script, calls = setup(tmp_path, "gone")
    result = run(script)
    assert result.returncode == 0, result.stderr
    assert "does not answer within 20s" in result.stdout and "skipping deregistration of node server-3" in result.stdout
    assert not any("delete" in line for line in calls.read_text().splitlines())


def test_a_hanging_api_is_cut_off_in_bounded_time(tmp_path: Path) -> None:
    script, _ = setup(tmp_path, "hang", timeout=2)
    started = time.monotonic()
    result = run(script)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "skipping deregistration" in result.stdout
    assert elapsed < 10, elapsed


def test_quorum_lost_during_the_delete_also_skips(tmp_path: Path) -> None:
    script, _ = setup(tmp_path, "quorum-lost-mid-run")
    result = run(script)
    assert result.returncode == 0, result.stderr
    assert "skipping deregistration of node server-3" in result.stdout


def test_a_delete_refused_by_a_live_api_still_fails(tmp_path: Path) -> None:
    script, _ = setup(tmp_path, "forbidden")
    result = run(script)
    assert result.returncode == 1
    assert "could not remove node server-3: Error from server (Forbidden)" in result.stderr
