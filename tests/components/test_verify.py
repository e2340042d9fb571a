"""Verification under the mock engine, built after CiliumRelease and KubeProxyRemoval as in the program."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import mocks as pulumi_mocks

from components import verify
from components.scripts import ScriptValue, render
from stacks import checks
from stacks.config import StackConfig
from stacks.digest import deployed_state, digest
from stacks.features import resolve
from tests.lab import LAB, PROVIDER_TYPE, RELEASE_TYPE, cilium_then_removal, config, stand_in_cluster
from tests.mocks import ProgramMocks, Recorded, Registration, run_program

NAME = "verify"
COMPONENT_TYPE = "k3s-cilium:index:Verification"
REMOTE = "command:remote:Command"
LOCAL = "command:local:Command"
NODES = [node["name"] for node in LAB["nodes"]]
PER_NODE = ("agent-status", "no-kube-proxy-rules", "kpr-integrity", "service-list", "probes")

SMOKE_PODS = (
    "node=server-1 ip=192.168.56.10\nnode=agent-1 ip=192.168.56.11\nnode=agent-2 ip=192.168.56.12\n"
    "pod=smoke-a node=agent-1 ip=10.42.1.52 ready=True\npod=smoke-b node=agent-2 ip=10.42.2.18 ready=True\n"
)
FIGURES = {
    "agent-status": {"kubeProxyReplacement": "True", "version": "1.19.6"},
    "no-kube-proxy-rules": {"ipv4-nft": {"entries": 0}, "ipv6-nft": {"entries": 0}},
    "kpr-integrity": {"kubeProxyRunning": False, "healthzPort": [], "apiServer": {"result": "ok", "code": "401"}},
    "service-list": {"services": 9, "frontends": {"10.43.0.253:80 (ClusterIP)": [{"usableBackends": 2}]}},
    "probes": {"probes": 4, "passed": 4, "failed": []},
    "connectivity-test": {"tests": 71, "failedTests": 0},
    "benchmark": {"meanLatencyUs": 33.5, "p99LatencyUs": 61.0, "throughputMbps": 9412.4, "tests": ["TCP_RR"]},
}


def assertion_stdout(args: pulumi_mocks.MockResourceArgs) -> str:
    """What `python3 -m verification` prints, from the check and node on the command line."""
    words = shlex.split(args.inputs["create"])
    check, node = words[3], words[words.index("--node") + 1]
    return json.dumps({"check": check, "node": node, "status": "pass", "figures": FIGURES[check], "problems": []})


def collector_stdout(args: pulumi_mocks.MockResourceArgs) -> str:
    """A node collector prints one section per check of its node (CHECKS=... in its script)."""
    match = re.search(r"^CHECKS='([^']*)'$", args.inputs.get("stdin", ""), re.M)
    if not match:
        return f"raw output of {args.name}\n"
    return "".join(f"{verify.SECTION_MARK} {check}\nraw {check} of {args.name}\n" for check in match[1].split())


def with_verify(cfg: StackConfig, **switches: bool) -> StackConfig:
    return cfg.model_copy(update={"verify": cfg.verify.model_copy(update=switches)})


def deploy(cfg: StackConfig, omit_checks: tuple[str, ...] = ()) -> Recorded:
    features = resolve(cfg)

    def program() -> dict[str, Any]:
        connections, ready = stand_in_cluster(cfg)
        release, removal = cilium_then_removal(cfg, features, connections, ready)
        checked = verify.Verification(
            NAME,
            verify.VerificationArgs(
                cfg=cfg,
                features=features,
                connections=connections,
                provider=release.provider,
                depends_on=[release.restart, *([removal.done] if removal.done else [])],
                omit_checks=omit_checks,
            ),
        )
        return {"verification": checked.verification}

    mocks = ProgramMocks(
        command_stdout=(
            (rf"^{NAME}-.*-assert-", assertion_stdout),
            (rf"^{NAME}-smoke-pods$", SMOKE_PODS),
            (rf"^{NAME}-", collector_stdout),
        )
    )
    return run_program(program, mocks)


def depends_transitively(rec: Recorded, resource: Registration, target: Registration) -> bool:
    return rec.longest_chain(target, resource) is not None


def verify_commands(rec: Recorded) -> list[Registration]:
    return [r for r in rec.resources if r.name.startswith(f"{NAME}-") and r.type in (REMOTE, LOCAL)]


@pytest.fixture(scope="module")
def kpr() -> Recorded:
    return deploy(config("kpr"))


# --- what exists ------------------------------------------------------------------------------------


def test_every_node_gets_one_collector_and_an_assertion_per_check(kpr: Recorded) -> None:
    (component,) = kpr.of_type(COMPONENT_TYPE)
    for node in NODES:
        collector = kpr.named(f"{NAME}-collect-{node}")
        assert collector.type == REMOTE and collector.parent == component.urn
        for check in PER_NODE:
            assertion = kpr.named(f"{NAME}-{check}-assert-{node}")
            assert assertion.type == LOCAL and assertion.parent == component.urn
            assert kpr.depends_on(assertion, collector)
    assert not kpr.matching(rf"^{NAME}-(connectivity-test|benchmark)")
    names = {r.name for r in verify_commands(kpr)}
    # One SSH session per node for all its checks, an assertion per check, the smoke pod discovery.
    assert len(names) == len(NODES) * (1 + len(PER_NODE)) + 1


def test_baseline_has_no_kube_proxy_rules_checks() -> None:
    rec = deploy(config("baseline"))
    assert not rec.matching("no-kube-proxy-rules")
    assert not rec.matching("kpr-integrity")
    for node in NODES:
        for check in ("agent-status", "service-list", "probes"):
            rec.named(f"{NAME}-{check}-assert-{node}")


def test_an_omitted_check_has_neither_section_nor_assertion_and_the_others_stay() -> None:
    rec = deploy(config("kpr"), omit_checks=("kpr-integrity",))
    assert not rec.matching("kpr-integrity")
    kept = [check for check in PER_NODE if check != "kpr-integrity"]
    for node in NODES:
        for check in kept:
            rec.named(f"{NAME}-{check}-assert-{node}")
        collector = rec.named(f"{NAME}-collect-{node}")
        assert "kpr-integrity" not in collector.inputs["stdin"]
        assert re.search(r"^CHECKS='[^']*no-kube-proxy-rules", collector.inputs["stdin"], re.M)
    assert len({r.name for r in verify_commands(rec)}) == len(NODES) * (1 + len(kept)) + 1


def test_connectivity_test_and_benchmark_only_when_switched_on() -> None:
    rec = deploy(with_verify(config("kpr"), smoke=False, connectivity_test=True, benchmark=True))
    assert not rec.matching(r"service-list|probes|smoke")
    test = rec.named(f"{NAME}-connectivity-test-server-1")
    bench = rec.named(f"{NAME}-benchmark-cluster")
    rec.named(f"{NAME}-connectivity-test-assert-server-1")
    assert (
        rec.named(f"{NAME}-benchmark-assert-cluster")
        .inputs["create"]
        .startswith(".venv/bin/python -m verification benchmark --node cluster --expect ")
    )
    # The long checks run after the per-node ones, the benchmark alone at the very end.
    for node in NODES:
        assert rec.depends_on(test, rec.named(f"{NAME}-agent-status-assert-{node}"))
    assert rec.depends_on(bench, rec.named(f"{NAME}-connectivity-test-assert-server-1"))
    assert rec.depends_on(bench, rec.named(f"{NAME}-netperf-service"))
    assert test.inputs["connection"]["host"] == bench.inputs["connection"]["host"] == "192.168.56.10"


def test_no_checks_of_the_cluster_when_switched_off(kpr: Recorded) -> None:
    assert not kpr.matching(r"netperf|connectivity|benchmark")


# --- ordering --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", ["kpr", "performance"])
def test_every_check_runs_after_cilium_and_every_kube_proxy_cleanup(tier: str) -> None:
    rec = kpr_rec = deploy(with_verify(config(tier), connectivity_test=True, benchmark=True))
    (release,) = rec.of_type(RELEASE_TYPE)
    cleanups = kpr_rec.matching(r"^kube-proxy-cleanup-")
    assert len(cleanups) == len(NODES)
    commands = verify_commands(rec)
    assert len(commands) == len(NODES) * (1 + len(PER_NODE)) + 2 * 2 + 1
    for command in commands:
        assert depends_transitively(rec, command, release), command.name
        for cleanup in cleanups:
            assert depends_transitively(rec, command, cleanup), (command.name, cleanup.name)


def test_baseline_checks_still_wait_for_cilium() -> None:
    rec = deploy(config("baseline"))
    (release,) = rec.of_type(RELEASE_TYPE)
    restart = rec.named("cilium-restart-pods")
    for command in verify_commands(rec):
        assert depends_transitively(rec, command, release), command.name
        assert depends_transitively(rec, command, restart), command.name


def test_service_checks_wait_for_the_smoke_workload(kpr: Recorded) -> None:
    deployment, service = kpr.named(f"{NAME}-smoke"), kpr.named(f"{NAME}-smoke-service")
    discovery = kpr.named(f"{NAME}-smoke-pods")
    for node in NODES:
        collector = kpr.named(f"{NAME}-collect-{node}")
        assert depends_transitively(kpr, collector, deployment) and depends_transitively(kpr, collector, service)
        # Through the discovery alone, which waits for the rest: the SDK walks everything upstream of
        # each dependency, so every extra one costs a walk of the whole cluster's resources.
        assert collector.dependencies == (discovery.urn,)


# --- where and what the collectors run -----------------------------------------------------------------


def node_collector_params(cfg: StackConfig, node_name: str) -> dict[str, ScriptValue]:
    """The node collector's parameters, after checking that the component runs exactly that script."""
    node = next(n for n in cfg.nodes if n.name == node_name)
    planned = [c for c in checks.planned_checks(cfg, resolve(cfg)) if c.node == node_name and c.check in PER_NODE]
    script, params = verify.node_collector_script(cfg, node, planned, SMOKE_PODS)
    assert script == "verify-node"
    return params


def test_every_check_of_a_node_is_collected_on_the_node_itself(kpr: Recorded) -> None:
    cfg = config("kpr")
    for node in cfg.nodes:
        collector = kpr.named(f"{NAME}-collect-{node.name}")
        assert collector.inputs["connection"]["host"] == node.host
        assert "delete" not in collector.inputs  # nothing to undo on the hosts
        assert collector.inputs["addPreviousOutputInEnv"] is False
        params = node_collector_params(cfg, node.name)
        assert collector.inputs["create"] == "bash -s -- verify-node"
        assert collector.script() == render("verify-node", params)
        assert params["CHECKS"] == " ".join(PER_NODE)
        scripts_by_check = dict(zip(PER_NODE, (params[f"SCRIPT_{i}"] for i in range(len(PER_NODE))), strict=True))
        agent_params = {"NODE_NAME": node.name, "AGENT_COMMAND": "cilium-dbg status --verbose",
                        "WAIT_FOR": r"^Cilium:[[:space:]]+Ok"}
        assert scripts_by_check["agent-status"] == render("verify-agent-exec", agent_params)
        listing_params = {"NODE_NAME": node.name, "AGENT_COMMAND": "cilium-dbg service list",
                          "WAIT_FOR": ":30085(/TCP)?[[:space:]]+NodePort"}
        assert scripts_by_check["service-list"] == render("verify-agent-exec", listing_params)
        assert scripts_by_check["no-kube-proxy-rules"] == render("verify-iptables")
        kpr_params = {
            "NODE_NAME": node.name,
            "CONFIG_PATH": "/etc/rancher/k3s/config.yaml",
            "API_TARGET": "127.0.0.1:6444",
            "API_URL": "https://127.0.0.1:6444/version",
        }
        assert scripts_by_check["kpr-integrity"] == render("verify-kpr-node", kpr_params)


def test_probes_target_a_pod_on_another_node(kpr: Recorded) -> None:
    cfg = config("kpr")
    expected_remote = {"server-1": "10.42.1.52", "agent-1": "10.42.2.18", "agent-2": "10.42.1.52"}
    for node in cfg.nodes:
        probes_script = node_collector_params(cfg, node.name)[f"SCRIPT_{PER_NODE.index('probes')}"]
        params: dict[str, ScriptValue] = {
            "PROBES": "localhost-nodeport nodeip-nodeport clusterip remote-pod",
            "NODE_PORT": 30085,
            "NODE_IP": node.host,
            "CLUSTER_IP": "10.43.0.253",
            "SERVICE_PORT": 80,
            "REMOTE_POD_IP": expected_remote[node.name],
        }
        assert probes_script == render("verify-probes", params)


def test_assertions_read_their_own_section_of_the_node_collector(kpr: Recorded) -> None:
    for node in NODES:
        for check in PER_NODE:
            assertion = kpr.named(f"{NAME}-{check}-assert-{node}")
            assert assertion.inputs["stdin"] == f"raw {check} of {NAME}-collect-{node}\n"
            # Its collector's output is its only dependency: new output, the assertion runs again.
            assert assertion.dependencies == (kpr.named(f"{NAME}-collect-{node}").urn,)


def test_assertion_commands_hold_no_machine_specific_path(kpr: Recorded) -> None:
    cfg = config("kpr")
    planned = {c.key: c for c in checks.planned_checks(cfg, resolve(cfg))}
    here = os.getcwd()
    for assertion in kpr.of_type(LOCAL):
        if not assertion.name.startswith(f"{NAME}-"):
            continue
        create = assertion.inputs["create"]
        match = re.fullmatch(r"\.venv/bin/python -m verification (\S+) --node (\S+) --expect '(\{.*\})'", create)
        assert match, create
        check = planned[f"{match[1]}/{match[2]}"]
        assert json.loads(match[3]) == check.expect
        assert assertion.inputs["dir"] == "."
        for forbidden in (here, sys.executable, sys.prefix, "/work", "/home", "/usr"):
            assert forbidden not in create
        assert "environment" not in assertion.inputs


def test_no_ssh_key_in_any_plain_input(kpr: Recorded) -> None:
    for resource in kpr.resources:
        if resource.name.startswith(NAME):
            for path, text in resource.plain_strings():
                assert "BEGIN OPENSSH" not in text, (resource.name, path)


# --- the smoke workload ------------------------------------------------------------------------------


def test_smoke_workload_uses_the_cilium_provider_in_its_own_namespace(kpr: Recorded) -> None:
    (provider,) = kpr.of_type(PROVIDER_TYPE)
    namespace = kpr.named(f"{NAME}-namespace")
    deployment = kpr.named(f"{NAME}-smoke")
    service = kpr.named(f"{NAME}-smoke-service")
    for resource in (namespace, deployment, service):
        assert resource.options["provider"].startswith(provider.urn)
    assert namespace.inputs["metadata"]["name"] == "k3s-cilium-verify"
    assert deployment.inputs["metadata"]["namespace"] == "k3s-cilium-verify"
    spec = deployment.inputs["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    image = container["image"]
    assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", image) and not image.endswith(":latest")
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"
    assert "tolerations" not in pod
    service_spec = service.inputs["spec"]
    assert service_spec["type"] == "NodePort"
    assert service_spec["clusterIP"] == "10.43.0.253"
    assert service_spec["ports"][0]["nodePort"] == 30085


def test_benchmark_client_and_server_sit_on_different_nodes_behind_a_cluster_ip() -> None:
    rec = deploy(with_verify(config("kpr"), benchmark=True))
    server, client = rec.named(f"{NAME}-netperf-server"), rec.named(f"{NAME}-netperf-client")
    service = rec.named(f"{NAME}-netperf-service")
    for workload in (server, client):
        (container,) = workload.inputs["spec"]["template"]["spec"]["containers"]
        assert container["image"] == verify.NETPERF_IMAGE and "@sha256:" in container["image"]
    away = client.inputs["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = away["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["labelSelector"]["matchLabels"] == verify.NETPERF_SERVER_LABELS
    assert service.inputs["spec"]["type"] == "ClusterIP"
    assert service.inputs["spec"]["clusterIP"] == "10.43.0.254"
    assert [p["port"] for p in service.inputs["spec"]["ports"]] == [12865, 12866]
    bench = rec.named(f"{NAME}-benchmark-cluster")
    assert "SERVER_HOST=10.43.0.254" in bench.script()


# --- re-running -------------------------------------------------------------------------------------


def trigger_of(rec: Recorded, name: str) -> str:
    resource = rec.named(name)
    assert "triggers[*]" in resource.options["replace_on_changes"]
    (trigger,) = resource.inputs["triggers"]
    assert isinstance(trigger, str)
    return trigger


def collector_triggers(rec: Recorded) -> dict[str, str]:
    return {r.name: trigger_of(rec, r.name) for r in rec.of_type(REMOTE) if r.name.startswith(f"{NAME}-")}


def test_same_config_twice_changes_nothing(kpr: Recorded) -> None:
    again = deploy(config("kpr"))
    assert collector_triggers(again) == collector_triggers(kpr)
    ours = [item for item in kpr.snapshot() if f"::{NAME}" in item[0]]
    assert ours == [item for item in again.snapshot() if f"::{NAME}" in item[0]]


def test_a_new_cilium_version_reruns_every_check(kpr: Recorded) -> None:
    before = collector_triggers(kpr)
    after = collector_triggers(deploy(config("kpr", version="1.18.4")))
    assert before.keys() == after.keys()
    assert all(before[name] != after[name] for name in before)


@pytest.mark.parametrize(
    "changed",
    [
        lambda cfg: cfg.model_copy(update={"k3s": cfg.k3s.model_copy(update={"version": "v1.32.7+k3s1"})}),
        lambda cfg: cfg.model_copy(update={"k3s": cfg.k3s.model_copy(update={"disable": ["traefik"]})}),
        lambda cfg: config("kpr", hubble=True),
        lambda cfg: config("kpr", cilium_extra={"values": {"debug": {"enabled": True}}}),
        lambda cfg: cfg.model_copy(
            update={"nodes": [*cfg.nodes[:2], cfg.nodes[2].model_copy(update={"labels": {"a": "b"}})]}
        ),
    ],
    ids=["k3s-version", "k3s-config", "feature", "raw-values", "node"],
)
def test_what_the_result_depends_on_changes_the_trigger(changed: Any) -> None:
    cfg = config("kpr")
    check = checks.planned_checks(cfg, resolve(cfg))[0]
    other = changed(cfg)

    def trigger(stack: StackConfig) -> str:
        return verify.check_trigger(digest(deployed_state(stack, resolve(stack))), check)

    assert trigger(cfg) != trigger(other)


def test_each_check_has_its_own_trigger(kpr: Recorded) -> None:
    triggers = collector_triggers(kpr)
    assert len(set(triggers.values())) == len(triggers)


# --- the verification output -----------------------------------------------------------------------


def test_verification_output_has_an_entry_per_node_and_check() -> None:
    rec = deploy(with_verify(config("kpr"), connectivity_test=True, benchmark=True))
    result = rec.outputs["verification"]
    assert set(result["nodes"]) == set(NODES)
    for node in NODES:
        assert set(result["nodes"][node]) == set(PER_NODE) | ({"connectivity-test"} if node == "server-1" else set())
        entry = result["nodes"][node]["agent-status"]
        assert entry == {"status": "pass", "seen": "True", "figures": FIGURES["agent-status"]}
        assert result["nodes"][node]["no-kube-proxy-rules"]["seen"] == 0
        assert result["nodes"][node]["kpr-integrity"]["seen"] == {
            "kubeProxyRunning": False,
            "healthzPort": [],
            "apiServer": "ok",
        }
        assert result["nodes"][node]["probes"]["seen"] == "4/4 ok"
        assert result["nodes"][node]["service-list"]["seen"] == {"10.43.0.253:80 (ClusterIP)": 2}
    assert result["nodes"]["server-1"]["connectivity-test"]["seen"] == {"tests": 71, "failedTests": 0}
    assert result["cluster"] == {
        "benchmark": {
            "status": "pass",
            "seen": {"meanLatencyUs": 33.5, "p99LatencyUs": 61.0, "throughputMbps": 9412.4},
            "figures": FIGURES["benchmark"],
        }
    }
    (component,) = rec.of_type(COMPONENT_TYPE)
    assert rec.component_outputs[component.urn]["verification"] == result


def test_unreadable_assertion_output_is_unknown_not_pass() -> None:
    assert verify.summarize("probes", "") == {"status": "unknown", "seen": None, "figures": {}}
    assert verify.summarize("probes", "not json") == {"status": "unknown", "seen": None, "figures": {}}
    failed = json.dumps({"status": "fail", "figures": {"probes": 4, "passed": 3}})
    assert verify.summarize("probes", failed)["status"] == "fail"
    assert verify.summarize("probes", failed)["seen"] == "3/4 ok"


# --- config problems ---------------------------------------------------------------------------------


def test_smoke_with_every_node_tainted_fails_before_any_check() -> None:
    cfg = config("kpr")
    tainted = [node.model_copy(update={"taints": ["only=ops:NoSchedule"]}) for node in cfg.nodes]
    with pytest.raises(pulumi.RunError, match=r"k3s-cilium:verify.smoke: every node has a NoSchedule"):
        deploy(cfg.model_copy(update={"nodes": tainted}))


def test_the_discovery_script_is_the_one_the_tests_run(kpr: Recorded) -> None:
    discovery = kpr.named(f"{NAME}-smoke-pods")
    assert discovery.script() == render("verify-smoke-pods", verify.smoke_pods_params())
    assert "rollout status" in render("verify-smoke-pods", verify.smoke_pods_params())


def test_assertions_run_with_the_interpreter_that_runs_the_program() -> None:
    """Never `python3` from PATH (3.9 on RHEL 9 and Debian 11): the virtualenv Pulumi.yaml names."""
    import yaml

    project = yaml.safe_load((Path(__file__).resolve().parents[2] / "Pulumi.yaml").read_text())
    assert f"{project['runtime']['options']['virtualenv']}/bin/python" == verify.PROJECT_PYTHON
    assert verify.ASSERT_PROGRAM.startswith(f"{verify.PROJECT_PYTHON} -m verification")
