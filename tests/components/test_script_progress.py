"""Long remote scripts say what they wait for at least once a minute (issue 11 item 8).

pulumi-command sends no SSH keepalives, so a script that is silent for
minutes can be cut by a NAT or bastion idle timeout. Each long wait prints a
progress line on stderr every PROGRESS_SECONDS (default below a minute);
stdout, which may be parsed or secret, is untouched. The scripts run for real
against stub tools whose waits take about a second, with PROGRESS_SECONDS=0.2,
so that each test is fast and still sees several progress lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from components import scripts
from components.scripts import ScriptValue
from tests.components.test_cilium import FAKE_KUBECTL, LISTING
from tests.components.test_k3s_scripts import TOKEN, Sandbox, make_config
from tests.shell import lint

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "verification" / "fixtures"
FAST = 0.2
# Scripts with a wait that can last minutes.
LONG_SCRIPTS = (
    "k3s-install",
    "restart-datapath-pods",
    "verify-connectivity-test",
    "verify-smoke-pods",
    "verify-benchmark",
    "verify-probes",
)


def executable(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o755)
    return path


def run(
    name: str, params: dict[str, ScriptValue], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    script = scripts.render(name, {"PROGRESS_SECONDS": FAST, **params})
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def progress_lines(stderr: str, what: str) -> list[str]:
    return [line for line in stderr.splitlines() if "still waiting for" in line and what in line]


@pytest.mark.parametrize("name", LONG_SCRIPTS)
def test_default_progress_interval_is_below_the_usual_idle_timeouts(name: str, tmp_path: Path) -> None:
    rendered = scripts.render(name)
    assert re.search(r'^: "\$\{PROGRESS_SECONDS:=(\d+)\}"$', rendered, flags=re.MULTILINE)
    interval = int(re.findall(r'^: "\$\{PROGRESS_SECONDS:=(\d+)\}"$', rendered, flags=re.MULTILINE)[0])
    assert 0 < interval < 60
    lint(rendered, tmp_path, f"{name}.sh")
    lint(scripts.template(name), tmp_path, f"{name}.template.sh")


# --- verify-connectivity-test: streamed, with progress on stderr ---------------------------------


def slow_cilium(tmp_path: Path, fixture: str, first_line: str = "first line") -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "cilium", f"#!/bin/sh\necho '{first_line}'\nsleep 1.5\ncat {FIXTURES / fixture}\n")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_connectivity_test_reports_progress_on_stderr_and_keeps_stdout_for_the_parser(tmp_path: Path) -> None:
    env = slow_cilium(tmp_path, "connectivity_success_cli_0.18.txt")
    result = run("verify-connectivity-test", {"TIMEOUT_SECONDS": 30}, env)
    assert result.returncode == 0, result.stderr
    assert len(progress_lines(result.stderr, "cilium connectivity test")) >= 3
    assert result.stdout == "first line\n" + (FIXTURES / "connectivity_success_cli_0.18.txt").read_text()
    assert "still waiting" not in result.stdout
    judged = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "verification", "connectivity-test", "--node", "server-1",
         "--expect", '{"minTests": 1}'],
        input=result.stdout, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert judged.returncode == 0, judged.stderr


def test_connectivity_test_output_is_streamed_not_held(tmp_path: Path) -> None:
    env = slow_cilium(tmp_path, "connectivity_success_cli_0.18.txt", first_line="Running tests")
    script = scripts.render("verify-connectivity-test", {"TIMEOUT_SECONDS": 30, "PROGRESS_SECONDS": FAST})
    started = time.monotonic()
    with subprocess.Popen(
        ["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **env},
    ) as process:
        assert process.stdout is not None
        first = process.stdout.readline()
        seen_after = time.monotonic() - started
        still_running = process.poll() is None
        process.communicate(timeout=60)
    assert first == "Running tests\n"
    assert still_running and seen_after < 1.4, "the first line must arrive while the test still runs"


def test_connectivity_test_timeout_still_fails_clearly(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "cilium", "#!/bin/sh\necho 'running...'\nexec sleep 30\n")
    started = time.monotonic()
    result = run("verify-connectivity-test", {"TIMEOUT_SECONDS": 1}, {"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 1
    assert "did not finish within 1s" in result.stderr
    assert result.stdout == "running...\n"
    assert time.monotonic() - started < 20


# --- restart-datapath-pods -----------------------------------------------------------------------


SLOW_KUBECTL = """#!/usr/bin/env bash
# Rollout waits of the cilium DaemonSet and of default/web take a second; everything else is the fake.
case " $* " in
  *" --watch=false "*) ;;
  *" rollout status daemonset/cilium "* | *" rollout status deployment/web "*) sleep 1 ;;
esac
exec "$FAKE_DIR/kubectl" "$@"
"""


def test_restart_script_says_which_rollouts_it_waits_for(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    executable(fake / "kubectl", FAKE_KUBECTL)
    slow = executable(fake / "slow-kubectl", SLOW_KUBECTL)
    (fake / "listing").write_text(LISTING)
    result = run("restart-datapath-pods", {"KUBECTL": str(slow), "TIMEOUT_SECONDS": 30}, {"FAKE_DIR": str(fake)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "restarted=4 ready=4 not_ready=0 skipped=2\n"
    assert len(progress_lines(result.stderr, "the cilium DaemonSet to roll out")) >= 2
    waiting = progress_lines(result.stderr, "rollouts")
    assert waiting and all("default/deployment/web" in line for line in waiting)
    assert not [line for line in waiting if "kube-system/deployment/coredns" in line]


# --- k3s-install: the API server wait ------------------------------------------------------------


def test_api_server_wait_reports_progress_and_stays_bounded(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    (sandbox.root / "api-down").touch()
    script = sandbox.install_script(make_config(), "server-1", API_READY_TIMEOUT=1, PROGRESS_SECONDS=FAST)
    started = time.monotonic()
    result = sandbox.run(script, stdin=TOKEN)
    assert result.returncode == 1
    assert "the API server did not become ready within 1s: connection refused" in result.stderr
    assert len(progress_lines(result.stderr, "the API server")) >= 2
    assert time.monotonic() - started < 20
    # No progress line after the failure: the ticker stops with the wait.
    assert result.stderr.rstrip().splitlines()[-1].startswith("k3s-install: the API server did not become ready")


def test_k3s_start_reports_progress(tmp_path: Path) -> None:
    # systemctl returns once K3s is up (Type=notify): a joining server can take minutes.
    sandbox = Sandbox(tmp_path)
    cfg = make_config()
    assert sandbox.run(sandbox.install_script(cfg, "server-2"), stdin=TOKEN).returncode == 0
    systemctl = sandbox.bin / "systemctl"
    systemctl.write_text(systemctl.read_text().replace("restart|start) ", "restart|start) sleep 1; "))
    result = sandbox.run(sandbox.install_script(cfg, "server-2", PROGRESS_SECONDS=FAST), stdin=TOKEN + "-new")
    assert result.returncode == 0, result.stderr
    assert "action=restarted" in result.stdout
    assert len(progress_lines(result.stderr, "K3s to be installed or (re)started")) >= 2


# --- verification collectors on the first server ------------------------------------------------


def slow_tool(tmp_path: Path, name: str, body: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    executable(bin_dir / name, f"#!/usr/bin/env bash\n{body}\n")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_smoke_pods_rollout_wait_reports_progress(tmp_path: Path) -> None:
    env = slow_tool(tmp_path, "kubectl", 'case " $* " in *" rollout status "*) sleep 1 ;; esac\necho "$*" >/dev/null')
    params: dict[str, Any] = {"KUBECTL": "kubectl", "NAMESPACE": "k3s-cilium-verify", "DEPLOYMENT": "smoke",
                              "SELECTOR": "app=smoke"}
    result = run("verify-smoke-pods", params, env)
    assert result.returncode == 0, result.stderr
    assert len(progress_lines(result.stderr, "deployment k3s-cilium-verify/smoke to roll out")) >= 2


def test_benchmark_pod_wait_reports_progress(tmp_path: Path) -> None:
    env = slow_tool(
        tmp_path,
        "kubectl",
        'case " $* " in *" wait "*) sleep 1 ;; *" get pods "*) echo client-0 ;;\n'
        '  *" exec "*) echo "THROUGHPUT=1" ;; esac',
    )
    params: dict[str, Any] = {"KUBECTL": "kubectl", "NAMESPACE": "k3s-cilium-verify", "CLIENT_SELECTOR": "app=c",
                              "SERVER_HOST": "10.43.0.254"}
    result = run("verify-benchmark", params, env)
    assert result.returncode == 0, result.stderr
    assert len(progress_lines(result.stderr, "a Ready benchmark client pod")) >= 2


def test_probes_report_progress_while_retrying(tmp_path: Path) -> None:
    env = slow_tool(tmp_path, "curl", "sleep 0.3\necho 'curl: (7) Failed to connect' >&2\nexit 7")
    params: dict[str, Any] = {"PROBES": "localhost-nodeport", "NODE_PORT": 30085, "ATTEMPTS": 4,
                              "RETRY_DELAY_SECONDS": 0}
    result = run("verify-probes", params, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("probe=localhost-nodeport target=127.0.0.1:30085 result=fail")
    assert len(progress_lines(result.stderr, "probe localhost-nodeport")) >= 2
