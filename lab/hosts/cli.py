"""``lab/run up | down | status``: boot the lab's hosts, drive the program against them, report.

``up`` builds (or reuses) the image, boots the hosts in parallel, waits for SSH
with each host's pinned key, writes the lab stack file, runs the steps and tears
the lab down again (``--keep`` leaves it running for ``status``/``down``). It
writes a JSON report and exits 0 when every step ran and passed, 1 when a step
failed, 3 when nothing failed but some steps could not run (the report says why).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ..report import FAILED, KIND_DIRECT, KIND_LAB, NOT_RUN, PASSED, Report, StepFailed
from . import paths, vms
from .artifacts import Artifacts, make_artifacts, make_secrets

K3S_VERSION = "v1.33.3+k3s1"
CILIUM_VERSION = "1.19.6"


def _progress(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def _interrupted(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def build_image(report: Report) -> Path:
    with report.step("image", KIND_LAB) as step:
        cached = any(p.name.startswith("image-") and (p / "stamp").exists() for p in _current_image_dirs())
        result = subprocess.run([str(paths.BUILD_SCRIPT), "image"], capture_output=True, text=True)
        step.exit_status = result.returncode
        if result.returncode:
            raise StepFailed(f"build-image.sh failed: {result.stderr.strip()[-2000:]}")
        image = Path(result.stdout.strip().splitlines()[-1])
        disk = (image / "disk.raw").stat()
        stamp = dict(line.split("=", 1) for line in (image / "stamp").read_text().splitlines() if "=" in line)
        step.details = {
            "dir": str(image),
            "cached": cached,
            "buildSeconds": int(stamp.get("seconds", "0")),
            "kernel": stamp.get("kernel"),
            "diskApparentBytes": disk.st_size,
            "diskAllocatedBytes": disk.st_blocks * 512,
        }
        report.lab["image"] = step.details
        return image
    raise AssertionError("unreachable")  # pragma: no cover - report.step re-raises


def _current_image_dirs() -> list[Path]:
    digest = subprocess.run(["sha256sum", str(paths.BUILD_SCRIPT)], capture_output=True, text=True).stdout[:16]
    return [paths.cache_dir() / f"image-{digest}"]


def stack_document(state: vms.LabState, artifacts: Artifacts) -> dict[str, Any]:
    nodes = [
        {
            "name": host.name,
            "host": "127.0.0.1",
            "port": host.ssh_port,
            "role": host.role,
            "hostKey": host.host_key,
            "nodeIp": host.l2_address,
        }
        for host in state.hosts
    ]
    return {
        "config": {
            "k3s-cilium:tier": "kpr",
            # Host tuning is off in kpr; the lab turns it on so that `up` tunes and `destroy` reverts for real.
            "k3s-cilium:features": {"hostTuning": True},
            "k3s-cilium:nodes": nodes,
            "k3s-cilium:ssh": {"user": "root"},
            "k3s-cilium:k3s": {"version": K3S_VERSION, "clusterCidr": "10.42.0.0/16", "serviceCidr": "10.43.0.0/16"},
            "k3s-cilium:cilium": {"version": CILIUM_VERSION, "nativeRoutingCidr": "10.42.0.0/16"},
            # No K3s here: the artifacts are the lab's own, and its "k3s" is not K3s (lab/hosts/artifacts.py).
            "k3s-cilium:airgap": artifacts.airgap_config(),
        }
    }


def write_stack_file(state: vms.LabState, report: Report, out: Path) -> None:
    import yaml

    with report.step("stack-file", KIND_LAB) as step:
        header = (
            "# The lab stack, written by lab/run: every host is a QEMU VM on this machine, reached through\n"
            "# its SSH forward on 127.0.0.1 with its host key pinned; nodeIp is its address on the lab's\n"
            "# private L2 segment. Air-gapped, from artifacts the lab made: its k3s binary is not K3s.\n"
            "# The SSH key (encrypted), its passphrase and the token are secrets, never in this file.\n"
        )
        artifacts = make_artifacts(out.parent / "airgap")
        out.write_text(header + yaml.safe_dump(stack_document(state, artifacts), sort_keys=False))
        from stacks.stackfile import load

        load(out)  # the program's own validation
        step.details["path"] = str(out)


def check_pinning(state: vms.LabState, report: Report) -> None:
    """SSH must refuse a host whose key is not the pinned one, and accept the pinned one."""
    with report.step("ssh-host-key-pinning", KIND_LAB) as step:
        host = state.hosts[0]
        wrong = Path(state.run_dir) / "known_hosts.wrong"
        scratch = Path(state.run_dir) / "wrong_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(scratch)], check=True)
        other = " ".join((scratch.with_suffix(".pub")).read_text().split()[:2])
        wrong.write_text(f"[127.0.0.1]:{host.ssh_port} {other}\n")
        refused = subprocess.run(
            [*vms.ssh_base(state, host, known_hosts=wrong), "true"], capture_output=True, text=True, timeout=60
        )
        accepted = vms.ssh_run(state, host, "cat /etc/ssh/ssh_host_ed25519_key.pub", timeout=60)
        served = " ".join(accepted.stdout.split()[:2])
        step.details = {
            "wrongKeyExit": refused.returncode,
            "wrongKeyError": refused.stderr.strip().splitlines()[-1:] if refused.stderr else [],
            "pinnedKeyExit": accepted.returncode,
            "servedKeyMatchesPin": served == host.host_key,
        }
        step.exit_status = accepted.returncode
        if refused.returncode == 0 or "Host key verification failed" not in refused.stderr:
            raise StepFailed(f"ssh accepted {host.name} with a key that is not pinned: {refused.stderr.strip()}")
        if accepted.returncode or served != host.host_key:
            raise StepFailed(f"pinned key refused or not the one served: {accepted.stderr.strip()}")


def check_network(state: vms.LabState, report: Report) -> None:
    """Hosts reach each other on the private segment; nothing reaches out through QEMU's user network."""
    with report.step("network", KIND_LAB) as step:
        problems = []
        for host in state.hosts:
            peers = [other.l2_address for other in state.hosts if other is not host]
            # restrict=on: even QEMU's gateway (this machine's 127.0.0.1, here the host's own SSH forward)
            # must be unreachable from the guest.
            probe = "; ".join(
                [
                    f"timeout 10 bash -c '</dev/tcp/{peer}/22' && echo peer-{peer}=ok || echo peer-{peer}=fail"
                    for peer in peers
                ]
                + [
                    f"timeout 10 bash -c '</dev/tcp/10.0.2.2/{host.ssh_port}' 2>/dev/null"
                    " && echo outside=reachable || echo outside=blocked"
                ]
            )
            result = vms.ssh_run(state, host, probe, timeout=120)
            facts = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
            step.details[host.name] = result.stdout.split()
            problems += [
                f"{host.name}: {key} {value}" for key, value in facts.items() if value in ("fail", "reachable")
            ]
        step.exit_status = 1 if problems else 0
        if problems:
            raise StepFailed("; ".join(problems))


def lab_facts(state: vms.LabState) -> dict[str, Any]:
    return {
        "emulation": state.emulation.upper(),
        "emulationNote": state.emulation_note,
        "l2Segment": (
            f"vde_switch (unix socket {state.switch_dir}) between the VMs' NIC2, {vms.L2_NETWORK}.0/{vms.L2_PREFIX}"
        ),
        "hostNetwork": "QEMU user-mode, restrict=on, forwards on 127.0.0.1 only",
        "hosts": [
            {
                "name": h.name,
                "role": h.role,
                "sshPort": h.ssh_port,
                "apiPort": h.api_port,
                "l2Address": h.l2_address,
                "hostKey": h.host_key,
                "emulation": h.emulation.upper(),
                "bootSeconds": h.boot_seconds,
                "systemState": h.system_state,
            }
            for h in state.hosts
        ],
    }


def existing_lab() -> vms.LabState | None:
    state = vms.LabState.load(paths.run_dir())
    if state is None:
        return None
    if any(alive for _, _, alive in vms.running(state)):
        return state
    vms.teardown(state)  # stale: nothing of it runs any more
    return None


def cmd_up(args: argparse.Namespace) -> int:
    if existing_lab():
        _progress("a lab is already up (lab/run status); take it down first with lab/run down")
        return 2
    if args.ha:
        servers, agents = 3, 2
    elif args.short:
        servers, agents = 1, 0
    else:
        servers, agents = args.servers, args.agents
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out or paths.cache_dir() / "reports" / stamp)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir / "report.json")
    report.lab["form"] = "short" if args.short else ("ha" if args.ha else "default")
    report.lab["command"] = " ".join(["lab/run", *sys.argv[1:]])
    run_dir = paths.run_dir()
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    state: vms.LabState | None = None
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    try:
        image = build_image(report)
        state = vms.LabState(run_dir=str(run_dir), image_dir=str(image))
        state.hosts = vms.plan_hosts(run_dir, servers, agents)
        state.save()
        with report.step("boot", KIND_LAB) as step:
            start = time.monotonic()
            try:
                vms.boot(state, args.accel, paths.BUILD_SCRIPT, _progress)
            finally:
                report.lab.update(lab_facts(state))
            step.details["secondsUntilAllAnswer"] = round(time.monotonic() - start, 1)
            step.exit_status = 0
        stack_file = out_dir / "Pulumi.lab.yaml"
        write_stack_file(state, report, stack_file)
        check_pinning(state, report)
        check_network(state, report)
        run_steps(state, report, stack_file, out_dir, pulumi=not args.short)
    except KeyboardInterrupt as stop:
        report.stop_reason = report.stop_reason or f"interrupted ({stop})"
        _progress(f"interrupted ({stop}); cleaning up")
    except Exception as problem:
        failed = next((s for s in reversed(report.steps) if s.status == FAILED), None)
        report.stopped_at = report.stopped_at or (failed.name if failed else None)
        report.stop_reason = report.stop_reason or f"{type(problem).__name__}: {problem}"
        _progress(f"stopped: {report.stop_reason}")
    finally:
        if state is not None and not args.keep:
            with report.step("teardown", KIND_LAB) as step:
                problems = vms.teardown(state)
                step.details["problems"] = problems
                if problems:
                    raise StepFailed("; ".join(problems))
        elif state is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        report.finished = datetime.now(UTC).isoformat(timespec="seconds")
        statuses = {s.status for s in report.steps}
        report.ok = FAILED not in statuses and NOT_RUN not in statuses and report.stop_reason is None
        report.write()
    _progress(f"report: {report.path}")
    for s in report.steps:
        line = f"  {s.name:28} {s.status:8} {s.seconds if s.seconds is not None else '-':>7}s  {s.kind}"
        print(line + (f"\n      {s.first_error or s.reason}" if s.status != PASSED else ""), file=sys.stderr)
    if FAILED in {s.status for s in report.steps} or (report.stop_reason and not report.stopped_at):
        return 1
    return 0 if report.ok else 3


def run_steps(state: vms.LabState, report: Report, stack_file: Path, out_dir: Path, pulumi: bool) -> None:
    from . import scripts

    program = scripts.Program.load(stack_file)
    before: dict[str, dict[str, str]] = {}
    with report.step("preflight", KIND_DIRECT) as step:
        scripts.run_preflight(state, program, step)
    with report.step("host-tuning", KIND_DIRECT) as step:
        scripts.run_host_tuning(state, program, step, before)
    with report.step("host-tuning-revert", KIND_DIRECT) as step:
        scripts.run_host_tuning_revert(state, program, step, before)
    with report.step("kube-proxy-cleanup", KIND_DIRECT) as step:
        scripts.run_kube_proxy_cleanup(state, program, step)
    if pulumi:
        from .pulumi_steps import run_pulumi_steps

        logs = out_dir / "pulumi"
        logs.mkdir(exist_ok=True)
        secrets = make_secrets(paths.lab_key(), Path(state.run_dir))
        run_pulumi_steps(state, report, stack_file, logs, program, secrets)
    with report.step("host-clean", KIND_DIRECT) as step:
        scripts.run_host_clean(state, step, before)


def cmd_down(_args: argparse.Namespace) -> int:
    state = vms.LabState.load(paths.run_dir())
    if state is None:
        _progress("no lab is up")
        return 0
    problems = vms.teardown(state)
    for problem in problems:
        _progress(problem)
    _progress("down" if not problems else "not everything stopped")
    return 1 if problems else 0


def cmd_status(_args: argparse.Namespace) -> int:
    state = vms.LabState.load(paths.run_dir())
    if state is None:
        print("no lab is up")
        return 1
    print(f"run dir {state.run_dir} ({state.emulation.upper() or 'not booted'})")
    for name, pid, alive in vms.running(state):
        print(f"  {name:10} pid {pid} {'running' if alive else 'gone'}")
    for host in state.hosts:
        ssh = " ".join(vms.ssh_base(state, host))
        print(f"  {host.name}: {host.l2_address} ssh: {ssh}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab/run", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build, boot, run the steps, report, tear down")
    up.add_argument("--servers", type=int, default=1)
    up.add_argument("--agents", type=int, default=2)
    up.add_argument("--ha", action="store_true", help="3 servers + 2 agents")
    up.add_argument(
        "--short",
        action="store_true",
        help="1 host, the scripts run directly over SSH only (no Pulumi): the form the tests run",
    )
    up.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=os.environ.get("LAB_ACCEL", "auto"))
    up.add_argument("--keep", action="store_true", help="leave the hosts running (lab/run down stops them)")
    up.add_argument("--out", help="directory for report.json, the stack file and logs")
    sub.add_parser("down", help="stop the running lab's VMs and switch, remove its run directory")
    sub.add_parser("status", help="what of the lab is running")
    args = parser.parse_args(argv)
    handlers = {"up": cmd_up, "down": cmd_down, "status": cmd_status}
    return handlers[args.command](args)
