"""Cilium's Gateway API: the GatewayClass ``cilium`` accepted, the test Gateway programmed with an address.

Two checks on the machinery of :mod:`verification.expectations` (they join its
``CHECKS`` when this module is imported):

- ``gatewayclass-accepted``: ``kubectl get gatewayclass cilium -o json``;
- ``gateway-address``: ``kubectl get gateway -n NS NAME -o json``.

Whether the Gateway answers HTTP is the ``gateway`` probe of the ``probes``
check (``verify-probes.sh`` on the nodes, ``verification.http_probe`` where
Pulumi runs), not a parser here.

What Cilium writes (github.com/cilium/cilium v1.19.6, ``operator/pkg/gateway-api/``):
the GatewayClass gets ``Accepted`` True, reason ``Accepted``, "Valid GatewayClass",
or False, reason ``InvalidParameters`` (``gatewayclass_status.go``); a class no
controller took keeps the CRD's default ``Accepted`` Unknown, reason ``Pending``,
"Waiting for controller" - the sign that the operator runs without Gateway API
(CRDs missing, no kube-proxy replacement). A Gateway is ``Programmed`` True once
its Service has an address, which goes to ``status.addresses``; until then
``Programmed`` False, reason ``AddressNotAssigned`` ("Gateway waiting for
address", ``gateway_reconcile.go``). In host network mode the addresses are the
nodes' (``setAddressStatus``, NodePort case). The parsers are pure: what they
cannot find is ``None`` or absent, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from verification.expectations import (
    CHECKS,
    Check,
    Expectations,
    Figures,
    JsonValue,
    KeySpec,
    Problem,
    Verdict,
    _bool,
    _is_bool,
    _is_str,
    _list_of,
    _str,
    _str_list,
    address_keys,
    address_problems,
    expected_label,
)
from verification.kube_objects import (
    Condition,
    NotFound,
    as_object,
    as_objects,
    as_text,
    condition_figures,
    find_condition,
    is_reference,
    load_json,
    parse_conditions,
    read_kube_object,
    reference,
)

CILIUM_CONTROLLER = "io.cilium/gateway-controller"
# kubectl's words when the API has no such kind (k8s.io/cli-runtime pkg/resource/builder.go): the CRDs are missing.
NO_RESOURCE_TYPE = "the server doesn't have a resource type"

_CRDS_FIX = (
    "install the Gateway API CRDs the Cilium minor needs before Cilium (features.gatewayApi does), then restart "
    "the operator: `kubectl -n kube-system rollout restart deployment/cilium-operator`"
)
_OPERATOR_FIX = (
    "the Cilium operator runs without Gateway API: check `kubectl -n kube-system logs deployment/cilium-operator "
    "| grep -i gateway` for 'Required GatewayAPI resources are not found' (CRDs missing or of the wrong version) "
    "or 'requires kube-proxy-replacement'; fix that and restart the operator"
)


def _not_found_fix(text: str) -> str | None:
    return _CRDS_FIX if NO_RESOURCE_TYPE in text else None


# --------------------------------------------------------------------------
# gatewayclass-accepted
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayClass:
    name: str | None
    controller: str | None
    conditions: tuple[Condition, ...]
    supported_features: int


def parse_gateway_class(text: str) -> GatewayClass | NotFound:
    """``kubectl get gatewayclass NAME -o json``; kubectl's error text is a :class:`NotFound`."""
    document = read_kube_object(text, "GatewayClass")
    if isinstance(document, NotFound):
        return document
    spec, status = as_object(document.get("spec")), as_object(document.get("status"))
    features = status.get("supportedFeatures")
    return GatewayClass(
        name=as_text(as_object(document.get("metadata")).get("name")),
        controller=as_text(spec.get("controllerName")),
        conditions=parse_conditions(status),
        supported_features=len(features) if isinstance(features, list) else 0,
    )


GATEWAYCLASS_ACCEPTED_KEYS: dict[str, KeySpec] = {
    "gatewayClass": KeySpec('the GatewayClass\'s name ("cilium"; named in problems)', _is_str),
    "controller": KeySpec(f'its spec.controllerName (default "{CILIUM_CONTROLLER}")', _is_str),
}


def _class_figures(parsed: GatewayClass | None) -> Figures:
    if parsed is None:
        return {"controller": None, "conditions": {}, "supportedFeatures": 0}
    return {
        "controller": parsed.controller,
        "conditions": condition_figures(parsed.conditions),
        "supportedFeatures": parsed.supported_features,
    }


def evaluate_gatewayclass_accepted(text: str, expect: Expectations) -> Verdict:
    wanted = _str(expect, "gatewayClass")
    controller = _str(expect, "controller") or CILIUM_CONTROLLER
    parsed = parse_gateway_class(text)
    if isinstance(parsed, NotFound):
        label = wanted or "(the one asked for)"
        verdict = Verdict(figures=_class_figures(None))
        fix = _not_found_fix(parsed.text) or (
            "the Cilium chart makes the GatewayClass cilium when gatewayAPI.enabled is true (up to 1.15 only if the "
            "Gateway API CRDs existed when the release was installed: upgrade the release again)"
        )
        verdict.add(Problem(f"GatewayClass {label}", "to exist", f"not found: {parsed.text}", fix))
        return verdict
    verdict = Verdict(figures=_class_figures(parsed))
    label = wanted or parsed.name or "(unnamed)"
    if wanted is not None and parsed.name is not None and parsed.name != wanted:
        verdict.add(Problem(f"GatewayClass {wanted}", "in kubectl's output", f"GatewayClass {parsed.name}"))
        return verdict
    if parsed.controller != controller:
        verdict.add(Problem(f"GatewayClass {label} spec.controllerName", controller, parsed.controller or "none"))
        return verdict
    accepted = find_condition(parsed.conditions, "Accepted")
    if accepted is None:
        verdict.add(Problem(f"GatewayClass {label} condition Accepted", "status True", None, _OPERATOR_FIX))
    elif accepted.status != "True":
        fix = (
            _OPERATOR_FIX
            if accepted.status == "Unknown" or accepted.reason == "Pending"
            else (
                "Cilium rejected the class (InvalidParameters: its parametersRef names no CiliumGatewayClassConfig it "
                "can read); fix or remove spec.parametersRef"
            )
        )
        verdict.add(Problem(f"GatewayClass {label} condition Accepted", "status True", accepted.describe(), fix))
    return verdict


# --------------------------------------------------------------------------
# gateway-address
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayAddress:
    type: str | None
    value: str


@dataclass(frozen=True)
class Listener:
    name: str
    attached_routes: int | None
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class Gateway:
    reference: str | None
    class_name: str | None
    requested: tuple[str, ...]
    addresses: tuple[GatewayAddress, ...]
    conditions: tuple[Condition, ...]
    listeners: tuple[Listener, ...]

    @property
    def ips(self) -> list[str]:
        return [address.value for address in self.addresses if address.type in (None, "IPAddress")]


def parse_gateway(text: str) -> Gateway | NotFound:
    """``kubectl get gateway -n NS NAME -o json``; kubectl's error text is a :class:`NotFound`."""
    document = read_kube_object(text, "Gateway")
    if isinstance(document, NotFound):
        return document
    spec, status = as_object(document.get("spec")), as_object(document.get("status"))
    return Gateway(
        reference=reference(as_object(document.get("metadata"))),
        class_name=as_text(spec.get("gatewayClassName")),
        requested=tuple(value for entry in as_objects(spec.get("addresses")) if (value := as_text(entry.get("value")))),
        addresses=tuple(
            GatewayAddress(as_text(entry.get("type")), value)
            for entry in as_objects(status.get("addresses"))
            if (value := as_text(entry.get("value")))
        ),
        conditions=parse_conditions(status),
        listeners=tuple(
            Listener(
                name=name,
                attached_routes=routes if isinstance(routes := entry.get("attachedRoutes"), int) else None,
                conditions=parse_conditions(entry),
            )
            for entry in as_objects(status.get("listeners"))
            if (name := as_text(entry.get("name")))
        ),
    )


GATEWAY_ADDRESS_KEYS: dict[str, KeySpec] = {
    "gateway": KeySpec('"namespace/name" of the Gateway (named in problems)', is_reference),
    **address_keys("status.addresses", "host network mode, node IPAM"),
}


def _gateway_figures(parsed: Gateway | None) -> Figures:
    if parsed is None:
        return {"addresses": [], "gatewayClassName": None, "conditions": {}, "listeners": {}}
    return {
        "addresses": [address.value for address in parsed.addresses],
        "gatewayClassName": parsed.class_name,
        "conditions": condition_figures(parsed.conditions),
        "listeners": {
            listener.name: {
                "attachedRoutes": listener.attached_routes,
                "conditions": condition_figures(listener.conditions),
            }
            for listener in parsed.listeners
        },
    }


def _programmed_fix(condition: Condition) -> str | None:
    if condition.reason == "AddressNotAssigned":
        return (
            "the Gateway's LoadBalancer Service (cilium-gateway-<name>) has no address: check it with `kubectl get "
            "service`; give it one with loadBalancer.mode (l2/bgp with a pool holding the address asked for) or use "
            "gatewayApi.hostNetwork"
        )
    if condition.reason in ("AddressNotUsable", "UnsupportedAddress"):
        return "spec.addresses must be IPAddress entries LB-IPAM can hand out (inside a pool, not in use)"
    return None


def evaluate_gateway_address(text: str, expect: Expectations) -> Verdict:
    wanted = _str(expect, "gateway")
    parsed = parse_gateway(text)
    if isinstance(parsed, NotFound):
        label = wanted or "(the one asked for)"
        verdict = Verdict(figures=_gateway_figures(None))
        verdict.add(Problem(f"Gateway {label}", "to exist", f"not found: {parsed.text}", _not_found_fix(parsed.text)))
        return verdict
    verdict = Verdict(figures=_gateway_figures(parsed))
    label = wanted or parsed.reference or "(unnamed)"
    if wanted is not None and parsed.reference is not None and parsed.reference != wanted:
        verdict.add(Problem(f"Gateway {wanted}", "in kubectl's output", f"Gateway {parsed.reference}"))
        return verdict
    accepted = find_condition(parsed.conditions, "Accepted")
    if accepted is not None and accepted.status != "True":
        verdict.add(
            Problem(
                f"Gateway {label} condition Accepted", "status True", accepted.describe(), _programmed_fix(accepted)
            )
        )
    programmed = find_condition(parsed.conditions, "Programmed")
    if programmed is None:
        fix = _OPERATOR_FIX if not parsed.conditions else None
        verdict.add(Problem(f"Gateway {label} condition Programmed", "status True", None, fix))
    elif programmed.status != "True":
        verdict.add(
            Problem(
                f"Gateway {label} condition Programmed",
                "status True",
                programmed.describe(),
                _programmed_fix(programmed),
            )
        )
    if not parsed.ips:
        verdict.add(
            Problem(
                f"Gateway {label} address (status.addresses)",
                expected_label(expect),
                "none (status.addresses is empty)",
            )
        )
        return verdict
    verdict.problems.extend(address_problems(f"Gateway {label} address (status.addresses)", parsed.ips, expect))
    return verdict


# --------------------------------------------------------------------------
# gateway-api-crds: may the program make the Gateway API CRDs?
# --------------------------------------------------------------------------

HELM_RELEASE_ANNOTATION = "meta.helm.sh/release-name"
HELM_NAMESPACE_ANNOTATION = "meta.helm.sh/release-namespace"
BUNDLE_ANNOTATION = "gateway.networking.k8s.io/bundle-version"
# The label the program puts on the CRDs it makes (stacks/gateway_api.py load_crds).
OURS = ("app.kubernetes.io/part-of", "k3s-cilium")
# K3s' HelmCharts that install Gateway API CRDs: traefik-crd (1.34-1.36), gateway-api-crd (1.37+).
K3S_CRD_RELEASES = ("traefik-crd", "gateway-api-crd")


@dataclass(frozen=True)
class PresentCrd:
    name: str
    bundle: str | None
    served: tuple[str, ...]
    helm_release: str | None
    helm_namespace: str | None
    ours: bool

    @property
    def owner(self) -> str:
        if self.ours:
            return "this program"
        if self.helm_release in K3S_CRD_RELEASES and self.helm_namespace in (None, "kube-system"):
            return f"K3s (HelmChart {self.helm_release})"
        if self.helm_release:
            return f"Helm release {self.helm_namespace or '?'}/{self.helm_release}"
        return "unknown (no Helm or k3s-cilium marks)"


def parse_present(text: str) -> list[PresentCrd]:
    """``kubectl get crd <names> -o json`` (a List, or one CRD); kubectl's NotFound lines around it are skipped."""
    start = text.find("{")
    loaded = load_json(text[start:]) if start >= 0 else NotFound("no object")
    if isinstance(loaded, NotFound):
        return []
    document = as_object(loaded)
    items = as_objects(document.get("items")) if document.get("kind") == "List" else [document]
    found = []
    for item in items:
        metadata = as_object(item.get("metadata"))
        name = as_text(metadata.get("name"))
        if item.get("kind") != "CustomResourceDefinition" or name is None:
            continue
        annotations, labels = as_object(metadata.get("annotations")), as_object(metadata.get("labels"))
        versions = as_objects(as_object(item.get("spec")).get("versions"))
        found.append(
            PresentCrd(
                name=name,
                bundle=as_text(annotations.get(BUNDLE_ANNOTATION)),
                served=tuple(
                    v for entry in versions if entry.get("served") is not False and (v := as_text(entry.get("name")))
                ),
                helm_release=as_text(annotations.get(HELM_RELEASE_ANNOTATION)),
                helm_namespace=as_text(annotations.get(HELM_NAMESPACE_ANNOTATION)),
                ours=labels.get(OURS[0]) == OURS[1],
            )
        )
    return found


def _is_served_pair(value: JsonValue) -> bool:
    return isinstance(value, str) and value.count(":") == 1 and all(value.split(":"))


GATEWAY_API_CRDS_KEYS: dict[str, KeySpec] = {
    "required": KeySpec("names of the CRDs the Cilium minor needs", _list_of(_is_str)),
    "existing": KeySpec(
        "true: K3s or another tool installs them and each must exist; false: the program makes them, and none may "
        "belong to another owner",
        _is_bool,
    ),
    "serves": KeySpec('"<crd name>:<version>" each CRD must serve (with existing)', _list_of(_is_served_pair)),
}

_NOT_OURS_FIX = (
    "the program does not take over another owner's CRDs: remove them or their installer (K3s 1.37+: add "
    "gateway-api-crd to k3s.disable; K3s 1.34-1.36: keep traefik in k3s.disable), or keep them and set "
    "gatewayApi.crds.external: true"
)


def evaluate_gateway_api_crds(text: str, expect: Expectations) -> Verdict:
    """Before the program makes the CRDs: none of them may belong to another owner (a later ``up`` finds its own).
    With ``existing`` (K3s or another tool installs them): every one there, serving the versions Cilium needs."""
    required = _str_list(expect, "required")
    present = {crd.name: crd for crd in parse_present(text) if not required or crd.name in required}
    verdict = Verdict(
        figures={
            "present": {
                name: {"owner": crd.owner, "bundle": crd.bundle, "served": list(crd.served)}
                for name, crd in present.items()
            }
        }
    )
    if not _bool(expect, "existing"):
        for foreign in (crd for crd in present.values() if not crd.ours):
            seen = f"installed by {foreign.owner} (bundle {foreign.bundle or '?'})"
            verdict.add(Problem(f"CRD {foreign.name}", "absent, or made by this program", seen, _NOT_OURS_FIX))
        return verdict
    for name in required:
        if name not in present:
            verdict.add(
                Problem(
                    f"CRD {name}",
                    "installed (gatewayApi.crds.external, or K3s' gateway-api-crd chart)",
                    "absent",
                    'install the Gateway API CRDs the Cilium minor needs (README "Gateway API and Ingress"), or '
                    "let the program make them: gatewayApi.crds with the bundle's sha256",
                )
            )
    for pair in _str_list(expect, "serves"):
        name, version = pair.split(":")
        existing = present.get(name)
        if existing is not None and version not in existing.served:
            verdict.add(
                Problem(
                    f"CRD {name} (by {existing.owner}, bundle {existing.bundle or '?'})",
                    f"to serve {version}",
                    ", ".join(existing.served) or "no version",
                    "install the Gateway API release the Cilium minor needs",
                )
            )
    return verdict


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

GATEWAY_API_CHECKS = (
    Check(
        "gateway-api-crds",
        "kubectl get crd <names> -o json 2>&1 (kubectl's NotFound lines for the absent ones)",
        GATEWAY_API_CRDS_KEYS,
        evaluate_gateway_api_crds,
    ),
    Check(
        "gatewayclass-accepted",
        "kubectl get gatewayclass cilium -o json (or kubectl's error)",
        GATEWAYCLASS_ACCEPTED_KEYS,
        evaluate_gatewayclass_accepted,
    ),
    Check(
        "gateway-address",
        "kubectl get gateway -n <namespace> <name> -o json (or kubectl's error)",
        GATEWAY_ADDRESS_KEYS,
        evaluate_gateway_address,
    ),
)

# Registered here, at the end, so that importing this module before verification.expectations works too.
CHECKS.update((check.name, check) for check in GATEWAY_API_CHECKS)
