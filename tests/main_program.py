"""Run the whole program (`__main__.py`) under the mock engine with a stack's config."""

from __future__ import annotations

import copy
import runpy
from pathlib import Path
from typing import Any

import yaml

from tests.mocks import ProgramMocks, Recorded, run_program

ROOT = Path(__file__).resolve().parents[1]
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake-key-material-9f3a1c\n-----END OPENSSH PRIVATE KEY-----\n"

RELEASE = "kubernetes:helm.sh/v3:Release"
COMMAND = "command:remote:Command"


def stack_config(stack: str = "dev") -> dict[str, Any]:
    """The ``config:`` block of ``Pulumi.<stack>.yaml``, full keys (``k3s-cilium:tier``)."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return dict(document["config"])


SECRETS = ("k3s-cilium:sshPrivateKey", "k3s-cilium:sshPrivateKeyPassword", "k3s-cilium:k3sToken")


def run_stack(
    config: dict[str, Any],
    token: str = "",
    key_password: str = "",
    mocks: ProgramMocks | None = None,
    record: bool = True,
    secrets: dict[str, str] | None = None,
) -> Recorded:
    """The program's registrations for ``config`` plus the secrets (more in ``secrets``), stored encrypted."""
    more = {f"k3s-cilium:{key}": value for key, value in (secrets or {}).items()}
    config = {
        **config,
        "k3s-cilium:sshPrivateKey": SSH_KEY,
        "k3s-cilium:sshPrivateKeyPassword": key_password,
        "k3s-cilium:k3sToken": token,
        **more,
    }
    return run_program(
        lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"),
        mocks,
        config=config,
        secret_config=(*SECRETS, *more),
        record=record,
    )


def with_changes(**changes: Any) -> dict[str, Any]:
    """The dev stack's config with top-level keys replaced."""
    config = copy.deepcopy(stack_config())
    for key, value in changes.items():
        config[f"k3s-cilium:{key}"] = value
    return config
