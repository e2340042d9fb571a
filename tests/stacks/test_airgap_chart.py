"""The values the program passes, with the airgap image overrides, rendered by `helm template` from the real
packaged charts (../shared/cilium-chart/archives, verified against their SHA256SUMS through airgap.sumsFile)
for every tier and chart version: every image the chart deploys comes from the internal registry.

Helm comes from PATH or from `lab/helm.sh build` (built from the Go module helm.sh/helm/v3).
Skipped only when ../shared is absent or no helm can be found.
"""

from __future__ import annotations

import functools
import hashlib
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks import airgap, cilium_values
from stacks.config import TIERS, parse
from stacks.features import resolve
from tests.chart import ARCHIVES, render_chart

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = sorted((p.name.removeprefix("cilium-").removesuffix(".tgz") for p in ARCHIVES.glob("cilium-*.tgz")),
                  key=lambda v: [int(x) for x in v.split(".")])
REGISTRY = "registry.internal:5000/cilium"


def images(documents: list[dict[str, Any]]) -> set[str]:
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

    walk(documents)
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
def test_values_render_with_the_real_chart_and_every_image_is_internal(version: str, tier: str) -> None:
    cfg = airgap_config(version, tier, keep_digests=tier != "extreme")
    deployed = images(render_chart(version, cilium_values.render(cfg, resolve(cfg))))
    assert any("/cilium:" in i or "/cilium@" in i for i in deployed), deployed
    assert any("/operator-generic" in i for i in deployed), deployed
    assert any("/hubble-relay" in i for i in deployed), deployed
    outside = sorted(i for i in deployed if not i.startswith(REGISTRY + "/"))
    assert outside == [], f"images not from {REGISTRY}: {outside}"
    if tier == "extreme":
        assert not any("@sha256:" in i for i in deployed), "keepChartDigests false pulls by tag"


# --- every image a feature of the chart can deploy, switched on through cilium.values -----------------------

MIRRORS = {host: {"endpoints": ["https://mirror.internal"]} for host in ("docker.io", "quay.io", "ghcr.io")}


def chart_has(version: str, member: str) -> bool:
    with tarfile.open(ARCHIVES / f"cilium-{version}.tgz") as archive:
        return any(name.startswith(f"cilium/{member}") for name in archive.getnames())


def chart_value(version: str, *path: str) -> Any:
    with tarfile.open(ARCHIVES / f"cilium-{version}.tgz") as archive:
        extracted = archive.extractfile("cilium/values.yaml")
        assert extracted is not None
        node = yaml.safe_load(extracted)
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def switched_on(version: str) -> dict[str, Any]:
    """cilium.values that turn on every image-bearing part this chart has (by its templates and values)."""
    values: dict[str, Any] = {
        "hubble": {"ui": {"enabled": True}},
        "nodeinit": {"enabled": True},
        "clustermesh": {"useAPIServer": True},
    }
    if chart_value(version, "envoy") is not None:
        values["envoy"] = {"enabled": True}
    if chart_value(version, "clustermesh", "apiserver", "kvstoremesh", "enabled") is not None:
        values["clustermesh"]["apiserver"] = {"kvstoremesh": {"enabled": True}}
    if chart_has(version, "templates/etcd-operator/"):
        values["etcd"] = {"managed": True}
    # The 1.14 chart's SPIRE images are strings and its init image is in the templates: tested apart.
    if chart_has(version, "templates/spire/") and isinstance(
        chart_value(version, "authentication", "mutual", "spire", "install", "agent", "image"), dict
    ):
        values["authentication"] = {"mutual": {"spire": {"enabled": True}}}
        if chart_value(version, "authentication", "enabled") is not None:
            values["authentication"]["enabled"] = True
    if chart_has(version, "templates/ztunnel/"):
        values["encryption"] = {"enabled": True, "type": "ztunnel"}
    return values


def stack(version: str, values: dict[str, Any], cilium: dict[str, Any] | None = None,
          registries: dict[str, Any] | None = None) -> Any:
    raw: dict[str, Any] = {
        "tier": "kpr",
        "nodes": [{"name": "server-1", "host": "10.0.0.1", "role": "server"},
                  {"name": "agent-1", "host": "10.0.0.2", "role": "agent"}],
        "cilium": {"version": version, "values": values},
        "features": {"hubble": True},
        "airgap": {"sumsFile": str(ARCHIVES / "SHA256SUMS"),
                   "cilium": {"chart": str(ARCHIVES / f"cilium-{version}.tgz"), **(cilium or {})}},
    }
    if registries is not None:
        raw["airgap"]["registries"] = registries
    return parse(raw)


def deployed(version: str, values: dict[str, Any], cilium: dict[str, Any] | None = None,
             registries: dict[str, Any] | None = None) -> set[str]:
    """The images of the stack's values, once as they are and once with the preflight check on (the chart
    renders the envoy DaemonSet only without it)."""
    found: set[str] = set()
    for preflight in (False, True):
        cfg = stack(version, cilium_values.deep_merge(values, {"preflight": {"enabled": preflight}}), cilium,
                    registries)
        found |= images(render_chart(version, cilium_values.render(cfg, resolve(cfg))))
    return found


@functools.cache
def upstream_images(version: str) -> frozenset[str]:
    """What the chart deploys from upstream with every part switched on (no imageRegistry)."""
    return frozenset(deployed(version, switched_on(version)))


def in_registry(upstream: str, keep_digests: bool) -> str:
    """Where an image the chart pulls from upstream is expected: the registry, same name and tag (and digest)."""
    reference = upstream if keep_digests else upstream.partition("@")[0]
    return f"{REGISTRY}/{reference.rsplit('/', 1)[1]}"


@pytest.mark.parametrize("keep_digests", [True, False], ids=["chart-digests", "by-tag"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_image_a_switched_on_feature_deploys_comes_from_the_registry(version: str, keep_digests: bool) -> None:
    """Each image the chart deploys upstream is deployed from the registry, same name, same tag, and the chart's
    digest or none: clustermesh etcd (1.13/1.14), kvstoremesh (1.14), preflight envoy (1.18+), the
    cilium-etcd-operator, SPIRE and ztunnel included, and 1.13's tags that carry their digest."""
    values = switched_on(version)
    upstream = upstream_images(version)
    # Managed etcd's operator starts images of its own: their registries are mirrored.
    internal = deployed(version, values,
                        {"imageRegistry": REGISTRY, "keepChartDigests": keep_digests}, {"mirrors": MIRRORS})
    assert internal == {in_registry(image, keep_digests) for image in upstream}
    if not keep_digests:
        assert not any("@" in image for image in internal)


# airgap.cilium.images.<name>: the name of each image mapping the charts have (preflight runs the agent's and
# envoy's images, so their pins apply to it).
PINNABLE = {
    ("image",): "agent", ("operator", "image"): "operator", ("certgen", "image"): "certgen",
    ("hubble", "relay", "image"): "hubbleRelay", ("hubble", "ui", "backend", "image"): "hubbleUiBackend",
    ("hubble", "ui", "frontend", "image"): "hubbleUi", ("envoy", "image"): "envoy", ("nodeinit", "image"): "nodeinit",
    ("clustermesh", "apiserver", "image"): "clustermeshApiserver",
    ("clustermesh", "apiserver", "etcd", "image"): "clustermeshEtcd",
    ("clustermesh", "apiserver", "kvstoremesh", "image"): "kvstoremesh", ("etcd", "image"): "etcdOperator",
    ("authentication", "mutual", "spire", "install", "initImage"): "spireInit",
    ("authentication", "mutual", "spire", "install", "agent", "image"): "spireAgent",
    ("authentication", "mutual", "spire", "install", "server", "image"): "spireServer",
    ("encryption", "ztunnel", "image"): "ztunnel",
}


def name_of(image: str) -> str:
    return image.partition("@")[0].rsplit("/", 1)[1].partition(":")[0]


def valid_reference(image: str) -> bool:
    """``registry/path/name[:tag][@sha256:<64 hex>]``: one tag at most, one digest at most."""
    return re.fullmatch(
        r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?", image
    ) is not None


@pytest.mark.parametrize("version", VERSIONS)
def test_a_pinned_digest_replaces_the_charts_in_one_valid_reference(version: str) -> None:
    """A digest pinned for every image mapping the chart has: every reference carries that one digest."""
    names = sorted({name for path, name in PINNABLE.items() if isinstance(chart_value(version, *path), dict)})
    pins = {name: "sha256:" + hashlib.sha256(name.encode()).hexdigest() for name in names}
    internal = deployed(version, switched_on(version),
                        {"imageRegistry": REGISTRY, "images": {name: {"digest": pin} for name, pin in pins.items()}},
                        {"mirrors": MIRRORS})
    assert {name_of(image) for image in internal} == {name_of(image) for image in upstream_images(version)}
    for image in internal:
        assert valid_reference(image) and image.startswith(REGISTRY + "/"), image
        assert image.partition("@")[2] in pins.values(), image


def test_1_13_pins_for_certgen_and_hubble_ui_are_valid_references() -> None:
    """The 1.13 chart carries certgen's and hubble-ui's digests inside `tag`: a pinned digest replaces that one
    (not `...:v0.1.11@sha256:<chart>@sha256:<pin>`)."""
    version = next(v for v in VERSIONS if v.startswith("1.13."))
    pins = {name: "sha256:" + hashlib.sha256(name.encode()).hexdigest()
            for name in ("certgen", "hubbleUi", "hubbleUiBackend")}
    internal = deployed(version, {"hubble": {"ui": {"enabled": True}}},
                        {"imageRegistry": REGISTRY, "images": {name: {"digest": pin} for name, pin in pins.items()}})
    by_name = {name_of(image): image for image in internal}
    for name, key in (("certgen", "certgen"), ("hubble-ui", "hubbleUi"), ("hubble-ui-backend", "hubbleUiBackend")):
        assert valid_reference(by_name[name]), by_name[name]
        assert by_name[name].startswith(f"{REGISTRY}/{name}") and by_name[name].endswith("@" + pins[key])


def test_spire_on_the_1_14_chart_runs_only_the_images_the_stack_names() -> None:
    """The 1.14 chart gives SPIRE's images as strings and its init image in the templates: the stack is
    accepted once the strings name the registry and docker.io is mirrored, and then nothing else is upstream."""
    version = next(v for v in VERSIONS if v.startswith("1.14."))
    spire = chart_value(version, "authentication", "mutual", "spire", "install")
    assert isinstance(spire["agent"]["image"], str) and isinstance(spire["server"]["image"], str)
    strings = {part: f"{REGISTRY}/{spire[part]['image'].rsplit('/', 1)[1]}" for part in ("agent", "server")}
    values = {"authentication": {"mutual": {"spire": {
        "enabled": True, "install": {part: {"image": image} for part, image in strings.items()}}}}}
    found = deployed(version, values, {"imageRegistry": REGISTRY}, {"mirrors": MIRRORS})
    assert set(strings.values()) <= found
    outside = {image for image in found if not image.startswith(REGISTRY + "/")}
    assert outside and all(image.startswith("docker.io/library/busybox:") for image in outside), outside
