"""The README's configuration reference, generated from the config model and the feature catalogue.

``python -m stacks docs`` prints it; ``python -m stacks docs --write-readme``
replaces the block between :data:`START` and :data:`END` in README.md. The
tests fail when README.md holds anything else there, so the reference cannot
drift from :mod:`stacks.config` and :mod:`stacks.features`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from stacks.config import FEATURE_NAMES, NAMESPACE, SECRET_KEYS, TIERS, Features, Node, StackConfig, config_keys
from stacks.features import (
    CATALOGUE,
    CILIUM_KERNEL_FLOORS,
    TIER_FEATURES,
    TIER_SUMMARY,
    Feature,
    kernel_text,
    resolve,
)

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"
PULUMI_YAML = Path(__file__).resolve().parent.parent / "Pulumi.yaml"
REGENERATE = "python -m stacks docs --write-readme"

# The string types of stacks.config, named by the validator that defines them.
_VALIDATED_TYPES = {
    "_dns_label": "DNS label",
    "_host": "IP address or DNS name",
    "_posix_user": "user name",
    "_ipv4_cidr": "IPv4 CIDR",
    "_ipv4": "IPv4 address",
    "_host_key": "SSH public host key",
}
_RESTART = {
    "none": "immediately",
    "agents": "Cilium agents restart",
    "pods": "pods are recreated",
    "nodes": "nodes restart",
}
# A dummy node: the tier table resolves each tier like a real stack would.
_PROBE_NODE = Node(name="probe", host="192.0.2.1", role="server")


# --- rendering helpers --------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _value_text(value: Any) -> str:
    """A default as it would be written in the stack YAML (flow style)."""
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value_text(v)}" for k, v in value.items()) + "}"
    return _scalar(value)


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The config section model a field holds (directly, optionally, or as list items)."""
    annotation = _strip_optional(annotation)
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _bounds(metadata: list[Any]) -> str:
    low = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    if low is not None and high is not None:
        return f" {low}-{high}"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def _type_text(annotation: Any, metadata: list[Any], section: str) -> str:
    """A reader's name for a field type, e.g. ``integer 1-65535`` or ``list of objects (nodes[])``."""
    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        nested = [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
        return _type_text(base, [*metadata, *nested], section)
    for item in metadata:
        func: Callable[..., Any] | None = getattr(item, "func", None)
        if func is not None and func.__name__ in _VALIDATED_TYPES:
            return _VALIDATED_TYPES[func.__name__]
    if origin is typing.Literal:
        return "one of " + ", ".join(_code(str(v)) for v in typing.get_args(annotation))
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if _section_model(item_type):
            return f"list of objects (see {_code(section + '[]')})"
        item = _type_text(item_type, [], section)
        if item.startswith("one of "):
            return "list, each " + item
        return "list of " + {"string": "strings", "integer": "integers", "boolean": "booleans"}.get(item, item)
    if origin is dict:
        _, value_type = typing.get_args(annotation)
        return "map of strings" if value_type is str else "map"
    if _section_model(annotation):
        return f"object (see {_code(section)})"
    if origin in (typing.Union, types.UnionType):
        # An item that is one of several shapes, e.g. a CIDR or an object {start, stop}.
        return " or ".join(
            f"object {_code('{' + ', '.join(config_keys(arg)) + '}')}"
            if isinstance(arg, type) and issubclass(arg, BaseModel)
            else _type_text(arg, [], section)
            for arg in typing.get_args(annotation)
        )
    names = {bool: "boolean", int: "integer", str: "string", float: "number", SecretStr: "string (secret)"}
    return names.get(annotation, str(annotation)) + _bounds(metadata)


def _default_text(field: FieldInfo, in_features: bool) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.get_default(call_default_factory=True, validated_data={})
        if isinstance(value, BaseModel):
            return "see below"
        return _code(_value_text(value))
    if field.default is None:
        return "from the tier" if in_features else "unset"
    return _code(_value_text(field.default))


def _key_table(model: type[BaseModel], prefix: str) -> tuple[list[str], list[tuple[str, type[BaseModel]]]]:
    """Markdown rows for ``model``'s keys, and the nested sections to describe after it."""
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}.{key}" if prefix else key
        section = _section_model(field.annotation)
        if section is not None:
            is_list = typing.get_origin(_strip_optional(field.annotation)) is list
            nested.append((f"{path}[]" if is_list else path, section))
        rows.append(
            "| "
            + " | ".join(
                _cell(text)
                for text in (
                    _code(path),
                    _type_text(field.annotation, list(field.metadata), path),
                    _default_text(field, in_features=False),
                    field.description or "",
                )
            )
            + " |"
        )
    return rows, nested


# --- the generated sections -------------------------------------------------------------------


def _first_tier(feature: str) -> str:
    return next((_code(tier) for tier in TIERS if feature in TIER_FEATURES[tier]), "override only")


def _tier_kernel(tier: str) -> str:
    resolved = resolve(StackConfig.model_validate({"tier": tier, "nodes": [_PROBE_NODE]}))
    floor = resolved.min_kernel()
    because = [_code(name) for name, kernel in resolved.kernel_needs().items() if kernel == floor]
    if not because:
        because = [f"Cilium {resolved.cilium.major}.{resolved.cilium.minor}"]
    return kernel_text(floor) + f" ({', '.join(because)})"


def cilium_kernel_table() -> str:
    """The kernel floor of every supported Cilium minor, from its system requirements."""
    lines = ["| Cilium | Kernel >= | or RHEL (4.18 kernel) >= |", "| --- | --- | --- |"]
    for (major, minor), floor in CILIUM_KERNEL_FLOORS.items():
        lines.append(f"| {major}.{minor} | {kernel_text(floor.kernel)} | {floor.rhel[0]}.{floor.rhel[1]} |")
    return "\n".join(lines)


def tiers_table() -> str:
    lines = [
        "| Tier | What it buys | kube-proxy | Features on | Kernel >= |",
        "| --- | --- | --- | --- | --- |",
    ]
    previous: tuple[str, ...] = ()
    previous_name = ""
    for tier in TIERS:
        features = TIER_FEATURES[tier]
        added = [f for f in features if f not in previous]
        if previous and set(previous) <= set(features):
            listed = f"{previous_name} + " + ", ".join(_code(f) for f in added)
        else:
            listed = ", ".join(_code(f) for f in features) or "none"
        kube_proxy = "replaced by Cilium" if "kubeProxyReplacement" in features else "kept"
        cells = (_code(tier), TIER_SUMMARY[tier], kube_proxy, listed, _tier_kernel(tier))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        previous, previous_name = features, _code(tier)
    return "\n".join(lines)


def _feature_row(feature: Feature) -> str:
    cells = (
        _code(f"features.{feature.name}"),
        feature.summary,
        ", ".join(_code(r) for r in feature.requires) or "—",
        kernel_text(feature.min_kernel) if feature.min_kernel else "—",
        str(feature.min_cilium) if feature.min_cilium else "—",
        _RESTART[feature.restart],
        _first_tier(feature.name),
    )
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def features_table() -> str:
    lines = [
        "| Key | What it does | Requires | Kernel >= | Cilium >= | Takes effect when | First tier |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_feature_row(CATALOGUE[name]) for name in FEATURE_NAMES]
    # The one feature that is a choice rather than a switch.
    encryption = Features.model_fields["encryption"]
    cells = (
        _code("features.encryption"),
        f"{encryption.description} The refused combinations and what each needs: \"Transparent encryption\".",
        "—",
        "—",
        "—",
        _RESTART["agents"],
        "override only",
    )
    lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _secret_descriptions() -> dict[str, str]:
    project = yaml.safe_load(PULUMI_YAML.read_text())
    declared = project.get("config") or {}
    return {key: str((declared.get(key) or {}).get("description", "")) for key in SECRET_KEYS}


def config_reference() -> str:
    """The markdown that README.md holds between :data:`START` and :data:`END`."""
    out = [
        f"<!-- Generated from stacks/config.py and stacks/features.py by `{REGENERATE}`; do not edit. -->",
        "",
        "### Tiers",
        "",
        "Each tier keeps the features of the one before it and adds its own. The kernel column is the floor",
        "the plan computes for the tier's features and the preflight step checks on every node",
        "(features switched on with `features.<name>` can raise it), here with the default Cilium version.",
        "",
        tiers_table(),
        "",
        "Every Cilium minor has its own floor too (its `Documentation/operations/system_requirements.rst`);",
        "the plan and the preflight step use the higher of it and the features' floors. RHEL and its",
        "rebuilds run 4.18 with backports, accepted from the RHEL release in the last column:",
        "",
        cilium_kernel_table(),
        "",
        "### Features",
        "",
        "Set `features.<name>: true` or `false` to override the tier for one feature. A feature whose",
        "requirements are off is an error that names the fix, not a silent no-op. A tier feature the",
        "pinned Cilium version does not have yet is skipped, and the plan says so.",
        "",
        features_table(),
        "",
        "### Stack configuration keys",
        "",
        f"Keys live in the `{NAMESPACE}` namespace of `Pulumi.<stack>.yaml`",
        f"(`{NAMESPACE}:tier`, `{NAMESPACE}:nodes`, ...).",
        "Unknown keys are errors. Set nested keys with `--path`, e.g.",
        "`pulumi config set --path cilium.version 1.19.6`.",
        "",
    ]
    top_rows, pending = _key_table(StackConfig, "")
    out += [*top_rows, ""]
    while pending:
        path, model = pending.pop(0)
        if model is Features:
            out += [
                f"#### `{path}`",
                "",
                "One boolean per feature, each defaulting to the tier: see Features above.",
                "",
            ]
            continue
        rows, nested = _key_table(model, path)
        out += [f"#### `{path}`", "", *rows, ""]
        pending = nested + pending
    out += ["#### Secrets", "", "| Key | Description |", "| --- | --- |"]
    out += [f"| {_code(key)} | {_cell(text)} |" for key, text in _secret_descriptions().items()]
    return "\n".join(out) + "\n"


# --- the README block ---------------------------------------------------------------------------


def readme_block(readme: str) -> str:
    """What README.md holds between the markers (without the marker lines)."""
    if START not in readme or END not in readme:
        raise ValueError(f"README.md lacks the markers {START} and {END}")
    body = readme.split(START, 1)[1].split(END, 1)[0]
    return body.removeprefix("\n")


def with_reference(readme: str, reference: str) -> str:
    """``readme`` with the block between the markers replaced by ``reference``."""
    before = readme.split(START, 1)[0]
    after = readme.split(END, 1)[1]
    return f"{before}{START}\n{reference}{END}{after}"


def write_readme(path: Path = README) -> bool:
    """Regenerate the block in README.md; True when the file changed."""
    text = path.read_text()
    readme_block(text)  # raises when the markers are missing
    updated = with_reference(text, config_reference())
    if updated == text:
        return False
    path.write_text(updated)
    return True
