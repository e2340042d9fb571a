"""HostTuning under the mock engine, and its scripts run for real against a fake sysfs/procfs tree.

The scripts take the roots of sysfs and procfs, the state directory and the
tuned-adm/systemctl commands as parameters; every run here points all of them
into ``tmp_path`` (fake tuned-adm and systemctl keep their state in files), so
nothing on this machine is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pulumi_command import local

from components import host_tuning
from components.scripts import render
from stacks.config import StackConfig
from stacks.features import resolve
from tests.lab import config, stand_in_cluster
from tests.mocks import ProgramMocks, Recorded, run_program
from tests.shell import lint

# --- the component under the mock engine ---------------------------------------------------------

NAME = "host-tuning"
COMPONENT_TYPE = "k3s-cilium:index:HostTuning"
SUMMARY = "tuned=applied governor=performance irqs=4 irqbalance=stopped"


def deploy(cfg: StackConfig, **extra: Any) -> Recorded:
    def program() -> dict[str, Any]:
        connections, _ = stand_in_cluster(cfg)
        preflight_passed = local.Command("k3s-preflight-passed")
        tuning = host_tuning.HostTuning(
            NAME,
            host_tuning.HostTuningArgs(
                cfg=cfg, features=resolve(cfg), connections=connections, after=preflight_passed, **extra
            ),
        )
        return {"summaries": tuning.summaries, "enabled": tuning.enabled}

    return run_program(program, ProgramMocks(command_stdout=((rf"^{NAME}-", SUMMARY + "\n"),)))


@pytest.mark.parametrize(
    "cfg",
    [config("baseline"), config("kpr"), config("performance"), config("extreme", hostTuning=False)],
    ids=["baseline", "kpr", "performance", "extreme-without-hostTuning"],
)
def test_no_tuning_unless_the_feature_is_on(cfg: StackConfig) -> None:
    rec = deploy(cfg)
    (component,) = rec.of_type(COMPONENT_TYPE)
    assert rec.children_of(component) == []
    assert rec.outputs == {"summaries": {}, "enabled": False}


@pytest.mark.parametrize("cfg", [config("extreme"), config("kpr", hostTuning=True)], ids=["extreme", "kpr+feature"])
def test_every_node_is_tuned_and_reverted_on_delete(cfg: StackConfig) -> None:
    rec = deploy(cfg)
    (component,) = rec.of_type(COMPONENT_TYPE)
    assert len(rec.children_of(component)) == len(cfg.nodes)
    for node in cfg.nodes:
        command = rec.named(f"{NAME}-{node.name}")
        assert command.parent == component.urn
        # After every preflight and nothing else (not the K3s installs): one dependency, however many nodes.
        assert command.dependencies == (rec.named("k3s-preflight-passed").urn,)
        assert command.inputs["connection"]["host"] == node.host
        apply = render("host-tuning", {"TUNED_PROFILE": "network-latency", "STATE_DIR": host_tuning.STATE_DIR})
        assert command.script("create") == apply
        # A profile change updates in place (the saved original state stays) instead of replacing.
        assert command.script("update") == apply
        assert command.script("delete") == render("host-tuning-revert", {"STATE_DIR": host_tuning.STATE_DIR})
        # A replacement must revert before it tunes again, never after.
        assert command.options["delete_before_replace"] is True
        # Only a move to another host replaces it: the trigger is the SSH address, nothing the tuning changes.
        assert command.inputs["triggers"] == [node.host, 22]
    assert rec.outputs == {"summaries": {node.name: SUMMARY for node in cfg.nodes}, "enabled": True}


def test_tuned_profile_is_a_parameter() -> None:
    cfg = config("extreme")
    rec = deploy(cfg, tuned_profile="network-throughput")
    node = cfg.nodes[0]
    assert rec.named(f"{NAME}-{node.name}").script() == render(
        "host-tuning", {"TUNED_PROFILE": "network-throughput", "STATE_DIR": host_tuning.STATE_DIR}
    )


# --- the scripts, for real, on a fake tree ------------------------------------------------------

FAKE_TUNED_ADM = r"""#!/usr/bin/env bash
printf 'tuned-adm %s\n' "$*" >>"$FAKE_DIR/calls"
state=$FAKE_DIR/tuned-profile
case $1 in
  active)
    profile=$(<"$state")
    if [[ $profile == none ]]; then echo "No current active profile."
    else echo "Current active profile: $profile"; fi ;;
  profile)
    case $2 in
      network-latency | network-throughput | virtual-guest | balanced) echo "$2" >"$state" ;;
      *) echo "Requested profile '$2' doesn't exist." >&2; exit 1 ;;
    esac ;;
  off) echo none >"$state" ;;
  *) exit 2 ;;
esac
"""

FAKE_SYSTEMCTL = r"""#!/usr/bin/env bash
printf 'systemctl %s\n' "$*" >>"$FAKE_DIR/calls"
state=$FAKE_DIR/irqbalance
case "$*" in
  "is-active --quiet irqbalance") [[ $(<"$state") == active ]] ;;
  "stop irqbalance")
    echo inactive >"$state"
    # The SSH session is cut (or `pulumi up` cancelled) right after this change.
    if [[ -e $FAKE_DIR/cut-after-stop ]]; then kill -TERM "$PPID"; fi
    ;;
  "start irqbalance")
    [[ -e $FAKE_DIR/irqbalance-broken ]] && { echo "Job for irqbalance.service failed." >&2; exit 1; }
    echo active >"$state" ;;
  *) exit 2 ;;
esac
"""

CPUS = 4
PCI_NIC_IRQS = (30, 31, 32, 33, 34)
VIRTIO_NIC_IRQS = (40, 41, 42)
LEGACY_NIC_IRQ = 11
OTHER_IRQS = (20, 50)  # a PCIe port's and a disk's: never touched
ALL_IRQS = (*PCI_NIC_IRQS, *VIRTIO_NIC_IRQS, LEGACY_NIC_IRQ, *OTHER_IRQS)


@dataclass
class Host:
    root: Path

    @property
    def sys(self) -> Path:
        return self.root / "sys"

    @property
    def proc(self) -> Path:
        return self.root / "proc"

    @property
    def state(self) -> Path:
        return self.root / "var/lib/k3s-cilium/host-tuning"

    @property
    def fake(self) -> Path:
        return self.root / "fake"

    def governor(self, cpu: int) -> Path:
        return self.sys / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"

    def affinity(self, irq: int) -> str:
        return (self.proc / f"irq/{irq}/smp_affinity_list").read_text().strip()

    def calls(self) -> list[str]:
        path = self.fake / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def snapshot(self) -> dict[str, str]:
        """Every regular file of the fake host (sysfs, procfs, tuned and irqbalance state)."""
        files: dict[str, str] = {}
        for base in (self.sys, self.proc):
            for dirpath, _, names in os.walk(base):
                for name in names:
                    path = Path(dirpath) / name
                    if not path.is_symlink():
                        files[str(path.relative_to(self.root))] = path.read_text()
        for name in ("tuned-profile", "irqbalance"):
            files[name] = (self.fake / name).read_text()
        return files

    def run(self, script: str, path: str | None = None, **params: Any) -> subprocess.CompletedProcess[str]:
        values: dict[str, Any] = {
            "SYSFS": str(self.sys),
            "PROCFS": str(self.proc),
            "STATE_DIR": str(self.state),
            "TUNED_ADM": str(self.fake / "tuned-adm"),
            "SYSTEMCTL": str(self.fake / "systemctl"),
            **params,
        }
        return subprocess.run(
            ["bash", "-c", render(script, values)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "FAKE_DIR": str(self.fake), "PATH": path or os.environ["PATH"]},
        )

    def apply(self, path: str | None = None, **params: Any) -> subprocess.CompletedProcess[str]:
        return self.run("host-tuning", path, **params)

    def revert(self, **params: Any) -> subprocess.CompletedProcess[str]:
        return self.run("host-tuning-revert", **params)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A 4-CPU host with a PCI NIC (MSI-X), a virtio NIC, a legacy-IRQ NIC, lo and a Cilium device."""
    h = Host(tmp_path)
    cpu = h.sys / "devices/system/cpu"
    write(cpu / "online", f"0-{CPUS - 1}\n")
    for n in range(CPUS):
        write(cpu / f"cpu{n}/cpufreq/scaling_governor", "powersave\n")
        write(cpu / f"cpu{n}/cpufreq/scaling_available_governors", "performance powersave\n")
    pci = h.sys / "devices/pci0000:00"
    for irq in PCI_NIC_IRQS:
        write(pci / f"0000:00:03.0/msi_irqs/{irq}", "msix\n")
    for irq in VIRTIO_NIC_IRQS:
        write(pci / f"0000:00:04.0/msi_irqs/{irq}", "msix\n")
    write(pci / "msi_irqs/20", "msi\n")
    (h.sys / "bus/virtio").mkdir(parents=True)
    (pci / "0000:00:04.0/virtio1").mkdir()
    (pci / "0000:00:04.0/virtio1/subsystem").symlink_to(h.sys / "bus/virtio")
    write(h.sys / "devices/isa/ne2k/irq", f"{LEGACY_NIC_IRQ}\n")
    net = h.sys / "class/net"
    for nic, device in (("eth0", pci / "0000:00:03.0"), ("eth1", pci / "0000:00:04.0/virtio1"),
                        ("eth2", h.sys / "devices/isa/ne2k")):
        (net / nic).mkdir(parents=True)
        (net / nic / "device").symlink_to(device)
    (net / "lo").mkdir()
    (net / "cilium_host").mkdir()
    for irq in ALL_IRQS:
        write(h.proc / f"irq/{irq}/smp_affinity_list", f"0-{CPUS - 1}\n")
    h.fake.mkdir()
    for name, text in (("tuned-adm", FAKE_TUNED_ADM), ("systemctl", FAKE_SYSTEMCTL)):
        (h.fake / name).write_text(text)
        (h.fake / name).chmod(0o755)
    write(h.fake / "tuned-profile", "virtual-guest\n")
    write(h.fake / "irqbalance", "active\n")
    return h


@pytest.mark.parametrize("script", ["host-tuning", "host-tuning-revert"])
def test_scripts_lint(script: str, tmp_path: Path) -> None:
    lint(render(script), tmp_path, f"{script}.sh")
    lint(render(script, {"STATE_DIR": "/var/lib/k3s-cilium/host-tuning", "SYSFS": "/sys"}), tmp_path, "p.sh")


def test_apply_tunes_and_saves_the_previous_state(host: Host) -> None:
    result = host.apply()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tuned=applied governor=performance irqs=9 irqbalance=stopped\n"
    assert result.stderr == ""
    assert (host.fake / "tuned-profile").read_text() == "network-latency\n"
    assert all(host.governor(n).read_text() == "performance\n" for n in range(CPUS))
    assert (host.fake / "irqbalance").read_text() == "inactive\n"
    # Round-robin over the CPUs, per NIC, in IRQ order.
    assert [host.affinity(irq) for irq in PCI_NIC_IRQS] == ["0", "1", "2", "3", "0"]
    assert [host.affinity(irq) for irq in VIRTIO_NIC_IRQS] == ["0", "1", "2"]
    assert host.affinity(LEGACY_NIC_IRQ) == "0"
    assert [host.affinity(irq) for irq in OTHER_IRQS] == ["0-3", "0-3"]
    # What was there before, saved.
    assert (host.state / "tuned").read_text() == "virtual-guest\n"
    assert (host.state / "irqbalance").read_text() == "active\n"
    assert (host.state / "governor/cpu2").read_text() == "powersave\n"
    saved_irqs = sorted(int(p.name) for p in (host.state / "irq").iterdir())
    assert saved_irqs == sorted((*PCI_NIC_IRQS, *VIRTIO_NIC_IRQS, LEGACY_NIC_IRQ))
    assert (host.state / "irq/31").read_text() == "0-3\n"


def test_apply_twice_is_the_same_as_once(host: Host) -> None:
    first = host.apply()
    tuned_once = host.snapshot()
    saved_once = {str(p): p.read_text() for p in host.state.rglob("*") if p.is_file()}
    calls_once = len(host.calls())
    second = host.apply()
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert host.snapshot() == tuned_once
    assert {str(p): p.read_text() for p in host.state.rglob("*") if p.is_file()} == saved_once
    assert not [c for c in host.calls()[calls_once:] if c.startswith(("tuned-adm profile", "systemctl stop"))]


def test_revert_restores_exactly_and_is_idempotent(host: Host) -> None:
    original = host.snapshot()
    assert host.apply().returncode == 0
    assert host.snapshot() != original
    result = host.revert()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tuned=restored governor=restored irqs=9 irqbalance=started\n"
    assert host.snapshot() == original
    assert not host.state.exists()
    again = host.revert()
    assert again.returncode == 0, again.stderr
    assert again.stdout == "tuned=skipped governor=skipped irqs=0 irqbalance=skipped\n"
    assert host.snapshot() == original


def test_a_profile_change_keeps_the_state_from_before_the_first_run(host: Host) -> None:
    original = host.snapshot()
    assert host.apply().returncode == 0
    assert host.apply(TUNED_PROFILE="network-throughput").returncode == 0
    assert (host.fake / "tuned-profile").read_text() == "network-throughput\n"
    assert (host.state / "tuned").read_text() == "virtual-guest\n"
    assert host.revert().returncode == 0
    assert host.snapshot() == original


def test_no_tuned_profile_before_means_tuned_off_after(host: Host) -> None:
    write(host.fake / "tuned-profile", "none\n")
    assert host.apply().returncode == 0
    assert (host.fake / "tuned-profile").read_text() == "network-latency\n"
    assert host.revert().returncode == 0
    assert (host.fake / "tuned-profile").read_text() == "none\n"
    assert "tuned-adm off" in host.calls()


def test_irqbalance_that_was_not_running_stays_stopped(host: Host) -> None:
    write(host.fake / "irqbalance", "inactive\n")
    assert host.apply().stdout.endswith("irqbalance=not-running\n")
    result = host.revert()
    assert result.stdout.endswith("irqbalance=left-stopped\n")
    assert (host.fake / "irqbalance").read_text() == "inactive\n"
    assert not [c for c in host.calls() if c.startswith("systemctl st")]


def test_what_the_host_lacks_is_skipped_with_a_warning(host: Host) -> None:
    for n in range(CPUS):
        for name in ("scaling_governor", "scaling_available_governors"):
            (host.governor(n).parent / name).unlink()
        host.governor(n).parent.rmdir()
    original = host.snapshot()
    missing = {"TUNED_ADM": str(host.root / "no/tuned-adm"), "SYSTEMCTL": str(host.root / "no/systemctl")}
    result = host.apply(**missing)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tuned=skipped governor=skipped irqs=9 irqbalance=skipped\n"
    assert "warning: tuned-adm not found" in result.stderr
    assert "warning: no cpufreq" in result.stderr
    assert "warning: systemctl not found" in result.stderr
    assert host.calls() == []
    reverted = host.revert(**missing)
    assert reverted.returncode == 0, reverted.stderr
    assert reverted.stdout == "tuned=skipped governor=skipped irqs=9 irqbalance=skipped\n"
    assert host.snapshot() == original


def test_a_host_without_nics_or_with_a_tuned_that_fails_is_skipped(host: Host) -> None:
    for nic in ("eth0", "eth1", "eth2"):
        (host.sys / f"class/net/{nic}/device").unlink()
    result = host.apply(TUNED_PROFILE="no-such-profile")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tuned=skipped governor=performance irqs=0 irqbalance=stopped\n"
    assert "no physical NIC" in result.stderr
    assert "'no-such-profile' doesn't exist" in result.stderr


def test_a_governor_the_driver_does_not_offer_is_skipped(host: Host) -> None:
    for n in range(CPUS):
        (host.governor(n).parent / "scaling_available_governors").write_text("schedutil powersave\n")
    result = host.apply()
    assert result.returncode == 0, result.stderr
    assert " governor=skipped " in result.stdout
    assert "governor 'performance' not offered" in result.stderr
    assert all(host.governor(n).read_text() == "powersave\n" for n in range(CPUS))


def test_revert_skips_an_irq_that_is_gone(host: Host) -> None:
    assert host.apply().returncode == 0
    (host.proc / "irq/34/smp_affinity_list").unlink()
    result = host.revert()
    assert result.returncode == 0, result.stderr
    assert "irqs=8 " in result.stdout
    assert "is gone" in result.stderr
    assert not host.state.exists()


def test_an_irq_that_is_gone_is_not_retried_after_another_failure(host: Host) -> None:
    assert host.apply().returncode == 0
    (host.proc / "irq/34/smp_affinity_list").unlink()
    (host.fake / "irqbalance-broken").touch()
    assert host.revert().returncode == 1
    assert sorted(str(p.relative_to(host.state)) for p in host.state.rglob("*") if p.is_file()) == ["irqbalance"]


def test_a_failed_restore_keeps_its_state_and_a_rerun_retries_it(host: Host) -> None:
    original = host.snapshot()
    assert host.apply().returncode == 0
    (host.fake / "irqbalance-broken").touch()
    failed = host.revert()
    assert failed.returncode == 1
    assert "error: '" in failed.stderr
    assert "/fake/systemctl start irqbalance' failed: Job for irqbalance.service failed." in failed.stderr
    assert sorted(p.name for p in host.state.iterdir() if p.is_file()) == ["irqbalance"]
    assert not list((host.state / "irq").iterdir())
    (host.fake / "irqbalance-broken").unlink()
    retried = host.revert()
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == "tuned=skipped governor=skipped irqs=0 irqbalance=started\n"
    assert host.snapshot() == original
    assert not host.state.exists()


# --- a failed first run leaves the host as it was (issue 20) ---------------------------------------
# pulumi-command keeps no failed create in its state: its revert (the delete) would never run.

STATE_PARENT = "var/lib/k3s-cilium"


def test_a_first_run_cut_short_after_some_changes_puts_the_host_back(host: Host) -> None:
    original = host.snapshot()
    (host.fake / "cut-after-stop").touch()
    result = host.apply()
    assert result.returncode == 143
    # The profile and the governors were changed and irqbalance stopped before the session was cut.
    assert [c for c in host.calls() if not c.startswith(("tuned-adm active", "systemctl is-active"))] == [
        "tuned-adm profile network-latency", "systemctl stop irqbalance",
        "systemctl start irqbalance", "tuned-adm profile virtual-guest"]
    assert result.stderr.splitlines()[-1] == (
        "host-tuning: the host was not tuned before this run: it was put back as it was "
        "(tuned=restored governor=restored irqs=0 irqbalance=started)")
    assert host.snapshot() == original
    assert not (host.root / STATE_PARENT).exists()


def test_a_first_run_that_cannot_save_an_irq_puts_back_what_it_changed(host: Host) -> None:
    original = host.snapshot()
    # mkdir cannot make the IRQs' state directory (a full disk): by then the profile, the governors
    # and irqbalance were changed.
    stub_dir = host.root / "stubs"
    stub_dir.mkdir()
    real = shutil.which("mkdir")
    (stub_dir / "mkdir").write_text(
        f'#!/bin/sh\ncase "$*" in */irq) echo "mkdir: No space left on device" >&2; exit 1 ;; esac\n'
        f'exec {real} "$@"\n')
    (stub_dir / "mkdir").chmod(0o755)
    result = host.apply(path=f"{stub_dir}:{os.environ['PATH']}")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert (f"host-tuning: error: could not save the state before tuning to {host.state}/irq/30: "
            "it is left as it is") in lines
    assert lines[-1].startswith("host-tuning: the host was not tuned before this run: it was put back as it was")
    # No IRQ was changed without its saved state, and everything else is back.
    assert host.snapshot() == original
    assert not (host.root / STATE_PARENT).exists()


def test_a_later_run_that_fails_leaves_the_saved_state_for_the_revert(host: Host) -> None:
    original = host.snapshot()
    assert host.apply().returncode == 0
    saved = {str(p): p.read_text() for p in host.state.rglob("*") if p.is_file()}
    write(host.fake / "irqbalance", "active\n")  # started again by hand since
    (host.fake / "cut-after-stop").touch()
    assert host.apply(TUNED_PROFILE="network-throughput").returncode == 143
    assert {str(p): p.read_text() for p in host.state.rglob("*") if p.is_file()} == saved
    (host.fake / "cut-after-stop").unlink()
    assert host.revert().returncode == 0
    assert host.snapshot() == original


def test_a_first_run_that_cannot_put_everything_back_keeps_the_state_of_what_failed(host: Host) -> None:
    (host.fake / "cut-after-stop").touch()
    (host.fake / "irqbalance-broken").touch()
    result = host.apply()
    assert result.returncode == 143
    assert "host-tuning: error: '" in result.stderr and "start irqbalance' failed" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "host-tuning: the host was not tuned before this run, and not all of it could be put back; "
        f"the saved state of what failed stays in {host.state} for the revert")
    assert sorted(p.name for p in host.state.iterdir() if p.is_file()) == ["irqbalance"]
