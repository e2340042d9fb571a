"""probes: every smoke probe line must say result=ok."""

from __future__ import annotations

from pathlib import Path

from verification.expectations import CHECKS, JsonValue, Verdict
from verification.parsers import parse_probe_lines

FIXTURES = Path(__file__).parent / "fixtures"
NODE = "agent-1"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def run(text: str, expect: dict[str, JsonValue] | None = None) -> Verdict:
    return CHECKS["probes"].run(text, expect or {})


def messages(verdict: Verdict) -> list[str]:
    return [problem.message(NODE, "probes") for problem in verdict.problems]


def test_parses_fields_and_quoted_values_and_skips_other_lines() -> None:
    report = parse_probe_lines(fixture("probes_one_failed.txt"))

    assert [probe.name for probe in report.probes] == ["clusterip-from-pod", "nodeport-agent-1", "nodeport-agent-2"]
    assert report.probes[2].fields == {
        "probe": "nodeport-agent-2",
        "target": "10.0.0.12:30080",
        "result": "fail",
        "code": "000",
        "attempts": "5",
        "detail": "curl: (28) Connection timed out",
    }
    assert report.ignored_lines == 2
    assert report.malformed == []


def test_tab_separated_fields_parse_like_spaces() -> None:
    spaced = fixture("probes_all_ok.txt")
    tabbed = spaced.replace(" target=", "\ttarget=").replace(" result=", "\t\tresult=")

    assert "\t" in tabbed
    assert [p.fields for p in parse_probe_lines(tabbed).probes] == [p.fields for p in parse_probe_lines(spaced).probes]


def test_all_probes_ok_passes_with_figures() -> None:
    verdict = run(fixture("probes_all_ok.txt"), {"probes": ["nodeport-agent-1", "nodeport-server-1"], "minProbes": 4})

    assert messages(verdict) == []
    assert verdict.figures["probes"] == 4
    assert verdict.figures["passed"] == 4
    assert verdict.figures["failed"] == []


def test_failed_probe_is_reported_with_its_target_code_and_attempts() -> None:
    verdict = run(fixture("probes_one_failed.txt"))

    assert messages(verdict) == [
        "node agent-1: check probes: expected probe nodeport-agent-2 result ok, saw fail "
        "(target=10.0.0.12:30080 code=000 attempts=5 detail=curl: (28) Connection timed out)"
    ]
    assert verdict.figures["failed"] == ["nodeport-agent-2"]


def test_expected_probe_that_never_reported_is_not_found() -> None:
    verdict = run(fixture("probes_all_ok.txt"), {"probes": ["clusterip-from-host"]})

    assert messages(verdict) == [
        "node agent-1: check probes: expected probe clusterip-from-host reported, saw nothing (not found in output)"
    ]


def test_probe_line_missing_its_result_is_not_found() -> None:
    verdict = run("probe=nodeport-agent-1 target=10.0.0.11:30080 code=200\n")

    assert messages(verdict) == [
        "node agent-1: check probes: expected probe nodeport-agent-1 field result present, "
        "saw nothing (not found in output)"
    ]


def test_result_other_than_ok_fails() -> None:
    verdict = run("probe=a target=10.0.0.11:30080 result=timeout\n")

    assert messages(verdict) == [
        "node agent-1: check probes: expected probe a result ok, saw timeout (target=10.0.0.11:30080)"
    ]


def test_malformed_probe_line_fails() -> None:
    text = 'probe=a target=10.0.0.11:30080 result=ok detail="unterminated\n' + fixture("probes_all_ok.txt")

    verdict = run(text)

    assert messages(verdict) == [
        "node agent-1: check probes: expected probe line of key=value fields, "
        "saw 'probe=a target=10.0.0.11:30080 result=ok detail=\"unterminated'"
    ]


def test_probe_line_with_a_bare_word_is_malformed() -> None:
    verdict = run("probe=a target=10.0.0.11:30080 result=ok timed out\n" + fixture("probes_all_ok.txt"))

    assert messages(verdict) == [
        "node agent-1: check probes: expected probe line of key=value fields, "
        "saw 'probe=a target=10.0.0.11:30080 result=ok timed out'"
    ]


def test_last_line_of_a_retried_probe_counts() -> None:
    text = (
        "probe=a target=10.0.0.11:30080 result=fail attempts=1\nprobe=a target=10.0.0.11:30080 result=ok attempts=2\n"
    )

    assert run(text).passed


def test_no_probe_lines_is_not_found() -> None:
    verdict = run("curl: (7) Failed to connect to 10.0.0.11 port 30080: Connection refused\n")

    assert messages(verdict) == [
        "node agent-1: check probes: expected probe lines >= 1, saw nothing (not found in output)"
    ]


def test_fewer_probes_than_expected_fails() -> None:
    verdict = run(fixture("probes_all_ok.txt"), {"minProbes": 6})

    assert messages(verdict) == ["node agent-1: check probes: expected probe lines >= 6, saw 4"]
