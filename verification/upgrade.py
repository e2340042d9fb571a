"""The upgrade gate: may this `pulumi up` move the running cluster to the stack's versions?

stdin: what ``upgrade-gate.sh`` printed on the first server (``cluster=absent``,
``cluster=unreadable detail=...``, or ``node=<name> kubelet=<version>`` lines,
``cilium=<agent image>`` and ``release=<digest>|absent``, what the Cilium component
recorded it deployed). ``--expect`` keys: ``k3sVersion`` and ``ciliumVersion``
(the targets), ``ciliumValues`` (the digest of the target release's values),
``allowDowngrade``, ``testedKubernetes`` ([low, high] Kubernetes
minors the target Cilium minor is tested with), ``latestPatches`` (the newest
known patch of each minor). The rules (``stacks/upgrade.py`` cites them): K3s
one Kubernetes minor up per run and never down without ``allowDowngrade``;
Cilium one minor per run, either way, and up only from the newest patch of
its minor that ``latestPatches`` names; on any version change
the Kubernetes minor within ``testedKubernetes``; no object (``removed=<kind>
object=<name>`` lines) that a Cilium minor the step crosses no longer accepts
(``removals``); K3s and Cilium (its version
or its values) not both in one run, since the rollout checks each node against
the Cilium that runs. A first install (nothing
runs) passes; a cluster whose API does not answer fails, since what runs is
unknown. Figures: fresh, nodes ({node: version}), cilium, changes.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from verification.expectations import (
    CHECKS,
    Check,
    Expectations,
    JsonValue,
    KeySpec,
    Problem,
    Verdict,
    _bool,
    _is_bool,
    _is_str,
    _list_of,
    _str,
    _str_list,
)

_K3S = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:\+k3s(\d+))?$")
_CILIUM_TAG = re.compile(r":v?(\d+)\.(\d+)\.(\d+)(?:[-@]|$)")
_MINOR = re.compile(r"^(\d+)\.(\d+)$")
ROLLBACK = "README \"Rollback\""


def k3s_version(text: str) -> tuple[int, int, int, int] | None:
    """``v1.33.3+k3s1`` -> (1, 33, 3, 1); a kubelet without the K3s suffix counts as k3s0."""
    match = _K3S.match(text.strip())
    return (int(match[1]), int(match[2]), int(match[3]), int(match[4] or 0)) if match else None


def cilium_version(image_or_version: str) -> tuple[int, int, int] | None:
    """The version of an agent image reference (``quay.io/cilium/cilium:v1.19.6@sha256:...``) or of ``1.19.6``."""
    text = image_or_version.strip()
    match = _CILIUM_TAG.search(text) or _CILIUM_TAG.search(f":{text}")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _fields(line: str) -> dict[str, str]:
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    return dict(word.split("=", 1) for word in words if "=" in word)


@dataclass
class GateReading:
    """What ``upgrade-gate.sh`` printed."""

    # "absent" | "unreadable" | "running" | "empty"
    state: str
    nodes: dict[str, str] = field(default_factory=dict)
    detail: str = ""
    cilium: str | None = None
    # The values digest the Cilium component recorded ("absent" without its ConfigMap).
    release: str | None = None
    # (kind, object) of each object a Cilium minor up to the target no longer accepts.
    removed: list[tuple[str, str]] = field(default_factory=list)


def parse_gate(text: str) -> GateReading:
    reading = GateReading("empty")
    for line in text.splitlines():
        fields = _fields(line)
        if fields.get("cluster") in ("absent", "unreadable"):
            return GateReading(fields["cluster"], detail=fields.get("detail", ""))
        if "node" in fields and "kubelet" in fields:
            reading.nodes[fields["node"]] = fields["kubelet"]
        elif "removed" in fields and "object" in fields:
            reading.removed.append((fields["removed"], fields["object"]))
        elif "cilium" in fields:
            reading.cilium = fields["cilium"]
        elif "release" in fields:
            reading.release = fields["release"]
    reading.state = "running" if reading.nodes else "empty"
    return reading


def _minor_text(version: tuple[int, ...]) -> str:
    return f"{version[0]}.{version[1]}"


def _k3s_problems(nodes: dict[str, str], target: str, allow_downgrade: bool) -> list[Problem]:
    wanted = k3s_version(target)
    if wanted is None:
        return [Problem("k3sVersion", "a K3s release like v1.33.3+k3s1", target)]
    problems = []
    for node, running_text in sorted(nodes.items()):
        running = k3s_version(running_text)
        if running is None:
            problems.append(Problem(f"K3s on {node}", "a readable version", running_text))
            continue
        if wanted[:2] > (running[0], running[1] + 1):
            step = f"v{running[0]}.{running[1] + 1}"
            problems.append(
                Problem(
                    f"K3s on {node} ({running_text})",
                    f"to move at most one Kubernetes minor, to {step}.x",
                    f"k3s.version {target}",
                    f"set k3s.version to the latest {step} release and run pulumi up, then go on to {target}",
                )
            )
        elif wanted < running and not allow_downgrade:
            problems.append(
                Problem(
                    f"K3s on {node} ({running_text})",
                    "not to be downgraded",
                    f"k3s.version {target}",
                    f"keep k3s.version at {running_text}, or restore the etcd snapshot of the older release "
                    f"({ROLLBACK}); k3s.upgrade.allowDowngrade: true lets the install go down anyway",
                )
            )
    return problems


def _latest_patch_problem(running: tuple[int, int, int], target: str, latest: list[str]) -> Problem | None:
    """A step to the next minor from an older patch than the newest known of the running minor."""
    newest = next((found for text in latest if (found := cilium_version(text)) and found[:2] == running[:2]), None)
    if newest is None or running >= newest:
        return None
    current, goal = ".".join(map(str, running)), ".".join(map(str, newest))
    return Problem(
        f"Cilium {current}",
        f"at the newest {running[0]}.{running[1]} patch ({goal}) before the next minor",
        f"cilium.version {target}",
        f"set cilium.version to {goal} and run pulumi up, then go on to {target} "
        "(or cilium.upgrade.latestPatchFirst: false)",
    )


def _cilium_problems(image: str | None, target: str, latest: list[str]) -> list[Problem]:
    if not image or image == "absent":
        return []
    running, wanted = cilium_version(image), cilium_version(target)
    if running is None or wanted is None:
        return [Problem("Cilium's agent image", "a readable version", image)]
    distance = wanted[1] - running[1] if wanted[0] == running[0] else 99
    if distance == 1:
        problem = _latest_patch_problem(running, target, latest)
        return [problem] if problem else []
    if abs(distance) <= 1:
        return []
    step = f"{running[0]}.{running[1] + (1 if distance > 0 else -1)}"
    return [
        Problem(
            f"Cilium {'.'.join(map(str, running))}",
            "to move one minor release at a time",
            f"cilium.version {target}",
            f"set cilium.version to the latest {step} release and run pulumi up, then go on to {target}",
        )
    ]


def _tested_problem(target_k3s: str, target_cilium: str, tested: list[str]) -> Problem | None:
    wanted, cilium = k3s_version(target_k3s), cilium_version(target_cilium)
    bounds = [_MINOR.match(bound) for bound in tested]
    if wanted is None or cilium is None or len(bounds) != 2 or not all(bounds):
        return None
    low, high = ((int(b[1]), int(b[2])) for b in bounds if b)
    if low <= wanted[:2] <= high:
        return None
    return Problem(
        f"Kubernetes {_minor_text(wanted)} (k3s.version {target_k3s})",
        f"to be one Cilium {_minor_text(cilium)} is tested with, {tested[0]}-{tested[1]}",
        f"Kubernetes {_minor_text(wanted)}",
        "change one of k3s.version and cilium.version at a time, through pairs Cilium's compatibility table lists",
    )


def _one_component_problem(
    moving: list[JsonValue], cilium_version_change: bool, cilium_settings_change: bool, target_k3s: str
) -> Problem | None:
    """A K3s version change checks each node against the Cilium that runs (verification/rollout.py) before the
    next one goes: that must be the Cilium the stack asks for, so Cilium may not change in the same run."""
    if not moving or not (cilium_version_change or cilium_settings_change):
        return None
    what = "version" if cilium_version_change else "settings (the release's values)"
    return Problem(
        f"this pulumi up (K3s to {target_k3s} on {', '.join(map(str, moving))})",
        "to change K3s or Cilium, not both",
        f"Cilium's {what} changing too",
        "run pulumi up with the cilium settings as deployed and the new k3s.version first, then change Cilium "
        "(or change Cilium first, with k3s.version as it runs)",
    )


def _removal_problems(
    removed: list[tuple[str, str]], image: str | None, target: str, removals: list[JsonValue]
) -> list[Problem]:
    """Objects in the cluster that a Cilium minor this step crosses no longer accepts (stacks/upgrade.py REMOVALS)."""
    running, wanted = cilium_version(image or ""), cilium_version(target)
    if running is None or wanted is None:
        return []
    problems = []
    for removal in (item for item in removals if isinstance(item, dict)):
        minor = _MINOR.match(str(removal.get("minor", "")))
        if not minor or not running[:2] < (int(minor[1]), int(minor[2])) <= wanted[:2]:
            continue
        for kind, name in removed:
            if kind == removal.get("kind"):
                problems.append(
                    Problem(
                        f"{kind} {name}",
                        f"changed or gone before Cilium {minor[0]}: it {removal.get('what')}",
                        "it in the cluster",
                        f"{removal.get('fix')}, then run pulumi up again",
                    )
                )
    return problems


def evaluate_upgrade_gate(text: str, expect: Expectations) -> Verdict:
    reading = parse_gate(text)
    state, cilium, release = reading.state, reading.cilium, reading.release
    target_k3s, target_cilium = _str(expect, "k3sVersion") or "", _str(expect, "ciliumVersion") or ""
    verdict = Verdict(figures={"state": state, "fresh": state == "absent"})
    if state == "absent":
        return verdict
    if state in ("unreadable", "empty"):
        detail = reading.detail or "no node listed"
        verdict.add(
            Problem(
                "the running versions",
                "readable from the K3s API on the first server",
                detail,
                "make the API answer on the first server (systemctl status k3s), then run pulumi up again",
            )
        )
        return verdict
    nodes = reading.nodes
    moving: list[JsonValue] = [node for node in sorted(nodes) if nodes[node] != target_k3s]
    values = _str(expect, "ciliumValues")
    changes: dict[str, JsonValue] = {
        "k3s": moving,
        "cilium": bool(cilium and cilium != "absent" and cilium_version(cilium) != cilium_version(target_cilium)),
        # Unknown (False) when no stamp was recorded: a cluster set up before the stamp existed.
        "ciliumValues": bool(values and release and release != "absent" and release != values),
    }
    verdict.figures.update({"nodes": {node: version for node, version in nodes.items()}, "cilium": cilium})
    verdict.figures["changes"] = changes
    for problem in _k3s_problems(nodes, target_k3s, bool(_bool(expect, "allowDowngrade"))):
        verdict.add(problem)
    for problem in _cilium_problems(cilium, target_cilium, _str_list(expect, "latestPatches")):
        verdict.add(problem)
    removals = expect.get("removals")
    verdict.figures["removedObjects"] = [f"{kind} {name}" for kind, name in reading.removed]
    if isinstance(removals, list):
        verdict.problems += _removal_problems(reading.removed, cilium, target_cilium, removals)
    verdict.add(_one_component_problem(moving, bool(changes["cilium"]), bool(changes["ciliumValues"]), target_k3s))
    if changes["k3s"] or changes["cilium"]:
        tested = _tested_problem(target_k3s, target_cilium, _str_list(expect, "testedKubernetes"))
        if tested is not None:
            verdict.add(tested)
    return verdict


def _is_removal(item: JsonValue) -> bool:
    return isinstance(item, dict) and all(_is_str(item.get(key)) for key in ("minor", "kind", "what", "fix"))


UPGRADE_GATE_KEYS = {
    "k3sVersion": KeySpec("target K3s release", _is_str),
    "ciliumVersion": KeySpec("target Cilium release", _is_str),
    "ciliumValues": KeySpec("digest of the target release's values (stacks/upgrade.py release_stamp)", _is_str),
    "allowDowngrade": KeySpec("whether K3s may go to an older release", _is_bool),
    "testedKubernetes": KeySpec("[low, high] Kubernetes minors the target Cilium is tested with", _list_of(_is_str)),
    "removals": KeySpec(
        "what a Cilium minor no longer accepts: [{minor, kind, what, fix}] (stacks/upgrade.py REMOVALS)",
        _list_of(_is_removal),
    ),
    "latestPatches": KeySpec(
        "the newest known patch of each Cilium minor: a step to the next minor must start from it", _list_of(_is_str)
    ),
}
UPGRADE_GATE = Check(
    "upgrade-gate",
    "upgrade-gate.sh output: cluster=absent|unreadable, or node=<name> kubelet=<version> lines, cilium=<image> and "
    "release=<values digest>|absent",
    UPGRADE_GATE_KEYS,
    evaluate_upgrade_gate,
)
# Registered here, at the end, so that importing this module before verification.expectations works too.
CHECKS[UPGRADE_GATE.name] = UPGRADE_GATE
