"""The real engine by node count: `pulumi preview` of the program, and what `up` spends on its state.

    lab/toolchain.sh build tests
    .venv/bin/python -m tests.bench_preview            # 3, 50, 100 and 200 nodes
    .venv/bin/python -m tests.bench_preview 400        # other sizes

Not a test (no timing assertions). What runs: the real CLI and engine (lab/toolchain.sh), our
language host (lab/langhost), the real Kubernetes provider and the lab's command provider
(lab/command-provider; pulumi-command's own is not served here), with a file backend.

1. `pulumi preview` of a new stack of the program (the `dev` stack with more agents), wall time
   and the CLI's peak RSS, as the engine runs by default and with PULUMI_SKIP_CHECKPOINTS=true
   (by default it serializes the whole snapshot again after every step, even in a preview).
2. `pulumi up` bookkeeping: no host can run the program's commands here, so a stand-in program
   registers as many resources as the preview planned, each with the program's average inputs
   (the bytes of the planned inputs, one secret of an SSH key's size among them), and creates
   them with nothing to run: what remains is the engine's own work, mostly writing its state.
   Timed with and without PULUMI_SKIP_CHECKPOINTS (unsafe for `up`: an `up` killed halfway then
   leaves no record of what already ran); the difference is the cost of the checkpoints.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.bench_program import stack
from tests.engine.conftest import ROOT, Project, engine_environment, new_project

REPEATS = 3
STACK = "bench"
# What a resource of the program carries as a secret: an SSH private key, encrypted in the state.
SECRET_BYTES = 420


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    output: str


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """Wall time and the peak RSS of the process itself (VmHWM, read until it exits)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        status = Path(f"/proc/{process.pid}/status")
        peak_kb = 0
        while process.poll() is None:
            try:
                found = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)
                peak_kb = max(peak_kb, int(found[1])) if found else peak_kb
            except OSError:
                pass
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        out.seek(0)
        output = out.read()
    if process.returncode != 0:
        sys.exit(f"`{' '.join(argv)}` failed ({process.returncode}):\n{output[-4000:]}")
    return Run(seconds, peak_kb / 1024, output)


def bench_project(nodes: int, work: Path, env: dict[str, str]) -> Project:
    """A copy of the project with stack ``bench``: the dev stack with ``nodes`` nodes."""
    project = new_project(env, work)
    (project.dir / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump({"config": stack(nodes)}))
    project.run(f"pulumi stack init {STACK} --secrets-provider passphrase")
    project.run(f"pulumi config set --stack {STACK} --secret sshPrivateKey < {project.key}")
    return project


def preview(project: Project, skip_checkpoints: bool, *args: str) -> Run:
    env = {**project.env, "PULUMI_SKIP_CHECKPOINTS": "true"} if skip_checkpoints else project.env
    return timed(["pulumi", "preview", "--stack", STACK, "--non-interactive", *args], project.dir, env)


def planned_inputs(project: Project) -> tuple[int, int]:
    """How many resources the program plans, and the bytes of their inputs in all."""
    planned = json.loads(preview(project, True, "--json").output)
    steps = planned.get("steps") or []
    return len(steps), sum(len(json.dumps((step.get("newState") or {}).get("inputs") or {})) for step in steps)


STAND_IN_PROGRAM = '''"""Bench stand-in: BENCH_RESOURCES resources of BENCH_BYTES input bytes each, nothing to run."""
import os

import pulumi
from pulumi_command import local

size = int(os.environ["BENCH_BYTES"])
key = pulumi.Output.secret("k" * {secret})
for index in range(int(os.environ["BENCH_RESOURCES"])):
    local.Command(f"resource-{{index}}", stdin="x" * max(0, size - {secret}), environment={{"KEY": key}})
'''


def up_bookkeeping(resources: int, input_bytes: int, work: Path, env: dict[str, str]) -> dict[bool, Run]:
    """`pulumi up` of the stand-in program on a new stack, without and with PULUMI_SKIP_CHECKPOINTS."""
    runs = {}
    for skip in (False, True):
        project = work / f"up-{'skip' if skip else 'default'}"
        project.mkdir()
        (project / "Pulumi.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "k3s-cilium-bench-up",
                    "runtime": {"name": "python", "options": {"toolchain": "pip", "virtualenv": str(ROOT / ".venv")}},
                }
            )
        )
        (project / "__main__.py").write_text(STAND_IN_PROGRAM.format(secret=SECRET_BYTES))
        (project / "state").mkdir()
        run_env = {
            **env,
            "PULUMI_BACKEND_URL": f"file://{project / 'state'}",
            "BENCH_RESOURCES": str(resources),
            "BENCH_BYTES": str(input_bytes // max(resources, 1)),
            **({"PULUMI_SKIP_CHECKPOINTS": "true"} if skip else {}),
        }
        subprocess.run(["pulumi", "stack", "init", STACK], cwd=project, env=run_env, check=True, capture_output=True)
        runs[skip] = timed(["pulumi", "up", "--yes", "--skip-preview", "--stack", STACK], project, run_env)
    return runs


def main(sizes: list[int]) -> None:
    env = engine_environment()
    previews, ups = [], []
    for nodes in sizes:
        with tempfile.TemporaryDirectory(prefix="k3s-cilium-bench-") as work:
            project = bench_project(nodes, Path(work), env)
            resources, input_bytes = planned_inputs(project)
            for skip in (False, True):
                runs = [preview(project, skip) for _ in range(REPEATS)]
                times = [run.seconds for run in runs]
                previews.append(
                    f"| {nodes} | {resources} | {'true' if skip else 'unset'} | {statistics.median(times):.2f} | "
                    f"{', '.join(f'{t:.2f}' for t in times)} | {max(run.peak_rss_mb for run in runs):.0f} |"
                )
                print(previews[-1], flush=True)
            up = up_bookkeeping(resources, input_bytes, Path(work), env)
            checkpoints = up[False].seconds - up[True].seconds
            ups.append(
                f"| {nodes} | {resources} | {input_bytes / 1e6:.1f} | {up[False].seconds:.1f} | "
                f"{up[True].seconds:.1f} | {1000 * checkpoints / resources:.1f} | {up[False].peak_rss_mb:.0f} |"
            )
            print(ups[-1], flush=True)
    print("\n`pulumi preview` of a new stack (median of runs; peak RSS of the CLI):\n")
    print("| nodes | resources | PULUMI_SKIP_CHECKPOINTS | median s | runs (s) | peak RSS MB |")
    print("|---:|---:|---|---:|---|---:|")
    print("\n".join(previews))
    print("\n`pulumi up` of a stand-in of as many resources with the same inputs, nothing to run:\n")
    print("| nodes | resources | input MB | up s | up s, SKIP_CHECKPOINTS | checkpoints ms/resource | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(ups))


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [3, 50, 100, 200])
