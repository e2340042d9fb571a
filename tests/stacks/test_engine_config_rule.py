"""The Pulumi engine's project-config rule, applied to every stack file the project ships.

The rule as pulumi/pulumi states it (pkg/workspace/config.go, ``mergeConfig``
via ``ValidateStackConfigAndApplyProjectConfig``, and
sdk/go/common/workspace/project.go, ``Project.Validate``, read at v3.274.1):

- a key declared in Pulumi.yaml under the project's namespace, with neither
  ``default`` nor ``value``, that the stack does not set is missing, and the
  engine refuses the stack ("Stack 'dev' is missing configuration values ...")
  before the program starts;
- a declared key cannot have both ``default`` and ``value``; a typed key's
  default must be of its type; an array needs ``items``;
- a stack value of a typed key must be of that type, and a ``secret: true``
  key must be stored encrypted (``secure:``).

The engine tests (tests/engine) check the same stacks with the real CLI.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
NAME = PROJECT["name"]
# What the user adds with `pulumi config set --secret sshPrivateKey < key` (README, "First real deploy").
SECURE = {"secure": "v1:AAAA"}

SHIPPED_STACKS = [ROOT / "Pulumi.dev.yaml", *sorted((ROOT / "stacks" / "examples").glob("*.yaml"))]

_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list}


def _full_key(key: str) -> str:
    return key if ":" in key else f"{NAME}:{key}"


def _is_type(type_name: str, value: Any) -> bool:
    expected = _TYPES[type_name]
    return isinstance(value, expected) and not (expected is int and isinstance(value, bool))


def project_problems(project: dict[str, Any]) -> list[str]:
    """What ``Project.Validate`` refuses in the config declarations."""
    problems = []
    for key, declared in (project.get("config") or {}).items():
        if "default" in declared and "value" in declared:
            problems.append(f"project config '{key}' cannot have both a 'default' and 'value' attribute")
        type_name = declared.get("type")
        if type_name == "array" and "items" not in declared:
            problems.append(f"'{key}' declares an array but does not specify the underlying type via 'items'")
        if type_name and "default" in declared and not _is_type(type_name, declared["default"]):
            problems.append(f"The default value specified for configuration key '{key}' is not of type '{type_name}'")
    return problems


def stack_problems(project: dict[str, Any], stack_name: str, stack: dict[str, Any]) -> list[str]:
    """What ``ValidateStackConfigAndApplyProjectConfig`` refuses for a stack's ``config:`` block."""
    config = {_full_key(k): v for k, v in (stack.get("config") or {}).items()}
    missing, problems = [], []
    for key, declared in sorted((project.get("config") or {}).items()):
        full = _full_key(key)
        if full not in config:
            if full.startswith(f"{NAME}:") and "default" not in declared and "value" not in declared:
                missing.append(key)
            continue
        value = config[full]
        secure = isinstance(value, dict) and set(value) == {"secure"}
        if declared.get("secret") and not secure:
            problems.append(f"Stack '{stack_name}' with configuration key '{key}' must be encrypted as it's secret")
        if declared.get("type") and not secure and not _is_type(declared["type"], value):
            problems.append(f"Stack '{stack_name}' with configuration key '{key}' must be of type '{declared['type']}'")
    if missing:
        problems.insert(0, f"Stack '{stack_name}' is missing configuration values {', '.join(missing)}")
    return problems


def as_user_sets_it_up(path: Path) -> dict[str, Any]:
    """The stack file after README's steps: copied under a stack name, sshPrivateKey set with --secret."""
    stack = yaml.safe_load(path.read_text()) or {}
    stack.setdefault("config", {})[f"{NAME}:sshPrivateKey"] = SECURE
    return stack


def test_project_declarations_pass_the_engine():
    assert project_problems(PROJECT) == []


@pytest.mark.parametrize("path", SHIPPED_STACKS, ids=lambda p: p.name)
def test_every_shipped_stack_passes_the_engine_once_the_ssh_key_is_set(path):
    assert stack_problems(PROJECT, path.stem, as_user_sets_it_up(path)) == []


@pytest.mark.parametrize("path", SHIPPED_STACKS, ids=lambda p: p.name)
def test_only_the_ssh_key_is_required(path):
    stack = yaml.safe_load(path.read_text()) or {}
    assert stack_problems(PROJECT, "s", stack) == ["Stack 's' is missing configuration values sshPrivateKey"]


def test_the_rule_catches_a_section_declared_without_default():
    """The defect the engine found: object keys declared with a description only."""
    project = copy.deepcopy(PROJECT)
    for key in ("features", "verify"):
        del project["config"][key]["default"]
    problems = stack_problems(project, "dev", as_user_sets_it_up(ROOT / "Pulumi.dev.yaml"))
    assert problems == ["Stack 'dev' is missing configuration values features, verify"]


def test_the_rule_refuses_a_plaintext_secret_and_a_mistyped_value():
    stack = as_user_sets_it_up(ROOT / "Pulumi.dev.yaml")
    stack["config"][f"{NAME}:sshPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----"
    stack["config"][f"{NAME}:tier"] = ["kpr"]
    assert stack_problems(PROJECT, "dev", stack) == [
        "Stack 'dev' with configuration key 'sshPrivateKey' must be encrypted as it's secret",
        "Stack 'dev' with configuration key 'tier' must be of type 'string'",
    ]
