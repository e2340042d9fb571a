"""Pure parsers: raw command output from cluster nodes in, typed records out.

Every parser takes the text exactly as the collecting command printed it and
never guesses: an item it cannot find is ``None`` (or absent from a mapping),
and the expectation layer reports it as "not found in output" when asserted.
Column layouts are matched on runs of whitespace, so the same parser accepts
tab-separated output and the space-aligned output of Go's ``tabwriter``.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import shlex
from dataclasses import dataclass, field

# --------------------------------------------------------------------------
# cilium-dbg status --verbose (cilium status --verbose on Cilium <= 1.14)
# --------------------------------------------------------------------------

# "Key:<whitespace>value", "Key:" alone, or "- Key: value" inside a list.
# The key stops at the first colon that is followed by whitespace or the end
# of the line, so "Routing:  Network: Native  Host: BPF" keeps the nested
# "Network:" in the value and IPv6 addresses ("fd00::1 (router)") never match.
_STATUS_LINE = re.compile(r"^(?P<indent>[ \t]*)(?:-[ \t]+)?(?P<key>[^:\t]+?):(?:[ \t]+(?P<value>.*?))?[ \t]*$")
_KPR_DETAILS_HEADER = "KubeProxyReplacement Details"
_VERSION = re.compile(r"\b(\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?)")
_MAGLEV_TABLE_SIZE = re.compile(r"Table Size:\s*(\d+)")
_ROUTING_NETWORK = re.compile(r"Network:\s*(\w+)(?:\s*\[(\w+)\])?")
_ROUTING_HOST = re.compile(r"Host:\s*(\w+)")
_BRACKETED = re.compile(r"\[([^\]]*)\]")


@dataclass(frozen=True)
class AgentStatus:
    """What ``cilium-dbg status --verbose`` says about one agent.

    Every field holds the text Cilium printed (first word where the value
    carries extra detail), or ``None`` when the line is absent.
    """

    cilium_state: str | None
    version: str | None
    kube_proxy_replacement: str | None
    socket_lb: str | None
    lb_mode: str | None
    dsr_dispatch: str | None
    backend_selection: str | None
    maglev_table_size: int | None
    host_routing: str | None
    network_routing: str | None
    tunnel_protocol: str | None
    masquerading: str | None
    bandwidth_manager: str | None
    congestion_control: str | None
    ipv4_big_tcp: str | None
    ipv6_big_tcp: str | None
    xdp_acceleration: str | None
    device_mode: str | None


def _status_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Split status output into top-level lines and the KPR details block.

    The first occurrence of a key wins in each mapping.
    """
    top: dict[str, str] = {}
    details: dict[str, str] = {}
    in_details = False
    for line in text.splitlines():
        match = _STATUS_LINE.match(line)
        indented = line[:1] in (" ", "\t")
        if line.strip() and not indented:
            in_details = False
        if match is None:
            continue
        key, value = match["key"].strip(), (match["value"] or "").strip()
        if not indented:
            top.setdefault(key, value)
            in_details = key == _KPR_DETAILS_HEADER
        elif in_details:
            details.setdefault(key, value)
    return top, details


def _first_word(value: str | None) -> str | None:
    if not value:
        return None
    return value.split()[0]


def _cilium_state_and_version(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    version = _VERSION.search(value)
    return _first_word(value), version.group(1) if version else None


def _maglev_table_size(selection: str | None) -> int | None:
    if not selection:
        return None
    size = _MAGLEV_TABLE_SIZE.search(selection)
    return int(size.group(1)) if size else None


def _routing(top: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    """(host routing, network routing, tunnel protocol) from either format.

    Cilium >= 1.16 prints ``Routing: Network: Native  Host: BPF``; older
    releases print only ``Host Routing: BPF`` and nothing about the network.
    """
    routing = top.get("Routing")
    if routing:
        network = _ROUTING_NETWORK.search(routing)
        host = _ROUTING_HOST.search(routing)
        return (
            host.group(1) if host else None,
            network.group(1) if network else None,
            network.group(2) if network else None,
        )
    return _first_word(top.get("Host Routing")), None, None


def _congestion_control(bandwidth_manager: str | None) -> str | None:
    """``EDT with BPF [BBR] [eth0]`` -> ``BBR``; ``Disabled`` -> ``None``.

    Releases before 1.12 print only the device list (``EDT with BPF [eth0]``),
    so a single bracket means the algorithm is not shown.
    """
    if not bandwidth_manager or not bandwidth_manager.startswith("EDT"):
        return None
    groups = _BRACKETED.findall(bandwidth_manager)
    return groups[0].strip() if len(groups) >= 2 else None


def parse_agent_status(text: str) -> AgentStatus:
    """Parse ``cilium-dbg status --verbose`` output of any 1.13-1.19 release."""
    top, details = _status_sections(text)
    state, version = _cilium_state_and_version(top.get("Cilium"))
    host_routing, network_routing, tunnel = _routing(top)
    selection = details.get("Backend Selection")
    bandwidth_manager = top.get("BandwidthManager")
    return AgentStatus(
        cilium_state=state,
        version=version,
        kube_proxy_replacement=_first_word(top.get("KubeProxyReplacement")) or _first_word(details.get("Status")),
        socket_lb=_first_word(details.get("Socket LB")),
        lb_mode=_first_word(details.get("Mode")),
        dsr_dispatch=details.get("DSR Dispatch Mode") or None,
        backend_selection=selection or None,
        maglev_table_size=_maglev_table_size(selection),
        host_routing=host_routing,
        network_routing=network_routing,
        tunnel_protocol=tunnel,
        masquerading=_first_word(top.get("Masquerading")),
        bandwidth_manager=bandwidth_manager or None,
        congestion_control=_congestion_control(bandwidth_manager),
        ipv4_big_tcp=_first_word(top.get("IPv4 BIG TCP")),
        ipv6_big_tcp=_first_word(top.get("IPv6 BIG TCP")),
        xdp_acceleration=_first_word(details.get("XDP Acceleration")),
        device_mode=_first_word(top.get("Device Mode")),
    )


# --------------------------------------------------------------------------
# iptables-save / ip6tables-save
# --------------------------------------------------------------------------

KUBE_PROXY_MARKERS = ("KUBE-SVC-", "KUBE-SEP-", "KUBE-NODEPORTS")
UNLABELLED_SECTION = "unlabelled"
_SECTION_MARKER = re.compile(r"^\s*###\s*(\S+)\s*$")
_GENERATED_BY = re.compile(r"^#\s*Generated\s+by\s+(\S+)")
_EXAMPLES_KEPT = 3


@dataclass
class IptablesSection:
    """Kube-proxy traces found in one family's ``iptables-save`` dump."""

    label: str
    has_tables: bool = False
    matching_lines: int = 0
    per_marker: dict[str, int] = field(default_factory=lambda: {marker.rstrip("-"): 0 for marker in KUBE_PROXY_MARKERS})
    examples: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        stripped = line.strip()
        if stripped.startswith("*") or stripped == "COMMIT":
            self.has_tables = True
        hits = [marker for marker in KUBE_PROXY_MARKERS if marker in stripped]
        if not hits:
            return
        self.matching_lines += 1
        for marker in hits:
            self.per_marker[marker.rstrip("-")] += 1
        if len(self.examples) < _EXAMPLES_KEPT:
            self.examples.append(stripped)


def _label_from_generator(line: str) -> str | None:
    generator = _GENERATED_BY.match(line.strip())
    if generator is None:
        return None
    return "ipv6" if generator.group(1).startswith("ip6tables") else "ipv4"


def parse_iptables_save(text: str) -> dict[str, IptablesSection]:
    """Count kube-proxy chains and rules per section of concatenated dumps.

    Sections start at a marker line ``### <label>`` (e.g. ``### ipv4``).
    Without markers, each ``# Generated by ip6tables-save ...`` header starts
    an ``ipv6`` section and any other ``# Generated by ...`` an ``ipv4`` one.
    Lines before any marker or header go to ``unlabelled``.
    """
    sections: dict[str, IptablesSection] = {}
    label = UNLABELLED_SECTION
    explicit = False
    for line in text.splitlines():
        marker = _SECTION_MARKER.match(line)
        if marker:
            label, explicit = marker.group(1).lower(), True
            sections.setdefault(label, IptablesSection(label))
            continue
        generated = None if explicit else _label_from_generator(line)
        if generated:
            label = generated
        if not line.strip():
            continue
        sections.setdefault(label, IptablesSection(label)).add(line)
    return sections


# --------------------------------------------------------------------------
# cilium-dbg service list
# --------------------------------------------------------------------------

_SERVICE_ROW = re.compile(
    r"^\s*(?P<id>\d+)\s+(?P<frontend>\S+)\s+(?P<type>[A-Za-z][\w-]*)"
    r"(?:\s+(?P<backend>\d+\s*=>.*?))?\s*$"
)
_BACKEND = re.compile(r"^\s*\d+\s*=>\s*(?P<address>\S+)(?:\s+\((?P<state>[\w-]+)\))?")
_ADDRESS_PORT = re.compile(
    r"^(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^\s:\[\]/]+)):(?P<port>\d+)"
    r"(?:/(?P<protocol>[A-Za-z]+))?(?:/(?P<scope>\w+))?$"
)


def normalise_ip(text: str) -> str:
    """Canonical text of an IP address, or the input unchanged if it is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


@dataclass(frozen=True)
class Frontend:
    """A service frontend: ``10.0.0.1:80/TCP`` or ``[fd00::1]:80``."""

    address: str
    port: int
    protocol: str | None
    raw: str


def parse_address_port(text: str) -> Frontend | None:
    """Parse ``ip:port[/proto[/scope]]`` with IPv6 in brackets; ``None`` if malformed."""
    match = _ADDRESS_PORT.match(text.strip())
    if match is None:
        return None
    address = match["v6"] or match["v4"]
    return Frontend(normalise_ip(address), int(match["port"]), match["protocol"], text.strip())


@dataclass(frozen=True)
class Backend:
    """One backend line; ``state`` is ``None`` when Cilium printed no ``(state)``."""

    address: str
    state: str | None

    @property
    def usable(self) -> bool:
        return self.state in (None, "active")


@dataclass
class ServiceEntry:
    """One row group of ``cilium-dbg service list``."""

    service_id: int
    frontend: Frontend
    service_type: str
    backends: list[Backend] = field(default_factory=list)

    @property
    def usable_backends(self) -> int:
        return sum(1 for backend in self.backends if backend.usable)


@dataclass
class ServiceList:
    services: list[ServiceEntry] = field(default_factory=list)
    unparsed_lines: list[str] = field(default_factory=list)


def _backend(text: str | None) -> Backend | None:
    if not text:
        return None
    match = _BACKEND.match(text)
    return Backend(match["address"], match["state"]) if match else None


def _service_row(line: str) -> ServiceEntry | None:
    row = _SERVICE_ROW.match(line)
    if row is None:
        return None
    frontend = parse_address_port(row["frontend"])
    if frontend is None:
        return None
    entry = ServiceEntry(int(row["id"]), frontend, row["type"])
    backend = _backend(row["backend"])
    if backend:
        entry.backends.append(backend)
    return entry


def _is_service_header(line: str) -> bool:
    words = line.split()
    return bool(words) and words[0] == "ID" and "Frontend" in words


def parse_service_list(text: str) -> ServiceList:
    """Parse ``cilium-dbg service list`` (1.13 through 1.19 layouts).

    Continuation lines (``2 => backend``) belong to the row above; after a line
    that cannot be read, they are kept as unparsed instead of being given to
    the wrong service.
    """
    result = ServiceList()
    current: ServiceEntry | None = None
    for line in text.splitlines():
        if not line.strip() or _is_service_header(line):
            continue
        current = _service_row(line) or _add_backend(current, line)
        if current is None:
            result.unparsed_lines.append(line.strip())
        elif not result.services or result.services[-1] is not current:
            result.services.append(current)
    return result


def _add_backend(service: ServiceEntry | None, line: str) -> ServiceEntry | None:
    """Add a continuation line's backend to ``service``; ``None`` if it is not one."""
    backend = _backend(line)
    if service is None or backend is None:
        return None
    service.backends.append(backend)
    return service


# --------------------------------------------------------------------------
# Smoke probe lines
# --------------------------------------------------------------------------

PROBE_PREFIX = "probe="
PROBE_REQUIRED_FIELDS = ("probe", "target", "result")


@dataclass(frozen=True)
class ProbeLine:
    """One ``probe=<name> target=<ip:port> result=ok|fail ...`` line."""

    fields: dict[str, str]
    raw: str

    @property
    def name(self) -> str:
        return self.fields.get("probe", "")

    def missing_fields(self) -> list[str]:
        return [key for key in PROBE_REQUIRED_FIELDS if not self.fields.get(key)]


@dataclass
class ProbeReport:
    probes: list[ProbeLine] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    ignored_lines: int = 0


def _probe_fields(line: str) -> dict[str, str] | None:
    try:
        tokens = shlex.split(line)
    except ValueError:
        return None
    if not all("=" in token for token in tokens):
        return None
    return dict(token.split("=", 1) for token in tokens)


def parse_probe_lines(text: str) -> ProbeReport:
    """Parse probe lines; other lines (curl noise, blank lines) are counted and ignored."""
    report = ProbeReport()
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith(PROBE_PREFIX):
            report.ignored_lines += 1 if stripped else 0
            continue
        fields = _probe_fields(stripped)
        if fields is None:
            report.malformed.append(stripped)
        else:
            report.probes.append(ProbeLine(fields, stripped))
    return report


# --------------------------------------------------------------------------
# cilium connectivity test
# --------------------------------------------------------------------------

_COUNTS_TAIL = (
    r"(?:,\s*(?P<warnings>\d+) warnings)?"
    r"(?:,\s*(?P<skipped_tests>\d+) tests skipped)?"
    r"(?:,\s*(?P<skipped_scenarios>\d+) scenarios skipped)?"
)
_ALL_SUCCESSFUL = re.compile(r"All (?P<tests>\d+) tests \((?P<actions>\d+) actions\) successful" + _COUNTS_TAIL)
_SOME_FAILED = re.compile(
    r"(?P<failed>\d+)/(?P<tests>\d+) tests failed "
    r"\((?P<failed_actions>\d+)/(?P<actions>\d+) actions\)" + _COUNTS_TAIL
)
_FAILED_TEST_HEADING = re.compile(r"^\s*(?:\[[^\]]+\]\s*)?Test \[(?P<name>[^\]]+)\]:\s*$")
_FAILED_ACTION = re.compile(r"(?P<action>[\w.-]+(?:/[\w.-]+)+):")
_FINAL_ERROR = re.compile(r"connectivity test failed: (?P<failed>\d+) tests? failed")
_ERROR_LINE = re.compile(r"^\s*(?:Error:|.*connectivity test failed)")


@dataclass
class ConnectivitySummary:
    """Totals summed over every test namespace's summary line."""

    summaries: int = 0
    tests: int = 0
    actions: int = 0
    failed_tests: int = 0
    failed_actions: int = 0
    warnings: int = 0
    skipped_tests: int = 0
    skipped_scenarios: int = 0
    failed_test_names: list[str] = field(default_factory=list)
    failed_action_names: list[str] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)
    final_error_failures: int | None = None

    def add_counts(self, match: re.Match[str]) -> None:
        groups = match.groupdict()
        self.summaries += 1
        self.tests += int(groups["tests"])
        self.actions += int(groups["actions"])
        self.failed_tests += int(groups.get("failed") or 0)
        self.failed_actions += int(groups.get("failed_actions") or 0)
        self.warnings += int(groups["warnings"] or 0)
        self.skipped_tests += int(groups["skipped_tests"] or 0)
        self.skipped_scenarios += int(groups["skipped_scenarios"] or 0)


def _record_failure_detail(line: str, summary: ConnectivitySummary) -> bool:
    """Record a ``Test [name]:`` heading or a failed action under it.

    Returns whether the report goes on: it ends at the first blank line.
    Unindented lines that are not headings (stderr interleaved by the
    terminal, such as "connectivity test failed: ...") are skipped.
    """
    if not line.strip():
        return False
    heading = _FAILED_TEST_HEADING.match(line)
    if heading:
        summary.failed_test_names.append(heading["name"])
        return True
    action = _FAILED_ACTION.search(line)
    if action and summary.failed_test_names and line[:1].isspace():
        summary.failed_action_names.append(action["action"])
    return True


def _record_final_error(line: str, summary: ConnectivitySummary) -> None:
    final_error = _FINAL_ERROR.search(line)
    if final_error:
        failed = int(final_error["failed"])
        summary.final_error_failures = (summary.final_error_failures or 0) + failed
    if _ERROR_LINE.match(line):
        summary.error_lines.append(line.strip())


def parse_connectivity_test(text: str) -> ConnectivitySummary:
    """Parse the report(s) at the end of ``cilium connectivity test`` output.

    With ``--test-concurrency`` every test namespace prints its own summary
    line (prefixed ``[cilium-test-N]`` on recent cilium-cli); they are summed.
    """
    summary = ConnectivitySummary()
    in_report = False
    for line in text.splitlines():
        counts = _SOME_FAILED.search(line) or _ALL_SUCCESSFUL.search(line)
        if counts:
            summary.add_counts(counts)
            in_report = "failed" in counts.groupdict()
        elif in_report:
            in_report = _record_failure_detail(line, summary)
        _record_final_error(line, summary)
    return summary


# --------------------------------------------------------------------------
# netperf TCP_RR / TCP_STREAM
# --------------------------------------------------------------------------

# Header text of netperf omni output selectors (nettest_omni.c) and their
# keyval (-k) names, mapped to the figure names this package reports.
_OMNI_TITLES = {
    "minimum latency microseconds": "minLatencyUs",
    "mean latency microseconds": "meanLatencyUs",
    "maximum latency microseconds": "maxLatencyUs",
    "50th percentile latency microseconds": "p50LatencyUs",
    "90th percentile latency microseconds": "p90LatencyUs",
    "99th percentile latency microseconds": "p99LatencyUs",
    "stddev latency microseconds": "stddevLatencyUs",
    "transaction rate tran/s": "transactionsPerSec",
    "round trip latency usec/tran": "roundTripLatencyUs",
    "throughput": "throughput",
    "throughput units": "throughputUnits",
}
_OMNI_KEYWORDS = {
    "MIN_LATENCY": "minLatencyUs",
    "MEAN_LATENCY": "meanLatencyUs",
    "MAX_LATENCY": "maxLatencyUs",
    "P50_LATENCY": "p50LatencyUs",
    "P90_LATENCY": "p90LatencyUs",
    "P99_LATENCY": "p99LatencyUs",
    "STDDEV_LATENCY": "stddevLatencyUs",
    "TRANSACTION_RATE": "transactionsPerSec",
    "RT_LATENCY": "roundTripLatencyUs",
    "THROUGHPUT": "throughput",
    "THROUGHPUT_UNITS": "throughputUnits",
}
_BANNER = re.compile(r"\bTEST\b.*\bfrom\b")
_BANNER_TEST = re.compile(
    r"\b(?P<proto>TCP|UDP)\s+(?P<kind>STREAM|MAERTS|REQUEST/RESPONSE|Connect/Request/Response)\s+TEST"
)
_BANNER_KINDS = {
    "STREAM": "STREAM",
    "MAERTS": "MAERTS",
    "REQUEST/RESPONSE": "RR",
    "Connect/Request/Response": "CRR",
}
_KEYVAL = re.compile(r"^\s*(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>.*?)\s*$")
_BITS_UNIT = re.compile(r"^10\^(?P<exponent>\d+)bits/s(?:ec)?$")
_BYTES_UNIT = re.compile(r"^(?P<prefix>[KMG]?)Bytes/s(?:ec)?$")
_BYTE_PREFIX_POWER = {"": 0, "K": 10, "M": 20, "G": 30}
_NETPERF_ERROR = re.compile(
    r"(?:^netperf:|establish control|could not establish|send_omni|recv_response|failed|No route to host|"
    r"Connection refused|are you sure there is a netserver)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")

NetperfFigures = dict[str, float | str]


@dataclass
class NetperfResult:
    """Figures from every netperf run found in the input, merged."""

    tests: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _to_number(text: str) -> float | None:
    return float(text) if _NUMBER.match(text) else None


def _store(figures: NetperfFigures, name: str, raw: str) -> None:
    if name == "throughputUnits":
        figures[name] = raw.strip()
        return
    number = _to_number(raw)
    if number is not None:
        figures[name] = number


def _keyval_figures(lines: list[str]) -> NetperfFigures:
    figures: NetperfFigures = {}
    for line in lines:
        match = _KEYVAL.match(line)
        if match and match["key"] in _OMNI_KEYWORDS:
            _store(figures, _OMNI_KEYWORDS[match["key"]], match["value"])
    return figures


def _csv_figures(lines: list[str]) -> NetperfFigures:
    figures: NetperfFigures = {}
    for header, values in itertools.pairwise(lines):
        titles = [title.strip().lower() for title in header.split(",")]
        cells = values.split(",")
        if "," not in header or len(titles) != len(cells):
            continue
        for title, cell in zip(titles, cells, strict=True):
            if title in _OMNI_TITLES:
                _store(figures, _OMNI_TITLES[title], cell)
    return figures


def _token_starts(line: str) -> list[int]:
    return [match.start() for match in re.finditer(r"\S+", line)]


def _column_titles(headers: list[str], starts: list[int]) -> list[str]:
    ends = [*starts[1:], max([len(line) for line in headers] + [starts[-1] + 1])]
    return [
        " ".join(" ".join(line[start:end].split()) for line in headers).strip().lower()
        for start, end in zip(starts, ends, strict=True)
    ]


def _human_figures(lines: list[str]) -> NetperfFigures:
    """``-O`` output: four left-aligned header lines, then the value line."""
    for index in range(len(lines) - 1, 0, -1):
        values = lines[index]
        starts = _token_starts(values)
        if not starts:
            continue
        headers = [line for line in lines[max(0, index - 4) : index] if not _BANNER.search(line)]
        titles = _column_titles(headers, starts)
        if not any(title in _OMNI_TITLES for title in titles):
            continue
        figures: NetperfFigures = {}
        for title, token in zip(titles, values.split(), strict=False):
            if title in _OMNI_TITLES:
                _store(figures, _OMNI_TITLES[title], token)
        return figures
    return {}


def _classic_units_row(lines: list[str]) -> int | None:
    for index, line in enumerate(lines):
        words = line.split()
        if words and words[0] == "bytes" and "secs." in words:
            return index
    return None


def _classic_figures(lines: list[str]) -> NetperfFigures:
    """Classic TCP_RR / TCP_STREAM tables (no ``-o``/``-O``/``-k``)."""
    units_index = _classic_units_row(lines)
    if units_index is None:
        return {}
    units = lines[units_index].split()
    data = next((line.split() for line in lines[units_index + 1 :] if line.strip()), [])
    figures: NetperfFigures = {}
    if "per" in units and len(data) > units.index("per"):
        _store(figures, "transactionsPerSec", data[units.index("per")])
        return figures
    for position, unit in enumerate(units):
        if (_BITS_UNIT.match(unit) or _BYTES_UNIT.match(unit)) and len(data) > position:
            _store(figures, "throughput", data[position])
            figures["throughputUnits"] = unit
            break
    return figures


def throughput_in_mbps(value: float, unit: str) -> float | None:
    """Convert a netperf throughput to Mbit/s (10^6 bits per second)."""
    bits = _BITS_UNIT.match(unit)
    if bits:
        return value * 10.0 ** int(bits["exponent"]) / 1e6
    octets = _BYTES_UNIT.match(unit)
    if octets:
        return value * 2.0 ** _BYTE_PREFIX_POWER[octets["prefix"]] * 8 / 1e6
    return None


def _banner_test(lines: list[str]) -> str | None:
    for line in lines:
        match = _BANNER_TEST.search(line)
        if match:
            return f"{match['proto']}_{_BANNER_KINDS[match['kind']]}"
    return None


def _numeric_figures(raw: NetperfFigures) -> dict[str, float]:
    """Resolve ``throughput`` + ``throughputUnits`` into named figures."""
    figures = {key: value for key, value in raw.items() if isinstance(value, float)}
    throughput = figures.pop("throughput", None)
    units = raw.get("throughputUnits")
    if throughput is None or not isinstance(units, str):
        return figures
    if units.lower().startswith("trans"):
        figures.setdefault("transactionsPerSec", throughput)
        return figures
    mbps = throughput_in_mbps(throughput, units)
    if mbps is not None:
        figures["throughputMbps"] = round(mbps, 3)
    return figures


def _section_figures(lines: list[str]) -> dict[str, float]:
    for extract in (_keyval_figures, _csv_figures, _classic_figures, _human_figures):
        raw = extract(lines)
        figures = _numeric_figures(raw)
        if figures:
            return figures
    return {}


def _infer_test(figures: dict[str, float]) -> str | None:
    if "throughputMbps" in figures:
        return "TCP_STREAM"
    if "transactionsPerSec" in figures or "meanLatencyUs" in figures:
        return "TCP_RR"
    return None


def _netperf_sections(lines: list[str]) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for line in lines:
        if _BANNER.search(line) and sections[-1]:
            sections.append([])
        sections[-1].append(line)
    return sections


def parse_netperf(text: str) -> NetperfResult:
    """Parse one or more netperf runs (banner lines separate concatenated runs)."""
    result = NetperfResult()
    lines = text.splitlines()
    result.errors = [line.strip() for line in lines if _NETPERF_ERROR.search(line)]
    for section in _netperf_sections(lines):
        figures = _section_figures(section)
        test = _banner_test(section) or _infer_test(figures)
        if figures and test and test not in result.tests:
            result.tests.append(test)
        result.figures.update(figures)
    return result


# --------------------------------------------------------------------------
# kpr-integrity: what verify-kpr-node.sh prints on a node
# --------------------------------------------------------------------------

# "### <part> [key=value ...]" starts each part of the collector's output; values are shell-quoted.
KPR_PART_MARK = "### "
# ss names each socket's processes: users:(("k3s-agent",pid=2786,fd=8),("systemd",pid=1,fd=103)).
_SS_OWNER = re.compile(r'\("(?P<name>(?:[^"\\]|\\.)*)",pid=(?P<pid>\d+),fd=\d+\)')
_SS_NETIDS = ("tcp", "udp", "sctp", "raw")
_K3S_FLAG = "disable-kube-proxy"
# A top-level ``disable-kube-proxy:`` (or ``disable-kube-proxy+:``) line of a K3s config file.
_CONFIG_SETTING = re.compile(
    r"""^(?P<quote>["']?)(?P<key>disable-kube-proxy\+?)(?P=quote)[ \t]*:(?:[ \t]+(?P<value>.*?))?[ \t]*$"""
)
# go-yaml v2 (which K3s reads its config with) resolves these plain scalars to booleans.
_YAML11_TRUE = frozenset(["y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"])
_YAML11_FALSE = frozenset(["n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"])
# Go's strconv.ParseBool, which the K3s CLI applies to a boolean flag's value.
_PARSE_BOOL_TRUE = frozenset(["1", "t", "T", "TRUE", "true", "True"])
_PARSE_BOOL_FALSE = frozenset(["0", "f", "F", "FALSE", "false", "False"])


@dataclass(frozen=True)
class SocketOwner:
    name: str
    pid: int

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket of ``ss -ltnp``: its local address and the processes that hold it."""

    address: str  # "127.0.0.1", "::1", "0.0.0.0", "*" (scope and brackets removed)
    port: int
    owners: tuple[SocketOwner, ...]
    raw: str

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def describe(self) -> str:
        held_by = ", ".join(str(owner) for owner in self.owners) or "a process ss did not name (not root?)"
        return f"{self.endpoint} held by {held_by}"


@dataclass
class SsListing:
    listeners: list[Listener] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)

    def on_port(self, port: int) -> list[Listener]:
        return [listener for listener in self.listeners if listener.port == port]


def _socket_address(text: str) -> tuple[str, int] | None:
    """``127.0.0.53%lo:53`` -> (127.0.0.53, 53); ``[::1]:10256`` -> (::1, 10256); ``*:10250`` -> (*, 10250)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    return host.split("%", 1)[0], int(port)


def parse_ss_listening(text: str) -> SsListing:
    """Parse ``ss -ltnp`` (or ``ss -lntpu``, with its Netid column); only LISTEN rows are kept.

    The Process column is absent when ss runs without root: the listener then has no owners.
    """
    listing = SsListing()
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] in ("State", "Netid"):
            continue
        if words[0] in _SS_NETIDS:
            words = words[1:]
        if not words or words[0] != "LISTEN":
            if not (words and words[0].isupper()):  # another state (UNCONN, ESTAB) is a row to skip
                listing.unparsed.append(line.strip())
            continue
        address = _socket_address(words[3]) if len(words) >= 5 else None
        if address is None:
            listing.unparsed.append(line.strip())
            continue
        owners = tuple(SocketOwner(match["name"], int(match["pid"])) for match in _SS_OWNER.finditer(line))
        listing.listeners.append(Listener(address[0], address[1], owners, line.strip()))
    return listing


@dataclass(frozen=True)
class K3sProcess:
    """K3s' main process: its systemd unit, pid, start (Unix time) and ``/proc/<pid>/cmdline``.

    ``cmdline`` holds the arguments one per entry as the collector printed them
    (anything but the subcommand and the arguments about kube-proxy and the
    config file is ``<hidden>``). K3s retitles itself (``gspt.SetProcTitle(os.Args[0]
    + " server")``), so a running K3s shows one entry ``/usr/local/bin/k3s server``
    and none of its flags.
    """

    unit: str
    pid: int
    started: int | None
    cmdline: tuple[str, ...]

    @property
    def retitled(self) -> bool:
        entries = [entry for entry in self.cmdline if entry]
        return len(entries) == 1 and " " in entries[0]

    @property
    def argv(self) -> tuple[str, ...]:
        entries = tuple(entry for entry in self.cmdline if entry)
        return tuple(entries[0].split()) if self.retitled else entries

    @property
    def role(self) -> str | None:
        return next((arg for arg in self.argv[1:] if arg in ("server", "agent")), None)


@dataclass(frozen=True)
class ConfigSetting:
    """A ``disable-kube-proxy:`` line of a K3s config file, and the flag value K3s makes of it."""

    path: str
    raw: str
    value: bool | None  # None: not a boolean K3s accepts


@dataclass(frozen=True)
class ConfigFile:
    path: str
    mtime: int | None
    settings: tuple[ConfigSetting, ...]


@dataclass
class KprNode:
    """Everything ``verify-kpr-node.sh`` printed, by part; a part it did not print is ``None``/empty."""

    parts: list[str] = field(default_factory=list)
    ss: SsListing | None = None
    # "none" when no k3s/k3s-agent unit has a main process; None when the part is missing.
    k3s_unit: str | None = None
    k3s: K3sProcess | None = None
    execstart: tuple[str, ...] | None = None
    config_path: str | None = None
    config_source: str | None = None
    config_files: list[ConfigFile] = field(default_factory=list)
    api_probe: ProbeLine | None = None
    api_lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FlagSetting:
    """Where the effective ``disable-kube-proxy`` comes from: a config file or a command-line argument."""

    value: bool | None
    source: str
    raw: str


def parse_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``; ``None`` for anything else."""
    if text in _PARSE_BOOL_TRUE:
        return True
    if text in _PARSE_BOOL_FALSE:
        return False
    return None


def _yaml_flag_value(value: str | None) -> bool | None:
    """The value K3s gives ``--disable-kube-proxy`` for a config scalar (YAML 1.1, then ParseBool)."""
    if not value:
        return None
    if value[0] in "\"'":
        quote = value[0]
        end = value.find(quote, 1)
        return parse_bool(value[1:end]) if end > 0 else None
    scalar = value.split(" #", 1)[0].strip()
    if scalar in _YAML11_TRUE:
        return True
    if scalar in _YAML11_FALSE:
        return False
    return parse_bool(scalar)


def parse_config_setting(path: str, line: str) -> ConfigSetting | None:
    match = _CONFIG_SETTING.match(line.rstrip("\r\n"))
    if match is None:
        return None
    return ConfigSetting(path, line.strip(), _yaml_flag_value(match["value"]))


def _marker_fields(words: list[str]) -> dict[str, str]:
    return dict(word.split("=", 1) for word in words if "=" in word)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def _kpr_parts(text: str) -> list[tuple[list[str], list[str]]]:
    """(marker words, lines) per part; lines before the first marker are dropped."""
    parts: list[tuple[list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith(KPR_PART_MARK):
            try:
                words = shlex.split(line[len(KPR_PART_MARK) :])
            except ValueError:
                words = line[len(KPR_PART_MARK) :].split()
            if words:
                parts.append((words, []))
                continue
        if parts:
            parts[-1][1].append(line)
    return parts


def _config_file(fields: dict[str, str], lines: list[str]) -> ConfigFile:
    path = fields.get("path", "")
    settings = tuple(setting for line in lines if (setting := parse_config_setting(path, line)) is not None)
    return ConfigFile(path, _int_or_none(fields.get("mtime")), settings)


def parse_kpr_node(text: str) -> KprNode:
    """Parse ``verify-kpr-node.sh`` output (parts: ss, k3s, cmdline, execstart, config, file, api-server)."""
    node = KprNode()
    unit: dict[str, str] = {}
    cmdline: list[str] | None = None
    for words, lines in _kpr_parts(text):
        name, fields = words[0], _marker_fields(words[1:])
        node.parts.append(name)
        if name == "ss":
            node.ss = parse_ss_listening("\n".join(lines))
        elif name == "k3s":
            unit = fields
            node.k3s_unit = fields.get("unit", "none")
        elif name == "cmdline":
            cmdline = lines
        elif name == "execstart":
            node.execstart = tuple(line for line in lines if line)
        elif name == "config":
            node.config_path, node.config_source = fields.get("path"), fields.get("source")
        elif name == "file":
            node.config_files.append(_config_file(fields, lines))
        elif name == "api-server":
            node.api_lines = [line for line in lines if line.strip()]
            probes = parse_probe_lines("\n".join(lines)).probes
            node.api_probe = probes[-1] if probes else None
    pid = _int_or_none(unit.get("pid"))
    if node.k3s_unit not in (None, "none") and pid:
        node.k3s = K3sProcess(str(node.k3s_unit), pid, _int_or_none(unit.get("started")), tuple(cmdline or ()))
    return node


def _flag_in_args(args: tuple[str, ...], source: str) -> FlagSetting | None:
    """The last ``--disable-kube-proxy[=v]`` among command-line arguments (urfave/cli: the last one wins)."""
    found: FlagSetting | None = None
    for arg in args[1:]:
        name, has_value, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name == _K3S_FLAG:
            found = FlagSetting(parse_bool(value) if has_value else True, source, arg)
    return found


def effective_disable_kube_proxy(node: KprNode) -> FlagSetting | None:
    """What a K3s server runs with: its config files in the order K3s reads them, then its arguments.

    K3s puts the config files' values before the command-line arguments, so an
    argument wins over every file, and a later file over an earlier one
    (k3s ``pkg/configfilearg``). The arguments are the process's own when its
    command line still shows them, else its unit's ExecStart. ``None``: set
    nowhere, so K3s' default (false) applies.
    """
    found: FlagSetting | None = None
    for config in node.config_files:
        for setting in config.settings:
            found = FlagSetting(setting.value, config.path, setting.raw)
    process = node.k3s
    if process is not None and not process.retitled and len(process.argv) > 2:
        return _flag_in_args(process.argv, f"/proc/{process.pid}/cmdline") or found
    if node.execstart:
        return _flag_in_args(node.execstart, f"ExecStart of {node.k3s_unit}") or found
    return found


# --------------------------------------------------------------------------
# A node collector's output (verify-node.sh): each check's raw output in a section
# --------------------------------------------------------------------------

# Starts the line before each check's output in a node collector's stdout.
SECTION_MARK = "### k3s-cilium check"


def split_sections(stdout: str) -> dict[str, str]:
    """A node collector's stdout as each check's own raw output."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(f"{SECTION_MARK} "):
            current = sections.setdefault(line.removeprefix(f"{SECTION_MARK} ").strip(), [])
        elif current is not None:
            current.append(line)
    return {check: "".join(f"{line}\n" for line in lines) for check, lines in sections.items()}
