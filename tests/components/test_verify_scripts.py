"""The verification collector scripts, run for real against fake kubectl/iptables/curl/cilium/netperf.

Each collector's output is piped into the real ``python3 -m verification``
with the ``--expect`` that ``stacks.checks`` plans, as ``pulumi up`` does:
good output passes (exit 0), bad output fails (exit 1) with a message naming
node, check, expected and seen, and a collection that cannot happen fails the
collector itself with a message.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import verify
from components.scripts import ScriptValue, render
from stacks import checks
from stacks.checks import PlannedCheck, planned_checks
from stacks.config import StackConfig
from stacks.features import resolve
from tests.components.test_cilium import config
from tests.shell import executable, lint, run_script

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "verification" / "fixtures"
SCRIPTS = sorted(p.stem for p in (ROOT / "components" / "scripts").glob("verify-*.sh"))

# A kubectl and crictl stand-in: answers `get pods`, `wait`, `rollout status`, `get nodes`, `ps`
# and `exec` from FAKE_* variables; `exec` prints the files FAKE_EXEC_1, FAKE_EXEC_2, ... one per
# call (the last one again when there are no more) and logs every call to FAKE_LOG.
FAKE_KUBECTL = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
case " $* " in
  *" exec "*)
    count=$(( $(cat "$FAKE_STATE/exec" 2>/dev/null || echo 0) + 1 ))
    echo "$count" >"$FAKE_STATE/exec"
    file=FAKE_EXEC_$count
    [[ -n ${!file:-} ]] || file=FAKE_EXEC_LAST
    [[ -n ${!file:-} ]] && cat "${!file}"
    exit "${FAKE_EXEC_RC:-0}"
    ;;
  *" wait "*) exit "${FAKE_WAIT_RC:-0}" ;;
  *" rollout "*) exit "${FAKE_ROLLOUT_RC:-0}" ;;
  *" get nodes "*) printf '%s' "${FAKE_NODES:-}" ;;
  *" ps "*)
    [[ -n ${FAKE_GET_STDERR:-} ]] && echo "$FAKE_GET_STDERR" >&2
    printf '%s' "${FAKE_CONTAINERS:-}"
    ;;
  *" get pods "*)
    [[ -n ${FAKE_GET_STDERR:-} ]] && echo "$FAKE_GET_STDERR" >&2
    printf '%s' "${FAKE_PODS:-}"
    ;;
  *) echo "fake kubectl: unexpected $*" >&2; exit 9 ;;
esac
"""


def lab(tier: str = "kpr", version: str = "1.19.6", **features: bool) -> StackConfig:
    return config(tier, version, **features)


def planned(cfg: StackConfig, key: str) -> PlannedCheck:
    return next(check for check in planned_checks(cfg, resolve(cfg)) if check.key == key)


def assert_cli(check: PlannedCheck, stdin: str) -> subprocess.CompletedProcess[str]:
    """What the assertion resource runs: the command line the component builds, in the project directory."""
    return subprocess.run(
        ["/bin/sh", "-c", verify.assert_command(check)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "state").mkdir()
    kubectl = executable(tmp_path / "bin" / "kubectl", FAKE_KUBECTL)
    return {"KUBECTL": str(kubectl), "FAKE_LOG": str(tmp_path / "kubectl.log"), "FAKE_STATE": str(tmp_path / "state")}


def calls(env: dict[str, str]) -> list[str]:
    return Path(env["FAKE_LOG"]).read_text().splitlines()


# --- lint ------------------------------------------------------------------------------------------


def test_every_verify_script_is_linted() -> None:
    assert set(SCRIPTS) == {
        "verify-agent-exec",
        "verify-iptables",
        "verify-probes",
        "verify-smoke-pods",
        "verify-connectivity-test",
        "verify-benchmark",
        "verify-node",
        "verify-kpr-node",
        "verify-object",
        "verify-hubble-relay",
        "verify-listening",
    }


@pytest.mark.parametrize(
    "key",
    [
        "agent-status/agent-1",
        "service-list/agent-1",
        "no-kube-proxy-rules/agent-1",
        "kpr-integrity/agent-1",
        "probes/agent-1",
        "connectivity-test/server-1",
        "benchmark",
    ],
)
def test_rendered_collectors_pass_bash_n_and_shellcheck(key: str, tmp_path: Path) -> None:
    cfg = lab()
    cfg = cfg.model_copy(
        update={"verify": cfg.verify.model_copy(update={"connectivity_test": True, "benchmark": True})}
    )
    check = planned(cfg, key)
    discovered = "pod=a node=agent-2 ip=10.42.2.7 ready=True\n"
    script, params = verify.collector_script(cfg, check, discovered)
    lint(render(script, params), tmp_path, f"{script}.sh")


def test_rendered_smoke_pods_script_passes_lint(tmp_path: Path) -> None:
    lint(render("verify-smoke-pods", verify.smoke_pods_params()), tmp_path, "verify-smoke-pods.sh")


# --- agent status and service list, through crictl exec on the node -------------------------------


def fast_crictl(fake: dict[str, str]) -> dict[str, ScriptValue]:
    return {"CRICTL": fake["KUBECTL"], "RETRY_DELAY_SECONDS": 0, "CONTAINER_WAIT_SECONDS": 1}


def agent_env(fake: dict[str, str], *outputs: Path, **extra: str) -> dict[str, str]:
    env = {**fake, "FAKE_CONTAINERS": "3f9c2a1b7d4e\n9a8b7c6d5e4f\n", **extra}
    for index, output in enumerate(outputs, start=1):
        env[f"FAKE_EXEC_{index}"] = str(output)
    env["FAKE_EXEC_LAST"] = str(outputs[-1]) if outputs else ""
    return env


def test_agent_status_collected_and_judged_good_and_bad(tmp_path: Path, fake_kubectl: dict[str, str]) -> None:
    extreme = lab("extreme", cilium_extra={"maglevTableSize": 65521, "xdpMode": "native"}, netkit=True)
    check = planned(extreme, "agent-status/agent-1")
    script, params = verify.collector_script(extreme, check)
    env = agent_env(fake_kubectl, FIXTURES / "agent_status_1.19_extreme.txt")
    collected = run_script(tmp_path, script, {**params, "CRICTL": fake_kubectl["KUBECTL"]}, env)
    assert collected.returncode == 0, collected.stderr
    assert "KubeProxyReplacement:       True" in collected.stdout
    # The newest running cilium-agent container on this node, cilium-dbg on 1.19.
    exec_call = next(line for line in calls(fake_kubectl) if " exec " in f" {line} ")
    assert exec_call == "exec 3f9c2a1b7d4e cilium-dbg status --verbose"
    assert calls(fake_kubectl)[0] == "ps --name ^cilium-agent$ --state Running -q"

    good = assert_cli(check, collected.stdout)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["figures"]["kubeProxyReplacement"] == "True"

    bad = assert_cli(planned(lab("kpr"), "agent-status/agent-1"), collected.stdout)
    assert bad.returncode == 1
    assert "node agent-1: check agent-status: expected Mode SNAT, saw DSR" in bad.stderr


def test_agent_status_waits_for_a_healthy_agent_within_bounds(tmp_path: Path, fake_kubectl: dict[str, str]) -> None:
    warming = tmp_path / "warming.txt"
    warming.write_text("KubeProxyReplacement:    True\nCilium:                  Warning   1.16.17\n")
    cfg = lab("kpr", "1.16.17", nativeRouting=False)
    check = planned(cfg, "agent-status/server-1")
    script, params = verify.collector_script(cfg, check)
    overrides = {"CRICTL": fake_kubectl["KUBECTL"], "RETRY_DELAY_SECONDS": 0}
    env = agent_env(fake_kubectl, warming, FIXTURES / "agent_status_1.16_kpr_tunnel.txt")
    collected = run_script(tmp_path, script, {**params, **overrides}, env)
    assert collected.returncode == 0, collected.stderr
    assert sum(" exec " in f" {line} " for line in calls(fake_kubectl)) == 2
    assert assert_cli(check, collected.stdout).returncode == 0

    # Never Ok: the last output is printed after ATTEMPTS tries, and the assertion names the state.
    (tmp_path / "state" / "exec").unlink()
    env = agent_env(fake_kubectl, warming)
    collected = run_script(tmp_path, script, {**params, **overrides, "ATTEMPTS": 3}, env)
    assert collected.returncode == 0
    assert sum(" exec " in f" {line} " for line in calls(fake_kubectl)) == 2 + 3
    failed = assert_cli(check, collected.stdout)
    assert failed.returncode == 1
    assert "node server-1: check agent-status: expected Cilium state Ok, saw Warning" in failed.stderr


def test_cilium_before_1_15_is_asked_with_cilium_not_cilium_dbg() -> None:
    cfg = lab("kpr", "1.14.19")
    _, params = verify.collector_script(cfg, planned(cfg, "agent-status/agent-1"))
    assert params["AGENT_COMMAND"] == "cilium status --verbose"


def test_no_agent_pod_fails_the_collection_naming_the_node(tmp_path: Path, fake_kubectl: dict[str, str]) -> None:
    cfg = lab()
    script, params = verify.collector_script(cfg, planned(cfg, "agent-status/agent-2"))
    env = {**fake_kubectl, "FAKE_CONTAINERS": "", "FAKE_GET_STDERR": "connect: connection refused"}
    result = run_script(
        tmp_path, script, {**params, **fast_crictl(fake_kubectl), "ATTEMPTS": 2}, env
    )
    assert result.returncode == 1
    assert "verify-agent-exec: node agent-2: no running cilium-agent container after 1s" in result.stderr
    assert "connection refused" in result.stderr


def test_an_agent_that_answers_nothing_fails_the_collection(tmp_path: Path, fake_kubectl: dict[str, str]) -> None:
    cfg = lab()
    script, params = verify.collector_script(cfg, planned(cfg, "agent-status/agent-1"))
    env = agent_env(fake_kubectl, FAKE_EXEC_RC="1")
    result = run_script(
        tmp_path, script, {**params, **fast_crictl(fake_kubectl), "ATTEMPTS": 2}, env
    )
    assert result.returncode == 1
    assert "'cilium-dbg status --verbose' in container 3f9c2a1b7d4e printed nothing after 2 attempts" in result.stderr


def service_list(cfg: StackConfig, node_ip: str, backends: str = "(active)") -> str:
    placed = checks.workloads(cfg)
    return (
        "ID   Frontend                    Service Type   Backend\n"
        "1    10.43.0.1:443/TCP           ClusterIP      1 => 192.168.56.10:6443/TCP (active)\n"
        f"2    {placed.smoke_cluster_ip}:80/TCP         ClusterIP      1 => 10.42.1.52:80/TCP (active)\n"
        "                                                2 => 10.42.2.18:80/TCP (active)\n"
        f"3    0.0.0.0:{placed.node_port}/TCP           NodePort       1 => 10.42.1.52:80/TCP (active)\n"
        "                                                2 => 10.42.2.18:80/TCP (active)\n"
        f"4    {node_ip}:{placed.node_port}/TCP     NodePort       1 => 10.42.1.52:80/TCP {backends}\n"
        f"                                                2 => 10.42.2.18:80/TCP {backends}\n"
    )


def test_service_list_collected_and_judged(tmp_path: Path, fake_kubectl: dict[str, str]) -> None:
    cfg = lab()
    check = planned(cfg, "service-list/agent-1")
    script, params = verify.collector_script(cfg, check)
    listing = tmp_path / "list.txt"
    listing.write_text(service_list(cfg, "192.168.56.11"))
    env = agent_env(fake_kubectl, listing)
    collected = run_script(tmp_path, script, {**params, "CRICTL": fake_kubectl["KUBECTL"]}, env)
    assert collected.returncode == 0, collected.stderr
    assert calls(fake_kubectl)[-1].endswith(" cilium-dbg service list")
    passed = assert_cli(check, collected.stdout)
    assert passed.returncode == 0, passed.stderr

    # The node's own IP missing (another node's listed instead), and terminating backends.
    listing.write_text(service_list(cfg, "192.168.56.12", backends="(terminating)"))
    (tmp_path / "state" / "exec").unlink()
    collected = run_script(tmp_path, script, {**params, "CRICTL": fake_kubectl["KUBECTL"]}, env)
    failed = assert_cli(check, collected.stdout)
    assert failed.returncode == 1
    assert (
        "node agent-1: check service-list: expected frontend 192.168.56.11:30085 (NodePort) in service list, "
        "saw nothing" in failed.stderr
    )


def test_service_list_waits_until_the_node_port_is_programmed(tmp_path: Path, fake_kubectl: dict[str, str]) -> None:
    cfg = lab()
    check = planned(cfg, "service-list/agent-1")
    script, params = verify.collector_script(cfg, check)
    early, late = tmp_path / "early.txt", tmp_path / "late.txt"
    full = service_list(cfg, "192.168.56.11")
    early.write_text("\n".join(line for line in full.splitlines() if "NodePort" not in line and "=> 10.42" not in line))
    late.write_text(full)
    env = agent_env(fake_kubectl, early, early, late)
    collected = run_script(
        tmp_path, script, {**params, **fast_crictl(fake_kubectl)}, env
    )
    assert sum(" exec " in f" {line} " for line in calls(fake_kubectl)) == 3
    assert assert_cli(check, collected.stdout).returncode == 0


# --- iptables on the node ------------------------------------------------------------------------


def iptables_bin(tmp_path: Path, ipv4: str, ipv6: str, plain_backend: str = "nf_tables") -> Path:
    """Fake -save commands: nft holds the given dumps, legacy is empty; the plain ones are the nft backend."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "dumps").mkdir(exist_ok=True)
    for name, text in (("ipv4", ipv4), ("ipv6", ipv6)):
        (tmp_path / "dumps" / name).write_text(text)
    for cmd, family in (("iptables", "ipv4"), ("ip6tables", "ipv6")):
        executable(bin_dir / f"{cmd}-nft-save", f"#!/bin/sh\ncat {tmp_path / 'dumps' / family}\n")
        executable(bin_dir / f"{cmd}-legacy-save", "#!/bin/sh\nexit 0\n")
        executable(bin_dir / f"{cmd}-save", f"#!/bin/sh\ncat {tmp_path / 'dumps' / family}\n")
        executable(bin_dir / cmd, f"#!/bin/sh\necho '{cmd} v1.8.10 ({plain_backend})'\n")
    return bin_dir


def split_dual(text: str) -> tuple[str, str]:
    v4, v6 = text.split("### ipv6")
    return v4.replace("### ipv4\n", ""), v6.lstrip("\n")


def test_iptables_dumps_every_backend_and_family(tmp_path: Path) -> None:
    ipv4, ipv6 = split_dual((FIXTURES / "iptables_cilium_only_dual.txt").read_text())
    iptables_bin(tmp_path, ipv4, ipv6)
    cfg = lab()
    check = planned(cfg, "no-kube-proxy-rules/agent-2")
    script, params = verify.collector_script(cfg, check)
    collected = run_script(tmp_path, script, params)
    assert collected.returncode == 0, collected.stderr
    markers = [line for line in collected.stdout.splitlines() if line.startswith("### ")]
    # The plain iptables-save is the nft backend here: dumped once, under nft.
    assert markers == ["### ipv4-legacy", "### ipv4-nft", "### ipv6-legacy", "### ipv6-nft"]
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)["figures"]
    assert figures["ipv4-nft"]["entries"] == 0 and "ipv6-nft" in figures


def test_kube_proxy_rules_left_fail_with_their_count(tmp_path: Path) -> None:
    text = (FIXTURES / "iptables_kube_proxy_present_unmarked.txt").read_text()
    ipv6_at = text.index("# Generated by ip6tables-save")
    iptables_bin(tmp_path, text[:ipv6_at], text[ipv6_at:])
    cfg = lab()
    check = planned(cfg, "no-kube-proxy-rules/server-1")
    script, params = verify.collector_script(cfg, check)
    collected = run_script(tmp_path, script, params)
    assert collected.returncode == 0, collected.stderr
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 1
    line = next(line for line in result.stderr.splitlines() if "ipv4-nft" in line)
    assert line.startswith(
        "node server-1: check no-kube-proxy-rules: expected ipv4-nft KUBE-SVC/KUBE-SEP/KUBE-NODEPORTS entries 0, saw "
    )
    assert json.loads(result.stdout)["figures"]["ipv4-nft"]["entries"] > 0


def test_plain_iptables_of_the_other_backend_is_dumped_too(tmp_path: Path) -> None:
    bin_dir = iptables_bin(tmp_path, "*filter\nCOMMIT\n", "*filter\nCOMMIT\n", plain_backend="legacy")
    for cmd in ("iptables", "ip6tables"):
        (bin_dir / f"{cmd}-legacy-save").unlink()
    cfg = lab()
    script, params = verify.collector_script(cfg, planned(cfg, "no-kube-proxy-rules/agent-1"))
    collected = run_script(tmp_path, script, params)
    markers = [line for line in collected.stdout.splitlines() if line.startswith("### ")]
    assert markers == ["### ipv4-nft", "### ipv4-legacy", "### ipv6-nft", "### ipv6-legacy"]


def test_no_iptables_at_all_fails_the_collection(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    cfg = lab()
    script, params = verify.collector_script(cfg, planned(cfg, "no-kube-proxy-rules/agent-1"))
    result = run_script(tmp_path, script, params)
    assert result.returncode == 1
    assert "verify-iptables: no iptables-save found" in result.stderr


def test_a_failing_save_fails_the_collection(tmp_path: Path) -> None:
    bin_dir = iptables_bin(tmp_path, "*filter\nCOMMIT\n", "")
    executable(bin_dir / "ip6tables-nft-save", "#!/bin/sh\necho 'ip6tables-nft-save: permission denied' >&2\nexit 4\n")
    cfg = lab()
    script, params = verify.collector_script(cfg, planned(cfg, "no-kube-proxy-rules/agent-1"))
    result = run_script(tmp_path, script, params)
    assert result.returncode == 1
    assert "'ip6tables-nft-save' failed: ip6tables-nft-save: permission denied" in result.stderr


# --- probes from the node ------------------------------------------------------------------------

FAKE_CURL = r"""#!/usr/bin/env bash
# Answers from $FAKE_ANSWERS: lines "<host:port> <code> [<failures before it answers>]".
url=${*: -1}
target=${url#http://}; target=${target%/}
count_file="$FAKE_STATE/$target"
count=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
echo "$count" >"$count_file"
while read -r host code failures; do
  [[ $host == "$target" ]] || continue
  if (( count > ${failures:-0} )); then printf '%s' "$code"; exit 0; fi
  break
done <"$FAKE_ANSWERS"
echo "curl: (7) Failed to connect to ${target%:*} port ${target#*:} after 2 ms: Couldn't connect to server" >&2
printf '000'
exit 7
"""


@pytest.fixture
def fake_curl(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "curl-state").mkdir()
    executable(tmp_path / "bin" / "curl", FAKE_CURL)
    return {"FAKE_ANSWERS": str(tmp_path / "answers"), "FAKE_STATE": str(tmp_path / "curl-state")}


DISCOVERED = (
    "node=server-1 ip=192.168.56.10\nnode=agent-1 ip=192.168.56.11\nnode=agent-2 ip=192.168.56.12\n"
    "pod=smoke-a node=agent-1 ip=10.42.1.52 ready=True\npod=smoke-b node=agent-2 ip=10.42.2.18 ready=True\n"
)


def test_probes_ok_from_every_target(tmp_path: Path, fake_curl: dict[str, str]) -> None:
    cfg = lab()
    check = planned(cfg, "probes/agent-1")
    script, params = verify.collector_script(cfg, check, DISCOVERED)
    assert params["REMOTE_POD_IP"] == "10.42.2.18"  # the pod on the other node
    Path(fake_curl["FAKE_ANSWERS"]).write_text(
        "127.0.0.1:30085 200 2\n192.168.56.11:30085 200\n10.43.0.253:80 200\n10.42.2.18:80 204\n"
    )
    collected = run_script(tmp_path, script, {**params, "RETRY_DELAY_SECONDS": 0}, fake_curl)
    assert collected.returncode == 0, collected.stderr
    assert "probe=localhost-nodeport target=127.0.0.1:30085 result=ok code=200 attempts=3" in collected.stdout
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["figures"]["passed"] == 4


def test_a_probe_that_never_answers_fails_the_check(tmp_path: Path, fake_curl: dict[str, str]) -> None:
    cfg = lab()
    check = planned(cfg, "probes/server-1")
    script, params = verify.collector_script(cfg, check, DISCOVERED)
    Path(fake_curl["FAKE_ANSWERS"]).write_text("127.0.0.1:30085 200\n192.168.56.10:30085 503\n10.43.0.253:80 200\n")
    collected = run_script(tmp_path, script, {**params, "ATTEMPTS": 3, "RETRY_DELAY_SECONDS": 0}, fake_curl)
    assert collected.returncode == 0, collected.stderr
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 1
    assert "node server-1: check probes: expected probe nodeip-nodeport result ok, saw fail (" in result.stderr
    assert "code=503 attempts=3 detail=HTTP status 503)" in result.stderr
    assert (
        "expected probe remote-pod result ok, saw fail (target=10.42.1.52:80 code=000 attempts=3 "
        "detail=curl: (7) Failed to connect to 10.42.1.52 port 80 after 2 ms: Couldn't connect to server)"
        in result.stderr
    )


def test_no_remote_pod_found_is_a_failed_probe_not_a_skipped_one(tmp_path: Path, fake_curl: dict[str, str]) -> None:
    cfg = lab()
    check = planned(cfg, "probes/agent-1")
    only_here = (
        "pod=smoke-a node=agent-1 ip=10.42.1.52 ready=True\npod=smoke-b node=agent-2 ip=10.42.2.18 ready=False\n"
    )
    script, params = verify.collector_script(cfg, check, only_here)
    assert params["REMOTE_POD_IP"] == ""
    Path(fake_curl["FAKE_ANSWERS"]).write_text("127.0.0.1:30085 200\n192.168.56.11:30085 200\n10.43.0.253:80 200\n")
    collected = run_script(tmp_path, script, {**params, "RETRY_DELAY_SECONDS": 0}, fake_curl)
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 1
    assert (
        "expected probe remote-pod result ok, saw fail (target=none code=000 attempts=0 "
        "detail=no ready smoke pod on another node)" in result.stderr
    )


def test_node_ip_comes_from_the_cluster_when_the_stack_does_not_know_it() -> None:
    cfg = lab()
    node = cfg.nodes[1].model_copy(update={"host": "agent-1.example.com"})
    cfg = cfg.model_copy(update={"nodes": [cfg.nodes[0], node, cfg.nodes[2]]})
    _, params = verify.collector_script(cfg, planned(cfg, "probes/agent-1"), DISCOVERED)
    assert params["NODE_IP"] == "192.168.56.11"


# --- smoke pods, connectivity test, benchmark on the first server -------------------------------------


def test_smoke_pods_output_parses_into_nodes_and_pods(tmp_path: Path, fake_kubectl: dict[str, str]) -> None:
    env = {
        **fake_kubectl,
        "FAKE_NODES": "node=server-1 ip=192.168.56.10\n",
        "FAKE_PODS": "pod=smoke-a node=agent-1 ip=10.42.1.52 ready=True\n",
    }
    result = run_script(
        tmp_path, "verify-smoke-pods", {**verify.smoke_pods_params(), "KUBECTL": fake_kubectl["KUBECTL"]}, env
    )
    assert result.returncode == 0, result.stderr
    node_ips, pods = verify.parse_smoke_pods(result.stdout)
    assert node_ips == {"server-1": "192.168.56.10"}
    assert pods == [{"pod": "smoke-a", "node": "agent-1", "ip": "10.42.1.52", "ready": "True"}]
    assert verify.remote_pod_ip(result.stdout, "server-1") == "10.42.1.52"
    assert verify.remote_pod_ip(result.stdout, "agent-1") == ""
    assert "-n k3s-cilium-verify rollout status deployment/smoke --timeout=180s" in calls(fake_kubectl)

    failed = run_script(
        tmp_path,
        "verify-smoke-pods",
        {**verify.smoke_pods_params(), "KUBECTL": fake_kubectl["KUBECTL"]},
        {**env, "FAKE_ROLLOUT_RC": "1"},
    )
    assert failed.returncode == 1 and "deployment k3s-cilium-verify/smoke not rolled out" in failed.stderr


def connectivity(cfg: StackConfig) -> PlannedCheck:
    cfg = cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"connectivity_test": True})})
    return planned(cfg, "connectivity-test/server-1")


def test_a_missing_cilium_cli_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    cfg = lab()
    script, params = verify.collector_script(cfg, connectivity(cfg))
    result = run_script(tmp_path, script, params)
    assert result.returncode == 1
    assert "the cilium CLI ('cilium') is not installed on this server" in result.stderr
    assert "verify.connectivityTest: false" in result.stderr


@pytest.mark.parametrize(
    ("fixture", "code"), [("connectivity_success_cli_0.18.txt", 0), ("connectivity_failure_cli_0.18.txt", 1)]
)
def test_connectivity_test_output_is_judged(tmp_path: Path, fixture: str, code: int) -> None:
    (tmp_path / "bin").mkdir()
    executable(
        tmp_path / "bin" / "cilium",
        f'#!/bin/sh\n[ "$KUBECONFIG" = /etc/rancher/k3s/k3s.yaml ] || exit 3\ncat {FIXTURES / fixture}\nexit {code}\n',
    )
    cfg = lab()
    check = connectivity(cfg)
    script, params = verify.collector_script(cfg, check)
    collected = run_script(tmp_path, script, params)
    assert collected.returncode == 0, collected.stderr
    result = assert_cli(check, collected.stdout)
    assert result.returncode == code, result.stderr
    if code:
        assert result.stderr.startswith("node server-1: check connectivity-test: expected failed tests 0, saw ")


def test_a_connectivity_test_that_hangs_is_cut_off(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    executable(tmp_path / "bin" / "cilium", "#!/bin/sh\necho 'running...'\nexec sleep 30\n")
    cfg = lab()
    script, params = verify.collector_script(cfg, connectivity(cfg))
    result = run_script(tmp_path, script, {**params, "TIMEOUT_SECONDS": 1})
    assert result.returncode == 1
    assert "did not finish within 1s" in result.stderr


NETPERF_STREAM_KEYVAL = (
    "MIGRATED TCP STREAM TEST from 0.0.0.0 (0.0.0.0) port 0 AF_INET to 10.43.0.254 () port 0 AF_INET\n"
    "THROUGHPUT=9412.37\nTHROUGHPUT_UNITS=10^6bits/s\n"
)


def benchmark(cfg: StackConfig) -> PlannedCheck:
    cfg = cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"benchmark": True})})
    return planned(cfg, "benchmark")


def test_benchmark_runs_rr_then_stream_and_reports_figures(tmp_path: Path, fake_kubectl: dict[str, str]) -> None:
    stream = tmp_path / "stream.txt"
    stream.write_text(NETPERF_STREAM_KEYVAL)
    cfg = lab()
    check = benchmark(cfg)
    script, params = verify.collector_script(cfg, check)
    env = {
        **fake_kubectl,
        "FAKE_PODS": "netperf-client-5d9c",
        "FAKE_EXEC_1": str(FIXTURES / "netperf_tcp_rr_keyval.txt"),
        "FAKE_EXEC_2": str(stream),
    }
    collected = run_script(tmp_path, script, {**params, "CRICTL": fake_kubectl["KUBECTL"]}, env)
    assert collected.returncode == 0, collected.stderr
    execs = [line for line in calls(fake_kubectl) if " exec " in f" {line} "]
    assert execs == [
        f"-n k3s-cilium-verify exec netperf-client-5d9c -- netperf -H 10.43.0.254 -p 12865 -l 10 -t {test} "
        f"-- -P ,12866 -k {selectors}"
        for test, selectors in (
            (
                "TCP_RR",
                "MIN_LATENCY,MEAN_LATENCY,P50_LATENCY,P90_LATENCY,P99_LATENCY,MAX_LATENCY,STDDEV_LATENCY,"
                "TRANSACTION_RATE",
            ),
            ("TCP_STREAM", "THROUGHPUT,THROUGHPUT_UNITS"),
        )
    ]
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["node"] == "cluster"
    figures = verify.summarize("benchmark", result.stdout)["seen"]
    assert figures == {
        "meanLatencyUs": 33.51,
        "p99LatencyUs": 61.0,
        "transactionsPerSec": 29790.347,
        "throughputMbps": 9412.37,
    }


def test_benchmark_without_a_server_fails_the_check(tmp_path: Path, fake_kubectl: dict[str, str]) -> None:
    cfg = lab()
    check = benchmark(cfg)
    script, params = verify.collector_script(cfg, check)
    env = {
        **fake_kubectl,
        "FAKE_PODS": "netperf-client-5d9c",
        "FAKE_EXEC_LAST": str(FIXTURES / "netperf_no_netserver.txt"),
        "FAKE_EXEC_RC": "1",
    }
    collected = run_script(tmp_path, script, {**params, "CRICTL": fake_kubectl["KUBECTL"]}, env)
    assert collected.returncode == 0, collected.stderr
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "node cluster: check benchmark: expected netperf results with parsable figures, saw netperf error: "
    )


# --- one session per node: the node collector ------------------------------------------------------


def node_checks(cfg: StackConfig, node: str) -> list[PlannedCheck]:
    return [c for c in planned_checks(cfg, resolve(cfg)) if c.node == node and c.check in verify.NODE_CHECKS]


def test_node_collector_renders_every_check_of_the_node_and_passes_lint(tmp_path: Path) -> None:
    cfg = lab()
    node = cfg.nodes[1]
    script, params = verify.node_collector_script(cfg, node, node_checks(cfg, node.name), DISCOVERED)
    assert params["CHECKS"] == "agent-status no-kube-proxy-rules kpr-integrity service-list probes"
    lint(render(script, params), tmp_path, "verify-node.sh")


def test_between_rollout_steps_the_collector_collects_nothing_until_cilium_runs(tmp_path: Path) -> None:
    params: dict[str, ScriptValue] = {
        "NODE_NAME": "agent-1",
        "CHECKS": "agent-status",
        "SECTION_MARK": verify.SECTION_MARK,
        "SKIP_WHEN": "cilium=absent",
        "SCRIPT_0": "echo 'KubeProxyReplacement: True'",
    }
    wait = "node=agent-1 kubelet=v1.33.3+k3s1 ready={ready} cilium={cilium} etcd=none service=none\n"
    first_install = run_script(tmp_path, "verify-node", params, stdin=wait.format(ready="skipped", cilium="absent"))
    assert (first_install.returncode, first_install.stdout) == (0, "cilium=absent\n")
    upgrade = run_script(tmp_path, "verify-node", params, stdin=wait.format(ready="True", cilium="ready"))
    assert upgrade.returncode == 0, upgrade.stderr
    assert verify.split_sections(upgrade.stdout) == {"agent-status": "KubeProxyReplacement: True\n"}


def test_node_collector_gives_each_check_its_own_output_and_names_what_it_could_not_collect(tmp_path: Path) -> None:
    cfg = lab()
    node = cfg.nodes[1]
    checks_here = node_checks(cfg, node.name)
    _, params = verify.node_collector_script(cfg, node, checks_here, DISCOVERED)
    # Stand-in collectors: agent-status and probes print, service-list cannot collect.
    stand_ins = {
        "agent-status": "echo 'KubeProxyReplacement: True'",
        "no-kube-proxy-rules": "printf '*filter\\nCOMMIT\\n'",
        "kpr-integrity": "printf '### ss\\n'",
        "service-list": "echo 'no agent' >&2; exit 1",
        "probes": "echo 'probe=localhost-nodeport ok'",
    }
    for index, check in enumerate(checks_here):
        params[f"SCRIPT_{index}"] = stand_ins[check.check]
    result = run_script(tmp_path, "verify-node", params)
    assert result.returncode == 1
    assert "verify-node: node agent-1: could not collect service-list" in result.stderr
    sections = verify.split_sections(result.stdout)
    assert sections == {
        "agent-status": "KubeProxyReplacement: True\n",
        "no-kube-proxy-rules": "*filter\nCOMMIT\n",
        "kpr-integrity": "### ss\n",
        "service-list": "",
        "probes": "probe=localhost-nodeport ok\n",
    }
