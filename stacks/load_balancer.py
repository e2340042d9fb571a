"""LoadBalancer Services without K3s' servicelb: Cilium LB-IPAM with L2 announcements, BGP or node IPAM.

K3s' servicelb is disabled (it conflicts with kube-proxy replacement), so a
``Service`` of type ``LoadBalancer`` stays ``Pending`` unless Cilium hands it
an address. The stack key ``loadBalancer`` picks how:

- ``l2``: LB-IPAM pools, and a ``CiliumL2AnnouncementPolicy`` so that one node
  per Service answers ARP for its address (one Kubernetes lease per Service);
- ``bgp``: LB-IPAM pools, advertised to routers by the BGP control plane
  (``CiliumBGPClusterConfig``, ``CiliumBGPPeerConfig``, ``CiliumBGPAdvertisement``);
- ``nodeipam``: no pool; Services of class ``io.cilium/node`` get the nodes' addresses.

Everything here is pure: the config model, the refusals, the Helm values and
the Kubernetes objects per Cilium minor, and the client rate limits L2
announcements need. Facts and where they come from (docs.cilium.io pages of
each release, the charts in ``../shared/cilium-chart/``, the CRDs under
``pkg/k8s/apis/cilium.io/client/crds/`` of each release):

- L2 announcements and ``l2announcements.*``: from 1.14 (chart 1.14 is the
  first with the key); need kube-proxy replacement (docs: network/l2-announcements,
  "Prerequisites"). ``externalIPs.enabled`` is a chart value up to 1.16 only.
- ``CiliumL2AnnouncementPolicy``: ``cilium.io/v2alpha1`` in every release that has it.
- ``CiliumLoadBalancerIPPool``: ``cilium.io/v2alpha1`` with ``cidrs`` in 1.13
  and 1.14; ``blocks`` (a CIDR or ``start``/``stop``) from 1.15, where ``cidrs``
  became deprecated; ``cilium.io/v2`` from 1.18 (the v2 schema has only ``blocks``).
- BGP: the v2 resources (``CiliumBGPClusterConfig``, ``CiliumBGPPeerConfig``,
  ``CiliumBGPAdvertisement``) from 1.16 as ``v2alpha1``, ``cilium.io/v2`` from
  1.18. ``CiliumBGPPeeringPolicy`` (the v1 API) is never rendered: 1.19 removed
  it. An MD5 password is a Secret with key ``password`` in
  ``bgpControlPlane.secretsNamespace`` (kube-system), named by ``authSecretRef``
  (docs: bgp-control-plane-configuration, "MD5 Password").
- Node IPAM (``nodeIPAM.enabled``, class ``io.cilium/node``): from 1.16;
  ``defaultLBServiceIPAM`` (which IPAM serves a Service without a class) from 1.17.
- A Service asks LB-IPAM for a given address with the annotation
  ``lbipam.cilium.io/ips`` (``io.cilium/lb-ipam-ips`` before 1.16); the first
  and last address of a block should not be asked for (docs: network/lb-ipam,
  "Requesting IPs").
- Client rate limit (docs: network/l2-announcements, "Sizing client rate
  limit"): ``QPS = #services * (1 / leaseRenewDeadline)``, the burst "slightly
  higher"; ``k8sClientRateLimit`` exists from 1.14 (agent) and 1.17 (operator).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from packaging.version import Version
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from stacks.model import LABEL_KEY, LABEL_VALUE, ConfigModel

Mode = Literal["none", "l2", "bgp", "nodeipam"]
Advertise = Literal["loadBalancerIPs", "podCIDRs"]

V1_15, V1_16, V1_17, V1_18 = (Version(v) for v in ("1.15", "1.16", "1.17", "1.18"))
# The first Cilium minor each mode exists in (see the module docstring).
MODE_SINCE: dict[str, Version] = {"l2": Version("1.14"), "bgp": V1_16, "nodeipam": V1_16}
MODE_NEEDS = {
    "l2": "L2 announcements",
    "bgp": "the BGP control plane's v2 API (CiliumBGPClusterConfig; the v1 CiliumBGPPeeringPolicy is gone in 1.19)",
    "nodeipam": "node IPAM",
}

# The cluster-scoped objects the program owns, and the labels that tie them together.
L2_POLICY_NAME = "k3s-cilium-l2"
BGP_CLUSTER_CONFIG_NAME = "k3s-cilium-bgp"
BGP_ADVERTISEMENT_NAME = "k3s-cilium-bgp"
BGP_ADVERTISE_LABELS = {"k3s-cilium.io/advertise": "bgp"}
BGP_SECRETS_NAMESPACE = "kube-system"
PART_OF = {"app.kubernetes.io/part-of": "k3s-cilium"}
NODE_IPAM_CLASS = "io.cilium/node"
L2_LEASE_PREFIX = "cilium-l2announce-"

# Chart defaults of the lease timings (l2announcements.* in every chart that has them).
DEFAULT_LEASE_DURATION = "15s"
DEFAULT_LEASE_RENEW_DEADLINE = "5s"
DEFAULT_LEASE_RETRY_PERIOD = "2s"
# The agents' client rate limit the charts default to: 5/10 before 1.16 (and on Kubernetes < 1.27), 10/20 after.
DEFAULT_AGENT_RATE = {Version("1.14"): (5, 10), V1_16: (10, 20)}
# The operator's (chart 1.17+: k8sClientRateLimit.operator; defaults 100/200).
DEFAULT_OPERATOR_RATE = (100, 200)

_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Python regex constructs Go's RE2 syntax does not have (Cilium matches interfaces with Go's regexp).
_NOT_RE2 = re.compile(r"\(\?[=!<]|\\[1-9]|\(\?P=")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def seconds(duration: str) -> float:
    """A Go duration (``15s``, ``1m30s``, ``500ms``) in seconds."""
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(duration))


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be a DNS-1123 label: lowercase letters, digits and '-', 1-63 characters")
    return value


def _labels(labels: dict[str, str] | None) -> dict[str, str] | None:
    for key, value in (labels or {}).items():
        if not LABEL_KEY.match(key) or not LABEL_VALUE.match(value):
            raise ValueError(f"{key}={value!r} is not a valid Kubernetes label (e.g. 'color: blue')")
    return labels


Name = Annotated[str, AfterValidator(_name)]
Labels = Annotated[dict[str, str] | None, AfterValidator(_labels)]


def _ipv4(value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address like '192.168.1.240'") from None


class AddressRange(ConfigModel):
    start: str = Field(description="First address of the range.")
    stop: str = Field(description="Last address of the range (inclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> AddressRange:
        if _ipv4(self.start) > _ipv4(self.stop):
            raise ValueError(f"start {self.start} is after stop {self.stop}")
        return self


class Pool(ConfigModel):
    name: Name = Field(description="Name of the CiliumLoadBalancerIPPool (DNS-1123 label).")
    blocks: list[str | AddressRange] = Field(
        min_length=1, description="Addresses: IPv4 CIDRs (`192.168.1.240/28`) or ranges `{start, stop}`."
    )
    service_selector: Labels = Field(
        None, description="Only Services with these labels get addresses from this pool (matchLabels)."
    )

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, blocks: list[str | AddressRange]) -> list[str | AddressRange]:
        for block in blocks:
            if isinstance(block, str):
                try:
                    network = ipaddress.ip_network(block, strict=True)
                except ValueError as error:
                    raise ValueError(f"{block!r} is not a CIDR like '192.168.1.240/28' ({error})") from None
                if network.version != 4:
                    raise ValueError(f"{block!r}: only IPv4 pools are supported")
        return blocks

    def ranges(self) -> Iterator[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address, str]]:
        """Each block as (first, last, how the config wrote it)."""
        for block in self.blocks:
            if isinstance(block, str):
                network = ipaddress.IPv4Network(block)
                yield network[0], network[-1], block
            else:
                yield _ipv4(block.start), _ipv4(block.stop), f"{block.start}-{block.stop}"


class L2(ConfigModel):
    interfaces: list[str] = Field(
        min_length=1,
        description="Regular expressions (Go syntax) of the interfaces that answer ARP, e.g. `^eth[0-9]+`.",
    )
    node_selector: Labels = Field(
        None, description="Only nodes with these labels announce (matchLabels); default every node."
    )
    lease_duration: str | None = Field(None, description="How long a dead holder keeps a Service (chart default 15s).")
    lease_renew_deadline: str | None = Field(None, description="How often the holder renews (chart default 5s).")
    lease_retry_period: str | None = Field(None, description="Wait after a failed renewal (chart default 2s).")
    expected_services: int = Field(
        10, ge=1, le=10000, description="L2-announced Services to expect: sizes the agents' API client rate limit."
    )

    @field_validator("interfaces")
    @classmethod
    def _interfaces(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{pattern!r} is not a regular expression ({error})") from None
            if _NOT_RE2.search(pattern):
                raise ValueError(f"{pattern!r} uses lookaround or backreferences, which Go's regexp (RE2) lacks")
        return patterns

    @field_validator("lease_duration", "lease_renew_deadline", "lease_retry_period")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and (not _DURATION.match(value) or seconds(value) <= 0):
            raise ValueError(f"{value!r} is not a positive Go duration like '15s', '1m' or '500ms'")
        return value

    @model_validator(mode="after")
    def _timings(self) -> L2:
        # docs: network/l2-announcements, "Leader election": duration > 1s and > renew deadline; the
        # renew deadline at least 20% above the retry period.
        duration_text, renew_text, retry_text = self.timings()
        duration, renew, retry = seconds(duration_text), seconds(renew_text), seconds(retry_text)
        if duration <= 1 or duration <= renew:
            raise ValueError(
                f"leaseDuration {duration_text} must be above 1s and above leaseRenewDeadline {renew_text}"
            )
        if renew < 1.2 * retry:
            raise ValueError(
                f"leaseRenewDeadline {renew_text} must be at least 20% above leaseRetryPeriod {retry_text}"
            )
        return self

    def timings(self) -> tuple[str, str, str]:
        return (
            self.lease_duration or DEFAULT_LEASE_DURATION,
            self.lease_renew_deadline or DEFAULT_LEASE_RENEW_DEADLINE,
            self.lease_retry_period or DEFAULT_LEASE_RETRY_PERIOD,
        )


def _asn_in_range(value: int) -> int:
    if not 1 <= value <= 4294967295:
        raise ValueError("is out of range: AS numbers are 1-4294967295 (4-byte ASNs, RFC 6793)")
    return value


Asn = Annotated[int, AfterValidator(_asn_in_range)]
Ipv4 = Annotated[str, AfterValidator(lambda value: str(_ipv4(value)))]


class BgpPeer(ConfigModel):
    name: Name = Field(description="Peer name (DNS-1123 label), unique.")
    address: Ipv4 = Field(description="IPv4 address of the router.")
    asn: Asn = Field(description="The router's AS number (1-4294967295).")
    hold_time: int | None = Field(None, description="Hold time in seconds (3-65535; chart default 90).")
    keep_alive: int | None = Field(None, description="Keepalive interval in seconds, below the hold time.")
    password: SecretStr | None = Field(
        None,
        description="TCP MD5 password; set with "
        "`pulumi config set --secret --path loadBalancer.bgp.peers[0].password`.",
    )

    @model_validator(mode="after")
    def _timers(self) -> BgpPeer:
        if self.hold_time is not None and not 3 <= self.hold_time <= 65535:
            raise ValueError(f"holdTime {self.hold_time} must be 3-65535 seconds (RFC 4271)")
        if self.keep_alive is not None and (self.keep_alive < 1 or self.keep_alive >= (self.hold_time or 90)):
            raise ValueError(f"keepAlive {self.keep_alive} must be at least 1 and below the hold time")
        return self


class Bgp(ConfigModel):
    local_asn: Asn = Field(alias="localASN", description="The cluster's AS number (1-4294967295).")
    peers: list[BgpPeer] = Field(default_factory=list, description="Routers every node peers with; at least one.")
    advertise: list[Advertise] = Field(
        default_factory=lambda: list[Advertise](["loadBalancerIPs"]),
        description="What the nodes advertise: `loadBalancerIPs` and/or `podCIDRs`.",
    )

    @model_validator(mode="after")
    def _peers(self) -> Bgp:
        if not self.peers:
            raise ValueError("peers: BGP needs at least one peer ({name, address, asn}), or choose mode l2/nodeipam")
        names = [peer.name for peer in self.peers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"peers: names must be unique; repeated: {', '.join(repeated)}")
        if not self.advertise:
            raise ValueError("advertise: name at least one of loadBalancerIPs, podCIDRs")
        return self


class LoadBalancer(ConfigModel):
    mode: Mode = Field(
        "none", description="`none` (Services of type LoadBalancer stay Pending), `l2`, `bgp` or `nodeipam`."
    )
    pools: list[Pool] = Field(default_factory=list, description="LB-IPAM pools; required for `l2` and `bgp`.")
    l2: L2 | None = Field(None, description="L2 announcements (mode `l2`).")
    bgp: Bgp | None = Field(None, description="BGP control plane (mode `bgp`).")

    @model_validator(mode="after")
    def _shape(self) -> LoadBalancer:
        problems = []
        if self.mode in ("l2", "bgp") and not self.pools:
            problems.append(f"pools: mode {self.mode} needs at least one pool ({{name, blocks}})")
        if self.mode in ("none", "nodeipam") and self.pools:
            problems.append(f"pools: mode {self.mode} uses no pool; remove pools or choose l2/bgp")
        if self.mode == "l2" and self.l2 is None:
            problems.append("l2: mode l2 needs l2.interfaces (e.g. ['^eth0$']), the interfaces that answer ARP")
        if self.mode != "l2" and self.l2 is not None:
            problems.append(f"l2: is set but mode is {self.mode}; remove it or set mode: l2")
        if self.mode == "bgp" and self.bgp is None:
            problems.append("bgp: mode bgp needs bgp.localASN and bgp.peers")
        if self.mode != "bgp" and self.bgp is not None:
            problems.append(f"bgp: is set but mode is {self.mode}; remove it or set mode: bgp")
        names = [pool.name for pool in self.pools]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"pools: names must be unique; repeated: {', '.join(repeated)}")
        problems += _overlaps(self.pools)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _overlaps(pools: list[Pool]) -> list[str]:
    blocks = [(pool.name, first, last, text) for pool in pools for first, last, text in pool.ranges()]
    problems = []
    for index, (name, first, last, text) in enumerate(blocks):
        for other_name, other_first, other_last, other_text in blocks[index + 1 :]:
            if first <= other_last and other_first <= last:
                problems.append(
                    f"pools: {name} block {text} overlaps {other_name} block {other_text}; LB-IPAM would hand out "
                    "one address twice (or disable a pool): make the blocks disjoint"
                )
    return problems


# --- refusals that need the rest of the stack --------------------------------------------------------


@dataclass(frozen=True)
class Networks:
    """What pools must stay clear of, each with the key that sets it."""

    cluster_cidr: str
    service_cidr: str
    # (node name, address) of every node whose address is known before it is reached, and the API endpoint.
    node_addresses: tuple[tuple[str, str], ...]


def problems(lb: LoadBalancer, cilium: Version, networks: Networks, servicelb_disabled: bool) -> list[str]:
    """``loadBalancer: ...`` problems of the whole stack: version, networks, servicelb."""
    found = []
    since = MODE_SINCE.get(lb.mode)
    if since is not None and cilium < since:
        found.append(
            f"loadBalancer.mode: {lb.mode!r} needs {MODE_NEEDS[lb.mode]}, which Cilium has from {since}; "
            f"cilium.version is {cilium}: raise it or choose another mode"
        )
    if lb.mode != "none" and not servicelb_disabled:
        found.append(
            f"loadBalancer.mode: {lb.mode!r} and K3s' servicelb would both serve LoadBalancer Services; "
            "keep 'servicelb' in k3s.disable"
        )
    if cilium < V1_15:
        ranges = [f"{pool.name}" for pool in lb.pools if any(not isinstance(b, str) for b in pool.blocks)]
        if ranges:
            found.append(
                f"loadBalancer.pools: {', '.join(ranges)} use {{start, stop}} ranges, which CiliumLoadBalancerIPPool "
                f"has from 1.15 (cilium.version is {cilium}); write the blocks as CIDRs"
            )
    for pool in lb.pools:
        for first, last, text in pool.ranges():
            for key, cidr in (("k3s.clusterCidr", networks.cluster_cidr), ("k3s.serviceCidr", networks.service_cidr)):
                network = ipaddress.IPv4Network(cidr)
                if first <= network[-1] and network[0] <= last:
                    found.append(
                        f"loadBalancer.pools: {pool.name} block {text} overlaps {key} {cidr}; pool addresses must "
                        "be outside the pod and service networks"
                    )
            for node, address in networks.node_addresses:
                if first <= ipaddress.IPv4Address(address) <= last:
                    found.append(
                        f"loadBalancer.pools: {pool.name} block {text} contains {address} ({node}); LB-IPAM would "
                        "hand a node's address to a Service: leave the nodes' addresses out of the pools"
                    )
    return found


# --- what the release and the cluster get ----------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    """The agents' (and operator's) API client rate limit, and why it is that."""

    qps: int
    burst: int
    operator_qps: int | None
    operator_burst: int | None
    reason: str


def _agent_default(cilium: Version) -> tuple[int, int]:
    return next(rate for since, rate in sorted(DEFAULT_AGENT_RATE.items(), reverse=True) if cilium >= since)


def rate_limit(lb: LoadBalancer, cilium: Version) -> RateLimit | None:
    """``QPS = #services / leaseRenewDeadline`` (docs: l2-announcements, "Sizing client rate limit"),
    never below the chart's default; the burst twice the QPS, the chart defaults' ratio."""
    if lb.mode != "l2" or lb.l2 is None:
        return None
    services, renew = lb.l2.expected_services, lb.l2.timings()[1]
    needed = math.ceil(services / seconds(renew))
    default_qps, default_burst = _agent_default(cilium)
    qps = max(needed, default_qps)
    burst = max(2 * qps, default_burst)
    operator = (max(qps, DEFAULT_OPERATOR_RATE[0]), max(burst, DEFAULT_OPERATOR_RATE[1])) if cilium >= V1_17 else None
    return RateLimit(
        qps=qps,
        burst=burst,
        operator_qps=operator[0] if operator else None,
        operator_burst=operator[1] if operator else None,
        reason=f"{services} expected L2 services / leaseRenewDeadline {renew} = {needed} QPS "
        f"(chart default {default_qps}/{default_burst})",
    )


def helm_values(lb: LoadBalancer, cilium: Version) -> dict[str, Any]:
    """The Helm values of the stack's mode; none when the mode is ``none`` (the chart's defaults: all off)."""
    if lb.mode == "none":
        return {}
    values: dict[str, Any] = {"bgpControlPlane": {"enabled": lb.mode == "bgp"}}
    if cilium >= MODE_SINCE["l2"]:
        l2: dict[str, Any] = {"enabled": lb.mode == "l2"}
        if lb.mode == "l2" and lb.l2 is not None:
            duration, renew, retry = lb.l2.timings()
            l2 |= {"leaseDuration": duration, "leaseRenewDeadline": renew, "leaseRetryPeriod": retry}
        values["l2announcements"] = l2
    if lb.mode == "l2" and cilium < V1_17:
        # Chart <= 1.16 only: later charts have no switch (the agent serves external IPs with KPR).
        values["externalIPs"] = {"enabled": True}
    if cilium >= MODE_SINCE["nodeipam"]:
        values["nodeIPAM"] = {"enabled": lb.mode == "nodeipam"}
    if cilium >= V1_17:
        values["defaultLBServiceIPAM"] = "nodeipam" if lb.mode == "nodeipam" else "lbipam"
    limit = rate_limit(lb, cilium)
    if limit is not None:
        rate: dict[str, Any] = {"qps": limit.qps, "burst": limit.burst}
        if limit.operator_qps is not None:
            rate["operator"] = {"qps": limit.operator_qps, "burst": limit.operator_burst}
        values["k8sClientRateLimit"] = rate
    return values


def pool_api_version(cilium: Version) -> str:
    return "cilium.io/v2" if cilium >= V1_18 else "cilium.io/v2alpha1"


def bgp_api_version(cilium: Version) -> str:
    return "cilium.io/v2" if cilium >= V1_18 else "cilium.io/v2alpha1"


def _metadata(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "labels": {**PART_OF, **(labels or {})}}


def _pool(pool: Pool, cilium: Version) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if cilium >= V1_15:
        spec["blocks"] = [
            {"cidr": block} if isinstance(block, str) else {"start": block.start, "stop": block.stop}
            for block in pool.blocks
        ]
    else:
        spec["cidrs"] = [{"cidr": block} for block in pool.blocks if isinstance(block, str)]
    if pool.service_selector:
        spec["serviceSelector"] = {"matchLabels": dict(pool.service_selector)}
    return {
        "apiVersion": pool_api_version(cilium),
        "kind": "CiliumLoadBalancerIPPool",
        "metadata": _metadata(pool.name),
        "spec": spec,
    }


def _l2_policy(l2: L2) -> dict[str, Any]:
    spec: dict[str, Any] = {"interfaces": list(l2.interfaces), "loadBalancerIPs": True, "externalIPs": False}
    if l2.node_selector:
        spec["nodeSelector"] = {"matchLabels": dict(l2.node_selector)}
    return {
        "apiVersion": "cilium.io/v2alpha1",
        "kind": "CiliumL2AnnouncementPolicy",
        "metadata": _metadata(L2_POLICY_NAME),
        "spec": spec,
    }


def peer_config_name(peer: BgpPeer) -> str:
    return f"k3s-cilium-{peer.name}"


def peer_secret_name(peer: BgpPeer) -> str:
    return f"k3s-cilium-bgp-{peer.name}"


# Selects every Service (docs: bgp-control-plane-configuration, "Service Virtual IPs": a NotIn
# expression on a label nobody sets; an empty selector selects none).
_EVERY_SERVICE = {
    "matchExpressions": [{"key": "k3s-cilium.io/no-such-label", "operator": "NotIn", "values": ["never"]}]
}


def _bgp(bgp: Bgp, cilium: Version) -> list[dict[str, Any]]:
    api = bgp_api_version(cilium)
    instance = {
        "name": f"instance-{bgp.local_asn}",
        "localASN": bgp.local_asn,
        "peers": [
            {
                "name": peer.name,
                "peerASN": peer.asn,
                "peerAddress": peer.address,
                "peerConfigRef": {"name": peer_config_name(peer)},
            }
            for peer in bgp.peers
        ],
    }
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": api,
            "kind": "CiliumBGPClusterConfig",
            "metadata": _metadata(BGP_CLUSTER_CONFIG_NAME),
            "spec": {"bgpInstances": [instance]},
        }
    ]
    for peer in bgp.peers:
        spec: dict[str, Any] = {
            "families": [{"afi": "ipv4", "safi": "unicast", "advertisements": {"matchLabels": BGP_ADVERTISE_LABELS}}]
        }
        timers = {
            key: value
            for key, value in (("holdTimeSeconds", peer.hold_time), ("keepAliveTimeSeconds", peer.keep_alive))
            if value is not None
        }
        if timers:
            spec["timers"] = timers
        if peer.password is not None:
            spec["authSecretRef"] = peer_secret_name(peer)
        objects.append(
            {
                "apiVersion": api,
                "kind": "CiliumBGPPeerConfig",
                "metadata": _metadata(peer_config_name(peer)),
                "spec": spec,
            }
        )
    advertisements: list[dict[str, Any]] = []
    if "loadBalancerIPs" in bgp.advertise:
        advertisements.append(
            {"advertisementType": "Service", "service": {"addresses": ["LoadBalancerIP"]}, "selector": _EVERY_SERVICE}
        )
    if "podCIDRs" in bgp.advertise:
        advertisements.append({"advertisementType": "PodCIDR"})
    objects.append(
        {
            "apiVersion": api,
            "kind": "CiliumBGPAdvertisement",
            "metadata": _metadata(BGP_ADVERTISEMENT_NAME, BGP_ADVERTISE_LABELS),
            "spec": {"advertisements": advertisements},
        }
    )
    return objects


def objects(lb: LoadBalancer, cilium: Version) -> list[dict[str, Any]]:
    """The Cilium objects of the stack's mode, in the order they are created; none for ``none``/``nodeipam``.

    No secret is in them: a BGP password is only named (``authSecretRef``), its Secret is made apart.
    """
    made = [_pool(pool, cilium) for pool in lb.pools]
    if lb.mode == "l2" and lb.l2 is not None:
        made.append(_l2_policy(lb.l2))
    if lb.mode == "bgp" and lb.bgp is not None:
        made += _bgp(lb.bgp, cilium)
    return made


def crd_names(lb: LoadBalancer) -> list[str]:
    """The CRDs the objects need (the operator registers them when it starts with the feature on)."""
    kinds = {"CiliumLoadBalancerIPPool": "ciliumloadbalancerippools"}
    if lb.mode == "l2":
        kinds["CiliumL2AnnouncementPolicy"] = "ciliuml2announcementpolicies"
    if lb.mode == "bgp":
        kinds |= {
            "CiliumBGPClusterConfig": "ciliumbgpclusterconfigs",
            "CiliumBGPPeerConfig": "ciliumbgppeerconfigs",
            "CiliumBGPAdvertisement": "ciliumbgpadvertisements",
        }
    return [f"{plural}.cilium.io" for plural in kinds.values()] if lb.pools else []


# --- the address the verification asks for -------------------------------------------------------


def ip_annotation(cilium: Version) -> str:
    return "lbipam.cilium.io/ips" if cilium >= V1_16 else "io.cilium/lb-ipam-ips"


def verify_address(lb: LoadBalancer) -> str | None:
    """The address the verification's LoadBalancer Service asks for: in the first pool's first block, the
    last address but one (the first and last of a block are not to be asked for), so it is known offline."""
    if not lb.pools:
        return None
    first, last, _ = next(lb.pools[0].ranges())
    size = int(last) - int(first) + 1
    return str(last - 1 if size > 2 else first)


def lease_name(namespace: str, service: str) -> str:
    """The lease the announcing node holds for a Service (docs: l2-announcements, "Leader election")."""
    return f"{L2_LEASE_PREFIX}{namespace}-{service}"


def plan(lb: LoadBalancer, cilium: Version) -> dict[str, Any] | None:
    """The loadBalancer part of the offline plan; None for mode ``none``. No password is shown."""
    if lb.mode == "none":
        return None
    entry: dict[str, Any] = {
        "mode": lb.mode,
        "pools": {pool.name: [text for _, _, text in pool.ranges()] for pool in lb.pools},
        "objects": [f"{o['kind']}/{o['metadata']['name']} ({o['apiVersion']})" for o in objects(lb, cilium)],
    }
    if lb.bgp is not None:
        entry["secrets"] = [
            f"Secret {BGP_SECRETS_NAMESPACE}/{peer_secret_name(peer)} (password of peer {peer.name})"
            for peer in lb.bgp.peers
            if peer.password is not None
        ]
    limit = rate_limit(lb, cilium)
    if limit is not None:
        entry["rateLimit"] = {
            "agent": {"qps": limit.qps, "burst": limit.burst},
            "why": limit.reason,
            **({"operator": {"qps": limit.operator_qps, "burst": limit.operator_burst}} if limit.operator_qps else {}),
        }
        duration, renew, retry = lb.l2.timings() if lb.l2 else ("", "", "")
        entry["leases"] = {"duration": duration, "renewDeadline": renew, "retryPeriod": retry}
    return entry


def plan_text(entry: dict[str, Any]) -> list[str]:
    lines = [f"load balancer: mode {entry['mode']}"]
    for name, blocks in entry["pools"].items():
        lines.append(f"  pool {name}: {', '.join(blocks)}")
    lines += [f"  object {text}" for text in entry["objects"]]
    lines += [f"  {text}" for text in entry.get("secrets", [])]
    if "rateLimit" in entry:
        limit = entry["rateLimit"]
        text = f"  API client rate limit: agent {limit['agent']['qps']} QPS / burst {limit['agent']['burst']}"
        if "operator" in limit:
            text += f", operator {limit['operator']['qps']} / {limit['operator']['burst']}"
        lines += [f"{text} ({limit['why']})"]
        leases = entry["leases"]
        lines.append(
            f"  leases: duration {leases['duration']}, renew deadline {leases['renewDeadline']}, "
            f"retry period {leases['retryPeriod']}"
        )
    return lines
