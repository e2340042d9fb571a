"""node-checks: a node's own checks again between the steps of a K3s rollout (verification/rollout.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.verification.cli import prefix
from verification.parsers import SECTION_MARK

FIXTURES = Path(__file__).parent / "fixtures"
CHECK = "node-checks"
WAIT_FIRST_INSTALL = "cilium=absent"
KPR_STRICT = "agent_status_1.13_kpr_strict_dsr.txt"
KPR_DISABLED = "agent_status_1.13_kpr_disabled.txt"


def collected(**sections: str) -> str:
    """What verify-node.sh prints: each check's output under its section line."""
    return "".join(f"{SECTION_MARK} {check.replace('_', '-')}\n{text}" for check, text in sections.items())


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_before_cilium_there_is_nothing_to_check_and_the_rollout_goes_on(cli: Any) -> None:
    run = cli(CHECK, f"{WAIT_FIRST_INSTALL}\n", {"agent-status": {"kubeProxyReplacement": True}})
    assert run.code == 0
    assert run.figures == {"cilium": "absent"}


def test_a_node_whose_agent_lost_kube_proxy_replacement_stops_the_rollout_naming_node_and_check(cli: Any) -> None:
    expect = {"agent-status": {"kubeProxyReplacement": True, "healthy": True}, "no-kube-proxy-rules": {}}
    text = collected(agent_status=fixture(KPR_DISABLED), no_kube_proxy_rules=fixture("iptables_cilium_only_dual.txt"))
    run = cli(CHECK, text, expect)
    assert run.code == 1
    assert run.figures["cilium"] == "running"
    assert [line.split(", saw")[0] for line in run.stderr] == [
        prefix(CHECK) + "expected agent-status: KubeProxyReplacement Strict"  # 1.13 says Strict
    ]
    assert run.figures["no-kube-proxy-rules"]["ipv4"]["entries"] == 0


def test_kube_proxy_rules_that_came_back_after_the_upgrade_fail_it(cli: Any) -> None:
    expect = {"agent-status": {"kubeProxyReplacement": True}, "no-kube-proxy-rules": {}}
    text = collected(
        agent_status=fixture(KPR_STRICT), no_kube_proxy_rules=fixture("iptables_kube_proxy_present_unmarked.txt")
    )
    run = cli(CHECK, text, expect)
    assert run.code == 1
    assert len(run.problems) >= 1
    assert all(problem.startswith(prefix(CHECK) + "expected no-kube-proxy-rules: ") for problem in run.problems)


def test_a_node_that_passes_its_checks_lets_the_next_one_go(cli: Any) -> None:
    expect = {"agent-status": {"kubeProxyReplacement": True, "dsr": True}, "no-kube-proxy-rules": {}}
    text = collected(agent_status=fixture(KPR_STRICT), no_kube_proxy_rules=fixture("iptables_cilium_only_dual.txt"))
    run = cli(CHECK, text, expect)
    assert run.code == 0, run.stderr
    assert run.figures["agent-status"]["kubeProxyReplacement"] == "Strict"


def test_a_check_the_collector_did_not_print_fails_as_not_collected(cli: Any) -> None:
    for text in ("", collected(agent_status=fixture(KPR_STRICT))):
        run = cli(CHECK, text, {"agent-status": {}, "kpr-integrity": {"role": "agent"}})
        assert run.code == 1
        assert prefix(CHECK) + "expected kpr-integrity collected on the node, saw nothing (not found in output)" in (
            run.problems
        )


def test_expectations_that_do_not_fit_a_check_are_refused_before_anything_is_judged(cli: Any) -> None:
    for expect in ({"agent-status": {"kubeProxyReplacment": True}}, {"service-list": {}}, {"agent-status": 1}):
        run = cli(CHECK, f"{WAIT_FIRST_INSTALL}\n", expect)
        assert run.code == 2, expect
        assert run.document is None
