"""LoadBalancer Services on Cilium: their address, the L2 lease, the BGP sessions and advertisements.

Four checks on the machinery of :mod:`verification.expectations` (they join
its ``CHECKS`` when this module is imported, which that module does at its
end):

- ``loadbalancer-address``: ``kubectl get service -n NS NAME -o json``;
- ``l2-lease``: ``kubectl -n kube-system get lease NAME -o json``;
- ``bgp-peers``: the agent's ``cilium-dbg bgp peers``;
- ``bgp-routes``: the agent's ``cilium-dbg bgp routes advertised ipv4 unicast``.

The parsers here are pure like those of :mod:`verification.parsers`: what
they cannot find is ``None`` or absent, never guessed. The two BGP tables are
what Cilium's ``pkg/bgp/api/printers.go`` (``PrintBGPPeersTable``,
``PrintBGPRoutesTable``) writes through ``text/tabwriter`` with cilium-dbg's
padding of 3: cells are separated by two spaces or more, or by tabs, and an
empty cell is found by where its neighbours start under the header.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from verification.expectations import (
    CHECKS,
    Check,
    Expectations,
    Figures,
    JsonValue,
    KeySpec,
    Problem,
    Verdict,
    _int,
    _is_int,
    _is_str,
    _list_of,
    _str,
    _str_list,
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# How much of a kubectl error (or other text that is not the object) a problem quotes.
_QUOTED_CHARS = 300


def _ip(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _network(text: str) -> IpNetwork | None:
    """A CIDR (host bits clear) or a single address, which is its own /32 or /128."""
    try:
        return ipaddress.ip_network(text.strip())
    except ValueError:
        return None


def _same_ip(text: str, other: str) -> bool:
    a, b = _ip(text), _ip(other)
    return a == b if a is not None and b is not None else text.strip() == other.strip()


def _canonical_ip(text: str) -> str:
    """``"FD00:10:0::1"`` -> ``"fd00:10::1"``; text that is no address stays as it is."""
    parsed = _ip(text)
    return str(parsed) if parsed is not None else text.strip()


@dataclass(frozen=True)
class AddressBlock:
    """A CIDR ``"10.0.10.0/24"`` or a range ``"10.0.10.5-10.0.10.20"``, both ends included."""

    text: str
    version: int
    first: int
    last: int

    def contains(self, address: str) -> bool:
        parsed = _ip(address)
        return parsed is not None and parsed.version == self.version and self.first <= int(parsed) <= self.last


def parse_address_block(text: str) -> AddressBlock | None:
    if "-" in text:
        start, _, stop = text.partition("-")
        first, last = _ip(start), _ip(stop)
        if first is None or last is None or first.version != last.version or int(first) > int(last):
            return None
        return AddressBlock(text.strip(), first.version, int(first), int(last))
    network = _network(text)
    if network is None:
        return None
    return AddressBlock(text.strip(), network.version, int(network.network_address), int(network.broadcast_address))


# --------------------------------------------------------------------------
# Kubernetes objects printed by kubectl -o json
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class NotFound:
    """kubectl printed no object of the kind asked for: its text (an error), or why not."""

    text: str


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _QUOTED_CHARS else flat[: _QUOTED_CHARS - 3] + "..."


def _load_json(text: str) -> JsonValue | NotFound:
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
    return NotFound(_quote(text))


def _object(value: JsonValue) -> dict[str, JsonValue]:
    return value if isinstance(value, dict) else {}


def _objects(value: JsonValue) -> list[dict[str, JsonValue]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _text(value: JsonValue) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: JsonValue) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_kube_object(text: str, kind: str) -> dict[str, JsonValue] | NotFound:
    """The one object of ``kind`` kubectl printed (also the single item of a ``List``)."""
    loaded = _load_json(text)
    if isinstance(loaded, NotFound):
        return loaded
    document = _object(loaded)
    items = _objects(document.get("items"))
    if document.get("kind") == "List" and len(items) == 1:
        document = items[0]
    if document.get("kind") != kind:
        seen = _text(document.get("kind")) if document else None
        what = f"a {seen} object" if seen else "JSON that is no Kubernetes object"
        return NotFound(f"{what} instead of a {kind}")
    return document


def _reference(metadata: Mapping[str, JsonValue]) -> str | None:
    namespace, name = _text(metadata.get("namespace")), _text(metadata.get("name"))
    if name is None:
        return None
    return f"{namespace}/{name}" if namespace else name


# --------------------------------------------------------------------------
# loadbalancer-address
# --------------------------------------------------------------------------

# The condition Cilium's LB-IPAM sets on a Service: cilium.io/IPAMRequestSatisfied in 1.19.6
# (operator/pkg/lbipam/lbipam.go), io.cilium/lb-ipam-request-satisfied before the rename and in the docs.
LB_IPAM_CONDITIONS = ("cilium.io/IPAMRequestSatisfied", "io.cilium/lb-ipam-request-satisfied")
NODE_IPAM_CLASS = "io.cilium/node"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str | None
    reason: str | None
    message: str | None

    def describe(self) -> str:
        text = f"{self.type} status {self.status or '?'}, reason {self.reason or '?'}"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class LoadBalancerService:
    reference: str | None
    service_type: str | None
    load_balancer_class: str | None
    ingress: tuple[str, ...]
    conditions: tuple[Condition, ...]

    @property
    def lb_ipam_conditions(self) -> list[Condition]:
        return [condition for condition in self.conditions if condition.type in LB_IPAM_CONDITIONS]


def parse_service(text: str) -> LoadBalancerService | NotFound:
    """``kubectl get service -n NS NAME -o json``; kubectl's error text is a :class:`NotFound`."""
    document = read_kube_object(text, "Service")
    if isinstance(document, NotFound):
        return document
    spec, status = _object(document.get("spec")), _object(document.get("status"))
    ingress = _objects(_object(status.get("loadBalancer")).get("ingress"))
    return LoadBalancerService(
        reference=_reference(_object(document.get("metadata"))),
        service_type=_text(spec.get("type")),
        load_balancer_class=_text(spec.get("loadBalancerClass")),
        ingress=tuple(ip for entry in ingress if (ip := _text(entry.get("ip")))),
        conditions=tuple(
            Condition(
                type=condition_type,
                status=_text(condition.get("status")),
                reason=_text(condition.get("reason")),
                message=_text(condition.get("message")),
            )
            for condition in _objects(status.get("conditions"))
            if (condition_type := _text(condition.get("type")))
        ),
    )


def _is_reference(value: JsonValue) -> bool:
    if not isinstance(value, str):
        return False
    namespace, slash, name = value.partition("/")
    return bool(slash and namespace.strip() and name.strip() and "/" not in name)


def _is_ip(value: JsonValue) -> bool:
    return isinstance(value, str) and _ip(value) is not None


def _is_block(value: JsonValue) -> bool:
    return isinstance(value, str) and parse_address_block(value) is not None


LOADBALANCER_ADDRESS_KEYS: dict[str, KeySpec] = {
    "service": KeySpec('"namespace/name" of the Service (named in problems)', _is_reference),
    "address": KeySpec("an IP address status.loadBalancer.ingress must hold", _is_ip),
    "within": KeySpec(
        'pool blocks every ingress address must lie in: CIDRs "10.0.10.0/24" or ranges "10.0.10.5-10.0.10.20"',
        _list_of(_is_block),
    ),
    "nodeAddresses": KeySpec(
        "node IPs (Cilium node IPAM): every ingress address must be one of them", _list_of(_is_ip)
    ),
}


def _service_figures(service: LoadBalancerService | None) -> Figures:
    if service is None:
        return {"ingress": [], "type": None, "loadBalancerClass": None, "conditions": {}}
    return {
        "ingress": list(service.ingress),
        "type": service.service_type,
        "loadBalancerClass": service.load_balancer_class,
        "conditions": {
            condition.type: {"status": condition.status, "reason": condition.reason, "message": condition.message}
            for condition in service.conditions
        },
    }


def _no_address_seen(service: LoadBalancerService) -> str:
    """Why a Service has no address, in LB-IPAM's words when it said something."""
    seen = "none (status.loadBalancer.ingress is empty)"
    conditions = service.lb_ipam_conditions
    if conditions:
        return f"{seen}; LB-IPAM: " + "; ".join(condition.describe() for condition in conditions)
    if service.load_balancer_class == NODE_IPAM_CLASS:
        return f"{seen}; loadBalancerClass {NODE_IPAM_CLASS} (node IPAM): no node address was given"
    cls = service.load_balancer_class
    where = f"loadBalancerClass {cls}" if cls else "no loadBalancerClass"
    return f"{seen}; no LB-IPAM condition ({' or '.join(LB_IPAM_CONDITIONS)}) on the Service, {where}"


def _expected_address_label(expect: Expectations) -> str:
    address = _str(expect, "address")
    if address is not None:
        return address
    blocks = _str_list(expect, "within")
    if blocks:
        return f"assigned from {', '.join(blocks)}"
    nodes = _str_list(expect, "nodeAddresses")
    if nodes:
        return f"assigned from the node addresses {', '.join(nodes)}"
    return "assigned"


def _address_problems(service: LoadBalancerService, label: str, expect: Expectations) -> Iterable[Problem]:
    item = f"service {label} LoadBalancer address"
    ingress = service.ingress
    address = _str(expect, "address")
    if address is not None and not any(_same_ip(address, seen) for seen in ingress):
        yield Problem(item, address, ", ".join(ingress))
    blocks = [block for text in _str_list(expect, "within") if (block := parse_address_block(text))]
    if blocks:
        wanted = f"within {', '.join(block.text for block in blocks)}"
        for seen in ingress:
            if not any(block.contains(seen) for block in blocks):
                yield Problem(item, wanted, f"{seen} (in none of them)")
    nodes = _str_list(expect, "nodeAddresses")
    if nodes:
        wanted = f"one of the node addresses {', '.join(nodes)}"
        for seen in ingress:
            if not any(_same_ip(node, seen) for node in nodes):
                yield Problem(item, wanted, f"{seen} (not a node address)")


def evaluate_loadbalancer_address(text: str, expect: Expectations) -> Verdict:
    wanted = _str(expect, "service")
    parsed = parse_service(text)
    if isinstance(parsed, NotFound):
        label = wanted or "(the one asked for)"
        verdict = Verdict(figures=_service_figures(None))
        verdict.add(Problem(f"service {label}", "to exist", f"service {label} not found: {parsed.text}"))
        return verdict
    verdict = Verdict(figures=_service_figures(parsed))
    label = wanted or parsed.reference or "(unnamed)"
    if wanted is not None and parsed.reference is not None and parsed.reference != wanted:
        verdict.add(Problem(f"service {wanted}", "in kubectl's output", f"service {parsed.reference}"))
        return verdict
    if parsed.service_type != "LoadBalancer":
        verdict.add(Problem(f"service {label} type", "LoadBalancer", parsed.service_type or "no spec.type"))
        return verdict
    if not parsed.ingress:
        verdict.add(
            Problem(f"service {label} LoadBalancer address", _expected_address_label(expect), _no_address_seen(parsed))
        )
        return verdict
    verdict.problems.extend(_address_problems(parsed, label, expect))
    return verdict


# --------------------------------------------------------------------------
# l2-lease
# --------------------------------------------------------------------------

# Cilium's agents name the lease of a Service cilium-l2announce-<namespace>-<service>
# (pkg/l2announcer/l2announcer.go; docs: network/l2-announcements, "Leader election").
L2_LEASE_PREFIX = "cilium-l2announce-"


@dataclass(frozen=True)
class Lease:
    name: str | None
    holder: str | None
    lease_duration_seconds: int | None
    lease_transitions: int | None
    acquire_time: str | None
    renew_time: str | None


def parse_lease(text: str) -> Lease | NotFound:
    """``kubectl -n kube-system get lease NAME -o json`` (coordination.k8s.io/v1)."""
    document = read_kube_object(text, "Lease")
    if isinstance(document, NotFound):
        return document
    spec = _object(document.get("spec"))
    return Lease(
        name=_text(_object(document.get("metadata")).get("name")),
        holder=_text(spec.get("holderIdentity")) or None,
        lease_duration_seconds=_number(spec.get("leaseDurationSeconds")),
        lease_transitions=_number(spec.get("leaseTransitions")),
        acquire_time=_text(spec.get("acquireTime")),
        renew_time=_text(spec.get("renewTime")),
    )


L2_LEASE_KEYS: dict[str, KeySpec] = {
    "lease": KeySpec(f'the lease\'s name ("{L2_LEASE_PREFIX}<namespace>-<service>")', _is_str),
    "holders": KeySpec("node names: spec.holderIdentity must be one of them", _list_of(_is_str)),
}

_LEASE_FIX = (
    "the Cilium agents create a lease for each LoadBalancer Service a CiliumL2AnnouncementPolicy selects "
    f"(l2announcements.enabled=true), named {L2_LEASE_PREFIX}<namespace>-<service>: check that a policy selects "
    "the Service and nodes, and the agents' logs"
)


def _lease_figures(lease: Lease | None) -> Figures:
    if lease is None:
        return dict.fromkeys(("holder", "leaseDurationSeconds", "leaseTransitions", "acquireTime", "renewTime"))
    return {
        "holder": lease.holder,
        "leaseDurationSeconds": lease.lease_duration_seconds,
        "leaseTransitions": lease.lease_transitions,
        "acquireTime": lease.acquire_time,
        "renewTime": lease.renew_time,
    }


def evaluate_l2_lease(text: str, expect: Expectations) -> Verdict:
    wanted = _str(expect, "lease")
    holders = _str_list(expect, "holders")
    parsed = parse_lease(text)
    if isinstance(parsed, NotFound):
        label = wanted or "(the one asked for)"
        verdict = Verdict(figures=_lease_figures(None))
        verdict.add(Problem(f"lease {label}", "to exist", f"lease {label} not found: {parsed.text}", _LEASE_FIX))
        return verdict
    verdict = Verdict(figures=_lease_figures(parsed))
    label = wanted or parsed.name or "(unnamed)"
    if wanted is not None and parsed.name is not None and parsed.name != wanted:
        verdict.add(Problem(f"lease {wanted}", "in kubectl's output", f"lease {parsed.name}"))
        return verdict
    item = f"lease {label} holder (spec.holderIdentity)"
    wanted_holder = f"one of the nodes {', '.join(holders)}" if holders else "a node"
    if parsed.holder is None:
        verdict.add(Problem(item, wanted_holder, "none: no node announces the Service's addresses"))
    elif holders and parsed.holder not in holders:
        verdict.add(Problem(item, wanted_holder, parsed.holder))
    return verdict


# --------------------------------------------------------------------------
# Tables of cilium-dbg bgp
# --------------------------------------------------------------------------

BGP_DISABLED = "BGP Control Plane is disabled"
# A cell: words with single spaces between them ("Local AS", "[{Origin: i} {AsPath: 65001}]").
_CELL = re.compile(r"\S+(?: \S+)*")


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]


def _cells(line: str) -> list[tuple[int, str]]:
    """(start, text) of each cell; with tabs, start is the cell's index and empty cells count."""
    if "\t" in line:
        return [(index, cell.strip()) for index, cell in enumerate(line.split("\t"))]
    return [(match.start(), match.group()) for match in _CELL.finditer(line)]


def _row(line: str, columns: Sequence[str], starts: Sequence[int]) -> dict[str, str]:
    row = dict.fromkeys(columns, "")
    last = len(columns) - 1
    if "\t" in line:
        cells = [cell.strip() for cell in line.split("\t")]
        row.update(zip(columns[:last], cells[:last], strict=False))
        row[columns[last]] = " ".join(cell for cell in cells[last:] if cell)
        return row
    found = _cells(line)
    if len(found) > last:
        # A full row: the cells in order, the rest of the line is the last column.
        row.update(zip(columns[:last], (cell for _, cell in found[:last]), strict=True))
        row[columns[last]] = line[found[last][0] :].strip()
        return row
    # A row with empty cells (a peer's further address families): each cell under the column it starts in.
    for start, cell in found:
        index = max((i for i, column_start in enumerate(starts) if column_start <= start), default=0)
        row[columns[index]] = f"{row[columns[index]]} {cell}".strip()
    return row


def parse_table(text: str, required: Iterable[str]) -> Table | None:
    """The table whose header line holds the ``required`` column names; lines before it are skipped."""
    wanted = set(required)
    lines = [line.rstrip("\r\n") for line in text.splitlines()]
    for index, line in enumerate(lines):
        header = [(start, name) for start, name in _cells(line) if name]
        if wanted <= {name for _, name in header}:
            columns = tuple(name for _, name in header)
            starts = [start for start, _ in header]
            rows = tuple(_row(row, columns, starts) for row in lines[index + 1 :] if row.strip())
            return Table(columns, rows)
    return None


def _is_disabled(text: str) -> bool:
    return any(line.strip() == BGP_DISABLED for line in text.splitlines())


def _first_line(text: str) -> str | None:
    return next((_quote(line) for line in text.splitlines() if line.strip()), None)


def _whole_number(text: str) -> int | None:
    """An AS number or a route count as printed; anything else is ``None``."""
    return int(text) if text.isdigit() else None


# --------------------------------------------------------------------------
# bgp-peers
# --------------------------------------------------------------------------

PEERS_HEADER = ("Local AS", "Peer AS", "Peer Address")


@dataclass
class BgpPeer:
    """One row of ``cilium-dbg bgp peers`` and the family lines under it."""

    node: str | None
    local_asn: int | None
    peer_asn: int | None
    address: str
    port: int | None
    session: str
    uptime: str | None
    families: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)

    def describe(self) -> str:
        where = f" on {self.node}" if self.node else ""
        return f"{self.address} (AS {self.peer_asn}, {self.session or 'no session state'}{where})"


@dataclass(frozen=True)
class BgpPeers:
    disabled: bool
    table: bool
    peers: tuple[BgpPeer, ...]
    first_line: str | None


def split_peer_address(cell: str, has_port: bool = True) -> tuple[str, int | None]:
    """``"10.0.0.1:179"`` -> ("10.0.0.1", 179); ``"fd00:10::1:179"`` -> ("fd00:10::1", 179).

    cilium-dbg prints ``<address>:<port>`` without brackets, so the port is what
    follows the last colon. cilium-cli's cluster-wide table prints the address
    alone (``has_port=False``): then a cell that is an address as it stands has no port.
    """
    cell = cell.strip()
    if not has_port and _ip(cell) is not None:
        return _canonical_ip(cell), None
    host, colon, port = cell.rpartition(":")
    host = host.strip("[]")
    if colon and port.isdigit() and _ip(host) is not None:
        return _canonical_ip(host), int(port)
    return _canonical_ip(cell), None


def _family(row: Mapping[str, str]) -> tuple[str, tuple[int | None, int | None]] | None:
    name = row.get("Family", "")
    if not name:
        return None
    return name, (_whole_number(row.get("Received", "")), _whole_number(row.get("Advertised", "")))


def parse_bgp_peers(text: str) -> BgpPeers:
    """``cilium-dbg bgp peers``, with or without the Uptime column; also the cluster-wide table of cilium-cli."""
    disabled = _is_disabled(text)
    table = parse_table(text, PEERS_HEADER)
    if table is None:
        return BgpPeers(disabled, False, (), _first_line(text))
    has_node = "Node" in table.columns
    peers: list[BgpPeer] = []
    for row in table.rows:
        family = _family(row)
        if not row.get("Peer Address") and peers:
            if family is not None:
                peers[-1].families[family[0]] = family[1]
            continue
        address, port = split_peer_address(row.get("Peer Address", ""), has_port=not has_node)
        peer = BgpPeer(
            node=row.get("Node") or None,
            local_asn=_whole_number(row.get("Local AS", "")),
            peer_asn=_whole_number(row.get("Peer AS", "")),
            address=address,
            port=port,
            session=row.get("Session") or row.get("Session State") or "",
            uptime=row.get("Uptime") or None,
        )
        if family is not None:
            peer.families[family[0]] = family[1]
        peers.append(peer)
    return BgpPeers(disabled, True, tuple(peers), _first_line(text))


def _object_of(fields: Mapping[str, Callable[[JsonValue], bool]]) -> Callable[[JsonValue], bool]:
    """A JSON object with exactly these keys, each value accepted by its function."""
    return lambda value: (
        isinstance(value, dict)
        and set(value) == set(fields)
        and all(accept(value[key]) for key, accept in fields.items())
    )


BGP_PEERS_KEYS: dict[str, KeySpec] = {
    "localASN": KeySpec("the Local AS every matched (or, without peers, every listed) session must have", _is_int),
    "peers": KeySpec(
        '[{"address": "<peer IP>", "asn": <peer AS>}]: each listed with that Peer AS and session established',
        _list_of(_object_of({"address": _is_ip, "asn": _is_int})),
    ),
}

_BGP_FIX = "set the Helm value bgpControlPlane.enabled=true (the agents pick it up when they restart)"


def _peer_figure(peer: BgpPeer) -> JsonValue:
    figure: dict[str, JsonValue] = {
        "localASN": peer.local_asn,
        "peerASN": peer.peer_asn,
        "address": peer.address,
        "port": peer.port,
        "session": peer.session or None,
        "uptime": peer.uptime,
        "families": {
            name: {"received": received, "advertised": advertised}
            for name, (received, advertised) in peer.families.items()
        },
    }
    if peer.node is not None:
        figure["node"] = peer.node
    return figure


def _disabled_problem() -> Problem:
    return Problem("BGP control plane", "enabled", f'disabled on the node (cilium-dbg: "{BGP_DISABLED}")', _BGP_FIX)


def _listed(peers: Sequence[BgpPeer]) -> str:
    return "only " + ", ".join(peer.describe() for peer in peers) if peers else "no peers (the table is empty)"


def _peer_problems(peer: BgpPeer, address: str, asn: int, local_asn: int | None) -> list[Problem]:
    problems: list[Problem] = []
    label = f"BGP peer {address}"
    if peer.peer_asn != asn:
        seen = str(peer.peer_asn) if peer.peer_asn is not None else None
        problems.append(Problem(f"{label} Peer AS", str(asn), seen))
    if local_asn is not None and peer.local_asn != local_asn:
        seen = str(peer.local_asn) if peer.local_asn is not None else None
        problems.append(Problem(f"{label} (AS {asn}) Local AS", str(local_asn), seen))
    if peer.session.lower() != "established":
        seen = peer.session or None
        if seen and peer.uptime:
            seen = f"{seen} (uptime {peer.uptime})"
        problems.append(Problem(f"{label} (AS {asn}) session", "established", seen))
    return problems


def _wanted_peers(expect: Expectations) -> list[tuple[str, int]]:
    wanted = expect.get("peers")
    return [
        (_canonical_ip(address), asn)
        for item in (wanted if isinstance(wanted, list) else [])
        if isinstance(item, dict)
        and (address := _text(item.get("address"))) is not None
        and (asn := _number(item.get("asn"))) is not None
    ]


def evaluate_bgp_peers(text: str, expect: Expectations) -> Verdict:
    parsed = parse_bgp_peers(text)
    verdict = Verdict(figures={"disabled": parsed.disabled, "peers": [_peer_figure(peer) for peer in parsed.peers]})
    if parsed.disabled:
        verdict.add(_disabled_problem())
        return verdict
    if not parsed.table:
        verdict.add(
            Problem("cilium-dbg bgp peers table", "with a 'Local AS  Peer AS  Peer Address' header", parsed.first_line)
        )
        return verdict
    local_asn = _int(expect, "localASN")
    wanted = _wanted_peers(expect)
    for address, asn in wanted:
        rows = [peer for peer in parsed.peers if _same_ip(peer.address, address)]
        if not rows:
            verdict.add(Problem(f"BGP peer {address} (AS {asn})", "listed", _listed(parsed.peers)))
            continue
        fewest: list[Problem] = min((_peer_problems(row, address, asn, local_asn) for row in rows), key=len)
        verdict.problems.extend(fewest)
    if local_asn is not None and not wanted:
        if not parsed.peers:
            verdict.add(Problem(f"BGP peers of Local AS {local_asn}", "listed", _listed(parsed.peers)))
        for peer in parsed.peers:
            if peer.local_asn != local_asn:
                seen = str(peer.local_asn) if peer.local_asn is not None else None
                verdict.add(Problem(f"BGP peer {peer.address} Local AS", str(local_asn), seen))
    return verdict


# --------------------------------------------------------------------------
# bgp-routes
# --------------------------------------------------------------------------

ROUTES_HEADER = ("VRouter", "Prefix", "NextHop")


@dataclass(frozen=True)
class BgpRoute:
    node: str | None
    vrouter: str
    peer: str | None
    prefix: str
    next_hop: str
    age: str | None
    attrs: str


@dataclass(frozen=True)
class BgpRoutes:
    disabled: bool
    columns: tuple[str, ...] | None
    routes: tuple[BgpRoute, ...]
    first_line: str | None

    @property
    def has_peer_column(self) -> bool:
        return self.columns is not None and "Peer" in self.columns


def parse_bgp_routes(text: str) -> BgpRoutes:
    """``cilium-dbg bgp routes <available|advertised> <afi> <safi>``; also cilium-cli's table with a Node column."""
    disabled = _is_disabled(text)
    table = parse_table(text, ROUTES_HEADER)
    if table is None:
        return BgpRoutes(disabled, None, (), _first_line(text))
    routes = tuple(
        BgpRoute(
            node=row.get("Node") or None,
            vrouter=row.get("VRouter", ""),
            peer=_canonical_ip(row["Peer"]) if row.get("Peer") else None,
            prefix=row.get("Prefix", ""),
            next_hop=row.get("NextHop", ""),
            age=row.get("Age") or None,
            attrs=row.get("Attrs", ""),
        )
        for row in table.rows
    )
    return BgpRoutes(disabled, table.columns, routes, _first_line(text))


def _is_prefix(value: JsonValue) -> bool:
    return isinstance(value, str) and _network(value) is not None


BGP_ROUTES_KEYS: dict[str, KeySpec] = {
    "prefixes": KeySpec(
        'CIDRs that must be advertised ("10.0.10.0/24"; an address alone is its /32)', _list_of(_is_prefix)
    ),
    "peers": KeySpec(
        "peer addresses: each prefix must be advertised to each (without prefixes, something must be)",
        _list_of(_is_ip),
    ),
}


def _route_figure(route: BgpRoute) -> JsonValue:
    figure: dict[str, JsonValue] = {
        "vrouter": int(route.vrouter) if route.vrouter.isdigit() else route.vrouter,
        "peer": route.peer,
        "prefix": route.prefix,
        "nextHop": route.next_hop,
        "age": route.age,
    }
    if route.node is not None:
        figure["node"] = route.node
    return figure


def _same_prefix(text: str, other: str) -> bool:
    a, b = _network(text), _network(other)
    return a == b if a is not None and b is not None else text.strip() == other.strip()


def _peers_text(routes: Iterable[BgpRoute]) -> str:
    return ", ".join(dict.fromkeys(route.peer for route in routes if route.peer))


def _prefix_problems(routes: Sequence[BgpRoute], prefix: str, peers: Sequence[str]) -> Iterable[Problem]:
    advertised = [route for route in routes if _same_prefix(route.prefix, prefix)]
    if not peers:
        if not advertised:
            listed = ", ".join(dict.fromkeys(route.prefix for route in routes))
            seen = f"not in the table (it has {listed})" if routes else "no routes (the table is empty)"
            yield Problem(f"prefix {prefix}", "advertised", seen)
        return
    for peer in peers:
        if any(route.peer is not None and _same_ip(route.peer, peer) for route in advertised):
            continue
        others = _peers_text(advertised)
        seen = f"advertised to {others} only" if others else "not advertised to any peer"
        yield Problem(f"prefix {prefix}", f"advertised to peer {peer}", seen)


def evaluate_bgp_routes(text: str, expect: Expectations) -> Verdict:
    parsed = parse_bgp_routes(text)
    verdict = Verdict(
        figures={
            "disabled": parsed.disabled,
            "count": len(parsed.routes),
            "routes": [_route_figure(route) for route in parsed.routes],
        }
    )
    if parsed.disabled:
        verdict.add(_disabled_problem())
        return verdict
    if parsed.columns is None:
        verdict.add(
            Problem("cilium-dbg bgp routes table", "with a 'VRouter ... Prefix  NextHop' header", parsed.first_line)
        )
        return verdict
    peers = [_canonical_ip(peer) for peer in _str_list(expect, "peers")]
    if peers and not parsed.has_peer_column:
        verdict.add(
            Problem(
                "Peer column of the routes table",
                "present (cilium-dbg bgp routes advertised <afi> <safi>, without `peer <address>`)",
                f"columns {', '.join(parsed.columns)}",
            )
        )
        peers = []
    prefixes = _str_list(expect, "prefixes")
    for prefix in prefixes:
        verdict.problems.extend(_prefix_problems(parsed.routes, prefix, peers))
    if not prefixes:
        for peer in peers:
            if not any(route.peer is not None and _same_ip(route.peer, peer) for route in parsed.routes):
                others = _peers_text(parsed.routes)
                seen = f"none (routes go to {others} only)" if others else "none (the table is empty)"
                verdict.add(Problem(f"routes advertised to peer {peer}", "at least one", seen))
    return verdict


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

LOAD_BALANCER_CHECKS = (
    Check(
        "loadbalancer-address",
        "kubectl get service -n <namespace> <name> -o json (or kubectl's error)",
        LOADBALANCER_ADDRESS_KEYS,
        evaluate_loadbalancer_address,
    ),
    Check(
        "l2-lease",
        "kubectl -n kube-system get lease cilium-l2announce-<namespace>-<service> -o json (or kubectl's error)",
        L2_LEASE_KEYS,
        evaluate_l2_lease,
    ),
    Check("bgp-peers", "cilium-dbg bgp peers", BGP_PEERS_KEYS, evaluate_bgp_peers),
    Check("bgp-routes", "cilium-dbg bgp routes advertised ipv4 unicast", BGP_ROUTES_KEYS, evaluate_bgp_routes),
)

# Registered here, at the end, so that importing this module before verification.expectations works too.
CHECKS.update((check.name, check) for check in LOAD_BALANCER_CHECKS)
