"""The program's shape at scale, under the mock engine: SSH sessions and dependencies per node.

Timing is a benchmark (python -m tests.bench_program), not a test; what is
asserted here is structure: how many SSH sessions a first `pulumi up` opens
per host, how many the program's own ordering lets run at once on one host,
and that the dependency edges grow linearly with the nodes.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from pulumi.runtime.mocks import MockResourceArgs

from tests.bench_program import sessions, stack
from tests.main_program import run_stack
from tests.mocks import ProgramMocks, Recorded


@pytest.fixture(scope="module")
def forty() -> Recorded:
    return run_stack(stack(40))


def edges(rec: Recorded) -> int:
    return sum(len(r.dependencies) for r in rec.resources)


def test_at_most_six_ssh_sessions_per_node_and_two_per_node_more_on_the_first_server(forty):
    per_host, _ = sessions(forty)
    first = "10.0.0.1"
    assert len(per_host) == 40
    # Preflight, install, its checks between the rollout's steps, the image pre-pull, the kube-proxy cleanup and
    # the verification collector (no host tuning at this tier).
    assert max(count for host, count in per_host.items() if host != first) <= 6
    # The first server drains and waits for every node of the rollout (two sessions per node, one node or
    # batch at a time); its cluster-wide commands (upgrade gate, snapshot, token, kubeconfig, pod restart,
    # kube-proxy objects, smoke pod discovery) do not grow with the nodes; with its own six as a node, 13.
    ten = sessions(run_stack(stack(10)))[0][first]
    assert per_host[first] - ten == 2 * (40 - 10)
    assert per_host[first] - 2 * 40 <= 13


def test_never_more_than_eight_sessions_at_once_on_one_host(forty):
    _, at_once = sessions(forty)
    assert at_once <= 8


def test_creating_the_node_deregistrations_opens_no_session(forty):
    deregistrations = forty.matching(r"^k3s-deregister-")
    assert len(deregistrations) == 39
    for command in deregistrations:
        assert "create" not in command.inputs and "k3s-node-deregister" not in command.inputs.get("create", "")
        assert command.inputs["delete"]


def test_dependency_edges_grow_linearly_with_the_nodes(forty):
    ten = run_stack(stack(10))
    # Four times the nodes, about four times the edges (a quadratic program would have ~16 times).
    assert edges(forty) / edges(ten) < 5



class CollectorSpy(ProgramMocks):
    """Notes the garbage collector's state whenever the engine is asked to create a resource."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[bool, bool]] = set()

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.seen.add((gc.isenabled(), gc.get_freeze_count() > 0))
        return super().new_resource(args)


def test_the_built_program_is_frozen_and_collection_runs_again_while_it_resolves():
    spy = CollectorSpy()
    run_stack(stack(10), mocks=spy)
    # Registrations run once the program is built: its heap is frozen, the collector back on.
    assert spy.seen == {(True, True)}

