"""Gateway API and the Cilium ingress controller: the config, the refusals, the Helm values and the CRD bundle.

``features.gatewayApi`` turns on Cilium's Gateway API controller (GatewayClass
``cilium``), ``features.ingress`` its Ingress controller (IngressClass ``cilium``).
Both run their listeners in Envoy, reached through a LoadBalancer Service per
Gateway (or per Ingress, or one shared) or, from Cilium 1.16, on the nodes'
own addresses (host network mode). The Gateway API CRDs are not Cilium's: they
must exist before the operator starts, so the program installs the official
bundle of the version the pinned Cilium minor was built and tested against,
pinned by its sha256, BEFORE the Cilium release (or, on K3s 1.37+, leaves it to
K3s). Everything here is pure.

Facts and where they come from (the cilium/cilium source of each release tag
- 1.13.18, 1.14.19, 1.15.19, 1.16.19, 1.17.0, 1.18.0, 1.19.6, 1.20.0 -, its
``Documentation/network/servicemesh/gateway-api/installation.rst``
"Prerequisites", ``gateway-api.rst`` and ``operator/pkg/gateway-api/``; the charts
in ``../shared/cilium-chart/``):

- Gateway API version per Cilium minor (the "Prerequisites" CRD version, which is
  also the version ``go.mod`` builds against, give or take a patch):
  1.13 v0.5.1; 1.14 v0.7.0 ("Cilium supports v0.7.1", go.mod v0.7.1, the
  Prerequisites install v0.7.0); 1.15 v1.0.0; 1.16 v1.1.0; 1.17 v1.2.0;
  1.18 v1.3.0 (the 1.18 docs said v1.2.0 until cilium/cilium#44816, fixed by
  cilium/cilium#44972; go.mod of 1.18.0 is v1.3.1-pre); 1.19 v1.4.1;
  1.20 v1.6.1 (``Documentation/conf.py`` ``gateway_api_version``).
- The CRDs (and the version each must serve) without which the operator
  disables Gateway API ("Required GatewayAPI resources are not found"):
  1.13 and 1.14 have no check, but their controllers watch GatewayClass, Gateway,
  HTTPRoute (v1beta1) and ReferenceGrant (v1alpha2 in 1.13, v1beta1 in 1.14;
  ``referencegrant.go``), 1.14 also TLSRoute v1alpha2 (``gateway.go``); the
  docs install ReferenceGrant (1.13) and TLSRoute (1.14) from the experimental
  channel. 1.15 ``cell.go`` ``requiredGVK``: gatewayclasses, gateways, httproutes
  v1, referencegrants v1beta1, grpcroutes and tlsroutes v1alpha2 (both
  experimental in v1.0.0). 1.16: the same with grpcroutes v1, tlsroutes still
  v1alpha2, so the experimental channel is still needed (docs warning;
  kubernetes-sigs/gateway-api#3075, fixed in Cilium 1.17 by cilium/cilium#34212).
  1.17-1.19 ``requiredGVKs``: GatewayClass, Gateway, HTTPRoute, GRPCRoute v1 and
  ReferenceGrant v1beta1 - all in the standard channel; TLSRoute v1alpha2 is
  optional (``optionalGVKs``). 1.20 ``helpers/schemes.go`` ``RequiredGVKs``:
  GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, ReferenceGrant and
  BackendTLSPolicy, all v1 (standard channel of v1.6); ListenerSet, TCPRoute,
  UDPRoute optional. ``checkCRD`` looks the CRD up by name and requires the
  version in ``spec.versions``.
- So the bundle is ``experimental-install.yaml`` for 1.13-1.16 and
  ``standard-install.yaml`` for 1.17+, from
  ``https://github.com/kubernetes-sigs/gateway-api/releases/download/<v>/``.
  Every CRD in those carries the annotations ``gateway.networking.k8s.io/bundle-version``
  and ``gateway.networking.k8s.io/channel``. The release pages publish no
  checksums, so the stack must pin the sha256 itself.
- Prerequisites: the L7 proxy (``l7Proxy=true``, the chart default) in every
  release; kube-proxy replacement in the 1.19+ docs and the 1.19 operator
  (``newGatewayAPIPreconditions``: "Gateway API support requires
  kube-proxy-replacement enabled"); earlier releases also accepted
  ``nodePort.enabled``, which this project does not use: it refuses both
  features without KPR. The docs of the Ingress controller say the same.
- Envoy: embedded in the agent up to 1.15 (chart ``envoy.enabled`` false, 1.14
  and 1.15); from 1.16 the chart runs the ``cilium-envoy`` DaemonSet unless
  ``envoy.enabled`` is false or ``upgradeCompatibility`` is below 1.16
  (``_helpers.tpl`` ``envoyDaemonSetEnabled``; false whenever ``l7Proxy`` is
  false). Either works; nothing here sets ``envoy.enabled``.
- Host network mode (``gatewayAPI.hostNetwork.enabled``,
  ``ingressController.hostNetwork.enabled``): charts 1.16+ ("Supported since
  Cilium 1.16+"). The Gateway's Service becomes a NodePort Service, listeners
  bind on every node, ports up to 1023 need NET_BIND_SERVICE (docs
  ``host-network-mode.rst``), and the Gateway's status addresses are the nodes'
  first addresses, at most 16 (``gateway_reconcile.go`` ``setAddressStatus``).
- Without an address a Gateway stays ``Programmed=False``, reason
  ``AddressNotAssigned`` ("Gateway waiting for address"), so a LoadBalancer mode
  or host network mode is required. Node IPAM serves a Service without a
  ``loadBalancerClass`` only from 1.17 (``defaultLBServiceIPAM``); the Gateway's
  and dedicated Ingresses' Services have none, hence no node IPAM before 1.17.
- A Gateway asks LB-IPAM for an address with ``spec.addresses`` (type
  IPAddress) from 1.17 (docs ``addresses.rst``), with the LB-IPAM annotation in
  ``spec.infrastructure.annotations`` from 1.15 (``ingestion/gateway.go`` copies
  them to the Service); 1.13 and 1.14 cannot ask. The GatewayClass ``cilium`` is
  made by the chart when the Gateway API is on; up to 1.15 only when the cluster
  serves the GatewayClass API at install time (``cilium-gateway-api-class.yaml``),
  hence the CRDs before the release.
- Gateway API served versions: v1 for GatewayClass, Gateway, HTTPRoute from
  v1.0.0 (Cilium 1.15+ uses them); v1beta1 before.
- K3s: 1.34-1.36 install the Gateway API CRDs with the packaged Traefik's
  ``traefik-crd`` HelmChart (k3s-io/k3s#14557), so not when ``traefik`` is in
  ``k3s.disable`` (rancher/rke2-docs#522: before the April 2026 releases
  disabling Traefik later also deleted them). From 1.37 a separate HelmChart
  ``gateway-api-crd`` installs the standard channel v1.6.1 with
  ``takeOwnership``/``forceConflicts`` whether or not Traefik is disabled
  (k3s-io/k3s#14564, #14565; cozystack/ansible-cozystack#77); it is turned off
  with ``--disable gateway-api-crd`` (k3s-io/k3s#14681). What the cluster really
  has is checked before the program makes the CRDs (the ``gateway-api-crds`` check of
  verification/gateway_api.py).
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from packaging.version import Version
from pydantic import AfterValidator, Field, model_validator

from stacks.load_balancer import PART_OF, LoadBalancer, ip_annotation
from stacks.model import ConfigModel

Channel = Literal["standard", "experimental"]
LoadbalancerMode = Literal["dedicated", "shared"]

GROUP = "gateway.networking.k8s.io"
BUNDLE_ANNOTATION = f"{GROUP}/bundle-version"
RELEASE_URL = "https://github.com/kubernetes-sigs/gateway-api/releases/download/{version}/{channel}-install.yaml"
GATEWAY_CLASS = "cilium"
INGRESS_CLASS = "cilium"
# The verification's test objects (next to the smoke workload, components/verify.py).
GATEWAY_NAME = "smoke-gateway"
ROUTE_NAME = "smoke-route"
LISTENER_NAME = "http"
GATEWAY_PROBE = "gateway"
# Listener ports: 80 behind a LoadBalancer; in host network mode one above 1023 (Envoy has no
# NET_BIND_SERVICE by default, docs host-network-mode.rst).
LB_LISTENER_PORT = 80
HOST_NETWORK_LISTENER_PORT = 8080

V1_15, V1_16, V1_17 = (Version(v) for v in ("1.15", "1.16", "1.17"))
HOST_NETWORK_SINCE = V1_16
NODE_IPAM_SINCE = V1_17
ADDRESSES_SINCE = V1_17
INFRASTRUCTURE_SINCE = V1_15
GATEWAY_V1_SINCE = V1_15


def crd_name(plural: str) -> str:
    return f"{plural}.{GROUP}"


@dataclass(frozen=True)
class Needs:
    """What one Cilium minor needs of the Gateway API CRDs (see the module docstring)."""

    gateway_api: str
    channel: Channel
    # (CRD name, version it must serve): without them the operator runs without Gateway API.
    required: tuple[tuple[str, str], ...]
    optional: tuple[tuple[str, str], ...] = ()

    @property
    def required_names(self) -> list[str]:
        return [name for name, _ in self.required]

    @property
    def default_url(self) -> str:
        return RELEASE_URL.format(version=self.gateway_api, channel=self.channel)


def _crds(*pairs: str) -> tuple[tuple[str, str], ...]:
    """``"gateways/v1"`` -> ("gateways.gateway.networking.k8s.io", "v1")."""
    return tuple((crd_name(plural), version) for plural, _, version in (pair.partition("/") for pair in pairs))


_CORE_V1 = ("gatewayclasses/v1", "gateways/v1", "httproutes/v1")
_STANDARD_1_17 = _crds(*_CORE_V1, "grpcroutes/v1", "referencegrants/v1beta1")
_TLSROUTE_ALPHA = _crds("tlsroutes/v1alpha2")
NEEDS: dict[str, Needs] = {
    "1.13": Needs(
        "v0.5.1",
        "experimental",
        _crds("gatewayclasses/v1beta1", "gateways/v1beta1", "httproutes/v1beta1", "referencegrants/v1alpha2"),
    ),
    "1.14": Needs(
        "v0.7.0",
        "experimental",
        _crds(
            "gatewayclasses/v1beta1",
            "gateways/v1beta1",
            "httproutes/v1beta1",
            "referencegrants/v1beta1",
            "tlsroutes/v1alpha2",
        ),
    ),
    "1.15": Needs(
        "v1.0.0",
        "experimental",
        _crds(*_CORE_V1, "referencegrants/v1beta1", "grpcroutes/v1alpha2", "tlsroutes/v1alpha2"),
    ),
    "1.16": Needs(
        "v1.1.0", "experimental", _crds(*_CORE_V1, "grpcroutes/v1", "referencegrants/v1beta1", "tlsroutes/v1alpha2")
    ),
    "1.17": Needs("v1.2.0", "standard", _STANDARD_1_17, _TLSROUTE_ALPHA),
    "1.18": Needs("v1.3.0", "standard", _STANDARD_1_17, _TLSROUTE_ALPHA),
    "1.19": Needs("v1.4.1", "standard", _STANDARD_1_17, _TLSROUTE_ALPHA),
    "1.20": Needs(
        "v1.6.1",
        "standard",
        _crds(*_CORE_V1, "grpcroutes/v1", "tlsroutes/v1", "referencegrants/v1", "backendtlspolicies/v1"),
        _crds("listenersets/v1", "tcproutes/v1", "udproutes/v1"),
    ),
}


def minor(version: Version) -> str:
    return f"{version.major}.{version.minor}"


def needs(cilium: Version) -> Needs | None:
    """The Gateway API CRDs the Cilium minor needs; None for a minor this module does not know."""
    return NEEDS.get(minor(cilium))


# --- K3s ------------------------------------------------------------------------------------------

K3S_TRAEFIK_CRD = "traefik-crd"
K3S_GATEWAY_API_CRD = "gateway-api-crd"
K3S_TRAEFIK_CRD_GATEWAY = ((1, 34), (1, 36))
K3S_GATEWAY_API_CRD_SINCE = (1, 37)
# What K3s' gateway-api-crd chart installs (k3s-io/k3s#14564): standard channel v1.6.1, and the versions
# each CRD serves there (the `kubectl get crd` listing in that issue and in k3s-io/k3s#14560).
K3S_BUNDLE = "v1.6.1"
K3S_BUNDLE_SERVES: dict[str, tuple[str, ...]] = {
    crd_name("gatewayclasses"): ("v1", "v1beta1"),
    crd_name("gateways"): ("v1", "v1beta1"),
    crd_name("httproutes"): ("v1", "v1beta1"),
    crd_name("grpcroutes"): ("v1",),
    crd_name("referencegrants"): ("v1", "v1beta1"),
    crd_name("tlsroutes"): ("v1",),
    crd_name("backendtlspolicies"): ("v1",),
    crd_name("listenersets"): ("v1",),
    crd_name("tcproutes"): ("v1",),
    crd_name("udproutes"): ("v1",),
}
_K3S_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.\d+")


def k3s_minor(k3s_version: str) -> tuple[int, int] | None:
    """``"v1.33.3+k3s1"`` -> (1, 33)."""
    match = _K3S_VERSION.match(k3s_version.strip())
    return (int(match[1]), int(match[2])) if match else None


@dataclass(frozen=True)
class K3sCrds:
    """Gateway API CRDs a K3s release installs by itself."""

    release: str  # the HelmChart (and Helm release) in kube-system
    bundle: str | None  # known bundle version, None when it depends on the packaged chart
    note: str


def k3s_ships(k3s_version: str, disabled: Sequence[str]) -> K3sCrds | None:
    """Whether the pinned K3s installs Gateway API CRDs itself, given ``k3s.disable``."""
    found = k3s_minor(k3s_version)
    if found is None:
        return None
    if found >= K3S_GATEWAY_API_CRD_SINCE and K3S_GATEWAY_API_CRD not in disabled:
        return K3sCrds(
            K3S_GATEWAY_API_CRD,
            K3S_BUNDLE,
            f"K3s {k3s_version} installs the Gateway API CRDs (standard channel {K3S_BUNDLE}) with its "
            f"'{K3S_GATEWAY_API_CRD}' HelmChart, taking them over (takeOwnership) even with traefik disabled",
        )
    low, high = K3S_TRAEFIK_CRD_GATEWAY
    if low <= found <= high and "traefik" not in disabled:
        return K3sCrds(
            K3S_TRAEFIK_CRD,
            None,
            f"K3s {k3s_version} installs Gateway API CRDs with the packaged Traefik's '{K3S_TRAEFIK_CRD}' HelmChart",
        )
    return None


def missing_from(needs_: Needs, serves: Mapping[str, Sequence[str]]) -> list[str]:
    """``name version`` of each required CRD version ``serves`` lacks."""
    return [f"{name} {version}" for name, version in needs_.required if version not in serves.get(name, ())]


# --- config ------------------------------------------------------------------------------------------

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _sha256(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(value):
        raise ValueError("must be a sha256 digest: 64 hex digits (`curl -sL <url> | sha256sum`)")
    return value


def _url(value: str | None) -> str | None:
    if value is not None and not re.match(r"^https?://\S+$", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


class Crds(ConfigModel):
    url: Annotated[str | None, AfterValidator(_url)] = Field(
        None,
        description="Where the program fetches the Gateway API CRD bundle; default the official "
        "`standard-install.yaml` (or `experimental-install.yaml`) of the version the Cilium minor needs.",
    )
    file: str | None = Field(None, description="A local copy of the bundle on the Pulumi host, instead of `url`.")
    sha256: Annotated[str | None, AfterValidator(_sha256)] = Field(
        None,
        description="sha256 of the bundle (required when the program installs the CRDs): `curl -sL <url> | sha256sum`.",
    )
    external: bool = Field(
        False,
        description="The CRDs are installed by something else (another tool, by hand): the program makes none and "
        "checks before the release that they serve what the Cilium minor needs.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Crds:
        if self.url is not None and self.file is not None:
            raise ValueError("set url or file, not both")
        if self.external and (self.url or self.file or self.sha256):
            raise ValueError("external CRDs have no url, file or sha256: set external or a bundle, not both")
        return self

    @property
    def explicit(self) -> bool:
        return self.url is not None or self.file is not None or self.sha256 is not None or self.external


class GatewayApi(ConfigModel):
    crds: Crds = Field(default_factory=Crds, description="The Gateway API CRD bundle (features.gatewayApi).")
    host_network: bool = Field(
        False,
        description="Expose Gateways (and Ingresses) on the nodes' own addresses instead of a LoadBalancer "
        "Service (Cilium 1.16+).",
    )
    ingress_loadbalancer_mode: LoadbalancerMode | None = Field(
        None,
        description="Cilium Ingress: one LoadBalancer per Ingress (`dedicated`, the chart default) or one for "
        "all (`shared`); default `shared` in host network mode.",
    )


# --- refusals ------------------------------------------------------------------------------------------


def _unreachable(cfg: GatewayApi, cilium: Version, lb_mode: str, key: str) -> str | None:
    """Why a Gateway (Ingress) would get no address; None when it gets one."""
    if cfg.host_network:
        return None
    what = (
        "a Gateway stays Programmed=False (AddressNotAssigned)"
        if key == "features.gatewayApi"
        else "an Ingress gets no address"
    )
    host = (
        "or set gatewayApi.hostNetwork: true"
        if cilium >= HOST_NETWORK_SINCE
        else f"(host network mode needs Cilium {HOST_NETWORK_SINCE}+)"
    )
    if lb_mode == "none":
        return (
            f"{key}: loadBalancer.mode is none, so nothing gives the LoadBalancer Service Cilium makes an address "
            f"and {what}; set loadBalancer.mode (l2, bgp or nodeipam) {host}"
        )
    if lb_mode == "nodeipam" and cilium < NODE_IPAM_SINCE:
        return (
            f"{key}: node IPAM in Cilium {cilium} serves only Services of loadBalancerClass io.cilium/node, which "
            f"the Services Cilium makes lack (defaultLBServiceIPAM is {NODE_IPAM_SINCE}+), so {what}; use "
            f"loadBalancer.mode l2 or bgp {host}"
        )
    return None


def problems(
    gateway_api_on: bool,
    ingress_on: bool,
    cfg: GatewayApi,
    cilium: Version,
    kpr_on: bool,
    l7_proxy_on: bool,
    lb_mode: str,
    k3s_version: str | None = None,
    k3s_disabled: Sequence[str] = (),
) -> list[str]:
    """Problems of ``features.gatewayApi`` / ``features.ingress`` and the ``gatewayApi`` section in the stack."""
    found: list[str] = []
    switched = [key for key, on in (("features.gatewayApi", gateway_api_on), ("features.ingress", ingress_on)) if on]
    if not switched:
        if cfg.host_network or cfg.crds.explicit or cfg.ingress_loadbalancer_mode is not None:
            found.append(
                "gatewayApi: is set but features.gatewayApi and features.ingress are off; remove it or turn one on"
            )
        return found
    for key in switched:
        if not kpr_on:
            found.append(
                f"{key}: needs kube-proxy replacement (Cilium's Gateway API and Ingress prerequisites; the 1.19 "
                "operator turns Gateway API off without it): use tier kpr or above"
            )
        if not l7_proxy_on:
            found.append(
                f"{key}: needs the L7 proxy (Envoy terminates the listeners) but cilium.values sets l7Proxy: false; "
                "remove that"
            )
        problem = _unreachable(cfg, cilium, lb_mode, key)
        if problem:
            found.append(problem)
    if cfg.host_network and cilium < HOST_NETWORK_SINCE:
        found.append(
            f"gatewayApi.hostNetwork: host network mode is in Cilium from {HOST_NETWORK_SINCE} (chart "
            f"gatewayAPI.hostNetwork); cilium.version is {cilium}: raise it or use a LoadBalancer mode"
        )
    if cfg.ingress_loadbalancer_mode is not None and not ingress_on:
        found.append("gatewayApi.ingressLoadbalancerMode: is set but features.ingress is off; remove it")
    if cfg.host_network and ingress_on and cfg.ingress_loadbalancer_mode == "dedicated":
        found.append(
            "gatewayApi.ingressLoadbalancerMode: dedicated in host network mode needs a unique "
            "ingress.cilium.io/host-listener-port annotation on every Ingress (docs: ingress, 'Host network mode'); "
            "use shared (listener port 8080 on every node)"
        )
    if gateway_api_on:
        found += _crd_problems(cfg, cilium, k3s_version, k3s_disabled)
    elif cfg.crds.explicit:
        found.append("gatewayApi.crds: is set but features.gatewayApi is off (Ingress needs no CRDs); remove it")
    return found


def _crd_problems(cfg: GatewayApi, cilium: Version, k3s_version: str | None, disabled: Sequence[str]) -> list[str]:
    wanted = needs(cilium)
    if wanted is None:
        known = ", ".join(NEEDS)
        return [
            f"features.gatewayApi: Cilium {cilium} is not a minor whose Gateway API needs are known ({known}); "
            "pin one of them"
        ]
    shipped = k3s_ships(k3s_version, disabled) if k3s_version else None
    if shipped is not None and shipped.release == K3S_TRAEFIK_CRD:
        return [
            f"features.gatewayApi: {shipped.note}, which would own the CRDs Cilium needs besides this program "
            f"(whichever comes second fails or rewrites them): keep 'traefik' in k3s.disable"
        ]
    if shipped is not None:
        missing = missing_from(wanted, K3S_BUNDLE_SERVES)
        if missing:
            return [
                f"features.gatewayApi: {shipped.note}; Cilium {minor(cilium)} needs {', '.join(missing)}, which "
                f"that bundle lacks (Cilium {minor(cilium)} wants Gateway API {wanted.gateway_api} "
                f"{wanted.channel}): add '{K3S_GATEWAY_API_CRD}' to k3s.disable so the program installs them"
            ]
        if cfg.crds.explicit:
            return [
                f"gatewayApi.crds: {shipped.note}, so the program installs none; remove gatewayApi.crds or add "
                f"'{K3S_GATEWAY_API_CRD}' to k3s.disable"
            ]
        return []
    if cfg.crds.sha256 is None and not cfg.crds.external:
        source = cfg.crds.file or cfg.crds.url or wanted.default_url
        fetch = f"sha256sum {source}" if cfg.crds.file else f"curl -sL {source} | sha256sum"
        return [
            f"gatewayApi.crds.sha256: the Gateway API CRD bundle ({wanted.gateway_api} {wanted.channel}, for "
            f"Cilium {minor(cilium)}) must be pinned; its release publishes no checksum: check the file and "
            f"set the output of `{fetch}`"
        ]
    return []


# --- the CRD bundle ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrdSource:
    """Who installs the Gateway API CRDs, and from where."""

    installer: Literal["program", "k3s", "external"]
    bundle: str | None
    channel: Channel | None
    url: str | None
    file: str | None
    sha256: str | None
    required: tuple[str, ...]
    note: str


def crd_source(
    cfg: GatewayApi, cilium: Version, k3s_version: str | None = None, k3s_disabled: Sequence[str] = ()
) -> CrdSource | None:
    """None when the Cilium minor's needs are unknown (problems() refuses that)."""
    wanted = needs(cilium)
    if wanted is None:
        return None
    required = tuple(wanted.required_names)
    shipped = k3s_ships(k3s_version, k3s_disabled) if k3s_version else None
    if shipped is not None and shipped.release == K3S_GATEWAY_API_CRD:
        return CrdSource(
            "k3s", shipped.bundle, "standard", None, None, None, required, f"{shipped.note}: the program installs none"
        )
    if cfg.crds.external:
        return CrdSource(
            "external",
            wanted.gateway_api,
            wanted.channel,
            None,
            None,
            None,
            required,
            f"installed outside this program (gatewayApi.crds.external): checked before the Cilium release to serve "
            f"what Cilium {minor(cilium)} needs (Gateway API {wanted.gateway_api} {wanted.channel})",
        )
    url = None if cfg.crds.file else (cfg.crds.url or wanted.default_url)
    return CrdSource(
        "program",
        wanted.gateway_api,
        wanted.channel,
        url,
        cfg.crds.file,
        cfg.crds.sha256,
        required,
        f"the program installs Gateway API {wanted.gateway_api} ({wanted.channel} channel) before the Cilium release",
    )


class CrdBundleError(ValueError):
    """The CRD bundle is not the one pinned, or lacks what Cilium needs."""


# Bound on fetching the bundle where Pulumi runs.
FETCH_TIMEOUT_SECONDS = 60


def read_bundle(source: CrdSource, project_root: Path) -> bytes:
    """The bundle's bytes: the local ``file`` (relative to the project), or ``url`` fetched where Pulumi runs."""
    try:
        if source.file:
            path = Path(source.file).expanduser()
            return (path if path.is_absolute() else project_root / path).read_bytes()
        assert source.url is not None
        with urllib.request.urlopen(source.url, timeout=FETCH_TIMEOUT_SECONDS) as response:
            data: bytes = response.read()
            return data
    except (OSError, urllib.error.URLError) as error:
        where = source.file or source.url
        raise CrdBundleError(
            f"gatewayApi.crds: cannot read the Gateway API CRD bundle {where} ({error}); check the path or the "
            "network, or set gatewayApi.crds.file to a local copy"
        ) from None


def crds_check_expect(
    gateway_api_on: bool, cfg: GatewayApi, cilium: Version, k3s_version: str, k3s_disabled: Sequence[str]
) -> dict[str, Any] | None:
    """``--expect`` of the ``gateway-api-crds`` check before the release (None without Gateway API): none of the
    CRDs the program makes may belong to another owner; CRDs installed by K3s or another tool must exist and serve
    the versions the Cilium minor needs."""
    source = crd_source(cfg, cilium, k3s_version, k3s_disabled) if gateway_api_on else None
    wanted = needs(cilium)
    if source is None or wanted is None:
        return None
    expect: dict[str, Any] = {"required": list(source.required), "existing": source.installer != "program"}
    if source.installer != "program":
        expect["serves"] = [f"{name}:{version}" for name, version in wanted.required]
    return expect


def program_crds(
    gateway_api_on: bool,
    cfg: GatewayApi,
    cilium: Version,
    k3s_version: str,
    k3s_disabled: Sequence[str],
    project_root: Path,
) -> list[dict[str, Any]]:
    """The CRDs the program creates before the Cilium release, read and checked (:func:`load_crds`); none when
    Gateway API is off or K3s installs them. Raises :class:`CrdBundleError`."""
    source = crd_source(cfg, cilium, k3s_version, k3s_disabled) if gateway_api_on else None
    wanted = needs(cilium)
    if source is None or source.installer != "program" or wanted is None or source.sha256 is None:
        return []
    assert source.bundle is not None
    return load_crds(read_bundle(source, project_root), source.sha256, source.required, source.bundle, wanted.required)


def load_crds(
    content: str | bytes,
    sha256: str,
    required: Sequence[str],
    bundle_version: str,
    served: Mapping[str, str] | Sequence[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions of a Gateway API bundle, after checking it.

    Refused (:class:`CrdBundleError`, every finding named): a sha256 other than the pinned one; YAML that does
    not parse; a CRD whose ``gateway.networking.k8s.io/bundle-version`` annotation is not ``bundle_version``;
    a ``required`` CRD absent; a ``served`` (name, version) the CRD does not list in ``spec.versions``. Other
    documents (the admission webhook of old bundles, the ``safe-upgrades`` ValidatingAdmissionPolicy of newer
    ones, Namespaces) are dropped. Each CRD gets the label ``app.kubernetes.io/part-of: k3s-cilium``, which
    tells :func:`detect_crds` they are the program's.
    """
    data = content.encode() if isinstance(content, str) else content
    seen = hashlib.sha256(data).hexdigest()
    wanted = sha256.strip().lower().removeprefix("sha256:")
    if seen != wanted:
        raise CrdBundleError(
            f"gatewayApi.crds: the Gateway API CRD bundle's sha256 is {seen}, the pinned gatewayApi.crds.sha256 is "
            f"{wanted}; a changed or other file: check it, then pin its digest"
        )
    try:
        documents = list(yaml.safe_load_all(data.decode()))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CrdBundleError(f"gatewayApi.crds: the Gateway API CRD bundle is not YAML ({error})") from None
    crds = [
        copy.deepcopy(document)
        for document in documents
        if isinstance(document, dict)
        and document.get("kind") == "CustomResourceDefinition"
        and str(document.get("apiVersion", "")).startswith("apiextensions.k8s.io/")
    ]
    found: list[str] = []
    by_name: dict[str, dict[str, Any]] = {}
    for crd in crds:
        metadata = crd.setdefault("metadata", {})
        name = str(metadata.get("name", "(unnamed)"))
        by_name[name] = crd
        annotations = metadata.get("annotations") or {}
        version = annotations.get(BUNDLE_ANNOTATION)
        if version != bundle_version:
            seen_version = f"'{version}'" if version else "no such annotation"
            found.append(f"CRD {name}: {BUNDLE_ANNOTATION} is {seen_version}, expected '{bundle_version}'")
        metadata["labels"] = {**(metadata.get("labels") or {}), **PART_OF}
    for name in required:
        if name not in by_name:
            found.append(f"CRD {name} is missing (Cilium needs it)")
    pairs = list(served.items()) if isinstance(served, Mapping) else list(served)
    for name, version in pairs:
        if name not in by_name:
            continue
        spec = by_name[name].get("spec") or {}
        versions = [str(v.get("name")) for v in spec.get("versions") or [] if isinstance(v, dict)]
        if version not in versions:
            found.append(f"CRD {name} serves {', '.join(versions) or 'no version'}, Cilium needs {version}")
    if not crds:
        found.append("no CustomResourceDefinition in it")
    if found:
        raise CrdBundleError("gatewayApi.crds: the Gateway API CRD bundle: " + "; ".join(found))
    return crds


# --- Helm values -------------------------------------------------------------------------------------


def ingress_loadbalancer_mode(cfg: GatewayApi) -> LoadbalancerMode:
    return cfg.ingress_loadbalancer_mode or ("shared" if cfg.host_network else "dedicated")


def helm_values(gateway_api_on: bool, ingress_on: bool, cfg: GatewayApi, cilium: Version) -> dict[str, Any]:
    """Both switches in both states; with both off every value equals the chart's default.

    ``l7Proxy: true`` (the chart default) is rendered only when a switch is on, so a stack with both off keeps
    whatever ``cilium.values`` says. ``gatewayAPI.gatewayClass.create`` (1.16+) is ``"true"`` when on, so a
    missing CRD fails the release instead of silently skipping the GatewayClass; ``auto`` (the default) when off.
    """
    host = cfg.host_network and cilium >= HOST_NETWORK_SINCE
    gateway: dict[str, Any] = {"enabled": gateway_api_on}
    ingress: dict[str, Any] = {
        "enabled": ingress_on,
        "loadbalancerMode": ingress_loadbalancer_mode(cfg) if ingress_on else "dedicated",
    }
    if cilium >= HOST_NETWORK_SINCE:
        gateway["hostNetwork"] = {"enabled": gateway_api_on and host}
        gateway["gatewayClass"] = {"create": "true" if gateway_api_on else "auto"}
        ingress["hostNetwork"] = {"enabled": ingress_on and host}
    values: dict[str, Any] = {"gatewayAPI": gateway, "ingressController": ingress}
    if gateway_api_on or ingress_on:
        values["l7Proxy"] = True
    return values


# --- the verification's test objects -----------------------------------------------------------------


def api_version(cilium: Version) -> str:
    """Gateway/HTTPRoute apiVersion: v1 in the Gateway API v1.0+ bundles (Cilium 1.15+), v1beta1 before."""
    return f"{GROUP}/v1" if cilium >= GATEWAY_V1_SINCE else f"{GROUP}/v1beta1"


def listener_port(cfg: GatewayApi) -> int:
    return HOST_NETWORK_LISTENER_PORT if cfg.host_network else LB_LISTENER_PORT


def gateway_address(lb: LoadBalancer, avoid: str | None = None) -> str | None:
    """The address the test Gateway asks LB-IPAM for: in the first pool's first block, the last but two (the
    LoadBalancer test Service takes the last but one, ``avoid``); None when the block is too small."""
    if not lb.pools:
        return None
    first, last, _ = next(lb.pools[0].ranges())
    candidate = last - 2
    if int(last) - int(first) + 1 < 4 or str(candidate) == avoid:
        return None
    return str(candidate)


def gateway(
    cfg: GatewayApi,
    cilium: Version,
    namespace: str,
    name: str = GATEWAY_NAME,
    address: str | None = None,
) -> dict[str, Any]:
    """A Gateway of class ``cilium`` with one HTTP listener for routes of its own namespace. ``address`` (from
    LB-IPAM) goes to ``spec.addresses`` (1.17+) or the LB-IPAM annotation in ``spec.infrastructure`` (1.15,
    1.16); 1.13/1.14 and host network mode take what they get."""
    spec: dict[str, Any] = {
        "gatewayClassName": GATEWAY_CLASS,
        "listeners": [
            {
                "name": LISTENER_NAME,
                "protocol": "HTTP",
                "port": listener_port(cfg),
                "allowedRoutes": {"namespaces": {"from": "Same"}},
            }
        ],
    }
    if address is not None and not cfg.host_network:
        ipaddress.ip_address(address)
        if cilium >= ADDRESSES_SINCE:
            spec["addresses"] = [{"type": "IPAddress", "value": address}]
        elif cilium >= INFRASTRUCTURE_SINCE:
            spec["infrastructure"] = {"annotations": {ip_annotation(cilium): address}}
    return {
        "apiVersion": api_version(cilium),
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(PART_OF)},
        "spec": spec,
    }


def http_route(
    cilium: Version,
    namespace: str,
    service: str,
    service_port: int,
    name: str = ROUTE_NAME,
    gateway_name: str = GATEWAY_NAME,
) -> dict[str, Any]:
    """An HTTPRoute sending every request (any host, path ``/``) through the Gateway to ``service``."""
    return {
        "apiVersion": api_version(cilium),
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(PART_OF)},
        "spec": {
            "parentRefs": [{"name": gateway_name, "sectionName": LISTENER_NAME}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": service, "port": service_port}],
                }
            ],
        },
    }


def verify_expectations(
    cfg: GatewayApi,
    cilium: Version,
    lb: LoadBalancer,
    namespace: str,
    node_addresses: Sequence[str] = (),
    address: str | None = None,
    name: str = GATEWAY_NAME,
) -> dict[str, dict[str, Any]]:
    """``--expect`` of the checks ``gatewayclass-accepted`` and ``gateway-address``, and of the ``probes`` check
    of the ``gateway`` probe (its target: :func:`probe_target`)."""
    expect: dict[str, Any] = {"gateway": f"{namespace}/{name}"}
    if cfg.host_network or lb.mode == "nodeipam":
        if node_addresses:
            expect["nodeAddresses"] = list(node_addresses)
    elif lb.pools:
        expect["within"] = [text for pool in lb.pools for _, _, text in pool.ranges()]
        if address is not None and cilium >= INFRASTRUCTURE_SINCE:
            expect["address"] = address
    return {
        "gatewayclass-accepted": {"gatewayClass": GATEWAY_CLASS},
        "gateway-address": expect,
        "probes": {"probes": [GATEWAY_PROBE], "minProbes": 1},
    }


def probe_target(cfg: GatewayApi, address: str) -> str:
    """``ip:port`` the ``gateway`` probe GETs: the Gateway's (first status) address and its listener port."""
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{listener_port(cfg)}"


# --- plan ----------------------------------------------------------------------------------------------


def requirements(gateway_api_on: bool, ingress_on: bool, cfg: GatewayApi, cilium: Version) -> list[str]:
    """What the switches need of the rest of the stack, as the plan lists it."""
    if not (gateway_api_on or ingress_on):
        return []
    envoy = "embedded in the agent" if cilium < V1_16 else "the cilium-envoy DaemonSet (chart default)"
    lines = ["kube-proxy replacement", f"Envoy (l7Proxy: true; {envoy})"]
    if cfg.host_network and cilium >= HOST_NETWORK_SINCE:
        lines.append(f"host network mode: listeners on every node's addresses (test Gateway port {listener_port(cfg)})")
    else:
        lines.append("a LoadBalancer mode (loadBalancer.mode) for the Gateway/Ingress Services")
    return lines


def plan(
    gateway_api_on: bool,
    ingress_on: bool,
    cfg: GatewayApi,
    cilium: Version,
    k3s_version: str | None = None,
    k3s_disabled: Sequence[str] = (),
) -> dict[str, Any] | None:
    """The gatewayApi/ingress part of the offline plan; None with both switches off."""
    if not (gateway_api_on or ingress_on):
        return None
    entry: dict[str, Any] = {
        "gatewayApi": gateway_api_on,
        "ingress": ingress_on,
        "hostNetwork": cfg.host_network,
        "needs": requirements(gateway_api_on, ingress_on, cfg, cilium),
    }
    if ingress_on:
        entry["ingressLoadbalancerMode"] = ingress_loadbalancer_mode(cfg)
    if gateway_api_on:
        source = crd_source(cfg, cilium, k3s_version, k3s_disabled)
        if source is not None:
            entry["crds"] = {
                "installer": source.installer,
                "bundle": source.bundle,
                "channel": source.channel,
                "from": source.file or source.url,
                "sha256": source.sha256,
                "required": list(source.required),
                "note": source.note,
            }
        shipped = k3s_ships(k3s_version, k3s_disabled) if k3s_version else None
        entry["k3sShipsCrds"] = shipped.note if shipped else "no (this K3s release and k3s.disable install none)"
    return entry


def plan_text(entry: dict[str, Any]) -> list[str]:
    switches = [name for name, key in (("Gateway API", "gatewayApi"), ("Ingress", "ingress")) if entry[key]]
    where = "host network" if entry["hostNetwork"] else "LoadBalancer Services"
    lines = [f"gateway api / ingress: {' and '.join(switches)} on ({where})"]
    lines += [f"  needs {text}" for text in entry["needs"]]
    if "ingressLoadbalancerMode" in entry:
        lines.append(f"  ingress load balancer mode: {entry['ingressLoadbalancerMode']}")
    crds = entry.get("crds")
    if crds is not None:
        if crds["installer"] != "program":
            lines.append(f"  CRDs: {crds['note']}")
        else:
            lines.append(f"  CRDs: Gateway API {crds['bundle']} ({crds['channel']}) from {crds['from']}")
            lines.append(f"    sha256 {crds['sha256'] or '(not set)'}; installed before the Cilium release")
        lines.append(f"    required: {', '.join(crds['required'])}")
    if "k3sShipsCrds" in entry:
        lines.append(f"  K3s ships Gateway API CRDs: {entry['k3sShipsCrds']}")
    return lines
