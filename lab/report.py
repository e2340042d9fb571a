"""The lab's JSON report: one entry per step, plus the facts about the hosts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# What a step ran as; the report says it plainly for every step.
KIND_LAB = "lab"
KIND_PULUMI = "pulumi"
KIND_DIRECT = "script run directly over SSH (not through pulumi)"

PASSED = "passed"
FAILED = "failed"
NOT_RUN = "not-run"


@dataclass
class Step:
    name: str
    kind: str
    status: str = NOT_RUN
    exit_status: int | None = None
    seconds: float | None = None
    resource_counts: dict[str, int] | None = None
    first_error: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class StepFailed(Exception):
    """A step found a problem; its message is the step's first error."""


@dataclass
class Report:
    path: Path
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    finished: str | None = None
    ok: bool = False
    stopped_at: str | None = None
    stop_reason: str | None = None
    lab: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    def write(self) -> None:
        data = asdict(self)
        data.pop("path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.path)

    def not_run(self, name: str, kind: str, reason: str) -> Step:
        step = Step(name=name, kind=kind, status=NOT_RUN, reason=reason)
        self.steps.append(step)
        self.write()
        return step

    @contextmanager
    def step(self, name: str, kind: str) -> Iterator[Step]:
        """Time the body; an exception marks the step failed (StepFailed is not re-raised)."""
        step = Step(name=name, kind=kind)
        self.steps.append(step)
        start = time.monotonic()
        try:
            yield step
            if step.status == NOT_RUN:
                step.status = PASSED
        except StepFailed as problem:
            step.status = FAILED
            step.first_error = step.first_error or first_line(str(problem))
        except Exception as problem:
            step.status = FAILED
            step.first_error = step.first_error or first_line(f"{type(problem).__name__}: {problem}")
            raise
        finally:
            step.seconds = round(time.monotonic() - start, 1)
            self.write()


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""
