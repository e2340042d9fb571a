"""The real Pulumi engine, driven like a user would, on a copy of the project.

The CLI, the language host and the provider plugins come from ``lab/toolchain.sh build``
(a cache outside git); ``lab/toolchain.sh env --test`` gives the environment that runs them
offline: the lab ``PULUMI_HOME`` with the plugins installed, no update check, no plugin
downloads, and a file backend in a temporary directory (``PULUMI_BACKEND_URL`` wins over
Pulumi.yaml's ``backend.url``). Without the toolchain every engine test FAILS with the command
that builds it; they are never skipped.

Two of the plugins are the lab's own, because the Go proxy refuses upstream's: the language host
(lab/langhost) and the command provider (lab/command-provider). ``COMMAND_PROVIDER`` says so,
and the session's header prints it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = ROOT / "lab" / "toolchain.sh"
BUILD_HINT = f"build the engine toolchain first: {TOOLCHAIN.relative_to(ROOT)} build tests   (cold: ~20 min on 2 cores)"
PASSPHRASE = "engine-test passphrase, not a real one"
# Secrets whose plaintext must never appear in output, state or stack files.
TOKEN_SENTINEL = "k3stoken-sentinel-0123456789abcdef0123456789abcdef"
# Which command provider the engine runs here (the real one is not served by the Go proxy).
COMMAND_PROVIDER = "lab implementation, lab/command-provider"
# What the lab provider logs once per run, so that no output can pass for the real provider's.
COMMAND_PROVIDER_LINE = "command provider: lab implementation, lab/command-provider"
# Parts of the copy the engine does not need (the virtualenv is linked, not copied).
IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")


def toolchain_env() -> dict[str, str]:
    """The environment `lab/toolchain.sh env --test` prints, applied to ours."""
    result = subprocess.run(
        ["bash", str(TOOLCHAIN), "env", "--test"], capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        pytest.fail(f"{TOOLCHAIN} env failed ({result.stderr.strip()}); {BUILD_HINT}")
    env = dict(os.environ)
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            env[key] = value
    return env


def toolchain_bin(env: dict[str, str]) -> Path:
    return Path(env["PATH"].split(os.pathsep)[0])


def engine_environment() -> dict[str, str]:
    """The toolchain's environment, checked."""
    env = toolchain_env()
    bin_dir = toolchain_bin(env)
    providers = bin_dir.parent / "providers"
    wanted = [
        bin_dir / "pulumi",
        bin_dir / "pulumi-language-python",
        bin_dir / "pulumi-language-python-exec",
        providers / "pulumi-resource-command",
        providers / "pulumi-resource-kubernetes",
    ]
    missing = [str(path) for path in wanted if not path.is_file()]
    if missing:
        pytest.fail(f"the engine toolchain lacks {', '.join(missing)}: {BUILD_HINT}")
    if not (ROOT / ".venv" / "bin" / "python").is_file():
        pytest.fail("the project's .venv is missing: run ./run-tests.sh (it creates it)")
    env["PULUMI_CONFIG_PASSPHRASE"] = PASSPHRASE
    # No colour codes or progress rewriting in captured output.
    env["NO_COLOR"] = "1"
    env.pop("PULUMI_ACCESS_TOKEN", None)
    return env


# What the session's engine tests ran against, for the summary at the end of the run.
USED: dict[str, str] = {}


@pytest.fixture(scope="session")
def engine_env() -> dict[str, str]:
    env = engine_environment()
    providers = toolchain_bin(env).parent / "providers"
    USED.update(
        {
            "pulumi CLI": subprocess.run(["pulumi", "version"], env=env, capture_output=True, text=True).stdout.strip(),
            "language host": "lab/langhost (ours)",
            "command provider": f"{COMMAND_PROVIDER} ({providers / 'pulumi-resource-command'})",
            "kubernetes provider": str(providers / "pulumi-resource-kubernetes"),
        }
    )
    return env


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every run of the engine tests says what it ran against."""
    if USED:
        terminalreporter.section("engine tests ran against")
        for what, which in USED.items():
            terminalreporter.write_line(f"{what}: {which}")


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Project:
    """A copy of the repository in a temporary directory, with its own file backend."""

    dir: Path
    backend: Path
    env: dict[str, str]
    home: Path
    log: list[Result] = field(default_factory=list)

    def run(self, script: str, *, check: bool = True, timeout: int = 300) -> Result:
        """Run a shell command line in the project as a user would type it."""
        return self._execute(["bash", "-euo", "pipefail", "-c", script], [script], check, None, timeout)

    def pulumi(self, *args: str, check: bool = True, stdin: str | None = None, timeout: int = 300) -> Result:
        return self._execute(["pulumi", *args], ["pulumi", *args], check, stdin, timeout)

    def _execute(self, argv: list[str], recorded: list[str], check: bool, stdin: str | None, timeout: int) -> Result:
        """Run ``argv`` in the project; ``recorded`` is how the log and a failure name it."""
        result = subprocess.run(
            argv,
            cwd=self.dir,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        done = Result(recorded, result.returncode, result.stdout, result.stderr)
        self.log.append(done)
        if check and result.returncode != 0:
            pytest.fail(f"`{' '.join(recorded)}` failed ({result.returncode}):\n{done.output[-6000:]}")
        return done

    def init_stack(self, name: str, stack_file: Path | None = None) -> None:
        """README "First real deploy" steps 4 and 5 (and "Example stacks" for an example)."""
        if stack_file is not None:
            shutil.copy(stack_file, self.dir / f"Pulumi.{name}.yaml")
        self.run(f"pulumi stack init {name} --secrets-provider passphrase")
        self.run(f"pulumi config set --stack {name} --secret sshPrivateKey < {shlex.quote(str(self.key))}")
        self.run(f"pulumi config set --stack {name} --secret k3sToken {TOKEN_SENTINEL}")

    @property
    def key(self) -> Path:
        return self.home / ".ssh" / "id_ed25519"

    def key_body(self) -> str:
        """A line from the middle of the private key: it must never appear anywhere in plaintext."""
        lines = self.key.read_text().splitlines()
        return lines[len(lines) // 2]

    def resources(self, stack: str) -> list[dict[str, Any]]:
        exported = self.pulumi("stack", "export", "--stack", stack).json()
        resources: list[dict[str, Any]] = exported.get("deployment", {}).get("resources") or []
        return resources


def new_project(engine_env: dict[str, str], tmp_path: Path) -> Project:
    """A copy of the repository under ``tmp_path`` with a backend, a home and an SSH key of its own."""
    directory = tmp_path / "k3s-cilium"
    shutil.copytree(ROOT, directory, ignore=IGNORE, symlinks=True)
    for stack_file in directory.glob("Pulumi.*.yaml"):
        # Only the stacks a test creates: a user starts from the files the repository ships,
        # the tests copy them in under the name they use.
        stack_file.unlink()
    (directory / ".venv").symlink_to(ROOT / ".venv")
    backend = tmp_path / "state"
    backend.mkdir()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    env = dict(engine_env)
    env["PULUMI_BACKEND_URL"] = f"file://{backend}"
    # A home of its own: Pulumi.yaml's default backend (file://~/.pulumi-k3s-cilium) would land here.
    env["HOME"] = str(home)
    project = Project(dir=directory, backend=backend, env=env, home=home)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "engine-test", "-f", str(project.key)],
        check=True,
        capture_output=True,
    )
    return project


@pytest.fixture
def project(engine_env: dict[str, str], tmp_path: Path) -> Project:
    return new_project(engine_env, tmp_path)
