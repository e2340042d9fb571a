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
    address_keys,
    address_problems,
    expected_label,
)
from verification.kube_objects import (
    Condition,
    NotFound,
    as_number,
    as_object,
    as_objects,
    as_text,
    canonical_ip,
    condition_figures,
    ip,
    is_ip,
    is_reference,
    network,
    parse_conditions,
    quote,
    read_kube_object,
    reference,
    same_ip,
)

# --------------------------------------------------------------------------
# loadbalancer-address
# --------------------------------------------------------------------------

# The condition Cilium's LB-IPAM sets on a Service: cilium.io/IPAMRequestSatisfied in 1.19.6
# (operator/pkg/lbipam/lbipam.go), io.cilium/lb-ipam-request-satisfied before the rename and in the docs.
LB_IPAM_CONDITIONS = ("cilium.io/IPAMRequestSatisfied", "io.cilium/lb-ipam-request-satisfied")
NODE_IPAM_CLASS = "io.cilium/node"


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
    spec, status = as_object(document.get("spec")), as_object(document.get("status"))
    ingress = as_objects(as_object(status.get("loadBalancer")).get("ingress"))
    return LoadBalancerService(
        reference=reference(as_object(document.get("metadata"))),
        service_type=as_text(spec.get("type")),
        load_balancer_class=as_text(spec.get("loadBalancerClass")),
        ingress=tuple(ip for entry in ingress if (ip := as_text(entry.get("ip")))),
        conditions=parse_conditions(status),
    )


LOADBALANCER_ADDRESS_KEYS: dict[str, KeySpec] = {
    "service": KeySpec('"namespace/name" of the Service (named in problems)', is_reference),
    **address_keys("status.loadBalancer.ingress", "Cilium node IPAM"),
}


def _service_figures(service: LoadBalancerService | None) -> Figures:
    if service is None:
        return {"ingress": [], "type": None, "loadBalancerClass": None, "conditions": {}}
    return {
        "ingress": list(service.ingress),
        "type": service.service_type,
        "loadBalancerClass": service.load_balancer_class,
        "conditions": condition_figures(service.conditions),
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
            Problem(f"service {label} LoadBalancer address", expected_label(expect), _no_address_seen(parsed))
        )
        return verdict
    verdict.problems.extend(address_problems(f"service {label} LoadBalancer address", parsed.ingress, expect))
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
    spec = as_object(document.get("spec"))
    return Lease(
        name=as_text(as_object(document.get("metadata")).get("name")),
        holder=as_text(spec.get("holderIdentity")) or None,
        lease_duration_seconds=as_number(spec.get("leaseDurationSeconds")),
        lease_transitions=as_number(spec.get("leaseTransitions")),
        acquire_time=as_text(spec.get("acquireTime")),
        renew_time=as_text(spec.get("renewTime")),
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
    return next((quote(line) for line in text.splitlines() if line.strip()), None)


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
    if not has_port and ip(cell) is not None:
        return canonical_ip(cell), None
    host, colon, port = cell.rpartition(":")
    host = host.strip("[]")
    if colon and port.isdigit() and ip(host) is not None:
        return canonical_ip(host), int(port)
    return canonical_ip(cell), None


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
        _list_of(_object_of({"address": is_ip, "asn": _is_int})),
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
        (canonical_ip(address), asn)
        for item in (wanted if isinstance(wanted, list) else [])
        if isinstance(item, dict)
        and (address := as_text(item.get("address"))) is not None
        and (asn := as_number(item.get("asn"))) is not None
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
        rows = [peer for peer in parsed.peers if same_ip(peer.address, address)]
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
            peer=canonical_ip(row["Peer"]) if row.get("Peer") else None,
            prefix=row.get("Prefix", ""),
            next_hop=row.get("NextHop", ""),
            age=row.get("Age") or None,
            attrs=row.get("Attrs", ""),
        )
        for row in table.rows
    )
    return BgpRoutes(disabled, table.columns, routes, _first_line(text))


def _is_prefix(value: JsonValue) -> bool:
    return isinstance(value, str) and network(value) is not None


BGP_ROUTES_KEYS: dict[str, KeySpec] = {
    "prefixes": KeySpec(
        'CIDRs that must be advertised ("10.0.10.0/24"; an address alone is its /32)', _list_of(_is_prefix)
    ),
    "peers": KeySpec(
        "peer addresses: each prefix must be advertised to each (without prefixes, something must be)",
        _list_of(is_ip),
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
    a, b = network(text), network(other)
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
        if any(route.peer is not None and same_ip(route.peer, peer) for route in advertised):
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
    peers = [canonical_ip(peer) for peer in _str_list(expect, "peers")]
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
            if not any(route.peer is not None and same_ip(route.peer, peer) for route in parsed.routes):
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
