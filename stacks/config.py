"""The stack configuration contract (namespace ``k3s-cilium``) and its validation.

Everything a stack may set is declared here once; ``Pulumi.yaml`` declares the
same keys for the Pulumi CLI and the README's config reference is generated from
these models (tests fail when the three drift apart).

Invalid input raises :class:`ConfigError` listing one line per problem, each
naming the key, the bad value and what is allowed, before any resource exists.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stacks import airgap, load_balancer
from stacks.airgap import Airgap
from stacks.encryption import Encryption
from stacks.encryption import Mode as EncryptionMode
from stacks.gateway_api import GatewayApi
from stacks.hubble import Hubble
from stacks.load_balancer import LoadBalancer
from stacks.model import LABEL_KEY, LABEL_VALUE, ConfigModel

NAMESPACE = "k3s-cilium"
# Declared in Pulumi.yaml and read only through pulumi.Config, never by the model.
SECRET_KEYS = ("sshPrivateKey", "sshPrivateKeyPassword", "k3sToken", "registryCredentials", "ipsecKey")

TIERS = ("baseline", "kpr", "performance", "extreme")
Tier = Literal["baseline", "kpr", "performance", "extreme"]

# Oldest and newest Cilium minor this program renders values for.
SUPPORTED_CILIUM = (Version("1.13"), Version("1.21"))

# Prime table sizes Cilium accepts for Maglev (docs: kube-proxy-free guide,
# "Maglev Consistent Hashing": M must be prime and one of these).
MAGLEV_TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_POSIX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_K3S_VERSION = re.compile(r"^v1\.\d+\.\d+\+k3s\d+$")
_CILIUM_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_HOST_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+={0,3}$"
)
_TAINT = re.compile(r"^(?P<key>[^=:]+)(=(?P<value>[^:]*))?:(?P<effect>NoSchedule|PreferNoSchedule|NoExecute)$")
K3sComponent = Literal[
    "coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes", "gateway-api-crd"
]
_DEFAULT_DISABLED: list[K3sComponent] = ["servicelb", "traefik"]


class ConfigError(ValueError):
    """Invalid stack configuration: one human-readable line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid k3s-cilium stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


# --- field checks ---------------------------------------------------------------------------


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            "must be a DNS-1123 label: lowercase letters, digits and '-', 1-63 characters, "
            "starting and ending with a letter or digit (e.g. 'server-1')"
        )
    return value


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _DNS_NAME.match(value) or value.replace(".", "").isdigit():
        raise ValueError("must be an IPv4/IPv6 address or a DNS name like 'node1.example.com'")
    return value


def _posix_user(value: str) -> str:
    if not _POSIX_USER.match(value):
        raise ValueError("must be a POSIX user name: lowercase letters, digits, '_' and '-', at most 32")
    return value


def _ipv4_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"must be an IPv4 network in CIDR form like '10.42.0.0/16' ({exc})") from None
    if net.version != 4:
        raise ValueError("must be an IPv4 CIDR; IPv6 and dual-stack are not supported yet")
    return value


def _ipv4(value: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IPv4 address like '192.168.1.10'") from None
    if addr.version != 4:
        raise ValueError("must be an IPv4 address; IPv6 node IPs are not supported yet")
    return value


def _host_key(value: str) -> str:
    value = value.strip()
    if not _HOST_KEY.match(value):
        raise ValueError(
            "must be one public host key line without a comment, e.g. 'ssh-ed25519 AAAAC3Nza...' "
            "(take it from `ssh-keyscan -t ed25519 <host>`, dropping the host name)"
        )
    if value.startswith("ssh-rsa "):
        # pulumi-command offers only the pinned key's type as host-key algorithm; for ssh-rsa
        # that is SHA-1 signatures, which OpenSSH 8.8+ and RHEL 9's default policy refuse.
        raise ValueError(
            "is an ssh-rsa key, which cannot be pinned: the SSH client would offer only SHA-1 RSA signatures, "
            "which OpenSSH 8.8+ and RHEL 9 refuse ('no common algorithm for host key'); pin the host's ed25519 "
            "or ECDSA key instead (`ssh-keyscan -t ed25519 <host>`)"
        )
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
Host = Annotated[str, AfterValidator(_host)]
PosixUser = Annotated[str, AfterValidator(_posix_user)]
Ipv4Cidr = Annotated[str, AfterValidator(_ipv4_cidr)]
Ipv4Address = Annotated[str, AfterValidator(_ipv4)]
HostKey = Annotated[str, AfterValidator(_host_key)]
Port = Annotated[int, Field(ge=1, le=65535)]




# --- sections -----------------------------------------------------------------------------------


class Bastion(ConfigModel):
    """A jump host that SSH connections go through (pulumi-command's ``proxy``)."""

    host: Host = Field(description="Address of the jump host.")
    port: Port = Field(22, description="SSH port of the jump host.")
    user: PosixUser = Field("root", description="User on the jump host.")
    host_key: HostKey | None = Field(None, description="Pinned public host key of the jump host.")


class Ssh(ConfigModel):
    user: PosixUser = Field("root", description="Default SSH user; non-root users need passwordless `sudo -n`.")
    port: Port = Field(22, description="Default SSH port.")
    bastion: Bastion | None = Field(None, description="Optional jump host for every node.")


class Node(ConfigModel):
    name: DnsLabel = Field(description="Kubernetes node name (DNS-1123 label), unique in the stack.")
    host: Host = Field(description="Address Pulumi connects to over SSH.")
    role: Literal["server", "agent"] = Field(description="`server` (control plane, embedded etcd) or `agent`.")
    port: Port | None = Field(None, description="SSH port; defaults to `ssh.port`.")
    user: PosixUser | None = Field(None, description="SSH user; defaults to `ssh.user`.")
    host_key: HostKey | None = Field(
        None, description="Pinned SSH host key (`ssh-ed25519 AAAA...`); strongly recommended."
    )
    node_ip: Ipv4Address | None = Field(
        None, description="IP the node uses inside the cluster (K3s `node-ip`); defaults to `host` when it is an IP."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Kubernetes node labels.")
    taints: list[str] = Field(default_factory=list, description="Taints as `key=value:Effect`.")

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not LABEL_KEY.match(key) or len(key) > 317:
                raise ValueError(
                    f"label key {key!r} is not a valid Kubernetes label key (e.g. 'tier' or 'example.com/tier')"
                )
            if not LABEL_VALUE.match(value):
                raise ValueError(
                    f"label {key}={value!r}: value must be at most 63 of [A-Za-z0-9-_.], "
                    "starting and ending alphanumeric"
                )
        return labels

    @field_validator("taints")
    @classmethod
    def _taints(cls, taints: list[str]) -> list[str]:
        for taint in taints:
            match = _TAINT.match(taint)
            if not match or not LABEL_KEY.match(match["key"]) or not LABEL_VALUE.match(match["value"] or ""):
                raise ValueError(
                    f"taint {taint!r} must look like 'key=value:Effect' or 'key:Effect' with Effect one of "
                    "NoSchedule, PreferNoSchedule, NoExecute"
                )
        return taints

    @property
    def internal_ip(self) -> str | None:
        """The node IP inside the cluster, when it is known before the node is reached."""
        if self.node_ip:
            return self.node_ip
        try:
            return str(ipaddress.IPv4Address(self.host))
        except ValueError:
            return None


def _local_path(value: str) -> str:
    if not value.strip() or "\n" in value or "\x00" in value:
        raise ValueError("must be a directory path on the machine running Pulumi (one line)")
    return value


LocalPath = Annotated[str, AfterValidator(_local_path)]


class Drain(ConfigModel):
    timeout: int = Field(
        300, ge=10, le=86400, description="Seconds a node's drain may take before the upgrade stops, naming the pods."
    )
    delete_empty_dir_data: bool = Field(
        False,
        description="Evict pods with emptyDir volumes too (their data is lost; kubectl's --delete-emptydir-data).",
    )
    ignore_daemon_sets: bool = Field(
        True, description="Leave DaemonSet pods (Cilium's agent among them) in place, as kubectl's --ignore-daemonsets."
    )


class K3sUpgrade(ConfigModel):
    allow_downgrade: bool = Field(
        False,
        description="Let a `pulumi up` move K3s to an older release (the upgrade gate refuses it otherwise).",
    )
    max_unavailable: int = Field(
        1, ge=1, le=1000, description="Agents drained and upgraded at once (servers always go one at a time)."
    )
    drain: Drain = Field(default_factory=lambda: Drain(), description="How each node is drained before its upgrade.")
    snapshot_to: LocalPath | None = Field(
        None,
        description="A directory where Pulumi runs (absolute, or relative to the project) that the etcd snapshot "
        "taken before a K3s version change is copied into, over SSH, before any node is touched.",
    )


class CiliumUpgrade(ConfigModel):
    latest_patch_first: bool = Field(
        True,
        description="Refuse a move to the next Cilium minor from an older patch of the current one than the newest "
        "this program knows (Cilium's upgrade guide: latest patch first).",
    )


class K3s(ConfigModel):
    version: str = Field(
        "v1.33.3+k3s1", description="Pinned K3s release (`vX.Y.Z+k3sN`); the install script downloads exactly this."
    )
    cluster_cidr: Ipv4Cidr = Field("10.42.0.0/16", description="Pod network (K3s `cluster-cidr`).")
    service_cidr: Ipv4Cidr = Field("10.43.0.0/16", description="Service network (K3s `service-cidr`).")
    api_endpoint: Host | None = Field(
        None,
        description="Address clients use for the API server (a VIP or DNS name); added to `tls-san`. "
        "Defaults to the first server's address.",
    )
    disable: list[K3sComponent] = Field(
        default_factory=lambda: list(_DEFAULT_DISABLED),
        description="K3s packaged components to disable.",
    )
    open_firewall: bool = Field(
        False,
        description="Where firewalld runs, preflight opens the ports K3s and Cilium need (and trusts the pod and "
        "service networks) instead of failing.",
    )
    upgrade: K3sUpgrade = Field(
        default_factory=lambda: K3sUpgrade(),
        description="How a version change may go (README \"Upgrades\").",
    )

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _K3S_VERSION.match(value):
            raise ValueError("must be a pinned K3s release like 'v1.33.3+k3s1' (see the K3s releases page)")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> K3s:
        if ipaddress.ip_network(self.cluster_cidr).overlaps(ipaddress.ip_network(self.service_cidr)):
            raise ValueError(
                f"clusterCidr {self.cluster_cidr} and serviceCidr {self.service_cidr} overlap; choose disjoint networks"
            )
        return self


class Cilium(ConfigModel):
    version: str = Field("1.19.6", description="Cilium chart version (`X.Y.Z`, 1.13 to 1.20).")
    native_routing_cidr: Ipv4Cidr | None = Field(
        None,
        description="Network reachable without masquerading (`ipv4NativeRoutingCIDR`); defaults to `k3s.clusterCidr`.",
    )
    node_port_range: str = Field("30000-32767", description="NodePort range `low-high`.")
    maglev_table_size: int = Field(16381, description="Maglev lookup table size (a prime Cilium accepts).")
    dsr_dispatch: Literal["opt", "ipip", "geneve"] | None = Field(
        None, description="How DSR carries the service address: `opt` (IP option), `ipip` or `geneve`. Default `opt`."
    )
    mtu: int | None = Field(
        None, ge=1280, le=9216, description="Device MTU for Cilium; with feature `jumboMtu` defaults to 9000."
    )
    xdp_mode: Literal["native", "best-effort"] | None = Field(
        None, description="XDP acceleration mode when feature `xdp` is on (`best-effort` needs Cilium >= 1.15)."
    )
    k8s_service_host: Host | None = Field(
        None, description="API server address the agent uses; defaults to K3s's node-local load balancer 127.0.0.1."
    )
    k8s_service_port: Port | None = Field(None, description="API server port the agent uses; defaults to 6444.")
    upgrade_compatibility: str | None = Field(
        None,
        description="The Cilium minor (`1.X`) this cluster was first installed with: keeps the chart's "
        "version-dependent defaults of that release through upgrades (chart `upgradeCompatibility`).",
    )
    upgrade: CiliumUpgrade = Field(
        default_factory=lambda: CiliumUpgrade(), description="How a Cilium version change may go (README \"Upgrades\")."
    )
    values: dict[str, Any] = Field(
        default_factory=dict, description="Raw Helm values deep-merged over the rendered ones, last."
    )

    @field_validator("upgrade_compatibility")
    @classmethod
    def _upgrade_compatibility(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"1\.(0|[1-9]\d?)", value):
            raise ValueError("must be the Cilium minor the cluster was first installed with, like '1.16'")
        return value

    @model_validator(mode="after")
    def _installed_before(self) -> Cilium:
        if self.upgrade_compatibility and Version(self.upgrade_compatibility) > self.parsed_version:
            raise ValueError(
                f"upgradeCompatibility: {self.upgrade_compatibility} is newer than version {self.version}; set it "
                "to the minor the cluster was first installed with (never newer than the one it runs)"
            )
        return self

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _CILIUM_VERSION.match(value):
            raise ValueError("must be a Cilium release like '1.19.6' (no 'v' prefix)")
        try:
            parsed = Version(value)
        except InvalidVersion:
            raise ValueError("must be a Cilium release like '1.19.6'") from None
        low, high = SUPPORTED_CILIUM
        if not low <= parsed < high:
            raise ValueError("must be between 1.13.0 and 1.20.x: the Helm values are rendered per minor version")
        return value

    @field_validator("node_port_range")
    @classmethod
    def _node_port_range(cls, value: str) -> str:
        match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", value)
        if not match:
            raise ValueError("must look like '30000-32767'")
        low, high = int(match[1]), int(match[2])
        if not (1 <= low < high <= 65535):
            raise ValueError("must be two ports 1-65535 with the first lower than the second")
        return value

    @field_validator("maglev_table_size")
    @classmethod
    def _maglev(cls, value: int) -> int:
        if value not in MAGLEV_TABLE_SIZES:
            raise ValueError(f"must be one of the primes Cilium accepts: {', '.join(map(str, MAGLEV_TABLE_SIZES))}")
        return value

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)


FEATURE_NAMES = (
    "nativeRouting",
    "kubeProxyReplacement",
    "bpfMasquerade",
    "dsr",
    "maglev",
    "bypassConntrack",
    "bpfHostRouting",
    "bigTcp",
    "bandwidthManager",
    "bbr",
    "xdp",
    "jumboMtu",
    "mapSizing",
    "hubble",
    "netkit",
    "hostTuning",
    "gatewayApi",
    "ingress",
)


class Features(ConfigModel):
    """Per-feature switches; a feature left unset follows the tier."""

    native_routing: bool | None = Field(None, description="Native routing instead of VXLAN tunnelling.")
    kube_proxy_replacement: bool | None = Field(
        None, description="Cilium replaces kube-proxy (K3s `disable-kube-proxy`)."
    )
    bpf_masquerade: bool | None = Field(None, description="eBPF masquerading instead of iptables.")
    dsr: bool | None = Field(None, description="Direct Server Return for remote service backends.")
    maglev: bool | None = Field(None, description="Maglev consistent hashing for backend selection.")
    bypass_conntrack: bool | None = Field(None, description="Skip netfilter connection tracking for pod traffic.")
    bpf_host_routing: bool | None = Field(None, description="eBPF host routing (bypasses the upper host stack).")
    big_tcp: bool | None = Field(None, description="IPv4 BIG TCP (larger GSO/GRO packets).")
    bandwidth_manager: bool | None = Field(None, description="EDT-based bandwidth manager.")
    bbr: bool | None = Field(None, description="BBR congestion control for pods.")
    xdp: bool | None = Field(None, description="XDP acceleration of NodePort/LoadBalancer services.")
    jumbo_mtu: bool | None = Field(None, description="Jumbo frames (MTU 9000 unless `cilium.mtu` says otherwise).")
    map_sizing: bool | None = Field(None, description="Larger BPF maps (dynamic size ratio, LB map).")
    hubble: bool | None = Field(None, description="Hubble flow observability.")
    netkit: bool | None = Field(None, description="netkit device mode instead of veth.")
    host_tuning: bool | None = Field(None, description="tuned profile, CPU governor and IRQ spreading on hosts.")
    gateway_api: bool | None = Field(None, description="Cilium's Gateway API implementation (needs Envoy).")
    ingress: bool | None = Field(None, description="Cilium's Ingress controller (needs Envoy).")
    encryption: EncryptionMode = Field(
        "none", description="Transparent encryption between nodes: `none`, `wireguard` or `ipsec`."
    )

    def overrides(self) -> dict[str, bool]:
        """The on/off features the stack set explicitly, by camelCase name."""
        dumped = self.model_dump(by_alias=True)
        return {name: dumped[name] for name in FEATURE_NAMES if dumped[name] is not None}


class Verify(ConfigModel):
    smoke: bool = Field(True, description="Deploy an nginx NodePort service and probe it from every node.")
    connectivity_test: bool = Field(False, description="Run `cilium connectivity test` from the first server.")
    benchmark: bool = Field(False, description="Run netperf TCP_RR/TCP_STREAM and export the figures.")
    from_runner: bool = Field(
        False,
        description="Also probe the LoadBalancer test Service's address from where Pulumi runs (it must reach "
        "the nodes' network).",
    )


def node_set_problems(names: list[Any], roles: list[Any]) -> list[str]:
    """Problems of the node list as a whole (key ``nodes``): repeated names, no server."""
    problems = []
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"node names must be unique; repeated: {', '.join(duplicates)}")
    if "server" not in roles:
        problems.append("at least one node needs role 'server'")
    return problems


class StackConfig(ConfigModel):
    tier: Tier = Field("kpr", description="Tuning tier: baseline, kpr, performance or extreme.")
    nodes: list[Node] = Field(description="The hosts of the cluster; at least one server.")
    ssh: Ssh = Field(default_factory=lambda: Ssh(), description="SSH defaults for every node.")
    k3s: K3s = Field(default_factory=lambda: K3s(), description="K3s settings.")
    cilium: Cilium = Field(default_factory=lambda: Cilium(), description="Cilium settings.")
    features: Features = Field(default_factory=lambda: Features(), description="Per-feature overrides of the tier.")
    verify: Verify = Field(default_factory=lambda: Verify(), description="Verification checks to run after deploy.")
    load_balancer: LoadBalancer = Field(
        default_factory=lambda: LoadBalancer(),
        description="LoadBalancer Services through Cilium (LB-IPAM with L2 announcements or BGP, or node IPAM).",
    )
    encryption: Encryption = Field(
        default_factory=lambda: Encryption(),
        description="Options of the transparent encryption that `features.encryption` picks.",
    )
    hubble: Hubble = Field(
        default_factory=lambda: Hubble(),
        description="Hubble relay, UI and metrics (with `features.hubble`).",
    )
    gateway_api: GatewayApi = Field(
        default_factory=lambda: GatewayApi(),
        description="Gateway API CRD bundle and listener options (with `features.gatewayApi` / `features.ingress`).",
    )
    airgap: Airgap = Field(
        default_factory=lambda: Airgap(),
        description="Air-gapped installs: K3s, registries, the Cilium chart and images from internal sources.",
    )

    @model_validator(mode="after")
    def _cluster_shape(self) -> StackConfig:
        # One "<key>: <problem>" line each: a whole-config check has no field location of its own.
        node_set = node_set_problems([n.name for n in self.nodes], [n.role for n in self.nodes])
        problems = [f"nodes: {p}" for p in node_set]
        hosts = [(n.host, n.port or self.ssh.port) for n in self.nodes]
        repeated_hosts = sorted({f"{h}:{p}" for h, p in hosts if hosts.count((h, p)) > 1})
        if repeated_hosts:
            problems.append(f"nodes: two nodes share the same SSH address: {', '.join(repeated_hosts)}")
        if self.cilium.native_routing_cidr:
            routed = ipaddress.ip_network(self.cilium.native_routing_cidr)
            if not ipaddress.ip_network(self.k3s.cluster_cidr).subnet_of(routed):  # type: ignore[arg-type]
                problems.append(
                    f"cilium.nativeRoutingCidr: {self.cilium.native_routing_cidr} must contain "
                    f"k3s.clusterCidr {self.k3s.cluster_cidr}, or pod traffic gets masqueraded"
                )
        # Local files, digests and URLs of the airgap block, before any resource (stacks/airgap.py).
        problems += airgap.problems(self.airgap, self.cilium.version)
        # Every image the chart deploys must be one the registry serves; the K3s release must have the flags.
        problems += airgap.image_problems(self.airgap, self.cilium.version, self.cilium.values)
        problems += airgap.default_endpoint_problems(self.airgap, self.k3s.version)
        problems += load_balancer.problems(
            self.load_balancer,
            self.cilium.parsed_version,
            load_balancer.Networks(
                cluster_cidr=self.k3s.cluster_cidr,
                service_cidr=self.k3s.service_cidr,
                node_addresses=tuple((n.name, n.internal_ip) for n in self.nodes if n.internal_ip),
            ),
            servicelb_disabled="servicelb" in self.k3s.disable,
        )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def servers(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "server"]

    @property
    def agents(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "agent"]

    @property
    def native_routing_cidr(self) -> str:
        return self.cilium.native_routing_cidr or self.k3s.cluster_cidr

    @property
    def api_endpoint(self) -> str:
        return self.k3s.api_endpoint or self.servers[0].host

    def ssh_user(self, node: Node) -> str:
        return node.user or self.ssh.user

    def ssh_port(self, node: Node) -> int:
        return node.port or self.ssh.port


# --- parsing --------------------------------------------------------------------------------------


def _location(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part and not str(part).startswith("function-"):
            path += ("." if path else "") + str(part)
    return f"{NAMESPACE}:{path}" if path else NAMESPACE


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config section model that holds the key at ``loc`` (for listing its allowed keys)."""
    model: Any = StackConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        annotation = fields[part].annotation if part in fields else None
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model if isinstance(model, type) else None


_KEYED_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\[\d+\])?: ")


def _describe(error: Any) -> list[str]:
    where = _location(error["loc"])
    kind = error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        # Whole-config checks put the key at the start of each line.
        return [f"{NAMESPACE}:{line}" for line in message.splitlines()]
    lines = message.splitlines()
    if kind == "value_error" and isinstance(error.get("input"), dict) and all(map(_KEYED_LINE.match, lines)):
        # A section's own checks name the key inside the section at the start of each line.
        return [f"{where}.{line}" for line in lines]
    return [_describe_field(where, kind, message, error)]


def _describe_field(where: str, kind: str, message: str, error: Any) -> str:
    if kind == "missing":
        return f"{where}: is required but not set"
    if kind == "extra_forbidden":
        section = _section_at(tuple(error["loc"]))
        allowed = f"allowed: {', '.join(config_keys(section))}" if section else "see the config reference in README.md"
        return f"{where}: unknown key; {allowed}"
    shown = error.get("input")
    if isinstance(shown, (dict, list)) or shown is None:
        return f"{where}: {message}"
    return f"{where}: {shown!r} {message}" if kind == "value_error" else f"{where}: {shown!r}: {message}"


def config_keys(model: type[BaseModel]) -> list[str]:
    """The camelCase keys a config section accepts, in declaration order."""
    return [field.alias or name for name, field in model.model_fields.items()]


def parse(raw: dict[str, Any]) -> StackConfig:
    """Validate raw config (camelCase keys without namespace) into a :class:`StackConfig`.

    Raises :class:`ConfigError` with every problem found, not just the first one.
    """
    allowed = config_keys(StackConfig)
    unknown = sorted(set(raw) - set(allowed) - set(SECRET_KEYS))
    if unknown:
        raise ConfigError([f"{NAMESPACE}:{key}: unknown config key; allowed: {', '.join(allowed)}" for key in unknown])
    values = {k: v for k, v in raw.items() if k not in SECRET_KEYS}
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        problems = [line for e in exc.errors() for line in _describe(e)]
    # Field errors stop pydantic before the whole-config checks; run the node-set
    # checks on the raw list too, so one run reports every problem.
    nodes = values.get("nodes")
    if isinstance(nodes, list) and all(isinstance(n, dict) for n in nodes):
        shape = node_set_problems([n.get("name") for n in nodes], [n.get("role") for n in nodes])
        problems += [f"{NAMESPACE}:nodes: {p}" for p in shape if not any(p in known for known in problems)]
    raise ConfigError(problems)
