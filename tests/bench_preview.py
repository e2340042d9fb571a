"""`pulumi preview` with the real CLI, by node count: how long a reviewer waits for the plan.

    lab/toolchain.sh build tests
    .venv/bin/python -m tests.bench_preview            # 50 and 200 nodes
    .venv/bin/python -m tests.bench_preview 3 100      # other sizes

Not a test (no timing assertions). What runs: the real CLI and engine (lab/toolchain.sh), our
language host (lab/langhost), the program, the real Kubernetes provider and the lab's command
provider (lab/command-provider; pulumi-command's own is not served here), on a fresh stack with a
file backend. A preview runs no command, so no host is needed.

Each size is timed twice: as the engine runs by default, and with PULUMI_SKIP_CHECKPOINTS=true,
which the pull-request preview sets (a preview persists nothing, yet by default the engine
serializes the whole snapshot again after every step, which grows with the square of the nodes).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.bench_program import stack
from tests.engine.conftest import Project, engine_environment, new_project

REPEATS = 3
STACK = "bench"


def bench_project(nodes: int, work: Path, env: dict[str, str]) -> Project:
    """A copy of the project with stack ``bench``: the dev stack with ``nodes`` nodes."""
    project = new_project(env, work)
    (project.dir / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump({"config": stack(nodes)}))
    project.run(f"pulumi stack init {STACK} --secrets-provider passphrase")
    project.run(f"pulumi config set --stack {STACK} --secret sshPrivateKey < {project.key}")
    return project


def preview(project: Project, skip_checkpoints: bool) -> tuple[float, int]:
    """Seconds of one `pulumi preview`, and the resources it plans to create."""
    env = {**project.env, "PULUMI_SKIP_CHECKPOINTS": "true"} if skip_checkpoints else project.env
    start = time.perf_counter()
    done = subprocess.run(
        ["pulumi", "preview", "--stack", STACK, "--non-interactive"],
        cwd=project.dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    planned = re.search(r"\+ (\d+) to create", done.stdout)
    if done.returncode != 0 or not planned:
        sys.exit(f"pulumi preview failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return seconds, int(planned[1])


def main(sizes: list[int]) -> None:
    env = engine_environment()
    print("| nodes | resources planned | PULUMI_SKIP_CHECKPOINTS | median s of `pulumi preview` | runs (s) |")
    print("|---:|---:|---|---:|---|")
    for nodes in sizes:
        with tempfile.TemporaryDirectory(prefix="k3s-cilium-preview-") as work:
            project = bench_project(nodes, Path(work), env)
            for skip_checkpoints in (False, True):
                runs = [preview(project, skip_checkpoints) for _ in range(REPEATS)]
                times = [seconds for seconds, _ in runs]
                print(
                    f"| {nodes} | {runs[-1][1]} | {'true' if skip_checkpoints else 'unset'} | "
                    f"{statistics.median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |",
                    flush=True,
                )


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [50, 200])
