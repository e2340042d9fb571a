"""``python3 -m verification`` run for real: stdin in, JSON out, exit status, stderr lines."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
PACKAGE = ROOT / "verification"


def cli(*args: str, stdin: str = "", python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "verification", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


PASSING = [
    (
        "agent-status",
        "agent_status_1.19_extreme.txt",
        {"version": "1.19.6", "kubeProxyReplacement": True, "dsr": True, "maglev": 65521, "netkit": True},
    ),
    ("no-kube-proxy-rules", "iptables_cilium_only_dual.txt", {"families": ["ipv4", "ipv6"]}),
    (
        "service-list",
        "service_list_1.19.txt",
        {"nodePort": 30080, "nodeIPs": ["10.0.0.11"], "clusterIP": "10.43.71.24"},
    ),
    ("probes", "probes_all_ok.txt", {"probes": ["nodeport-agent-1"]}),
    ("connectivity-test", "connectivity_success_cli_0.18.txt", {"minTests": 50}),
    ("benchmark", "netperf_tcp_rr_omni_human.txt", {"test": "TCP_RR", "figures": ["meanLatencyUs", "p99LatencyUs"]}),
]

FAILING = [
    (
        "agent-status",
        "agent_status_1.13_kpr_disabled.txt",
        {"kubeProxyReplacement": True, "maglev": 16381},
        [
            "node agent-1: check agent-status: expected KubeProxyReplacement Strict, saw Disabled",
            "node agent-1: check agent-status: expected Backend Selection Maglev (Table Size: 16381), "
            "saw nothing (not found in output)",
        ],
    ),
    (
        "no-kube-proxy-rules",
        "iptables_kube_proxy_present_unmarked.txt",
        {},
        [
            "node agent-1: check no-kube-proxy-rules: expected ipv4 KUBE-SVC/KUBE-SEP/KUBE-NODEPORTS entries 0, "
            "saw 18 (KUBE-SVC 8, KUBE-SEP 8, KUBE-NODEPORTS 4; first: :KUBE-NODEPORTS - [0:0])",
            "node agent-1: check no-kube-proxy-rules: expected ipv6 KUBE-SVC/KUBE-SEP/KUBE-NODEPORTS entries 0, "
            "saw 2 (KUBE-SVC 0, KUBE-SEP 0, KUBE-NODEPORTS 2; first: :KUBE-NODEPORTS - [0:0])",
        ],
    ),
    (
        "service-list",
        "service_list_1.13.txt",
        {"nodePort": 30080, "nodeIPs": ["10.0.0.12"]},
        [
            "node agent-1: check service-list: expected frontend 10.0.0.12:30080 (NodePort) in service list, "
            "saw nothing (not found in output)"
        ],
    ),
    (
        "probes",
        "probes_one_failed.txt",
        {},
        [
            "node agent-1: check probes: expected probe nodeport-agent-2 result ok, saw fail "
            "(target=10.0.0.12:30080 code=000 attempts=5 detail=curl: (28) Connection timed out)"
        ],
    ),
    (
        "connectivity-test",
        "connectivity_failure_cli_0.14.txt",
        {},
        ["node agent-1: check connectivity-test: expected failed tests 0, saw 2/42 (no-policies, echo-ingress-l7)"],
    ),
    (
        "benchmark",
        "netperf_no_netserver.txt",
        {},
        [
            "node agent-1: check benchmark: expected netperf results with parsable figures, saw netperf error: "
            "establish control: are you sure there is a netserver listening on 10.42.2.18 at port 12865?"
        ],
    ),
]


@pytest.mark.parametrize(("check", "name", "expect"), PASSING, ids=[case[0] for case in PASSING])
def test_pass_prints_one_json_object_and_exits_0(check: str, name: str, expect: dict[str, object]) -> None:
    result = cli(check, "--node", "agent-1", "--expect", json.dumps(expect), stdin=fixture(name))

    assert (result.returncode, result.stderr) == (0, "")
    assert len(result.stdout.splitlines()) == 1
    document = json.loads(result.stdout)
    assert {key: document[key] for key in ("check", "node", "status", "problems")} == {
        "check": check,
        "node": "agent-1",
        "status": "pass",
        "problems": [],
    }
    assert document["figures"]


@pytest.mark.parametrize(("check", "name", "expect", "lines"), FAILING, ids=[case[0] for case in FAILING])
def test_fail_prints_one_stderr_line_per_problem_and_exits_1(
    check: str, name: str, expect: dict[str, object], lines: list[str]
) -> None:
    result = cli(check, "--node", "agent-1", "--expect", json.dumps(expect), stdin=fixture(name))

    assert result.returncode == 1
    assert result.stderr.splitlines() == lines
    document = json.loads(result.stdout)
    assert (document["status"], document["problems"]) == ("fail", lines)


def test_figures_of_the_agent_status_reach_stdout() -> None:
    result = cli("agent-status", "--node", "agent-1", stdin=fixture("agent_status_1.13_kpr_strict_dsr.txt"))

    figures = json.loads(result.stdout)["figures"]
    assert (figures["version"], figures["kubeProxyReplacement"], figures["maglevTableSize"]) == (
        "1.13.18",
        "Strict",
        16381,
    )


def test_empty_stdin_is_not_found_and_exits_1() -> None:
    result = cli("service-list", "--node", "agent-1", "--expect", '{"nodePort": 30080}')

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "node agent-1: check service-list: expected service list with at least one service, "
        "saw nothing (not found in output)"
    ]


def test_non_ascii_input_is_read_as_utf8() -> None:
    line = 'probe=fr target=10.0.0.11:30080 result=ok code=200 attempts=1 detail="Bienvenue à nginx ✓"\n'

    result = cli("probes", "--node", "agent-1", stdin=line)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["figures"]["results"]["fr"]["detail"] == "Bienvenue à nginx ✓"


def test_emoji_in_connectivity_output_is_read_as_utf8() -> None:
    result = cli("connectivity-test", "--node", "k3s-cilium", stdin=fixture("connectivity_success_cli_0.14.txt"))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["figures"]["tests"] == 42


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ("{not json", "node agent-1: check agent-status: invalid --expect: not valid JSON: "),
        ('["dsr"]', "node agent-1: check agent-status: invalid --expect: not a JSON object: ['dsr']"),
        ('{"dsrr": true}', "node agent-1: check agent-status: invalid --expect: unknown expectation key 'dsrr'"),
        ('{"dsr": "yes"}', "node agent-1: check agent-status: invalid --expect: expectation dsr must be"),
    ],
)
def test_bad_expectations_exit_2_without_asserting(expect: str, message: str) -> None:
    result = cli(
        "agent-status", "--node", "agent-1", "--expect", expect, stdin=fixture("agent_status_1.19_extreme.txt")
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message)


@pytest.mark.parametrize("args", [("agent-status",), ("no-such-check", "--node", "agent-1"), ()])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    assert cli(*args).returncode == 2


def test_help_names_every_check_and_the_probe_line_format() -> None:
    result = cli("--help")

    assert result.returncode == 0
    for check in ("agent-status", "no-kube-proxy-rules", "service-list", "probes", "connectivity-test", "benchmark"):
        assert check in result.stdout
    assert "probe=<name> target=<ip:port> result=ok|fail code=<http code> attempts=<n>" in result.stdout
    assert '{"check": "<check>", "node": "<node-name>", "status": "pass"|"fail",' in result.stdout


def test_check_help_lists_its_expectation_keys() -> None:
    result = cli("service-list", "--help")

    assert result.returncode == 0
    for key in ("nodePort", "nodeIPs", "clusterIP", "clusterPort", "frontends", "protocol", "minBackends"):
        assert f"  {key}: " in result.stdout


def test_runs_without_site_packages() -> None:
    """``-S`` hides every installed package: only the standard library is left."""
    result = cli("probes", "--node", "agent-1", stdin=fixture("probes_all_ok.txt"), python_flags=("-S",))

    assert result.returncode == 0, result.stderr


def test_package_imports_only_the_standard_library() -> None:
    imported: set[str] = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])

    assert imported - set(sys.stdlib_module_names) == {"verification"}


def test_skip_takes_keys_out_of_the_expectations_and_says_so() -> None:
    # A node where preflight left BIG TCP and XDP off: the agent shows them off, and neither is asserted.
    status = fixture("agent_status_1.19_extreme.txt").replace(
        "IPv4 BIG TCP:               Enabled   [196608]", "IPv4 BIG TCP:               Disabled"
    ).replace("XDP Acceleration:        Native", "XDP Acceleration:        Disabled")
    expect = json.dumps({"bigTcp": ["ipv4"], "xdp": "best-effort", "kubeProxyReplacement": True})
    held = cli("agent-status", "--node", "agent-1", "--expect", expect, "--skip", "bigTcp,xdp", stdin=status)
    assert held.returncode == 0, held.stderr
    document = json.loads(held.stdout)
    assert document["status"] == "pass" and document["skipped"] == ["bigTcp", "xdp"]
    unskipped = cli("agent-status", "--node", "agent-1", "--expect", expect, stdin=status)
    assert unskipped.returncode == 1
    assert json.loads(unskipped.stdout)["skipped"] == []


def test_skip_of_a_key_the_check_does_not_have_is_a_usage_error() -> None:
    result = cli("agent-status", "--node", "agent-1", "--skip", "noSuchKey", stdin="")
    assert result.returncode == 2
    assert "--skip: agent-status has no expectation 'noSuchKey'" in result.stderr
