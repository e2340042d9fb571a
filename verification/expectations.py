"""Turn parsed command output plus ``--expect`` JSON into a verdict.

Each check validates its expectation keys (unknown keys and wrong types are
refused, so a typo cannot silently skip an assertion), parses the raw text
with :mod:`verification.parsers`, and returns a :class:`Verdict`: the figures
seen and one :class:`Problem` per unmet expectation. Items the parser could
not find are reported as "not found in output", never assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias

from verification import parsers
from verification.kube_objects import is_block, is_ip, parse_address_block, same_ip

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
Expectations: TypeAlias = Mapping[str, JsonValue]
Figures: TypeAlias = dict[str, JsonValue]

NOT_FOUND = "nothing (not found in output)"
# Stands for the node's name in a Problem's fix.
NODE = "{node}"


class ExpectationError(ValueError):
    """The ``--expect`` document does not fit the check."""


@dataclass(frozen=True)
class Problem:
    """One unmet expectation; ``seen`` is ``None`` when the item was not found.

    ``fix``, when given, says what to do about it and ends the message; ``{node}``
    in it reads as the node's name.
    """

    item: str
    expected: str
    seen: str | None
    fix: str | None = None

    def message(self, node: str, check: str) -> str:
        seen = NOT_FOUND if self.seen is None else self.seen
        text = f"node {node}: check {check}: expected {self.item} {self.expected}, saw {seen}"
        return f"{text}; fix: {self.fix.replace(NODE, node)}" if self.fix else text


@dataclass
class Verdict:
    figures: Figures = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def add(self, problem: Problem | None) -> None:
        if problem is not None:
            self.problems.append(problem)


# --------------------------------------------------------------------------
# Expectation key validation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """What one ``--expect`` key accepts, for validation and for ``--help``."""

    description: str
    accepts: Callable[[JsonValue], bool]


def _is_bool(value: JsonValue) -> bool:
    return isinstance(value, bool)


def _is_int(value: JsonValue) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_str(value: JsonValue) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_str_list(value: JsonValue) -> bool:
    return isinstance(value, list) and all(_is_str(item) for item in value)


def _one_of(*choices: str) -> Callable[[JsonValue], bool]:
    return lambda value: isinstance(value, str) and value.lower() in choices


def _either(*accepts: Callable[[JsonValue], bool]) -> Callable[[JsonValue], bool]:
    return lambda value: any(accept(value) for accept in accepts)


def _list_of(accept: Callable[[JsonValue], bool]) -> Callable[[JsonValue], bool]:
    return lambda value: isinstance(value, list) and all(accept(item) for item in value)


BOOL = KeySpec("true|false", _is_bool)


def validate_expectations(keys: Mapping[str, KeySpec], expect: JsonValue) -> Expectations:
    """Refuse a non-object document, unknown keys and values of the wrong type."""
    if not isinstance(expect, dict):
        raise ExpectationError(f"not a JSON object: {expect!r}")
    for key, value in expect.items():
        spec = keys.get(key)
        if spec is None:
            known = ", ".join(keys) or "none"
            raise ExpectationError(f"unknown expectation key {key!r} (known: {known})")
        if not spec.accepts(value):
            raise ExpectationError(f"expectation {key} must be {spec.description}, got {value!r}")
    return expect


def _bool(expect: Expectations, key: str) -> bool | None:
    value = expect.get(key)
    return value if isinstance(value, bool) else None


def _int(expect: Expectations, key: str) -> int | None:
    value = expect.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(expect: Expectations, key: str) -> str | None:
    value = expect.get(key)
    return value if isinstance(value, str) else None


def _str_list(expect: Expectations, key: str) -> list[str]:
    value = expect.get(key)
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


# --------------------------------------------------------------------------
# agent-status
# --------------------------------------------------------------------------

# --- the addresses an object got (a LoadBalancer Service's ingress, a Gateway's status) ----------------


def address_keys(field: str, node_addresses_when: str) -> dict[str, KeySpec]:
    """``address``, ``within`` and ``nodeAddresses``; ``field`` names where the addresses are."""
    return {
        "address": KeySpec(f"an IP address {field} must hold", is_ip),
        "within": KeySpec(
            'pool blocks every address must lie in: CIDRs "10.0.10.0/24" or ranges "10.0.10.5-10.0.10.20"',
            _list_of(is_block),
        ),
        "nodeAddresses": KeySpec(
            f"node IPs ({node_addresses_when}): every address must be one of them", _list_of(is_ip)
        ),
    }


def expected_label(expect: Expectations) -> str:
    """What the expectation asks for, in a problem's "expected" part when no address was seen."""
    address = _str(expect, "address")
    if address is not None:
        return address
    blocks = _str_list(expect, "within")
    if blocks:
        return f"assigned from {', '.join(blocks)}"
    nodes = _str_list(expect, "nodeAddresses")
    return f"assigned from the node addresses {', '.join(nodes)}" if nodes else "assigned"


def address_problems(item: str, seen: Sequence[str], expect: Expectations) -> Iterable[Problem]:
    """One problem per unmet expectation of the addresses ``seen`` (``item`` names them in the message)."""
    address = _str(expect, "address")
    if address is not None and not any(same_ip(address, ip) for ip in seen):
        yield Problem(item, address, ", ".join(seen))
    blocks = [block for text in _str_list(expect, "within") if (block := parse_address_block(text))]
    if blocks:
        wanted = f"within {', '.join(block.text for block in blocks)}"
        for ip in seen:
            if not any(block.contains(ip) for block in blocks):
                yield Problem(item, wanted, f"{ip} (in none of them)")
    nodes = _str_list(expect, "nodeAddresses")
    if nodes:
        wanted = f"one of the node addresses {', '.join(nodes)}"
        for ip in seen:
            if not any(same_ip(node, ip) for node in nodes):
                yield Problem(item, wanted, f"{ip} (not a node address)")


DSR_DISPATCH_LABELS = {"opt": "IP Option/Extension", "ipip": "IPIP", "geneve": "Geneve"}
XDP_LABELS = {"native": "Native", "best-effort": "Best-Effort", "generic": "Generic", "disabled": "Disabled"}
KPR_ON = ("true", "strict")
KPR_OFF = ("false", "disabled")
FIRST_RELEASE_PRINTING_TRUE = (1, 14)


def version_tuple(version: str) -> tuple[int, ...]:
    """``"v1.13.18-abc"`` -> ``(1, 13, 18)``; stops at the first non-numeric part."""
    parts: list[int] = []
    for part in version.lstrip("v").split("-")[0].split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def version_matches(expected: str, seen: str) -> bool:
    """``"1.19"`` matches ``"1.19.6"``; ``"1.1"`` does not match ``"1.13.0"``."""
    wanted = version_tuple(expected)
    return bool(wanted) and version_tuple(seen)[: len(wanted)] == wanted


def _expect_value(item: str, label: str, seen: str | None, matches: Callable[[str], bool]) -> Problem | None:
    if seen is None:
        return Problem(item, label, None)
    return None if matches(seen) else Problem(item, label, seen)


def _is_any(*accepted: str) -> Callable[[str], bool]:
    return lambda seen: seen.lower() in accepted


def _kpr_words(status: parsers.AgentStatus, expect: Expectations) -> tuple[str, str]:
    """How this release spells KPR on and off: Strict/Disabled before 1.14, True/False after."""
    version = status.version or _str(expect, "version") or ""
    parsed = version_tuple(version)
    if parsed and parsed < FIRST_RELEASE_PRINTING_TRUE:
        return "Strict", "Disabled"
    return "True", "False"


def _kube_proxy_replacement(status: parsers.AgentStatus, expect: Expectations) -> Problem | None:
    wanted = _bool(expect, "kubeProxyReplacement")
    on_word, off_word = _kpr_words(status, expect)
    label, accepted = (on_word, KPR_ON) if wanted else (off_word, KPR_OFF)
    return _expect_value("KubeProxyReplacement", label, status.kube_proxy_replacement, _is_any(*accepted))


def _on_off(
    item: str, on: str, off: str, seen_of: Callable[[parsers.AgentStatus], str | None]
) -> Callable[[parsers.AgentStatus, bool], Problem | None]:
    def assertion(status: parsers.AgentStatus, wanted: bool) -> Problem | None:
        label = on if wanted else off
        return _expect_value(item, label, seen_of(status), _is_any(label.lower()))

    return assertion


_socket_lb = _on_off("Socket LB", "Enabled", "Disabled", lambda s: s.socket_lb)
_dsr = _on_off("Mode", "DSR", "SNAT", lambda s: s.lb_mode)
_host_routing = _on_off("Host Routing", "BPF", "Legacy", lambda s: s.host_routing)
_native_routing = _on_off("Routing Network", "Native", "Tunnel", lambda s: s.network_routing)


def _dsr_dispatch(status: parsers.AgentStatus, dispatch: str) -> Problem | None:
    label = DSR_DISPATCH_LABELS[dispatch.lower()]
    return _expect_value("DSR Dispatch Mode", label, status.dsr_dispatch, _is_any(label.lower()))


def _maglev(status: parsers.AgentStatus, wanted: bool | int) -> Problem | None:
    seen = status.backend_selection
    if wanted is False:
        return _expect_value("Backend Selection", "Random", seen, lambda s: s.startswith("Random"))
    if wanted is True:
        return _expect_value("Backend Selection", "Maglev", seen, lambda s: s.startswith("Maglev"))
    label = f"Maglev (Table Size: {wanted})"
    return _expect_value(
        "Backend Selection",
        label,
        seen,
        lambda s: s.startswith("Maglev") and status.maglev_table_size == wanted,
    )


def _bpf_masquerade(status: parsers.AgentStatus, wanted: bool) -> Problem | None:
    if wanted:
        return _expect_value("Masquerading", "BPF", status.masquerading, _is_any("bpf"))
    return _expect_value("Masquerading", "IPTables or Disabled", status.masquerading, _is_any("iptables", "disabled"))


def _bandwidth_manager(status: parsers.AgentStatus, wanted: bool) -> Problem | None:
    if wanted:
        return _expect_value(
            "BandwidthManager", "EDT with BPF", status.bandwidth_manager, lambda s: s.startswith("EDT")
        )
    return _expect_value("BandwidthManager", "Disabled", status.bandwidth_manager, _is_any("disabled"))


def _seen_congestion_control(status: parsers.AgentStatus) -> str | None:
    if status.bandwidth_manager == "Disabled":
        return "none (BandwidthManager Disabled)"
    return status.congestion_control


def _bbr(status: parsers.AgentStatus, wanted: bool) -> Problem | None:
    seen = _seen_congestion_control(status)
    item = "BandwidthManager congestion control"
    if wanted:
        return _expect_value(item, "BBR", seen, _is_any("bbr"))
    return _expect_value(item, "not BBR", seen, lambda s: s.lower() != "bbr")


def _big_tcp_lines(status: parsers.AgentStatus) -> dict[str, str]:
    lines = {"ipv4": status.ipv4_big_tcp, "ipv6": status.ipv6_big_tcp}
    return {family: state for family, state in lines.items() if state is not None}


def _big_tcp(status: parsers.AgentStatus, wanted: bool | list[str]) -> list[Problem]:
    lines = _big_tcp_lines(status)
    if isinstance(wanted, list):
        return [
            problem
            for family in wanted
            if (
                problem := _expect_value(
                    f"{family.replace('ipv', 'IPv')} BIG TCP",
                    "Enabled",
                    lines.get(family.lower()),
                    _is_any("enabled"),
                )
            )
        ]
    seen = ", ".join(f"{family.replace('ipv', 'IPv')} {state}" for family, state in lines.items())
    any_enabled = any(state.lower() == "enabled" for state in lines.values())
    label = "Enabled (IPv4 or IPv6)" if wanted else "Disabled"
    problem = _expect_value("BIG TCP", label, seen or None, lambda _: any_enabled == wanted)
    return [problem] if problem else []


def _xdp(status: parsers.AgentStatus, wanted: bool | str) -> Problem | None:
    seen = status.xdp_acceleration
    if isinstance(wanted, str):
        label = XDP_LABELS[wanted.lower()]
        return _expect_value("XDP Acceleration", label, seen, _is_any(label.lower()))
    if wanted:
        return _expect_value(
            "XDP Acceleration",
            "Native, Best-Effort or Generic",
            seen,
            lambda s: s.lower() != "disabled",
        )
    return _expect_value("XDP Acceleration", "Disabled", seen, _is_any("disabled"))


def _netkit(status: parsers.AgentStatus, wanted: bool) -> Problem | None:
    if wanted:
        return _expect_value("Device Mode", "netkit", status.device_mode, lambda s: s.startswith("netkit"))
    return _expect_value("Device Mode", "veth", status.device_mode, _is_any("veth"))


def _version(status: parsers.AgentStatus, wanted: str) -> Problem | None:
    return _expect_value("Cilium version", wanted, status.version, lambda s: version_matches(wanted, s))


AGENT_STATUS_KEYS: dict[str, KeySpec] = {
    "version": KeySpec('a release such as "1.13.18" or "1.19" (prefix match)', _is_str),
    "healthy": KeySpec("true (Cilium: Ok)", lambda value: value is True),
    "kubeProxyReplacement": KeySpec("true|false (True/Strict vs False/Disabled)", _is_bool),
    "socketLB": BOOL,
    "dsr": KeySpec("true|false (Mode: DSR vs SNAT)", _is_bool),
    "dsrDispatch": KeySpec('"opt"|"ipip"|"geneve"', _one_of(*DSR_DISPATCH_LABELS)),
    "maglev": KeySpec("true|false|<table size>", _either(_is_bool, _is_int)),
    "bpfHostRouting": BOOL,
    "nativeRouting": KeySpec("true|false (Cilium >= 1.16 prints it)", _is_bool),
    "bpfMasquerade": BOOL,
    "bandwidthManager": BOOL,
    "bbr": BOOL,
    "bigTcp": KeySpec('true|false|["ipv4","ipv6"]', _either(_is_bool, _list_of(_one_of("ipv4", "ipv6")))),
    "xdp": KeySpec(
        'true|false|"native"|"best-effort"|"generic"|"disabled"',
        _either(_is_bool, _one_of(*XDP_LABELS)),
    ),
    "netkit": BOOL,
}


def _agent_status_problems(status: parsers.AgentStatus, expect: Expectations) -> Iterable[Problem | None]:
    bool_assertions: dict[str, Callable[[parsers.AgentStatus, bool], Problem | None]] = {
        "socketLB": _socket_lb,
        "dsr": _dsr,
        "bpfHostRouting": _host_routing,
        "nativeRouting": _native_routing,
        "bpfMasquerade": _bpf_masquerade,
        "bandwidthManager": _bandwidth_manager,
        "bbr": _bbr,
        "netkit": _netkit,
    }
    if "version" in expect:
        yield _version(status, str(expect["version"]))
    if "healthy" in expect:
        yield _expect_value("Cilium state", "Ok", status.cilium_state, _is_any("ok"))
    if "kubeProxyReplacement" in expect:
        yield _kube_proxy_replacement(status, expect)
    for key, assertion in bool_assertions.items():
        wanted = _bool(expect, key)
        if wanted is not None:
            yield assertion(status, wanted)
    if (dispatch := _str(expect, "dsrDispatch")) is not None:
        yield _dsr_dispatch(status, dispatch)
    maglev = expect.get("maglev")
    if isinstance(maglev, (bool, int)):
        yield _maglev(status, maglev)
    xdp = expect.get("xdp")
    if isinstance(xdp, (bool, str)):
        yield _xdp(status, xdp)
    big_tcp = expect.get("bigTcp")
    if isinstance(big_tcp, bool):
        yield from _big_tcp(status, big_tcp)
    elif isinstance(big_tcp, list):
        yield from _big_tcp(status, [str(family) for family in big_tcp])


def agent_status_figures(status: parsers.AgentStatus) -> Figures:
    return {
        "version": status.version,
        "ciliumState": status.cilium_state,
        "kubeProxyReplacement": status.kube_proxy_replacement,
        "socketLB": status.socket_lb,
        "loadBalancerMode": status.lb_mode,
        "dsrDispatch": status.dsr_dispatch,
        "backendSelection": status.backend_selection,
        "maglevTableSize": status.maglev_table_size,
        "hostRouting": status.host_routing,
        "networkRouting": status.network_routing,
        "tunnelProtocol": status.tunnel_protocol,
        "masquerading": status.masquerading,
        "bandwidthManager": status.bandwidth_manager,
        "congestionControl": status.congestion_control,
        "ipv4BigTcp": status.ipv4_big_tcp,
        "ipv6BigTcp": status.ipv6_big_tcp,
        "xdpAcceleration": status.xdp_acceleration,
        "deviceMode": status.device_mode,
    }


def evaluate_agent_status(text: str, expect: Expectations) -> Verdict:
    status = parsers.parse_agent_status(text)
    verdict = Verdict(figures=agent_status_figures(status))
    if status.cilium_state is None:
        verdict.add(Problem("cilium-dbg status output", "with a 'Cilium:' line", None))
    for problem in _agent_status_problems(status, expect):
        verdict.add(problem)
    return verdict


# --------------------------------------------------------------------------
# no-kube-proxy-rules
# --------------------------------------------------------------------------

NO_KUBE_PROXY_RULES_KEYS: dict[str, KeySpec] = {
    "families": KeySpec('section labels that must be present, e.g. ["ipv4","ipv6"]', _is_str_list),
}


def _section_counts(section: parsers.IptablesSection) -> str:
    parts = ", ".join(f"{marker} {count}" for marker, count in section.per_marker.items())
    example = f"; first: {section.examples[0]}" if section.examples else ""
    return f"{section.matching_lines} ({parts}{example})"


def evaluate_no_kube_proxy_rules(text: str, expect: Expectations) -> Verdict:
    sections = parsers.parse_iptables_save(text)
    relevant = {label: s for label, s in sections.items() if s.has_tables or s.matching_lines}
    verdict = Verdict(figures={label: {"entries": s.matching_lines, **s.per_marker} for label, s in relevant.items()})
    if not any(section.has_tables for section in sections.values()):
        verdict.add(Problem("iptables-save output", "with at least one *table", None))
    for family in _str_list(expect, "families"):
        section = sections.get(family.lower())
        if section is None or not section.has_tables:
            verdict.add(Problem(f"{family} iptables-save output", "present", None))
    for label, section in relevant.items():
        if section.matching_lines:
            verdict.add(
                Problem(
                    f"{label} KUBE-SVC/KUBE-SEP/KUBE-NODEPORTS entries",
                    "0",
                    _section_counts(section),
                )
            )
    return verdict


# --------------------------------------------------------------------------
# service-list
# --------------------------------------------------------------------------

SERVICE_LIST_KEYS: dict[str, KeySpec] = {
    "nodePort": KeySpec("a port number", _is_int),
    "nodeIPs": KeySpec("node IPs that must be NodePort frontends on nodePort", _is_str_list),
    "clusterIP": KeySpec("an IP that must be a ClusterIP frontend", _is_str),
    "clusterPort": KeySpec("the ClusterIP frontend port (any port when omitted)", _is_int),
    "frontends": KeySpec('further "ip:port" / "[ipv6]:port" frontends of any type', _is_str_list),
    "protocol": KeySpec('"TCP"|"UDP" (frontends printed without a protocol still match)', _one_of("tcp", "udp")),
    "minBackends": KeySpec("usable backends each frontend needs (default 1)", _is_int),
}


@dataclass(frozen=True)
class WantedFrontend:
    address: str
    port: int | None
    service_type: str | None

    @property
    def label(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        where = f"{host}:{self.port}" if self.port is not None else f"{host}:*"
        return f"{where} ({self.service_type})" if self.service_type else where


# The addresses of a NodePort row that serves every node address.
WILDCARD_ADDRESSES = ("0.0.0.0", "::")


def _wanted_frontends(expect: Expectations) -> list[WantedFrontend]:
    node_port = _int(expect, "nodePort")
    node_ips = _str_list(expect, "nodeIPs")
    if node_ips and node_port is None:
        raise ExpectationError("expectation nodeIPs needs nodePort")
    wanted = [WantedFrontend(parsers.normalise_ip(ip), node_port, "NodePort") for ip in node_ips]
    cluster_ip = _str(expect, "clusterIP")
    if "clusterPort" in expect and not cluster_ip:
        raise ExpectationError("expectation clusterPort needs clusterIP")
    if cluster_ip:
        wanted.append(WantedFrontend(parsers.normalise_ip(cluster_ip), _int(expect, "clusterPort"), "ClusterIP"))
    for text in _str_list(expect, "frontends"):
        frontend = parsers.parse_address_port(text)
        if frontend is None:
            raise ExpectationError(f'expectation frontends: {text!r} is not "ip:port" or "[ipv6]:port"')
        wanted.append(WantedFrontend(frontend.address, frontend.port, None))
    return wanted


def _matches(service: parsers.ServiceEntry, wanted: WantedFrontend, protocol: str | None) -> bool:
    frontend = service.frontend
    return (
        frontend.address == wanted.address
        and (wanted.port is None or frontend.port == wanted.port)
        and (protocol is None or frontend.protocol is None or frontend.protocol.lower() == protocol.lower())
    )


def _candidates(
    services: list[parsers.ServiceEntry], wanted: WantedFrontend, protocol: str | None
) -> list[parsers.ServiceEntry]:
    """The rows serving ``wanted``. Older agents list a NodePort once per node address besides the wildcard
    row; a 1.19.6 agent (lab/run datapath) lists only the wildcard row (``0.0.0.0:<port>``,
    ``[::]:<port>``), which serves every node address. So the wildcard row stands for the node IP when
    no NodePort row of that port names an address; when some do, the node IP's own row must be there."""
    exact = [s for s in services if _matches(s, wanted, protocol)]
    if exact or wanted.service_type != "NodePort" or wanted.port is None:
        return exact
    same_port = _node_port_anywhere(services, wanted.port)
    if any(s.frontend.address not in WILDCARD_ADDRESSES for s in same_port):
        return []
    wildcard = WantedFrontend("::" if ":" in wanted.address else "0.0.0.0", wanted.port, "NodePort")
    return [s for s in same_port if _matches(s, wildcard, protocol)]


def _node_port_anywhere(services: list[parsers.ServiceEntry], port: int) -> list[parsers.ServiceEntry]:
    return [s for s in services if s.service_type == "NodePort" and s.frontend.port == port]


def _backend_summary(services: list[parsers.ServiceEntry]) -> str:
    states = [backend.state or "no state" for service in services for backend in service.backends]
    return ", ".join(states) if states else "no backends"


def _frontend_problems(
    wanted: WantedFrontend, candidates: list[parsers.ServiceEntry], min_backends: int
) -> list[Problem]:
    if not candidates:
        return [Problem(f"frontend {wanted.label}", "in service list", None)]
    typed = [s for s in candidates if wanted.service_type in (None, s.service_type)]
    if not typed:
        seen_types = ", ".join(sorted({s.service_type for s in candidates}))
        return [Problem(f"frontend {wanted.label} service type", str(wanted.service_type), seen_types)]
    best = max(service.usable_backends for service in typed)
    if best < min_backends:
        return [
            Problem(
                f"frontend {wanted.label} usable backends",
                f">= {min_backends}",
                f"{best} ({_backend_summary(typed)})",
            )
        ]
    return []


def _frontend_figure(candidates: list[parsers.ServiceEntry]) -> JsonValue:
    return [
        {
            "id": s.service_id,
            "frontend": s.frontend.raw,
            "type": s.service_type,
            "backends": len(s.backends),
            "usableBackends": s.usable_backends,
        }
        for s in candidates
    ]


def evaluate_service_list(text: str, expect: Expectations) -> Verdict:
    listing = parsers.parse_service_list(text)
    wanted_frontends = _wanted_frontends(expect)
    protocol = _str(expect, "protocol")
    min_backends = _int(expect, "minBackends")
    min_backends = 1 if min_backends is None else min_backends
    frontends: dict[str, JsonValue] = {}
    verdict = Verdict(figures={"services": len(listing.services), "frontends": frontends})
    if not listing.services:
        verdict.add(Problem("service list", "with at least one service", None))
    node_port = _int(expect, "nodePort")
    if node_port is not None and not _str_list(expect, "nodeIPs") and listing.services:
        anywhere = _node_port_anywhere(listing.services, node_port)
        frontends[f"*:{node_port} (NodePort)"] = _frontend_figure(anywhere)
        verdict.problems.extend(_frontend_problems(WantedFrontend("*", node_port, "NodePort"), anywhere, min_backends))
    for wanted in wanted_frontends:
        candidates = _candidates(listing.services, wanted, protocol)
        frontends[wanted.label] = _frontend_figure(candidates)
        if listing.services:
            verdict.problems.extend(_frontend_problems(wanted, candidates, min_backends))
    return verdict


# --------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------

PROBES_KEYS: dict[str, KeySpec] = {
    "probes": KeySpec("probe names that must be reported", _is_str_list),
    "minProbes": KeySpec("fewest probe lines accepted (default 1)", _is_int),
}


def _probe_detail(probe: parsers.ProbeLine) -> str:
    extra = " ".join(f"{key}={value}" for key, value in probe.fields.items() if key not in ("probe", "result"))
    return f"{probe.fields.get('result', '')} ({extra})" if extra else probe.fields.get("result", "")


def _probe_problems(probe: parsers.ProbeLine) -> list[Problem]:
    label = f"probe {probe.name or probe.raw}"
    missing = probe.missing_fields()
    if missing:
        return [Problem(f"{label} field {key}", "present", None) for key in missing]
    if probe.fields["result"] != "ok":
        return [Problem(f"{label} result", "ok", _probe_detail(probe))]
    return []


def evaluate_probes(text: str, expect: Expectations) -> Verdict:
    report = parsers.parse_probe_lines(text)
    latest = {probe.name or probe.raw: probe for probe in report.probes}
    passed = [name for name, probe in latest.items() if not _probe_problems(probe)]
    verdict = Verdict(
        figures={
            "probes": len(latest),
            "passed": len(passed),
            "failed": [name for name in latest if name not in passed],
            "results": {name: dict(probe.fields) for name, probe in latest.items()},
            "ignoredLines": report.ignored_lines,
        }
    )
    for raw in report.malformed:
        verdict.add(Problem("probe line", "of key=value fields", repr(raw)))
    for probe in latest.values():
        verdict.problems.extend(_probe_problems(probe))
    for name in _str_list(expect, "probes"):
        if name not in latest:
            verdict.add(Problem(f"probe {name}", "reported", None))
    min_probes = _int(expect, "minProbes")
    min_probes = 1 if min_probes is None else min_probes
    if len(latest) < min_probes:
        verdict.add(Problem("probe lines", f">= {min_probes}", str(len(latest)) if latest else None))
    return verdict


# --------------------------------------------------------------------------
# connectivity-test
# --------------------------------------------------------------------------

CONNECTIVITY_TEST_KEYS: dict[str, KeySpec] = {
    "minTests": KeySpec("fewest tests that must have run (guards against an empty run)", _is_int),
}


def _failed_tests_seen(summary: parsers.ConnectivitySummary) -> str:
    names = ", ".join(summary.failed_test_names) or "names not listed"
    return f"{summary.failed_tests}/{summary.tests} ({names})"


def connectivity_figures(summary: parsers.ConnectivitySummary) -> Figures:
    return {
        "summaries": summary.summaries,
        "tests": summary.tests,
        "actions": summary.actions,
        "failedTests": summary.failed_tests,
        "failedActions": summary.failed_actions,
        "warnings": summary.warnings,
        "skippedTests": summary.skipped_tests,
        "skippedScenarios": summary.skipped_scenarios,
        "failedTestNames": list(summary.failed_test_names),
        "failedActionNames": list(summary.failed_action_names),
        "errors": list(summary.error_lines),
    }


def evaluate_connectivity_test(text: str, expect: Expectations) -> Verdict:
    summary = parsers.parse_connectivity_test(text)
    verdict = Verdict(figures=connectivity_figures(summary))
    if summary.failed_tests:
        verdict.add(Problem("failed tests", "0", _failed_tests_seen(summary)))
    elif summary.final_error_failures:
        verdict.add(Problem("failed tests", "0", f"{summary.final_error_failures} (from the final error line)"))
    if not summary.summaries:
        last_error = summary.error_lines[-1] if summary.error_lines else None
        seen = f"only the error {last_error!r}" if last_error else None
        verdict.add(Problem("test summary", "('All N tests ... successful' or 'N/M tests failed')", seen))
        return verdict
    min_tests = _int(expect, "minTests")
    if min_tests is not None and summary.tests < min_tests:
        verdict.add(Problem("tests run", f">= {min_tests}", str(summary.tests)))
    return verdict


# --------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------

BENCHMARK_FIGURES = (
    "minLatencyUs",
    "meanLatencyUs",
    "maxLatencyUs",
    "p50LatencyUs",
    "p90LatencyUs",
    "p99LatencyUs",
    "stddevLatencyUs",
    "roundTripLatencyUs",
    "transactionsPerSec",
    "throughputMbps",
)
BENCHMARK_TESTS = ("tcp_rr", "tcp_stream", "tcp_maerts", "tcp_crr", "udp_rr", "udp_stream")

BENCHMARK_KEYS: dict[str, KeySpec] = {
    "test": KeySpec('"TCP_RR"|"TCP_STREAM" (a run of that test must be found)', _one_of(*BENCHMARK_TESTS)),
    "figures": KeySpec(
        f"figure names that must be found, from {', '.join(BENCHMARK_FIGURES)}",
        _list_of(lambda value: value in BENCHMARK_FIGURES),
    ),
}


def evaluate_benchmark(text: str, expect: Expectations) -> Verdict:
    """Fail only when the output cannot be read; slow figures never fail."""
    result = parsers.parse_netperf(text)
    figures: Figures = {"tests": list(result.tests), "errors": list(result.errors)}
    figures.update(result.figures)
    verdict = Verdict(figures=figures)
    if not result.figures:
        seen = f"netperf error: {result.errors[0]}" if result.errors else None
        verdict.add(Problem("netperf results", "with parsable figures", seen))
        return verdict
    test = _str(expect, "test")
    if test and test.upper() not in result.tests:
        verdict.add(Problem("netperf test", test.upper(), ", ".join(result.tests) or None))
    for name in _str_list(expect, "figures"):
        if name not in result.figures:
            verdict.add(Problem(f"figure {name}", "present", None))
    return verdict


# --------------------------------------------------------------------------
# kpr-integrity
# --------------------------------------------------------------------------

# kube-proxy's default metrics address is 127.0.0.1:10249 (K3s' embedded one keeps it).
KUBE_PROXY_METRICS_PORT = 10249
KUBE_PROXY = "kube-proxy"
CILIUM_AGENT = "cilium-agent"
# How K3s' main process is named: K3s execs its data directory's k3s-server or
# k3s-agent; "k3s" when the binary is run under its own name.
K3S_PROCESSES = ("k3s-server", "k3s-agent", "k3s")
K3S_UNITS = {"server": "k3s", "agent": "k3s-agent"}
WILDCARDS = ("0.0.0.0", "*", "::")
K3S_LOAD_BALANCER = "127.0.0.1:6444"

KPR_INTEGRITY_KEYS: dict[str, KeySpec] = {
    "role": KeySpec('"server"|"agent": what K3s must run as on this node', _one_of("server", "agent")),
    "kubeProxyHealthzPort": KeySpec(
        "kube-proxy's health port (10256): nothing but the Cilium agent may listen there", _is_int
    ),
    "ciliumHealthz": KeySpec(
        'Cilium\'s kubeProxyReplacementHealthzBindAddr ("0.0.0.0:10256"): the agent must hold its port', _is_str
    ),
    "apiServer": KeySpec('"host:port" of k8sServiceHost/k8sServicePort: must answer from the node', _is_str),
    "apiServerIsK3s": KeySpec("true: apiServer is K3s' node-local load balancer, which K3s must hold", _is_bool),
}


def split_endpoint(text: str) -> tuple[str, int] | None:
    """``"127.0.0.1:6444"`` -> ("127.0.0.1", 6444); ``"[::]:10256"`` -> ("::", 10256); ``":10256"`` -> ("", 10256)."""
    host, _, port = text.strip().rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _held_by(listener: parsers.Listener, names: Iterable[str]) -> bool:
    wanted = set(names)
    return any(owner.name in wanted for owner in listener.owners)


def _describe(listeners: Iterable[parsers.Listener]) -> str:
    return "; ".join(listener.describe() for listener in listeners)


def _utc(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unit(node: parsers.KprNode, role: str | None) -> str:
    if node.k3s is not None:
        return node.k3s.unit
    return K3S_UNITS.get(role or "", "k3s-agent")


# How to check again once the cause is fixed (README "Verification", "Re-running checks").
RECHECK = f"then check again: `pulumi up --replace` the node's collector, verify-collect-{NODE}"
# A no-op `pulumi up` runs no cleanup: replacing them runs them again (components/kube_proxy.py).
CLEANUP = (
    f"`pulumi up --replace` kube-proxy-cleanup-{NODE} (it removes kube-proxy's iptables rules) and "
    f"verify-collect-{NODE} to check again"
)


def _kube_proxy_fix() -> str:
    return (
        f"a kube-proxy of its own (a DaemonSet or a static pod, not K3s') runs on {NODE}, with its iptables rules "
        "and kube-proxy's ports: remove it (a DaemonSet kube-system/kube-proxy is what `pulumi up --replace` "
        "kube-proxy-kubernetes deletes; a static pod's manifest is in /var/lib/rancher/k3s/agent/pod-manifests), "
        f"then {CLEANUP}"
    )


def _healthz_port_problems(ss: parsers.SsListing, port: int, cilium_port: int | None) -> Iterable[Problem]:
    """Anything but the Cilium agent on kube-proxy's health port (K3s' own kube-proxy is reported on its own)."""
    wanted = "held by cilium-agent only" if cilium_port == port else "free, or held by cilium-agent"
    for listener in ss.on_port(port):
        if _held_by(listener, K3S_PROCESSES):
            continue
        strangers = [owner for owner in listener.owners if owner.name != CILIUM_AGENT]
        if listener.owners and not strangers:
            continue
        if _held_by(listener, [KUBE_PROXY]):
            fix = _kube_proxy_fix()
        elif not listener.owners:
            fix = f"find what holds it (as root: `ss -ltnp 'sport = :{port}'`) and stop it, {RECHECK}"
        else:
            names = ", ".join(str(owner) for owner in strangers)
            fix = (
                f"stop {names} or move it off port {port}, kube-proxy's health port, which load balancers probe "
                f"and which only the Cilium agent may serve with kube-proxy replacement; {RECHECK}"
            )
        yield Problem(f"kube-proxy's health port {port}", wanted, listener.describe(), fix)


def _cilium_healthz_problem(ss: parsers.SsListing, bind: str, port: int) -> Problem | None:
    holders = ss.on_port(port)
    if any(_held_by(listener, [CILIUM_AGENT]) for listener in holders):
        return None
    seen = _describe(holders) or f"nothing listening on port {port}"
    fix = (
        f"the Cilium agent on {NODE} could not bind {bind}: its log says why (its pod: `k3s kubectl -n kube-system "
        f"get pod -l k8s-app=cilium --field-selector spec.nodeName={NODE}`); free the port, delete that pod so "
        f"that the agent starts again, {RECHECK}"
    )
    return Problem(f"Cilium's kube-proxy health server ({bind}, kubeProxyReplacementHealthzBindAddr)", "held by "
                   f"{CILIUM_AGENT}", seen, fix)


def _kube_proxy_running_problems(
    node: parsers.KprNode, ss: parsers.SsListing, port: int | None, role: str | None
) -> Iterable[Problem]:
    ports = [p for p in (port, KUBE_PROXY_METRICS_PORT) if p is not None]
    embedded = [listener for p in ports for listener in ss.on_port(p) if _held_by(listener, K3S_PROCESSES)]
    if embedded:
        unit = _unit(node, role)
        if (node.k3s.role if node.k3s else role) == "agent":
            why = (
                "K3s agents take disable-kube-proxy from their servers when they start, and this one started "
                "before they had it"
            )
        else:
            why = "K3s on this server does not run with disable-kube-proxy: true"
        fix = (
            f"{why}: `systemctl restart {unit}` on {NODE}, then {CLEANUP}"
        )
        yield Problem("K3s' embedded kube-proxy", "not running (disable-kube-proxy)", f"running: {_describe(embedded)}",
                      fix)
    others = [
        listener for listener in ss.listeners if _held_by(listener, [KUBE_PROXY]) and listener.port != port
    ]
    if others:
        yield Problem("kube-proxy", "not running", f"running: {_describe(others)}", _kube_proxy_fix())


def _setting_seen(setting: parsers.FlagSetting | None, node: parsers.KprNode) -> str:
    if setting is None:
        read = ", ".join(config.path for config in node.config_files) or f"none ({node.config_path} is missing)"
        return f"not set in the config files K3s reads ({read}) nor in its arguments: K3s' default, false"
    if setting.value is None:
        return f"{setting.raw!r} in {setting.source}, not a boolean K3s accepts"
    return f"{str(setting.value).lower()} from {setting.source} ({setting.raw})"


def _server_problems(node: parsers.KprNode, process: parsers.K3sProcess) -> Iterable[Problem]:
    setting = parsers.effective_disable_kube_proxy(node)
    if setting is None or setting.value is not True:
        where = setting.source if setting is not None else node.config_path
        fix = (
            f"the program writes `disable-kube-proxy: true` to {node.config_path or 'the config file'}; a later "
            f"config.yaml.d drop-in or a flag in the unit's ExecStart overrides it: correct it in {where}, "
            f"`systemctl restart {process.unit}` on {NODE}, {RECHECK}"
        )
        yield Problem("disable-kube-proxy K3s runs with", "true", _setting_seen(setting, node), fix)
    if process.started is None:
        return
    for config in node.config_files:
        if config.mtime is not None and config.mtime > process.started:
            yield Problem(
                f"K3s config file {config.path}",
                f"unchanged since K3s started ({_utc(process.started)})",
                f"changed at {_utc(config.mtime)}, so K3s does not run with what it says",
                f"K3s reads its config only when it starts: `systemctl restart {process.unit}` on {NODE}, {RECHECK}",
            )


def _k3s_problems(node: parsers.KprNode, role: str | None) -> Iterable[Problem]:
    if node.k3s_unit is None:
        yield Problem("K3s' main process", "reported", None)
        return
    process = node.k3s
    if process is None:
        unit = _unit(node, role)
        yield Problem(
            "K3s' main process (MainPID of the k3s or k3s-agent unit)",
            "running",
            "neither unit has a main process",
            f"K3s does not run on {NODE}: `systemctl status {unit}` and `journalctl -u {unit}` there say why; start "
            f"it, {RECHECK}",
        )
        return
    seen_role = process.role
    if role is not None and seen_role != role:
        yield Problem(
            "K3s role",
            role,
            f"{seen_role or 'none'} ({process.unit}, pid {process.pid}: {' '.join(process.argv)})",
            f"the stack lists this node as a K3s {role}: uninstall what runs here (k3s-uninstall.sh or "
            "k3s-agent-uninstall.sh) and run `pulumi up`, or correct the node's role in the stack",
        )
    if (seen_role or role) == "server":
        yield from _server_problems(node, process)


def _api_server_problems(node: parsers.KprNode, target: str, is_k3s: bool) -> Iterable[Problem]:
    unit = _unit(node, None)
    if is_k3s:
        fix = (
            f"K3s' load balancer on {target}, through which the Cilium agent reaches the API server without "
            f"kube-proxy (k8sServiceHost/k8sServicePort), does not answer: `systemctl status {unit}` and "
            f"`journalctl -u {unit}` on {NODE} say why (it answers once K3s reaches a server); {RECHECK}"
        )
    else:
        fix = (
            f"the Cilium agent reaches the API server at {target} (cilium.k8sServiceHost/k8sServicePort), which "
            "does not answer from this node: make it reachable from every node without Service routing, or "
            f"remove the two settings to use K3s' load balancer on {K3S_LOAD_BALANCER}; {RECHECK}"
        )
    probe = node.api_probe
    if probe is None:
        yield Problem(f"API server {target} probe", "reported", None)
    elif probe.fields.get("result") != "ok":
        detail = probe.fields.get("detail", "no detail")
        attempts = probe.fields.get("attempts", "?")
        yield Problem(f"API server {target} from this node", "answering (any HTTP status)",
                      f"no answer after {attempts} attempts ({detail})", fix)
    endpoint = split_endpoint(target)
    if not is_k3s or node.ss is None or endpoint is None:
        return
    host, port = endpoint
    there = [listener for listener in node.ss.on_port(port) if listener.address in (host, *WILDCARDS)]
    if there and not any(_held_by(listener, K3S_PROCESSES) for listener in there):
        yield Problem(
            f"listener on {target}",
            "K3s' load balancer (k3s-server or k3s-agent)",
            _describe(there),
            f"stop what holds {target}, which K3s' load balancer must have, `systemctl restart {unit}` on {NODE}, "
            f"{RECHECK}",
        )


def _kpr_figures(node: parsers.KprNode, port: int | None) -> Figures:
    ss = node.ss or parsers.SsListing()
    process = node.k3s
    setting = parsers.effective_disable_kube_proxy(node) if process and process.role == "server" else None
    running = [
        listener
        for listener in ss.listeners
        if _held_by(listener, [KUBE_PROXY])
        or (listener.port in (port, KUBE_PROXY_METRICS_PORT) and _held_by(listener, K3S_PROCESSES))
    ]
    probe = node.api_probe
    return {
        "kubeProxyHealthzPort": port,
        "healthzPort": [listener.describe() for listener in ss.on_port(port)] if port is not None else [],
        "kubeProxyRunning": bool(running) if node.ss is not None else None,
        "k3s": (
            {
                "unit": process.unit,
                "pid": process.pid,
                "role": process.role,
                "started": _utc(process.started) if process.started is not None else None,
                "argv": list(process.argv),
            }
            if process
            else None
        ),
        "disableKubeProxy": (
            {"value": setting.value, "source": setting.source, "raw": setting.raw} if setting is not None else None
        ),
        "configPath": node.config_path,
        "configSource": node.config_source,
        "configFiles": [
            {
                "path": config.path,
                "mtime": _utc(config.mtime) if config.mtime is not None else None,
                "disableKubeProxy": [setting.raw for setting in config.settings],
            }
            for config in node.config_files
        ],
        "apiServer": dict(probe.fields) if probe is not None else None,
        "unparsedSsLines": len(ss.unparsed),
    }


def _endpoint_port(expect: Expectations, key: str) -> int | None:
    text = _str(expect, key)
    if text is None:
        return None
    endpoint = split_endpoint(text)
    if endpoint is None:
        raise ExpectationError(f'expectation {key}: {text!r} is not "host:port"')
    return endpoint[1]


def evaluate_kpr_integrity(text: str, expect: Expectations) -> Verdict:
    port = _int(expect, "kubeProxyHealthzPort")
    cilium_port = _endpoint_port(expect, "ciliumHealthz")
    _endpoint_port(expect, "apiServer")
    role = (_str(expect, "role") or "").lower() or None
    node = parsers.parse_kpr_node(text)
    verdict = Verdict(figures=_kpr_figures(node, port))
    ss = node.ss
    if ss is None:
        verdict.add(Problem("listening sockets (ss -ltnp)", "listed", None))
    else:
        if port is not None:
            verdict.problems.extend(_healthz_port_problems(ss, port, cilium_port))
        if cilium_port is not None:
            verdict.add(_cilium_healthz_problem(ss, str(_str(expect, "ciliumHealthz")), cilium_port))
        verdict.problems.extend(_kube_proxy_running_problems(node, ss, port, role))
    verdict.problems.extend(_k3s_problems(node, role))
    target = _str(expect, "apiServer")
    if target is not None:
        verdict.problems.extend(_api_server_problems(node, target, _bool(expect, "apiServerIsK3s") is True))
    return verdict


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    summary: str
    keys: Mapping[str, KeySpec]
    evaluate: Callable[[str, Expectations], Verdict]

    def run(self, text: str, expect: JsonValue) -> Verdict:
        return self.evaluate(text, validate_expectations(self.keys, expect))


CHECKS: dict[str, Check] = {
    check.name: check
    for check in (
        Check(
            "agent-status",
            "cilium-dbg status --verbose (cilium status --verbose on <= 1.14)",
            AGENT_STATUS_KEYS,
            evaluate_agent_status,
        ),
        Check(
            "no-kube-proxy-rules",
            "iptables-save output, sections marked '### <label>' (e.g. ### ipv4, ### ipv6)",
            NO_KUBE_PROXY_RULES_KEYS,
            evaluate_no_kube_proxy_rules,
        ),
        Check("service-list", "cilium-dbg service list", SERVICE_LIST_KEYS, evaluate_service_list),
        Check("probes", "probe=<name> target=<ip:port> result=ok|fail ... lines", PROBES_KEYS, evaluate_probes),
        Check(
            "connectivity-test",
            "cilium connectivity test output",
            CONNECTIVITY_TEST_KEYS,
            evaluate_connectivity_test,
        ),
        Check("benchmark", "netperf TCP_RR / TCP_STREAM output", BENCHMARK_KEYS, evaluate_benchmark),
        Check(
            "kpr-integrity",
            "verify-kpr-node.sh output: ss -ltnp, K3s' process, unit and config files, an API server probe",
            KPR_INTEGRITY_KEYS,
            evaluate_kpr_integrity,
        ),
    )
}

# The load-balancer checks (loadbalancer-address, l2-lease, bgp-peers, bgp-routes), the upgrade gate, a node's checks
# between the steps of a rollout, encryption,
# Hubble and Gateway API build on the machinery above; their modules add them to CHECKS when imported, here.
import verification.encryption  # noqa: E402
import verification.gateway_api  # noqa: E402
import verification.hubble  # noqa: E402
import verification.load_balancer  # noqa: E402
import verification.rollout  # noqa: E402
import verification.upgrade  # noqa: E402, F401
