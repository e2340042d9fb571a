"""How long the K3sCluster program takes to evaluate under the mock engine, and what it registers.

    .venv/bin/python -m tests.bench_k3s            # 3, 50 and 200 nodes
    .venv/bin/python -m tests.bench_k3s 500 1000   # other sizes

Not a test (no timing assertions): the figures go into the README. Each size
is measured a few times on fresh mocks and the median reported, with the
number of remote commands per node by role and the size of the command
text Pulumi stores in state.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter

from components.k3s import K3sCluster, K3sClusterArgs
from stacks.config import StackConfig, parse
from stacks.features import resolve
from tests.mocks import Recorded, run_program

REPEATS = 3
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nBENCH\n-----END OPENSSH PRIVATE KEY-----\n"


def cluster_config(nodes: int) -> StackConfig:
    servers = 1 if nodes < 5 else 3
    return parse({
        "tier": "performance",
        "nodes": [
            {"name": f"server-{i}", "host": f"10.0.0.{i}", "role": "server"} for i in range(1, servers + 1)
        ] + [
            {"name": f"agent-{i}", "host": f"10.{1 + i // 250}.{i % 250}.1", "role": "agent"}
            for i in range(1, nodes - servers + 1)
        ],
    })


def evaluate(cfg: StackConfig, token: str | None) -> tuple[float, Recorded]:
    features = resolve(cfg)

    def program() -> object:
        cluster = K3sCluster("k3s", K3sClusterArgs(cfg, features, PRIVATE_KEY, token))
        return {"kubeconfig": cluster.kubeconfig, "node_info": cluster.node_info, "token": cluster.token}

    start = time.perf_counter()
    rec = run_program(program)
    return time.perf_counter() - start, rec


def commands_per_node(cfg: StackConfig, rec: Recorded) -> dict[str, Counter[str]]:
    """node role (first server / further server / agent) -> command kind -> count per node."""
    roles = {node.name: ("first server" if node == cfg.servers[0] else node.role) for node in cfg.nodes}
    per_role: dict[str, Counter[str]] = {}
    nodes_in_role = Counter(roles.values())
    for r in rec.of_type("command:remote:Command"):
        kind, node = r.name.removeprefix("k3s-").split("-", 1)
        per_role.setdefault(roles[node], Counter())[kind] += 1
    return {role: Counter({k: v // nodes_in_role[role] for k, v in kinds.items()}) for role, kinds in per_role.items()}


def main(sizes: list[int]) -> None:
    for token_mode, token in (("k3sToken configured", "bench-token"), ("token generated", None)):
        print(f"## {token_mode}")
        print("| nodes | servers | agents | resources | median s | ms/node | command text in state |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for nodes in sizes:
            cfg = cluster_config(nodes)
            times, rec = [], None
            for _ in range(REPEATS):
                seconds, rec = evaluate(cfg, token)
                times.append(seconds)
            assert rec is not None
            median = statistics.median(times)
            text = sum(len(r.inputs.get(k, "")) for r in rec.resources for k in ("create", "update", "delete"))
            print(f"| {nodes} | {len(cfg.servers)} | {len(cfg.agents)} | {len(rec.resources)} | {median:.2f} | "
                  f"{1000 * median / nodes:.1f} | {text / 1e6:.1f} MB |")
        cfg = cluster_config(max(sizes[0], 5))
        _, rec = evaluate(cfg, token)
        print("\nremote commands per node:")
        for role, kinds in sorted(commands_per_node(cfg, rec).items()):
            print(f"- {role}: {sum(kinds.values())} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
        print()


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [3, 50, 200])
