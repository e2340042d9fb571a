"""The feature catalogue, the tiers built from it, and how a stack's features resolve.

Facts come from the Cilium documentation; the page is named next to each entry:
- KPR   docs.cilium.io .../network/kubernetes/kubeproxy-free/
- TUNE  docs.cilium.io .../operations/performance/tuning/
- BWM   docs.cilium.io .../network/kubernetes/bandwidth-manager/
Chart availability (the Cilium version a Helm value first exists in) was read off
the official charts' values.yaml for 1.13 to 1.20.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from packaging.version import Version

from stacks import encryption, gateway_api, hubble
from stacks.config import FEATURE_NAMES, ConfigError, StackConfig

# (major, minor) or (major, minor, patch); tuples compare the way kernel versions do.
Kernel = tuple[int, ...]
Restart = Literal["none", "agents", "pods", "nodes"]


@dataclass(frozen=True)
class Feature:
    name: str
    summary: str
    requires: tuple[str, ...] = ()
    min_kernel: Kernel | None = None
    min_cilium: Version | None = None
    # What a change of this feature needs before it is really in effect on a running cluster.
    restart: Restart = "agents"
    source: str = ""

    def available_in(self, cilium: Version) -> bool:
        return self.min_cilium is None or cilium >= self.min_cilium


def _v(text: str) -> Version:
    return Version(text)


CATALOGUE: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature(
            "nativeRouting",
            "Route pod traffic natively between nodes instead of a VXLAN tunnel (nodes share an L2 segment).",
            restart="pods",
            source="docs: network/concepts/routing",
        ),
        Feature(
            "kubeProxyReplacement",
            "Cilium's eBPF datapath serves ClusterIP/NodePort; K3s runs without kube-proxy.",
            restart="agents",
            source="KPR",
        ),
        Feature(
            "bpfMasquerade",
            "Masquerade pod egress in eBPF instead of iptables.",
            requires=("kubeProxyReplacement",),
            source="docs: network/concepts/masquerading (needs the eBPF NodePort datapath)",
        ),
        Feature(
            "dsr",
            "Direct Server Return: remote backends answer clients directly, keeping the client IP.",
            requires=("kubeProxyReplacement",),
            source="KPR: 'Direct Server Return (DSR)'; opt/ipip dispatch needs native routing",
        ),
        Feature(
            "maglev",
            "Maglev consistent hashing picks service backends (resilient to node failures).",
            requires=("kubeProxyReplacement",),
            source="KPR: 'Maglev Consistent Hashing'",
        ),
        Feature(
            "bypassConntrack",
            "Skip netfilter connection tracking for pod traffic (installNoConntrackIptablesRules).",
            requires=("nativeRouting", "kubeProxyReplacement", "bpfMasquerade"),
            source="TUNE: 'Bypass iptables Connection Tracking' (direct routing, KPR, eBPF masquerading)",
        ),
        Feature(
            "bpfHostRouting",
            "eBPF host routing bypasses the upper host stack and iptables for pod traffic.",
            requires=("kubeProxyReplacement", "bpfMasquerade"),
            min_kernel=(5, 10),
            restart="pods",
            source="TUNE: 'eBPF Host-Routing' (kernel >= 5.10, KPR, eBPF masquerading)",
        ),
        Feature(
            "bigTcp",
            "IPv4 BIG TCP: larger GSO/GRO packets through the stack (mlx4, mlx5, ice NICs).",
            requires=("nativeRouting", "kubeProxyReplacement", "bpfMasquerade", "bpfHostRouting"),
            min_kernel=(6, 3),
            min_cilium=_v("1.14"),
            restart="pods",
            source="TUNE: 'IPv4 BIG TCP' (kernel >= 6.3, host routing, KPR, eBPF masquerading, no tunnel)",
        ),
        Feature(
            "bandwidthManager",
            "EDT-based pod egress rate limiting and fq queueing on native devices.",
            min_kernel=(5, 1),
            restart="pods",
            source="BWM (kernel >= 5.1)",
        ),
        Feature(
            "bbr",
            "BBR congestion control for pods.",
            requires=("bandwidthManager", "bpfHostRouting"),
            min_kernel=(5, 18),
            restart="pods",
            source="BWM: 'BBR for Pods' (kernel >= 5.18, needs eBPF host routing to keep the socket)",
        ),
        Feature(
            "xdp",
            "XDP acceleration of NodePort/LoadBalancer services at the driver layer.",
            requires=("kubeProxyReplacement",),
            restart="agents",
            source="KPR: 'LoadBalancer & NodePort XDP Acceleration' (best-effort mode from Cilium 1.15)",
        ),
        Feature(
            "jumboMtu",
            "MTU 9000 on the Cilium devices (every NIC and switch on the path must carry it).",
            restart="nodes",
            source="docs: network/concepts/mtu",
        ),
        Feature(
            "mapSizing",
            "Larger BPF maps sized from memory (mapDynamicSizeRatio; per-CPU LRU from 1.17).",
            restart="agents",
            source="TUNE: 'Per-CPU distributed LRU and increased map size ratio'",
        ),
        Feature(
            "hubble",
            "Hubble flow observability in the agents (certificates from an in-cluster CronJob).",
            restart="agents",
            source="docs: observability/hubble",
        ),
        Feature(
            "netkit",
            "netkit devices instead of veth pairs for pods.",
            requires=("kubeProxyReplacement", "bpfMasquerade", "bpfHostRouting"),
            min_kernel=(6, 8),
            min_cilium=_v("1.16"),
            restart="pods",
            source="TUNE: 'netkit device mode' (kernel >= 6.8, Cilium >= 1.16, eBPF host routing)",
        ),
        Feature(
            "hostTuning",
            "Host settings: tuned network profile, CPU governor 'performance', NIC IRQs spread over CPUs.",
            restart="none",
            source="TUNE: 'Further Considerations' (tuned network-*-profile, CPU governor, irqbalance)",
        ),
        Feature(
            "gatewayApi",
            "Cilium implements the Gateway API (GatewayClass cilium) with its Envoy proxy; the CRDs come first.",
            requires=("kubeProxyReplacement",),
            restart="agents",
            source="docs: network/servicemesh/gateway-api/gateway-api ('Prerequisites': kube-proxy replacement, "
            "L7 proxy, the Gateway API CRDs)",
        ),
        Feature(
            "ingress",
            "Cilium's Ingress controller (IngressClass cilium) with its Envoy proxy.",
            requires=("kubeProxyReplacement",),
            restart="agents",
            source="docs: network/servicemesh/ingress ('Prerequisites': NodePort through kube-proxy replacement, "
            "L7 proxy)",
        ),
    )
}
assert tuple(CATALOGUE) == FEATURE_NAMES, "catalogue and config model list different features"

# The Kubernetes service datapath needs at least this kernel with any KPR setting
# (KPR: 'v4.19.57, v5.1.16, v5.2.0 or more recent').
KPR_MIN_KERNEL: Kernel = (4, 19, 57)


@dataclass(frozen=True)
class CiliumKernelFloor:
    """The oldest kernel a Cilium minor runs on at all, whatever its features."""

    kernel: Kernel
    # RHEL (and rebuilds: CentOS, Rocky, Alma) ship 4.18 with backports; from this
    # release on, their 4.18 counts as equivalent to ``kernel``.
    rhel: tuple[int, int]
    source: str


_FLOOR_4_19 = CiliumKernelFloor(
    (4, 19, 57),
    (8, 0),
    "system_requirements.rst of 1.13-1.15: 'Linux kernel >= 4.19.57 or equivalent (e.g., 4.18 on RHEL8)' "
    "(cilium/cilium#23124, #23951)",
)
_FLOOR_5_4 = CiliumKernelFloor(
    (5, 4),
    (8, 6),
    "system_requirements.rst of 1.16-1.17: 'Linux kernel >= 5.4 or equivalent (e.g., 4.18 on RHEL 8.6)' "
    "(raised for v1.16: cilium/cilium#30456, #30869, #36386)",
)
_FLOOR_5_10_RHEL_8_6 = CiliumKernelFloor(
    (5, 10),
    (8, 6),
    "1.18: 'Increase the minimum required kernel version to v5.10 / RHEL 8.6' (cilium/cilium#38308 release "
    "note; AWS EKS documents Linux >= 5.10 for Cilium 1.18.3)",
)
_FLOOR_5_10_RHEL_8_10 = CiliumKernelFloor(
    (5, 10),
    (8, 10),
    "system_requirements.rst from 1.19 (main at 00c88111): 'Linux kernel >= 5.10 or equivalent "
    "(e.g., 4.18 on RHEL 8.10)'",
)
# Cilium minor -> its own floor, read from that release's
# Documentation/operations/system_requirements.rst ("Summary" and "Base Requirements").
# An agent on an older kernel fails its BPF feature probes and crash-loops.
CILIUM_KERNEL_FLOORS: dict[tuple[int, int], CiliumKernelFloor] = {
    (1, 13): _FLOOR_4_19,
    (1, 14): _FLOOR_4_19,
    (1, 15): _FLOOR_4_19,
    (1, 16): _FLOOR_5_4,
    (1, 17): _FLOOR_5_4,
    (1, 18): _FLOOR_5_10_RHEL_8_6,
    (1, 19): _FLOOR_5_10_RHEL_8_10,
    (1, 20): _FLOOR_5_10_RHEL_8_10,
}


def cilium_kernel_floor(cilium: Version) -> CiliumKernelFloor:
    return CILIUM_KERNEL_FLOORS[(cilium.major, cilium.minor)]


# bpf.distributedLRU (per-CPU LRU maps, what mapSizing turns on from the 1.17 chart) made
# Cilium loop recreating maps until node memory ran out from 1.17.0 to 1.17.4
# (cilium/cilium#39070, fixed by #38978/#39087 in 1.17.5); and on nodes whose possible-CPU
# count does not divide a map size (12, 18, 48 CPUs, ...) the SockRevNAT and statically
# sized maps still looped until cilium/cilium#42511 (merged 2025-10-31, in 1.19.0; no
# backport to 1.17/1.18 could be confirmed).
DISTRIBUTED_LRU_CHART = Version("1.17")
DISTRIBUTED_LRU_SAFE = Version("1.19.0")
DISTRIBUTED_LRU = "mapSizing.distributedLRU"


def _distributed_lru_skip(cilium: Version) -> str | None:
    if cilium < DISTRIBUTED_LRU_CHART or cilium >= DISTRIBUTED_LRU_SAFE:
        return None
    if cilium < Version("1.17.5"):
        return (
            f"bpf.distributedLRU stays off on Cilium {cilium}: 1.17.0-1.17.4 exhaust node memory recreating "
            "maps with it (cilium/cilium#39070, fixed in 1.17.5)"
        )
    return (
        f"bpf.distributedLRU stays off on Cilium {cilium}: before 1.19.0 it loops recreating maps on nodes "
        "whose CPU count does not divide the map sizes (cilium/cilium#42511)"
    )

_KPR = ("nativeRouting", "kubeProxyReplacement")
_PERFORMANCE = (*_KPR, "bpfMasquerade", "dsr", "maglev", "bypassConntrack", "bpfHostRouting")
_EXTREME = (*_PERFORMANCE, "bigTcp", "bandwidthManager", "bbr", "xdp", "mapSizing", "hostTuning")

TIER_FEATURES: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "kpr": _KPR,
    "performance": _PERFORMANCE,
    "extreme": _EXTREME,
}
TIER_SUMMARY = {
    "baseline": "Cilium as CNI only, kube-proxy kept: the A/B reference and the rollback target.",
    "kpr": "Native routing and full kube-proxy replacement.",
    "performance": "KPR plus eBPF masquerade, DSR, Maglev, conntrack bypass, eBPF host routing.",
    "extreme": "Performance plus BIG TCP, bandwidth manager + BBR, XDP, map sizing, host tuning.",
}

BEST_EFFORT_XDP = Version("1.15")
GENEVE_DSR = Version("1.14")


@dataclass(frozen=True)
class Resolved:
    """The features a stack really gets, and why."""

    tier: str
    cilium: Version
    enabled: tuple[str, ...]
    # feature -> "tier <name>" or "features.<name>"
    origin: dict[str, str] = field(default_factory=dict)
    # feature -> why the tier's preset could not be applied on this Cilium version
    skipped: dict[str, str] = field(default_factory=dict)
    xdp_mode: str | None = None
    dsr_dispatch: str | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.enabled

    def base_kernel(self) -> Kernel:
        """The oldest kernel the pinned Cilium minor (and KPR) runs on, whatever the features."""
        floor = cilium_kernel_floor(self.cilium).kernel
        return max(floor, KPR_MIN_KERNEL) if "kubeProxyReplacement" in self else floor

    def rhel_equivalent(self) -> tuple[int, int]:
        """The RHEL release from which its 4.18 kernel satisfies :meth:`base_kernel`."""
        return cilium_kernel_floor(self.cilium).rhel

    def min_kernel_reason(self) -> str:
        """What needs :meth:`base_kernel`, for messages."""
        minor = f"{self.cilium.major}.{self.cilium.minor}"
        floor = cilium_kernel_floor(self.cilium)
        rhel = f"{floor.rhel[0]}.{floor.rhel[1]}"
        return f"Cilium {minor} (Linux >= {kernel_text(floor.kernel)}, or 4.18 on RHEL >= {rhel})"

    def min_kernel(self) -> Kernel:
        """The oldest kernel every node must run for the pinned Cilium and the enabled features."""
        needs = [CATALOGUE[f].min_kernel for f in self.enabled]
        return max([self.base_kernel()] + [k for k in needs if k])

    @property
    def distributed_lru(self) -> bool:
        """Whether mapSizing's per-CPU LRU maps are on (never on a release where they loop)."""
        return "mapSizing" in self and DISTRIBUTED_LRU not in self.skipped

    def kernel_needs(self) -> dict[str, Kernel]:
        """Each enabled feature that has a kernel floor, with that floor."""
        return {f: k for f in self.enabled if (k := CATALOGUE[f].min_kernel)}


def resolve(cfg: StackConfig) -> Resolved:
    """Apply tier, overrides, version availability and dependencies; raise ConfigError on conflicts."""
    cilium = cfg.cilium.parsed_version
    overrides = cfg.features.overrides()
    wanted: dict[str, str] = {name: f"tier {cfg.tier}" for name in TIER_FEATURES[cfg.tier]}
    for name, on in overrides.items():
        if on:
            wanted[name] = f"features.{name}"
        else:
            wanted.pop(name, None)

    problems: list[str] = []
    skipped: dict[str, str] = {}
    for name, origin in list(wanted.items()):
        feature = CATALOGUE[name]
        if feature.available_in(cilium):
            continue
        reason = f"needs Cilium >= {feature.min_cilium}, but cilium.version is {cfg.cilium.version}"
        if origin.startswith("tier"):
            skipped[name] = reason
            del wanted[name]
        else:
            problems.append(f"k3s-cilium:features.{name}: {reason}; raise cilium.version or set features.{name}: false")

    if "mapSizing" in wanted and (lru_skip := _distributed_lru_skip(cilium)):
        skipped[DISTRIBUTED_LRU] = lru_skip
    xdp_mode = _xdp_mode(cfg, wanted, skipped, problems)
    dsr_dispatch = _dsr_dispatch(cfg, wanted, problems)

    for name, origin in wanted.items():
        for needed in CATALOGUE[name].requires:
            if needed in wanted:
                continue
            why = f"features.{needed} is false" if needed in overrides else f"tier {cfg.tier} leaves it off"
            problems.append(
                f"k3s-cilium:features.{name}: on (from {origin}) but requires {needed}, which is off ({why}); "
                f"set features.{needed}: true, or set features.{name}: false"
            )

    problems += [f"k3s-cilium:{line}" for line in _day_two_problems(cfg, wanted, dsr_dispatch)]
    if cfg.load_balancer.mode == "l2" and "kubeProxyReplacement" not in wanted:
        # docs: network/l2-announcements, "Prerequisites".
        problems.append(
            f"k3s-cilium:loadBalancer.mode: 'l2' needs kube-proxy replacement, which tier {cfg.tier} leaves off; "
            "choose tier kpr or higher, set features.kubeProxyReplacement: true, or use mode nodeipam"
        )
    if problems:
        raise ConfigError(problems)
    enabled = tuple(name for name in CATALOGUE if name in wanted)
    return Resolved(
        tier=cfg.tier,
        cilium=cilium,
        enabled=enabled,
        origin={name: wanted[name] for name in enabled},
        skipped=skipped,
        xdp_mode=xdp_mode,
        dsr_dispatch=dsr_dispatch,
    )


def tunnel_protocol(native_routing: bool, dsr_dispatch: str | None) -> str | None:
    """The encapsulation between nodes: None with native routing, else Geneve (DSR's geneve dispatch) or VXLAN."""
    if native_routing:
        return None
    return "geneve" if dsr_dispatch == "geneve" else "vxlan"


def l7_proxy_on(cfg: StackConfig) -> bool:
    """Whether the agents run the L7 proxy (Envoy): the chart's default, unless ``cilium.values`` turns it off
    or WireGuard on 1.13 has to (stacks/encryption.py)."""
    rendered = encryption.helm_values(cfg.features.encryption, cfg.encryption, cfg.cilium.parsed_version)
    return cfg.cilium.values.get("l7Proxy", rendered.get("l7Proxy", True)) is not False


def _day_two_problems(cfg: StackConfig, wanted: dict[str, str], dsr_dispatch: str | None) -> list[str]:
    """Encryption, Hubble and Gateway API against the features the stack really gets."""
    cilium = cfg.cilium.parsed_version
    return [
        *encryption.problems(
            cfg.features.encryption,
            cfg.encryption,
            cilium,
            wanted.keys(),
            tunnel_protocol("nativeRouting" in wanted, dsr_dispatch),
        ),
        *hubble.problems(cfg.hubble, "hubble" in wanted, cilium),
        *gateway_api.problems(
            "gatewayApi" in wanted,
            "ingress" in wanted,
            cfg.gateway_api,
            cilium,
            kpr_on="kubeProxyReplacement" in wanted,
            l7_proxy_on=l7_proxy_on(cfg),
            lb_mode=cfg.load_balancer.mode,
            k3s_version=cfg.k3s.version,
            k3s_disabled=cfg.k3s.disable,
        ),
    ]


def _xdp_mode(cfg: StackConfig, wanted: dict[str, str], skipped: dict[str, str], problems: list[str]) -> str | None:
    cilium = cfg.cilium.parsed_version
    if cfg.cilium.xdp_mode == "best-effort" and cilium < BEST_EFFORT_XDP:
        problems.append(
            f"k3s-cilium:cilium.xdpMode: 'best-effort' needs Cilium >= {BEST_EFFORT_XDP}, but cilium.version is "
            f"{cfg.cilium.version}; use 'native' (fails on NICs without XDP support) or raise cilium.version"
        )
        return None
    if "xdp" not in wanted:
        return None
    if cfg.cilium.xdp_mode:
        return cfg.cilium.xdp_mode
    if wanted["xdp"].startswith("tier"):
        # A tier must not break hosts whose NICs lack native XDP: only best-effort is safe to preset.
        if cilium < BEST_EFFORT_XDP:
            skipped["xdp"] = (
                f"the tier only presets XDP in best-effort mode, which needs Cilium >= {BEST_EFFORT_XDP}; "
                "set features.xdp: true with cilium.xdpMode: native to force it"
            )
            del wanted["xdp"]
            return None
        return "best-effort"
    return "best-effort" if cilium >= BEST_EFFORT_XDP else "native"


def _dsr_dispatch(cfg: StackConfig, wanted: dict[str, str], problems: list[str]) -> str | None:
    if "dsr" not in wanted:
        return None
    dispatch = cfg.cilium.dsr_dispatch or "opt"
    native = "nativeRouting" in wanted
    if dispatch in ("opt", "ipip") and not native:
        problems.append(
            f"k3s-cilium:features.dsr: DSR with '{dispatch}' dispatch needs native routing, which is off; "
            "set features.nativeRouting: true, or cilium.dsrDispatch: geneve (tunnel mode), or features.dsr: false"
        )
    if dispatch == "geneve":
        if native:
            problems.append(
                "k3s-cilium:cilium.dsrDispatch: 'geneve' works only in tunnel mode, but native routing is on; "
                "use 'opt' with native routing, or set features.nativeRouting: false"
            )
        if cfg.cilium.parsed_version < GENEVE_DSR:
            problems.append(
                f"k3s-cilium:cilium.dsrDispatch: 'geneve' needs Cilium >= {GENEVE_DSR}, but cilium.version is "
                f"{cfg.cilium.version}"
            )
    return dispatch


def kernel_text(kernel: Kernel) -> str:
    return ".".join(str(part) for part in kernel)
