"""CiliumRelease under the mock engine, and its workload restart script against a fake kubectl."""

from __future__ import annotations

import copy
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import cilium
from components.scripts import render
from stacks import cilium_values
from stacks.config import StackConfig, parse
from stacks.features import CATALOGUE, TIER_FEATURES, resolve
from tests.lab import LAB, PROVIDER_TYPE, RELEASE_TYPE, config, stand_in_cluster
from tests.mocks import FAKE_KUBECONFIG, ProgramMocks, Recorded, run_program, walk_strings
from tests.shell import executable, lint, run_script

NAME = "cilium"
COMPONENT_TYPE = "k3s-cilium:index:CiliumRelease"

def mocks() -> ProgramMocks:
    return ProgramMocks(
        command_stdout=((r"-restart-pods$", "restarted=3 ready=3 not_ready=0 skipped=0\n"),),
        outputs={RELEASE_TYPE: lambda args: {"status": {"status": "deployed", "revision": 2, "name": "cilium"}}},
    )


def deploy(cfg: StackConfig, kubeconfig: str = FAKE_KUBECONFIG, **extra: Any) -> tuple[Recorded, cilium.CiliumRelease]:
    """Build a CiliumRelease after two stand-ins for K3sCluster.nodes_ready."""
    built: dict[str, cilium.CiliumRelease] = {}

    def program() -> dict[str, Any]:
        connections, ready = stand_in_cluster(cfg)
        release = cilium.CiliumRelease(
            NAME,
            cilium.CiliumReleaseArgs(
                cfg=cfg,
                features=resolve(cfg),
                # Deliberately not marked secret here: the component must make it so.
                kubeconfig=pulumi.Output.from_input(kubeconfig),
                connections=connections,
                depends_on=ready,
                **extra,
            ),
        )
        built["release"] = release
        return {"status": release.release_status, "revision": release.revision, "values": release.values}

    return run_program(program, mocks()), built["release"]


def release_of(rec: Recorded) -> Any:
    (release,) = rec.of_type(RELEASE_TYPE)
    return release


@pytest.mark.parametrize("tier", sorted(TIER_FEATURES))
def test_release_values_are_exactly_the_rendered_values(tier: str) -> None:
    cfg = config(tier)
    rec, _ = deploy(cfg)
    assert release_of(rec).inputs["values"] == cilium_values.render(cfg, resolve(cfg))
    assert rec.outputs["values"] == cilium_values.render(cfg, resolve(cfg))


def test_kpr_values_on_1_19_and_1_13() -> None:
    new = release_of(deploy(config("kpr", "1.19.6"))[0]).inputs["values"]
    assert new["kubeProxyReplacement"] == "true"
    assert new["routingMode"] == "native"
    assert "tunnel" not in new
    old = release_of(deploy(config("kpr", "1.13.18"))[0]).inputs["values"]
    assert old["kubeProxyReplacement"] == "strict"
    assert old["tunnel"] == "disabled"
    assert "routingMode" not in old
    base = release_of(deploy(config("baseline", "1.19.6"))[0]).inputs["values"]
    assert base["kubeProxyReplacement"] == "false"
    assert base["routingMode"] == "tunnel"
    assert base["rollOutCiliumPods"] is True


def test_release_is_the_official_chart_pinned_waited_for_and_kept_short() -> None:
    rec, _ = deploy(config(version="1.18.12"))
    inputs = release_of(rec).inputs
    assert inputs["chart"] == "cilium"
    assert inputs["version"] == "1.18.12"
    assert inputs["repositoryOpts"] == {"repo": "https://helm.cilium.io/"}
    assert inputs["namespace"] == "kube-system"
    assert inputs["name"] == "cilium"
    assert inputs.get("skipAwait") in (None, False)
    assert inputs["timeout"] == cilium.DEFAULT_TIMEOUT_SECONDS
    assert inputs["cleanupOnFail"] is True
    assert inputs["atomic"] is False
    assert inputs["maxHistory"] == cilium.MAX_HISTORY
    assert rec.outputs["status"] == "deployed"
    assert rec.outputs["revision"] == 2


def test_release_waits_for_the_cluster_and_uses_the_component_provider() -> None:
    rec, _ = deploy(config())
    release = release_of(rec)
    for node in ("server-1", "agent-1", "agent-2"):
        assert rec.depends_on(release, rec.named(f"k3s-ready-{node}"))
    (provider,) = rec.of_type(PROVIDER_TYPE)
    assert release.options["provider"].startswith(provider.urn + "::")
    (component,) = rec.of_type(COMPONENT_TYPE)
    assert release.parent == component.urn
    assert provider.parent == component.urn


def test_provider_kubeconfig_is_secret_and_identity_does_not_follow_it() -> None:
    rec, _ = deploy(config())
    (provider,) = rec.of_type(PROVIDER_TYPE)
    assert provider.is_secret("kubeconfig")
    assert provider.inputs["kubeconfig"] == FAKE_KUBECONFIG
    assert not [path for path, text in provider.plain_strings() if "client-key-data" in text]

    rewritten = FAKE_KUBECONFIG.replace("127.0.0.1", "192.168.56.10")
    (other,) = deploy(config(), kubeconfig=rewritten)[0].of_type(PROVIDER_TYPE)
    assert other.inputs["kubeconfig"] == rewritten
    assert provider.inputs["clusterIdentifier"] == other.inputs["clusterIdentifier"] == "k3s-cilium/test/server-1"


def test_every_child_is_parented_and_named_after_the_component() -> None:
    rec, _ = deploy(config("extreme"))
    (component,) = rec.of_type(COMPONENT_TYPE)
    children = rec.children_of(component)
    assert sorted(child.name for child in children) == [
        f"{NAME}-api-reachable", *(f"{NAME}-prepull-{node}" for node in ("agent-1", "agent-2", "server-1")),
        f"{NAME}-provider", f"{NAME}-release", f"{NAME}-restart-pods", f"{NAME}-stamp"
    ]


def test_what_was_deployed_is_recorded_for_the_upgrade_gate_once_the_release_and_restart_are_done() -> None:
    rec, _ = deploy(config("extreme"))
    stamp = rec.named(f"{NAME}-stamp")
    assert stamp.inputs["metadata"] == {"name": "k3s-cilium-release", "namespace": "kube-system"}
    assert stamp.inputs["data"]["ciliumVersion"] == config("extreme").cilium.version
    assert set(stamp.dependencies) == {rec.named(f"{NAME}-restart-pods").urn}
    assert rec.depends_on(rec.named(f"{NAME}-restart-pods"), rec.named(f"{NAME}-release"))
    other, _ = deploy(config("baseline"))
    assert other.named(f"{NAME}-stamp").inputs["data"]["valuesDigest"] != stamp.inputs["data"]["valuesDigest"]


def test_same_program_twice_registers_the_same_inputs() -> None:
    first, _ = deploy(config("extreme"))
    second, _ = deploy(config("extreme"))
    assert first.snapshot() == second.snapshot()


# --- the API check from where Pulumi runs, before any Kubernetes resource -------------------------


def api_check_of(rec: Recorded) -> Any:
    return rec.named(f"{NAME}-api-reachable")


def with_bastion(tier: str = "kpr", api_endpoint: str | None = None, **features: bool) -> StackConfig:
    raw = copy.deepcopy(LAB)
    raw["tier"] = tier
    raw["features"] = features
    raw["ssh"] = {"user": "ops", "bastion": {"host": "bastion.example.com", "port": 2222, "user": "jump"}}
    if api_endpoint:
        raw["k3s"] = {**raw["k3s"], "apiEndpoint": api_endpoint}
    return parse(raw)


def test_api_check_runs_before_the_provider_and_the_release_and_after_the_cluster() -> None:
    rec, component = deploy(config())
    check = api_check_of(rec)
    assert check.type == "command:local:Command"
    assert component.api_check is not None
    (provider,) = rec.of_type(PROVIDER_TYPE)
    release = release_of(rec)
    assert rec.depends_on(provider, check)
    assert rec.depends_on(release, check)
    for node in ("server-1", "agent-1", "agent-2"):
        assert rec.depends_on(check, rec.named(f"k3s-ready-{node}"))


def test_api_check_dials_the_endpoint_with_the_project_python_and_no_absolute_path() -> None:
    rec, _ = deploy(with_bastion(api_endpoint="127.0.0.1"))
    inputs = api_check_of(rec).inputs
    assert inputs["dir"] == "."
    assert shlex.split(inputs["create"]) == [
        ".venv/bin/python", "-m", "verification.api_reachable", "--endpoint", "127.0.0.1", "--port", "6443",
        "--target", "192.168.56.10", "--via", "jump@bastion.example.com:2222",
    ]
    for path, text in walk_strings({key: value for key, value in inputs.items() if key != "stdin"}):
        assert not text.startswith("/") and " /" not in text, f"{path}: {text}"
    assert inputs.get("addPreviousOutputInEnv") is False


def test_api_check_without_a_bastion_forwards_through_the_first_server() -> None:
    rec, _ = deploy(config())
    create = shlex.split(api_check_of(rec).inputs["create"])
    assert create[create.index("--endpoint") + 1] == "192.168.56.10"
    assert create[create.index("--target") + 1] == "127.0.0.1"
    assert create[create.index("--via") + 1] == "root@192.168.56.10:22"


def test_api_check_verifies_against_the_cluster_ca_of_the_kubeconfig() -> None:
    rec, _ = deploy(config())
    check = api_check_of(rec)
    assert check.inputs["stdin"] == "FAKE-CA"  # certificate-authority-data of FAKE_KUBECONFIG, decoded
    assert check.is_secret("stdin")
    assert cilium.cluster_ca("clusters: []\n") == ""


def check_trigger(cfg: StackConfig) -> list[str]:
    triggers: list[str] = api_check_of(deploy(cfg)[0]).inputs["triggers"]
    return triggers


def test_api_check_does_not_rerun_on_a_no_op_up() -> None:
    # Same config, same trigger: a no-op `pulumi up` replaces (and so runs) nothing.
    assert check_trigger(config("performance")) == check_trigger(config("performance"))
    assert "triggers[*]" in api_check_of(deploy(config())[0]).options["replace_on_changes"]


@pytest.mark.parametrize(
    ("after"),
    [
        config("performance", "1.18.12"),  # the chart version: the release is upgraded
        config("performance", hubble=True),  # the values: the release is upgraded
        config("baseline"),
    ],
    ids=["cilium-version", "values", "tier"],
)
def test_api_check_reruns_when_the_release_changes(after: StackConfig) -> None:
    assert check_trigger(config("performance")) != check_trigger(after)


def with_chart(chart: dict[str, Any]) -> StackConfig:
    raw = copy.deepcopy(LAB)
    raw["airgap"] = {"cilium": chart}
    return parse(raw)


def test_api_check_reruns_when_the_chart_source_changes_but_not_where_a_local_chart_lies(tmp_path: Path) -> None:
    mirror = with_chart({"chartRepository": "https://charts.internal/cilium"})
    assert check_trigger(mirror) != check_trigger(config())
    copies = []
    for place in ("here", "there"):  # the same chart on two machines (a workstation, a CI runner)
        chart = tmp_path / place / "cilium"
        chart.mkdir(parents=True)
        (chart / "Chart.yaml").write_text("name: cilium\nversion: 1.19.6\n")
        copies.append(chart)
    here, there = (check_trigger(with_chart({"chart": str(chart)})) for chart in copies)
    assert here == there != check_trigger(config())
    (copies[1] / "values.yaml").write_text("x: 1\n")
    assert check_trigger(with_chart({"chart": str(copies[1])})) != here


# --- the workload restart after a datapath change ------------------------------------------------


def restart_of(rec: Recorded) -> Any:
    return rec.named(f"{NAME}-restart-pods")


def test_restart_runs_on_the_first_server_after_the_release() -> None:
    cfg = config("performance")
    rec, component = deploy(cfg)
    restart = restart_of(rec)
    assert rec.depends_on(restart, release_of(rec))
    assert restart.inputs["connection"]["host"] == "192.168.56.10"
    assert restart.script() == render(
        "restart-datapath-pods", {"TIMEOUT_SECONDS": cilium.DEFAULT_RESTART_TIMEOUT_SECONDS, "SKIP_NAMESPACES": ""}
    )
    # An edit of the script must not restart every workload: only the trigger replaces it.
    assert restart.script("update") == "true\n"
    assert "triggers[*]" in restart.options["replace_on_changes"]
    assert restart.inputs["triggers"] == [component.restart_trigger] == [cilium.datapath_fingerprint(cfg, resolve(cfg))]


def trigger(cfg: StackConfig) -> str:
    return restart_of(deploy(cfg)[0]).inputs["triggers"][0]


def test_pod_restart_features_are_the_catalogue_s() -> None:
    assert set(cilium.POD_RESTART_FEATURES) == {
        "nativeRouting", "bpfHostRouting", "bigTcp", "bandwidthManager", "bbr", "netkit"
    }
    assert cilium.NODE_REBOOT_FEATURES == ("jumboMtu",)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (config("kpr"), config("baseline")),  # native routing off: the rollback path
        (config("performance"), config("performance", bpfHostRouting=False, bypassConntrack=False)),
        (config("performance"), config("performance", bandwidthManager=True)),
        (config("extreme"), config("extreme", bigTcp=False)),
        (config("extreme", "1.19.6"), config("extreme", "1.19.6", netkit=True)),
        (config("performance"), config("performance", cilium_extra={"mtu": 1450})),
        (config("performance"), config("performance", jumboMtu=True)),
    ],
    ids=["nativeRouting", "bpfHostRouting", "bandwidthManager", "bigTcp", "netkit", "mtu", "jumboMtu"],
)
def test_restart_trigger_changes_with_a_pod_datapath_feature(before: StackConfig, after: StackConfig) -> None:
    assert trigger(before) != trigger(after)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (config("kpr"), config("kpr", hubble=True)),
        (config("performance"), config("performance", maglev=False)),
        (config("extreme"), config("extreme", xdp=False, mapSizing=False)),
        (config("performance"), config("performance", cilium_extra={"maglevTableSize": 65521})),
        (config("kpr", "1.19.6"), config("kpr", "1.18.12")),
    ],
    ids=["hubble", "maglev", "xdp+mapSizing", "maglevTableSize", "cilium-version"],
)
def test_restart_trigger_ignores_what_only_restarts_agents(before: StackConfig, after: StackConfig) -> None:
    assert trigger(before) == trigger(after)
    # ...while the release itself does change (the agents restart through rollOutCiliumPods).
    assert release_of(deploy(before)[0]).inputs != release_of(deploy(after)[0]).inputs


def test_restart_options_reach_the_script() -> None:
    cfg = config()
    rec, _ = deploy(cfg, restart_timeout_seconds=120, restart_skip_namespaces=("batch", "ci"))
    assert restart_of(rec).script() == render(
        "restart-datapath-pods", {"TIMEOUT_SECONDS": 120, "SKIP_NAMESPACES": "batch ci"}
    )


def test_jumbo_mtu_warns_that_nodes_need_a_reboot() -> None:
    rec, _ = deploy(config("performance", jumboMtu=True))
    (warning,) = [w for w in rec.warnings if "jumboMtu" in w]
    assert "reboot" in warning
    assert "9000" in warning
    quiet, _ = deploy(config("extreme"))
    assert not [w for w in quiet.warnings if "jumboMtu" in w or "reboot" in w]


def test_catalogue_restart_kinds_are_all_handled() -> None:
    # A new restart kind would need a decision here (restart pods, warn, or nothing).
    assert {feature.restart for feature in CATALOGUE.values()} <= {"none", "agents", "pods", "nodes"}


# --- restart-datapath-pods.sh against a fake kubectl ---------------------------------------------

FAKE_KUBECTL = r"""#!/usr/bin/env bash
# Answers like kubectl from files in $FAKE_DIR; logs every call to $FAKE_DIR/calls.
printf '%s\n' "$*" >>"$FAKE_DIR/calls"
args=" $* "
case $args in
  *" get deployments,daemonsets,statefulsets "*) cat "$FAKE_DIR/listing"; exit 0 ;;
  *" rollout status daemonset/cilium "*) exit "$(cat "$FAKE_DIR/cilium-status" 2>/dev/null || echo 0)" ;;
esac
ref=$(printf '%s\n' "$@" | grep -E '^(deployment|daemonset|statefulset)/' | head -n 1)
key=${ref//\//_}
case $args in
  *" rollout status "*"--watch=false"*)
    if [[ -e $FAKE_DIR/unready-before-$key ]]; then echo "Waiting for rollout of $ref"
    else echo "$ref successfully rolled out"; fi ;;
  *" rollout restart "*) echo "$ref restarted" ;;
  *" rollout status "*) [[ ! -e $FAKE_DIR/unready-after-$key ]] ;;
  *) echo "fake kubectl: unexpected: $*" >&2; exit 2 ;;
esac
"""

LISTING = "\n".join(
    [
        "Deployment|kube-system|coredns|RollingUpdate||",
        "Deployment|kube-system|cilium-operator|RollingUpdate||true",
        "DaemonSet|kube-system|cilium|RollingUpdate||true",
        "Deployment|default|web|RollingUpdate||",
        "Deployment|default|frozen|RollingUpdate|true|",
        "DaemonSet|monitoring|node-agent|OnDelete||",
        "StatefulSet|db|postgres|RollingUpdate||",
        "Deployment|ci|runner|Recreate||",
    ]
) + "\n"


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> Path:
    fake = tmp_path / "fake"
    fake.mkdir()
    kubectl = fake / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    (fake / "listing").write_text(LISTING)
    return fake


def run_restart(fake: Path, **params: Any) -> subprocess.CompletedProcess[str]:
    script = render(
        "restart-datapath-pods", {"KUBECTL": str(fake / "kubectl"), "TIMEOUT_SECONDS": 5, **params}
    )
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, env={**os.environ, "FAKE_DIR": str(fake)}
    )


def calls(fake: Path) -> list[str]:
    return (fake / "calls").read_text().splitlines()


def test_restart_script_lints(tmp_path: Path) -> None:
    lint(render("restart-datapath-pods", {"TIMEOUT_SECONDS": 300, "SKIP_NAMESPACES": "a b"}), tmp_path)


def test_restart_script_rolls_pod_networked_workloads_kube_system_first(fake_kubectl: Path) -> None:
    result = run_restart(fake_kubectl, SKIP_NAMESPACES="ci")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "restarted=3 ready=3 not_ready=0 skipped=2\n"
    restarts = [c for c in calls(fake_kubectl) if " rollout restart " in f" {c} "]
    assert restarts == [
        "-n kube-system rollout restart deployment/coredns",
        "-n default rollout restart deployment/web",
        "-n db rollout restart statefulset/postgres",
    ]
    assert calls(fake_kubectl)[0].startswith("-n kube-system rollout status daemonset/cilium --timeout=5s")
    assert "default/deployment/frozen skipped (paused)" in result.stderr
    assert "monitoring/daemonset/node-agent skipped (update strategy OnDelete)" in result.stderr
    waits = [c for c in calls(fake_kubectl) if "--timeout=5s" in c and "cilium" not in c]
    assert len(waits) == 3


def test_restart_script_fails_when_a_ready_workload_does_not_come_back(fake_kubectl: Path) -> None:
    (fake_kubectl / "unready-after-deployment_web").touch()
    result = run_restart(fake_kubectl)
    assert result.returncode == 1
    assert result.stdout == "restarted=4 ready=3 not_ready=1 skipped=2\n"
    assert "default/deployment/web was rolled out before the restart" in result.stderr


def test_restart_script_only_warns_about_a_workload_that_was_broken_before(fake_kubectl: Path) -> None:
    (fake_kubectl / "unready-before-deployment_web").touch()
    (fake_kubectl / "unready-after-deployment_web").touch()
    result = run_restart(fake_kubectl)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "restarted=4 ready=3 not_ready=1 skipped=2\n"
    assert "default/deployment/web was not ready before the restart" in result.stderr


def test_restart_script_restarts_nothing_while_cilium_is_not_rolled_out(fake_kubectl: Path) -> None:
    (fake_kubectl / "cilium-status").write_text("1")
    result = run_restart(fake_kubectl)
    assert result.returncode == 1
    assert not [c for c in calls(fake_kubectl) if "rollout restart" in c]


# --- the agent image on every node before the release changes ----------------------------------


def test_every_node_pulls_the_target_agent_image_over_its_own_connection_before_the_release() -> None:
    cfg = config("kpr")
    rec, _ = deploy(cfg)
    release = release_of(rec)
    for node in cfg.nodes:
        prepull = rec.named(f"{NAME}-prepull-{node.name}")
        assert prepull.inputs["connection"]["host"] == node.host
        assert "IMAGE=quay.io/cilium/cilium:v1.19.6" in prepull.script()
        assert rec.depends_on(release, prepull)
        assert rec.depends_on(prepull, rec.named(f"k3s-ready-{node.name}"))


def test_the_pre_pull_runs_again_only_when_the_image_changes() -> None:
    def triggers(cfg: StackConfig) -> Any:
        return deploy(cfg)[0].named(f"{NAME}-prepull-agent-1").inputs["triggers"]

    kpr = config("kpr")
    assert triggers(kpr) == triggers(config("extreme"))
    newer = kpr.model_copy(update={"cilium": kpr.cilium.model_copy(update={"version": "1.19.7"})})
    assert triggers(newer) != triggers(kpr)


@pytest.mark.parametrize(
    ("image_values", "expected"),
    [
        # The chart's defaults (values.yaml `image`): quay.io/cilium/cilium, tag v<version>.
        ({}, "quay.io/cilium/cilium:v1.18.12"),
        # airgap.cilium.imageRegistry with keepChartDigests: false (the lab's stack).
        ({"repository": "lab.local/cilium/cilium", "useDigest": False}, "lab.local/cilium/cilium:v1.18.12"),
        # A digest of our own: pulled by digest.
        ({"repository": "registry.internal/cilium", "digest": "sha256:" + "a" * 64, "useDigest": True},
         "registry.internal/cilium@sha256:" + "a" * 64),
        ({"override": "registry.internal/cilium:custom"}, "registry.internal/cilium:custom"),
    ],
)
def test_the_pulled_reference_is_the_one_the_chart_runs(image_values: dict[str, Any], expected: str) -> None:
    assert cilium_values.agent_image({"image": image_values} if image_values else {}, "1.18.12") == expected


FAKE_CRICTL = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
case "$1" in
  inspecti) [[ -n ${FAKE_PRESENT:-} ]] ;;
  pull) [[ -z ${FAKE_PULL_FAILS:-} ]] && echo "Image is up to date for sha256:1234" ||
    { echo 'E1203 pulling image: failed to resolve reference: dial tcp: lookup quay.io: no such host' >&2; exit 1; } ;;
  *) exit 9 ;;
esac
"""


def prepull(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    crictl = executable(tmp_path / "crictl", FAKE_CRICTL)
    params = {"IMAGE": "quay.io/cilium/cilium:v1.19.6", "PULL_TIMEOUT_SECONDS": 30, "CRICTL": str(crictl)}
    return run_script(tmp_path, "cilium-prepull", params, {"FAKE_LOG": str(tmp_path / "log"), **env})


def test_prepull_script_lints(tmp_path: Path) -> None:
    lint(render("cilium-prepull", {}), tmp_path, "cilium-prepull.sh")


def test_an_image_already_on_the_node_is_not_pulled_again(tmp_path: Path) -> None:
    done = prepull(tmp_path, FAKE_PRESENT="1")
    assert (done.returncode, done.stdout) == (0, "prepull=present image=quay.io/cilium/cilium:v1.19.6\n")
    assert "pull" not in (tmp_path / "log").read_text().split()


def test_a_missing_image_is_pulled_and_a_failed_pull_stops_the_release(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pulled = prepull(tmp_path / "a")
    assert (pulled.returncode, pulled.stdout) == (0, "prepull=pulled image=quay.io/cilium/cilium:v1.19.6\n")
    failed = prepull(tmp_path / "b", FAKE_PULL_FAILS="1")
    assert failed.returncode == 1
    assert "could not pull quay.io/cilium/cilium:v1.19.6 within 30s; the Cilium release is not changed" in failed.stderr
    assert "no such host" in failed.stderr
