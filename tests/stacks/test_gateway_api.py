"""gatewayApi / ingress: refusals, values per chart, the CRD bundle loader, K3s' own CRDs, the objects, the plan.

Facts the expectations below rest on, each looked up (not read off stacks/gateway_api.py):
- Gateway API per Cilium minor (installation.rst "Prerequisites" of each tag; 1.18 per cilium/cilium#44816,
  1.20 per Documentation/conf.py): 1.13 v0.5.1, 1.14 v0.7.0, 1.15 v1.0.0, 1.16 v1.1.0, 1.17 v1.2.0,
  1.18 v1.3.0, 1.19 v1.4.1, 1.20 v1.6.1; the operator needs TLSRoute v1alpha2 (experimental channel) up
  to 1.16 (1.15 also GRPCRoute v1alpha2), 1.17-1.19 only standard CRDs, 1.20 TLSRoute and BackendTLSPolicy v1.
- Charts: gatewayAPI.hostNetwork and ingressController.hostNetwork from 1.16; gatewayAPI.gatewayClass.create
  (default "auto") from 1.16; gatewayAPI.enabled and ingressController.enabled default false, loadbalancerMode
  "dedicated", l7Proxy true in every chart. The ConfigMap keys: enable-gateway-api, enable-ingress-controller,
  ingress-default-lb-mode, gateway-api-hostnetwork-enabled (1.16+); the cilium-envoy DaemonSet by default from 1.16.
- K3s 1.37+ installs the standard Gateway API v1.6.1 CRDs with its gateway-api-crd HelmChart unless disabled
  (k3s-io/k3s#14564, #14681); 1.34-1.36 with traefik-crd (k3s-io/k3s#14557).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.version import Version
from pydantic import ValidationError

from stacks import gateway_api as ga
from stacks.load_balancer import LoadBalancer
from tests.chart import ARCHIVES, chart_dirs, config_map, known_paths, render_chart, unknown_paths

V = Version
SHA = "a" * 64
L2 = LoadBalancer.model_validate(
    {"mode": "l2", "pools": [{"name": "lan", "blocks": ["192.168.56.240/29"]}], "l2": {"interfaces": ["^eth0$"]}}
)
NONE = LoadBalancer()
NODEIPAM = LoadBalancer(mode="nodeipam")


def cfg(**raw: Any) -> ga.GatewayApi:
    return ga.GatewayApi.model_validate(raw)


PINNED = cfg(crds={"sha256": SHA})


def problems(
    gw: bool = True,
    ingress: bool = False,
    section: ga.GatewayApi = PINNED,
    version: str = "1.19.6",
    kpr: bool = True,
    l7: bool = True,
    lb: str = "l2",
    k3s: str | None = "v1.33.3+k3s1",
    disabled: tuple[str, ...] = ("servicelb", "traefik"),
) -> list[str]:
    return ga.problems(gw, ingress, section, V(version), kpr, l7, lb, k3s, disabled)


# --- refusals -----------------------------------------------------------------------------------------


def test_a_pinned_stack_with_a_load_balancer_has_no_problem():
    assert problems() == []
    assert problems(gw=False, ingress=True, section=cfg()) == []


@pytest.mark.parametrize("key", ["gw", "ingress"])
def test_each_switch_needs_kube_proxy_replacement(key):
    section = PINNED if key == "gw" else cfg()
    found = problems(gw=key == "gw", ingress=key == "ingress", section=section, kpr=False)
    name = "features.gatewayApi" if key == "gw" else "features.ingress"
    assert found == [
        f"{name}: needs kube-proxy replacement (Cilium's Gateway API and Ingress prerequisites; the 1.19 operator "
        "turns Gateway API off without it): use tier kpr or above"
    ]


def test_the_l7_proxy_turned_off_is_refused():
    (problem,) = problems(l7=False)
    assert problem.startswith("features.gatewayApi: needs the L7 proxy (Envoy")
    assert "l7Proxy: false" in problem


def test_no_way_to_reach_the_gateway_is_refused_naming_both_ways():
    (problem,) = problems(lb="none")
    assert "loadBalancer.mode is none" in problem
    assert "Programmed=False (AddressNotAssigned)" in problem
    assert problem.endswith("set loadBalancer.mode (l2, bgp or nodeipam) or set gatewayApi.hostNetwork: true")
    (old,) = problems(lb="none", version="1.15.19")
    assert old.endswith("(host network mode needs Cilium 1.16+)")


def test_host_network_needs_no_load_balancer():
    assert problems(lb="none", section=cfg(crds={"sha256": SHA}, hostNetwork=True)) == []


def test_node_ipam_serves_gateways_from_1_17():
    (problem,) = problems(lb="nodeipam", version="1.16.19")
    assert "defaultLBServiceIPAM is 1.17+" in problem
    assert problems(lb="nodeipam", version="1.17.18") == []


def test_host_network_before_1_16_is_refused():
    found = problems(version="1.15.19", section=cfg(crds={"sha256": SHA}, hostNetwork=True))
    assert found == [
        "gatewayApi.hostNetwork: host network mode is in Cilium from 1.16 (chart gatewayAPI.hostNetwork); "
        "cilium.version is 1.15.19: raise it or use a LoadBalancer mode"
    ]


def test_a_minor_without_known_needs_is_refused():
    (problem,) = problems(version="1.12.19")
    assert problem.startswith("features.gatewayApi: Cilium 1.12.19 is not a minor whose Gateway API needs are known")


@pytest.mark.parametrize(
    ("version", "bundle", "url"),
    [
        ("1.13.18", "v0.5.1 experimental", "v0.5.1/experimental-install.yaml"),
        ("1.16.19", "v1.1.0 experimental", "v1.1.0/experimental-install.yaml"),
        ("1.17.18", "v1.2.0 standard", "v1.2.0/standard-install.yaml"),
        ("1.18.12", "v1.3.0 standard", "v1.3.0/standard-install.yaml"),
        ("1.19.6", "v1.4.1 standard", "v1.4.1/standard-install.yaml"),
        ("1.20.0", "v1.6.1 standard", "v1.6.1/standard-install.yaml"),
    ],
)
def test_the_bundle_digest_is_required_and_the_error_says_how_to_get_it(version, bundle, url):
    (problem,) = problems(version=version, section=cfg())
    release = f"https://github.com/kubernetes-sigs/gateway-api/releases/download/{url}"
    assert problem.startswith(f"gatewayApi.crds.sha256: the Gateway API CRD bundle ({bundle}, for Cilium")
    assert problem.endswith(f"`curl -sL {release} | sha256sum`")


def test_a_local_bundle_file_is_hashed_with_sha256sum():
    (problem,) = problems(section=cfg(crds={"file": "/srv/gateway-api.yaml"}))
    assert problem.endswith("`sha256sum /srv/gateway-api.yaml`")


def test_a_malformed_digest_or_two_sources_are_refused():
    with pytest.raises(ValueError, match="64 hex digits"):
        cfg(crds={"sha256": "abc"})
    with pytest.raises(ValueError, match="set url or file, not both"):
        cfg(crds={"url": "https://example.org/a.yaml", "file": "/a.yaml", "sha256": SHA})
    assert cfg(crds={"sha256": "sha256:" + "A" * 64}).crds.sha256 == "a" * 64


def test_ingress_needs_no_crds_and_refuses_a_crd_section():
    assert problems(gw=False, ingress=True, section=cfg()) == []
    (problem,) = problems(gw=False, ingress=True, section=PINNED)
    assert problem.startswith("gatewayApi.crds: is set but features.gatewayApi is off")


def test_a_section_without_any_switch_is_refused():
    assert problems(gw=False, section=cfg(hostNetwork=True)) == [
        "gatewayApi: is set but features.gatewayApi and features.ingress are off; remove it or turn one on"
    ]
    assert problems(gw=False, section=cfg()) == []


def test_dedicated_ingress_in_host_network_mode_is_refused():
    section = cfg(hostNetwork=True, ingressLoadbalancerMode="dedicated")
    (problem,) = problems(gw=False, ingress=True, section=section, lb="none")
    assert "ingress.cilium.io/host-listener-port" in problem


def test_k3s_traefik_crds_are_a_second_owner():
    (problem,) = problems(k3s="v1.35.2+k3s1", disabled=("servicelb",))
    assert "'traefik-crd' HelmChart" in problem
    assert problem.endswith("keep 'traefik' in k3s.disable")
    assert problems(k3s="v1.35.2+k3s1") == []


def test_k3s_1_37_bundle_serves_1_17_and_later_but_not_1_16():
    assert problems(k3s="v1.37.0+k3s1", section=cfg()) == []
    (explicit,) = problems(k3s="v1.37.0+k3s1", section=PINNED)
    assert explicit.startswith("gatewayApi.crds: K3s v1.37.0+k3s1 installs the Gateway API CRDs")
    (old,) = problems(k3s="v1.37.0+k3s1", version="1.16.19", section=cfg())
    assert "needs tlsroutes.gateway.networking.k8s.io v1alpha2" in old
    assert old.endswith("add 'gateway-api-crd' to k3s.disable so the program installs them")
    assert problems(k3s="v1.37.0+k3s1", version="1.16.19", disabled=("servicelb", "traefik", "gateway-api-crd")) == []


def test_k3s_ships():
    assert ga.k3s_ships("v1.33.3+k3s1", ()) is None
    assert ga.k3s_ships("v1.34.1+k3s1", ("traefik",)) is None
    shipped = ga.k3s_ships("v1.36.0+k3s1", ())
    assert shipped is not None and (shipped.release, shipped.bundle) == ("traefik-crd", None)
    later = ga.k3s_ships("v1.37.0+k3s1", ("traefik",))
    assert later is not None and (later.release, later.bundle) == ("gateway-api-crd", "v1.6.1")
    assert ga.k3s_ships("v1.37.0+k3s1", ("gateway-api-crd",)) is None
    assert ga.k3s_ships("latest", ()) is None


# --- Helm values per chart ------------------------------------------------------------------------------

CHARTS = sorted(chart_dirs(), key=lambda minor: [int(part) for part in minor.split(".")])
STATES = [(False, False), (True, False), (False, True), (True, True)]


def _leaves(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found: list[tuple[tuple[str, ...], Any]] = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            found += _leaves(value, (*prefix, key))
        else:
            found.append(((*prefix, key), value))
    return found


@pytest.mark.parametrize("minor", CHARTS)
@pytest.mark.parametrize(("gw", "ingress"), STATES)
@pytest.mark.parametrize("host", [False, True])
def test_every_rendered_key_exists_in_the_chart(minor, gw, ingress, host):
    chart = chart_dirs()[minor]
    values = ga.helm_values(gw, ingress, cfg(hostNetwork=host), V(chart.name))
    assert unknown_paths(values, chart) == []
    assert all(path in known_paths(chart) for path, _ in _leaves(values))


@pytest.mark.parametrize("minor", CHARTS)
def test_both_off_equals_every_chart_default(minor):
    chart = chart_dirs()[minor]
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    values = ga.helm_values(False, False, cfg(hostNetwork=True, ingressLoadbalancerMode="shared"), V(chart.name))
    for path, value in _leaves(values):
        default: Any = defaults
        for key in path:
            default = default[key]
        assert value == default, ".".join(path)
    assert "l7Proxy" not in values


@pytest.mark.parametrize(
    ("version", "has_host_network"), [("1.13.18", False), ("1.15.19", False), ("1.16.19", True), ("1.20.0", True)]
)
def test_values_per_version(version, has_host_network):
    values = ga.helm_values(True, True, cfg(hostNetwork=True), V(version))
    expected_gw: dict[str, Any] = {"enabled": True}
    expected_ingress: dict[str, Any] = {"enabled": True, "loadbalancerMode": "shared"}
    if has_host_network:
        expected_gw |= {"hostNetwork": {"enabled": True}, "gatewayClass": {"create": "true"}}
        expected_ingress["hostNetwork"] = {"enabled": True}
    assert values == {"gatewayAPI": expected_gw, "ingressController": expected_ingress, "l7Proxy": True}


def test_ingress_mode_defaults_to_the_chart_and_follows_the_section():
    assert ga.helm_values(False, True, cfg(), V("1.19.6"))["ingressController"]["loadbalancerMode"] == "dedicated"
    shared = cfg(ingressLoadbalancerMode="shared")
    assert ga.helm_values(False, True, shared, V("1.19.6"))["ingressController"]["loadbalancerMode"] == "shared"
    assert ga.helm_values(True, False, cfg(), V("1.19.6"))["ingressController"] == {
        "enabled": False,
        "loadbalancerMode": "dedicated",
        "hostNetwork": {"enabled": False},
    }


def template(version: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    base = {"kubeProxyReplacement": "true", "k8sServiceHost": "127.0.0.1", "k8sServicePort": 6444}
    return render_chart(version, {**base, **values})


@pytest.mark.skipif(not ARCHIVES.is_dir(), reason="../shared/cilium-chart/archives is absent")
@pytest.mark.parametrize("version", ["1.16.19", "1.19.6"])
def test_the_real_chart_turns_on_gateway_api_and_ingress_with_envoy(version):
    documents = template(version, ga.helm_values(True, True, cfg(), V(version)))
    data = config_map(documents)
    assert data["enable-gateway-api"] == "true"
    assert data["enable-ingress-controller"] == "true"
    assert data["ingress-default-lb-mode"] == "dedicated"
    assert data["gateway-api-hostnetwork-enabled"] == "false"
    assert data["enable-envoy-config"] == "true"
    assert data["external-envoy-proxy"] == "true"
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert ("DaemonSet", "cilium-envoy") in kinds
    # gatewayClass.create "true": the class is rendered without asking the cluster's API versions.
    assert ("GatewayClass", "cilium") in kinds
    assert ("IngressClass", "cilium") in kinds


@pytest.mark.skipif(not ARCHIVES.is_dir(), reason="../shared/cilium-chart/archives is absent")
def test_the_real_chart_in_host_network_mode():
    data = config_map(template("1.19.6", ga.helm_values(True, True, cfg(hostNetwork=True), V("1.19.6"))))
    assert (data["gateway-api-hostnetwork-enabled"], data["ingress-hostnetwork-enabled"]) == ("true", "true")
    assert data["ingress-default-lb-mode"] == "shared"


@pytest.mark.skipif(not ARCHIVES.is_dir(), reason="../shared/cilium-chart/archives is absent")
@pytest.mark.parametrize("version", ["1.15.19", "1.19.6"])
def test_the_real_chart_with_both_off_has_neither(version):
    documents = template(version, ga.helm_values(False, False, cfg(), V(version)))
    data = config_map(documents)
    assert "enable-gateway-api" not in data
    assert "enable-ingress-controller" not in data
    assert not any(d["kind"] == "GatewayClass" for d in documents)


# --- the CRD bundle ----------------------------------------------------------------------------------


def crd(plural: str, versions: tuple[str, ...], bundle: str = "v1.4.1", kind: str | None = None) -> str:
    """A minimal CustomResourceDefinition of our own, with the names and annotations of a Gateway API one."""
    kind = kind or plural.capitalize().removesuffix("s")
    served = "".join(
        f"  - name: {v}\n    served: true\n    storage: {str(i == 0).lower()}\n"
        "    schema:\n      openAPIV3Schema:\n        type: object\n"
        "        x-kubernetes-preserve-unknown-fields: true\n"
        for i, v in enumerate(versions)
    )
    return (
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n"
        f"  name: {plural}.gateway.networking.k8s.io\n  annotations:\n"
        f"    gateway.networking.k8s.io/bundle-version: {bundle}\n    gateway.networking.k8s.io/channel: standard\n"
        f"spec:\n  group: gateway.networking.k8s.io\n  names:\n    kind: {kind}\n    plural: {plural}\n"
        f"  scope: Namespaced\n  versions:\n{served}"
    )


OTHER = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gateway-system\n"
NEEDS_1_19 = ga.NEEDS["1.19"]
STANDARD = [
    crd("gatewayclasses", ("v1", "v1beta1")),
    crd("gateways", ("v1", "v1beta1")),
    crd("httproutes", ("v1", "v1beta1")),
    crd("grpcroutes", ("v1",)),
    crd("referencegrants", ("v1beta1",)),
]


def bundle(*documents: str) -> str:
    return "---\n".join(documents)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load(text: str, sha: str | None = None, bundle_version: str = "v1.4.1") -> list[dict[str, Any]]:
    return ga.load_crds(text, sha or digest(text), NEEDS_1_19.required_names, bundle_version, NEEDS_1_19.required)


def test_a_good_bundle_yields_its_crds_labelled_as_ours():
    text = bundle(OTHER, *STANDARD)
    loaded = load(text)
    assert [c["metadata"]["name"] for c in loaded] == NEEDS_1_19.required_names
    assert all(c["metadata"]["labels"] == {"app.kubernetes.io/part-of": "k3s-cilium"} for c in loaded)
    assert ga.load_crds(text.encode(), "SHA256:" + digest(text).upper(), [], "v1.4.1") == loaded


def test_a_bundle_with_another_digest_is_refused():
    text = bundle(*STANDARD)
    with pytest.raises(
        ga.CrdBundleError, match=f"sha256 is {digest(text)}, the pinned gatewayApi.crds.sha256 is {SHA}"
    ):
        load(text, SHA)


def test_a_bundle_missing_a_required_crd_is_refused():
    text = bundle(*STANDARD[:3], STANDARD[4])
    with pytest.raises(ga.CrdBundleError, match=r"CRD grpcroutes\.gateway\.networking\.k8s\.io is missing"):
        load(text)


def test_a_bundle_of_another_version_is_refused_naming_each_crd():
    text = bundle(*(crd(p, ("v1", "v1beta1"), bundle="v1.2.0") for p in ("gatewayclasses", "gateways")))
    with pytest.raises(ga.CrdBundleError) as caught:
        ga.load_crds(text, digest(text), [], "v1.4.1")
    message = str(caught.value)
    assert (
        "CRD gatewayclasses.gateway.networking.k8s.io: gateway.networking.k8s.io/bundle-version is 'v1.2.0', "
        "expected 'v1.4.1'" in message
    )
    assert "CRD gateways.gateway.networking.k8s.io" in message


def test_a_crd_lacking_the_version_cilium_needs_is_refused():
    text = bundle(*STANDARD[:4], crd("referencegrants", ("v1",)))
    with pytest.raises(
        ga.CrdBundleError, match=r"referencegrants\.gateway\.networking\.k8s\.io serves v1, Cilium needs v1beta1"
    ):
        load(text)


def test_no_crd_and_no_yaml_are_refused():
    with pytest.raises(ga.CrdBundleError, match="no CustomResourceDefinition"):
        ga.load_crds(OTHER, digest(OTHER), [], "v1.4.1")
    broken = "kind: [\n"
    with pytest.raises(ga.CrdBundleError, match="not YAML"):
        ga.load_crds(broken, digest(broken), [], "v1.4.1")


def test_the_crd_source_is_the_program_or_k3s():
    source = ga.crd_source(PINNED, V("1.16.19"))
    assert source is not None
    assert (source.installer, source.bundle, source.channel, source.sha256) == (
        "program",
        "v1.1.0",
        "experimental",
        SHA,
    )
    assert (
        source.url
        == "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.1.0/experimental-install.yaml"
    )
    assert "tlsroutes.gateway.networking.k8s.io" in source.required
    local = ga.crd_source(cfg(crds={"file": "/srv/b.yaml", "sha256": SHA}), V("1.19.6"))
    assert local is not None and (local.url, local.file) == (None, "/srv/b.yaml")
    k3s = ga.crd_source(cfg(), V("1.19.6"), "v1.37.1+k3s1", ("traefik",))
    assert k3s is not None and (k3s.installer, k3s.bundle, k3s.url) == ("k3s", "v1.6.1", None)


# --- what the cluster must show first: the gateway-api-crds check's expectations --------------------------


def test_the_program_checks_that_no_other_owner_has_the_crds_it_makes():
    expect = ga.crds_check_expect(True, PINNED, V("1.19.6"), "v1.33.3+k3s1", ["traefik", "servicelb"])
    assert expect == {"required": NEEDS_1_19.required_names, "existing": False}
    assert ga.crds_check_expect(False, PINNED, V("1.19.6"), "v1.33.3+k3s1", []) is None


@pytest.mark.parametrize(
    ("section", "k3s_version"),
    [({"crds": {"external": True}}, "v1.33.3+k3s1"), ({}, "v1.37.1+k3s1")],
    ids=["external", "k3s-1.37"],
)
def test_crds_of_another_installer_must_be_there_serving_what_cilium_needs(section, k3s_version):
    expect = ga.crds_check_expect(True, cfg(**section), V("1.19.6"), k3s_version, ["traefik"])
    assert expect is not None and expect["existing"] is True
    assert expect["serves"] == [
        "gatewayclasses.gateway.networking.k8s.io:v1",
        "gateways.gateway.networking.k8s.io:v1",
        "httproutes.gateway.networking.k8s.io:v1",
        "grpcroutes.gateway.networking.k8s.io:v1",
        "referencegrants.gateway.networking.k8s.io:v1beta1",
    ]
    assert ga.program_crds(True, cfg(**section), V("1.19.6"), k3s_version, ["traefik"], Path(".")) == []


def test_external_crds_take_no_bundle():
    with pytest.raises(ValidationError, match="set external or a bundle, not both"):
        cfg(crds={"external": True, "sha256": SHA})
    assert problems(True, False, cfg(crds={"external": True})) == []


# --- test objects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "api", "where"),
    [
        ("1.14.19", "gateway.networking.k8s.io/v1beta1", None),
        (
            "1.15.19",
            "gateway.networking.k8s.io/v1",
            ("infrastructure", {"annotations": {"io.cilium/lb-ipam-ips": "192.168.56.245"}}),
        ),
        (
            "1.16.19",
            "gateway.networking.k8s.io/v1",
            ("infrastructure", {"annotations": {"lbipam.cilium.io/ips": "192.168.56.245"}}),
        ),
        ("1.19.6", "gateway.networking.k8s.io/v1", ("addresses", [{"type": "IPAddress", "value": "192.168.56.245"}])),
    ],
)
def test_the_gateway_asks_for_its_address_the_way_each_release_reads(version, api, where):
    address = ga.gateway_address(L2, avoid="192.168.56.246")
    assert address == "192.168.56.245"
    gateway = ga.gateway(cfg(), V(version), "k3s-cilium-verify", address=address)
    assert gateway["apiVersion"] == api
    assert gateway["metadata"] == {
        "name": "smoke-gateway",
        "namespace": "k3s-cilium-verify",
        "labels": {"app.kubernetes.io/part-of": "k3s-cilium"},
    }
    assert gateway["spec"]["gatewayClassName"] == "cilium"
    assert gateway["spec"]["listeners"] == [
        {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "Same"}}}
    ]
    extra = {key: value for key, value in gateway["spec"].items() if key not in ("gatewayClassName", "listeners")}
    assert extra == ({where[0]: where[1]} if where else {})


def test_a_host_network_gateway_listens_above_1023_and_asks_no_address():
    gateway = ga.gateway(cfg(hostNetwork=True), V("1.19.6"), "k3s-cilium-verify", address="192.168.56.245")
    assert gateway["spec"]["listeners"][0]["port"] == 8080
    assert "addresses" not in gateway["spec"]


def test_small_pools_leave_the_gateway_address_to_lb_ipam():
    tiny = LoadBalancer.model_validate(
        {"mode": "l2", "pools": [{"name": "lan", "blocks": ["192.168.56.240/31"]}], "l2": {"interfaces": ["^eth0$"]}}
    )
    assert ga.gateway_address(tiny) is None
    assert ga.gateway_address(NONE) is None


def test_the_route_sends_everything_to_the_smoke_service():
    route = ga.http_route(V("1.13.18"), "k3s-cilium-verify", "smoke", 80)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1beta1"
    assert route["spec"] == {
        "parentRefs": [{"name": "smoke-gateway", "sectionName": "http"}],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": "smoke", "port": 80}],
            }
        ],
    }


def test_verify_expectations_per_mode():
    expect = ga.verify_expectations(cfg(), V("1.19.6"), L2, "k3s-cilium-verify", address="192.168.56.245")
    assert expect == {
        "gatewayclass-accepted": {"gatewayClass": "cilium"},
        "gateway-address": {
            "gateway": "k3s-cilium-verify/smoke-gateway",
            "within": ["192.168.56.240/29"],
            "address": "192.168.56.245",
        },
        "probes": {"probes": ["gateway"], "minProbes": 1},
    }
    old = ga.verify_expectations(cfg(), V("1.14.19"), L2, "k3s-cilium-verify", address="192.168.56.245")
    assert "address" not in old["gateway-address"]
    host = ga.verify_expectations(cfg(hostNetwork=True), V("1.19.6"), NONE, "ns", ["10.0.0.10", "10.0.0.11"])
    assert host["gateway-address"] == {"gateway": "ns/smoke-gateway", "nodeAddresses": ["10.0.0.10", "10.0.0.11"]}
    assert ga.probe_target(cfg(hostNetwork=True), "10.0.0.10") == "10.0.0.10:8080"
    assert ga.probe_target(cfg(), "fd00::5") == "[fd00::5]:80"


def test_the_expectations_fit_the_checks():
    import verification.gateway_api  # noqa: F401
    from verification.expectations import CHECKS, validate_expectations

    expect = ga.verify_expectations(cfg(), V("1.19.6"), L2, "k3s-cilium-verify", address="192.168.56.245")
    for check, document in expect.items():
        validate_expectations(CHECKS[check].keys, document)


# --- plan -------------------------------------------------------------------------------------------


def test_the_plan_shows_switches_needs_and_the_bundle():
    entry = ga.plan(True, True, PINNED, V("1.19.6"), "v1.33.3+k3s1", ("servicelb", "traefik"))
    assert entry is not None
    assert ga.plan_text(entry) == [
        "gateway api / ingress: Gateway API and Ingress on (LoadBalancer Services)",
        "  needs kube-proxy replacement",
        "  needs Envoy (l7Proxy: true; the cilium-envoy DaemonSet (chart default))",
        "  needs a LoadBalancer mode (loadBalancer.mode) for the Gateway/Ingress Services",
        "  ingress load balancer mode: dedicated",
        "  CRDs: Gateway API v1.4.1 (standard) from "
        "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.4.1/standard-install.yaml",
        f"    sha256 {SHA}; installed before the Cilium release",
        "    required: gatewayclasses.gateway.networking.k8s.io, gateways.gateway.networking.k8s.io, "
        "httproutes.gateway.networking.k8s.io, grpcroutes.gateway.networking.k8s.io, "
        "referencegrants.gateway.networking.k8s.io",
        "  K3s ships Gateway API CRDs: no (this K3s release and k3s.disable install none)",
    ]


def test_the_plan_says_when_k3s_ships_the_crds():
    entry = ga.plan(True, False, cfg(), V("1.19.6"), "v1.37.0+k3s1", ("servicelb", "traefik"))
    assert entry is not None and entry["crds"]["installer"] == "k3s"
    lines = ga.plan_text(entry)
    assert lines[0] == "gateway api / ingress: Gateway API on (LoadBalancer Services)"
    assert any(line.startswith("  CRDs: K3s v1.37.0+k3s1 installs the Gateway API CRDs") for line in lines)


def test_a_plan_with_both_off_has_none():
    assert ga.plan(False, False, cfg(), V("1.19.6")) is None
    ingress = ga.plan(False, True, cfg(hostNetwork=True), V("1.15.19"))
    assert ingress is not None and "crds" not in ingress
    assert "  needs Envoy (l7Proxy: true; embedded in the agent)" in ga.plan_text(ingress)
