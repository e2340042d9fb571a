"""Running ``python -m verification`` in-process in the check tests: ``cli(check, stdin, expect)`` (a fixture,
in conftest.py) and what one run gave."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NODE = "agent-1"


@dataclass(frozen=True)
class Run:
    code: int
    document: dict[str, Any] | None
    stderr: list[str]

    @property
    def problems(self) -> list[str]:
        assert self.document is not None
        problems: list[str] = self.document["problems"]
        return problems

    @property
    def figures(self) -> dict[str, Any]:
        assert self.document is not None
        figures: dict[str, Any] = self.document["figures"]
        return figures


def prefix(check: str) -> str:
    return f"node {NODE}: check {check}: "
