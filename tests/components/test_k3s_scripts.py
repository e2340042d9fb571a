"""The K3sCluster shell scripts: lint every template and rendering, and run them for real.

Preflight runs unchanged on this machine, through the exact command line
Pulumi would send, and the test asserts what this host really is. The
install and uninstall scripts run against a sandbox: their host paths are
parameters, and stub `curl`/`systemctl`/`ip`/`k3s` on PATH record what the
scripts asked for, so idempotence and the restart decisions are exercised
on real bash without touching this machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import k3s, scripts
from components.remote import bundle, command_line, script
from stacks.config import StackConfig, parse
from stacks.features import resolve
from tests.shell import lint

SCRIPTS = ("preflight", "k3s-install", "k3s-uninstall", "kubeconfig", "k3s-token")


def make_config(**extra: Any) -> StackConfig:
    return parse({
        "nodes": [
            {"name": "server-1", "host": "10.0.1.1", "role": "server"},
            {"name": "server-2", "host": "10.0.1.2", "role": "server"},
            {"name": "agent-1", "host": "10.0.2.1", "role": "agent", "labels": {"tier": "edge"},
             "taints": ["dedicated=edge:NoSchedule"]},
        ],
        **extra,
    })


def rendered_variants() -> list[tuple[str, str]]:
    """Every script as the component renders it, for every role and token mode."""
    cfg = make_config(tier="extreme")
    features = resolve(cfg)
    out = []
    for node in cfg.nodes:
        out.append((f"preflight-{node.name}", scripts.render("preflight", k3s.preflight_params(cfg, features, node))))
        owner = k3s.install_resource_name("k3s", node)
        out.append((f"uninstall-{node.name}", scripts.render("k3s-uninstall", k3s.uninstall_params(node, owner))))
        for configured in (True, False):
            params = k3s.install_params(cfg, features, node, configured, owner)
            out.append((f"install-{node.name}-{configured}", scripts.render("k3s-install", params)))
    out.append(("kubeconfig", scripts.render("kubeconfig", k3s.kubeconfig_params())))
    out.append(("k3s-token", scripts.render("k3s-token", {"SERVER_TOKEN_PATH": k3s.SERVER_TOKEN_PATH})))
    return out


@pytest.mark.parametrize("name", SCRIPTS)
def test_template_passes_lint(name: str, tmp_path: Path) -> None:
    text = scripts.template(name)
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail\n# @params\n" in text
    lint(text, tmp_path, f"{name}.sh")


@pytest.mark.parametrize(("label", "script"), rendered_variants(), ids=lambda v: v if len(v) < 40 else "")
def test_rendered_script_passes_lint(label: str, script: str, tmp_path: Path) -> None:
    lint(script, tmp_path, f"{label}.sh")


# --- preflight, for real on this host -------------------------------------------------------


def run_command_line(
    command: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command line the way sshd would: through a shell."""
    return subprocess.run(["bash", "-c", command], input=stdin, capture_output=True, text=True, env=env, timeout=60)


def host_kernel() -> tuple[str, tuple[int, int]]:
    match = re.match(r"(\d+)\.(\d+)(\.\d+)?", os.uname().release)
    assert match, os.uname().release
    return match[0], (int(match[1]), int(match[2]))


def host_os() -> str:
    fields: dict[str, str] = {}
    if os.path.exists("/etc/os-release"):
        for line in Path("/etc/os-release").read_text().splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                fields[key] = value.strip("\"'")
    return f"{fields.get('ID') or 'unknown'}-{fields.get('VERSION_ID') or 'unknown'}"


def host_k3s() -> str:
    found = shutil.which("k3s") or ("/usr/local/bin/k3s" if os.access("/usr/local/bin/k3s", os.X_OK) else None)
    if not found:
        return "absent"
    out = subprocess.run([found, "--version"], capture_output=True, text=True).stdout.split()
    return out[2] if len(out) > 2 else "unknown"


def expected_problems(node: str, floors: dict[str, tuple[int, ...]], minimum: tuple[int, ...], reason: str,
                      commands: tuple[str, ...]) -> list[str]:
    """What preflight must report on this very host (kernel, arch, systemd, commands)."""
    version, kernel = host_kernel()
    problems = [f"node {node}: kernel {version} is older than {'.'.join(map(str, floor))} required by {feature}"
                for feature, floor in floors.items() if kernel < floor]
    if not problems and kernel < minimum:
        problems.append(f"node {node}: kernel {version} is older than {'.'.join(map(str, minimum))} "
                        f"required by {reason}")
    if os.uname().machine not in ("x86_64", "amd64", "aarch64", "arm64"):
        problems.append(f"node {node}: architecture {os.uname().machine} is not supported (amd64 or arm64 only)")
    if not os.path.isdir("/run/systemd/system"):
        problems.append(f"node {node}: systemd is not running (no /run/systemd/system); "
                        "K3s is installed as a systemd service")
    problems += [f"node {node}: required command '{cmd}' is not installed" for cmd in commands if not shutil.which(cmd)]
    return problems


# The checks that depend on the host's NIC, firewalld, nm-cloud-setup and SELinux run
# against fake hosts in test_preflight_script.py; here they are switched off.
HOST_INDEPENDENT = {"REQUIRED_COMMANDS": "", "NIC_FEATURES": "", "FIREWALL_PORTS": "", "FIREWALL_SOURCES": ""}


def run_preflight(cfg: StackConfig, node_name: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    features = resolve(cfg)
    node = next(n for n in cfg.nodes if n.name == node_name)
    params = {**k3s.preflight_params(cfg, features, node), **HOST_INDEPENDENT, **overrides}
    stdin = str(bundle(script("preflight", params)))
    return run_command_line(command_line(cfg.ssh_user(node), "preflight"), stdin=stdin)


def facts(stdout: str) -> dict[str, str]:
    return k3s.parse_facts(stdout)


def only_host_problems(stderr: str) -> list[str]:
    """Problems but those of nm-cloud-setup, SELinux and firewalld, which this host may or may not have."""
    unrelated = ("nm-cloud-setup", "SELinux", "firewalld")
    return [line for line in stderr.splitlines() if not any(word in line for word in unrelated)]


@pytest.mark.parametrize("tier", ["baseline", "kpr", "performance", "extreme"])
def test_preflight_reports_this_host_truthfully(tier: str) -> None:
    cfg = make_config(tier=tier)
    features = resolve(cfg)
    result = run_preflight(cfg, "agent-1")
    seen = facts(result.stdout)
    assert {key: seen[key] for key in ("kernel", "os", "arch", "k3s")} == {
        "kernel": os.uname().release, "os": host_os(), "arch": os.uname().machine, "k3s": host_k3s()}
    expected = expected_problems("agent-1", features.kernel_needs(), features.base_kernel(),
                                 features.min_kernel_reason(), ())
    assert only_host_problems(result.stderr) == expected
    if expected:
        assert result.returncode == 1


def test_preflight_names_node_feature_and_kernel_when_too_old() -> None:
    result = run_preflight(make_config(), "agent-1", KERNEL_FLOORS="bpfHostRouting=99.0\nbigTcp=98.7\n")
    version, _ = host_kernel()
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert f"node agent-1: kernel {version} is older than 99.0 required by bpfHostRouting" in lines
    assert f"node agent-1: kernel {version} is older than 98.7 required by bigTcp" in lines
    # The stack-wide floor is not repeated when a feature already failed.
    assert not any("required by Cilium" in line for line in lines)
    # The facts are still printed, so the failure shows what the host runs.
    assert facts(result.stdout)["kernel"] == os.uname().release


def test_preflight_stack_minimum_kernel() -> None:
    result = run_preflight(make_config(), "server-2", KERNEL_FLOORS="", MIN_KERNEL="99.0", MIN_KERNEL_REASON="X")
    version, _ = host_kernel()
    assert result.returncode == 1
    assert f"node server-2: kernel {version} is older than 99.0 required by X" in result.stderr.splitlines()


def test_preflight_kernel_equal_to_floor_passes_the_kernel_check() -> None:
    _, (major, minor) = host_kernel()
    result = run_preflight(make_config(), "agent-1", KERNEL_FLOORS=f"netkit={major}.{minor}\n",
                           MIN_KERNEL=f"{major}.{minor}")
    assert not any("kernel" in line for line in result.stderr.splitlines())


def test_preflight_reports_missing_commands() -> None:
    result = run_preflight(make_config(), "agent-1",
                           REQUIRED_COMMANDS="bash the shell\nno-such-command-k3s-test the test\n")
    assert result.returncode == 1
    assert ("node agent-1: required command 'no-such-command-k3s-test' is not installed (needed by the test)"
            in result.stderr.splitlines())
    assert "'bash'" not in result.stderr


# --- install: a sandbox with stub tools ----------------------------------------------------------

STUB_CURL = """#!/bin/sh
# Stub curl: "download" an installer that records its environment.
out=""
while [ $# -gt 0 ]; do
  case "$1" in -o) out=$2; shift ;; esac
  shift
done
[ -f "$SANDBOX/offline" ] && exit 7
cat >"$out" <<'INSTALLER'
#!/bin/sh
set -e
echo "installer version=$INSTALL_K3S_VERSION exec=$INSTALL_K3S_EXEC force=$INSTALL_K3S_FORCE_RESTART" >>"$SANDBOX/calls"
unit=k3s; uninstaller=k3s-uninstall.sh
[ "$INSTALL_K3S_EXEC" = agent ] && unit=k3s-agent && uninstaller=k3s-agent-uninstall.sh
bin_dir=$(dirname "$FAKE_K3S_BIN")
mkdir -p "$bin_dir" "$FAKE_SYSTEMD_DIR"
printf '#!/bin/sh\\nexec "$SANDBOX/fake-k3s" %s "$@"\\n' "$INSTALL_K3S_VERSION" >"$FAKE_K3S_BIN"
chmod +x "$FAKE_K3S_BIN"
# As the real one: stops K3s, removes what the installer put in place, /etc/rancher/k3s and the data directory.
cat >"$bin_dir/$uninstaller" <<UNINSTALL
#!/bin/sh
echo "$uninstaller" >>"\\$SANDBOX/calls"
rm -f "\\$SANDBOX/active" "$FAKE_SYSTEMD_DIR/$unit.service" "$FAKE_K3S_BIN" "\\$0"
rm -rf "\\$FAKE_CONFIG_DIR" "\\$FAKE_DATA_DIR"
UNINSTALL
chmod +x "$bin_dir/$uninstaller"
echo "[Service]" >"$FAKE_SYSTEMD_DIR/$unit.service"
# A cancelled `pulumi up`: the script is told to stop while the installer runs.
if [ -f "$SANDBOX/cancel" ]; then kill -TERM "$PPID"; exit 143; fi
# K3s runs: its data directory, and the node password its uninstall script keeps.
touch "$SANDBOX/active"
mkdir -p "$FAKE_DATA_DIR/agent" "$FAKE_CONFIG_DIR/../node"
echo "node password" >"$FAKE_CONFIG_DIR/../node/password"
if [ -f "$SANDBOX/installer-fails" ]; then echo "Job for $unit.service failed." >&2; exit 3; fi
INSTALLER
"""

FAKE_K3S = """#!/bin/sh
version=$1; shift
case "$1" in
  --version) echo "k3s version $version (0000000)"; echo "go version go1.24" ;;
  kubectl)
    echo "$*" >>"$SANDBOX/calls"
    if [ -f "$SANDBOX/api-down" ]; then echo "connection refused" >&2; exit 1; fi
    echo ok ;;
esac
"""

STUB_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >>"$SANDBOX/calls"
case "$1" in
  is-active) [ -f "$SANDBOX/active" ] ;;
  restart|start) touch "$SANDBOX/active" ;;
esac
"""


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        for name, body in (("curl", STUB_CURL), ("systemctl", STUB_SYSTEMCTL)):
            self._executable(self.bin / name, body)
        self._executable(root / "fake-k3s", FAKE_K3S)
        # /usr/local/bin and the systemd unit directory are on every host; /etc/rancher/k3s and the
        # K3s data directory are not before K3s (or a step before it) puts something there.
        self.k3s_bin = root / "usr-local-bin" / "k3s"
        self.k3s_bin.parent.mkdir()
        self.systemd = root / "systemd"
        self.systemd.mkdir()
        (root / "etc").mkdir()
        self.etc = root / "etc" / "rancher" / "k3s"
        self.data = root / "var" / "lib" / "rancher" / "k3s"
        # The cluster CA a server has once K3s runs; the install prints its fingerprint.
        self.server_ca = root / "server-ca.crt"
        self.server_ca.write_text("sandbox cluster CA\n")
        self.ca = "ca=sha256:" + hashlib.sha256(self.server_ca.read_bytes()).hexdigest()
        self.env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "SANDBOX": str(root),
                    "FAKE_K3S_BIN": str(self.k3s_bin), "FAKE_SYSTEMD_DIR": str(self.systemd),
                    "FAKE_CONFIG_DIR": str(self.etc), "FAKE_DATA_DIR": str(self.data)}

    @staticmethod
    def _executable(path: Path, body: str) -> None:
        path.write_text(body)
        path.chmod(0o755)

    def install_script(self, cfg: StackConfig, node_name: str, token_configured: bool = True,
                       **overrides: Any) -> str:
        features = resolve(cfg)
        node = next(n for n in cfg.nodes if n.name == node_name)
        params = {
            **k3s.install_params(cfg, features, node, token_configured, k3s.install_resource_name("k3s", node)),
            "OWNER_MARKER": str(self.etc / "pulumi-owner"),
            "CONFIG_PATH": str(self.etc / "config.yaml"),
            "TOKEN_PATH": str(self.etc / "cluster-token"),
            "SERVERS_CONFIG_MARKER": str(self.etc / "servers-config.sha256"),
            "K3S_BIN": str(self.k3s_bin),
            "SYSTEMD_DIR": str(self.systemd),
            "SERVER_CA": str(self.server_ca),
            "K3S_DATA_DIR": str(self.data),
            **overrides,
        }
        return scripts.render("k3s-install", params)

    def run(self, script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        (self.root / "calls").unlink(missing_ok=True)
        return subprocess.run(["bash", "-c", script], input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=60)

    def calls(self) -> list[str]:
        path = self.root / "calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


TOKEN = "K10sandbox-token::server:secret"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_then_rerun_changes_nothing(sandbox: Sandbox) -> None:
    cfg = make_config()
    script = sandbox.install_script(cfg, "server-1")
    first = sandbox.run(script, stdin=TOKEN)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"role=server k3s=v1.33.3+k3s1 action=installed {sandbox.ca}\n"
    assert "installer version=v1.33.3+k3s1 exec=server force=true" in sandbox.calls()
    assert any(call.startswith("kubectl get --raw /readyz") for call in sandbox.calls())
    config = sandbox.etc / "config.yaml"
    assert config.read_text() == k3s.render_node_config(cfg, resolve(cfg), cfg.servers[0], True)
    assert (sandbox.etc / "cluster-token").read_text() == TOKEN + "\n"
    assert mode(config) == mode(sandbox.etc / "cluster-token") == 0o600
    assert not (sandbox.etc / "servers-config.sha256").exists()  # servers keep no digest

    again = sandbox.run(script, stdin=TOKEN)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"role=server k3s=v1.33.3+k3s1 action=unchanged {sandbox.ca}\n"
    assert not any(c.startswith(("installer", "systemctl restart", "systemctl start")) for c in sandbox.calls())


def test_config_change_restarts_without_reinstalling(sandbox: Sandbox) -> None:
    sandbox.run(sandbox.install_script(make_config(), "server-1"), stdin=TOKEN)
    changed = sandbox.run(sandbox.install_script(make_config(k3s={"disable": ["traefik"]}), "server-1"), stdin=TOKEN)
    assert changed.returncode == 0, changed.stderr
    assert "action=restarted" in changed.stdout.split()
    assert "systemctl restart k3s" in sandbox.calls()
    assert not any(c.startswith("installer") for c in sandbox.calls())


def test_token_change_restarts(sandbox: Sandbox) -> None:
    script = sandbox.install_script(make_config(), "server-2")
    sandbox.run(script, stdin=TOKEN)
    rotated = sandbox.run(script, stdin="K10other-token")
    assert "action=restarted" in rotated.stdout.split()
    assert (sandbox.etc / "cluster-token").read_text() == "K10other-token\n"


def test_version_change_upgrades_in_place(sandbox: Sandbox) -> None:
    sandbox.run(sandbox.install_script(make_config(), "agent-1"), stdin=TOKEN)
    upgraded = sandbox.run(sandbox.install_script(make_config(k3s={"version": "v1.34.1+k3s1"}), "agent-1"),
                           stdin=TOKEN)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout == "role=agent k3s=v1.34.1+k3s1 action=installed\n"
    assert "installer version=v1.34.1+k3s1 exec=agent force=true" in sandbox.calls()


def test_agent_restarts_when_the_servers_config_changes(sandbox: Sandbox) -> None:
    first = sandbox.run(sandbox.install_script(make_config(), "agent-1"), stdin=TOKEN)
    assert first.returncode == 0, first.stderr
    assert not any(c.startswith("kubectl") for c in sandbox.calls())  # agents do not wait for an API server
    # Same agent config, different server config: only the digest differs.
    changed = sandbox.run(sandbox.install_script(make_config(k3s={"disable": ["traefik"]}), "agent-1"), stdin=TOKEN)
    assert changed.stdout == "role=agent k3s=v1.33.3+k3s1 action=restarted\n"
    assert "systemctl restart k3s-agent" in sandbox.calls()
    assert sandbox.run(sandbox.install_script(make_config(k3s={"disable": ["traefik"]}), "agent-1"),
                       stdin=TOKEN).stdout.endswith("action=unchanged\n")


def test_adopts_an_existing_install_of_the_same_version(sandbox: Sandbox) -> None:
    script = sandbox.install_script(make_config(), "server-1")
    sandbox.run(script, stdin=TOKEN)
    (sandbox.etc / "config.yaml").unlink()  # e.g. installed by hand with flags
    (sandbox.root / "active").unlink()
    adopted = sandbox.run(script, stdin=TOKEN)
    assert "action=restarted" in adopted.stdout.split()
    assert not any(c.startswith("installer") for c in sandbox.calls())


def test_stopped_service_is_started(sandbox: Sandbox) -> None:
    script = sandbox.install_script(make_config(), "server-1")
    sandbox.run(script, stdin=TOKEN)
    (sandbox.root / "active").unlink()
    started = sandbox.run(script, stdin=TOKEN)
    assert "action=started" in started.stdout.split()


def test_first_server_without_token_reads_no_stdin(sandbox: Sandbox) -> None:
    result = sandbox.run(sandbox.install_script(make_config(), "server-1", token_configured=False), stdin="ignored")
    assert result.returncode == 0, result.stderr
    assert not (sandbox.etc / "cluster-token").exists()
    assert "token-file" not in (sandbox.etc / "config.yaml").read_text()


def test_missing_token_on_stdin_fails_clearly(sandbox: Sandbox) -> None:
    result = sandbox.run(sandbox.install_script(make_config(), "agent-1"), stdin="")
    assert result.returncode == 1
    assert "expected the cluster token on stdin, got nothing" in result.stderr
    assert not any(c.startswith("installer") for c in sandbox.calls())


def test_api_server_wait_is_bounded(sandbox: Sandbox) -> None:
    (sandbox.root / "api-down").touch()
    result = sandbox.run(sandbox.install_script(make_config(), "server-1", API_READY_TIMEOUT=0), stdin=TOKEN)
    assert result.returncode == 1
    assert "the API server did not become ready within 0s: connection refused" in result.stderr


def test_failed_download_is_reported(sandbox: Sandbox) -> None:
    (sandbox.root / "offline").touch()
    result = sandbox.run(sandbox.install_script(make_config(), "server-1"), stdin=TOKEN)
    assert result.returncode == 1
    assert "could not download the K3s install script from https://get.k3s.io" in result.stderr


# --- install: a failed first install leaves the host as it found it (issue 20) -------------------
# pulumi-command records a command only when its create succeeded: nothing would ever uninstall it.

PUT_BACK = "k3s-install: K3s was not installed on this host before this run: it was put back as it was"


def host_state(sandbox: Sandbox) -> dict[str, tuple[Any, ...]]:
    """Every directory and file of the sandbox host (its stub tools and call log aside): what the
    host holds, with each file's content, mode and modification time."""
    state: dict[str, tuple[Any, ...]] = {}
    for path in sorted(sandbox.root.rglob("*")):
        rel = path.relative_to(sandbox.root)
        if rel.parts[0] == "bin" or rel.name in ("calls", "fake-k3s"):
            continue
        info = path.lstat()
        if path.is_dir():
            state[str(rel)] = ("dir", stat.S_IMODE(info.st_mode))
        else:
            state[str(rel)] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode), info.st_mtime_ns)
    return state


def but_the_node_password(sandbox: Sandbox, state: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """``state`` without the node password K3s wrote when it ran: K3s' own uninstall keeps it, so that a
    retry joins with it instead of being rejected as another host with the same name."""
    assert (sandbox.root / "etc/rancher/node/password").read_text() == "node password\n"
    return {path: value for path, value in state.items() if not path.startswith("etc/rancher/node")}


def prepare_earlier_steps(sandbox: Sandbox) -> None:
    """What other steps put on a host before its first install: registries.yaml, staged images; and
    what an earlier failed run (before issue 20) left behind."""
    sandbox.etc.mkdir(parents=True)
    (sandbox.etc / "registries.yaml").write_text("mirrors: {}\n")
    (sandbox.etc / "registries.yaml").chmod(0o600)
    (sandbox.etc / "pulumi-owner").write_text("k3s-server-old-name\n")
    images = sandbox.data / "agent" / "images"
    images.mkdir(parents=True)
    (images / "k3s-airgap-images-amd64.tar.zst").write_bytes(b"staged images")


def test_a_failed_download_on_a_new_host_leaves_nothing_behind(sandbox: Sandbox) -> None:
    # The first real `pulumi up`: /etc/rancher stayed on the host and destroy ran nothing for it.
    (sandbox.root / "offline").touch()
    before = host_state(sandbox)
    result = sandbox.run(sandbox.install_script(make_config(), "server-1"), stdin=TOKEN)
    assert result.returncode == 1
    assert not (sandbox.root / "etc/rancher").exists()
    assert host_state(sandbox) == before
    lines = result.stderr.splitlines()
    assert lines[-2:] == [PUT_BACK, "k3s-install: could not download the K3s install script from https://get.k3s.io"]


@pytest.mark.parametrize(("node", "uninstaller"), [("server-1", "k3s-uninstall.sh"),
                                                   ("agent-1", "k3s-agent-uninstall.sh")])
def test_a_failed_installer_on_a_new_host_is_uninstalled_and_what_was_there_stays(
    sandbox: Sandbox, node: str, uninstaller: str
) -> None:
    prepare_earlier_steps(sandbox)
    (sandbox.root / "installer-fails").touch()
    before = host_state(sandbox)
    result = sandbox.run(sandbox.install_script(make_config(), node), stdin=TOKEN)
    assert result.returncode == 3, result.stderr  # the installer's own status
    # K3s' uninstall script deleted /etc/rancher/k3s and the data directory: what other steps had put
    # there is back, the same files; what this run wrote is gone, the old owner marker restored.
    assert but_the_node_password(sandbox, host_state(sandbox)) == before
    assert sandbox.calls()[-1] == uninstaller
    unit = "k3s" if node == "server-1" else "k3s-agent"
    assert result.stderr.splitlines()[-2:] == [f"Job for {unit}.service failed.", PUT_BACK]


def test_an_api_server_that_never_answers_on_a_new_host_is_uninstalled(sandbox: Sandbox) -> None:
    (sandbox.root / "api-down").touch()
    before = host_state(sandbox)
    result = sandbox.run(sandbox.install_script(make_config(), "server-1", API_READY_TIMEOUT=0), stdin=TOKEN)
    assert result.returncode == 1
    after = but_the_node_password(sandbox, host_state(sandbox))
    assert after.pop("etc/rancher") == ("dir", 0o700)
    assert after == before  # its data directory (and /var/lib/rancher) is gone too
    assert "k3s-uninstall.sh" in sandbox.calls()
    assert result.stderr.splitlines()[-2:] == [
        f"{PUT_BACK}, but for what K3s wrote there and its own uninstall keeps ({sandbox.root / 'etc/rancher'})",
        "k3s-install: the API server did not become ready within 0s: connection refused"]


def test_a_cancelled_first_install_is_undone_too(sandbox: Sandbox) -> None:
    (sandbox.root / "cancel").touch()
    before = host_state(sandbox)
    result = sandbox.run(sandbox.install_script(make_config(), "agent-1"), stdin=TOKEN)
    assert result.returncode == 143
    assert host_state(sandbox) == before
    assert result.stderr.splitlines()[-1] == PUT_BACK


def test_a_failed_converge_over_an_existing_install_keeps_it(sandbox: Sandbox) -> None:
    assert sandbox.run(sandbox.install_script(make_config(), "server-1"), stdin=TOKEN).returncode == 0
    installed = host_state(sandbox)
    (sandbox.root / "offline").touch()
    upgrade = sandbox.run(sandbox.install_script(make_config(k3s={"version": "v1.34.1+k3s1"}), "server-1"),
                          stdin=TOKEN)
    assert upgrade.returncode == 1
    # The script's own last word (under load bash may add "wait_for: No record of process" after it).
    said = [line for line in upgrade.stderr.splitlines() if line.startswith("k3s-install:")]
    assert said[-1] == "k3s-install: could not download the K3s install script from https://get.k3s.io"
    (sandbox.root / "api-down").touch()
    restart = sandbox.run(sandbox.install_script(make_config(k3s={"disable": ["traefik"]}), "server-1",
                                                 API_READY_TIMEOUT=0), stdin=TOKEN)
    assert restart.returncode == 1
    assert "put back" not in upgrade.stderr + restart.stderr
    assert not any(call.endswith("uninstall.sh") for call in sandbox.calls())
    # K3s is still installed with what the failed runs wrote: the next run converges from there.
    assert sandbox.k3s_bin.exists() and (sandbox.systemd / "k3s.service").exists()
    assert set(host_state(sandbox)) - {"offline", "api-down"} == set(installed)


def test_a_write_that_fails_stops_the_install(sandbox: Sandbox) -> None:
    # Tested in an `if`, where errexit is off: a write that fails must not read as "unchanged".
    (sandbox.root / "not-a-directory").write_text("")
    token_path = sandbox.root / "not-a-directory" / "cluster-token"
    before = host_state(sandbox)
    result = sandbox.run(sandbox.install_script(make_config(), "agent-1", TOKEN_PATH=str(token_path)), stdin=TOKEN)
    assert result.returncode == 1
    assert not any(call.startswith("installer") for call in sandbox.calls())
    assert host_state(sandbox) == before
    assert result.stderr.splitlines()[-2:] == [PUT_BACK, f"k3s-install: could not write {token_path}"]


def test_token_never_reaches_output_or_command_line(sandbox: Sandbox) -> None:
    script = sandbox.install_script(make_config(), "agent-1")
    assert TOKEN not in script
    result = sandbox.run(script, stdin=TOKEN)
    assert TOKEN not in result.stdout + result.stderr
    assert all(TOKEN not in call for call in sandbox.calls())


# --- uninstall -----------------------------------------------------------------------------

STUB_IP = """#!/bin/sh
# Stub ip: a link exists while $SANDBOX/links/<name> does.
[ "$1" = link ] || exit 2
dev=$4
case "$2" in
  show) [ -e "$SANDBOX/links/$dev" ] ;;
  delete)
    [ -e "$SANDBOX/links/$dev" ] || { echo "Cannot find device \\"$dev\\"" >&2; exit 1; }
    rm -f "$SANDBOX/links/$dev"
    echo "ip link delete $dev" >>"$SANDBOX/calls"
    # cilium_host and cilium_net are the two ends of one veth pair.
    case "$dev" in
      cilium_host) rm -f "$SANDBOX/links/cilium_net" ;;
      cilium_net) rm -f "$SANDBOX/links/cilium_host" ;;
    esac
    ;;
esac
"""

FAKE_UNINSTALLER = """#!/bin/sh
echo "$(basename "$0")" >>"$SANDBOX/calls"
rm -f "$0"
"""


def uninstall_sandbox(root: Path, role: str, owner: str = "k3s-owner",
                      recorded_owner: str | None = None) -> tuple[str, dict[str, str], dict[str, Path]]:
    (root / "bin").mkdir()
    Sandbox._executable(root / "bin" / "ip", STUB_IP)
    paths = {"bin_dir": root / "usr-local-bin", "globals": root / "bpf" / "tc" / "globals",
             "cilium_dir": root / "bpf" / "cilium", "cni": root / "cni" / "05-cilium.conflist"}
    paths["bin_dir"].mkdir()
    for name in ("k3s-uninstall.sh", "k3s-agent-uninstall.sh"):
        Sandbox._executable(paths["bin_dir"] / name, FAKE_UNINSTALLER)
    paths["globals"].mkdir(parents=True)
    for pin in ("cilium_calls_00123", "cilium_lb4_services_v2", "other_program_map"):
        (paths["globals"] / pin).touch()
    (paths["cilium_dir"] / "devices").mkdir(parents=True)
    (paths["cilium_dir"] / "devices" / "map").touch()
    paths["cni"].parent.mkdir()
    paths["cni"].write_text("{}")
    (root / "links").mkdir()
    for link in ("cilium_host", "cilium_net", "cilium_vxlan", "eth0"):
        (root / "links" / link).touch()
    marker = root / "pulumi-owner"
    if recorded_owner is not None:
        marker.write_text(recorded_owner + "\n")
    params = {**k3s.uninstall_params(next(n for n in make_config().nodes if n.role == role), owner),
              "BIN_DIR": str(paths["bin_dir"]), "BPF_TC_GLOBALS": str(paths["globals"]),
              "BPF_CILIUM_DIR": str(paths["cilium_dir"]), "CILIUM_CNI_CONFIG": str(paths["cni"]),
              "OWNER_MARKER": str(marker)}
    env = {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}", "SANDBOX": str(root)}
    return scripts.render("k3s-uninstall", params), env, paths


@pytest.mark.parametrize(("role", "uninstaller"), [("server", "k3s-uninstall.sh"), ("agent", "k3s-agent-uninstall.sh")])
def test_uninstall_removes_k3s_and_cilium_leftovers_then_is_a_noop(tmp_path: Path, role: str,
                                                                   uninstaller: str) -> None:
    script, env, paths = uninstall_sandbox(tmp_path, role, owner="k3s-owner", recorded_owner="k3s-owner")
    first = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (f"role={role} k3s=removed links_removed=2 bpf_pins_removed=3 cni_config=removed\n")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == uninstaller
    assert sorted(os.listdir(tmp_path / "links")) == ["eth0"]
    assert sorted(os.listdir(paths["globals"])) == ["other_program_map"]
    assert not paths["cilium_dir"].exists() and not paths["cni"].exists()

    second = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout == f"role={role} k3s=absent links_removed=0 bpf_pins_removed=0 cni_config=absent\n"


def test_uninstall_leaves_a_host_another_resource_now_owns(tmp_path: Path) -> None:
    # A renamed node: the new resource installed first and recorded itself; the old one is deleted last.
    script, env, paths = uninstall_sandbox(tmp_path, "agent", owner="k3s-agent-old-name",
                                           recorded_owner="k3s-agent-new-name")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "role=agent k3s=kept owner=k3s-agent-new-name\n"
    assert not (tmp_path / "calls").exists()
    assert (paths["bin_dir"] / "k3s-agent-uninstall.sh").exists() and paths["cni"].exists()
    assert sorted(os.listdir(tmp_path / "links")) == ["cilium_host", "cilium_net", "cilium_vxlan", "eth0"]


def test_install_records_its_owner(sandbox: Sandbox) -> None:
    cfg = make_config()
    script = sandbox.install_script(cfg, "agent-1")
    sandbox.run(script, stdin=TOKEN)
    assert (sandbox.etc / "pulumi-owner").read_text() == "k3s-agent-agent-1\n"
    assert "action=unchanged" in sandbox.run(script, stdin=TOKEN).stdout.split()  # the marker is no change


def test_uninstall_on_a_clean_host(tmp_path: Path) -> None:
    params = {**k3s.uninstall_params(make_config().agents[0], "k3s-agent-agent-1"),
              "OWNER_MARKER": str(tmp_path / "none-owner"), "BIN_DIR": str(tmp_path / "none"),
              "BPF_TC_GLOBALS": str(tmp_path / "none"), "BPF_CILIUM_DIR": str(tmp_path / "none" / "cilium"),
              "CILIUM_CNI_CONFIG": str(tmp_path / "none.conflist"), "CILIUM_LINKS": "k3s_test_absent_link"}
    result = run_command_line(scripts.render("k3s-uninstall", params))
    assert result.returncode == 0, result.stderr
    assert "k3s=absent" in result.stdout and "cni_config=absent" in result.stdout


# --- kubeconfig and token readers ------------------------------------------------------------


def sandboxed_kubeconfig_params(tmp_path: Path, kubeconfig: Path) -> dict[str, scripts.ScriptValue]:
    return {
        **k3s.kubeconfig_params(),
        "KUBECONFIG_PATH": str(kubeconfig),
        "CLIENT_CERT": str(tmp_path / "client-admin.crt"),
        "K3S_BIN": str(tmp_path / "bin" / "k3s"),
    }


@pytest.mark.parametrize(("name", "param"), [("kubeconfig", "KUBECONFIG_PATH"), ("k3s-token", "SERVER_TOKEN_PATH")])
def test_readers_print_the_file_or_fail_clearly(tmp_path: Path, name: str, param: str) -> None:
    def params(target: Path) -> dict[str, scripts.ScriptValue]:
        return sandboxed_kubeconfig_params(tmp_path, target) if name == "kubeconfig" else {param: str(target)}

    target = tmp_path / "file"
    target.write_text("content-line\n")
    ok = run_command_line(scripts.render(name, params(target)))
    assert (ok.returncode, ok.stdout) == (0, "content-line\n")
    missing = run_command_line(scripts.render(name, params(tmp_path / "absent")))
    assert missing.returncode == 1 and "is missing or empty" in missing.stderr and missing.stdout == ""


def stub_tools(tmp_path: Path, kubeconfig: Path, renewed: str) -> tuple[dict[str, str], Path]:
    """``systemctl`` that "restarts K3s" by rewriting the kubeconfig, and a ``k3s`` whose API is ready."""
    calls = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "renewed.yaml").write_text(renewed)
    for tool, body in (
        ("systemctl", f'printf "systemctl %s\\n" "$*" >> {calls}\ncp {tmp_path / "renewed.yaml"} {kubeconfig}\n'),
        ("k3s", f'printf "k3s %s\\n" "$*" >> {calls}\n'),
    ):
        (bin_dir / tool).write_text(f"#!/usr/bin/env bash\n{body}")
        (bin_dir / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


@pytest.mark.parametrize(("age_days", "renews"), [(10, False), (274, False), (275, True), (400, True)])
def test_kubeconfig_renews_the_client_certificate_by_restarting_k3s_when_due(
    tmp_path: Path, age_days: int, renews: bool
) -> None:
    kubeconfig = tmp_path / "k3s.yaml"
    kubeconfig.write_text("old-kubeconfig\n")
    cert = tmp_path / "client-admin.crt"
    cert.write_text("certificate")
    issued = cert.stat().st_mtime - age_days * 86400
    os.utime(cert, (issued, issued))
    env, calls = stub_tools(tmp_path, kubeconfig, "renewed-kubeconfig\n")
    script = scripts.render("kubeconfig", sandboxed_kubeconfig_params(tmp_path, kubeconfig))
    lint(script, tmp_path, "kubeconfig.sh")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    logged = calls.read_text().splitlines() if calls.exists() else []
    if renews:
        assert result.stdout == "renewed-kubeconfig\n"
        assert logged[0] == "systemctl restart k3s" and logged[1].startswith("k3s kubectl get --raw /readyz")
        assert f"is {age_days} days old; restarting k3s" in result.stderr
    else:
        assert (result.stdout, logged) == ("old-kubeconfig\n", [])


# --- k3s-node-deregister -------------------------------------------------------------------------


# More in test_deregister_script.py (bounded, skips when the API is gone).


def test_deregister_without_k3s_is_a_no_op(tmp_path: Path) -> None:
    script = scripts.render("k3s-node-deregister", {"NODE_NAME": "agent-2", "K3S_BIN": str(tmp_path / "absent")})
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0
    assert "nothing to remove for node agent-2" in result.stderr

