"""The checks of one node between the steps of a K3s rollout: ``node-checks``.

After a node's upgrade (or its join) and its wait (``k3s-node-ready.sh``: release, Ready, agent ready), the
node's own checks run again before the next node is drained: its Cilium agent reports every promised
feature (``agent-status``) and, with kube-proxy replacement, no kube-proxy rules came back
(``no-kube-proxy-rules``) and nothing of kube-proxy runs or is configured (``kpr-integrity``). They are the
checks the full verification runs after the rollout, judged by the same code on the same collectors'
output; what the rollout adds is that a node failing them stops it before the next node is touched.

stdin: what ``verify-node.sh`` printed on the node: each check's raw output under a section line
(:data:`verification.parsers.SECTION_MARK`), or only ``cilium=absent`` when the wait found no Cilium yet
(the cluster's first install: Cilium comes after every node). ``--expect``: each check's own expectations
under its name, e.g. ``{"agent-status": {"kubeProxyReplacement": true}, "no-kube-proxy-rules": {}}``.
Figures: ``cilium`` ("absent" or "running") and each check's figures under its name.
"""

from __future__ import annotations

from verification.expectations import (
    CHECKS,
    Check,
    ExpectationError,
    Expectations,
    JsonValue,
    KeySpec,
    Problem,
    Verdict,
    validate_expectations,
)
from verification.parsers import split_sections

# The checks a node passes again before the next node goes, in the order they run.
NODE_CHECKS = ("agent-status", "no-kube-proxy-rules", "kpr-integrity")
NO_CILIUM = "cilium=absent"


def _is_object(value: JsonValue) -> bool:
    return isinstance(value, dict)


def evaluate_node_checks(text: str, expect: Expectations) -> Verdict:
    for name, sub_expect in expect.items():
        try:
            validate_expectations(CHECKS[name].keys, sub_expect)
        except ExpectationError as error:
            raise ExpectationError(f"{name}: {error}") from error
    verdict = Verdict()
    if text.split() == [NO_CILIUM]:
        verdict.figures["cilium"] = "absent"
        return verdict
    verdict.figures["cilium"] = "running"
    sections = split_sections(text)
    for name in (name for name in NODE_CHECKS if name in expect):
        if name not in sections:
            verdict.add(Problem(name, "collected on the node", None))
            continue
        found = CHECKS[name].run(sections[name], expect[name])
        verdict.figures[name] = found.figures
        verdict.problems += [
            Problem(f"{name}: {problem.item}", problem.expected, problem.seen, problem.fix)
            for problem in found.problems
        ]
    return verdict


NODE_CHECKS_KEYS = {
    name: KeySpec(f"the expectations of {name} (a JSON object; python3 -m verification {name} --help)", _is_object)
    for name in NODE_CHECKS
}
NODE_CHECKS_CHECK = Check(
    "node-checks",
    "verify-node.sh output with the sections of " + ", ".join(NODE_CHECKS) + f", or {NO_CILIUM}",
    NODE_CHECKS_KEYS,
    evaluate_node_checks,
)
CHECKS[NODE_CHECKS_CHECK.name] = NODE_CHECKS_CHECK
