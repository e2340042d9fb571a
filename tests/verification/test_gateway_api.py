"""gatewayclass-accepted and gateway-address: the parsers on every sample, the checks through ``main``.

Inputs are the samples in fixtures/gateway_api (see its README.md: four Gateways converted unchanged
from Cilium 1.19.6's operator test data; the GatewayClasses and kubectl errors constructed from the
code that writes them); every expected value below is read off those files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import verification.gateway_api  # noqa: F401  (registers the checks until verification.expectations imports it)
from tests.verification.cli import prefix
from verification.expectations import CHECKS, ExpectationError
from verification.gateway_api import NotFound, parse_gateway, parse_gateway_class

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "gateway_api"
NODE = "server-1"
INFRA = "gateway-conformance-infra"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- registry ------------------------------------------------------------------------------------------


def test_both_checks_are_registered() -> None:
    assert {"gatewayclass-accepted", "gateway-address"} <= set(CHECKS)


@pytest.mark.parametrize(
    "code",
    [
        "import verification.gateway_api\nfrom verification.expectations import CHECKS",
        "from verification.expectations import CHECKS\nimport verification.gateway_api",
    ],
    ids=["gateway_api-first", "expectations-first"],
)
def test_registration_does_not_depend_on_import_order(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nprint(' '.join(sorted(CHECKS)))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert {"gatewayclass-accepted", "gateway-address", "loadbalancer-address"} <= set(result.stdout.split())


@pytest.mark.parametrize(
    ("check", "expect", "message"),
    [
        ("gateway-address", {"gateway": "smoke-gateway"}, "expectation gateway must be"),
        ("gateway-address", {"address": "10.0.10.300"}, "expectation address must be"),
        ("gateway-address", {"within": ["10.0.10.1/24"]}, "expectation within must be"),
        ("gateway-address", {"nodeAddresses": "10.0.0.10"}, "expectation nodeAddresses must be"),
        ("gateway-address", {"port": 80}, "unknown expectation key 'port'"),
        ("gatewayclass-accepted", {"gatewayClass": ""}, "expectation gatewayClass must be"),
        ("gatewayclass-accepted", {"accepted": True}, "unknown expectation key 'accepted'"),
    ],
)
def test_invalid_expectations_are_refused(check: str, expect: dict[str, Any], message: str) -> None:
    with pytest.raises(ExpectationError, match=message):
        CHECKS[check].run("", expect)


def test_invalid_expectations_exit_2_through_main(cli: Any) -> None:
    run = cli("gateway-address", fixture("gateway_lb_programmed.json"), {"address": "nowhere"})

    assert (run.code, run.document) == (2, None)
    assert run.stderr[0].startswith(prefix("gateway-address") + "invalid --expect: expectation address must be")


# --- parsers on every fixture ------------------------------------------------------------------------


def test_parses_the_accepted_gateway_class() -> None:
    parsed = parse_gateway_class(fixture("gatewayclass_accepted.json"))

    assert not isinstance(parsed, NotFound)
    assert (parsed.name, parsed.controller, parsed.supported_features) == (
        "cilium",
        "io.cilium/gateway-controller",
        3,
    )
    (accepted,) = parsed.conditions
    assert (accepted.type, accepted.status, accepted.reason, accepted.message) == (
        "Accepted",
        "True",
        "Accepted",
        "Valid GatewayClass",
    )


@pytest.mark.parametrize(
    ("name", "status", "reason", "message"),
    [
        ("gatewayclass_pending.json", "Unknown", "Pending", "Waiting for controller"),
        ("gatewayclass_invalid_parameters.json", "False", "InvalidParameters", "Invalid GatewayClass"),
    ],
)
def test_parses_gateway_classes_not_accepted(name: str, status: str, reason: str, message: str) -> None:
    parsed = parse_gateway_class(fixture(name))

    assert not isinstance(parsed, NotFound)
    (accepted,) = parsed.conditions
    assert (accepted.status, accepted.reason, accepted.message) == (status, reason, message)


@pytest.mark.parametrize("name", ["gatewayclass_not_found.txt", "gateway_no_resource_type.txt"])
def test_kubectl_errors_are_not_found_gateway_classes(name: str) -> None:
    parsed = parse_gateway_class(fixture(name))

    assert isinstance(parsed, NotFound)
    assert parsed.text == fixture(name).strip()


def test_a_gateway_is_no_gateway_class() -> None:
    parsed = parse_gateway_class(fixture("gateway_lb_programmed.json"))

    assert parsed == NotFound("a Gateway object instead of a GatewayClass")


def test_parses_the_programmed_load_balancer_gateway() -> None:
    parsed = parse_gateway(fixture("gateway_lb_programmed.json"))

    assert not isinstance(parsed, NotFound)
    assert parsed.reference == f"{INFRA}/cross-protocol-same-hostname"
    assert parsed.class_name == "cilium"
    assert parsed.ips == ["172.18.255.200"]
    assert [(c.type, c.status, c.reason) for c in parsed.conditions] == [
        ("Accepted", "True", "Accepted"),
        ("Programmed", "True", "Programmed"),
    ]
    assert [listener.name for listener in parsed.listeners] == ["https", "tls-passthrough"]
    assert parsed.listeners[0].attached_routes == 1


def test_parses_the_host_network_gateway_with_the_node_addresses() -> None:
    parsed = parse_gateway(fixture("gateway_hostnetwork_programmed.json"))

    assert not isinstance(parsed, NotFound)
    assert parsed.ips == ["172.18.0.3", "172.18.0.4"]
    assert [listener.attached_routes for listener in parsed.listeners] == [0]


def test_parses_the_gateway_waiting_for_its_address() -> None:
    parsed = parse_gateway(fixture("gateway_waiting_for_address.json"))

    assert not isinstance(parsed, NotFound)
    assert parsed.requested == ("10.10.10.10", "20.20.20.20")
    assert parsed.addresses == ()
    programmed = next(c for c in parsed.conditions if c.type == "Programmed")
    assert (programmed.status, programmed.reason, programmed.message) == (
        "False",
        "AddressNotAssigned",
        "Gateway waiting for address",
    )


def test_parses_the_gateway_with_an_unsupported_address() -> None:
    parsed = parse_gateway(fixture("gateway_unsupported_address.json"))

    assert not isinstance(parsed, NotFound)
    assert parsed.requested == ("fake address teehee!",)
    accepted = parsed.conditions[0]
    assert (accepted.type, accepted.status, accepted.reason) == ("Accepted", "False", "UnsupportedAddress")


@pytest.mark.parametrize("name", ["gateway_not_found.txt", "gateway_no_resource_type.txt"])
def test_kubectl_errors_are_not_found_gateways(name: str) -> None:
    assert isinstance(parse_gateway(fixture(name)), NotFound)


# --- gatewayclass-accepted ---------------------------------------------------------------------------


def test_accepted_class_passes(cli: Any) -> None:
    run = cli("gatewayclass-accepted", fixture("gatewayclass_accepted.json"), {"gatewayClass": "cilium"})

    assert (run.code, run.problems) == (0, [])
    assert run.figures["conditions"]["Accepted"] == {
        "status": "True",
        "reason": "Accepted",
        "message": "Valid GatewayClass",
    }
    assert run.figures["controller"] == "io.cilium/gateway-controller"


def test_pending_class_says_the_operator_runs_without_gateway_api(cli: Any) -> None:
    run = cli("gatewayclass-accepted", fixture("gatewayclass_pending.json"), {"gatewayClass": "cilium"})

    assert run.code == 1
    (problem,) = run.problems
    assert problem.startswith(
        prefix("gatewayclass-accepted") + "expected GatewayClass cilium condition Accepted status True, saw "
        "Accepted status Unknown, reason Pending: Waiting for controller; fix: the Cilium operator runs without "
        "Gateway API"
    )
    assert "Required GatewayAPI resources are not found" in problem


def test_rejected_class_quotes_reason_and_message(cli: Any) -> None:
    run = cli("gatewayclass-accepted", fixture("gatewayclass_invalid_parameters.json"), {"gatewayClass": "cilium"})

    (problem,) = run.problems
    assert "saw Accepted status False, reason InvalidParameters: Invalid GatewayClass" in problem
    assert "parametersRef" in problem


def test_missing_class_says_how_it_is_made(cli: Any) -> None:
    run = cli("gatewayclass-accepted", fixture("gatewayclass_not_found.txt"), {"gatewayClass": "cilium"})

    (problem,) = run.problems
    assert problem.startswith(
        prefix("gatewayclass-accepted") + "expected GatewayClass cilium to exist, saw not found: Error from server "
        '(NotFound): gatewayclasses.gateway.networking.k8s.io "cilium" not found; fix: the Cilium chart makes'
    )


def test_missing_crds_say_install_them(cli: Any) -> None:
    run = cli("gatewayclass-accepted", fixture("gateway_no_resource_type.txt"), {"gatewayClass": "cilium"})

    (problem,) = run.problems
    assert "doesn't have a resource type" in problem
    assert "fix: install the Gateway API CRDs" in problem


def test_another_class_or_controller_is_refused() -> None:
    check = CHECKS["gatewayclass-accepted"]
    text = fixture("gatewayclass_accepted.json")

    (other,) = check.run(text, {"gatewayClass": "traefik"}).problems
    assert (other.item, other.seen) == ("GatewayClass traefik", "GatewayClass cilium")
    (controller,) = check.run(text, {"controller": "traefik.io/gateway-controller"}).problems
    assert (controller.expected, controller.seen) == ("traefik.io/gateway-controller", "io.cilium/gateway-controller")


def test_a_class_without_conditions_has_no_accepted_condition() -> None:
    document = json.loads(fixture("gatewayclass_accepted.json"))
    del document["status"]

    (problem,) = CHECKS["gatewayclass-accepted"].run(json.dumps(document), {}).problems
    assert (problem.item, problem.seen) == ("GatewayClass cilium condition Accepted", None)


# --- gateway-address ---------------------------------------------------------------------------------


def test_programmed_gateway_with_its_address_passes(cli: Any) -> None:
    expect = {
        "gateway": f"{INFRA}/cross-protocol-same-hostname",
        "address": "172.18.255.200",
        "within": ["172.18.255.192/27"],
    }
    run = cli("gateway-address", fixture("gateway_lb_programmed.json"), expect)

    assert (run.code, run.problems) == (0, [])
    assert run.figures["addresses"] == ["172.18.255.200"]
    assert run.figures["conditions"]["Programmed"]["status"] == "True"
    assert run.figures["listeners"]["https"]["attachedRoutes"] == 1


def test_host_network_gateway_passes_with_the_node_addresses(cli: Any) -> None:
    expect = {"gateway": f"{INFRA}/hostnetwork-enabled", "nodeAddresses": ["172.18.0.3", "172.18.0.4", "172.18.0.5"]}

    run = cli("gateway-address", fixture("gateway_hostnetwork_programmed.json"), expect)

    assert (run.code, run.problems) == (0, [])


def test_an_address_not_of_a_node_fails(cli: Any) -> None:
    run = cli("gateway-address", fixture("gateway_hostnetwork_programmed.json"), {"nodeAddresses": ["172.18.0.3"]})

    (problem,) = run.problems
    assert problem.endswith(
        f"expected Gateway {INFRA}/hostnetwork-enabled address (status.addresses) one of the node addresses "
        "172.18.0.3, saw 172.18.0.4 (not a node address)"
    )


def test_wrong_address_names_expected_and_seen(cli: Any) -> None:
    run = cli("gateway-address", fixture("gateway_lb_programmed.json"), {"address": "172.18.255.201"})

    (problem,) = run.problems
    assert problem == (
        prefix("gateway-address") + f"expected Gateway {INFRA}/cross-protocol-same-hostname address "
        "(status.addresses) 172.18.255.201, saw 172.18.255.200"
    )


def test_address_outside_the_pool_fails(cli: Any) -> None:
    run = cli("gateway-address", fixture("gateway_lb_programmed.json"), {"within": ["10.0.10.0/24"]})

    (problem,) = run.problems
    assert problem.endswith("within 10.0.10.0/24, saw 172.18.255.200 (in none of them)")


def test_gateway_waiting_for_its_address_quotes_cilium_and_says_why(cli: Any) -> None:
    run = cli(
        "gateway-address",
        fixture("gateway_waiting_for_address.json"),
        {"gateway": f"{INFRA}/gateway-static-addresses", "address": "10.10.10.10"},
    )

    assert run.code == 1
    programmed, address = run.problems
    assert programmed.startswith(
        prefix("gateway-address") + f"expected Gateway {INFRA}/gateway-static-addresses condition Programmed status "
        "True, saw Programmed status False, reason AddressNotAssigned: Gateway waiting for address; fix: the "
        "Gateway's LoadBalancer Service"
    )
    assert address == (
        prefix("gateway-address") + f"expected Gateway {INFRA}/gateway-static-addresses address (status.addresses) "
        "10.10.10.10, saw none (status.addresses is empty)"
    )
    assert run.figures["addresses"] == []


def test_gateway_not_accepted_quotes_both_conditions(cli: Any) -> None:
    run = cli("gateway-address", fixture("gateway_unsupported_address.json"))

    accepted, programmed, address = run.problems
    assert "condition Accepted status True, saw Accepted status False, reason UnsupportedAddress: Unsupported " in (
        accepted
    )
    assert "saw Programmed status False, reason ListenersNotReady: Address is not ready" in programmed
    assert address.endswith("address (status.addresses) assigned, saw none (status.addresses is empty)")


def test_missing_gateway_and_missing_crds(cli: Any) -> None:
    (missing,) = cli(
        "gateway-address", fixture("gateway_not_found.txt"), {"gateway": "k3s-cilium-verify/smoke-gateway"}
    ).problems
    assert missing == (
        prefix("gateway-address") + "expected Gateway k3s-cilium-verify/smoke-gateway to exist, saw not found: Error "
        'from server (NotFound): gateways.gateway.networking.k8s.io "smoke-gateway" not found'
    )
    (no_crds,) = cli("gateway-address", fixture("gateway_no_resource_type.txt")).problems
    assert "fix: install the Gateway API CRDs" in no_crds


def test_another_gateway_in_the_output_is_refused() -> None:
    (problem,) = (
        CHECKS["gateway-address"]
        .run(fixture("gateway_lb_programmed.json"), {"gateway": "k3s-cilium-verify/smoke-gateway"})
        .problems
    )
    assert (problem.item, problem.seen) == (
        "Gateway k3s-cilium-verify/smoke-gateway",
        f"Gateway {INFRA}/cross-protocol-same-hostname",
    )


def test_a_gateway_nobody_reconciled_says_the_operator_is_off() -> None:
    document = json.loads(fixture("gateway_lb_programmed.json"))
    del document["status"]

    programmed, address = CHECKS["gateway-address"].run(json.dumps(document), {}).problems
    assert (programmed.item, programmed.seen) == (
        f"Gateway {INFRA}/cross-protocol-same-hostname condition Programmed",
        None,
    )
    assert programmed.fix is not None and "runs without Gateway API" in programmed.fix
    assert address.seen == "none (status.addresses is empty)"


# --- gateway-api-crds: what the cluster has before the program makes the CRDs --------------------------
# Listings built like `kubectl get crd <names> -o json` prints them (a List), with kubectl's NotFound lines for
# absent names before it; the annotations are those Helm and Gateway API put on CRDs.


def crd_object(
    plural: str,
    versions: tuple[str, ...],
    bundle_version: str = "v1.6.1",
    release: str | None = None,
    ours: bool = False,
) -> dict[str, Any]:
    annotations = {"gateway.networking.k8s.io/bundle-version": bundle_version}
    if release:
        annotations |= {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": "kube-system"}
    metadata: dict[str, Any] = {"name": f"{plural}.gateway.networking.k8s.io", "annotations": annotations}
    if ours:
        metadata["labels"] = {"app.kubernetes.io/part-of": "k3s-cilium"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": {"versions": [{"name": v, "served": True} for v in versions]},
    }


def listing(*items: dict[str, Any], errors: str = "") -> str:
    return errors + json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)})


K3S_SET = [
    crd_object(plural, versions, release="gateway-api-crd")
    for plural, versions in (
        ("gatewayclasses", ("v1", "v1beta1")),
        ("gateways", ("v1", "v1beta1")),
        ("httproutes", ("v1", "v1beta1")),
        ("grpcroutes", ("v1",)),
        ("referencegrants", ("v1", "v1beta1")),
        ("tlsroutes", ("v1",)),
    )
]


REQUIRED_1_19 = [
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "grpcroutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
]
MAKES = {"required": REQUIRED_1_19, "existing": False}
EXISTING = {"required": REQUIRED_1_19, "existing": True,
            "serves": [f"{name}:{'v1beta1' if name.startswith('reference') else 'v1'}" for name in REQUIRED_1_19]}
NOT_FOUND = 'Error from server (NotFound): customresourcedefinitions.apiextensions.k8s.io "gateways..." not found\n'


def test_nothing_on_the_cluster_lets_the_program_make_them(cli: Any) -> None:
    assert cli("gateway-api-crds", NOT_FOUND, MAKES).code == 0
    assert cli("gateway-api-crds", listing(), MAKES).code == 0


def test_the_programs_own_crds_pass_and_another_owners_are_not_taken_over(cli: Any) -> None:
    ours = [crd_object(p, ("v1", "v1beta1"), "v1.4.1", ours=True) for p in ("gateways", "httproutes")]
    assert cli("gateway-api-crds", listing(*ours), MAKES).code == 0
    foreign = cli("gateway-api-crds", listing(crd_object("gateways", ("v1",), release="envoy-gateway")), MAKES)
    assert foreign.code == 1
    assert foreign.stderr[0].startswith(
        prefix("gateway-api-crds") + "expected CRD gateways.gateway.networking.k8s.io absent, or made by this program, "
        "saw installed by Helm release kube-system/envoy-gateway (bundle v1.6.1); fix: the program does not take "
        "over another owner's CRDs"
    )
    assert "gatewayApi.crds.external: true" in foreign.stderr[0]
    unmarked = cli("gateway-api-crds", json.dumps(crd_object("gateways", ("v1",))), MAKES)
    assert "installed by unknown (no Helm or k3s-cilium marks)" in unmarked.stderr[0]


def test_crds_of_k3s_serving_what_cilium_needs_pass(cli: Any) -> None:
    run = cli("gateway-api-crds", listing(*K3S_SET), EXISTING)
    assert run.code == 0, run.stderr
    owners = {crd["owner"] for crd in run.figures["present"].values()}
    assert owners == {"K3s (HelmChart gateway-api-crd)"}


def test_missing_or_too_old_crds_of_another_installer_fail(cli: Any) -> None:
    absent = cli("gateway-api-crds", NOT_FOUND + listing(*K3S_SET[:2]), EXISTING)
    assert absent.code == 1
    assert any("CRD httproutes.gateway.networking.k8s.io installed (gatewayApi.crds.external" in line
               for line in absent.stderr)
    old = [crd_object("referencegrants", ("v1alpha2",), "v0.5.1", release="traefik-crd"), *K3S_SET[:3]]
    too_old = cli("gateway-api-crds", listing(*old, K3S_SET[3]), EXISTING)
    assert too_old.code == 1
    assert any("expected CRD referencegrants.gateway.networking.k8s.io (by K3s (HelmChart traefik-crd), bundle "
               "v0.5.1) to serve v1beta1, saw v1alpha2" in line for line in too_old.stderr)
