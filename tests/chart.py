"""What the official Cilium chart of a version knows, read from ../shared/cilium-chart/<version>/.

values.yaml documents many keys only as comments (``# mode: snat`` under
``loadBalancer:``, ``#kubeProxyReplacement: "false"``); the templates read them
all the same, so a key counts as known when it stands in the file either way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

CHARTS = Path(__file__).resolve().parents[2] / "shared" / "cilium-chart"
# The official packaged charts, cilium-<version>.tgz, with SHA256SUMS.
ARCHIVES = CHARTS / "archives"

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<hash>#(?P<gap> *))?(?P<key>[A-Za-z][A-Za-z0-9_.-]*):(?:\s|$)(?P<rest>.*)$")


def chart_dirs() -> dict[str, Path]:
    """Chart folder per minor version ("1.13" -> .../1.13.18): the newest patch of each minor."""
    found: dict[str, Path] = {}
    if CHARTS.is_dir():
        for path in sorted(
            CHARTS.iterdir(), key=lambda p: [int(x) for x in p.name.split(".")] if p.name[0].isdigit() else []
        ):
            if (path / "values.yaml").is_file():
                major, minor, _ = path.name.split(".")
                found[f"{major}.{minor}"] = path
    return found


@cache
def known_paths(chart: Path) -> frozenset[tuple[str, ...]]:
    """Every key path the chart's values.yaml declares, commented or not."""
    paths: set[tuple[str, ...]] = set()
    stack: list[tuple[int, str, bool]] = []  # (indent, key, is an empty-map parent like `maglev: {}`)
    for line in (chart / "values.yaml").read_text().splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            continue
        commented = match["hash"] is not None
        if commented and (match["rest"].startswith("--") or match["rest"].startswith("http")):
            continue
        indent = len(match["indent"]) + (max(len(match["gap"]) - 1, 0) if commented else 0)
        while stack and stack[-1][0] >= indent and not (commented and stack[-1][2] and stack[-1][0] == indent):
            stack.pop()
        parents = tuple(key for _, key, _ in stack)
        paths.add((*parents, match["key"]))
        if commented and stack and stack[-1][2] and stack[-1][0] == indent:
            # `maglev: {}` followed by `# tableSize:` at the same column documents maglev.tableSize.
            paths.add((*parents[:-1], match["key"]))
        if not commented:
            stack.append((indent, match["key"], match["rest"].strip() == "{}"))
    return frozenset(paths)


def unknown_paths(values: dict[str, Any], chart: Path, prefix: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths in ``values`` that the chart does not declare."""
    known = known_paths(chart)
    missing = []
    for key, value in values.items():
        path = (*prefix, key)
        if path not in known:
            missing.append(".".join(path))
        elif isinstance(value, dict) and value and any(p[: len(path)] == path and len(p) > len(path) for p in known):
            missing += unknown_paths(value, chart, path)
    return missing


def schema(chart: Path) -> dict[str, Any] | None:
    path = chart / "values.schema.json"
    return json.loads(path.read_text()) if path.is_file() else None


def helm() -> str:
    """helm from PATH, else the one lab/toolchain.sh built; without either the test fails, naming the fix."""
    cache_dir = Path(os.environ.get("K3S_CILIUM_CACHE", Path.home() / ".cache" / "k3s-cilium"))
    built = cache_dir / "toolchain" / "bin" / "helm"
    found = shutil.which("helm") or (str(built) if built.is_file() else None)
    if found is None:
        pytest.fail("no helm: build it with `lab/toolchain.sh build helm` (from its Go module)")
    return found


@cache
def _rendered(version: str, values_json: str) -> tuple[dict[str, Any], ...]:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "values.json"
        path.write_text(values_json)
        result = subprocess.run(
            [helm(), "template", "cilium", str(ARCHIVES / f"cilium-{version}.tgz"), "--namespace", "kube-system",
             "--kube-version", "1.33.3", "-f", str(path)],
            capture_output=True, text=True, check=False,
        )
    assert result.returncode == 0, result.stderr
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def render_chart(version: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object `helm template` of the official chart ``version`` writes with ``values`` (rendered once per
    version and values in a test run)."""
    return list(_rendered(version, json.dumps(values, sort_keys=True)))


def config_map(documents: list[dict[str, Any]]) -> dict[str, str]:
    """The data of the agents' ConfigMap cilium-config among rendered objects."""
    (found,) = [d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cilium-config"]
    return dict(found["data"])
