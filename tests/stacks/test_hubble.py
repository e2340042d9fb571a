"""The hubble section: its refusals, its Helm values per chart (checked against each chart's values.yaml and
rendered by `helm template` of the real packaged charts), the plan and what the verification expects.

Expected values are written from the charts (../shared/cilium-chart/<version>/values.yaml and templates) and
the Cilium sources of each release (pkg/hubble/metrics), not read back from the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.version import Version
from pydantic import ValidationError

from stacks import cilium_values
from stacks.features import resolve
from stacks.hubble import (
    Expected,
    Hubble,
    context_identifiers,
    context_labels,
    context_options,
    helm_values,
    known_metrics,
    parse_metric,
    plan,
    plan_text,
    problems,
    verify_expectations,
)
from tests.chart import ARCHIVES, chart_dirs, known_paths, render_chart, unknown_paths
from tests.stacks.test_airgap_chart import REGISTRY, airgap_config, images

ROOT = Path(__file__).resolve().parents[2]
ARCHIVED = sorted((p.name.removeprefix("cilium-").removesuffix(".tgz") for p in ARCHIVES.glob("cilium-*.tgz")),
                  key=lambda v: [int(x) for x in v.split(".")])
V19 = Version("1.19.6")

# What features.hubble rendered before the hubble section existed (chart: hubble.enabled, hubble.relay.enabled,
# hubble.tls.auto.{enabled,method}; certificates from the chart's certgen CronJob).
TODAY_ON = {"enabled": True, "relay": {"enabled": True}, "tls": {"auto": {"enabled": True, "method": "cronJob"}}}
TODAY_OFF = {"enabled": False}
# The dashboards' example list (docs: observability/metrics, "Hubble Metrics"), minus httpV2's options.
DOC_METRICS = ["dns", "drop", "tcp", "flow", "port-distribution", "icmp"]
FULL = Hubble(
    relay=True,
    ui=True,
    metrics=["dns:query;ignoreAAAA", "drop", "tcp", "flow", "port-distribution", "icmp",
             "httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_ip,"
             "destination_namespace,destination_workload,traffic_direction"],
)


def hubble(**raw: Any) -> Hubble:
    return Hubble.model_validate(raw)


def refused(**raw: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Hubble.model_validate(raw)
    return str(caught.value)


# --- the model ----------------------------------------------------------------------------------------


def test_defaults() -> None:
    assert Hubble() == hubble() == Hubble(relay=True, ui=False, metrics=[])


def test_unknown_keys_are_refused() -> None:
    assert "Extra inputs are not permitted" in refused(relays=True)


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("dns query", "no blank"),
        ("dns:query ignoreAAAA", "no blank"),
        ("dns:'query'", "only letters"),
        ("dns#", "only letters"),
        ("9dns", "is not 'name'"),
        ("dns:", "option '' is not"),
        ("dns:query;;ignoreAAAA", "option '' is not"),
        ("flow:sourceContext=", "option 'sourceContext=' is not"),
        ("flow:=pod", "option '=pod' is not"),
    ],
)
def test_metric_syntax(metric: str, message: str) -> None:
    assert message in refused(metrics=[metric])


def test_a_metric_listed_twice() -> None:
    assert "dns is listed twice" in refused(metrics=["dns", "drop", "dns:query"])


def test_http_and_http_v2_refuse_each_other() -> None:
    assert "http and httpV2 refuse each other" in refused(metrics=["http", "httpV2:exemplars=true"])


def test_parse_metric() -> None:
    metric = parse_metric("httpV2:exemplars=true;labelsContext=source_ip,destination_ip")
    assert metric.name == "httpV2"
    assert metric.options == (("exemplars", "true"), ("labelsContext", "source_ip,destination_ip"))
    assert metric.exemplars
    assert parse_metric("dns:query;ignoreAAAA").options == (("query", None), ("ignoreAAAA", None))
    assert parse_metric("drop").options == ()


# --- per version facts (pkg/hubble/metrics of each release) --------------------------------------------

UP_TO_1_19 = ["dns", "drop", "flow", "flows-to-world", "http", "httpV2", "icmp", "kafka", "policy",
              "port-distribution", "tcp"]


@pytest.mark.parametrize("version", ["1.13.18", "1.14.19", "1.15.19", "1.16.19", "1.17.18", "1.18.12", "1.19.6"])
def test_metric_plugins_up_to_1_19(version: str) -> None:
    assert sorted(known_metrics(Version(version))) == sorted(UP_TO_1_19)


def test_1_20_drops_kafka_and_adds_sctp() -> None:
    assert sorted(known_metrics(Version("1.20.0"))) == sorted([*set(UP_TO_1_19) - {"kafka"}, "sctp"])


def test_context_options_identifiers_and_labels_per_version() -> None:
    v13, v14, v15 = Version("1.13.18"), Version("1.14.19"), Version("1.15.19")
    assert set(context_options(v13)) == {"sourceContext", "destinationContext", "labelsContext"}
    assert set(context_options(v14)) == {"sourceContext", "destinationContext", "labelsContext",
                                         "sourceEgressContext", "sourceIngressContext",
                                         "destinationEgressContext", "destinationIngressContext"}
    assert "pod-short" in context_identifiers(v13) and "pod-short" not in context_identifiers(v14)
    assert "workload" not in context_identifiers(v14) and "workload" in context_identifiers(v15)
    assert "source_workload_kind" not in context_labels(v14)
    assert {"source_workload_kind", "destination_workload_kind"} <= set(context_labels(v15))
    assert len(context_labels(v13)) == 11 and len(context_labels(v15)) == 13


# --- refusals of the whole stack ----------------------------------------------------------------------


def test_nothing_to_refuse() -> None:
    assert problems(Hubble(), True, V19) == []
    assert problems(Hubble(), False, V19) == []
    assert problems(FULL, True, V19) == []
    assert problems(hubble(relay=False), False, V19) == []


def test_relay_ui_and_metrics_need_the_feature() -> None:
    found = problems(hubble(relay=True, ui=True, metrics=["drop"]), False, V19)
    assert found == [
        f"hubble.{key}: needs the Hubble server in the agents, which is off; set features.hubble: true or remove "
        f"hubble.{key}"
        for key in ("relay", "ui", "metrics")
    ]


def test_the_ui_needs_the_relay() -> None:
    assert problems(hubble(relay=False, ui=True), True, V19) == [
        "hubble.ui: the Hubble UI reads the flows through Hubble Relay (the chart refuses the UI without it); "
        "set hubble.relay: true or hubble.ui: false"
    ]


def test_an_unknown_metric_names_the_known_ones() -> None:
    [found] = problems(hubble(metrics=["drop", "dropped"]), True, V19)
    assert found == (
        "hubble.metrics[1]: 'dropped' is not a Hubble metric; cilium.version is 1.19.6, whose agents know "
        "dns, drop, flow, flows-to-world, http, httpV2, icmp, kafka, policy, port-distribution, tcp"
    )


def test_metrics_of_other_releases() -> None:
    [sctp] = problems(hubble(metrics=["sctp"]), True, V19)
    assert sctp.startswith("hubble.metrics[0]: 'sctp' is a Hubble metric from Cilium 1.20; cilium.version is 1.19.6")
    [kafka] = problems(hubble(metrics=["kafka"]), True, Version("1.20.0"))
    assert kafka.startswith("hubble.metrics[0]: 'kafka' is a Hubble metric up to Cilium 1.19 only")
    assert problems(hubble(metrics=["kafka"]), True, V19) == []


@pytest.mark.parametrize(
    ("metric", "version", "fragment"),
    [
        ("drop:query", "1.19.6", "drop has no option 'query' in Cilium 1.19"),
        ("dns:querry", "1.19.6", "dns has no option 'querry'"),
        ("dns:query=false", "1.19.6", "dns option query is a flag and takes no value; write 'query'"),
        ("flows-to-world:port=53", "1.19.6", "option port is a flag"),
        ("httpV2:exemplars", "1.19.6", "write 'exemplars=true' or 'exemplars=false'"),
        ("httpV2:exemplars=yes", "1.19.6", "write 'exemplars=true'"),
        ("httpV2:Exemplars=true", "1.13.18", "the 1.13 agent compares it exactly"),
        ("flow:sourceContext", "1.19.6", "sourceContext needs a value, e.g. 'sourceContext=namespace|pod'"),
        ("flow:labelsContext", "1.19.6", "labelsContext needs a value, e.g. 'labelsContext=source_ip,destination_ip'"),
        ("flow:sourceContext=pod,namespace", "1.19.6", "sourceContext 'pod,namespace' unknown"),
        ("flow:sourceContext=workload", "1.14.19", "sourceContext 'workload' unknown in Cilium 1.14"),
        ("flow:sourceContext=pod-short", "1.14.19", "'pod-short' unknown in Cilium 1.14"),
        ("flow:sourceEgressContext=pod", "1.13.18", "flow has no option 'sourceEgressContext' in Cilium 1.13"),
        ("httpV2:labelsContext=source_workload_kind", "1.14.19", "labelsContext 'source_workload_kind' unknown"),
        ("httpV2:labelsContext=source_ip|destination_ip", "1.19.6", "separate labels with ','"),
    ],
)
def test_metric_options_per_version(metric: str, version: str, fragment: str) -> None:
    [found] = problems(hubble(metrics=[metric]), True, Version(version))
    assert found.startswith("hubble.metrics[0]: ") and fragment in found, found


@pytest.mark.parametrize(
    ("metric", "version"),
    [
        ("flow:sourceContext=pod-short|namespace", "1.13.18"),
        ("flow:sourceContext=workload|reserved-identity;destinationContext=Workload-Name", "1.15.19"),
        ("policy:sourceContext=app|workload-name|pod|reserved-identity;destinationContext=app|workload-name|pod|dns|"
         "reserved-identity;labelsContext=source_namespace,destination_namespace", "1.19.6"),
        ("dns:query;ignoreAAAA;sourceIngressContext=identity", "1.14.19"),
        ("flows-to-world:any-drop;port;syn-only", "1.13.18"),
        ("sctp:destinationContext=pod", "1.20.0"),
    ],
)
def test_metric_options_accepted(metric: str, version: str) -> None:
    assert problems(hubble(metrics=[metric]), True, Version(version)) == []


# --- Helm values --------------------------------------------------------------------------------------

CHARTS = chart_dirs()


@pytest.mark.parametrize("minor", ["1.13", "1.14", "1.15", "1.16", "1.17", "1.18", "1.19", "1.20"])
def test_defaults_render_what_the_stack_rendered_before(minor: str) -> None:
    version = Version(minor)
    assert helm_values(Hubble(), True, version) == TODAY_ON
    assert helm_values(Hubble(), False, version) == TODAY_OFF
    assert helm_values(FULL, False, version) == TODAY_OFF


def test_ui_metrics_and_relay_off() -> None:
    assert helm_values(FULL, True, V19) == {
        **TODAY_ON,
        "ui": {"enabled": True},
        "metrics": {"enabled": FULL.metrics, "port": 9965, "enableOpenMetrics": True},
    }
    assert helm_values(hubble(metrics=DOC_METRICS), True, V19)["metrics"] == {
        "enabled": DOC_METRICS, "port": 9965, "enableOpenMetrics": False
    }
    assert helm_values(hubble(relay=False), True, V19) == {**TODAY_ON, "relay": {"enabled": False}}


@pytest.mark.skipif(not CHARTS, reason="../shared/cilium-chart is absent")
@pytest.mark.parametrize("minor", sorted(CHARTS))
def test_every_rendered_key_is_in_the_chart(minor: str) -> None:
    chart = CHARTS[minor]
    values = {"hubble": helm_values(FULL, True, Version(minor))}
    assert unknown_paths(values, chart) == []
    # unknown_paths stops at a known leaf: the leaves themselves, one by one.
    for path in (("hubble", "ui", "enabled"), ("hubble", "metrics", "enabled"), ("hubble", "metrics", "port"),
                 ("hubble", "metrics", "enableOpenMetrics"), ("hubble", "relay", "enabled"),
                 ("hubble", "tls", "auto", "method")):
        assert path in known_paths(chart), (minor, path)


@pytest.mark.skipif(not CHARTS, reason="../shared/cilium-chart is absent")
@pytest.mark.parametrize("minor", sorted(CHARTS))
def test_what_removing_a_key_falls_back_to(minor: str) -> None:
    """The keys rendered only when on fall back to off: the release does not reuse values."""
    defaults = yaml.safe_load((CHARTS[minor] / "values.yaml").read_text())["hubble"]
    assert defaults["ui"]["enabled"] is False and defaults["relay"]["enabled"] is False
    assert defaults["metrics"]["enabled"] is None
    assert defaults["metrics"]["port"] == 9965 and defaults["metrics"]["enableOpenMetrics"] is False


# --- the real charts, rendered ------------------------------------------------------------------------


def objects(version: str, section: Hubble, on: bool = True) -> dict[tuple[str, str], dict[str, Any]]:
    values = {"hubble": helm_values(section, on, Version(version))}
    return {(o["kind"], o["metadata"]["name"]): o for o in render_chart(version, values)}


needs_archives = pytest.mark.skipif(not ARCHIVES.is_dir(), reason="../shared/cilium-chart/archives is absent")


@needs_archives
@pytest.mark.parametrize("version", ARCHIVED)
def test_the_chart_deploys_the_ui_and_metrics_when_on(version: str) -> None:
    found = objects(version, FULL)
    assert ("Deployment", "hubble-ui") in found and ("Deployment", "hubble-relay") in found
    assert ("Service", "hubble-metrics") in found
    data = found[("ConfigMap", "cilium-config")]["data"]
    # The chart writes the list one entry a line in a plain scalar: YAML joins them with blanks.
    assert data["hubble-metrics"] == " ".join(FULL.metrics)
    assert data["hubble-metrics-server"] == ":9965"
    assert data["enable-hubble-open-metrics"] == "true"
    assert data["enable-hubble"] == "true"


@needs_archives
@pytest.mark.parametrize("version", ARCHIVED)
def test_the_chart_deploys_neither_when_off(version: str) -> None:
    found = objects(version, Hubble())
    assert ("Deployment", "hubble-ui") not in found and ("Deployment", "hubble-relay") in found
    assert ("Service", "hubble-metrics") not in found
    data = found[("ConfigMap", "cilium-config")]["data"]
    assert "hubble-metrics" not in data and "hubble-metrics-server" not in data
    # A CronJob renews the certificates (no certificate in the rendered values: a no-op up renders the same).
    assert ("CronJob", "hubble-generate-certs") in found


@needs_archives
@pytest.mark.parametrize("version", [v for v in ARCHIVED if v.split(".")[1] in ("14", "16", "19")])
def test_relay_off_and_hubble_off(version: str) -> None:
    no_relay = objects(version, hubble(relay=False, metrics=["drop"]))
    assert ("Deployment", "hubble-relay") not in no_relay
    assert no_relay[("ConfigMap", "cilium-config")]["data"]["hubble-metrics"] == "drop"
    off = objects(version, FULL, on=False)
    assert not any(name.startswith("hubble") for _, name in off)
    # Charts up to 1.15 leave enable-hubble out when off (the agent's default is off); later ones write "false".
    assert off[("ConfigMap", "cilium-config")]["data"].get("enable-hubble", "false") == "false"


# --- air-gapped: every Hubble image from the internal registry ---------------------------------------


@needs_archives
@pytest.mark.parametrize("version", ARCHIVED)
def test_air_gapped_hubble_images_come_from_the_registry(version: str) -> None:
    # The air-gapped stack (Hubble on) with the relay and the UI.
    cfg = airgap_config(version, "kpr").model_copy(update={"hubble": Hubble(relay=True, ui=True)})
    deployed = images(render_chart(version, cilium_values.render(cfg, resolve(cfg))))
    hubble_images = {image for image in deployed if "/hubble-" in image or "/certgen" in image}
    names = {image.partition("@")[0].rsplit("/", 1)[1].partition(":")[0] for image in hubble_images}
    assert {"hubble-relay", "hubble-ui", "hubble-ui-backend", "certgen"} <= names
    outside = sorted(image for image in deployed if not image.startswith(REGISTRY + "/"))
    assert outside == [], f"images not from {REGISTRY}: {outside}"


# --- plan and verification ----------------------------------------------------------------------------


def test_plan() -> None:
    assert plan(Hubble(), False, V19) is None
    assert plan(Hubble(), True, V19) == {
        "relay": True, "ui": False, "metrics": [], "deployments": ["kube-system/hubble-relay"]
    }
    entry = plan(FULL, True, V19)
    assert entry is not None
    assert entry["deployments"] == ["kube-system/hubble-relay", "kube-system/hubble-ui"]
    assert (entry["metricsPort"], entry["openMetrics"]) == (9965, True)
    assert plan_text(entry) == [
        "hubble: relay on, UI on",
        "  deployment kube-system/hubble-relay",
        "  deployment kube-system/hubble-ui",
        f"  metrics on port 9965 (OpenMetrics, for exemplars): {' '.join(FULL.metrics)}",
    ]
    no_relay = plan(hubble(relay=False), True, V19)
    assert no_relay is not None and plan_text(no_relay) == ["hubble: relay off, UI off"]


NODES = ["server-1", "agent-1", "agent-2"]


def test_verify_expectations() -> None:
    assert verify_expectations(FULL, False, V19, NODES) == []
    assert verify_expectations(Hubble(), True, V19, NODES) == [
        *(Expected("hubble-server", node, {"enabled": True, "metrics": False}) for node in NODES),
        Expected("hubble-relay", None, {"connectedNodes": 3, "flows": True}),
    ]
    assert verify_expectations(FULL, True, V19, NODES) == [
        *(Expected("hubble-server", node, {"enabled": True, "metrics": True}) for node in NODES),
        *(Expected("hubble-metrics", node, {"port": 9965}) for node in NODES),
        Expected("hubble-relay", None, {"connectedNodes": 3, "flows": True}),
        Expected("hubble-ui", None, {"deployment": "kube-system/hubble-ui"}),
    ]
    assert verify_expectations(hubble(relay=False), True, V19, NODES)[-1].check == "hubble-server"


def test_the_expectations_fit_the_checks() -> None:
    import verification.hubble  # noqa: F401  (registers the checks)
    from verification.expectations import CHECKS, validate_expectations

    for expected in verify_expectations(FULL, True, V19, NODES):
        validate_expectations(CHECKS[expected.check].keys, expected.expect)
