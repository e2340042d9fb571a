"""Encryption (WireGuard / IPsec): the refusals, the key format, the Helm values per chart, the Secret and the plan.

Facts the expectations below rest on, each looked up (not read off stacks/encryption.py):
- charts ../shared/cilium-chart/<version>/values.yaml: encryption.{enabled,type,nodeEncryption} and
  encryption.ipsec.{secretName,keyFile,mountPath} in 1.13-1.20 (defaults cilium-ipsec-keys, keys, /etc/ipsec);
  encryption.wireguard.userspaceFallback in 1.13-1.16 only.
- the charts' templates/cilium-configmap.yaml: enable-wireguard / enable-ipsec "true", encrypt-node when
  nodeEncryption is on, ipsec-key-file <mountPath>/<keyFile>; the agent DaemonSet mounts the Secret named by
  encryption.ipsec.secretName.
- docs.cilium.io security/network/encryption-ipsec "Generate & Import the PSK": the key line
  `3+ rfc4106(gcm(aes)) <20 random bytes in hex> 128`; key ids 1-15; the '+' forces per-tunnel keys
  (GHSA-pwqm-x5x6-5586). The agent's parser (pkg/datapath/linux/ipsec parseSPI/LoadIPSecKeys): AEAD names start
  with "rfc", ICV 96/128/256, 4 or 5 fields.
- Refusals: agent source "IPSec cannot be used with BPF NodePort" (1.13-1.15), the legacy-host-routing fallback
  with IPsec (1.13-1.18), "BIG TCP is not supported with encryption enabled"; docs tuning "IPv4 BIG TCP"
  (encryption disabled); docs encryption-wireguard 1.13 "Limitations" (no node-to-node, no eBPF host routing),
  docs kubeproxy-free 1.13 "Limitations" (no KPR with transparent encryption), WireGuard node-to-node from 1.14.
- docs encryption-ipsec "Troubleshooting": 2 keys in use per remote node per IP family; docs encryption-wireguard
  "Validate the Setup": peers = nodes - 1; WireGuard listens on UDP 51871.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version
from pydantic import ValidationError

from stacks import cilium_values, encryption
from stacks.config import parse
from stacks.encryption import Encryption
from stacks.features import resolve
from tests.chart import ARCHIVES, chart_dirs, config_map, known_paths, render_chart, unknown_paths
from verification.encryption import ENCRYPTION_STATUS_KEYS
from verification.expectations import validate_expectations

ROOT = Path(__file__).resolve().parents[2]
NODES = [
    {"name": "server-1", "host": "192.168.56.10", "role": "server"},
    {"name": "agent-1", "host": "192.168.56.11", "role": "agent"},
    {"name": "agent-2", "host": "192.168.56.12", "role": "agent"},
]
# The docs' example shape: key id 3 with '+', AES-GCM, 20 bytes (40 hex digits), ICV 128.
DOCS_KEY = "3+ rfc4106(gcm(aes)) 5f2c9a7e13b48d06fa5c8e21b7409dd3ac61e5f8 128"
SECRET_HEX = "5f2c9a7e13b48d06fa5c8e21b7409dd3ac61e5f8"
OFF = Encryption()
NODE_ENC = Encryption(node_encryption=True)
V = Version


def refusals(mode: encryption.Mode, version: str, features: Collection[str] = (), enc: Encryption = OFF,
             tunnel: str | None = None) -> list[str]:
    return encryption.problems(mode, enc, V(version), frozenset(features), tunnel)


def tier_features(tier: str, version: str) -> frozenset[str]:
    return frozenset(resolve(parse({"tier": tier, "nodes": NODES, "cilium": {"version": version}})).enabled)


# --- the model --------------------------------------------------------------------------------------


def test_the_section_is_camel_case_and_strict():
    assert Encryption.model_validate({"nodeEncryption": True}).node_encryption is True
    assert Encryption.model_validate({}).node_encryption is False
    with pytest.raises(ValidationError):
        Encryption.model_validate({"nodeEncrypt": True})
    assert encryption.MODES == ("none", "wireguard", "ipsec")


# --- the IPsec key -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        DOCS_KEY,
        "15+ rfc4106(gcm(aes)) 0x" + "ab" * 36 + " 128",  # AES-256 + salt, 0x prefix (docs of v1.4 wrote it)
        "1+ rfc4106(gcm(aes)) " + "00" * 28 + " 96",
        "4+ hmac(sha256) " + "11" * 32 + " cbc(aes) " + "22" * 16,  # auth-algo auth-key enc-algo enc-key
        DOCS_KEY + "\n",
    ],
)
def test_keys_in_the_documented_format_are_accepted(key):
    assert encryption.validate_ipsec_key(key) is None


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (DOCS_KEY.replace("3+", "3"), "must end in '+'"),
        (DOCS_KEY.replace("3+", "0+"), "from 1 to 15"),
        (DOCS_KEY.replace("3+", "16+"), "from 1 to 15"),
        (DOCS_KEY.replace("3+", "x+"), "from 1 to 15"),
        (DOCS_KEY.replace(" 128", " 64"), "96, 128, 256"),
        (DOCS_KEY.replace("rfc4106(gcm(aes))", "gcm(aes)"), "RFC one"),
        (DOCS_KEY.replace(SECRET_HEX, SECRET_HEX[:-2] + "zz"), "not hexadecimal"),
        (DOCS_KEY.replace(SECRET_HEX, SECRET_HEX[:-1]), "odd number"),
        (DOCS_KEY.replace(SECRET_HEX, SECRET_HEX[:32]), "40, 56 or 72 hex digits"),
        ("3+ rfc4106(gcm(aes)) " + SECRET_HEX, "has 3 fields"),
        (DOCS_KEY + "\n" + DOCS_KEY, "one line"),
        ("", "one line"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_the_secret(key, says):
    problem = encryption.validate_ipsec_key(key)
    assert problem is not None and says in problem
    assert SECRET_HEX[:16] not in problem


# --- refusals ----------------------------------------------------------------------------------------


def test_ipsec_needs_a_well_formed_key():
    (missing,) = encryption.key_problems("ipsec", None)
    assert missing.startswith("ipsecKey: features.encryption 'ipsec' needs the pre-shared key")
    assert "pulumi config set --secret ipsecKey" in missing
    (malformed,) = encryption.key_problems("ipsec", DOCS_KEY.replace("3+", "3"))
    assert malformed.startswith("ipsecKey: the key id must end in '+'") and SECRET_HEX[:16] not in malformed
    assert encryption.key_problems("ipsec", DOCS_KEY) == []


@pytest.mark.parametrize("mode", ["wireguard", "none"])
def test_a_key_without_ipsec_is_refused(mode):
    assert encryption.key_problems(mode, DOCS_KEY) == [
        f"ipsecKey: is set but features.encryption is {mode!r}; remove it (pulumi config rm ipsecKey)"
    ]
    assert encryption.key_problems(mode, None) == []


def test_node_encryption_without_a_mode_is_refused():
    (problem,) = refusals("none", "1.19.6", enc=NODE_ENC)
    assert problem.startswith("encryption.nodeEncryption: needs features.encryption: wireguard")


@pytest.mark.parametrize("version", ["1.13.18", "1.16.19", "1.20.0"])
def test_ipsec_node_encryption_is_refused_on_every_release(version):
    (problem,) = refusals("ipsec", version, enc=NODE_ENC)
    assert problem.startswith("encryption.nodeEncryption: Cilium encrypts node-to-node traffic with WireGuard only")


@pytest.mark.parametrize(("version", "refused"), [("1.13.18", True), ("1.15.19", True), ("1.16.19", False)])
def test_ipsec_with_kube_proxy_replacement_only_from_1_16(version, refused):
    found = refusals("ipsec", version, {"kubeProxyReplacement", "nativeRouting"})
    assert bool(found) is refused
    if refused:
        assert "IPSec cannot be used with BPF NodePort" in found[0] and f"cilium.version is {version}" in found[0]


@pytest.mark.parametrize(("version", "refused"), [("1.16.19", True), ("1.18.12", True), ("1.19.6", False)])
def test_ipsec_with_ebpf_host_routing_and_netkit_only_from_1_19(version, refused):
    found = refusals("ipsec", version, {"kubeProxyReplacement", "bpfMasquerade", "bpfHostRouting", "netkit"})
    assert [p.split(":")[0] for p in found] == (["features.bpfHostRouting", "features.netkit"] if refused else [])


@pytest.mark.parametrize("mode", ["wireguard", "ipsec"])
@pytest.mark.parametrize("version", ["1.14.19", "1.19.6"])
def test_big_tcp_with_encryption_is_refused(mode, version):
    found = refusals(mode, version, {"bigTcp"})
    assert [p for p in found if p.startswith("features.bigTcp: BIG TCP needs encryption off")]


def test_the_extreme_tier_cannot_encrypt_but_kpr_can():
    # The tiers as the program resolves them: extreme has BIG TCP (and eBPF host routing), kpr has neither.
    assert tier_features("extreme", "1.19.6") >= {"bigTcp", "bpfHostRouting"}
    assert refusals("wireguard", "1.19.6", set(tier_features("extreme", "1.19.6")))
    assert refusals("wireguard", "1.19.6", set(tier_features("kpr", "1.19.6"))) == []
    assert refusals("ipsec", "1.19.6", set(tier_features("kpr", "1.19.6"))) == []


def test_wireguard_on_1_13_has_its_documented_limits():
    found = refusals("wireguard", "1.13.18", {"kubeProxyReplacement", "bpfHostRouting"}, enc=NODE_ENC)
    assert [p.split(":")[0] for p in found] == [
        "encryption.nodeEncryption",
        "features.encryption",
        "features.bpfHostRouting",
    ]
    assert "from Cilium 1.14" in found[0]
    assert refusals("wireguard", "1.14.19", {"kubeProxyReplacement", "bpfHostRouting"}, enc=NODE_ENC) == []


def test_caveats_name_what_stays_unencrypted():
    notes = encryption.caveats("wireguard", NODE_ENC, V("1.19.6"), {"xdp", "dsr"}, None)
    assert any("node-role.kubernetes.io/control-plane" in n for n in notes)
    assert any("XDP" in n for n in notes) and any("DSR" in n for n in notes)
    assert not any("DSR" in n for n in encryption.caveats("wireguard", NODE_ENC, V("1.19.6"), {"dsr"}, "geneve"))
    assert any("twice" in n for n in encryption.caveats("wireguard", OFF, V("1.19.6"), set(), "vxlan"))
    assert any("CVE-2025-37959" in n for n in encryption.caveats("ipsec", OFF, V("1.19.6"), {"bpfHostRouting"}, None))


# --- Helm values ---------------------------------------------------------------------------------------

IPSEC_KEY_VALUES = {"secretName": "cilium-ipsec-keys", "keyFile": "keys", "mountPath": "/etc/ipsec"}


@pytest.mark.parametrize(
    ("mode", "version", "expected"),
    [
        ("none", "1.19.6", {"encryption": {"enabled": False, "nodeEncryption": False}}),
        ("wireguard", "1.13.18", {
            "encryption": {"enabled": True, "type": "wireguard", "nodeEncryption": False,
                           "wireguard": {"userspaceFallback": False}},
            "l7Proxy": False,
        }),
        ("wireguard", "1.16.19", {
            "encryption": {"enabled": True, "type": "wireguard", "nodeEncryption": False,
                           "wireguard": {"userspaceFallback": False}},
        }),
        ("wireguard", "1.17.18", {"encryption": {"enabled": True, "type": "wireguard", "nodeEncryption": False}}),
        ("ipsec", "1.13.18", {
            "encryption": {"enabled": True, "type": "ipsec", "nodeEncryption": False, "ipsec": IPSEC_KEY_VALUES},
        }),
        ("ipsec", "1.20.0", {
            "encryption": {"enabled": True, "type": "ipsec", "nodeEncryption": False, "ipsec": IPSEC_KEY_VALUES},
        }),
    ],
)
def test_values_per_chart(mode, version, expected):
    assert encryption.helm_values(mode, OFF, V(version)) == expected


MINORS = sorted(chart_dirs(), key=lambda m: [int(x) for x in m.split(".")])


@pytest.mark.parametrize("minor", MINORS)
@pytest.mark.parametrize("mode", encryption.MODES)
def test_every_rendered_key_exists_in_the_chart(mode, minor):
    chart = chart_dirs()[minor]
    enc = NODE_ENC if mode == "wireguard" and V(minor) >= V("1.14") else OFF
    values = encryption.helm_values(mode, enc, V(chart.name))
    assert unknown_paths(values, chart) == []
    known = known_paths(chart)
    assert ("encryption", "ipsec", "secretName") in known and ("encryption", "nodeEncryption") in known


def test_the_userspace_fallback_key_is_only_in_charts_up_to_1_16():
    for minor, chart in chart_dirs().items():
        has = ("encryption", "wireguard", "userspaceFallback") in known_paths(chart)
        assert has is (V(minor) < V("1.17")), minor


def rendered(version: str, mode: encryption.Mode, enc: Encryption) -> list[dict[str, Any]]:
    config = parse({"tier": "kpr", "nodes": NODES, "cilium": {"version": version}})
    values = cilium_values.deep_merge(cilium_values.render(config, resolve(config)),
                                      encryption.helm_values(mode, enc, V(version)))
    return render_chart(version, values)


pytestmark_helm = pytest.mark.skipif(not ARCHIVES.is_dir(), reason="../shared/cilium-chart/archives is absent")


@pytestmark_helm
@pytest.mark.parametrize("version", ["1.14.19", "1.16.19", "1.19.6"])
def test_the_real_chart_turns_wireguard_on_with_node_encryption(version):
    data = config_map(rendered(version, "wireguard", NODE_ENC))
    assert data["enable-wireguard"] == "true"
    assert data["encrypt-node"] == "true"
    assert "enable-ipsec" not in data and "enable-wireguard-userspace-fallback" not in data


@pytestmark_helm
def test_the_real_1_13_chart_turns_wireguard_on_and_the_l7_proxy_off():
    data = config_map(rendered("1.13.18", "wireguard", OFF))
    assert (data["enable-wireguard"], data["enable-l7-proxy"]) == ("true", "false")
    assert "encrypt-node" not in data


@pytestmark_helm
@pytest.mark.parametrize("version", ["1.13.18", "1.14.19", "1.16.19", "1.19.6"])
def test_the_real_chart_turns_ipsec_on_and_mounts_the_secret(version):
    documents = rendered(version, "ipsec", OFF)
    data = config_map(documents)
    assert data["enable-ipsec"] == "true"
    assert data["ipsec-key-file"] == "/etc/ipsec/keys"
    # With the L7 proxy on, the agent requires the DNS proxy's transparent mode with IPsec ("IPSec requires DNS
    # proxy transparent mode", daemon/cmd 1.13-1.20); the charts default it on outside CNI chaining.
    assert (data["enable-l7-proxy"], data["dnsproxy-enable-transparent-mode"]) == ("true", "true")
    assert "enable-wireguard" not in data and "encrypt-node" not in data
    (agent,) = [d for d in documents if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cilium"]
    secrets = [v["secret"]["secretName"] for v in agent["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert "cilium-ipsec-keys" in secrets


@pytestmark_helm
@pytest.mark.parametrize("version", ["1.14.19", "1.19.6"])
def test_the_real_chart_with_encryption_off(version):
    data = config_map(rendered(version, "none", OFF))
    assert not {"enable-wireguard", "enable-ipsec", "encrypt-node"} & set(data)


# --- the Secret, the nodes, the plan, the verification --------------------------------------------------


def test_the_ipsec_secret_is_the_one_the_chart_mounts():
    secret = encryption.ipsec_secret(DOCS_KEY + "\n")
    assert secret["metadata"]["name"] == "cilium-ipsec-keys" and secret["metadata"]["namespace"] == "kube-system"
    assert secret["stringData"] == {"keys": DOCS_KEY}
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")


def test_requirements_per_mode():
    wireguard = encryption.requirements("wireguard", V("1.19.6"))
    assert any("WireGuard link on every node" in r and "gone from Cilium 1.17" in r for r in wireguard)
    assert "UDP 51871 open between all nodes" in wireguard
    ipsec = encryption.requirements("ipsec", V("1.16.19"), "vxlan")
    assert any("CONFIG_INET_ESP" in r and "CONFIG_CRYPTO_GCM" in r for r in ipsec)
    assert "ESP (IP protocol 50) allowed between all nodes" in ipsec
    assert any("4.19" in r for r in ipsec)
    assert encryption.requirements("none", V("1.19.6")) == []


def test_preflight_lines():
    assert encryption.wireguard_module_problem("agent-1", True, V("1.19.6")) is None
    line = encryption.wireguard_module_problem("agent-1", False, V("1.19.6"))
    assert line is not None and line.startswith("node agent-1: no WireGuard in the kernel")
    assert "WireGuard not supported by the Linux kernel" in line
    assert encryption.ipsec_modules_problem("agent-1", []) is None
    assert "esp4" in (encryption.ipsec_modules_problem("agent-1", ["esp4"]) or "")


def test_the_plan_says_whether_the_key_is_set_but_never_shows_it():
    entry = encryption.plan("ipsec", OFF, V("1.19.6"), ipsec_key_set=True, notes=["a note"])
    assert entry is not None
    text = encryption.plan_text(entry)
    assert text[0] == "encryption: ipsec"
    assert "  secret ipsecKey (set) -> Secret kube-system/cilium-ipsec-keys (key keys)" in text
    assert "  note: a note" in text
    missing = encryption.plan_text(encryption.plan("ipsec", OFF, V("1.19.6")) or {})
    assert any("ipsecKey (missing)" in line for line in missing)
    dumped = json.dumps(entry) + "\n".join(text)
    assert SECRET_HEX not in dumped and "rfc4106" not in dumped


def test_the_wireguard_plan_and_none():
    entry = encryption.plan("wireguard", NODE_ENC, V("1.19.6"))
    assert entry is not None and entry["port"] == 51871
    assert encryption.plan_text(entry)[0] == "encryption: wireguard, node-to-node too"
    assert encryption.plan("none", OFF, V("1.19.6")) is None


@pytest.mark.parametrize(
    ("mode", "nodes", "expected"),
    [
        ("wireguard", 3, {"mode": "wireguard", "peers": 2}),
        ("ipsec", 3, {"mode": "ipsec", "minKeys": 4, "maxXfrmErrors": 0}),
        ("ipsec", 1, {"mode": "ipsec"}),
        ("none", 3, {"mode": "disabled"}),
    ],
)
def test_verify_expectations_fit_the_check(mode, nodes, expected):
    expect = encryption.verify_expectations(mode, OFF, nodes)
    assert expect == expected
    assert validate_expectations(ENCRYPTION_STATUS_KEYS, expect) == expect


@pytest.mark.parametrize(
    ("mode", "nodes", "sample", "matches"),
    [
        ("wireguard", 3, "wireguard-constructed.txt", True),
        ("wireguard", 4, "wireguard-constructed.txt", False),
        ("ipsec", 3, "ipsec-1.19-docs.txt", True),
        ("none", 3, "disabled-constructed.txt", True),
        ("none", 3, "ipsec-1.13-docs.txt", False),
    ],
)
def test_the_collector_waits_for_the_documented_lines(mode, nodes, sample, matches):
    text = (ROOT / "tests" / "verification" / "fixtures" / "encryption" / sample).read_text()
    found = subprocess.run(["grep", "-Eq", "--", encryption.verify_wait_for(mode, nodes)], input=text, text=True,
                           check=False)
    assert (found.returncode == 0) is matches
