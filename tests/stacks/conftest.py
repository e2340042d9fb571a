from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.lab import LAB


@pytest.fixture
def raw() -> dict[str, Any]:
    """A valid three-node lab config as it comes from Pulumi (camelCase, no namespace)."""
    return copy.deepcopy(LAB)
