"""What the preflight step checks on each host, computed offline from the stack.

``components/scripts/preflight.sh`` runs on every node before anything is
installed anywhere; :func:`params` is its parameter set. Besides kernel,
architecture and systemd it checks what really stops K3s and Cilium on real
distributions (K3s docs, "Requirements"): the commands the install and the
checks need (K3s brings its own iptables, so the host's is not one of them),
firewalld closing the ports K3s and Cilium use, ``nm-cloud-setup``
(k3s-io/k3s#8805) and SELinux enforcing without ``k3s-selinux``.

It also reads the NIC that carries the node's address. Cilium turns BIG TCP
off on a NIC whose ``tso_max_size`` is 64 KiB or less (virtio and most cloud
NICs; ``pkg/datapath/linux/bigtcp``) and attaches XDP natively only where the
driver supports it. A tier that presets such a feature leaves it off on that
node, says so in the preflight facts (``skipped=bigTcp,xdp``), and the node's
verification does not assert it; a stack that forces it fails preflight naming
node and NIC.

With transparent encryption (``features.encryption``) every node needs the
kernel side of it (:func:`stacks.encryption.requirements`): WireGuard's
module, as Cilium has no userspace fallback (off here, gone from 1.17), or
IPsec's XFRM user interface and ESP. Each node checks its own kernel and a
node that lacks it fails naming the node and the fix
(:func:`stacks.encryption.wireguard_module_problem`,
:func:`~stacks.encryption.ipsec_modules_problem`). WireGuard's UDP port joins
the firewalld check; IPsec's ESP is an IP protocol, not a port, and is left to
the plan's requirements.
"""

from __future__ import annotations

from collections.abc import Mapping

from stacks import encryption
from stacks.config import Node, StackConfig
from stacks.features import Resolved, kernel_text

# Features whose effect depends on the node's NIC, and the agent-status
# expectation keys a per-node skip takes out of that node's check.
NIC_FEATURES: dict[str, tuple[str, ...]] = {"bigTcp": ("bigTcp",), "xdp": ("xdp",)}

# Drivers with native XDP, from the driver table of Cilium's kube-proxy-free
# guide ("LoadBalancer & NodePort XDP Acceleration", added by cilium/cilium
# commit 55fccf68 "bpf, docs: add list of XDP supported drivers"), as the sysfs
# device driver names them (mlx4 is mlx4_core there, dpaa2 fsl_dpaa2_eth).
XDP_NATIVE_DRIVERS = (
    "bnxt_en",
    "bond",
    "cpsw",
    "ena",
    "fsl_dpaa2_eth",
    "gve",
    "hv_netvsc",
    "i40e",
    "ice",
    "igb",
    "igc",
    "ixgbe",
    "ixgbevf",
    "mana",
    "mlx4_core",
    "mlx5_core",
    "mvneta",
    "mvpp2",
    "netsec",
    "nfp",
    "nicvf",
    "qede",
    "sfc",
    "tun",
    "veth",
    "virtio_net",
)

KUBELET_PORT = "10250/tcp"
API_PORT = "6443/tcp"
ETCD_PORTS = "2379-2380/tcp"
CILIUM_HEALTH_PORT = "4240/tcp"
HUBBLE_PORT = "4244/tcp"
VXLAN_PORT = "8472/udp"
GENEVE_PORT = "6081/udp"
WIREGUARD_PORT = f"{encryption.WIREGUARD_PORT}/udp"
# Stands for the missing kernel modules in ENCRYPTION_PROBLEM; preflight.sh puts in the ones it found missing.
MISSING_MARK = "@MISSING@"


def nic_feature_modes(cfg: StackConfig, features: Resolved) -> dict[str, str]:
    """Enabled NIC-dependent features: ``skip`` (tier preset, or XDP best-effort) or ``require`` (forced)."""
    modes: dict[str, str] = {}
    for name in NIC_FEATURES:
        if name not in features:
            continue
        forced = features.origin[name].startswith("features.")
        if name == "xdp" and cfg.cilium.xdp_mode == "best-effort":
            # best-effort means "where the NIC can": Cilium itself leaves other NICs alone.
            forced = False
        modes[name] = "require" if forced else "skip"
    return modes


def firewall_ports(cfg: StackConfig, features: Resolved, node: Node) -> list[str]:
    """The ports the node must accept (K3s docs "Inbound Rules"; Cilium docs "Firewall Rules")."""
    ports = []
    if node.role == "server":
        ports.append(API_PORT)
        if len(cfg.servers) > 1:
            ports.append(ETCD_PORTS)
    ports += [KUBELET_PORT, CILIUM_HEALTH_PORT]
    if "nativeRouting" not in features:
        ports.append(GENEVE_PORT if features.dsr_dispatch == "geneve" else VXLAN_PORT)
    if cfg.features.encryption == "wireguard":
        ports.append(WIREGUARD_PORT)
    if "hubble" in features:
        ports.append(HUBBLE_PORT)
    return ports


def required_commands(cfg: StackConfig, node: Node) -> list[str]:
    """``<cmd>[|<alternative>] <why>`` lines: what the install and this node's checks run."""
    lines = ["curl|wget the K3s install script download"]
    if cfg.verify.smoke:
        lines.append("curl verify.smoke (the probes check runs curl on every node)")
    if cfg.verify.connectivity_test and node == cfg.servers[0]:
        minor = f"{cfg.cilium.parsed_version.major}.{cfg.cilium.parsed_version.minor}"
        lines.append(
            "cilium verify.connectivityTest (cilium connectivity test runs on the first server): install the "
            f"cilium-cli release for Cilium {minor} into /usr/local/bin (docs.cilium.io 'Install the Cilium CLI', "
            "checksum-verified) or set verify.connectivityTest: false"
        )
        lines.append("timeout verify.connectivityTest (coreutils timeout bounds the test)")
    return lines


def encryption_modules(cfg: StackConfig) -> list[str]:
    """The kernel modules (or built-ins) every node needs for the stack's transparent encryption, sorted."""
    mode = cfg.features.encryption
    if mode == "wireguard":
        return [encryption.WIREGUARD_MODULE]
    if mode == "ipsec":
        return sorted(encryption.IPSEC_MODULES)
    return []


def encryption_problem(cfg: StackConfig, node: Node) -> str:
    """The problem line (after ``node <name>: ``) of a node whose kernel lacks what the mode needs; for IPsec,
    MISSING_MARK stands for the missing modules. Empty without encryption."""
    mode = cfg.features.encryption
    if mode == "wireguard":
        line = encryption.wireguard_module_problem(node.name, False, cfg.cilium.parsed_version)
    elif mode == "ipsec":
        line = encryption.ipsec_modules_problem(node.name, [MISSING_MARK])
    else:
        line = None
    return (line or "").removeprefix(f"node {node.name}: ")


def params(cfg: StackConfig, features: Resolved, node: Node) -> dict[str, str]:
    """The parameters of ``preflight.sh`` for ``node``."""
    floors = features.kernel_needs()
    rhel = features.rhel_equivalent()
    return {
        "NODE_NAME": node.name,
        "KERNEL_FLOORS": "".join(f"{feature}={kernel_text(kernel)}\n" for feature, kernel in floors.items()),
        "MIN_KERNEL": kernel_text(features.base_kernel()),
        "MIN_KERNEL_REASON": features.min_kernel_reason(),
        "RHEL_MIN": f"{rhel[0]}.{rhel[1]}",
        "REQUIRED_COMMANDS": "".join(f"{line}\n" for line in required_commands(cfg, node)),
        "FIREWALL_PORTS": " ".join(firewall_ports(cfg, features, node)),
        "FIREWALL_SOURCES": f"{cfg.k3s.cluster_cidr} {cfg.k3s.service_cidr}",
        "FIREWALL_OPEN": "true" if cfg.k3s.open_firewall else "false",
        "NIC_ADDRESS": node.internal_ip or "",
        "NIC_FEATURES": "".join(f"{name}={mode}\n" for name, mode in nic_feature_modes(cfg, features).items()),
        "XDP_DRIVERS": " ".join(XDP_NATIVE_DRIVERS),
        "ENCRYPTION": cfg.features.encryption,
        "ENCRYPTION_MODULES": " ".join(encryption_modules(cfg)),
        "ENCRYPTION_PROBLEM": encryption_problem(cfg, node),
    }


def skipped_on_node(facts: Mapping[str, str]) -> list[str]:
    """The NIC-dependent features preflight left off on a node (its ``skipped=`` fact)."""
    value = facts.get("skipped", "none")
    return [name for name in value.split(",") if name in NIC_FEATURES]


def skip_reasons(facts: Mapping[str, str]) -> dict[str, str]:
    """Why each skipped feature is off on the node, from its preflight facts."""
    nic, driver = facts.get("nic", "unknown"), facts.get("driver", "unknown")
    reasons = {
        "bigTcp": f"NIC {nic} ({driver}) has tso_max_size {facts.get('tso_max_size', 'unknown')}: Cilium runs "
        "without BIG TCP on it (needs more than 65536)",
        "xdp": f"NIC {nic} ({driver}) has no native XDP: Cilium's best-effort mode leaves it unaccelerated",
    }
    return {name: reasons[name] for name in skipped_on_node(facts)}


def plan_notes(cfg: StackConfig, features: Resolved) -> dict[str, str]:
    """What the plan says about each enabled NIC-dependent feature (decided per node by preflight)."""
    notes = {
        "bigTcp": "NICs with tso_max_size > 65536 only",
        "xdp": f"drivers with native XDP only ({', '.join(XDP_NATIVE_DRIVERS)})",
    }
    out = {}
    for name, mode in nic_feature_modes(cfg, features).items():
        if mode == "skip":
            out[name] = f"{notes[name]}: preflight leaves it off (and unverified) on other nodes"
        else:
            out[name] = f"{notes[name]}: forced, so preflight fails on a node whose NIC cannot carry it"
    return out
