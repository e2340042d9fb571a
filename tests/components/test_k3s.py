"""K3sCluster under the Pulumi mock engine: resources, ordering, secrets, connections, determinism."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
import yaml

from components import k3s
from components.k3s import K3sCluster, K3sClusterArgs
from stacks import k3s_flags
from stacks.config import StackConfig, parse
from stacks.features import resolve
from tests.mocks import (
    DEFAULT_COMMAND_STDOUT,
    FAKE_PREFLIGHT,
    FAKE_TOKEN,
    ProgramMocks,
    Recorded,
    Registration,
    depends_transitively,
    run_program,
)

COMMAND = "command:remote:Command"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nFAKE-PRIVATE-KEY-0f9e8d7c6b5a\n-----END OPENSSH PRIVATE KEY-----\n"
)
PRIVATE_KEY_MARK = "FAKE-PRIVATE-KEY-0f9e8d7c6b5a"
CONFIGURED_TOKEN = "FAKE-CONFIGURED-TOKEN-a1b2c3d4e5"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyPinForTestsOnly0123456789abcdefABCD"
BASTION_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBastionKeyPinForTests0123456789abcdefABC"


def make_config(servers: int = 1, agents: int = 2, *, pinned: bool = True, **extra: Any) -> StackConfig:
    nodes = [
        {"name": f"server-{i}", "host": f"10.0.1.{i}", "role": "server", **({"hostKey": HOST_KEY} if pinned else {})}
        for i in range(1, servers + 1)
    ] + [
        {"name": f"agent-{i}", "host": f"10.0.{2 + i // 250}.{i % 250 + 1}", "role": "agent",
         **({"hostKey": HOST_KEY} if pinned else {})}
        for i in range(1, agents + 1)
    ]
    return parse({"nodes": nodes, **extra})


def build(cfg: StackConfig, token: str | None = CONFIGURED_TOKEN, name: str = "k3s") -> Recorded:
    features = resolve(cfg)

    def program() -> dict[str, Any]:
        cluster = K3sCluster(name, K3sClusterArgs(cfg, features, PRIVATE_KEY, token))
        return {
            "kubeconfig": cluster.kubeconfig,
            "token": cluster.token,
            "node_info": cluster.node_info,
            "ready": sorted(cluster.nodes_ready),
            "connection_hosts": {node: conn.host for node, conn in cluster.connections.items()},
        }

    return run_program(program)


def commands(rec: Recorded, role: str) -> list[Registration]:
    return [r for r in rec.of_type(COMMAND) if r.name.startswith(f"k3s-{role}-")]


def component(rec: Recorded) -> Registration:
    (found,) = rec.of_type(k3s.COMPONENT_TYPE)
    return found


# --- what gets created, and in which order ---------------------------------------------------


@pytest.mark.parametrize(("servers", "agents"), [(1, 2), (3, 50)])
@pytest.mark.parametrize("token", [CONFIGURED_TOKEN, None], ids=["token-configured", "token-generated"])
def test_resources_per_role(servers: int, agents: int, token: str | None) -> None:
    rec = build(make_config(servers, agents), token=token)
    nodes = servers + agents
    assert len(commands(rec, "preflight")) == nodes
    assert len(commands(rec, "server")) == servers
    assert len(commands(rec, "agent")) == agents
    assert len(commands(rec, "token")) == (0 if token else 1)
    assert len(commands(rec, "kubeconfig")) == 1
    assert len(commands(rec, "deregister")) == len(commands(rec, "retire")) == nodes - 1
    assert len(commands(rec, "drain")) == len(commands(rec, "ready")) == len(commands(rec, "node-checks")) == nodes
    assert len(rec.matching(r"^k3s-node-checks-assert-")) == nodes
    # + the component, the preflights-passed barrier, the kubeconfig read, the upgrade gate's reader and verdict,
    # the snapshot
    assert len(rec.resources) == 1 + 1 + nodes * 6 + (nodes - 1) * 2 + 1 + (0 if token else 1) + 3
    assert {r.name for r in commands(rec, "server")} == {f"k3s-server-server-{i}" for i in range(1, servers + 1)}
    assert rec.outputs["ready"] == sorted([f"server-{i}" for i in range(1, servers + 1)]
                                          + [f"agent-{i}" for i in range(1, agents + 1)])


def test_every_child_is_parented_to_the_component() -> None:
    rec = build(make_config(3, 5), token=None)
    parent = component(rec)
    assert parent.parent == rec.stack_urn
    children = [r for r in rec.resources if r is not parent]
    assert children and all(r.parent == parent.urn for r in children)


def test_first_server_waits_for_every_preflight_through_one_barrier_then_the_gate_and_the_snapshot() -> None:
    rec = build(make_config(2, 4))
    first = rec.named("k3s-server-server-1")
    passed = rec.named("k3s-preflight-passed")
    assert passed.type == "command:local:Command" and "create" not in passed.inputs  # runs nothing, no SSH
    gate = rec.named("k3s-upgrade-gate-assert")
    reader = rec.named("k3s-upgrade-gate-server-1")
    snapshot = rec.named("k3s-snapshot-server-1")
    drain = rec.named("k3s-drain-server-1")
    assert set(first.dependencies) == {drain.urn}
    assert set(drain.dependencies) == {snapshot.urn}
    assert set(snapshot.dependencies) == {gate.urn}
    assert set(gate.dependencies) == {reader.urn}
    assert set(reader.dependencies) == {passed.urn}
    assert set(passed.dependencies) == {r.urn for r in commands(rec, "preflight") if r is not passed}


def gate_reader_triggers(cfg: StackConfig) -> list[Any]:
    return list(build(cfg).named("k3s-upgrade-gate-server-1").inputs["triggers"])


def test_the_upgrade_gate_reads_again_only_when_a_target_version_changes() -> None:
    base = gate_reader_triggers(make_config(1, 1))
    assert gate_reader_triggers(make_config(1, 1)) == base  # a no-op `up`
    assert gate_reader_triggers(make_config(1, 1, k3s={"disable": ["servicelb", "traefik", "metrics-server"]})) == base
    for changed in ({"k3s": {"version": "v1.34.1+k3s1"}}, {"cilium": {"version": "1.18.4"}},
                    {"k3s": {"upgrade": {"allowDowngrade": True}}}):
        assert gate_reader_triggers(make_config(1, 1, **changed)) != base, changed


def test_the_upgrade_gate_judges_with_the_stacks_targets() -> None:
    rec = build(make_config(1, 1, k3s={"version": "v1.34.1+k3s1"}))
    verdict = rec.named("k3s-upgrade-gate-assert").inputs["create"]
    assert verdict.startswith(".venv/bin/python -m verification upgrade-gate --node server-1 --expect ")
    assert '"k3sVersion":"v1.34.1+k3s1"' in verdict and '"testedKubernetes":["1.32","1.35"]' in verdict


def test_each_node_is_drained_before_and_waited_for_after_its_install() -> None:
    rec = build(make_config(3, 6), token=None)
    token = rec.named("k3s-token-server-1")
    for install in [*commands(rec, "server"), *commands(rec, "agent")]:
        node = install.name.split("-", 2)[2]
        drain, ready = rec.named(f"k3s-drain-{node}"), rec.named(f"k3s-ready-{node}")
        assert drain.urn in install.dependencies, node
        assert set(ready.dependencies) == {install.urn}, node
        assert "k3s-drain" in drain.script() and "k3s-node-ready" in ready.script()
        if install.name.startswith("k3s-agent-"):
            assert install.property_dependencies.get("stdin") == (token.urn,)


def test_further_servers_join_one_after_another() -> None:
    rec = build(make_config(3, 2))
    servers = [rec.named(f"k3s-server-server-{i}") for i in (1, 2, 3)]
    # server-2's drain waits for server-1 to be ready again and to pass its checks; server-3's for server-2.
    assert rec.depends_on(rec.named("k3s-drain-server-2"), rec.named("k3s-node-checks-assert-server-1"))
    assert rec.depends_on(rec.named("k3s-drain-server-3"), rec.named("k3s-node-checks-assert-server-2"))
    assert depends_transitively(rec, servers[2], servers[1])
    assert not rec.depends_on(servers[2], servers[0])  # only through server-2


@pytest.mark.parametrize(("agents", "max_unavailable"), [(5, 1), (5, 2), (4, 4)])
def test_agents_go_after_the_servers_in_batches_of_max_unavailable(agents: int, max_unavailable: int) -> None:
    rec = build(make_config(2, agents, k3s={"upgrade": {"maxUnavailable": max_unavailable}}))
    last_server_ready = rec.named("k3s-node-checks-assert-server-2")
    names = [f"agent-{i}" for i in range(1, agents + 1)]
    batches = [names[i : i + max_unavailable] for i in range(0, agents, max_unavailable)]
    waits_for = [last_server_ready.urn]
    for batch in batches:
        for node in batch:
            assert set(rec.named(f"k3s-drain-{node}").dependencies) == set(waits_for), node
        waits_for = [rec.named(f"k3s-node-checks-assert-{node}").urn for node in batch]


def test_drain_settings_reach_the_script_and_rerun_it() -> None:
    settings = {"upgrade": {"drain": {"timeout": 900, "deleteEmptyDirData": True, "ignoreDaemonSets": False}}}
    default, custom = build(make_config(1, 1)), build(make_config(1, 1, k3s=settings))
    script = custom.named("k3s-drain-agent-1").script()
    assert "DRAIN_TIMEOUT_SECONDS=900" in script and "DELETE_EMPTYDIR_DATA=true" in script
    assert "IGNORE_DAEMONSETS=false" in script
    assert custom.named("k3s-drain-agent-1").inputs["triggers"] != default.named("k3s-drain-agent-1").inputs["triggers"]
    assert custom.named("k3s-ready-agent-1").inputs["triggers"] == default.named("k3s-ready-agent-1").inputs["triggers"]


def test_token_and_kubeconfig_wait_for_the_first_server() -> None:
    rec = build(make_config(1, 1), token=None)
    first = rec.named("k3s-server-server-1")
    for name in ("k3s-token-server-1", "k3s-kubeconfig-server-1"):
        fetch = rec.named(name)
        assert rec.depends_on(fetch, first)
        # Read again when the first server's cluster is created anew (a new CA), and only then.
        assert fetch.inputs["triggers"] == ["sha256:" + "c" * 64]


def _agent_chain(rec: Recorded) -> int:
    start = rec.named("k3s-preflight-server-1")
    lengths = [rec.longest_chain(start, agent) for agent in commands(rec, "agent")]
    assert None not in lengths
    return max(length for length in lengths if length is not None)


@pytest.mark.parametrize("token", [CONFIGURED_TOKEN, None], ids=["token-configured", "token-generated"])
def test_sequential_steps_grow_with_the_batches_of_agents(token: str | None) -> None:
    """One drain-install-ready step per server and per batch of maxUnavailable agents, after the gate."""
    few = build(make_config(3, 2), token=token)
    many = build(make_config(3, 12, k3s={"upgrade": {"maxUnavailable": 4}}), token=token)
    # preflight -> barrier -> gate reader -> verdict -> snapshot, then drain -> install -> ready -> node checks
    # -> their verdict per server and per batch before the last, then the last batch's drain -> install
    assert _agent_chain(few) == 5 + 3 * 5 + (2 - 1) * 5 + 2
    assert _agent_chain(many) == 5 + 3 * 5 + (3 - 1) * 5 + 2
    last_server = few.longest_chain(few.named("k3s-preflight-server-1"), few.named("k3s-server-server-3"))
    assert last_server == 5 + 5 * 2 + 2


# --- secrets ---------------------------------------------------------------------------------


def _plain_leaks(rec: Recorded, *needles: str) -> list[tuple[str, str]]:
    return [
        (r.name, path)
        for r in rec.resources
        for path, text in r.plain_strings()
        for needle in needles
        if needle in text
    ]


@pytest.mark.parametrize("token", [CONFIGURED_TOKEN, None], ids=["token-configured", "token-generated"])
def test_no_plaintext_secret_in_any_input(token: str | None) -> None:
    rec = build(make_config(2, 3, ssh={"bastion": {"host": "203.0.113.7"}}), token=token)
    assert _plain_leaks(rec, PRIVATE_KEY_MARK, CONFIGURED_TOKEN, FAKE_TOKEN) == []
    # ... while they really were sent, as secrets.
    everything = [text for r in rec.resources for _, text in _all_strings(r)]
    assert any(PRIVATE_KEY_MARK in text for text in everything)
    assert any((token or FAKE_TOKEN) in text for text in everything)


def _all_strings(r: Registration) -> list[tuple[str, str]]:
    from tests.mocks import walk_strings

    return list(walk_strings(r.inputs))


def test_private_key_token_and_kubeconfig_are_secret() -> None:
    rec = build(make_config(2, 2, ssh={"bastion": {"host": "203.0.113.7"}}), token=CONFIGURED_TOKEN)
    for r in rec.of_type(COMMAND):
        assert r.is_secret("connection.privateKey"), r.name
        assert r.is_secret("connection.proxy.privateKey"), r.name
        if r.stdin_data():
            assert r.is_secret("stdin"), r.name
            assert r.stdin_data() == CONFIGURED_TOKEN
    assert rec.is_secret_output("token") and rec.outputs["token"] == CONFIGURED_TOKEN
    assert rec.is_secret_output("kubeconfig")
    assert not rec.is_secret_output("node_info")
    registered = rec.component_secret_outputs[component(rec).urn]
    assert {"token", "kubeconfig"} <= registered and "nodeInfo" not in registered


def test_read_back_token_is_secret_unlogged_and_sent_on_stdin() -> None:
    rec = build(make_config(2, 2), token=None)
    reader = rec.named("k3s-token-server-1")
    assert reader.inputs["logging"] == "none"
    assert reader.options["additional_secret_outputs"] == ["connection", "stdout"]
    assert rec.outputs["token"] == FAKE_TOKEN.strip() and rec.is_secret_output("token")
    for r in [*commands(rec, "agent"), rec.named("k3s-server-server-2")]:
        assert r.stdin_data() == FAKE_TOKEN.strip() and r.is_secret("stdin"), r.name


def test_kubeconfig_fetch_is_unlogged_and_secret() -> None:
    rec = build(make_config(1, 1))
    fetch = rec.named("k3s-kubeconfig-server-1")
    assert fetch.inputs["logging"] == "none"
    assert "stdout" in fetch.options["additional_secret_outputs"]


@pytest.mark.parametrize("token", [CONFIGURED_TOKEN, None], ids=["token-configured", "token-generated"])
def test_no_command_line_carries_the_token(token: str | None) -> None:
    rec = build(make_config(2, 2), token=token)
    for r in rec.of_type(COMMAND):
        for key in ("create", "update", "delete"):
            text = r.inputs.get(key, "")
            assert CONFIGURED_TOKEN not in text and FAKE_TOKEN.strip() not in text, (r.name, key)


def test_token_file_only_when_a_token_is_configured() -> None:
    configured = build(make_config(2, 1), token=CONFIGURED_TOKEN)
    generated = build(make_config(2, 1), token=None)
    first_configured = configured.named("k3s-server-server-1")
    first_generated = generated.named("k3s-server-server-1")
    assert first_configured.stdin_data() == CONFIGURED_TOKEN and first_generated.stdin_data() == ""
    assert f"token-file: {k3s_flags.TOKEN_PATH}" in first_configured.script()
    assert f"token-file: {k3s_flags.TOKEN_PATH}" not in first_generated.script()
    assert "TOKEN_FROM_STDIN=false" in first_generated.script()
    # Joining nodes always get the token from a file written from stdin.
    for name in ("k3s-server-server-2", "k3s-agent-agent-1"):
        assert "TOKEN_FROM_STDIN=true" in generated.named(name).script()
        assert f"token-file: {k3s_flags.TOKEN_PATH}" in generated.named(name).script()


def test_empty_token_means_generated() -> None:
    rec = build(make_config(1, 1), token="")
    assert len(commands(rec, "token")) == 1


# --- connections -----------------------------------------------------------------------------


def test_host_key_pin_reaches_the_connection() -> None:
    rec = build(make_config(1, 1, pinned=True))
    for r in rec.of_type(COMMAND):
        assert r.inputs["connection"]["hostKey"] == HOST_KEY
    assert rec.warnings == []


def test_missing_pins_warn_once_naming_the_nodes() -> None:
    cfg = make_config(2, 3, pinned=False, ssh={"bastion": {"host": "203.0.113.7"}})
    rec = build(cfg)
    assert len(rec.warnings) == 1
    (warning,) = rec.warnings
    for node in cfg.nodes:
        assert node.name in warning
    assert "bastion 203.0.113.7" in warning
    assert all("hostKey" not in r.inputs["connection"] for r in rec.of_type(COMMAND))


def test_pinned_nodes_but_unpinned_bastion_warns_about_the_bastion_only() -> None:
    rec = build(make_config(1, 1, ssh={"bastion": {"host": "203.0.113.7"}}))
    assert len(rec.warnings) == 1
    assert "bastion 203.0.113.7" in rec.warnings[0] and "server-1" not in rec.warnings[0]


def test_bastion_reaches_proxy() -> None:
    cfg = make_config(1, 1, ssh={"bastion": {"host": "203.0.113.7", "port": 2222, "user": "jump",
                                             "hostKey": BASTION_KEY}})
    rec = build(cfg)
    assert rec.warnings == []
    for r in rec.of_type(COMMAND):
        proxy = r.inputs["connection"]["proxy"]
        assert (proxy["host"], proxy["port"], proxy["user"], proxy["hostKey"]) == (
            "203.0.113.7", 2222, "jump", BASTION_KEY)
        assert proxy["privateKey"] == PRIVATE_KEY
        # A dead bastion fails as fast as a dead node: 6 tries of at most 10 s, not pulumi-command's 10 of 15 s.
        assert (proxy["dialErrorLimit"], proxy["perDialTimeout"]) == (6, 10)
        assert (r.inputs["connection"]["dialErrorLimit"], r.inputs["connection"]["perDialTimeout"]) == (6, 10)


def test_non_root_user_gets_sudo() -> None:
    cfg = make_config(1, 1, ssh={"user": "ubuntu", "port": 2200})
    rec = build(cfg)
    for r in rec.of_type(COMMAND):
        assert r.inputs["connection"]["user"] == "ubuntu" and r.inputs["connection"]["port"] == 2200
        for key in ("create", "update", "delete"):
            if key in r.inputs:
                assert r.inputs[key].startswith("sudo -n bash -s -- "), (r.name, key)


def test_root_user_runs_bash_directly() -> None:
    rec = build(make_config(1, 1))
    for r in rec.of_type(COMMAND):
        command = r.inputs.get("create") or r.inputs["delete"]
        assert command.startswith("bash -s -- "), r.name


# --- install, update, delete -------------------------------------------------------------------


def test_install_updates_in_place_and_uninstalls_on_delete() -> None:
    rec = build(make_config(1, 1))
    for role, uninstaller in (("server", "k3s-uninstall.sh"), ("agent", "k3s-agent-uninstall.sh")):
        (install,) = commands(rec, role)
        assert install.script("update") == install.script("create")
        assert "get.k3s.io" in install.script("create") and "K3S_VERSION=v1.33.3+k3s1" in install.script("create")
        assert f"ROLE={role}" in install.script("delete")
        assert uninstaller in install.script("delete")
        # A trigger change replaces = uninstalls: the only trigger is the node's SSH address.
        assert install.inputs["triggers"] == [install.inputs["connection"]["host"], 22]
        assert install.options["delete_before_replace"] is True
    for name in ("k3s-preflight-server-1", "k3s-kubeconfig-server-1"):
        assert "delete" not in rec.named(name).inputs


def test_install_and_uninstall_name_their_own_resource_as_owner() -> None:
    rec = build(make_config(2, 2))
    for install in commands(rec, "server") + commands(rec, "agent"):
        assert f"OWNER={install.name}\n" in install.script("create"), install.name
        assert f"OWNER={install.name}\n" in install.script("delete"), install.name
        assert f"OWNER_MARKER={k3s.OWNER_MARKER}\n" in install.script("delete")


def test_config_yaml_is_the_rendered_node_config() -> None:
    cfg = make_config(3, 1, k3s={"apiEndpoint": "k8s.example.com"})
    features = resolve(cfg)
    rec = build(cfg)
    for node in cfg.nodes:
        text = k3s.render_node_config(cfg, features, node, token_configured=True)
        assert text == yaml.safe_dump(k3s_flags.node_config(cfg, features, node, True), sort_keys=True)
        assert f"node-name: {node.name}\n" in text  # block style, one key per line: diffs well
        install = rec.named(f"k3s-{node.role}-{node.name}")
        assert k3s.install_params(cfg, features, node, True, install.name)["CONFIG_YAML"] == text
        # The script carries it as one quoted parameter, not as flags.
        assert "--flannel-backend" not in install.script("create")
    assert "cluster-init: true" in rec.named("k3s-server-server-1").script("create")


ROLES = ("create", "update", "delete")


def _inputs(rec: Recorded) -> dict[str, dict[str, Any]]:
    """Every resource's inputs, with a remote command's command lines replaced by the scripts they run."""
    return {
        r.name: {
            **r.inputs,
            **{role: r.script(role) for role in ROLES if role in r.inputs and r.type == COMMAND},
        }
        for r in rec.resources
    }


def test_server_config_change_updates_servers_and_restarts_agents_in_place() -> None:
    before = _inputs(build(make_config(1, 2)))
    after = _inputs(build(make_config(1, 2, k3s={"disable": ["traefik"]})))
    for name in ("k3s-server-server-1", "k3s-agent-agent-1", "k3s-agent-agent-2"):
        assert before[name]["update"] != after[name]["update"], name
        assert before[name]["delete"] == after[name]["delete"], name
        assert before[name]["triggers"] == after[name]["triggers"], name
    # The agents' own config did not change: only the servers' digest did.
    agent_before = before["k3s-agent-agent-1"]["create"]
    agent_after = after["k3s-agent-agent-1"]["create"]
    assert agent_before.replace(_digest_of(agent_before), "") == agent_after.replace(_digest_of(agent_after), "")


def _digest_of(command: str) -> str:
    marker = "SERVERS_CONFIG_SHA256="
    start = command.index(marker) + len(marker)
    return command[start:start + 64 + 2]  # quoted hex digest


def test_agent_change_touches_only_that_agent() -> None:
    cfg = make_config(1, 3)
    relabelled = cfg.model_copy(update={"nodes": [
        n.model_copy(update={"labels": {"tier": "edge"}}) if n.name == "agent-2" else n for n in cfg.nodes
    ]})
    before, after = _inputs(build(cfg)), _inputs(build(relabelled))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"k3s-agent-agent-2"}


def test_version_change_updates_without_replacing() -> None:
    before = _inputs(build(make_config(1, 1)))
    after = _inputs(build(make_config(1, 1, k3s={"version": "v1.34.1+k3s1"})))
    for name in ("k3s-server-server-1", "k3s-agent-agent-1"):
        assert "K3S_VERSION=v1.34.1+k3s1" in after[name]["update"]
        assert before[name]["triggers"] == after[name]["triggers"], name


def test_preflight_gets_the_feature_kernel_floors() -> None:
    cfg = make_config(1, 1, tier="extreme", cilium={"version": "1.19.6"})
    rec = build(cfg)
    create = rec.named("k3s-preflight-agent-1").script()
    for line in ("bpfHostRouting=5.10", "bigTcp=6.3", "bandwidthManager=5.1", "bbr=5.18"):
        assert line in create
    # MIN_KERNEL is Cilium 1.19's own floor; the features' floors are checked one by one.
    assert "MIN_KERNEL=5.10" in create and "NODE_NAME=agent-1" in create and "RHEL_MIN=8.10" in create
    assert "curl|wget the K3s install script download" in create and "iptables" not in create


# --- outputs -------------------------------------------------------------------------------


def test_kubeconfig_points_at_the_api_endpoint() -> None:
    rec = build(make_config(1, 1, k3s={"apiEndpoint": "k8s.example.com"}))
    doc = yaml.safe_load(rec.outputs["kubeconfig"])
    assert [c["cluster"]["server"] for c in doc["clusters"]] == ["https://k8s.example.com:6443"]
    assert doc["users"][0]["user"]["client-key-data"] == "RkFLRS1LRVk="


def test_kubeconfig_defaults_to_the_first_server() -> None:
    rec = build(make_config(2, 1))
    assert yaml.safe_load(rec.outputs["kubeconfig"])["clusters"][0]["cluster"]["server"] == "https://10.0.1.1:6443"


def test_rewrite_kubeconfig_brackets_ipv6_and_rejects_garbage() -> None:
    text = k3s.rewrite_kubeconfig("clusters:\n- cluster: {server: 'https://127.0.0.1:6443'}\n  name: x\n", "fd00::1")
    assert yaml.safe_load(text)["clusters"][0]["cluster"]["server"] == "https://[fd00::1]:6443"
    with pytest.raises(ValueError, match="not a kubeconfig"):
        k3s.rewrite_kubeconfig("error: no such file", "10.0.0.1")


def test_node_info_from_preflight() -> None:
    rec = build(make_config(1, 2))
    assert rec.outputs["node_info"] == {
        node: {"kernel": "6.8.0-45-generic", "os": "ubuntu-24.04", "arch": "x86_64", "k3s": "absent"}
        for node in ("server-1", "agent-1", "agent-2")
    }


def test_parse_facts_takes_the_last_fact_line() -> None:
    stdout = "noise here\nstale=line\nkernel=5.15.0 os=debian-12 arch=aarch64 k3s=v1.33.3+k3s1\n"
    assert k3s.parse_facts(stdout) == {
        "kernel": "5.15.0", "os": "debian-12", "arch": "aarch64", "k3s": "v1.33.3+k3s1"}
    assert k3s.parse_facts("") == {}


def test_connections_output_per_node() -> None:
    rec = build(make_config(1, 2))
    assert rec.outputs["connection_hosts"] == {"server-1": "10.0.1.1", "agent-1": "10.0.2.2", "agent-2": "10.0.2.3"}


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [CONFIGURED_TOKEN, None], ids=["token-configured", "token-generated"])
def test_same_config_same_inputs(token: str | None) -> None:
    cfg = make_config(3, 10, tier="performance", k3s={"apiEndpoint": "k8s.example.com"})
    first, second = build(cfg, token=token), build(cfg, token=token)
    assert first.snapshot() == second.snapshot()
    assert first.outputs == second.outputs


# --- the shared harness (tests/mocks.py) that other components' tests reuse ------------------


def test_harness_config_exports_and_secrets() -> None:
    import pulumi

    def program() -> dict[str, Any]:
        config = pulumi.Config("k3s-cilium")
        pulumi.export("tier", config.get("tier"))
        pulumi.export("key", config.get_secret("sshPrivateKey"))
        return {
            "nodes": config.get_object("nodes"),
            "secret": pulumi.Output.secret("x"),
            "plain": pulumi.Output.from_input("y"),
        }

    rec = run_program(program, config={"k3s-cilium:tier": "extreme", "k3s-cilium:nodes": [{"name": "a"}],
                                       "k3s-cilium:sshPrivateKey": PRIVATE_KEY},
                      secret_config=("k3s-cilium:sshPrivateKey",))
    assert rec.exports == {"tier": "extreme", "key": PRIVATE_KEY}
    assert rec.secret_exports == {"key"}
    assert rec.outputs == {"nodes": [{"name": "a"}], "secret": "x", "plain": "y"}
    assert rec.is_secret_output("secret") and not rec.is_secret_output("plain")
    # Runs are independent: nothing registered before leaks into the next run.
    assert run_program(lambda: None).resources == []


# --- leaving the cluster -------------------------------------------------------------------------


def test_every_other_node_is_deregistered_from_the_first_server_after_its_uninstall() -> None:
    rec = build(make_config(2, 2))
    first_connection = rec.named("k3s-server-server-1").inputs["connection"]
    deregistrations = commands(rec, "deregister")
    assert {r.name for r in deregistrations} == {
        "k3s-deregister-server-2",
        "k3s-deregister-agent-1",
        "k3s-deregister-agent-2",
    }
    for deregistration in deregistrations:
        node = deregistration.name.removeprefix("k3s-deregister-")
        install = rec.named(f"k3s-{node.split('-')[0]}-{node}")
        assert deregistration.inputs["connection"] == first_connection
        assert f"NODE_NAME={node}" in deregistration.script("delete")
        # The install depends on it, so Pulumi uninstalls the node before deregistering it.
        assert rec.depends_on(install, deregistration)
        assert deregistration.options["delete_before_replace"] is True


def test_a_node_that_leaves_is_drained_before_its_uninstall_unless_the_whole_cluster_goes() -> None:
    rec = build(make_config(2, 2))
    first_install = rec.named("k3s-server-server-1")
    retirements = commands(rec, "retire")
    # The first server cannot leave on its own: only the other nodes have one.
    assert {r.name for r in retirements} == {"k3s-retire-server-2", "k3s-retire-agent-1", "k3s-retire-agent-2"}
    for retirement in retirements:
        node = retirement.name.removeprefix("k3s-retire-")
        install = rec.named(f"k3s-{node.split('-')[0]}-{node}")
        delete = retirement.script("delete")
        assert "create" not in retirement.inputs
        assert retirement.inputs["connection"] == first_install.inputs["connection"]
        assert f"NODE_NAME={node}" in delete and "PURPOSE=removal" in delete
        # It depends on the install, so Pulumi deletes it (drains) before the uninstall.
        assert rec.depends_on(retirement, install)
        # Destroying the cluster deletes the first server too: no drain then.
        assert retirement.options["deleted_with"] == first_install.urn


def test_moving_a_node_to_another_host_replaces_its_deregistration() -> None:
    before = build(make_config(1, 2)).named("k3s-deregister-agent-2").inputs["triggers"]
    moved = make_config(1, 2)
    nodes = [n.model_copy(update={"host": "10.9.9.9"}) if n.name == "agent-2" else n for n in moved.nodes]
    after = build(moved.model_copy(update={"nodes": nodes})).named("k3s-deregister-agent-2").inputs["triggers"]
    assert before != after and after[0] == "10.9.9.9"


# --- the snapshot copied to where Pulumi runs (k3s.upgrade.snapshotTo) ------------------------------------


def test_the_snapshot_is_copied_before_any_node_is_touched_with_the_key_only_on_stdin() -> None:
    rec = build(make_config(1, 1, ssh={"bastion": {"host": "jump.example", "hostKey": HOST_KEY}},
                            k3s={"upgrade": {"snapshotTo": "snapshots"}}))
    copy = rec.named("k3s-snapshot-copy")
    assert copy.type == "command:local:Command"
    assert copy.inputs["create"] == "bash -s -- snapshot-fetch"
    assert copy.inputs["dir"] == "."
    assert rec.depends_on(copy, rec.named("k3s-snapshot-server-1"))
    assert rec.depends_on(rec.named("k3s-drain-server-1"), copy)
    # The key is on stdin, secret; the script names the server, its pinned key and the jump host.
    assert copy.is_secret("stdin")
    assert not any("PRIVATE KEY" in text for _, text in copy.plain_strings())
    script = copy.script()
    assert "HOST=10.0.1.1" in script and "DEST_DIR=snapshots" in script and "BASTION_HOST=jump.example" in script
    # It runs again exactly when the snapshot does: a K3s version change.
    assert copy.inputs["triggers"][-2:] == ["v1.33.3+k3s1", "snapshots"]


def test_without_snapshot_to_nothing_is_copied() -> None:
    rec = build(make_config(1, 1))
    assert rec.matching(r"snapshot-copy") == []


def test_an_upgraded_node_must_serve_the_smoke_service_on_its_nodeport_where_cilium_serves_nodeports() -> None:
    # The smoke Service's fixed NodePort: the static band's last port of 30000-32767 (stacks/checks.py).
    script = build(make_config(1, 1)).named("k3s-ready-agent-1").script()
    assert "NODE_PORT=30085" in script and "SMOKE_SERVICE=smoke" in script
    for quiet in (make_config(1, 1, verify={"smoke": False}), make_config(1, 1, tier="baseline")):
        assert "NODE_PORT=" not in build(quiet).named("k3s-ready-agent-1").script()


# --- each node's own checks between the steps of a rollout -------------------------------------


def _node_checks_expect(rec: Recorded, node: str) -> dict[str, Any]:
    verdict = rec.named(f"k3s-node-checks-assert-{node}").inputs["create"]
    command, _, expect = verdict.partition(" --expect ")
    assert command == f".venv/bin/python -m verification node-checks --node {node}"
    loaded: dict[str, Any] = json.loads(shlex.split(expect)[0])
    return loaded


def test_each_node_passes_its_own_checks_on_the_node_itself_before_the_next_node_goes() -> None:
    rec = build(make_config(1, 2))
    ready, collector = rec.named("k3s-ready-agent-1"), rec.named("k3s-node-checks-agent-1")
    verdict = rec.named("k3s-node-checks-assert-agent-1")
    # Collected over SSH on agent-1 itself, from what the wait printed; judged where Pulumi runs.
    assert collector.inputs["connection"]["host"] == "10.0.2.2"
    assert ready.inputs["connection"]["host"] == "10.0.1.1"
    assert collector.property_dependencies.get("stdin") == (ready.urn,)
    script = collector.script()
    assert "CHECKS='agent-status no-kube-proxy-rules kpr-integrity'" in script and "SKIP_WHEN=cilium=absent" in script
    assert verdict.property_dependencies.get("stdin") == (collector.urn,)
    assert set(rec.named("k3s-drain-agent-2").dependencies) == {verdict.urn}
    expect = _node_checks_expect(rec, "agent-1")
    assert set(expect) == {"agent-status", "no-kube-proxy-rules", "kpr-integrity"}
    assert expect["agent-status"]["kubeProxyReplacement"] is True
    assert expect["kpr-integrity"]["role"] == "agent"
    # Run again exactly when the wait does: a K3s version change.
    upgraded = build(make_config(1, 2, k3s={"version": "v1.34.1+k3s1"}))
    assert upgraded.named("k3s-node-checks-agent-1").inputs["triggers"] != collector.inputs["triggers"]
    assert build(make_config(1, 2)).named("k3s-node-checks-agent-1").inputs["triggers"] == collector.inputs["triggers"]


def test_without_kube_proxy_replacement_only_the_agent_is_checked_between_nodes() -> None:
    rec = build(make_config(1, 1, tier="baseline"))
    assert "\nCHECKS=agent-status\n" in rec.named("k3s-node-checks-agent-1").script()
    expect = _node_checks_expect(rec, "agent-1")
    assert list(expect) == ["agent-status"]
    assert expect["agent-status"]["kubeProxyReplacement"] is False


def test_a_feature_preflight_left_off_on_a_node_is_not_asserted_there_between_nodes() -> None:
    cfg = make_config(1, 1, tier="extreme")
    preflight = (r"-preflight-agent-1$", FAKE_PREFLIGHT + " skipped=bigTcp")
    rec = run_program(
        lambda: K3sCluster("k3s", K3sClusterArgs(cfg, resolve(cfg), PRIVATE_KEY, CONFIGURED_TOKEN)),
        ProgramMocks(command_stdout=(preflight, *DEFAULT_COMMAND_STDOUT)),
    )
    assert "bigTcp" in _node_checks_expect(rec, "server-1")["agent-status"]
    assert "bigTcp" not in _node_checks_expect(rec, "agent-1")["agent-status"]
