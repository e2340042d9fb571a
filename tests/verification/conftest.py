"""The ``cli`` fixture of the check tests (tests/verification/cli.py)."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest

from tests.verification.cli import NODE, Run
from verification.__main__ import main


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli(check, stdin, expect)``: ``verification.__main__.main`` with ``stdin`` as its standard input."""

    def run(check: str, stdin: str, expect: dict[str, Any] | str | None = None) -> Run:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8"))
        args = [check, "--node", NODE]
        if expect is not None:
            args += ["--expect", expect if isinstance(expect, str) else json.dumps(expect)]
        code = main(args)
        out, err = capsys.readouterr()
        return Run(code, json.loads(out) if out else None, err.splitlines())

    return run
