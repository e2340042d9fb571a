"""verify-kpr-node.sh, run for real and judged by the real ``python3 -m verification kpr-integrity``.

Two ways:

- with stand-ins for systemctl, ss and curl and a proc directory holding the
  /proc/<pid>/cmdline and stat of a process retitled the way K3s retitles
  itself (tests/verification/fixtures), over real K3s config files (the one
  this program writes, K3s' documentation's samples) in a temporary
  directory. The output must name what it found and never carry a secret
  (a token in a config file, in ExecStart or in the unit's environment file);
- as root, in a network namespace: real listeners named k3s-agent,
  cilium-agent and kube-proxy, the real ``ss -ltnp`` and /proc, only systemctl
  standing in (it names the listener's pid as the unit's main process).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from components import verify
from components.k3s import render_node_config
from components.scripts import ScriptValue, render
from stacks.checks import PlannedCheck
from stacks.config import StackConfig
from stacks.features import resolve
from tests.components.test_verify_scripts import assert_cli, lab, planned
from tests.shell import executable, run_script
from tests.verification.test_kpr_integrity import captured_cmdline

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "verification" / "fixtures"
# The retitled K3s server of the fixtures: its pid and when it started (proc_stat_k3s_server.txt).
PID = 11246
BTIME = 1796229499
STARTED = 1796248160
SECRET = "hunter2-not-for-the-state"

FAKE_SYSTEMCTL = r"""#!/usr/bin/env bash
# `systemctl show -p <Property> --value <unit>`: the file $FAKE_SYSTEMD/<unit>.<Property>, MainPID 0 without one.
[[ $1 == show && $2 == -p && $4 == --value ]] || { echo "fake systemctl: unexpected $*" >&2; exit 9; }
file="$FAKE_SYSTEMD/$5.$3"
if [[ -f $file ]]; then cat "$file"; elif [[ $3 == MainPID ]]; then echo 0; fi
"""
FAKE_SS = r"""#!/usr/bin/env bash
[[ $* == -ltnp ]] || { echo "fake ss: unexpected $*" >&2; exit 9; }
[[ -n ${FAKE_SS_ERROR:-} ]] && { echo "$FAKE_SS_ERROR" >&2; exit 1; }
cat "$FAKE_SS_OUTPUT"
"""
FAKE_CURL = r"""#!/usr/bin/env bash
printf '%s\n' "${*: -1}" >>"$FAKE_CURL_LOG"
if [[ -n ${FAKE_API_CODE:-} ]]; then printf '%s' "$FAKE_API_CODE"; exit 0; fi
echo "curl: (7) Failed to connect to 127.0.0.1 port 6444 after 0 ms: Couldn't connect to server" >&2
printf '000'
exit 7
"""


def sample(name: str) -> str:
    lines = (FIXTURES / name).read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


def execstart(argv: str, pid: int = PID) -> str:
    """``systemctl show -p ExecStart --value`` as systemd prints it (the record of the main process)."""
    return (
        f"{{ path=/usr/local/bin/k3s ; argv[]={argv} ; ignore_errors=no ; start_time=[Wed 2026-12-02 21:49:20 UTC] "
        f"; stop_time=[n/a] ; pid={pid} ; code=(null) ; status=0/0 }}\n"
    )


class Node:
    """A node's file system for the collector: proc, systemd units, K3s config, stand-in commands."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.systemd = tmp / "systemd"
        self.proc = tmp / "proc"
        self.config = tmp / "etc" / "rancher" / "k3s" / "config.yaml"
        for path in (self.bin, self.systemd, self.proc, self.config.parent):
            path.mkdir(parents=True, exist_ok=True)
        executable(self.bin / "systemctl", FAKE_SYSTEMCTL)
        executable(self.bin / "ss", FAKE_SS)
        executable(self.bin / "curl", FAKE_CURL)
        (self.proc / "stat").write_text(f"cpu  1 2 3 4\nbtime {BTIME}\n")
        self.env = {
            "FAKE_SYSTEMD": str(self.systemd),
            "FAKE_SS_OUTPUT": str(tmp / "ss.txt"),
            "FAKE_CURL_LOG": str(tmp / "curl.log"),
            "FAKE_API_CODE": "401",
        }

    def k3s(self, unit: str, cmdline: str, argv: str, pid: int = PID) -> None:
        """K3s' main process: the captured retitled cmdline and stat, and its unit."""
        (self.proc / str(pid)).mkdir(exist_ok=True)
        (self.proc / str(pid) / "cmdline").write_bytes(captured_cmdline(cmdline))
        (self.proc / str(pid) / "stat").write_text(sample("proc_stat_k3s_server.txt"))
        (self.systemd / f"{unit}.MainPID").write_text(f"{pid}\n")
        (self.systemd / f"{unit}.ExecStart").write_text(execstart(argv, pid))
        env_file = self.tmp / f"{unit}.service.env"
        env_file.write_text(f"K3S_TOKEN='{SECRET}'\n")
        (self.systemd / f"{unit}.EnvironmentFiles").write_text(f"{env_file} (ignore_errors=yes)\n")

    def file(self, path: Path, text: str, mtime: int = STARTED - 60) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (mtime, mtime))

    def ss(self, fixture: str) -> None:
        (self.tmp / "ss.txt").write_text(sample(fixture))

    def collect(self, cfg: StackConfig, check: PlannedCheck, **extra: ScriptValue) -> subprocess.CompletedProcess[str]:
        script, params = verify.collector_script(cfg, check)
        params = {
            **params,
            "CONFIG_PATH": str(self.config),
            "PROC_DIR": str(self.proc),
            "ATTEMPTS": 2,
            "RETRY_DELAY_SECONDS": 0,
            **extra,
        }
        return run_script(self.tmp, script, params, self.env)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def program_config(cfg: StackConfig, name: str) -> str:
    """The /etc/rancher/k3s/config.yaml this program writes on the node."""
    stack_node = next(n for n in cfg.nodes if n.name == name)
    return render_node_config(cfg, resolve(cfg), stack_node, True)


def test_a_kpr_server_as_the_program_installs_it_passes(node: Node) -> None:
    cfg = lab()
    check = planned(cfg, "kpr-integrity/server-1")
    node.k3s("k3s", "proc_cmdline_k3s_server.txt", f"/usr/local/bin/k3s server --token={SECRET}")
    node.file(node.config, program_config(cfg, "server-1"))
    node.ss("ss_kpr_server_cilium_healthz.txt")
    collected = node.collect(cfg, check)

    assert collected.returncode == 0, collected.stderr
    assert SECRET not in collected.stdout
    assert f"### k3s unit=k3s pid={PID} started={STARTED}\n### cmdline\n/usr/local/bin/k3s server\n" in collected.stdout
    assert "### execstart\n/usr/local/bin/k3s\nserver\n<hidden>\n" in collected.stdout
    assert Path(node.env["FAKE_CURL_LOG"]).read_text() == "https://127.0.0.1:6444/version\n"
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 0, result.stderr
    summary = verify.summarize("kpr-integrity", result.stdout)
    assert summary["seen"] == {
        "kubeProxyRunning": False,
        "healthzPort": ["*:10256 held by cilium-agent (pid 11110)"],
        "apiServer": "ok",
    }
    assert summary["figures"]["disableKubeProxy"] == {
        "value": True,
        "source": str(node.config),
        "raw": "disable-kube-proxy: true",
    }


def test_a_server_with_k3s_docs_config_fails_and_leaks_no_token(node: Node) -> None:
    cfg = lab()
    check = planned(cfg, "kpr-integrity/server-1")
    node.k3s("k3s", "proc_cmdline_k3s_server.txt", "/usr/local/bin/k3s server")
    docs = FIXTURES / "k3s_config_docs"
    for source in sorted(docs.rglob("*.yaml")):
        node.file(node.config.parent / source.relative_to(docs), source.read_text())
    node.file(node.config.parent / "config.yaml.d" / "README", "not a drop-in: K3s reads *.yaml and *.yml only\n")
    node.ss("ss_kpr_server_cilium_healthz.txt")
    collected = node.collect(cfg, check)

    assert collected.returncode == 0, collected.stderr
    assert "boop" not in collected.stdout  # the docs' config.yaml holds `token: boop`
    files = [line for line in collected.stdout.splitlines() if line.startswith("### file ")]
    assert [line.split()[2] for line in files] == [
        f"path={node.config}",
        f"path={node.config}.d/test1.yaml",
        f"path={node.config}.d/test2.yaml",
    ]
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "node server-1: check kpr-integrity: expected disable-kube-proxy K3s runs with true, saw not set in the "
        f"config files K3s reads ({node.config}, {node.config}.d/test1.yaml, {node.config}.d/test2.yaml) nor in "
        "its arguments: K3s' default, false; fix: "
    )


def test_a_drop_in_or_an_execstart_flag_overrides_the_program_config(node: Node) -> None:
    cfg = lab()
    check = planned(cfg, "kpr-integrity/server-1")
    node.k3s("k3s", "proc_cmdline_k3s_server.txt", "/usr/local/bin/k3s server")
    node.file(node.config, program_config(cfg, "server-1"))
    node.file(node.config.parent / "config.yaml.d" / "90-local.yml", f"token: {SECRET}\ndisable-kube-proxy: false\n")
    node.ss("ss_kpr_agent_clean.txt")
    collected = node.collect(cfg, check)
    assert SECRET not in collected.stdout
    failed = assert_cli(check, collected.stdout)
    assert failed.returncode == 1
    assert f"saw false from {node.config}.d/90-local.yml (disable-kube-proxy: false)" in failed.stderr

    # A flag in the unit wins over every file (K3s puts the files' values before the arguments).
    node.k3s("k3s", "proc_cmdline_k3s_server.txt", "/usr/local/bin/k3s server --disable-kube-proxy")
    passed = assert_cli(check, node.collect(cfg, check).stdout)
    assert passed.returncode == 0, passed.stderr


def test_the_config_file_is_where_k3s_finds_it(node: Node) -> None:
    cfg = lab()
    check = planned(cfg, "kpr-integrity/server-1")
    elsewhere = node.tmp / "k3s" / "custom.yaml"
    node.file(elsewhere, "disable-kube-proxy: true\n")
    node.k3s("k3s", "proc_cmdline_k3s_server.txt", f"/usr/local/bin/k3s server --config {elsewhere}")
    node.ss("ss_kpr_agent_clean.txt")
    by_flag = node.collect(cfg, check).stdout
    assert f"### config path={elsewhere} source=flag\n### file path={elsewhere} " in by_flag
    assert assert_cli(check, by_flag).returncode == 0

    env_file = node.tmp / "k3s.service.env"
    env_file.write_text(f"K3S_TOKEN='{SECRET}'\nK3S_CONFIG_FILE='{node.config}'\n")
    node.file(node.config, "flannel-backend: none\n")
    by_env = node.collect(cfg, check).stdout
    assert f"### config path={node.config} source=environment\n" in by_env
    assert SECRET not in by_env
    assert assert_cli(check, by_env).returncode == 1


def test_a_config_written_after_k3s_started_is_reported(node: Node) -> None:
    cfg = lab()
    check = planned(cfg, "kpr-integrity/server-1")
    node.k3s("k3s", "proc_cmdline_k3s_server.txt", "/usr/local/bin/k3s server")
    node.file(node.config, program_config(cfg, "server-1"), mtime=STARTED + 120)
    node.ss("ss_kpr_agent_clean.txt")
    result = assert_cli(check, node.collect(cfg, check).stdout)

    assert result.returncode == 1
    assert (
        f"expected K3s config file {node.config} unchanged since K3s started (2026-12-02T21:49:20Z), saw changed at "
        "2026-12-02T21:51:20Z" in result.stderr
    )


def test_an_agent_still_running_k3s_kube_proxy_fails_with_the_restart(node: Node) -> None:
    cfg = lab()
    check = planned(cfg, "kpr-integrity/agent-1")
    node.k3s("k3s-agent", "proc_cmdline_k3s_agent.txt", "/usr/local/bin/k3s agent", pid=11095)
    node.file(node.config, program_config(cfg, "agent-1"))
    node.ss("ss_kpr_agent_embedded_kube_proxy.txt")
    collected = node.collect(cfg, check)
    assert "### k3s unit=k3s-agent pid=11095 " in collected.stdout
    result = assert_cli(check, collected.stdout)

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "node agent-1: check kpr-integrity: expected K3s' embedded kube-proxy not running (disable-kube-proxy), "
        "saw running: 127.0.0.1:10256 held by k3s-agent (pid 11095); 127.0.0.1:10249 held by k3s-agent (pid 11095); "
        "fix: "
    )
    assert "`systemctl restart k3s-agent` on agent-1, then `pulumi up --replace` kube-proxy-cleanup-agent-1" in line


def test_no_k3s_and_no_api_server_fail_the_check_not_the_collection(node: Node) -> None:
    cfg = lab()
    check = planned(cfg, "kpr-integrity/agent-2")
    node.ss("ss_kpr_agent_clean.txt")
    del node.env["FAKE_API_CODE"]
    collected = node.collect(cfg, check)

    assert collected.returncode == 0, collected.stderr
    assert "### k3s unit=none\n" in collected.stdout
    assert f"### config path={node.config} source=default\n" in collected.stdout
    assert len(Path(node.env["FAKE_CURL_LOG"]).read_text().splitlines()) == 2  # ATTEMPTS
    result = assert_cli(check, collected.stdout)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(
        "node agent-2: check kpr-integrity: expected K3s' main process (MainPID of the k3s or k3s-agent unit) running"
    )
    assert lines[1].startswith(
        "node agent-2: check kpr-integrity: expected API server 127.0.0.1:6444 from this node answering (any HTTP "
        "status), saw no answer after 2 attempts (curl: (7) Failed to connect to 127.0.0.1 port 6444 after 0 ms: "
        "Couldn't connect to server); fix: "
    )


def test_ss_that_cannot_list_sockets_fails_the_collection(node: Node) -> None:
    cfg = lab()
    node.env["FAKE_SS_ERROR"] = "Cannot open netlink socket: Protocol not supported"
    result = node.collect(cfg, planned(cfg, "kpr-integrity/agent-1"))

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "verify-kpr-node: node agent-1: ss -ltnp failed: Cannot open netlink socket: Protocol not supported"
    )


# --- live: real sockets, real ss and /proc, in a network namespace -----------------------------------

LISTENER = r'''
"""Listen on $LISTEN ("127.0.0.1:6444 [::]:10256 ..."); answer HTTP 401 on $HTTP_PORT; touch $READY."""
import os, socket, threading, time

def serve(sock):
    while True:
        conn, _ = sock.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()

SOCKETS = []
for spec in os.environ["LISTEN"].split():
    host, port = spec.rsplit(":", 1)
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "[::]" else 1)
    sock.bind((host.strip("[]"), int(port)))
    sock.listen(128)
    if port == os.environ.get("HTTP_PORT"):
        threading.Thread(target=serve, args=(sock,), daemon=True).start()
    SOCKETS.append(sock)
open(os.environ["READY"], "w").close()
time.sleep(300)
'''

Netns = Callable[..., int]


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[tuple[str, Netns]]:
    """A network namespace and a way to start a listener in it named ``name`` with argv ``argv``."""
    if os.geteuid() != 0:
        pytest.fail("this test creates a network namespace: run it as root")
    assert shutil.which("ip") and shutil.which("ss"), "iproute2 (ip, ss) is not installed"
    name = f"kpr-test-{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    python = os.path.realpath(sys.executable)
    (tmp_path / "listener").mkdir()
    started: list[subprocess.Popen[bytes]] = []

    def start(process: str, argv0: str, arg: str, listen: str, http_port: int | None = None) -> int:
        workdir = tmp_path / "listener" / process
        workdir.mkdir()
        (workdir / arg).write_text(LISTENER)
        link = workdir / process  # ss names the file executed: the symlink's name
        link.symlink_to(python)
        ready = workdir / "ready"
        env = {
            "LISTEN": listen,
            "HTTP_PORT": str(http_port or ""),
            "READY": str(ready),
            "PATH": "/usr/bin:/bin",
            # argv[0] is K3s' path, not Python's: Python cannot find its own files from it.
            "PYTHONHOME": sys.base_prefix,
        }
        proc = subprocess.Popen(
            ["ip", "netns", "exec", name, "bash", "-c", f'exec -a {argv0} "$0" {arg}', str(link)],
            cwd=workdir,
            env=env,
        )
        started.append(proc)
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, f"listener {process} did not start"
            time.sleep(0.05)
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == process
        return proc.pid

    try:
        yield name, start
    finally:
        for proc in started:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "delete", name], check=False)


def live_collect(tmp_path: Path, ns: str, cfg: StackConfig, check: PlannedCheck, pid: int) -> str:
    node = Node(tmp_path / "node")
    (node.bin / "ss").unlink()
    (node.bin / "curl").unlink()
    (node.systemd / "k3s-agent.MainPID").write_text(f"{pid}\n")
    (node.systemd / "k3s-agent.ExecStart").write_text(execstart("/usr/local/bin/k3s agent", pid))
    node.file(node.config, program_config(cfg, check.node or ""), mtime=int(time.time()) - 3600)
    script, params = verify.collector_script(cfg, check)
    # No TLS in the stand-in: the real collector asks https://127.0.0.1:6444/version.
    params = {**params, "CONFIG_PATH": str(node.config), "API_URL": "http://127.0.0.1:6444/version", "ATTEMPTS": 2}
    path = node.tmp / "verify-kpr-node.sh"
    path.write_text(render(script, params))
    env = {"PATH": f"{node.bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "FAKE_SYSTEMD": str(node.systemd)}
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "bash", str(path)], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


K3S_AGENT = "127.0.0.1:6444 127.0.0.1:6443 127.0.0.1:10248 [::]:10250"
CILIUM = "127.0.0.1:9879 127.0.0.1:9890 [::]:4240"


@pytest.mark.root
def test_live_clean_agent_passes(tmp_path: Path, netns: tuple[str, Netns]) -> None:
    ns, start = netns
    pid = start("k3s-agent", "/usr/local/bin/k3s", "agent", K3S_AGENT, http_port=6444)
    start("cilium-agent", "cilium-agent", "listener.py", CILIUM)
    cfg = lab()
    check = planned(cfg, "kpr-integrity/agent-1")
    stdout = live_collect(tmp_path, ns, cfg, check, pid)

    assert f"### k3s unit=k3s-agent pid={pid} " in stdout
    assert "### cmdline\n/usr/local/bin/k3s\nagent\n" in stdout
    result = assert_cli(check, stdout)
    assert result.returncode == 0, (result.stderr, stdout)
    figures = verify.summarize("kpr-integrity", result.stdout)["figures"]
    assert figures["apiServer"]["code"] == "401" and figures["k3s"]["role"] == "agent"


@pytest.mark.root
def test_live_k3s_still_running_its_kube_proxy_fails(tmp_path: Path, netns: tuple[str, Netns]) -> None:
    ns, start = netns
    pid = start(
        "k3s-agent", "/usr/local/bin/k3s", "agent", f"{K3S_AGENT} 127.0.0.1:10256 127.0.0.1:10249", http_port=6444
    )
    start("cilium-agent", "cilium-agent", "listener.py", CILIUM)
    cfg = lab()
    check = planned(cfg, "kpr-integrity/agent-1")
    result = assert_cli(check, live_collect(tmp_path, ns, cfg, check, pid))

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "node agent-1: check kpr-integrity: expected K3s' embedded kube-proxy not running (disable-kube-proxy), saw "
        f"running: 127.0.0.1:10256 held by k3s-agent (pid {pid}); 127.0.0.1:10249 held by k3s-agent (pid {pid}); fix: "
    )
    assert "`systemctl restart k3s-agent` on agent-1, then `pulumi up --replace` kube-proxy-cleanup-agent-1" in line


@pytest.mark.root
def test_live_kube_proxy_of_its_own_fails(tmp_path: Path, netns: tuple[str, Netns]) -> None:
    ns, start = netns
    pid = start("k3s-agent", "/usr/local/bin/k3s", "agent", K3S_AGENT, http_port=6444)
    proxy = start("kube-proxy", "/usr/local/bin/kube-proxy", "listener.py", "[::]:10256 127.0.0.1:10249")
    cfg = lab()
    check = planned(cfg, "kpr-integrity/agent-1")
    result = assert_cli(check, live_collect(tmp_path, ns, cfg, check, pid))

    assert result.returncode == 1
    health, metrics = result.stderr.splitlines()
    assert health.startswith(
        "node agent-1: check kpr-integrity: expected kube-proxy's health port 10256 free, or held by cilium-agent, "
        f"saw *:10256 held by kube-proxy (pid {proxy}); fix: a kube-proxy of its own"
    )
    assert metrics.startswith(
        "node agent-1: check kpr-integrity: expected kube-proxy not running, saw running: "
        f"127.0.0.1:10249 held by kube-proxy (pid {proxy}); fix: "
    )
