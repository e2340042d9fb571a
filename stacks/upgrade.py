"""Version changes of a running cluster: what a `pulumi up` with a new K3s or Cilium version may do.

The rules (checked by the upgrade gate before any node or the release changes, see
``components/k3s.py``; the gate reads what runs, the rules are judged by
``python -m verification upgrade-gate``):

- K3s: one Kubernetes minor at a time (kubernetes.io "Version Skew Policy":
  the control plane is upgraded one minor version at a time), no downgrade
  unless ``k3s.upgrade.allowDowngrade``;
- Cilium: one minor at a time, forward or back (docs: operations/upgrade, "The
  only tested upgrade and rollback path is between consecutive minor releases.
  Always perform upgrades and rollbacks between one minor release at a time.");
- on a version change, the Kubernetes minor must be one the pinned Cilium minor
  is tested with (Cilium's "Kubernetes Compatibility" page of each release,
  ``network/kubernetes/compatibility``), :data:`TESTED_KUBERNETES`;
- K3s and Cilium (its version, or its values: :func:`release_stamp`) do not
  both change in one run: the K3s rollout judges each node against the Cilium
  that runs (``verification/rollout.py``);
- a Cilium step to a minor that refuses objects found in the cluster is
  refused, naming them (:data:`REMOVALS`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from packaging.version import Version

from stacks import cilium_values
from stacks.config import StackConfig
from stacks.digest import digest
from stacks.features import Resolved

# Kubernetes minors each Cilium minor is e2e-tested with: docs of each release,
# Documentation/network/kubernetes/compatibility.rst at tags v1.13.18, v1.14.19, v1.15.19,
# v1.16.19, v1.17.0, v1.18.0, v1.19.6, v1.20.0.
TESTED_KUBERNETES: dict[str, tuple[str, str]] = {
    "1.13": ("1.16", "1.26"),
    "1.14": ("1.19", "1.27"),
    "1.15": ("1.26", "1.29"),
    "1.16": ("1.27", "1.30"),
    "1.17": ("1.29", "1.32"),
    "1.18": ("1.30", "1.33"),
    "1.19": ("1.32", "1.35"),
    "1.20": ("1.33", "1.36"),
}
# The newest patch of each minor this program knows: the packaged charts it is tested against
# (../shared/cilium-chart/archives). Cilium's upgrade guide ("Upgrade to the latest patch release of your current
# minor before moving to the next minor", docs: operations/upgrade): the gate refuses a minor step from an older patch
# (cilium.upgrade.latestPatchFirst). A newer patch may exist upstream: raise cilium.version to it, the gate only
# asks for at least this one.
LATEST_PATCH: dict[str, str] = {
    "1.13": "1.13.18",
    "1.14": "1.14.19",
    "1.15": "1.15.19",
    "1.16": "1.16.19",
    "1.17": "1.17.18",
    "1.18": "1.18.12",
    "1.19": "1.19.6",
    "1.20": "1.20.0",
}



@dataclass(frozen=True)
class Removal:
    """Objects a Cilium minor no longer accepts, which must be changed before the step to it.

    ``resource`` is what ``kubectl get`` lists; ``evidence`` a jsonpath printed per object after its name, non-empty
    exactly for an object the minor refuses."""

    minor: str
    kind: str
    resource: str
    evidence: str
    what: str
    fix: str


# Cilium's "Upgrade Notes", "Action Required" (Documentation/operations/upgrade.rst at v1.19.6, "1.19 Upgrade Notes":
# "Custom Resource Versions" and "Network Policy"). The gate lists such objects in the cluster, whoever made them (the
# stack's own are rendered for the target release), and refuses the step to that minor while any is there.
_REQUIRES = (
    "{.spec.ingress[*].fromRequires}{.spec.egress[*].toRequires}"
    "{.specs[*].ingress[*].fromRequires}{.specs[*].egress[*].toRequires}"
)
REMOVALS = (
    Removal(
        "1.19",
        "CiliumBGPPeeringPolicy",
        "ciliumbgppeeringpolicies.cilium.io",
        "{.metadata.uid}",
        "uses the BGPv1 API, which Cilium 1.19 removed",
        "migrate it to the cilium.io/v2 CRDs (CiliumBGPClusterConfig, CiliumBGPPeerConfig, CiliumBGPAdvertisement, "
        "CiliumBGPNodeConfigOverride; loadBalancer.bgp renders them) and delete it",
    ),
    *(
        Removal(
            "1.19",
            kind,
            resource,
            _REQUIRES,
            "has fromRequires or toRequires, which Cilium 1.19's CRD requires empty",
            "remove fromRequires and toRequires from its rules",
        )
        for kind, resource in (
            ("CiliumNetworkPolicy", "ciliumnetworkpolicies.cilium.io"),
            ("CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies.cilium.io"),
        )
    ),
)


def removals_up_to(cfg: StackConfig) -> list[Removal]:
    """The removals of the target minor and the minors before it: what the gate reads."""
    target = Version(cilium_minor(cfg.cilium.version))
    return [removal for removal in REMOVALS if Version(removal.minor) <= target]


def removal_params(cfg: StackConfig) -> dict[str, str | int]:
    """The gate script's ``REMOVED_<i>`` parameters: kind, resource and evidence jsonpath of each removal."""
    params: dict[str, str | int] = {"REMOVED_COUNT": len(removals_up_to(cfg))}
    for index, removal in enumerate(removals_up_to(cfg)):
        params |= {
            f"REMOVED_{index}_KIND": removal.kind,
            f"REMOVED_{index}_RESOURCE": removal.resource,
            f"REMOVED_{index}_EVIDENCE": removal.evidence,
        }
    return params


_K3S = re.compile(r"^v(\d+)\.(\d+)\.(\d+)\+k3s(\d+)$")
# The ConfigMap in kube-system in which the Cilium component records what it deployed (release_stamp): the gate
# reads it to tell whether this `pulumi up` also changes Cilium.
RELEASE_STAMP = "k3s-cilium-release"


def kubernetes_minor(k3s_version: str) -> str:
    """``v1.33.3+k3s1`` -> ``1.33``."""
    match = _K3S.match(k3s_version)
    if not match:
        raise ValueError(f"not a K3s release: {k3s_version!r}")
    return f"{match[1]}.{match[2]}"


def cilium_minor(cilium_version: str) -> str:
    version = Version(cilium_version)
    return f"{version.major}.{version.minor}"


def tested(cfg: StackConfig) -> tuple[str, str]:
    return TESTED_KUBERNETES[cilium_minor(cfg.cilium.version)]


def is_tested(cfg: StackConfig) -> bool:
    low, high = (Version(v) for v in tested(cfg))
    return low <= Version(kubernetes_minor(cfg.k3s.version)) <= high


def release_stamp(cfg: StackConfig, features: Resolved) -> dict[str, str]:
    """What the Cilium component records once its release is deployed: the version and a digest of the values."""
    return {
        "ciliumVersion": cfg.cilium.version,
        "valuesDigest": digest({"version": cfg.cilium.version, "values": cilium_values.render(cfg, features)}),
    }


def gate_expect(cfg: StackConfig, features: Resolved) -> dict[str, Any]:
    """The ``--expect`` of the upgrade gate: the target versions and what the rules need, known offline."""
    low, high = tested(cfg)
    expect: dict[str, Any] = {
        "k3sVersion": cfg.k3s.version,
        "ciliumVersion": cfg.cilium.version,
        "ciliumValues": release_stamp(cfg, features)["valuesDigest"],
        "allowDowngrade": cfg.k3s.upgrade.allow_downgrade,
        "testedKubernetes": [low, high],
    }
    removals = removals_up_to(cfg)
    if removals:
        expect["removals"] = [
            {key: value for key, value in asdict(removal).items() if key in ("minor", "kind", "what", "fix")}
            for removal in removals
        ]
    if cfg.cilium.upgrade.latest_patch_first:
        expect["latestPatches"] = sorted(LATEST_PATCH.values(), key=Version)
    return expect


def between_nodes(cfg: StackConfig, features: Resolved) -> list[str]:
    """What each node must show after its upgrade before the next node is drained (components/k3s.py)."""
    kpr = "kubeProxyReplacement" in features
    waits = ["its K3s release", "Ready", "its Cilium agent ready"]
    if cfg.verify.smoke and kpr:
        waits.append("the smoke Service on its NodePort")
    waits.append("etcd healthy (servers)")
    node_checks = ["agent-status", *(["no-kube-proxy-rules", "kpr-integrity"] if kpr else [])]
    return [*waits, "uncordoned", f"its checks pass again: {', '.join(node_checks)}"]


def plan(cfg: StackConfig, features: Resolved) -> dict[str, Any]:
    """The upgrade part of the offline plan: the targets, the rules and whether the pair is a tested one."""
    low, high = tested(cfg)
    return {
        "k3s": cfg.k3s.version,
        "kubernetesMinor": kubernetes_minor(cfg.k3s.version),
        "cilium": cfg.cilium.version,
        "ciliumTestedKubernetes": f"{low}-{high}",
        "tested": is_tested(cfg),
        "allowDowngrade": cfg.k3s.upgrade.allow_downgrade,
        "k3sOrder": order(cfg),
        "betweenNodes": between_nodes(cfg, features),
        "rules": [
            "K3s: one Kubernetes minor per `pulumi up`"
            + ("" if cfg.k3s.upgrade.allow_downgrade else ", never down (k3s.upgrade.allowDowngrade)"),
            "Cilium: one minor per `pulumi up`, forward or back"
            + (", forward only from the newest known patch" if cfg.cilium.upgrade.latest_patch_first else ""),
            f"a version change needs Kubernetes {low}-{high}, the minors Cilium {cilium_minor(cfg.cilium.version)} "
            "is tested with",
            "K3s and Cilium (its version or its values) not both in one `pulumi up`: the K3s rollout checks each "
            "node against the Cilium that runs",
            *(
                f"Cilium to {removal.minor}: no {removal.kind} in the cluster that {removal.what}"
                for removal in removals_up_to(cfg)
            ),
        ],
    }


def order(cfg: StackConfig) -> list[str]:
    """What a K3s version change does, in order (components/k3s.py's dependencies); each step is
    :func:`between_nodes`."""
    first = cfg.servers[0]
    steps = [
        f"read the running versions on {first.name} and judge them (upgrade gate)",
        f"etcd snapshot on {first.name}",
        *(f"server {server.name}" for server in cfg.servers),
    ]
    size = cfg.k3s.upgrade.max_unavailable
    for start in range(0, len(cfg.agents), size):
        batch = [agent.name for agent in cfg.agents[start : start + size]]
        steps.append(f"agent {batch[0]}" if len(batch) == 1 else f"agents {', '.join(batch)} together")
    return steps


def plan_text(entry: dict[str, Any]) -> list[str]:
    mark = "tested" if entry["tested"] else "NOT TESTED"
    lines = [
        f"upgrade gate: K3s {entry['k3s']} (Kubernetes {entry['kubernetesMinor']}) with Cilium {entry['cilium']} "
        f"(tested with Kubernetes {entry['ciliumTestedKubernetes']}): {mark}"
    ]
    lines += [f"  {rule}" for rule in entry["rules"]]
    lines.append("  a K3s version change goes: " + " -> ".join(entry["k3sOrder"]))
    lines.append("  each node is drained and upgraded, then, before the next one: " + "; ".join(entry["betweenNodes"]))
    return lines
