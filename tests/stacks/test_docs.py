"""The generated config reference: in step with the model, the catalogue, Pulumi.yaml and README.md."""

from __future__ import annotations

import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from stacks import docs
from stacks.config import FEATURE_NAMES, SECRET_KEYS, TIERS, Node, StackConfig, config_keys
from stacks.features import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())


def test_readme_holds_the_current_reference():
    readme = (ROOT / "README.md").read_text()
    assert docs.readme_block(readme) == docs.config_reference(), (
        "README.md's config reference is stale: regenerate it with "
        "`.venv/bin/python -m stacks docs --write-readme` (or `python -m stacks docs` and paste the output "
        f"between {docs.START} and {docs.END})"
    )


def test_docs_command_prints_the_reference():
    result = subprocess.run(
        [sys.executable, "-m", "stacks", "docs"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == docs.config_reference()


def test_write_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{docs.START}\nstale\n{docs.END}\n\nafter\n")
    assert docs.write_readme(readme) is True
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n" + docs.START + "\n")
    assert text.endswith(docs.END + "\n\nafter\n")
    assert docs.readme_block(text) == docs.config_reference()
    assert docs.write_readme(readme) is False


def test_write_readme_refuses_a_readme_without_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="config-reference:start"):
        docs.write_readme(readme)
    assert readme.read_text() == "# no markers\n"


def _key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}" if prefix else field.alias or name
        paths.append(path)
        inner = field.annotation
        if typing.get_origin(inner) in (typing.Union, types.UnionType):
            inner = next(a for a in typing.get_args(inner) if a is not type(None))
        if typing.get_origin(inner) is list:
            inner, path = typing.get_args(inner)[0], path + "[]"
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            paths += _key_paths(inner, path)
    return paths


def test_reference_documents_every_key_feature_and_tier():
    reference = docs.config_reference()
    for path in _key_paths(StackConfig):
        assert f"`{path}`" in reference, path
    for name in FEATURE_NAMES:
        assert f"`features.{name}`" in reference
        assert CATALOGUE[name].summary in reference
    for tier in TIERS:
        assert f"| `{tier}` |" in reference
    for key in SECRET_KEYS:
        assert f"| `{key}` |" in reference


def test_reference_rows_say_type_default_and_kernel():
    reference = docs.config_reference()
    assert "| `nodes[].port` | integer 1-65535 | unset |" in reference
    assert "| `tier` | one of `baseline`, `kpr`, `performance`, `extreme` | `kpr` |" in reference
    assert "| `k3s.disable` | list, each one of `coredns`," in reference
    assert "`[servicelb, traefik]`" in reference
    assert "| `nodes` | list of objects (see `nodes[]`) | **required** |" in reference
    extreme_row = next(line for line in reference.splitlines() if line.startswith("| `extreme` |"))
    assert extreme_row.endswith("| 6.3 (`bigTcp`) |")
    netkit_row = next(line for line in reference.splitlines() if line.startswith("| `features.netkit` |"))
    assert "| 6.8 | 1.16 |" in netkit_row and netkit_row.endswith("| override only |")


def test_pulumi_yaml_declares_exactly_the_model_keys_and_the_secrets():
    assert list(PROJECT["config"]) == [*config_keys(StackConfig), *SECRET_KEYS]
    # The required key is declared secret; the optional one cannot be (a secret with a default
    # fails validation when unset, pulumi/pulumi#21865) and the program checks it is encrypted.
    assert PROJECT["config"]["sshPrivateKey"].get("secret") is True
    assert "default" not in PROJECT["config"]["sshPrivateKey"]
    assert PROJECT["config"]["k3sToken"] == {
        "type": "string",
        "description": PROJECT["config"]["k3sToken"]["description"],
        "default": "",
    }
    assert "--secret" in PROJECT["config"]["k3sToken"]["description"]


def test_pulumi_yaml_tier_default_is_the_model_default():
    assert PROJECT["config"]["tier"]["default"] == StackConfig.model_fields["tier"].default


def _described_parts(description: str) -> list[tuple[str, bool, str]]:
    """``{a: x, b?: {c: y}}`` -> [("a", False, "x"), ("b", True, "{c: y}")]: the keys of the first braces,
    optional or not, each with its value as written ("" when none is given)."""
    body = description[description.index("{") + 1 :]
    parts, depth, current = [], 0, ""
    for char in body:
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth < 0:
                break
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    described = []
    for part in (p.strip() for p in parts):
        name, _, value = part.partition(":")
        described.append((name.rstrip("?").strip(), name.strip().endswith("?"), value.strip()))
    return described


def _described_keys(description: str) -> dict[str, str | None]:
    """``{a: x, b?, c: [y, z], d?: {...}}`` -> {"a": "x", "b": None, "c": "[y, z]", "d": None}."""
    return {name: None if optional or not value else value for name, optional, value in _described_parts(description)}


def _described_tree(description: str) -> dict[str, str]:
    """``{a: x, b?: {c: y}}`` -> {"a": "x", "b": "{c: y}"}."""
    return {name: value for name, _, value in _described_parts(description)}


def _flow(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, dict):
        # An optional key without default reads `key?`, as in the top-level summaries.
        parts = (f"{key}?" if item is None else f"{key}: {_flow(item)}" for key, item in value.items())
        return "{" + ", ".join(parts) + "}"
    return str(value)


@pytest.mark.parametrize("section", ["ssh", "k3s", "cilium", "verify", "encryption", "hubble"])
def test_pulumi_yaml_section_descriptions_match_the_model(section):
    """Pulumi.yaml's one-line summaries name every key of the section, with the model's defaults."""
    model = StackConfig.model_fields[section].default_factory()  # type: ignore[misc,call-arg]
    described = _described_keys(PROJECT["config"][section]["description"])
    assert set(described) == set(config_keys(type(model))), section
    dumped = model.model_dump(by_alias=True)
    for key, shown in described.items():
        if shown is not None:
            assert shown == _flow(dumped[key]), f"{section}.{key}: Pulumi.yaml says {shown}, the model {dumped[key]}"


def test_pulumi_yaml_lists_every_feature_and_node_key():
    features = PROJECT["config"]["features"]["description"]
    listed = re.search(r"overriding the tier: (.*?)\. Default", features, flags=re.DOTALL)
    assert listed is not None
    assert [name.strip() for name in listed[1].split(",")] == list(FEATURE_NAMES)
    node_keys = _described_keys(PROJECT["config"]["nodes"]["description"])
    assert set(node_keys) == set(config_keys(Node))


def _check_section(model: type[BaseModel], described: dict[str, str], where: str) -> None:
    assert set(described) == set(config_keys(model)), where
    for name, field in model.model_fields.items():
        key = field.alias or name
        shown = described[key]
        nested = field.annotation
        if typing.get_origin(nested) in (typing.Union, types.UnionType):
            nested = next(a for a in typing.get_args(nested) if a is not type(None))
        if isinstance(nested, type) and issubclass(nested, BaseModel) and nested.__name__ != "Artifact":
            _check_section(nested, _described_tree(shown), f"{where}.{key}")
        elif shown:
            assert shown == _flow(field.get_default(call_default_factory=True, validated_data={})), f"{where}.{key}"


def test_pulumi_yaml_airgap_description_names_every_key_with_its_default():
    from stacks.airgap import Airgap

    _check_section(Airgap, _described_tree(PROJECT["config"]["airgap"]["description"]), "airgap")
