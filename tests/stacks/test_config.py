from __future__ import annotations

from typing import Any

import pytest

from stacks.config import ConfigError, StackConfig, parse


def problems_for(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    return caught.value.problems


def only_problem(raw: dict[str, Any]) -> str:
    problems = problems_for(raw)
    assert len(problems) == 1, problems
    return problems[0]


def test_lab_config_parses_with_defaults(raw):
    cfg = parse(raw)
    assert isinstance(cfg, StackConfig)
    assert [n.name for n in cfg.servers] == ["server-1"]
    assert [n.name for n in cfg.agents] == ["agent-1", "agent-2"]
    assert cfg.ssh.user == "root" and cfg.ssh.port == 22
    assert cfg.k3s.cluster_cidr == "10.42.0.0/16"
    assert cfg.native_routing_cidr == "10.42.0.0/16"
    assert cfg.api_endpoint == "192.168.56.10"
    assert cfg.verify.smoke is True and cfg.verify.benchmark is False


def test_unknown_tier_names_key_value_and_choices(raw):
    raw["tier"] = "turbo"
    message = only_problem(raw)
    assert message.startswith("k3s-cilium:tier: 'turbo'")
    for tier in ("baseline", "kpr", "performance", "extreme"):
        assert tier in message


def test_unknown_feature_is_rejected(raw):
    raw["features"] = {"dsr": True, "warpDrive": True}
    message = only_problem(raw)
    assert "k3s-cilium:features.warpDrive" in message and "unknown key" in message


def test_unknown_top_level_key_lists_allowed_keys(raw):
    raw["node"] = []
    message = only_problem(raw)
    assert message.startswith("k3s-cilium:node:") and "nodes" in message


def test_duplicate_node_names(raw):
    raw["nodes"][2]["name"] = "agent-1"
    message = only_problem(raw)
    assert "unique" in message and "agent-1" in message


def test_no_server(raw):
    for node in raw["nodes"]:
        node["role"] = "agent"
    assert only_problem(raw) == "k3s-cilium:nodes: at least one node needs role 'server'"


def test_empty_node_list_names_its_key(raw):
    raw["nodes"] = []
    assert only_problem(raw) == "k3s-cilium:nodes: at least one node needs role 'server'"


def test_every_whole_config_problem_names_its_key(raw):
    raw["nodes"][1]["host"] = raw["nodes"][0]["host"]
    raw["cilium"]["nativeRoutingCidr"] = "10.42.0.0/24"
    problems = problems_for(raw)
    assert problems == [
        "k3s-cilium:nodes: two nodes share the same SSH address: 192.168.56.10:22",
        "k3s-cilium:cilium.nativeRoutingCidr: 10.42.0.0/24 must contain k3s.clusterCidr 10.42.0.0/16, "
        "or pod traffic gets masqueraded",
    ]


RSA_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"


def test_rsa_host_key_is_refused_with_the_fix(raw):
    raw["nodes"][0]["hostKey"] = RSA_KEY
    message = only_problem(raw)
    assert message.startswith("k3s-cilium:nodes[0].hostKey: ")
    assert "ssh-rsa" in message and "SHA-1" in message and "ssh-keyscan -t ed25519" in message


def test_rsa_bastion_host_key_is_refused(raw):
    raw["ssh"] = {"bastion": {"host": "bastion.example.com", "hostKey": RSA_KEY}}
    assert only_problem(raw).startswith("k3s-cilium:ssh.bastion.hostKey: ")


@pytest.mark.parametrize(
    "key",
    [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9"
        "nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=",
    ],
)
def test_ed25519_and_ecdsa_host_keys_are_accepted(raw, key):
    raw["nodes"][0]["hostKey"] = key
    assert parse(raw).nodes[0].host_key == key


def test_bad_role_lists_allowed_roles(raw):
    raw["nodes"][1]["role"] = "worker"
    message = only_problem(raw)
    assert message.startswith("k3s-cilium:nodes[1].role: 'worker'") and "'server'" in message and "'agent'" in message


@pytest.mark.parametrize("host", ["300.1.1.1", "node_1", "-bad.example.com", "", "a" * 254])
def test_invalid_host(raw, host):
    raw["nodes"][0]["host"] = host
    message = only_problem(raw)
    assert message.startswith("k3s-cilium:nodes[0].host:") and "IPv4/IPv6 address or a DNS name" in message


@pytest.mark.parametrize("host", ["10.0.0.5", "fd00::5", "node1.example.com", "node1"])
def test_valid_hosts(raw, host):
    raw["nodes"][0]["host"] = host
    assert parse(raw).nodes[0].host == host


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("clusterCidr", "10.42.0.0/33"),
        ("clusterCidr", "10.42.0.1/16"),
        ("serviceCidr", "banana"),
        ("clusterCidr", "fd00::/48"),
    ],
)
def test_invalid_cidr(raw, key, value):
    raw["k3s"][key] = value
    message = only_problem(raw)
    assert message.startswith(f"k3s-cilium:k3s.{key}: {value!r}") and "CIDR" in message


def test_overlapping_cidrs(raw):
    raw["k3s"].update(clusterCidr="10.42.0.0/16", serviceCidr="10.42.128.0/17")
    assert "overlap" in only_problem(raw)


def test_native_routing_cidr_must_contain_cluster_cidr(raw):
    raw["cilium"]["nativeRoutingCidr"] = "10.42.0.0/24"
    message = only_problem(raw)
    assert message.startswith(
        "k3s-cilium:cilium.nativeRoutingCidr: 10.42.0.0/24 must contain k3s.clusterCidr 10.42.0.0/16"
    )


@pytest.mark.parametrize("value", ["30000:32767", "32767-30000", "0-100", "30000-70000", "abc"])
def test_invalid_node_port_range(raw, value):
    raw["cilium"]["nodePortRange"] = value
    assert only_problem(raw).startswith(f"k3s-cilium:cilium.nodePortRange: {value!r}")


@pytest.mark.parametrize("port", [0, 65536, -22])
def test_invalid_ssh_port(raw, port):
    raw["nodes"][1]["port"] = port
    assert only_problem(raw).startswith(f"k3s-cilium:nodes[1].port: {port}")


@pytest.mark.parametrize("size", [16384, 1000, 0])
def test_maglev_table_size_must_be_a_prime_cilium_accepts(raw, size):
    raw["cilium"]["maglevTableSize"] = size
    message = only_problem(raw)
    assert (
        message.startswith(f"k3s-cilium:cilium.maglevTableSize: {size}") and "16381" in message and "65521" in message
    )


@pytest.mark.parametrize("version", ["1.12.9", "1.21.0", "v1.19.6", "1.19"])
def test_unsupported_cilium_version(raw, version):
    raw["cilium"]["version"] = version
    assert only_problem(raw).startswith(f"k3s-cilium:cilium.version: {version!r}")


@pytest.mark.parametrize("version", ["1.33.3+k3s1", "v1.33.3", "v1.33.3+k3s1; reboot", "latest"])
def test_k3s_version_must_be_pinned(raw, version):
    raw["k3s"]["version"] = version
    message = only_problem(raw)
    assert message.startswith(f"k3s-cilium:k3s.version: {version!r}") and "v1.33.3+k3s1" in message


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("nodes", 0, "name"), "server-1;rm -rf /"),
        (("nodes", 0, "host"), "10.0.0.1 && curl evil"),
        (("nodes", 0, "host"), "$(reboot)"),
        (("nodes", 0, "user"), "root`id`"),
        (("nodes", 0, "nodeIp"), "10.0.0.1|x"),
        (("ssh", "user"), "ubuntu;id"),
        (("k3s", "apiEndpoint"), "api.example.com'"),
        (("nodes", 0, "labels"), {"role": "db$(id)"}),
        (("nodes", 0, "labels"), {"ro le": "db"}),
        (("nodes", 0, "taints"), ["dedicated=db:NoSchedule;id"]),
        (("nodes", 0, "hostKey"), "ssh-ed25519 AAAA\nssh-rsa BBBB"),
    ],
)
def test_shell_metacharacters_never_reach_a_host(raw, path, value):
    target: Any = raw
    for part in path[:-1]:
        target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
    target[path[-1]] = value
    dotted = ".".join(p if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
    assert only_problem(raw).startswith(f"k3s-cilium:{dotted}")


def test_taints_and_labels_accept_kubernetes_forms(raw):
    raw["nodes"][1]["labels"] = {"example.com/tier": "db", "zone": "a"}
    raw["nodes"][1]["taints"] = ["dedicated=db:NoSchedule", "gpu:NoExecute"]
    node = parse(raw).nodes[1]
    assert node.labels["example.com/tier"] == "db" and node.taints[1] == "gpu:NoExecute"


def test_every_problem_is_reported_at_once(raw):
    raw["tier"] = "turbo"
    raw["nodes"][0]["host"] = "bad host"
    raw["cilium"]["maglevTableSize"] = 7
    problems = problems_for(raw)
    assert len(problems) == 3
    assert {p.split(":")[1].split(" ")[0] for p in problems} == {"tier", "nodes[0].host", "cilium.maglevTableSize"}


def test_secrets_are_not_part_of_the_model(raw):
    raw["sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----"
    cfg = parse(raw)
    assert "BEGIN OPENSSH" not in cfg.model_dump_json()


def test_missing_nodes(raw):
    del raw["nodes"]
    assert only_problem(raw) == "k3s-cilium:nodes: is required but not set"


# --- airgap.registries.disableDefaultEndpoint: K3s has the flag since its January 2024 releases ------------
# (docs.k3s.io, Private Registry Configuration: v1.26.13+k3s1, v1.27.10+k3s1, v1.28.6+k3s1, v1.29.1+k3s1)

def _no_fallback(raw: dict[str, Any], k3s_version: str) -> dict[str, Any]:
    raw["k3s"] = {"version": k3s_version}
    raw["airgap"] = {"registries": {"mirrors": {"docker.io": {"endpoints": ["https://registry.internal:5000"]}},
                                    "disableDefaultEndpoint": True}}
    return raw


@pytest.mark.parametrize("version", ["v1.26.13+k3s1", "v1.27.10+k3s1", "v1.28.6+k3s1", "v1.29.1+k3s1",
                                     "v1.28.15+k3s1", "v1.30.0+k3s1", "v1.33.3+k3s1"])
def test_no_fallback_with_a_k3s_release_that_has_the_flag(raw, version):
    assert parse(_no_fallback(raw, version)).airgap.registries.disable_default_endpoint is True


@pytest.mark.parametrize("version", ["v1.26.12+k3s1", "v1.27.9+k3s1", "v1.28.5+k3s1", "v1.29.0+k3s1",
                                     "v1.25.16+k3s4"])
def test_no_fallback_with_an_older_k3s_is_refused_naming_the_key_and_both_versions(raw, version):
    message = only_problem(_no_fallback(raw, version))
    assert message.startswith("k3s-cilium:airgap.registries.disableDefaultEndpoint: ")
    assert version in message and "disable-default-registry-endpoint" in message
    assert "v1.28.6+k3s1" in message


def test_an_older_k3s_is_fine_while_the_fallback_stays(raw):
    raw = _no_fallback(raw, "v1.25.16+k3s4")
    raw["airgap"]["registries"]["disableDefaultEndpoint"] = False
    parse(raw)
