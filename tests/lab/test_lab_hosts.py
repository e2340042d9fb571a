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

from lab.engine import diagnostics, first_error, resource_counts
from lab.hosts import paths
from lab.hosts.artifacts import NOT_K3S, Secrets, make_artifacts
from lab.hosts.pulumi_steps import HOST_FACTS, check_preview_after_partial_up, scan_for_secrets
from lab.hosts.scripts import CLEAN_CHECK, SNAPSHOT, chains_of, load_fixture, tuning_differences
from lab.report import Step, StepFailed
from tests.shell import lint, lint_file

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


# What `pulumi up` printed when the install was refused (the engine tests' partial up, shortened).
FAILED_UP = """\
 +  pulumi:pulumi:Stack k3s-cilium-lab **creating failed** 1 error; 1 warning; 1 message
Diagnostics:
  pulumi:pulumi:Stack (k3s-cilium-lab):
    command provider: lab implementation, lab/command-provider (not pulumi-command's provider)
    error: update failed

  command:remote:Command (k3s-airgap-stage-agent-1):
    error: Process exited with status 1: running "bash -s -- airgap-stage":
    airgap-stage: the staged k3s binary is not a K3s release; nothing was placed

Resources:
    + 8 created
    2 errored
"""


def test_diagnostics_are_read_per_resource() -> None:
    said = diagnostics(FAILED_UP)
    assert set(said) == {"k3s-cilium-lab", "k3s-airgap-stage-agent-1"}
    assert said["k3s-airgap-stage-agent-1"].splitlines() == [
        'error: Process exited with status 1: running "bash -s -- airgap-stage":',
        "airgap-stage: the staged k3s binary is not a K3s release; nothing was placed",
    ]
    assert resource_counts(FAILED_UP) == {"created": 8, "errored": 2}
    assert diagnostics("Resources:\n    3 unchanged\n") == {}


def test_after_a_partial_up_only_creates_of_what_is_missing_pass() -> None:
    created = {"urn:a::x": {}, "urn:a::pulumi:providers:command::default": {}}
    fine = {"steps": [{"urn": "urn:a::x", "op": "same"}, {"urn": "urn:a::y", "op": "create"}]}
    step = Step("p", "pulumi")
    check_preview_after_partial_up(step, fine, created)
    assert step.details["toCreate"] == ["y"]
    for changed in ({"urn": "urn:a::x", "op": "update"}, {"urn": "urn:a::y", "op": "replace"}):
        with pytest.raises(StepFailed):
            check_preview_after_partial_up(Step("p", "pulumi"), {"steps": [changed]}, created)


def test_secrets_are_found_in_any_file_under_the_scanned_places(tmp_path: Path) -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\naaaa\nbbbb-middle\ncccc\n-----END OPENSSH PRIVATE KEY-----\n"
    secrets = Secrets(private_key=key, key_passphrase="pass-123", token="tok-456")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "up.log").write_text("ran with tok-456")
    (tmp_path / "state.json").write_text('{"cipher": "v1:..."}')
    (tmp_path / "other.log").write_text("bbbb-middle")
    found = scan_for_secrets(secrets, [tmp_path / "logs", tmp_path / "state.json", tmp_path / "other.log"])
    assert found == [
        f"{tmp_path / 'logs' / 'up.log'}: k3sToken",
        f"{tmp_path / 'other.log'}: sshPrivateKey (a line of it)",
    ]


def test_the_lab_artifacts_are_a_valid_airgap_block_whose_binary_is_not_k3s(tmp_path: Path) -> None:
    from stacks.airgap import Airgap

    artifacts = make_artifacts(tmp_path)
    block = Airgap.model_validate(artifacts.airgap_config())
    assert block.k3s is not None and block.k3s.binary.path == str(tmp_path / "k3s")
    version = subprocess.run([str(tmp_path / "k3s"), "--version"], capture_output=True, text=True, check=True)
    assert "k3s version" not in version.stdout and "not K3s" in NOT_K3S
    assert make_artifacts(tmp_path / "again").images.sha256 == artifacts.images.sha256  # deterministic


def test_fixture_chains_are_what_the_cleanup_must_remove() -> None:
    ipv4 = load_fixture("ipv4")
    assert ("nat", "KUBE-SERVICES") in ipv4.chains
    assert ("filter", "KUBE-FIREWALL") in ipv4.kept_kube_chains
    assert not ipv4.chains & ipv4.kept_kube_chains
    assert chains_of("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\nCOMMIT\n") == {
        ("nat", "PREROUTING"),
        ("nat", "KUBE-SVC-X"),
    }


LAB_SHELL_SCRIPTS = [
    "lab/hosts/build-image.sh",
    "lab/run",
    "lab/toolchain.sh",
    "lab/go-modules.bash",
    "lab/datapath/build.sh",
    "lab/datapath/build-runtime.sh",
    "lab/cluster/node-init.sh",
    "lab/cluster/k3s-shim.sh",
]


@pytest.mark.parametrize("script", LAB_SHELL_SCRIPTS)
def test_lab_shell_scripts_pass_lint(script: str) -> None:
    lint_file(ROOT / script, sources=ROOT)


def test_snapshot_and_clean_check_pass_lint(tmp_path: Path) -> None:
    lint("#!/usr/bin/env bash\n" + SNAPSHOT, tmp_path, "snapshot.sh")
    lint("#!/usr/bin/env bash\n" + CLEAN_CHECK, tmp_path, "clean-check.sh")
    lint("#!/usr/bin/env bash\n" + HOST_FACTS, tmp_path, "host-facts.sh")


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
