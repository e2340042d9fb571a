"""Kubernetes objects as kubectl prints them (``-o json``), and the addresses in them: the parsing the checks
of LoadBalancer Services, Gateways and Deployments share. Pure: what cannot be read is ``None`` or a
:class:`NotFound` carrying kubectl's text, never guessed."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only for annotations: verification.expectations imports the check modules that import this one.
    from verification.expectations import JsonValue

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# How much of a kubectl error (or other text that is not the object) a problem quotes.
QUOTED_CHARS = 300


def ip(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def network(text: str) -> IpNetwork | None:
    """A CIDR (host bits clear) or a single address, which is its own /32 or /128."""
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError:
        return None


def same_ip(text: str, other: str) -> bool:
    a, b = ip(text), ip(other)
    return a == b if a is not None and b is not None else text.strip() == other.strip()


def canonical_ip(text: str) -> str:
    """``"FD00:10:0::1"`` -> ``"fd00:10::1"``; text that is no address stays as it is."""
    parsed = ip(text)
    return str(parsed) if parsed is not None else text.strip()


@dataclass(frozen=True)
class AddressBlock:
    """A CIDR ``"10.0.10.0/24"`` or a range ``"10.0.10.5-10.0.10.20"``, both ends included."""

    text: str
    version: int
    first: int
    last: int

    def contains(self, address: str) -> bool:
        parsed = ip(address)
        return parsed is not None and parsed.version == self.version and self.first <= int(parsed) <= self.last


def parse_address_block(text: str) -> AddressBlock | None:
    if "-" in text:
        start, _, stop = text.partition("-")
        first, last = ip(start), ip(stop)
        if first is None or last is None or first.version != last.version or int(first) > int(last):
            return None
        return AddressBlock(text.strip(), first.version, int(first), int(last))
    block = network(text)
    if block is None:
        return None
    return AddressBlock(text.strip(), block.version, int(block.network_address), int(block.broadcast_address))


# --------------------------------------------------------------------------
# Kubernetes objects printed by kubectl -o json
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class NotFound:
    """kubectl printed no object of the kind asked for: its text (an error), or why not."""

    text: str


def quote(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= QUOTED_CHARS else flat[: QUOTED_CHARS - 3] + "..."


def load_json(text: str) -> JsonValue | NotFound:
    """The JSON document in ``text``; lines before its first ``{`` line (a kubectl warning) are skipped."""
    stripped = text.strip()
    if not stripped:
        return NotFound("no output")
    try:
        loaded: JsonValue = json.loads(stripped)
        return loaded
    except json.JSONDecodeError:
        pass
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("{"):
            try:
                later: JsonValue = json.loads("\n".join(lines[index:]))
                return later
            except json.JSONDecodeError:
                break
    return NotFound(quote(text))


def as_object(value: JsonValue) -> dict[str, JsonValue]:
    return value if isinstance(value, dict) else {}


def as_objects(value: JsonValue) -> list[dict[str, JsonValue]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def as_text(value: JsonValue) -> str | None:
    return value if isinstance(value, str) else None


def as_number(value: JsonValue) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_kube_object(text: str, kind: str) -> dict[str, JsonValue] | NotFound:
    """The one object of ``kind`` kubectl printed (also the single item of a ``List``)."""
    loaded = load_json(text)
    if isinstance(loaded, NotFound):
        return loaded
    document = as_object(loaded)
    items = as_objects(document.get("items"))
    if document.get("kind") == "List" and len(items) == 1:
        document = items[0]
    if document.get("kind") != kind:
        seen = as_text(document.get("kind")) if document else None
        what = f"a {seen} object" if seen else "JSON that is no Kubernetes object"
        return NotFound(f"{what} instead of a {kind}")
    return document


def reference(metadata: Mapping[str, JsonValue]) -> str | None:
    namespace, name = as_text(metadata.get("namespace")), as_text(metadata.get("name"))
    if name is None:
        return None
    return f"{namespace}/{name}" if namespace else name


@dataclass(frozen=True)
class Condition:
    type: str
    status: str | None
    reason: str | None
    message: str | None

    def describe(self) -> str:
        text = f"{self.type} status {self.status or '?'}, reason {self.reason or '?'}"
        return f"{text}: {self.message}" if self.message else text


def is_reference(value: JsonValue) -> bool:
    if not isinstance(value, str):
        return False
    namespace, slash, name = value.partition("/")
    return bool(slash and namespace.strip() and name.strip() and "/" not in name)


def is_ip(value: JsonValue) -> bool:
    return isinstance(value, str) and ip(value) is not None


def is_block(value: JsonValue) -> bool:
    return isinstance(value, str) and parse_address_block(value) is not None


def parse_conditions(status: Mapping[str, JsonValue]) -> tuple[Condition, ...]:
    """The ``conditions`` of an object's status (or of a listener), those with a type."""
    return tuple(
        Condition(
            type=condition_type,
            status=as_text(condition.get("status")),
            reason=as_text(condition.get("reason")),
            message=as_text(condition.get("message")),
        )
        for condition in as_objects(status.get("conditions"))
        if (condition_type := as_text(condition.get("type")))
    )


def find_condition(conditions: Iterable[Condition], kind: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == kind), None)


def condition_figures(conditions: Iterable[Condition]) -> JsonValue:
    return {
        condition.type: {"status": condition.status, "reason": condition.reason, "message": condition.message}
        for condition in conditions
    }
