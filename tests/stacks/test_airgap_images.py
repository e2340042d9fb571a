"""Air-gapped Cilium images the program cannot redirect are refused before any resource, naming the values key
and the fix; what the stack asks of a chart version must be in that chart.

The keys and versions come from the official charts in ../shared/cilium-chart (values.yaml and templates of
1.13.18 to 1.20.0): the 1.14 chart's SPIRE images are strings and its init image (busybox) is in the templates,
the cilium-etcd-operator of charts up to 1.15 starts etcd-operator, etcd and busybox itself, the standalone DNS
proxy of 1.19+ has no image in the chart, and the 1.13 chart carries the digest inside `tag` for certgen and
hubble-ui.
"""

from __future__ import annotations

from typing import Any

import pytest

from stacks import cilium_values
from stacks.config import ConfigError, StackConfig, parse
from stacks.features import resolve

REGISTRY = "registry.internal:5000/cilium"
MIRROR = {"endpoints": ["https://mirror.internal"]}


def stack(version: str, values: dict[str, Any], cilium: dict[str, Any] | None = None,
          mirrors: dict[str, Any] | None = None) -> StackConfig:
    airgap: dict[str, Any] = {"cilium": {"chartRepository": "https://charts.internal/cilium",
                                         "imageRegistry": REGISTRY, **(cilium or {})}}
    if mirrors is not None:
        airgap["registries"] = {"mirrors": mirrors}
    return parse({
        "nodes": [{"name": "server-1", "host": "10.0.0.1", "role": "server"}],
        "cilium": {"version": version, "values": values},
        "airgap": airgap,
    })


def problems(*args: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        stack(*args, **kwargs)
    return caught.value.problems


SPIRE_ON = {"authentication": {"mutual": {"spire": {"enabled": True}}}}


def test_spire_on_the_1_14_chart_names_each_string_image_and_the_init_image():
    found = problems("1.14.19", SPIRE_ON)
    keys = [p.split(": ", 1)[0] for p in found]
    assert keys == [
        "k3s-cilium:cilium.values.authentication.mutual.spire.install.agent.image",
        "k3s-cilium:cilium.values.authentication.mutual.spire.install.server.image",
        "k3s-cilium:cilium.values.authentication.mutual.spire.enabled",
    ]
    assert "docker.io/library/busybox" in found[2] and "airgap.registries.mirrors" in found[2]
    assert f"'{REGISTRY}/spire-agent:<tag>@<digest>'" in found[0]


def test_spire_on_the_1_14_chart_is_accepted_with_its_images_named_and_docker_io_mirrored():
    images = {part: {"image": f"{REGISTRY}/spire-{part}:1.6.3"} for part in ("agent", "server")}
    values = {"authentication": {"mutual": {"spire": {"enabled": True, "install": images}}}}
    stack("1.14.19", values, mirrors={"docker.io": MIRROR})
    stack("1.14.19", values, mirrors={"*": MIRROR})
    # SPIRE installed by someone else: the chart deploys none of its images.
    stack("1.14.19", {"authentication": {"mutual": {"spire": {"enabled": True, "install": {"enabled": False}}}}})


def test_spire_from_1_15_on_is_redirected_not_refused():
    for version in ("1.15.19", "1.19.6"):
        cfg = stack(version, SPIRE_ON)
        install = cilium_values.render(cfg, resolve(cfg))["authentication"]["mutual"]["spire"]["install"]
        assert install["agent"]["image"]["repository"] == f"{REGISTRY}/spire-agent"
        assert install["server"]["image"]["repository"] == f"{REGISTRY}/spire-server"
        assert install["initImage"]["repository"] == f"{REGISTRY}/busybox"


@pytest.mark.parametrize("version", ["1.13.18", "1.14.19", "1.15.19"])
def test_managed_etcd_needs_the_operators_own_images_mirrored(version):
    (found,) = problems(version, {"etcd": {"managed": True}})
    assert found.startswith("k3s-cilium:cilium.values.etcd.managed: ")
    assert "quay.io and docker.io" in found
    (found,) = problems(version, {"etcd": {"managed": True}}, mirrors={"quay.io": MIRROR})
    assert "mirror docker.io in airgap.registries.mirrors" in found
    stack(version, {"etcd": {"managed": True}}, mirrors={"quay.io": MIRROR, "docker.io": MIRROR})


@pytest.mark.parametrize("version", ["1.19.6", "1.20.0"])
def test_the_standalone_dns_proxy_needs_an_image_from_the_stack(version):
    (found,) = problems(version, {"standaloneDnsProxy": {"enabled": True}})
    assert found.startswith("k3s-cilium:cilium.values.standaloneDnsProxy.image: ")
    image = {"repository": f"{REGISTRY}/standalone-dns-proxy", "tag": "v1.19.6"}
    stack(version, {"standaloneDnsProxy": {"enabled": True, "image": image}})


def test_without_an_image_registry_nothing_is_refused():
    parse({
        "nodes": [{"name": "server-1", "host": "10.0.0.1", "role": "server"}],
        "cilium": {"version": "1.14.19", "values": {**SPIRE_ON, "etcd": {"managed": True}}},
        "airgap": {"cilium": {"chartRepository": "https://charts.internal/cilium"}},
    })


@pytest.mark.parametrize(("version", "name"), [("1.16.19", "kvstoremesh"), ("1.16.19", "clustermeshEtcd"),
                                               ("1.13.18", "envoy"), ("1.18.12", "ztunnel"),
                                               ("1.16.19", "etcdOperator"), ("1.14.19", "spireAgent")])
def test_an_image_the_pinned_chart_does_not_have_is_refused(version, name):
    (found,) = problems(version, {}, {"images": {name: {"digest": "sha256:" + "a" * 64}}})
    assert found.startswith(f"k3s-cilium:airgap.cilium.images.{name}: the Cilium {version.rsplit('.', 1)[0]} chart")


def test_pulling_1_13_by_tag_needs_the_chart_that_holds_the_bare_tags():
    (found,) = problems("1.13.18", {}, {"keepChartDigests": False})
    assert found.startswith("k3s-cilium:airgap.cilium.keepChartDigests: false cannot pull certgen.image")
    assert "hubble.ui.frontend.image" in found and "hubble.ui.backend.image" in found
    # Later charts keep the digest apart from the tag.
    stack("1.14.19", {}, {"keepChartDigests": False})
    # A pinned digest needs no tag.
    pins = {name: {"digest": "sha256:" + "b" * 64}
            for name in ("certgen", "hubbleUi", "hubbleUiBackend", "etcdOperator", "clustermeshEtcd")}
    stack("1.13.18", {}, {"keepChartDigests": False, "images": pins})
