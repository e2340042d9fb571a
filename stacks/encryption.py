"""Transparent encryption of pod traffic between nodes: WireGuard or IPsec.

The stack key ``features.encryption`` picks the mode (``none``, ``wireguard``,
``ipsec``); the section ``encryption`` holds its options; the IPsec pre-shared
key is the Pulumi secret ``ipsecKey`` (never in the model, never in the plan).
Everything here is pure: the refusals, the Helm values per chart, the Secret
the chart mounts, what the nodes need, the plan and what the verification
expects. Facts and where they come from (docs.cilium.io pages of each release,
read in ``Documentation/`` of the tags v1.13.18, v1.14.19, v1.15.19, v1.16.19,
v1.17.0, v1.18.0, v1.19.6, v1.20.0; the agent's source at those tags; the
charts in ``../shared/cilium-chart/``):

Values (chart ``values.yaml`` and ``templates/cilium-configmap.yaml`` of each minor):

- ``encryption.enabled`` and ``encryption.type`` (``ipsec`` default, ``wireguard``)
  in every chart 1.13-1.20; the ConfigMap gets ``enable-wireguard: "true"`` or
  ``enable-ipsec: "true"``.
- ``encryption.nodeEncryption`` in every chart (ConfigMap ``encrypt-node``); from
  chart 1.14 documented as "only effective when encryption.type is set to
  wireguard" (cilium/cilium#25770).
- IPsec key: ``encryption.ipsec.{secretName,keyFile,mountPath}`` in every chart;
  charts 1.13-1.15 also have the deprecated top-level ``encryption.{secretName,
  keyFile,mountPath}`` and read ``ipsec.*`` first (``ipsec.secretName | default
  .Values.encryption.secretName``); chart 1.16 removed the top-level keys
  (upgrade notes 1.16, "Helm Options"). Defaults: Secret ``cilium-ipsec-keys``,
  file ``keys``, mounted at ``/etc/ipsec``.
- ``encryption.wireguard.userspaceFallback``: charts 1.13-1.16 (deprecated in
  1.16), removed in 1.17 (upgrade notes 1.16 and 1.17).

Refusals (``problems``):

- WireGuard and IPsec exclude each other (agent: "WireGuard ... cannot be used
  with IPsec"); one mode is chosen, so this cannot happen here.
- BIG TCP with encryption: docs operations/performance/tuning, "IPv4 BIG TCP"
  requirements "Tunneling and encryption disabled" (1.14-1.20); the agent refuses
  IPsec ("BIG TCP is not supported with encryption enabled", pkg/datapath/linux/
  bigtcp, every release).
- IPsec with kube-proxy replacement before 1.16: the agent exits with "IPSec
  cannot be used with BPF NodePort" (daemon/cmd/kube_proxy_replacement.go,
  1.13-1.15); docs kubeproxy-free "Limitations" (1.13-1.15) and encryption-ipsec
  "Limitations" (1.13-1.15). Gone in 1.16.
- IPsec with eBPF host routing before 1.19: the agent silently falls back to
  legacy host routing ("BPF host routing is incompatible with enable-ipsec",
  1.13-1.18); docs encryption-ipsec "Limitations": "IPsec encryption currently
  does not work with BPF Host Routing" (1.16-1.18). 1.19 supports it (upgrade
  notes 1.19, which also ask for the kernel fix of CVE-2025-37959). netkit needs
  eBPF host routing (docs tuning, "netkit device mode"), so it is refused with
  IPsec before 1.19 too.
- IPsec node encryption: removed from the docs in 1.12 (cilium/cilium#20422),
  its code removed (cilium/cilium#28898); chart 1.14+ says nodeEncryption is
  WireGuard only. Refused on every release.
- WireGuard on 1.13: the agent exits when the L7 proxy is on ("Wireguard is not
  compatible with L7 proxy", daemon/cmd/daemon_main.go 1.13; docs install with
  ``l7Proxy=false``), so 1.13 renders ``l7Proxy: false``; docs encryption-wireguard
  1.13 "Limitations": no host-level (node-to-node) encryption, no eBPF host
  routing (the agent falls back to legacy routing); docs kubeproxy-free 1.13
  "Limitations": kube-proxy replacement "cannot be used with Transparent
  Encryption". Node-to-node encryption with WireGuard exists from 1.14 (beta).
- WireGuard needs the kernel module: the userspace fallback is off here (and
  gone from 1.17: "WireGuard not supported by the Linux kernel", pkg/wireguard/
  agent).

IPsec key (docs encryption-ipsec, "Generate & Import the PSK"; the agent's
parser ``LoadIPSecKeys``/``parseSPI`` in pkg/datapath/linux/ipsec): one line
``<key-id>[+] <aead-algo> <aead-key-hex> <icv-bits>`` or ``<key-id>[+]
<auth-algo> <auth-key-hex> <enc-algo> <enc-key-hex>``; key id 1-15; AEAD names
start with ``rfc``, ICV 96, 128 or 256 bits; hex optionally ``0x``-prefixed.
The ``+`` selects per-tunnel keys; without it releases before 1.17 use one
global key, which GHSA-pwqm-x5x6-5586 found insecure (upgrade notes 1.16: "the
use of per-tunnel keys is mandatory"; 1.17 always uses them), so it is required.
The docs' example is ``3+ rfc4106(gcm(aes)) <40 hex digits> 128``: 20 random
bytes, an AES-128 key and the 4-byte salt RFC 4106 adds.

WireGuard listens on UDP 51871 on every node (docs encryption-wireguard); IPsec
is ESP (IP protocol 50) between the nodes, and needs the kernel options listed
in docs operations/system_requirements, "Requirements for IPsec".
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Literal

from packaging.version import Version
from pydantic import Field

from stacks.model import ConfigModel

Mode = Literal["none", "wireguard", "ipsec"]
MODES: tuple[Mode, ...] = ("none", "wireguard", "ipsec")

V1_14, V1_16, V1_17, V1_19 = (Version(v) for v in ("1.14", "1.16", "1.17", "1.19"))

# The Pulumi secret config key that holds the IPsec pre-shared key.
IPSEC_KEY_CONFIG = "ipsecKey"
# The Secret the chart mounts into the agents (chart defaults, every minor).
IPSEC_SECRET_NAME = "cilium-ipsec-keys"
IPSEC_SECRET_NAMESPACE = "kube-system"
IPSEC_SECRET_KEY = "keys"
IPSEC_MOUNT_PATH = "/etc/ipsec"
IPSEC_MAX_KEY_ID = 15
IPSEC_ICV_BITS = (96, 128, 256)
# ESP between the nodes (IP protocol 50).
ESP_PROTOCOL = 50
# Kernel options for IPsec with GCM-128-AES (docs: operations/system_requirements, "Requirements for IPsec").
IPSEC_KERNEL_CONFIG = (
    "CONFIG_XFRM",
    "CONFIG_XFRM_OFFLOAD",
    "CONFIG_XFRM_STATISTICS",
    "CONFIG_XFRM_ALGO",
    "CONFIG_XFRM_USER",
    "CONFIG_INET_ESP",
    "CONFIG_INET_IPCOMP",
    "CONFIG_INET_XFRM_TUNNEL",
    "CONFIG_INET_TUNNEL",
    "CONFIG_INET_XFRM_MODE_TUNNEL",
    "CONFIG_CRYPTO_AEAD",
    "CONFIG_CRYPTO_AEAD2",
    "CONFIG_CRYPTO_GCM",
    "CONFIG_CRYPTO_SEQIV",
    "CONFIG_CRYPTO_CBC",
    "CONFIG_CRYPTO_HMAC",
    "CONFIG_CRYPTO_SHA256",
    "CONFIG_CRYPTO_AES",
)
# The modules of CONFIG_XFRM_USER and CONFIG_INET_ESP where they are modules.
IPSEC_MODULES = ("xfrm_user", "esp4")

WIREGUARD_PORT = 51871
WIREGUARD_INTERFACE = "cilium_wg0"
WIREGUARD_MODULE = "wireguard"
# Agents on nodes with this label opt out of WireGuard node-to-node encryption (docs: encryption-wireguard,
# "Node-to-Node Encryption"); K3s servers carry it.
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"

# A command that prints a key in the docs' format with a fresh random secret (docs: "Generate & Import the PSK").
KEY_COMMAND = 'echo "3+ rfc4106(gcm(aes)) $(dd if=/dev/urandom count=20 bs=1 2>/dev/null | xxd -p -c 64) 128"'
SET_KEY = f'pulumi config set --secret {IPSEC_KEY_CONFIG} "$({KEY_COMMAND})"'

_KEY_ID = re.compile(r"^(?P<id>\d+)(?P<plus>\+?)$")
_HEX = re.compile(r"^(0x)?(?P<hex>[0-9a-fA-F]+)$")
# rfc4106(gcm(aes)): an AES key of 16, 24 or 32 bytes and a 4-byte salt.
_GCM_AES_BYTES = (20, 28, 36)


class Encryption(ConfigModel):
    node_encryption: bool = Field(
        False,
        description="Also encrypt node-to-node, pod-to-node and node-to-pod traffic (WireGuard only, Cilium >= 1.14, "
        "beta; nodes labelled node-role.kubernetes.io/control-plane opt out).",
    )


def _hex_problem(name: str, text: str) -> str | None:
    match = _HEX.match(text)
    if match is None:
        return f"its {name} is not hexadecimal"
    if len(match["hex"]) % 2:
        return f"its {name} has an odd number of hex digits (whole bytes are needed)"
    return None


def validate_ipsec_key(text: str) -> str | None:
    """What is wrong with an ``ipsecKey`` value, or None. The message never contains the key's secret parts."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        return f"must be one line like '3+ rfc4106(gcm(aes)) <40 hex digits> 128'; generate one with: {SET_KEY}"
    fields = lines[0].split()
    if len(fields) not in (4, 5):
        return (
            f"has {len(fields)} fields; the format is '<key-id>+ <aead-algo> <hex-key> <icv-bits>' (4 fields) or "
            f"'<key-id>+ <auth-algo> <hex-key> <enc-algo> <hex-key>' (5 fields); generate one with: {SET_KEY}"
        )
    key_id = _KEY_ID.match(fields[0])
    if key_id is None or not 1 <= int(key_id["id"]) <= IPSEC_MAX_KEY_ID:
        return f"the key id (first field) must be a number from 1 to {IPSEC_MAX_KEY_ID} followed by '+'"
    if not key_id["plus"]:
        return (
            f"the key id must end in '+' ('{key_id['id']}+'): without it Cilium < 1.17 uses one global key, "
            "which is insecure (GHSA-pwqm-x5x6-5586)"
        )
    if len(fields) == 4:
        algorithm, key, icv = fields[1], fields[2], fields[3]
        if not algorithm.startswith("rfc"):
            return f"the AEAD algorithm {algorithm!r} must be an RFC one such as 'rfc4106(gcm(aes))'"
        if not icv.isdigit() or int(icv) not in IPSEC_ICV_BITS:
            return f"the ICV length (last field) must be one of {', '.join(map(str, IPSEC_ICV_BITS))}"
        problem = _hex_problem("key", key)
        if problem is not None:
            return problem
        if algorithm == "rfc4106(gcm(aes))" and len(key.removeprefix("0x")) // 2 not in _GCM_AES_BYTES:
            return (
                "its key must be 20, 28 or 36 bytes for rfc4106(gcm(aes)) (an AES-128/192/256 key and a 4-byte salt), "
                f"i.e. 40, 56 or 72 hex digits; it has {len(key.removeprefix('0x'))}"
            )
        return None
    for name, value in (("authentication key", fields[2]), ("encryption key", fields[4])):
        problem = _hex_problem(name, value)
        if problem is not None:
            return problem
    return None


def problems(
    mode: Mode, enc: Encryption, cilium: Version, features: Collection[str], tunnel_protocol: str | None
) -> list[str]:
    """``key: problem; fix`` lines for the mode with the stack's resolved features (see the module docstring).
    The key is judged apart (:func:`key_problems`): it is a secret, read only where the program runs.

    ``tunnel_protocol`` (``vxlan``/``geneve``, None with native routing) refuses nothing today: tunneling only adds
    :func:`caveats` and a kernel floor (:func:`requirements`); it is taken so callers pass the whole datapath."""
    found: list[str] = []
    if mode == "none":
        if enc.node_encryption:
            found.append("encryption.nodeEncryption: needs features.encryption: wireguard; remove it or set that mode")
        return found
    if "bigTcp" in features:
        found.append(
            f"features.bigTcp: BIG TCP needs encryption off (docs: tuning, 'IPv4 BIG TCP'), but "
            f"features.encryption is {mode!r}; set features.bigTcp: false or features.encryption: none"
        )
    if mode == "ipsec":
        found += _ipsec_problems(enc, cilium, features)
    else:
        found += _wireguard_problems(enc, cilium, features)
    return found


def key_problems(mode: Mode, key: str | None) -> list[str]:
    """``ipsecKey: problem; fix`` lines for the secret (None: not set); never quoting it."""
    name = IPSEC_KEY_CONFIG
    if mode != "ipsec":
        unused = f"{name}: is set but features.encryption is {mode!r}; remove it (pulumi config rm {name})"
        return [unused] if key else []
    if not key:
        return [f"{name}: features.encryption 'ipsec' needs the pre-shared key; set it with: {SET_KEY}"]
    problem = validate_ipsec_key(key)
    return [f"{name}: {problem}"] if problem else []


def _ipsec_problems(enc: Encryption, cilium: Version, features: Collection[str]) -> list[str]:
    found: list[str] = []
    if enc.node_encryption:
        found.append(
            "encryption.nodeEncryption: Cilium encrypts node-to-node traffic with WireGuard only (IPsec node "
            "encryption was removed); set it false, or features.encryption: wireguard"
        )
    if "kubeProxyReplacement" in features and cilium < V1_16:
        found.append(
            f"features.encryption: IPsec cannot run with kube-proxy replacement before Cilium 1.16 (the agent exits: "
            f"'IPSec cannot be used with BPF NodePort'); cilium.version is {cilium}: raise it to 1.16 or later, "
            "choose wireguard, or turn kube-proxy replacement off"
        )
    if cilium < V1_19:
        for feature in ("bpfHostRouting", "netkit"):
            if feature in features:
                why = "" if feature == "bpfHostRouting" else ", which netkit needs"
                found.append(
                    f"features.{feature}: IPsec turns eBPF host routing off before Cilium 1.19 (the agent falls "
                    f"back to legacy routing{why}); cilium.version is {cilium}: raise it to 1.19 or later, "
                    f"set features.{feature}: false, or choose wireguard"
                )
    return found


def _wireguard_problems(enc: Encryption, cilium: Version, features: Collection[str]) -> list[str]:
    if cilium >= V1_14:
        return []
    found: list[str] = []
    if enc.node_encryption:
        found.append(
            f"encryption.nodeEncryption: WireGuard node-to-node encryption exists from Cilium 1.14; cilium.version "
            f"is {cilium}: raise it or set nodeEncryption false"
        )
    if "kubeProxyReplacement" in features:
        found.append(
            f"features.encryption: Cilium 1.13's kube-proxy replacement cannot be used with transparent encryption "
            f"(docs: kubeproxy-free, 'Limitations'); cilium.version is {cilium}: raise it to 1.14 or later, or turn "
            "kube-proxy replacement off"
        )
    if "bpfHostRouting" in features:
        found.append(
            f"features.bpfHostRouting: Cilium 1.13 falls back to legacy host routing with WireGuard; cilium.version "
            f"is {cilium}: raise it to 1.14 or later or set features.bpfHostRouting: false"
        )
    return found


def caveats(
    mode: Mode, enc: Encryption, cilium: Version, features: Collection[str], tunnel_protocol: str | None
) -> list[str]:
    """What the mode leaves unencrypted or costs, for the plan (no refusal: Cilium runs, as documented)."""
    notes: list[str] = []
    if mode == "wireguard":
        if tunnel_protocol:
            notes.append(f"pod traffic is encapsulated twice ({tunnel_protocol}, then WireGuard): mind the MTU")
        if enc.node_encryption:
            notes.append(
                f"node-to-node encryption skips nodes labelled {CONTROL_PLANE_LABEL} (the K3s servers): traffic "
                "from and to them is encrypted for pods only"
            )
            if "xdp" in features:
                notes.append("with XDP acceleration, N/S load-balancer traffic sent on to another node is unencrypted")
            if "dsr" in features and tunnel_protocol != "geneve":
                notes.append("with DSR (non-Geneve dispatch), N/S load-balancer traffic to another node is unencrypted")
    if mode == "ipsec":
        if "bpfHostRouting" in features and cilium >= V1_19:
            notes.append("eBPF host routing with IPsec needs a kernel with the fix for CVE-2025-37959")
        if cilium >= Version("1.18"):
            notes.append("upgrading an IPsec cluster from 1.17 needs the latest 1.17 patch release first")
    return notes


def helm_values(mode: Mode, enc: Encryption, cilium: Version) -> dict[str, Any]:
    """The ``encryption`` values (and ``l7Proxy`` for WireGuard on 1.13), explicit in every mode."""
    if mode == "none":
        return {"encryption": {"enabled": False, "nodeEncryption": False}}
    encryption: dict[str, Any] = {"enabled": True, "type": mode, "nodeEncryption": enc.node_encryption}
    values: dict[str, Any] = {"encryption": encryption}
    if mode == "ipsec":
        encryption["ipsec"] = {
            "secretName": IPSEC_SECRET_NAME,
            "keyFile": IPSEC_SECRET_KEY,
            "mountPath": IPSEC_MOUNT_PATH,
        }
        return values
    if cilium < V1_17:
        encryption["wireguard"] = {"userspaceFallback": False}
    if cilium < V1_14:
        values["l7Proxy"] = False
    return values


def ipsec_secret(key: str) -> dict[str, Any]:
    """The Secret the chart mounts (``encryption.ipsec.secretName``/``keyFile``); its data is the key itself."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": IPSEC_SECRET_NAME,
            "namespace": IPSEC_SECRET_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "k3s-cilium"},
        },
        "stringData": {IPSEC_SECRET_KEY: key.strip()},
    }


def requirements(mode: Mode, cilium: Version, tunnel_protocol: str | None = None) -> list[str]:
    """What every node needs for the mode: kernel support and what must pass between the nodes."""
    if mode == "wireguard":
        gone = "gone from Cilium 1.17" if cilium >= V1_17 else "turned off by this program"
        return [
            "kernel WireGuard (CONFIG_WIREGUARD, Linux >= 5.6, or the out-of-tree module): preflight creates and "
            f"deletes a WireGuard link on every node (the userspace fallback is {gone})",
            f"UDP {WIREGUARD_PORT} open between all nodes",
        ]
    if mode == "ipsec":
        needs = [
            "kernel XFRM/ESP with AES-GCM (docs: system_requirements, 'Requirements for IPsec'): "
            + ", ".join(IPSEC_KERNEL_CONFIG),
            f"ESP (IP protocol {ESP_PROTOCOL}) allowed between all nodes",
            f"the secret {IPSEC_KEY_CONFIG} (Secret {IPSEC_SECRET_NAMESPACE}/{IPSEC_SECRET_NAME})",
        ]
        if tunnel_protocol:
            needs.append("Linux >= 4.19 (IPsec with tunneling needs XFRM output marks)")
        return needs
    return []


def wireguard_module_problem(node: str, present: bool, cilium: Version) -> str | None:
    """A preflight line for a node whose kernel has no WireGuard (``modprobe wireguard`` failed)."""
    if present:
        return None
    effect = (
        "the agent will not start ('WireGuard not supported by the Linux kernel')"
        if cilium >= V1_17
        else "the agent will not start (this program keeps the userspace fallback off)"
    )
    return (
        f"node {node}: no WireGuard in the kernel ({WIREGUARD_MODULE} module not loadable): {effect}; install a "
        "kernel with CONFIG_WIREGUARD (Linux >= 5.6) or the wireguard module, or choose features.encryption: ipsec"
    )


def ipsec_modules_problem(node: str, missing: Collection[str]) -> str | None:
    """A preflight line for a node that lacks XFRM/ESP kernel support (the modules, or ``/proc/net/xfrm_stat``)."""
    if not missing:
        return None
    return (
        f"node {node}: no IPsec support in the kernel (missing {', '.join(sorted(missing))}); install a kernel with "
        "the options of docs: system_requirements, 'Requirements for IPsec', or choose features.encryption: wireguard"
    )


def plan(
    mode: Mode, enc: Encryption, cilium: Version, ipsec_key_set: bool = False, notes: Collection[str] = ()
) -> dict[str, Any] | None:
    """The encryption part of the offline plan; None for mode ``none``. Never the key, only whether it is set;
    ``notes`` are the :func:`caveats` of the stack."""
    if mode == "none":
        return None
    entry: dict[str, Any] = {
        "mode": mode,
        "nodeEncryption": enc.node_encryption,
        "requirements": requirements(mode, cilium),
    }
    if mode == "ipsec":
        entry["secret"] = {
            "config": IPSEC_KEY_CONFIG,
            "set": ipsec_key_set,
            "object": f"Secret {IPSEC_SECRET_NAMESPACE}/{IPSEC_SECRET_NAME} (key {IPSEC_SECRET_KEY})",
        }
    else:
        entry["port"] = WIREGUARD_PORT
    if notes:
        entry["notes"] = list(notes)
    return entry


def plan_text(entry: dict[str, Any]) -> list[str]:
    node = ", node-to-node too" if entry["nodeEncryption"] else ""
    lines = [f"encryption: {entry['mode']}{node}"]
    if "secret" in entry:
        secret = entry["secret"]
        state = "set" if secret["set"] else "missing"
        lines.append(f"  secret {secret['config']} ({state}) -> {secret['object']}")
    lines += [f"  needs {text}" for text in entry["requirements"]]
    lines += [f"  note: {text}" for text in entry.get("notes", [])]
    return lines


def verify_expectations(mode: Mode, enc: Encryption, node_count: int) -> dict[str, Any]:
    """``--expect`` of the ``encryption-status`` check on every node (IPv4 only: 2 IPsec keys per remote node,
    docs: encryption-ipsec, 'Troubleshooting'; one WireGuard peer per other node, docs: encryption-wireguard)."""
    others = max(node_count - 1, 0)
    if mode == "wireguard":
        return {"mode": "wireguard", "peers": others}
    if mode == "ipsec":
        # A lone node has no XFRM state, and from 1.19.6 the printer then omits the IPsec lines.
        return {"mode": "ipsec", "minKeys": 2 * others, "maxXfrmErrors": 0} if others else {"mode": "ipsec"}
    return {"mode": "disabled"}


def verify_wait_for(mode: Mode, node_count: int) -> str:
    """An extended regex (grep -E) the collector repeats ``cilium-dbg encrypt status`` until it matches: the agent
    has set up every peer (WireGuard) or some XFRM state (IPsec), or reports no encryption."""
    others = max(node_count - 1, 0)
    if mode == "wireguard":
        return f"Number of peers: {others}$"
    if mode == "ipsec":
        return "^Keys in use: [1-9]" if others else "^Encryption: IPsec"
    return "^Encryption: Disabled"
