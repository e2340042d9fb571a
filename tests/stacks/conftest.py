from __future__ import annotations

import copy
from typing import Any

import pytest

LAB: dict[str, Any] = {
    "tier": "kpr",
    "nodes": [
        {"name": "server-1", "host": "192.168.56.10", "role": "server"},
        {"name": "agent-1", "host": "192.168.56.11", "role": "agent"},
        {"name": "agent-2", "host": "192.168.56.12", "role": "agent"},
    ],
    "k3s": {"version": "v1.33.3+k3s1"},
    "cilium": {"version": "1.19.6"},
}


@pytest.fixture
def raw() -> dict[str, Any]:
    """A valid three-node lab config as it comes from Pulumi (camelCase, no namespace)."""
    return copy.deepcopy(LAB)
