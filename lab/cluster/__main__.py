"""The namespace cluster (issue 22).

    python -m lab.cluster up [--nodes N] [--cilium TIER] [--out DIR] [--keep]
    python -m lab.cluster datapath [--out DIR] [--keep]
    python -m lab.cluster down

``up`` starts upstream Kubernetes (built by ``lab/datapath/build.sh``) on N nodes
(default 3: one server, the others agents), each a set of Linux namespaces on a
bridge in a namespace of its own (lab/cluster/cluster.py). It checks that the
control plane serves, every node registers and runs a host-network pod; with
``--cilium`` it installs the official Cilium chart with helm and the values this
program renders for the lab's stack (lab/cluster/stack.yaml) at TIER and runs the program's agent-status check on every
agent. ``datapath`` runs the program's Cilium half through the real engine on it,
tier after tier (lab/cluster/datapath.py). Each writes ``report.json`` into
``--out`` and removes everything it made unless ``--keep``; ``down`` removes what a
kept one left (when no other run is going on). Needs root and
Debian's containerd, runc and containernetworking-plugins.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .chart import (
    TIERS,
    agent_status_checks,
    chart_images,
    install_cilium,
    lab_values,
    program_plan,
    render_chart,
    stack_config,
    write_stack,
)
from .cluster import KUBERNETES_VERSION, Cluster, cache_root, down, missing_binaries, run_dir
from .datapath import run as run_datapath


def up(out: Path, node_count: int, keep: bool, tier: str | None) -> int:
    missing = missing_binaries()
    if missing:
        print(f"not built: {', '.join(missing)}; run lab/datapath/build.sh build", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    directory = run_dir()
    cluster = Cluster(node_count, directory)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "what": f"upstream Kubernetes {KUBERNETES_VERSION} built here from Go modules: control plane (etcd, "
        "kube-apiserver, kube-controller-manager, kube-scheduler) in server-1's network namespace; on every node "
        "Debian's containerd and our kubelet in the node's own network, mount, PID, UTS, IPC and cgroup namespaces. "
        "K3s did not run (it cannot be had here); standing in for it on every node: a `k3s` shim (kubectl, crictl, "
        "ctr handed to upstream tools) and a forward of 127.0.0.1:6444 to the API server. "
        + (
            f"Cilium: the official 1.19.6 chart installed with helm and the values this program renders for "
            f"lab/cluster/stack.yaml at tier {tier}, with the lab overlay in cilium.values (ciliumValues); its images "
            "(lab.local/cilium/*) are built here from Cilium's Go module, not the released images; no Envoy."
            if tier
            else "No CNI: nodes stay NotReady."
        ),
        "nodes": cluster.describe(),
        "steps": [],
        "ok": False,
    }

    def step(name: str, started: float, **details: Any) -> None:
        report["steps"].append({"name": name, "seconds": round(time.monotonic() - started, 1), **details})

    try:
        plan: dict[str, Any] = {}
        values: list[Path] = []
        names: list[str] = []
        if tier:
            nodes = [(m.name, m.address) for m in cluster.members]
            plan = program_plan(write_stack(directory / f"Pulumi.{tier}.yaml", stack_config(tier, nodes)))
            values = [directory / "program-values.json"]
            values[0].write_text(json.dumps(plan["ciliumValues"]))
            report["ciliumValues"] = {"tier": tier, "values": plan["ciliumValues"], "labOverlay": lab_values()}
            names = chart_images(render_chart(values))
        cluster.start(step, names)
        if values:
            install_cilium(cluster.plane, values, step)
            if not agent_status_checks(cluster.plane, plan["checks"], step):
                raise RuntimeError("the program's agent-status check failed on a real agent (step agent-status)")
        report["peakRssBytes"] = cluster.plane.peak_rss_bytes()
        report["ok"] = True
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError, KeyError, json.JSONDecodeError) as error:
        report["error"] = str(error)
    finally:
        if not keep:
            cluster.stop()
        cluster.keep_logs(out)
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
        report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.cluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the cluster, check it, remove it")
    start.add_argument("--nodes", type=int, default=3, help="nodes, the first a server (default 3)")
    start.add_argument(
        "--cilium",
        choices=TIERS,
        metavar="TIER",
        help="install Cilium 1.19.6's chart with the values this program renders for lab/cluster/stack.yaml at TIER",
    )
    sequence = commands.add_parser("datapath", help="the program through the real engine, tier after tier")
    for command in (start, sequence):
        command.add_argument("--out", type=Path, default=None, help="where report.json and the logs go")
        command.add_argument("--keep", action="store_true", help="leave the processes and namespaces running")
    commands.add_parser("down", help="remove what a --keep run left (no other lab run may be going on)")
    args = parser.parse_args()
    if args.command == "down":
        print("\n".join(down()) or "nothing to remove")
        return 0
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = args.out or cache_root() / "lab" / "reports" / f"{args.command}-{stamp}"
    if args.command == "datapath":
        return run_datapath(out, args.keep)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    return up(out, args.nodes, args.keep, args.cilium)


if __name__ == "__main__":
    sys.exit(main())
