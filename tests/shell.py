"""Helpers that run generated shell through the real tools."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

from components.scripts import ScriptValue, render


def lint(script: str, tmp_path: Path, name: str = "script.sh") -> None:
    """Fail unless ``bash -n`` and ``shellcheck`` accept ``script`` with no findings."""
    path = tmp_path / name
    path.write_text(script)
    lint_file(path)


def lint_file(path: Path, sources: Path | None = None) -> None:
    """:func:`lint` of a file as it is; with ``sources``, also the files it sources (paths relative to ``sources``)."""
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, f"bash -n {path.name}:\n{syntax.stderr}"
    checker = shutil.which("shellcheck")
    assert checker, "shellcheck is not installed (apt-get install shellcheck; .ci/run does this)"
    follow = ["--external-sources", f"--source-path={sources}"] if sources else []
    found = subprocess.run(
        [checker, "--shell=bash", "--severity=style", "--format=gcc", *follow, str(path)],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, f"shellcheck {path.name}:\n{found.stdout}{found.stderr}"


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def run_script(
    tmp_path: Path,
    name: str,
    params: dict[str, ScriptValue],
    env: dict[str, str] | None = None,
    path: str | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / f"{name}.sh"
    script.write_text(render(name, params))
    environment = {"PATH": path or f"{tmp_path / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), **(env or {})}
    bash = ["/bin/bash", str(script)]
    return subprocess.run(bash, input=stdin, capture_output=True, text=True, env=environment, timeout=120, check=False)
