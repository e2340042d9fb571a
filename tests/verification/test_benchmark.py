"""benchmark: netperf figures are reported; only unreadable output fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from verification.expectations import CHECKS, JsonValue, Verdict
from verification.parsers import parse_netperf, throughput_in_mbps

FIXTURES = Path(__file__).parent / "fixtures"
NODE = "agent-1"

RR_FIGURES = {
    "minLatencyUs": 24.0,
    "meanLatencyUs": 33.51,
    "p50LatencyUs": 31.0,
    "p90LatencyUs": 39.0,
    "p99LatencyUs": 61.0,
    "maxLatencyUs": 2113.0,
    "stddevLatencyUs": 11.87,
    "transactionsPerSec": 29790.347,
}


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def run(text: str, expect: dict[str, JsonValue] | None = None) -> Verdict:
    return CHECKS["benchmark"].run(text, expect or {})


def messages(verdict: Verdict) -> list[str]:
    return [problem.message(NODE, "benchmark") for problem in verdict.problems]


@pytest.mark.parametrize(
    "name",
    ["netperf_tcp_rr_omni_human.txt", "netperf_tcp_rr_omni_csv.txt", "netperf_tcp_rr_keyval.txt"],
)
def test_tcp_rr_selectors_in_every_output_mode(name: str) -> None:
    result = parse_netperf(fixture(name))

    assert result.tests == ["TCP_RR"]
    assert result.figures == RR_FIGURES


def test_classic_tcp_rr_table_gives_the_transaction_rate_only() -> None:
    result = parse_netperf(fixture("netperf_tcp_rr_classic.txt"))

    assert result.tests == ["TCP_RR"]
    assert result.figures == {"transactionsPerSec": 29842.18}


def test_classic_tcp_stream_table_gives_throughput_in_mbps() -> None:
    result = parse_netperf(fixture("netperf_tcp_stream_classic.txt"))

    assert result.tests == ["TCP_STREAM"]
    assert result.figures == {"throughputMbps": 9412.37}


def test_concatenated_runs_are_split_at_their_banners() -> None:
    result = parse_netperf(fixture("netperf_rr_then_stream_omni_human.txt"))

    assert result.tests == ["TCP_RR", "TCP_STREAM"]
    assert result.figures == {
        "meanLatencyUs": 41.09,
        "p99LatencyUs": 87.0,
        "transactionsPerSec": 24301.77,
        "throughputMbps": 9412.37,
    }


def test_comma_lines_that_are_not_the_csv_header_are_skipped() -> None:
    text = (
        "netperf: warning, odd socket size, using default\n"
        "Mean Latency Microseconds,Transaction Rate Tran/s\n"
        "33.51,29790.347\n"
    )

    assert parse_netperf(text).figures == {"meanLatencyUs": 33.51, "transactionsPerSec": 29790.347}


def test_runs_without_banner_are_named_from_their_figures() -> None:
    text = "THROUGHPUT=941.20\nTHROUGHPUT_UNITS=10^6bits/s\n"

    result = parse_netperf(text)

    assert (result.tests, result.figures) == (["TCP_STREAM"], {"throughputMbps": 941.2})


@pytest.mark.parametrize(
    ("value", "unit", "mbps"),
    [
        (9412.37, "10^6bits/sec", 9412.37),
        (9.41237, "10^9bits/s", 9412.37),
        (1000.0, "10^3bits/s", 1.0),
        (1000.0, "KBytes/s", 8.192),
        (1.0, "MBytes/sec", 8.388608),
        (5.0, "Trans/s", None),
    ],
)
def test_throughput_units_convert_to_mbps(value: float, unit: str, mbps: float | None) -> None:
    converted = throughput_in_mbps(value, unit)

    assert converted == (pytest.approx(mbps) if mbps is not None else None)


def test_tab_separated_classic_table_parses_like_spaces() -> None:
    spaced = fixture("netperf_tcp_stream_classic.txt")
    tabbed = re.sub(r" {2,}", "\t", spaced)

    assert "\t" in tabbed
    assert parse_netperf(tabbed).figures == parse_netperf(spaced).figures == {"throughputMbps": 9412.37}


def test_benchmark_passes_and_reports_figures() -> None:
    verdict = run(
        fixture("netperf_tcp_rr_keyval.txt"), {"test": "TCP_RR", "figures": ["meanLatencyUs", "p99LatencyUs"]}
    )

    assert messages(verdict) == []
    assert verdict.figures == {"tests": ["TCP_RR"], "errors": [], **RR_FIGURES}


def test_slow_figures_never_fail() -> None:
    slow = "MEAN_LATENCY=250000.00\nP99_LATENCY=9000000\nTRANSACTION_RATE=3.997\n"

    assert run(slow, {"figures": ["meanLatencyUs", "p99LatencyUs", "transactionsPerSec"]}).passed


def test_unreachable_netserver_fails_with_the_netperf_error() -> None:
    verdict = run(fixture("netperf_no_netserver.txt"))

    assert messages(verdict) == [
        "node agent-1: check benchmark: expected netperf results with parsable figures, saw netperf error: "
        "establish control: are you sure there is a netserver listening on 10.42.2.18 at port 12865?"
    ]


@pytest.mark.parametrize(
    "text",
    ["", "24,33.51,31,39,61,2113,11.87,29790.347\n", "sh: netperf: not found\n"],
    ids=["empty", "csv-without-header", "not-installed"],
)
def test_unparsable_output_is_not_found(text: str) -> None:
    verdict = run(text)

    assert [problem.item for problem in verdict.problems] == ["netperf results"]
    assert not verdict.passed


def test_missing_test_and_figure_are_reported() -> None:
    verdict = run(fixture("netperf_tcp_rr_classic.txt"), {"test": "TCP_STREAM", "figures": ["p99LatencyUs"]})

    assert messages(verdict) == [
        "node agent-1: check benchmark: expected netperf test TCP_STREAM, saw TCP_RR",
        "node agent-1: check benchmark: expected figure p99LatencyUs present, saw nothing (not found in output)",
    ]
