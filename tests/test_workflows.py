"""The GitHub Actions workflows: actionlint (with shellcheck on their scripts), structure, and their scripts run.

actionlint is built from its Go module (github.com/rhysd/actionlint) by ``lab/toolchain.sh``
into the toolchain cache (run-tests.sh runs it). It runs shellcheck on every ``run:`` script
itself when shellcheck is on PATH, so the tests insist on shellcheck being there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CACHE = Path(os.environ.get("K3S_CILIUM_CACHE") or Path.home() / ".cache" / "k3s-cilium")
ACTIONLINT = CACHE / "toolchain" / "bin" / "actionlint"
INSTALL_HINT = "run ./run-tests.sh, or lab/toolchain.sh build actionlint, which builds actionlint from its Go module"


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.is_file():
        pytest.fail(f"actionlint is not built: {INSTALL_HINT}")
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (actionlint would silently skip the run: scripts): run ./run-tests.sh")
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", "-oneline", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in document:
        document["on"] = document.pop(True)
    return document


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def step_named(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step for step in steps(workflow) if step.get("name") == name)


# --- actionlint -----------------------------------------------------------------------------------


def test_workflows_exist():
    assert [p.name for p in WORKFLOWS] == ["deploy.yml", "preview.yml"]


def test_actionlint_is_the_pinned_version():
    pinned = re.search(r"^ACTIONLINT_VERSION=(\S+)$", (ROOT / "lab" / "toolchain.sh").read_text(), flags=re.MULTILINE)
    assert pinned is not None
    if not ACTIONLINT.is_file():
        pytest.fail(f"actionlint is not built: {INSTALL_HINT}")
    version = subprocess.run([str(ACTIONLINT), "-version"], capture_output=True, text=True, check=True).stdout
    assert version.splitlines()[0] == f"v{pinned[1]}"


def test_actionlint_passes_every_workflow():
    result = actionlint(*WORKFLOWS)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_actionlint_catches_typos(tmp_path):
    broken = tmp_path / "preview.yml"
    text = (ROOT / ".github" / "workflows" / "preview.yml").read_text()
    for good, bad in (("needs: deployable", "needs: deployabel"), ("github.base_ref", "github.base_reff")):
        assert good in text
        text = text.replace(good, bad)
    broken.write_text(text)
    result = actionlint(broken)
    assert result.returncode == 1, result.stderr
    assert 'needs job "deployabel" which does not exist' in result.stdout
    assert 'property "base_reff" is not defined' in result.stdout


# --- shellcheck on the run: scripts, through actionlint ---------------------------------------------


def run_scripts() -> list[tuple[str, str]]:
    scripts = []
    for path in WORKFLOWS:
        for step in steps(load(path.name)):
            if "run" in step:
                label = f"{path.name}: {step.get('name', step['run'].splitlines()[0])}"
                scripts.append((label, step["run"]))
    return scripts


def test_actionlint_runs_shellcheck_on_the_run_scripts(tmp_path):
    """A shellcheck finding in a run: script fails actionlint (so every script above passed shellcheck)."""
    assert len(run_scripts()) >= 8
    broken = tmp_path / "deploy.yml"
    text = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    good = '.venv/bin/python -m stacks plan "$STACK"'
    assert good in text
    broken.write_text(text.replace(good, ".venv/bin/python -m stacks plan $STACK"))
    result = actionlint(broken)
    assert result.returncode == 1, result.stderr
    assert "shellcheck reported issue in this script: SC2086:" in result.stdout, result.stdout


# --- structure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml"])
def test_actions_are_pinned_to_a_major_version(name):
    for step in steps(load(name)):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+|[0-9a-f]{40})", step["uses"]), step["uses"]


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml"])
def test_permissions_are_minimal(name):
    workflow = load(name)
    assert workflow["permissions"] == {"contents": "read"}
    for job_name, job in workflow["jobs"].items():
        granted = job.get("permissions", {})
        assert set(granted) <= {"contents", "pull-requests"}, job_name
        assert granted.get("contents", "read") == "read", job_name


def test_preview_runs_tests_plan_diff_and_pulumi_preview():
    workflow = load("preview.yml")
    assert set(workflow["on"]) == {"pull_request"}
    jobs = workflow["jobs"]
    assert any(step.get("run", "").endswith("./run-tests.sh") for step in jobs["tests"]["steps"])

    diff = jobs["plan-diff"]
    assert diff["permissions"] == {"contents": "read", "pull-requests": "write"}
    base = next(s for s in diff["steps"] if s.get("with", {}).get("path") == "base")
    assert base["uses"].startswith("actions/checkout@")
    assert base["with"]["ref"] == "${{ github.base_ref }}"
    comment = next(s for s in diff["steps"] if "sticky-pull-request-comment" in s.get("uses", ""))
    assert comment["with"]["path"] == "plan-diff.md" and comment["with"]["header"]

    preview = jobs["pulumi-preview"]
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.deployable.outputs.stacks) }}"
    assert preview["env"]["PULUMI_BACKEND_URL"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert preview["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    pulumi = next(s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert pulumi["uses"] == "pulumi/actions@v6"
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["stack-name"] == "${{ matrix.stack }}"
    assert pulumi["with"]["comment-on-pr"] is True and pulumi["with"]["diff"] is True
    # Every step that needs the secrets is skipped without them.
    for step in preview["steps"][1:]:
        assert "env.PULUMI_CONFIG_PASSPHRASE != ''" in step["if"], step


def test_deploy_runs_pulumi_up_per_stack_in_its_environment():
    workflow = load("deploy.yml")
    assert workflow["on"]["push"] == {"branches": ["main"]}
    assert workflow["on"]["workflow_dispatch"]["inputs"]["stack"]["required"] is True
    up = workflow["jobs"]["up"]
    assert set(up["needs"]) == {"tests", "stacks"}
    assert up["environment"] == "${{ matrix.stack }}"
    assert up["concurrency"] == {"group": "pulumi-up-${{ matrix.stack }}", "cancel-in-progress": False}
    assert up["strategy"]["fail-fast"] is False
    pulumi = next(s for s in up["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert pulumi["uses"] == "pulumi/actions@v6"
    assert pulumi["with"]["command"] == "up" and pulumi["with"]["stack-name"] == "${{ matrix.stack }}"
    assert set(up["env"]) >= {"PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE"}


def test_only_the_preview_skips_checkpoints():
    # A preview persists nothing; an `up` keeps saving its state after every step, so that a
    # runner lost halfway leaves a state that knows what was already done.
    assert load("preview.yml")["jobs"]["pulumi-preview"]["env"]["PULUMI_SKIP_CHECKPOINTS"] == "true"
    deploy = load("deploy.yml")
    for job in deploy["jobs"].values():
        assert "PULUMI_SKIP_CHECKPOINTS" not in job.get("env", {})
        assert all("PULUMI_SKIP_CHECKPOINTS" not in step.get("env", {}) for step in job["steps"])


# --- the scripts, run ---------------------------------------------------------------------------------


def _github_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["GITHUB_OUTPUT"] = str(tmp_path / "github-output")
    env["GITHUB_STEP_SUMMARY"] = str(tmp_path / "step-summary")
    return env


def _checkout(path: Path) -> None:
    """A copy of the project (what actions/checkout gives) that runs the offline plan with our venv."""
    path.mkdir()
    shutil.copytree(ROOT / "stacks", path / "stacks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Pulumi.dev.yaml", path)
    (path / ".venv").mkdir()
    (path / ".venv" / "bin").symlink_to(ROOT / ".venv" / "bin")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", str(path)], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)


def _outputs(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "github-output"
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines)


def test_plan_diff_script_reports_changed_new_removed_and_broken_stacks(tmp_path):
    """The plan-diff step's script, run on a pull request checkout with its base in ./base."""
    pr = tmp_path / "pr"
    _checkout(pr)
    _checkout(pr / "base")
    base_dev = pr / "base" / "Pulumi.dev.yaml"
    base_dev.write_text(base_dev.read_text().replace("k3s-cilium:tier: kpr", "k3s-cilium:tier: baseline"))
    shutil.copy(ROOT / "stacks" / "examples" / "extreme.yaml", pr / "base" / "stacks" / "examples" / "gone.yaml")
    (pr / "Pulumi.broken.yaml").write_text("config:\n  k3s-cilium:tier: turbo\n")
    shutil.copy(ROOT / "Pulumi.dev.yaml", pr / "Pulumi.lab2.yaml")

    script = step_named(load("preview.yml"), "Plan every stack on both sides and diff")["run"]
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=pr,
        env=_github_env(tmp_path, BASE_REF="main"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    comment = (pr / "plan-diff.md").read_text()
    assert comment.startswith("### Offline plans: `python -m stacks plan <stack> --json`\n\nBase `main` at ")
    for example in ("ha-performance", "extreme"):
        assert f"- `{example}`: no change" in comment
    assert "<code>dev</code>: changed (" in comment
    assert '-  "tier": "baseline",' in comment and '+  "tier": "kpr",' in comment
    assert "- `gone`: removed by this pull request" in comment and "<code>gone</code>" not in comment
    assert "<code>broken</code>: plan FAILS (" in comment and "+(plan failed)" in comment
    assert "k3s-cilium:tier: 'turbo'" in comment
    assert (
        "<code>lab2</code>: new in this pull request (" in comment and '+  "apiEndpoint": "192.168.56.10",' in comment
    )
    assert _outputs(tmp_path) == {"failed": "true"}
    assert (tmp_path / "step-summary").read_text() == comment


@pytest.mark.parametrize(
    ("workflow", "step", "inputs", "expected"),
    [
        ("preview.yml", "List Pulumi.<stack>.yaml", {}, ["broken", "dev"]),
        ("deploy.yml", "List Pulumi.<stack>.yaml (or check the requested one)", {"REQUESTED": ""}, ["broken", "dev"]),
        ("deploy.yml", "List Pulumi.<stack>.yaml (or check the requested one)", {"REQUESTED": "dev"}, ["dev"]),
    ],
)
def test_stack_lists_are_the_pulumi_stack_files(tmp_path, workflow, step, inputs, expected):
    if shutil.which("jq") is None:
        pytest.skip("jq is preinstalled on GitHub's runners, not here")
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")
    (tmp_path / "Pulumi.broken.yaml").write_text("config: {}\n")
    (tmp_path / "Pulumi.yaml").write_text("name: x\n")
    script = step_named(load(workflow), step)["run"]
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, env=_github_env(tmp_path, **inputs), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(_outputs(tmp_path)["stacks"]) == expected


def test_deploy_refuses_an_unknown_requested_stack(tmp_path):
    script = step_named(load("deploy.yml"), "List Pulumi.<stack>.yaml (or check the requested one)")["run"]
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        env=_github_env(tmp_path, REQUESTED="../etc"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "::error::no stack file Pulumi.../etc.yaml" in result.stdout
