"""The lab (lab/run): real Debian 12 hosts in QEMU, the program's scripts run on them over SSH.

The test marked ``lab`` runs the short form, ``lab/run up --short``: one host is
built (or taken from the cache) and booted, then preflight, host tuning and its
revert, and the kube-proxy cleanup on a host loaded with kube-proxy's rules run
for real, and the lab is torn down. It needs root, QEMU, vde2 and debootstrap
(apt-get install qemu-system-x86 qemu-utils vde2 debootstrap) and takes minutes,
so it runs only when selected: ``.venv/bin/python -m pytest -m lab``. When not
selected it is reported as skipped with that reason (``-ra``); when selected on a
machine that lacks what it needs it fails, naming what is missing.

This directory has no ``__init__.py`` on purpose: ``tests/lab.py`` (the shared
three-node config) already owns the module name ``tests.lab``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lab.hosts import paths
from lab.hosts.pulumi_steps import first_error, resource_counts
from lab.hosts.scripts import CLEAN_CHECK, SNAPSHOT, chains_of, load_fixture, tuning_differences
from tests.shell import lint

ROOT = Path(__file__).resolve().parents[2]
LAB_RUN = ROOT / "lab" / "run"
SHORT_FORM_TIMEOUT_SECONDS = 3600
NEEDED = ("qemu-system-x86_64", "qemu-img", "vde_switch", "debootstrap", "mkfs.ext4", "ssh", "ssh-keygen")


@pytest.fixture
def lab_selected(request: pytest.FixtureRequest) -> None:
    if not re.search(r"\blab\b", request.config.option.markexpr or "") or "not lab" in request.config.option.markexpr:
        pytest.skip("boots QEMU hosts (minutes): run with `-m lab`")
    missing = [tool for tool in NEEDED if not shutil.which(tool)]
    install = "apt-get install qemu-system-x86 qemu-utils vde2 debootstrap"
    assert not missing, f"the lab needs {', '.join(missing)} ({install})"
    assert os.geteuid() == 0, "the lab needs root (debootstrap builds the image)"


def run_lab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LAB_RUN), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def steps_by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in report["steps"]}


def our_processes(run_dir: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(run_dir) in cmdline and "pytest" not in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.mark.lab
def test_short_form_runs_the_scripts_on_a_real_host_and_cleans_up(lab_selected: None, tmp_path: Path) -> None:
    result = run_lab("up", "--short", "--out", str(tmp_path), timeout=SHORT_FORM_TIMEOUT_SECONDS)
    report = json.loads((tmp_path / "report.json").read_text())
    steps = steps_by_name(report)
    summary = {name: (step["status"], step["first_error"]) for name, step in steps.items()}
    assert result.returncode == 0, f"lab/run exited {result.returncode}: {summary}\n{result.stderr[-3000:]}"
    assert list(steps) == [
        "image",
        "boot",
        "stack-file",
        "ssh-host-key-pinning",
        "network",
        "preflight",
        "host-tuning",
        "host-tuning-revert",
        "kube-proxy-cleanup",
        "host-clean",
        "teardown",
    ]
    assert all(step["status"] == "passed" for step in steps.values()), summary
    assert report["ok"] is True
    assert report["lab"]["emulation"] in ("KVM", "TCG")
    (host,) = report["lab"]["hosts"]
    assert host["systemState"] in ("running", "degraded")

    assert steps["network"]["details"]["server-1"] == ["outside=blocked"]

    direct = "script run directly over SSH (not through pulumi)"
    for name in ("preflight", "host-tuning", "host-tuning-revert", "kube-proxy-cleanup"):
        assert steps[name]["kind"] == direct

    preflight = steps["preflight"]["details"]["hosts"]["server-1"]
    assert re.match(r"kernel=6\.1\.\S+ os=debian-12 arch=x86_64 k3s=absent\b", preflight["stdout"])

    tuning = steps["host-tuning"]["details"]["hosts"]["server-1"]
    assert re.fullmatch(r"tuned=applied governor=\S+ irqs=\d+ irqbalance=(stopped|not-running)", tuning["summary"])
    assert tuning["tuned"]["tuned"] == "network-latency"
    revert = steps["host-tuning-revert"]["details"]["hosts"]["server-1"]
    assert revert["summary"].startswith("tuned=restored ")
    assert revert["differencesFromBefore"] == {}
    assert revert["after"]["state_dir"] == "absent"

    cleanup = steps["kube-proxy-cleanup"]["details"]["hosts"]["server-1"]
    ipv4 = load_fixture("ipv4")
    assert f"backend=nft family=ipv4 chains_removed={len(ipv4.chains)} rules_removed={ipv4.rules}" in cleanup["stdout"]
    assert cleanup["kubeProxyChainsLeft"] == {}
    assert all(line.endswith("chains_removed=0 rules_removed=0") for line in cleanup["stdoutSecondRun"])

    assert steps["host-clean"]["details"]["hosts"]["server-1"]["leftovers"] == []
    run_dir = paths.run_dir()
    assert not run_dir.exists(), "the run directory must be gone after teardown"
    assert our_processes(run_dir) == []


@pytest.mark.lab
def test_status_and_down_without_a_lab(lab_selected: None) -> None:
    status = run_lab("status")
    assert (status.returncode, status.stdout.strip()) == (1, "no lab is up")
    down = run_lab("down")
    assert down.returncode == 0
    assert "no lab is up" in down.stderr


# --- the report's parsing, no VM needed -------------------------------------------------------


def test_resource_counts_read_pulumi_summaries() -> None:
    up = "Updating (lab):\n...\nResources:\n    + 12 created\n    ~ 1 updated\n    3 unchanged\n\nDuration: 1m2s\n"
    assert resource_counts(up) == {"created": 12, "updated": 1, "unchanged": 3}
    preview = "Previewing update (lab):\nResources:\n    + 20 to create\n    - 2 to delete\n    +-1 to replace\n"
    assert resource_counts(preview) == {"create": 20, "delete": 2, "replace": 1}
    assert resource_counts("error: no Pulumi.yaml project file found") is None


def test_first_error_is_the_first_error_line() -> None:
    text = "Previewing\n  pulumi:pulumi:Stack lab  \n    error: could not connect\nerror: update failed\n"
    assert first_error(text) == "error: could not connect"
    assert first_error("all fine") is None


def test_fixture_chains_are_what_the_cleanup_must_remove() -> None:
    ipv4 = load_fixture("ipv4")
    assert ("nat", "KUBE-SERVICES") in ipv4.chains
    assert ("filter", "KUBE-FIREWALL") in ipv4.kept_kube_chains
    assert not ipv4.chains & ipv4.kept_kube_chains
    assert chains_of("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\nCOMMIT\n") == {
        ("nat", "PREROUTING"),
        ("nat", "KUBE-SVC-X"),
    }


@pytest.mark.parametrize("script", ["lab/hosts/build-image.sh", "lab/run"])
def test_lab_shell_scripts_pass_lint(script: str, tmp_path: Path) -> None:
    lint((ROOT / script).read_text(), tmp_path, Path(script).name)


def test_snapshot_and_clean_check_pass_lint(tmp_path: Path) -> None:
    lint("#!/usr/bin/env bash\n" + SNAPSHOT, tmp_path, "snapshot.sh")
    lint("#!/usr/bin/env bash\n" + CLEAN_CHECK, tmp_path, "clean-check.sh")


def test_irq_affinities_count_only_while_irqbalance_is_off() -> None:
    before = {"tuned": "virtual-guest", "irqbalance": "active", "irq:enp0s1:32": "1"}
    moved = {"tuned": "virtual-guest", "irqbalance": "active", "irq:enp0s1:32": "0"}
    assert tuning_differences(before, moved) == {}
    assert tuning_differences({**before, "irqbalance": "inactive"}, {**moved, "irqbalance": "inactive"}) == {
        "irq:enp0s1:32": {"before": "1", "after": "0"}
    }
    assert tuning_differences(before, {**moved, "tuned": "network-latency"}) == {
        "tuned": {"before": "virtual-guest", "after": "network-latency"}
    }
