"""A feature preflight left off on a node (its NIC cannot carry it) is not asserted on that node."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from components.verify import assert_command, skip_keys
from stacks import preflight
from stacks.checks import planned_checks
from stacks.config import parse
from stacks.features import resolve
from tests.lab import LAB

ROOT = Path(__file__).resolve().parents[2]
STATUS = (ROOT / "tests/verification/fixtures/agent_status_1.19_extreme.txt").read_text()


def agent_check(node: str = "agent-1"):  # type: ignore[no-untyped-def]
    cfg = parse(dict(LAB, tier="extreme"))
    return next(c for c in planned_checks(cfg, resolve(cfg)) if c.check == "agent-status" and c.node == node)


def test_skipped_features_become_skip_keys_of_the_agent_check() -> None:
    check = agent_check()
    facts = {"nic": "eth0", "driver": "virtio_net", "tso_max_size": "65536", "skipped": "bigTcp"}
    assert skip_keys(check, preflight.skipped_on_node(facts)) == ["bigTcp"]
    assert "--skip bigTcp" in assert_command(check, ["bigTcp"])
    assert "--skip" not in assert_command(check, [])
    assert "--skip" not in assert_command(check)


def test_the_assertion_holds_on_a_node_where_preflight_skipped_big_tcp_and_xdp() -> None:
    check = agent_check()
    status = STATUS.replace("IPv4 BIG TCP:               Enabled   [196608]", "IPv4 BIG TCP:               Disabled")
    status = status.replace("XDP Acceleration:        Native", "XDP Acceleration:        Disabled")
    expect = json.dumps({key: check.expect[key] for key in ("bigTcp", "xdp", "kubeProxyReplacement")})
    command = assert_command(check, ["bigTcp", "xdp"])
    skip = shlex.split(command)[shlex.split(command).index("--skip") + 1]
    run = subprocess.run([sys.executable, "-m", "verification", "agent-status", "--node", "agent-1", "--expect",
                          expect, "--skip", skip], input=status, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["skipped"] == ["bigTcp", "xdp"]
