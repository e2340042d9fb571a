from __future__ import annotations

from stacks import k3s_flags
from stacks.config import parse
from stacks.features import resolve


def configs(raw, tier="kpr", token_configured=True):
    cfg = parse(dict(raw, tier=tier))
    features = resolve(cfg)
    return {n.name: k3s_flags.node_config(cfg, features, n, token_configured) for n in cfg.nodes}


def test_disable_kube_proxy_exactly_when_kpr(raw):
    for tier, expected in (("baseline", False), ("kpr", True), ("performance", True)):
        assert configs(raw, tier)["server-1"]["disable-kube-proxy"] is expected


def test_servers_leave_networking_to_cilium(raw):
    server = configs(raw)["server-1"]
    assert server["flannel-backend"] == "none"
    assert server["disable-network-policy"] is True
    assert server["cluster-cidr"] == "10.42.0.0/16" and server["service-cidr"] == "10.43.0.0/16"


def test_agents_join_the_first_server_and_carry_no_server_flags(raw):
    agent = configs(raw)["agent-1"]
    assert agent["server"] == "https://192.168.56.10:6443"
    assert agent["node-ip"] == "192.168.56.11"
    assert "disable-kube-proxy" not in agent and "cluster-cidr" not in agent


def test_every_node_waits_for_cilium(raw):
    for config in configs(raw).values():
        assert "node.cilium.io/agent-not-ready=true:NoExecute" in config["node-taint"]


def test_cluster_init_only_with_several_servers(raw):
    assert "cluster-init" not in configs(raw)["server-1"]
    raw["nodes"][1]["role"] = "server"
    ha = configs(raw)
    assert ha["server-1"]["cluster-init"] is True
    assert "cluster-init" not in ha["agent-1"] and ha["agent-1"]["server"] == "https://192.168.56.10:6443"


def test_tls_san_covers_endpoint_and_servers(raw):
    raw["k3s"] = {"apiEndpoint": "api.lab.example.com"}
    raw["nodes"][0]["nodeIp"] = "10.0.0.10"
    assert configs(raw)["server-1"]["tls-san"] == ["10.0.0.10", "192.168.56.10", "api.lab.example.com"]


def test_labels_and_taints(raw):
    raw["nodes"][2].update(labels={"zone": "b", "disk": "ssd"}, taints=["dedicated=db:NoSchedule"])
    agent = configs(raw)["agent-2"]
    assert agent["node-label"] == ["disk=ssd", "zone=b"]
    assert agent["node-taint"][0] == "dedicated=db:NoSchedule"


def test_first_server_generates_the_token_when_none_is_configured(raw):
    generated = configs(raw, token_configured=False)
    assert "token-file" not in generated["server-1"]
    assert generated["agent-1"]["token-file"] == k3s_flags.TOKEN_PATH
    assert configs(raw)["server-1"]["token-file"] == k3s_flags.TOKEN_PATH


def test_node_port_range_matches_cilium(raw):
    raw["cilium"] = {"nodePortRange": "31000-31999"}
    assert configs(raw)["server-1"]["service-node-port-range"] == "31000-31999"


MIRRORS = {"docker.io": {"endpoints": ["https://registry.internal:5000"]}}


def test_no_fallback_to_the_public_registries_on_every_node_when_asked(raw):
    raw["airgap"] = {"registries": {"mirrors": MIRRORS, "disableDefaultEndpoint": True}}
    raw["nodes"][1]["role"] = "server"
    for name, config in configs(raw).items():
        assert config["disable-default-registry-endpoint"] is True, name


def test_the_public_registries_stay_the_fallback_by_default(raw):
    plain = configs(raw)
    raw["airgap"] = {"registries": {"mirrors": MIRRORS}}
    mirrored = configs(raw)
    for config in (*plain.values(), *mirrored.values()):
        assert "disable-default-registry-endpoint" not in config
    # Nothing else changes either: a stack that leaves it unset keeps its K3s config (no restart).
    assert plain == mirrored
