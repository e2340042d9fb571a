"""kpr-integrity: what kube-proxy replacement rests on, read on the node from what runs there.

The parsers are tested on real output: ``ss`` samples copied from upstream
pages and captured in network namespaces, the ``/proc/<pid>/cmdline`` of a
process retitled the way K3s retitles itself, and K3s' own documentation's
config files (each fixture's header, and fixtures/README.md, say where it came
from). A node collector's output is put together from those samples the way
``verify-kpr-node.sh`` prints it (its marker lines); the script itself is run in
tests/components/test_verify_kpr_node.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from verification.expectations import CHECKS, ExpectationError, JsonValue, Verdict
from verification.parsers import (
    K3sProcess,
    KprNode,
    effective_disable_kube_proxy,
    parse_config_setting,
    parse_kpr_node,
    parse_ss_listening,
)

FIXTURES = Path(__file__).parent / "fixtures"
CHECK = "kpr-integrity"
API_OK = "probe=api-server target=127.0.0.1:6444 result=ok code=401 attempts=1\n"
# What the plan expects on a kpr-tier node with the program's default values.
AGENT = {"role": "agent", "kubeProxyHealthzPort": 10256, "apiServer": "127.0.0.1:6444", "apiServerIsK3s": True}
SERVER = {**AGENT, "role": "server"}
# When the captured retitled K3s server started (fixtures/proc_stat_k3s_server.txt).
STARTED = 1796248160


def sample(name: str) -> str:
    """A fixture without its header (the leading ``# `` lines that say where it came from)."""
    lines = (FIXTURES / name).read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


def captured_cmdline(name: str) -> bytes:
    """A captured /proc/<pid>/cmdline, kept as text with each NUL written ``\\0``."""
    return (FIXTURES / name).read_text().rstrip("\n").replace("\\0", "\0").encode()


def cmdline(name: str) -> str:
    """A /proc/<pid>/cmdline fixture one argument a line, as the collector prints it (mapfile -d '')."""
    args = captured_cmdline(name).split(b"\0")[:-1]
    return "".join(f"{arg.decode()}\n" for arg in args)


def collected(
    ss: str | None = "ss_kpr_agent_clean.txt",
    unit: str = "k3s-agent",
    proc: str = "proc_cmdline_k3s_agent.txt",
    pid: int = 11095,
    started: int = STARTED,
    execstart: str = "/usr/local/bin/k3s\nagent\n",
    files: tuple[tuple[str, int, str], ...] = (),
    api: str | None = API_OK,
) -> str:
    """verify-kpr-node.sh's output made of real samples: the parts in its order, under its markers."""
    parts = [f"### ss\n{sample(ss)}"] if ss else []
    if unit == "none":
        parts.append("### k3s unit=none\n")
    else:
        parts.append(f"### k3s unit={unit} pid={pid} started={started}\n### cmdline\n{cmdline(proc)}")
        parts.append(f"### execstart\n{execstart}")
    parts.append("### config path=/etc/rancher/k3s/config.yaml source=default\n")
    parts.extend(f"### file path={path} mtime={mtime}\n{lines}" for path, mtime, lines in files)
    if api is not None:
        parts.append(f"### api-server\n{api}")
    return "".join(parts)


def run(text: str, expect: dict[str, JsonValue]) -> Verdict:
    return CHECKS[CHECK].run(text, expect)


def messages(verdict: Verdict, node: str = "agent-1") -> list[str]:
    return [problem.message(node, CHECK) for problem in verdict.problems]


# --- ss -ltnp --------------------------------------------------------------------------------------


def test_upstream_k3s_server_shows_its_embedded_kube_proxy_on_10256_and_10249() -> None:
    listing = parse_ss_listening(sample("ss_k3s_server_default_install.txt"))

    assert listing.unparsed == []
    assert len(listing.listeners) == 9
    assert [listener.describe() for listener in listing.on_port(10256)] == [
        "127.0.0.1:10256 held by k3s-server (pid 2786)"
    ]
    assert [listener.endpoint for listener in listing.on_port(10249)] == ["127.0.0.1:10249"]
    assert [listener.endpoint for listener in listing.on_port(6443)] == ["*:6443"]


def test_upstream_kubeadm_node_reads_scopes_shared_sockets_and_kube_proxy() -> None:
    listing = parse_ss_listening(sample("ss_kubeadm_kube_proxy.txt"))

    assert listing.unparsed == []
    assert len(listing.listeners) == 15
    assert [listener.describe() for listener in listing.on_port(10256)] == ["*:10256 held by kube-proxy (pid 14448)"]
    resolver = [listener for listener in listing.on_port(53) if listener.address == "127.0.0.53"]
    assert len(resolver) == 1
    (ssh,) = listing.on_port(22)
    assert [(owner.name, owner.pid) for owner in ssh.owners] == [("sshd", 1988), ("systemd", 1)]


def test_ss_without_root_names_no_process() -> None:
    listing = parse_ss_listening(sample("ss_not_root.txt"))

    assert [listener.endpoint for listener in listing.listeners] == ["192.168.1.105:2379", "127.0.0.1:2379"]
    assert all(listener.owners == () for listener in listing.listeners)
    assert listing.listeners[0].describe() == "192.168.1.105:2379 held by a process ss did not name (not root?)"


def test_the_cilium_agent_is_named_cilium_agent() -> None:
    listing = parse_ss_listening(sample("ss_cilium_agent_metrics.txt"))

    assert {owner.name for listener in listing.listeners for owner in listener.owners} == {
        "cilium-agent",
        "cilium-operator",
    }


def test_ipv6_loopback_listeners() -> None:
    listing = parse_ss_listening(sample("ss_kpr_server_ipv6_embedded_kube_proxy.txt"))

    (healthz,) = listing.on_port(10256)
    assert (healthz.address, healthz.endpoint) == ("::1", "[::1]:10256")


# --- K3s' process, config files and flags ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "role"), [("proc_cmdline_k3s_server.txt", "server"), ("proc_cmdline_k3s_agent.txt", "agent")]
)
def test_a_retitled_k3s_shows_its_role_and_no_flags(name: str, role: str) -> None:
    process = K3sProcess("k3s", 1, None, tuple(cmdline(name).splitlines()))

    assert process.retitled
    assert process.argv == ("/usr/local/bin/k3s", role)
    assert process.role == role


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("disable-kube-proxy: true", True),
        ('"disable-kube-proxy": yes # YAML 1.1, as go-yaml v2 reads it', True),
        ("disable-kube-proxy: false", False),
        ("disable-kube-proxy: 'false'", False),
        ("disable-kube-proxy: 1", True),
        ("disable-kube-proxy+: true", True),
        ('disable-kube-proxy: "yes"', None),  # a string: strconv.ParseBool refuses it
        ("disable-kube-proxy:", None),
        ("disable-kube-proxy: maybe", None),
    ],
)
def test_config_lines_read_as_k3s_reads_them(line: str, value: bool | None) -> None:
    setting = parse_config_setting("/etc/rancher/k3s/config.yaml", line)

    assert setting is not None and setting.value is value


@pytest.mark.parametrize(
    "line", ["  disable-kube-proxy: true", "disable-kube-proxy-x: true", "# disable-kube-proxy: true"]
)
def test_only_top_level_disable_kube_proxy_keys_count(line: str) -> None:
    assert parse_config_setting("/etc/rancher/k3s/config.yaml", line) is None


def node_with(files: tuple[tuple[str, int, str], ...], execstart: str = "/usr/local/bin/k3s\nserver\n") -> KprNode:
    return parse_kpr_node(
        collected(unit="k3s", proc="proc_cmdline_k3s_server.txt", execstart=execstart, files=files)
    )


PROGRAM_CONFIG = ("/etc/rancher/k3s/config.yaml", STARTED - 60, "disable-kube-proxy: true\n")


def test_a_later_drop_in_wins_over_config_yaml_and_an_argument_over_both() -> None:
    dropin = ("/etc/rancher/k3s/config.yaml.d/90-local.yaml", STARTED - 30, "disable-kube-proxy: false\n")

    alone = effective_disable_kube_proxy(node_with((PROGRAM_CONFIG,)))
    assert alone is not None and (alone.value, alone.source) == (True, "/etc/rancher/k3s/config.yaml")
    overridden = effective_disable_kube_proxy(node_with((PROGRAM_CONFIG, dropin)))
    assert overridden is not None and (overridden.value, overridden.source) == (False, dropin[0])
    flagged = effective_disable_kube_proxy(
        node_with((PROGRAM_CONFIG, dropin), execstart="/usr/local/bin/k3s\nserver\n<hidden>\n--disable-kube-proxy\n")
    )
    assert flagged is not None and (flagged.value, flagged.source) == (True, "ExecStart of k3s")


def test_set_nowhere_is_none() -> None:
    assert effective_disable_kube_proxy(node_with(())) is None


# --- the check ---------------------------------------------------------------------------------------


def test_a_clean_agent_passes_and_reports_what_it_read() -> None:
    verdict = run(collected(), AGENT)

    assert messages(verdict) == []
    figures = verdict.figures
    assert figures["healthzPort"] == [] and figures["kubeProxyRunning"] is False
    assert figures["k3s"] == {
        "unit": "k3s-agent",
        "pid": 11095,
        "role": "agent",
        "started": "2026-12-02T21:49:20Z",
        "argv": ["/usr/local/bin/k3s", "agent"],
    }
    assert figures["apiServer"] == {
        "probe": "api-server",
        "target": "127.0.0.1:6444",
        "result": "ok",
        "code": "401",
        "attempts": "1",
    }


def test_an_agent_still_running_k3s_kube_proxy_is_named_with_the_fix() -> None:
    verdict = run(collected(ss="ss_kpr_agent_embedded_kube_proxy.txt"), AGENT)

    (message,) = messages(verdict)
    assert message.startswith(
        "node agent-1: check kpr-integrity: expected K3s' embedded kube-proxy not running (disable-kube-proxy), "
        "saw running: 127.0.0.1:10256 held by k3s-agent (pid 11095); 127.0.0.1:10249 held by k3s-agent (pid 11095); "
        "fix: K3s agents take disable-kube-proxy from their servers when they start"
    )
    assert message.endswith(
        "`systemctl restart k3s-agent` on agent-1, then `pulumi up --replace` kube-proxy-cleanup-agent-1 (it removes "
        "kube-proxy's iptables rules) and verify-collect-agent-1 to check again"
    )
    assert verdict.figures["kubeProxyRunning"] is True


def test_a_server_running_its_kube_proxy_on_ipv6_is_told_to_restart_k3s() -> None:
    text = collected(
        ss="ss_kpr_server_ipv6_embedded_kube_proxy.txt",
        unit="k3s",
        proc="proc_cmdline_k3s_server.txt",
        execstart="/usr/local/bin/k3s\nserver\n",
        files=(PROGRAM_CONFIG,),
        api="probe=api-server target=127.0.0.1:6444 result=ok code=401 attempts=1\n",
    )
    verdict = run(text, {**SERVER, "apiServer": "[::1]:6444"})

    (message,) = messages(verdict, "server-1")
    assert "saw running: [::1]:10256 held by k3s-server (pid 11149); [::1]:10249 held by k3s-server" in message
    fix = "fix: K3s on this server does not run with disable-kube-proxy: true: `systemctl restart k3s` on server-1"
    assert fix in message


def test_a_kube_proxy_of_its_own_is_named_on_both_ports_with_the_fix() -> None:
    verdict = run(collected(ss="ss_kpr_agent_kube_proxy_daemonset.txt"), AGENT)

    assert [problem.item for problem in verdict.problems] == ["kube-proxy's health port 10256", "kube-proxy"]
    health, metrics = messages(verdict)
    assert health.startswith(
        "node agent-1: check kpr-integrity: expected kube-proxy's health port 10256 free, or held by cilium-agent, "
        "saw *:10256 held by kube-proxy (pid 11128); fix: a kube-proxy of its own"
    )
    assert "`pulumi up --replace` kube-proxy-kubernetes deletes" in health
    assert health.endswith("and verify-collect-agent-1 to check again")
    assert "saw running: 127.0.0.1:10249 held by kube-proxy (pid 11128)" in metrics


def test_upstream_kubeadm_kube_proxy_fails_the_same_way() -> None:
    text = collected(ss="ss_kubeadm_kube_proxy.txt", api=None)
    verdict = run(text, {"role": "agent", "kubeProxyHealthzPort": 10256})

    assert [problem.seen for problem in verdict.problems] == [
        "*:10256 held by kube-proxy (pid 14448)",
        "running: 127.0.0.1:10249 held by kube-proxy (pid 14448)",
    ]


def test_cilium_serving_kube_proxy_health_checks_passes_when_configured() -> None:
    text = collected(
        ss="ss_kpr_server_cilium_healthz.txt", unit="k3s", proc="proc_cmdline_k3s_server.txt",
        execstart="/usr/local/bin/k3s\nserver\n", files=(PROGRAM_CONFIG,),
    )

    assert messages(run(text, {**SERVER, "ciliumHealthz": "[::]:10256"})) == []
    # The agent holds the port without being asked: still nothing but the agent, so no problem.
    assert messages(run(text, SERVER)) == []


def test_cilium_asked_to_serve_health_checks_but_k3s_holds_the_port() -> None:
    verdict = run(collected(ss="ss_kpr_agent_embedded_kube_proxy.txt"), {**AGENT, "ciliumHealthz": "0.0.0.0:10256"})

    items = [problem.item for problem in verdict.problems]
    assert items == [
        "Cilium's kube-proxy health server (0.0.0.0:10256, kubeProxyReplacementHealthzBindAddr)",
        "K3s' embedded kube-proxy",
    ]
    assert verdict.problems[0].seen == "127.0.0.1:10256 held by k3s-agent (pid 11095)"
    assert "the Cilium agent on agent-1 could not bind 0.0.0.0:10256" in messages(verdict)[0]


def test_cilium_asked_to_serve_health_checks_and_nothing_listens() -> None:
    verdict = run(collected(), {**AGENT, "ciliumHealthz": "0.0.0.0:10256"})

    (problem,) = verdict.problems
    assert (problem.expected, problem.seen) == ("held by cilium-agent", "nothing listening on port 10256")


def test_a_server_whose_drop_in_turns_kube_proxy_back_on() -> None:
    dropin = ("/etc/rancher/k3s/config.yaml.d/90-local.yaml", STARTED - 30, "disable-kube-proxy: false\n")
    text = collected(
        unit="k3s", proc="proc_cmdline_k3s_server.txt", execstart="/usr/local/bin/k3s\nserver\n",
        files=(PROGRAM_CONFIG, dropin),
    )
    (message,) = messages(run(text, SERVER), "server-1")

    assert message.startswith(
        "node server-1: check kpr-integrity: expected disable-kube-proxy K3s runs with true, saw false from "
        "/etc/rancher/k3s/config.yaml.d/90-local.yaml (disable-kube-proxy: false); fix: the program writes "
        "`disable-kube-proxy: true` to /etc/rancher/k3s/config.yaml; a later config.yaml.d drop-in or a flag in "
        "the unit's ExecStart overrides it: correct it in /etc/rancher/k3s/config.yaml.d/90-local.yaml, "
        "`systemctl restart k3s` on server-1, then check again: `pulumi up --replace` the node's collector, "
        "verify-collect-server-1"
    )


def test_a_server_with_k3s_docs_config_runs_kube_proxy() -> None:
    docs = [
        (f"/etc/rancher/k3s/{name}", STARTED - 60, "")
        for name in ("config.yaml", "config.yaml.d/test1.yaml", "config.yaml.d/test2.yaml")
    ]
    text = collected(unit="k3s", proc="proc_cmdline_k3s_server.txt", execstart="/usr/local/bin/k3s\nserver\n",
                     files=tuple(docs))
    (problem,) = run(text, SERVER).problems

    assert problem.seen == (
        "not set in the config files K3s reads (/etc/rancher/k3s/config.yaml, "
        "/etc/rancher/k3s/config.yaml.d/test1.yaml, /etc/rancher/k3s/config.yaml.d/test2.yaml) nor in its "
        "arguments: K3s' default, false"
    )


def test_a_config_changed_after_k3s_started_is_not_what_k3s_runs_with() -> None:
    later = ("/etc/rancher/k3s/config.yaml", STARTED + 3600, "disable-kube-proxy: true\n")
    text = collected(unit="k3s", proc="proc_cmdline_k3s_server.txt", execstart="/usr/local/bin/k3s\nserver\n",
                     files=(later,))
    (message,) = messages(run(text, SERVER), "server-1")

    assert message.startswith(
        "node server-1: check kpr-integrity: expected K3s config file /etc/rancher/k3s/config.yaml unchanged since "
        "K3s started (2026-12-02T21:49:20Z), saw changed at 2026-12-02T22:49:20Z, so K3s does not run with what it "
        "says; fix: K3s reads its config only when it starts: `systemctl restart k3s` on server-1"
    )


def test_agents_are_not_judged_by_their_own_config_files() -> None:
    # An agent takes disable-kube-proxy from the servers; its own files neither set nor change it.
    files = (("/etc/rancher/k3s/config.yaml", STARTED + 3600, ""),)

    assert messages(run(collected(files=files), AGENT)) == []


def test_no_k3s_running_and_a_k3s_of_the_wrong_role() -> None:
    (missing,) = messages(run(collected(unit="none"), AGENT))
    assert missing.startswith(
        "node agent-1: check kpr-integrity: expected K3s' main process (MainPID of the k3s or k3s-agent unit) "
        "running, saw neither unit has a main process; fix: K3s does not run on agent-1: `systemctl status "
        "k3s-agent` and `journalctl -u k3s-agent` there say why"
    )
    wrong = run(collected(proc="proc_cmdline_k3s_server.txt"), AGENT)
    assert wrong.problems[0].item == "K3s role"
    assert wrong.problems[0].seen == "server (k3s-agent, pid 11095: /usr/local/bin/k3s server)"


def test_the_api_server_must_answer_and_k3s_must_hold_its_load_balancer() -> None:
    failed = (
        "probe=api-server target=127.0.0.1:6444 result=fail code=000 attempts=5 "
        "detail=curl:\\ \\(7\\)\\ Failed\\ to\\ connect\\ to\\ 127.0.0.1\\ port\\ 6444\n"
    )
    (message,) = messages(run(collected(api=failed), AGENT))
    assert message.startswith(
        "node agent-1: check kpr-integrity: expected API server 127.0.0.1:6444 from this node answering (any HTTP "
        "status), saw no answer after 5 attempts (curl: (7) Failed to connect to 127.0.0.1 port 6444); fix: K3s' "
        "load balancer on 127.0.0.1:6444, through which the Cilium agent reaches the API server"
    )
    # Something else on 9234 pretending to be the load balancer: the Cilium agent holds it in this sample.
    lb = {**AGENT, "apiServer": "127.0.0.1:9234"}
    (other,) = run(collected(api=API_OK.replace("6444", "9234")), lb).problems
    assert (other.item, other.seen) == ("listener on 127.0.0.1:9234", "127.0.0.1:9234 held by cilium-agent (pid 10938)")


def test_a_configured_api_endpoint_is_probed_and_its_fix_names_the_settings() -> None:
    failed = "probe=api-server target=10.0.0.5:6443 result=fail code=000 attempts=5 detail=timeout\n"
    expect = {**AGENT, "apiServer": "10.0.0.5:6443", "apiServerIsK3s": False}
    (problem,) = run(collected(api=failed), expect).problems

    assert "cilium.k8sServiceHost/k8sServicePort" in str(problem.fix)
    assert "K3s' load balancer on 127.0.0.1:6444" in str(problem.fix)


def test_missing_parts_are_not_found_never_assumed() -> None:
    verdict = run(collected(ss=None, api=None), AGENT)

    assert [(problem.item, problem.seen) for problem in verdict.problems] == [
        ("listening sockets (ss -ltnp)", None),
        ("API server 127.0.0.1:6444 probe", None),
    ]
    assert run("", AGENT).problems[1].item == "K3s' main process"


@pytest.mark.parametrize(
    "expect",
    [{"role": "master"}, {"ciliumHealthz": "nonsense"}, {"apiServer": "127.0.0.1"}, {"kubeProxyHealthzPort": "x"}],
)
def test_expectations_that_do_not_fit_are_refused(expect: dict[str, JsonValue]) -> None:
    with pytest.raises(ExpectationError):
        run(collected(), expect)
