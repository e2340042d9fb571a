"""The values the program passes, with the airgap image overrides, rendered by `helm template` from the real
packaged charts (../shared/cilium-chart/archives, verified against their SHA256SUMS through airgap.sumsFile)
for every tier and chart version: every image the chart deploys comes from the internal registry.

Helm comes from PATH or from `lab/helm.sh build` (built from the Go module helm.sh/helm/v3).
Skipped only when ../shared is absent or no helm can be found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks import airgap, cilium_values
from stacks.config import TIERS, parse
from stacks.features import resolve

ROOT = Path(__file__).resolve().parents[2]
ARCHIVES = ROOT.parent / "shared" / "cilium-chart" / "archives"
VERSIONS = sorted((p.name.removeprefix("cilium-").removesuffix(".tgz") for p in ARCHIVES.glob("cilium-*.tgz")),
                  key=lambda v: [int(x) for x in v.split(".")])
REGISTRY = "registry.internal:5000/cilium"


def helm() -> str:
    """helm from PATH, else the one lab/toolchain.sh built; without either the test fails, naming the fix."""
    cache = Path(os.environ.get("K3S_CILIUM_CACHE", Path.home() / ".cache" / "k3s-cilium"))
    built = cache / "toolchain" / "bin" / "helm"
    found = shutil.which("helm") or (str(built) if built.is_file() else None)
    if found is None:
        pytest.fail("no helm: build it with `lab/toolchain.sh build helm` (from its Go module)")
    return found


def images(manifests: str) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for document in yaml.safe_load_all(manifests):
        walk(document)
    return found


def airgap_config(version: str, tier: str, keep_digests: bool = True) -> Any:
    return parse({
        "tier": tier,
        "nodes": [{"name": "server-1", "host": "10.0.0.1", "role": "server"},
                  {"name": "agent-1", "host": "10.0.0.2", "role": "agent"}],
        "cilium": {"version": version},
        # Hubble on: relay and the certgen job deploy images too.
        "features": {"hubble": True},
        "airgap": {
            "sumsFile": str(ARCHIVES / "SHA256SUMS"),
            "cilium": {"chart": str(ARCHIVES / f"cilium-{version}.tgz"), "imageRegistry": REGISTRY,
                       "keepChartDigests": keep_digests},
        },
    })


pytestmark = pytest.mark.skipif(not ARCHIVES.is_dir(), reason="../shared/cilium-chart/archives is absent")


def test_the_archives_are_verified_against_their_sums() -> None:
    cfg = airgap_config("1.19.6", "kpr")
    chart = airgap.chart(cfg.airgap, cfg.cilium.version)
    assert chart is not None and chart.kind == "tgz"
    sums = airgap.read_sums(ARCHIVES / "SHA256SUMS")
    assert chart.sha256 == sums["cilium-1.19.6.tgz"]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("version", VERSIONS)
def test_values_render_with_the_real_chart_and_every_image_is_internal(version: str, tier: str,
                                                                      tmp_path: Path) -> None:
    binary = helm()
    cfg = airgap_config(version, tier, keep_digests=tier != "extreme")
    values = cilium_values.render(cfg, resolve(cfg))
    (tmp_path / "values.json").write_text(json.dumps(values))
    result = subprocess.run(
        [binary, "template", "cilium", str(ARCHIVES / f"cilium-{version}.tgz"), "--namespace", "kube-system",
         "--kube-version", "1.33.3", "-f", str(tmp_path / "values.json")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    deployed = images(result.stdout)
    assert any("/cilium:" in i or "/cilium@" in i for i in deployed), deployed
    assert any("/operator-generic" in i for i in deployed), deployed
    assert any("/hubble-relay" in i for i in deployed), deployed
    outside = sorted(i for i in deployed if not i.startswith(REGISTRY + "/"))
    assert outside == [], f"images not from {REGISTRY}: {outside}"
    if tier == "extreme":
        assert not any("@sha256:" in i for i in deployed), "keepChartDigests false pulls by tag"
