"""The conventions every stack config section follows."""

import re

from pydantic import BaseModel, ConfigDict

# Kubernetes qualified names: optional DNS-subdomain prefix, then a name part.
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def camel(name: str) -> str:
    """``host_key`` -> ``hostKey``: stack config keys are camelCase in YAML."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


class ConfigModel(BaseModel):
    """camelCase keys; unknown keys are errors, not silently ignored; values are frozen."""

    model_config = ConfigDict(alias_generator=camel, populate_by_name=True, extra="forbid", frozen=True)
