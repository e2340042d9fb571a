"""Hubble options: the relay, the UI and the agents' flow metrics.

The stack key ``hubble`` refines the ``hubble`` feature (``features.hubble``),
which turns the Hubble server on in every agent. Everything here is pure: the
config model, the refusals, the Helm values per chart minor, the plan entry and
what the verification expects. Facts and where they come from (the Cilium
sources of each release, ``pkg/hubble/metrics/``, and the charts in
``../shared/cilium-chart/``):

- Metric plugins (``api.DefaultRegistry().Register`` in
  ``pkg/hubble/metrics/<plugin>/plugin.go``): ``dns``, ``drop``, ``flow``,
  ``flows-to-world``, ``http``, ``httpV2``, ``icmp``, ``kafka``, ``policy``,
  ``port-distribution`` and ``tcp`` in 1.13.18 to 1.19.6; 1.20.0 removed
  ``kafka`` (Kafka support dropped, Documentation/operations/upgrade-current.inc)
  and added ``sctp``. ``http`` and ``httpV2`` refuse each other
  (``ConflictingPlugins``). An unknown name stops the metrics server in 1.13
  (``ConfigureHandlers``: "metric '%s' does not exist") and is skipped with a
  warning from 1.18 ("Skipping unknown hubble metric"): refused here either way.
- Syntax (``ParseMetricList`` / ``ParseStaticMetricsConfig``, ``ParseOptions`` /
  ``parseOptionConfigs``): ``name[:option;option...]``, an option ``key`` or
  ``key=value``; context values are separated by ``|`` (1.13 splits on ``|``
  only), ``labelsContext`` values by ``,``.
- Context options (``ParseContextOptions`` in ``pkg/hubble/metrics/api/context.go``),
  accepted by every plugin: ``sourceContext``, ``destinationContext``,
  ``labelsContext`` in 1.13; the ``source``/``destination`` ``Egress``/``Ingress``
  variants from 1.14. Context identifiers: ``pod-short`` only in 1.13,
  ``workload`` from 1.15. ``labelsContext`` labels: ``source_workload_kind`` and
  ``destination_workload_kind`` from 1.15. Plugin options: ``dns`` ``query``,
  ``ignoreAAAA``; ``flows-to-world`` ``any-drop``, ``port``, ``syn-only``;
  ``http``/``httpV2`` ``exemplars=true`` (1.13 compares the key and value
  exactly), which needs ``hubble.metrics.enableOpenMetrics``
  (docs: observability/metrics, "OpenMetrics").
- The chart (1.13.18 to 1.20.0): ``hubble.metrics.enabled`` defaults to null and
  the ConfigMap gets ``hubble-metrics`` (the list joined by blanks, so an entry
  holds no blank) and ``hubble-metrics-server: ":<port>"`` only when the list is
  non-empty; ``hubble.metrics.port`` 9965 and ``enableOpenMetrics`` false in every
  chart. ``hubble.relay.enabled`` and ``hubble.ui.enabled`` default to false;
  ``validate.yaml`` fails "Hubble UI requires .Values.hubble.relay.enabled=true"
  and "Hubble Relay requires .Values.hubble.enabled=true". A key removed from
  the values falls back to these defaults (the release does not reuse values),
  so switching the UI or the metrics off removes their keys and shows in the diff.
- The relay Service ``hubble-relay`` listens on port 80 (443 only with relay TLS,
  which is off); the agents' Hubble server on 4244 (``hubble.listenAddress``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from packaging.version import Version
from pydantic import Field, field_validator

from stacks.model import ConfigModel

V1_13, V1_14, V1_15, V1_19, V1_20 = (Version(v) for v in ("1.13", "1.14", "1.15", "1.19", "1.20"))
OLDEST, NEWEST = V1_13, V1_20

# Metric plugins: (first minor, last minor or None) per name.
METRIC_PLUGINS: dict[str, tuple[Version, Version | None]] = {
    "dns": (V1_13, None),
    "drop": (V1_13, None),
    "flow": (V1_13, None),
    "flows-to-world": (V1_13, None),
    "http": (V1_13, None),
    "httpV2": (V1_13, None),
    "icmp": (V1_13, None),
    "kafka": (V1_13, V1_19),
    "policy": (V1_13, None),
    "port-distribution": (V1_13, None),
    "sctp": (V1_20, None),
    "tcp": (V1_13, None),
}
# Plugins that refuse each other in one agent.
CONFLICTS = (("http", "httpV2"),)
# Options of one plugin besides the context options: name -> takes a value ("exemplars=true") or is a flag.
PLUGIN_OPTIONS: dict[str, dict[str, bool]] = {
    "dns": {"query": False, "ignoreAAAA": False},
    "flows-to-world": {"any-drop": False, "port": False, "syn-only": False},
    "http": {"exemplars": True},
    "httpV2": {"exemplars": True},
}
LABELS_CONTEXT = "labelsContext"
_CONTEXT_OPTIONS_1_13 = ("sourceContext", "destinationContext")
_CONTEXT_OPTIONS_1_14 = ("sourceEgressContext", "sourceIngressContext", "destinationEgressContext",
                         "destinationIngressContext")
_IDENTIFIERS = ("identity", "namespace", "pod", "pod-name", "dns", "ip", "reserved-identity", "workload-name", "app")
_LABELS = (
    "source_ip", "source_pod", "source_namespace", "source_workload", "source_app",
    "destination_ip", "destination_pod", "destination_namespace", "destination_workload", "destination_app",
    "traffic_direction",
)

# The chart's values and where the pieces listen.
METRICS_PORT = 9965
HUBBLE_PORT = 4244
RELAY_SERVICE = "hubble-relay"
RELAY_PORT = 80
UI_DEPLOYMENT = "hubble-ui"
RELAY_DEPLOYMENT = "hubble-relay"
NAMESPACE = "kube-system"
# The values the stack rendered before the hubble section existed: kept byte for byte for those stacks.
TLS = {"auto": {"enabled": True, "method": "cronJob"}}

_METRIC = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9-]*)(?::(?P<options>.*))?$")
_OPTION = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9-]*)(?:=(?P<value>.*))?$")
_CHARACTERS = re.compile(r"^[A-Za-z0-9:;=,|._/-]+$")


def minor(version: Version) -> Version:
    return Version(f"{version.major}.{version.minor}")


def known_metrics(cilium: Version) -> list[str]:
    """The metric plugins the agents of this Cilium minor register."""
    at = minor(cilium)
    return [name for name, (since, until) in METRIC_PLUGINS.items() if since <= at and (until is None or at <= until)]


def context_options(cilium: Version) -> tuple[str, ...]:
    """Context options every plugin takes (``labelsContext`` included)."""
    extra = _CONTEXT_OPTIONS_1_14 if minor(cilium) >= V1_14 else ()
    return (*_CONTEXT_OPTIONS_1_13, *extra, LABELS_CONTEXT)


def context_identifiers(cilium: Version) -> tuple[str, ...]:
    at = minor(cilium)
    found = list(_IDENTIFIERS)
    if at < V1_14:
        found.insert(found.index("pod-name"), "pod-short")
    if at >= V1_15:
        found.insert(found.index("workload-name"), "workload")
    return tuple(found)


def context_labels(cilium: Version) -> tuple[str, ...]:
    if minor(cilium) < V1_15:
        return _LABELS
    labels = list(_LABELS)
    labels.insert(labels.index("source_workload") + 1, "source_workload_kind")
    labels.insert(labels.index("destination_workload") + 1, "destination_workload_kind")
    return tuple(labels)


@dataclass(frozen=True)
class Metric:
    """One ``hubble.metrics`` entry, split: name and options (key, value or None) in order."""

    text: str
    name: str
    options: tuple[tuple[str, str | None], ...]

    def option(self, key: str) -> str | None:
        return next((value for name, value in self.options if name.lower() == key.lower()), None)

    @property
    def exemplars(self) -> bool:
        return any(key == "exemplars" and value == "true" for key, value in self.options)


def parse_metric(text: str) -> Metric:
    """``"dns:query;ignoreAAAA"`` -> Metric("dns", (("query", None), ("ignoreAAAA", None))); ValueError if malformed."""
    if not _CHARACTERS.match(text):
        raise ValueError(
            f"{text!r}: only letters, digits and : ; = , | . _ / - (the chart joins the list with blanks into one "
            "ConfigMap value, so an entry holds no blank)"
        )
    match = _METRIC.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not 'name' or 'name:option;option=value' (e.g. 'dns:query;ignoreAAAA')")
    options: list[tuple[str, str | None]] = []
    if match["options"] is not None:
        for part in match["options"].split(";"):
            option = _OPTION.match(part)
            if option is None or (option["value"] is not None and not option["value"]):
                raise ValueError(
                    f"{text!r}: option {part!r} is not 'key' or 'key=value' (options are separated by ';')"
                )
            options.append((option["key"], option["value"]))
    return Metric(text, match["name"], tuple(options))


class Hubble(ConfigModel):
    relay: bool = Field(
        True, description="Hubble Relay: one API (and the UI's source) for the flows of every node."
    )
    ui: bool = Field(False, description="The Hubble UI (needs the relay).")
    metrics: list[str] = Field(
        default_factory=list,
        description="Hubble metrics the agents serve on port 9965, as the chart's `hubble.metrics.enabled` takes "
        "them: `dns:query;ignoreAAAA`, `drop`, `tcp`, `flow`, `port-distribution`, `icmp`, "
        "`httpV2:exemplars=true;labelsContext=source_ip,destination_ip`, ... Empty: no metrics server.",
    )

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: list[str]) -> list[str]:
        parsed = [parse_metric(text) for text in metrics]
        names = [metric.name for metric in parsed]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"each metric once: {', '.join(repeated)} is listed twice; merge the options")
        for first, second in CONFLICTS:
            if first in names and second in names:
                raise ValueError(f"{first} and {second} refuse each other in the agent: keep one")
        return metrics

    def parsed_metrics(self) -> list[Metric]:
        return [parse_metric(text) for text in self.metrics]


# --- refusals that need the rest of the stack --------------------------------------------------------


def _metric_problems(index: int, metric: Metric, cilium: Version) -> list[str]:
    key = f"hubble.metrics[{index}]"
    at = minor(cilium)
    known = known_metrics(cilium)
    if metric.name not in known:
        span = METRIC_PLUGINS.get(metric.name)
        if span is None:
            why = "is not a Hubble metric"
        elif at < span[0]:
            why = f"is a Hubble metric from Cilium {span[0]}"
        else:
            why = f"is a Hubble metric up to Cilium {span[1]} only"
        return [f"{key}: {metric.name!r} {why}; cilium.version is {cilium}, whose agents know {', '.join(known)}"]
    found = []
    contexts = context_options(cilium)
    plugin = PLUGIN_OPTIONS.get(metric.name, {})
    allowed = {name.lower(): name for name in (*contexts, *plugin)}
    for option, value in metric.options:
        name = allowed.get(option.lower())
        if name is None:
            found.append(
                f"{key}: {metric.name} has no option {option!r} in Cilium {at} (it takes "
                f"{', '.join((*plugin, *contexts))})"
            )
        elif name in plugin and not plugin[name] and value is not None:
            found.append(f"{key}: {metric.name} option {name} is a flag and takes no value; write '{name}'")
        elif name == "exemplars" and (option != "exemplars" or value not in ("true", "false")):
            found.append(f"{key}: write 'exemplars=true' or 'exemplars=false' (the 1.13 agent compares it exactly)")
        elif name in contexts and not value:
            found.append(f"{key}: {name} needs a value, e.g. '{name}=" + (
                "source_ip,destination_ip'" if name == LABELS_CONTEXT else "namespace|pod'"))
        elif name == LABELS_CONTEXT and value:
            labels = context_labels(cilium)
            unknown = [label for label in value.split(",") if label not in labels]
            if unknown:
                found.append(
                    f"{key}: labelsContext {', '.join(map(repr, unknown))} unknown in Cilium {at}: separate labels "
                    f"with ',' and use {', '.join(labels)}"
                )
        elif name in contexts and value:
            identifiers = context_identifiers(cilium)
            unknown = [part for part in value.split("|") if part.lower() not in identifiers]
            if unknown:
                found.append(
                    f"{key}: {name} {', '.join(map(repr, unknown))} unknown in Cilium {at}: separate identifiers "
                    f"with '|' and use {', '.join(identifiers)}"
                )
    return found


def problems(hubble: Hubble, hubble_on: bool, cilium: Version) -> list[str]:
    """``hubble...: problem; fix`` lines of the whole stack: the feature, the UI's relay, the metrics' version."""
    found = []
    if not hubble_on:
        switched = [
            name
            for name, on in (
                ("relay", hubble.relay and "relay" in hubble.model_fields_set),
                ("ui", hubble.ui),
                ("metrics", bool(hubble.metrics)),
            )
            if on
        ]
        found += [
            f"hubble.{name}: needs the Hubble server in the agents, which is off; set features.hubble: true or "
            f"remove hubble.{name}"
            for name in switched
        ]
        return found
    if hubble.ui and not hubble.relay:
        found.append(
            "hubble.ui: the Hubble UI reads the flows through Hubble Relay (the chart refuses the UI without it); "
            "set hubble.relay: true or hubble.ui: false"
        )
    for index, metric in enumerate(hubble.parsed_metrics()):
        found += _metric_problems(index, metric, cilium)
    return found


# --- what the release gets ---------------------------------------------------------------------------


def helm_values(hubble: Hubble, hubble_on: bool, cilium: Version) -> dict[str, Any]:
    """The chart's ``hubble`` values (the same keys in every chart 1.13-1.20).

    With the feature off: ``{"enabled": False}`` (relay, UI and metrics follow, all default off).
    With the feature and the section's defaults: what the stack rendered before this section existed.
    """
    if not hubble_on:
        return {"enabled": False}
    # Certificates made by an in-cluster CronJob instead of at Helm render time, so that a no-op
    # `pulumi up` renders identical values.
    values: dict[str, Any] = {
        "enabled": True,
        "relay": {"enabled": hubble.relay},
        "tls": {"auto": dict(TLS["auto"])},
    }
    if hubble.ui:
        values["ui"] = {"enabled": True}
    metrics = hubble.parsed_metrics()
    if metrics:
        values["metrics"] = {
            "enabled": [metric.text for metric in metrics],
            "port": METRICS_PORT,
            # Exemplars are exported in the OpenMetrics format only.
            "enableOpenMetrics": any(metric.exemplars for metric in metrics),
        }
    return values


def plan(hubble: Hubble, hubble_on: bool, cilium: Version) -> dict[str, Any] | None:
    """The hubble part of the offline plan; None with the feature off."""
    if not hubble_on:
        return None
    entry: dict[str, Any] = {
        "relay": hubble.relay,
        "ui": hubble.ui,
        "metrics": list(hubble.metrics),
        "deployments": [
            f"{NAMESPACE}/{name}"
            for name, on in ((RELAY_DEPLOYMENT, hubble.relay), (UI_DEPLOYMENT, hubble.ui))
            if on
        ],
    }
    if hubble.metrics:
        entry["metricsPort"] = METRICS_PORT
        entry["openMetrics"] = helm_values(hubble, hubble_on, cilium)["metrics"]["enableOpenMetrics"]
    return entry


def plan_text(entry: dict[str, Any]) -> list[str]:
    parts = [f"relay {'on' if entry['relay'] else 'off'}", f"UI {'on' if entry['ui'] else 'off'}"]
    lines = [f"hubble: {', '.join(parts)}"]
    lines += [f"  deployment {name}" for name in entry["deployments"]]
    if entry["metrics"]:
        open_metrics = " (OpenMetrics, for exemplars)" if entry.get("openMetrics") else ""
        lines.append(f"  metrics on port {entry['metricsPort']}{open_metrics}: {' '.join(entry['metrics'])}")
    return lines


# --- what the verification expects -------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One verification check: its name (verification/hubble.py), its node (None: the cluster), ``--expect``."""

    check: str
    node: str | None
    expect: dict[str, Any]


def verify_expectations(hubble: Hubble, hubble_on: bool, cilium: Version, nodes: list[str]) -> list[Expected]:
    """Per node: the Hubble server up (and its metrics server when metrics are on, listening on 9965);
    for the cluster: flows read through the relay from every node, the UI's Deployment ready."""
    if not hubble_on:
        return []
    metrics = bool(hubble.metrics)
    found = [Expected("hubble-server", node, {"enabled": True, "metrics": metrics}) for node in nodes]
    if metrics:
        found += [Expected("hubble-metrics", node, {"port": METRICS_PORT}) for node in nodes]
    if hubble.relay:
        found.append(Expected("hubble-relay", None, {"connectedNodes": len(nodes), "flows": True}))
    if hubble.ui:
        found.append(Expected("hubble-ui", None, {"deployment": f"{NAMESPACE}/{UI_DEPLOYMENT}"}))
    return found
