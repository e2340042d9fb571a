"""Helpers that run generated shell through the real tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def lint(script: str, tmp_path: Path, name: str = "script.sh") -> None:
    """Fail unless ``bash -n`` and ``shellcheck`` accept ``script`` with no findings."""
    path = tmp_path / name
    path.write_text(script)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, f"bash -n {name}:\n{syntax.stderr}"
    checker = shutil.which("shellcheck")
    assert checker, "shellcheck is not installed (apt-get install shellcheck; .ci/run does this)"
    found = subprocess.run(
        [checker, "--shell=bash", "--severity=style", "--format=gcc", str(path)],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, f"shellcheck {name}:\n{found.stdout}{found.stderr}"
