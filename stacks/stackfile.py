"""Reading ``Pulumi.<stack>.yaml`` files without the Pulumi CLI (for the offline plan and tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stacks.config import NAMESPACE, ConfigError, StackConfig, parse

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = Path(__file__).resolve().parent / "examples"


def locate(stack: str, root: Path = PROJECT_ROOT) -> Path:
    """``dev`` -> ``Pulumi.dev.yaml`` in the project, else ``stacks/examples/dev.yaml``, else a path."""
    for candidate in (root / f"Pulumi.{stack}.yaml", EXAMPLES / f"{stack}.yaml", Path(stack)):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no stack {stack!r}: looked for {root / f'Pulumi.{stack}.yaml'}, {EXAMPLES / f'{stack}.yaml'} "
        "and a file of that name"
    )


def raw_config(document: dict[str, Any]) -> dict[str, Any]:
    """The project's keys from a stack file's ``config:`` block, namespace stripped.

    Encrypted values (``{secure: ...}``) are left out, or read as ``[secret]`` inside a key: the plan
    never needs a secret.
    """
    config = document.get("config") or {}
    raw: dict[str, Any] = {}
    for key, value in config.items():
        namespace, _, name = str(key).partition(":")
        if not name:
            namespace, name = NAMESPACE, namespace
        if namespace != NAMESPACE:
            continue
        if _is_secure(value):
            continue
        raw[name] = _without_secrets(value)
    return raw


# What the plan reads in place of an encrypted value nested in a key (a BGP peer's password).
SECRET_PLACEHOLDER = "[secret]"


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def _without_secrets(value: Any) -> Any:
    if _is_secure(value):
        return SECRET_PLACEHOLDER
    if isinstance(value, dict):
        return {key: _without_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_secrets(item) for item in value]
    return value


def _document(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict):
        raise ConfigError([f"{path}: a stack file must be a YAML mapping with a 'config:' key"])
    return document


def load(path: Path) -> StackConfig:
    return parse(raw_config(_document(path)))


def secrets_set(path: Path) -> frozenset[str]:
    """The project's keys the stack file holds encrypted (the plan says whether a secret is set, never what)."""
    config = _document(path).get("config") or {}
    return frozenset(
        str(key).removeprefix(f"{NAMESPACE}:") for key, value in config.items() if _is_secure(value)
    )
