"""How the whole program scales: mock-engine evaluation time, resources and SSH sessions by node count.

    .venv/bin/python -m tests.bench_program            # 3, 50, 100 and 200 nodes
    .venv/bin/python -m tests.bench_program 400        # other sizes

Not a test (no timing assertions): the figures go into the README and the
issue notes. Each size runs the program (`__main__.py`, the `dev` stack with
more agents) a few times, each in a new interpreter as `pulumi preview` runs
it, under Pulumi's own mock monitor (the tests' recording of every registration is left out), and
reports the median; the SDK's imports are left out of the time.

SSH sessions: every ``remote.Command`` that runs something on create is one
session on the host it connects to during a first ``pulumi up`` (a no-op
``up`` runs none). "Most at once on one host" simulates the program's own
ordering with unlimited ``--parallel``: a command starts when everything it
depends on is done, each takes one step, and the count is the largest number
of one host's commands in the same step.
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from tests.main_program import COMMAND, ROOT, run_stack, stack_config
from tests.mocks import Recorded

REPEATS = 5


def stack(nodes: int) -> dict[str, Any]:
    """The dev stack with three servers (one below five nodes) and agents up to ``nodes``."""
    config = copy.deepcopy(stack_config())
    servers = 1 if nodes < 5 else 3
    config["k3s-cilium:nodes"] = [
        {"name": f"server-{i}", "host": f"10.0.0.{i}", "role": "server"} for i in range(1, servers + 1)
    ] + [
        {"name": f"agent-{i}", "host": f"10.{1 + i // 250}.{i % 250}.1", "role": "agent"}
        for i in range(1, nodes - servers + 1)
    ]
    return config


def sessions(rec: Recorded) -> tuple[Counter[str], int]:
    """SSH sessions per host on a first ``up``, and the most one host sees in one step."""
    commands = [r for r in rec.of_type(COMMAND) if r.inputs.get("create")]
    per_host = Counter(r.inputs["connection"]["host"] for r in commands)
    by_urn = {r.urn: r for r in rec.resources}
    step: dict[str, int] = {}

    def start(urn: str) -> int:
        # Components take no time: their step is the latest of their children and dependencies.
        if urn not in step:
            resource = by_urn[urn]
            after = [start(d) for d in resource.dependencies if d in by_urn]
            children = [start(c.urn) for c in rec.resources if c.parent == urn] if not resource.custom else []
            step[urn] = max([*after, *children], default=0) + (1 if resource.custom else 0)
        return step[urn]

    concurrent = Counter((r.inputs["connection"]["host"], start(r.urn)) for r in commands)
    return per_host, max(concurrent.values(), default=0)


def measure(nodes: int) -> dict[str, Any]:
    """One evaluation in this process: seconds, resources and SSH sessions."""
    # Imported before the clock starts: a real run pays them once, whatever the stack's size.
    import pulumi_kubernetes.apps.v1
    import pulumi_kubernetes.core.v1
    import pulumi_kubernetes.helm.v3  # noqa: F401

    import components.verify  # noqa: F401

    config = stack(nodes)
    # Timed under Pulumi's own mock monitor: what the tests record of every registration is theirs.
    start = time.perf_counter()
    run_stack(config, record=False)
    seconds = time.perf_counter() - start
    rec = run_stack(config)
    per_host, at_once = sessions(rec)
    return {
        "seconds": seconds,
        "resources": len(rec.resources),
        "sessions_mean": statistics.mean(per_host.values()),
        "sessions_max": max(per_host.values()),
        "at_once": at_once,
    }


def measure_in_a_new_process(nodes: int) -> dict[str, Any]:
    """``measure`` in a fresh interpreter, as ``pulumi preview`` runs the program once per process."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench_program", "--one", str(nodes)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def main(sizes: list[int]) -> None:
    print("| nodes | resources | median s | fastest s | ms/node | SSH sessions/node (max) | most at once on one host |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for nodes in sizes:
        runs = [measure_in_a_new_process(nodes) for _ in range(REPEATS)]
        median = statistics.median(run["seconds"] for run in runs)
        # The machine's noise only ever adds: the fastest run is the program's own cost.
        fastest = min(run["seconds"] for run in runs)
        last = runs[-1]
        print(
            f"| {nodes} | {last['resources']} | {median:.2f} | {fastest:.2f} | {1000 * median / nodes:.1f} | "
            f"{last['sessions_mean']:.1f} ({last['sessions_max']}) | {last['at_once']} |",
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(measure(int(sys.argv[2]))))
    else:
        main([int(arg) for arg in sys.argv[1:]] or [3, 50, 100, 200])
