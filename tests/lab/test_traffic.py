"""The traffic figures of a phase's `up` in the datapath lab (lab/cluster/traffic.py), from prober samples."""

from __future__ import annotations

from lab.cluster.l2_failover import Sample
from lab.cluster.traffic import figures, summary


def samples(*results: bool, every: float = 0.2) -> list[Sample]:
    """One request every ``every`` s from t=100: answered in 10 ms, or timing out after 1 s."""
    made, t = [], 100.0
    for ok in results:
        ended = t + (0.01 if ok else 1.0)
        made.append(Sample(t, ended, ok, 200 if ok else 0, "smoke-pod-a" if ok else "timed out", None, ""))
        t = t + every if ok else ended
    return made


def test_no_failure_is_no_outage() -> None:
    found = figures(samples(*[True] * 50))
    assert (found["requests"], found["failed"], found["longestOutageSeconds"]) == (50, 0, 0.0)
    assert found["failures"] == [] and found["failingAtEnd"] is False


def test_the_longest_run_of_failures_is_the_outage_from_its_first_failure_to_the_next_answer() -> None:
    # ok at 100.0, 100.2; fails at 100.4 and 101.4 (1 s timeouts); ok at 102.4; one failure at 102.6.
    found = figures(samples(True, True, False, False, True, False, True))
    assert found["requests"] == 7 and found["failed"] == 3
    assert found["longestOutageSeconds"] == 2.0
    assert [failure["at"] for failure in found["failures"]] == [0.4, 1.4, 2.6]
    assert found["failures"][0]["detail"] == "timed out"
    assert found["failedRatio"] == round(3 / 7, 4)


def test_failures_until_the_end_count_to_the_last_request_and_say_so() -> None:
    found = figures(samples(True, False, False))
    assert found["failingAtEnd"] is True
    assert found["longestOutageSeconds"] == 2.0  # from 100.2 to the last timeout's end at 102.2


def test_no_sample_is_no_figure() -> None:
    assert figures([]) == {"requests": 0, "failed": 0, "longestOutageSeconds": None, "failures": []}


def test_the_summary_line_names_each_node_and_the_agents_replaced() -> None:
    measured = {
        "byNode": {"server-1": figures(samples(True, False, True)), "agent-1": figures(samples(True, True, False))},
        "agentsReplaced": ["agent-1", "server-1"],
    }
    assert summary(measured) == (
        "traffic through the NodePorts during `up`: server-1 1/3 failed, longest 1.0 s, agent-1 1/3 failed, longest "
        "1.0 s (still failing at the end); agents replaced: agent-1, server-1"
    )
