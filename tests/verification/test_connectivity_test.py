"""connectivity-test: cilium connectivity test passes iff no test failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from verification.expectations import CHECKS, JsonValue, Verdict
from verification.parsers import parse_connectivity_test

FIXTURES = Path(__file__).parent / "fixtures"
NODE = "k3s-cilium"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def run(text: str, expect: dict[str, JsonValue] | None = None) -> Verdict:
    return CHECKS["connectivity-test"].run(text, expect or {})


def messages(verdict: Verdict) -> list[str]:
    return [problem.message(NODE, "connectivity-test") for problem in verdict.problems]


@pytest.mark.parametrize(
    ("name", "tests", "actions", "skipped_tests"),
    [
        ("connectivity_success_cli_0.14.txt", 42, 300, 10),
        ("connectivity_success_cli_0.18.txt", 71, 598, 52),
    ],
)
def test_successful_run_passes_with_counts(name: str, tests: int, actions: int, skipped_tests: int) -> None:
    verdict = run(fixture(name), {"minTests": 40})

    assert messages(verdict) == []
    assert verdict.figures["tests"] == tests
    assert verdict.figures["actions"] == actions
    assert verdict.figures["skippedTests"] == skipped_tests
    assert verdict.figures["skippedScenarios"] == 1
    assert verdict.figures["failedTests"] == 0


def test_failure_report_lists_failed_tests_and_actions() -> None:
    summary = parse_connectivity_test(fixture("connectivity_failure_cli_0.14.txt"))

    assert (summary.failed_tests, summary.tests, summary.failed_actions, summary.actions) == (2, 42, 3, 300)
    assert summary.failed_test_names == ["no-policies", "echo-ingress-l7"]
    assert summary.failed_action_names == [
        "no-policies/pod-to-world/http-to-one.one.one.one-0",
        "no-policies/pod-to-world/https-to-one.one.one.one-0",
        "echo-ingress-l7/pod-to-pod-with-endpoints/curl-ipv4-1-public",
    ]
    assert summary.final_error_failures == 2


def test_failed_run_names_the_failed_tests() -> None:
    verdict = run(fixture("connectivity_failure_cli_0.14.txt"))

    assert messages(verdict) == [
        "node k3s-cilium: check connectivity-test: expected failed tests 0, saw 2/42 (no-policies, echo-ingress-l7)"
    ]


def test_failed_run_of_a_namespaced_cli_is_recognised() -> None:
    verdict = run(fixture("connectivity_failure_cli_0.18.txt"))

    assert messages(verdict) == [
        "node k3s-cilium: check connectivity-test: expected failed tests 0, saw 1/71 (no-policies)"
    ]
    assert verdict.figures["failedActionNames"] == ["no-policies/pod-to-service/curl-2"]


def test_summaries_of_concurrent_namespaces_are_summed() -> None:
    text = (
        "✅ [cilium-test-1] All 30 tests (200 actions) successful, 0 warnings, 20 tests skipped, 1 scenarios skipped.\n"
        "📋 Test Report [cilium-test-2]\n"
        "❌ [cilium-test-2] 1/31 tests failed (2/210 actions), 1 warnings, 19 tests skipped, 0 scenarios skipped:\n"
        "Test [to-fqdns]:\n"
        "  ❌ to-fqdns/pod-to-world/http-to-cilium-io-0: cilium-test-2/client-1 (10.42.1.9) -> cilium-io-http\n"
    )

    summary = parse_connectivity_test(text)

    assert (summary.summaries, summary.tests, summary.actions) == (2, 61, 410)
    assert (summary.failed_tests, summary.failed_actions, summary.warnings) == (1, 2, 1)
    assert summary.failed_test_names == ["to-fqdns"]
    assert not run(text).passed


def test_failure_report_ends_at_the_first_blank_line() -> None:
    report = fixture("connectivity_failure_cli_0.14.txt").replace("connectivity test failed: 2 tests failed\n", "")
    later_log = "\n[=] [cilium-test-2] Test [to-fqdns] [9/123]\n  [.] Action [to-fqdns/pod-to-world/http-0: a -> b]\n"

    summary = parse_connectivity_test(report + later_log)

    assert summary.failed_action_names == [
        "no-policies/pod-to-world/http-to-one.one.one.one-0",
        "no-policies/pod-to-world/https-to-one.one.one.one-0",
        "echo-ingress-l7/pod-to-pod-with-endpoints/curl-ipv4-1-public",
    ]


def test_final_error_line_alone_still_fails() -> None:
    verdict = run("🏃 Running tests...\nconnectivity test failed: 3 tests failed\n")

    assert messages(verdict)[0] == (
        "node k3s-cilium: check connectivity-test: expected failed tests 0, saw 3 (from the final error line)"
    )


def test_aborted_run_without_summary_is_not_found_and_shows_the_error() -> None:
    verdict = run(fixture("connectivity_aborted.txt"))

    assert messages(verdict) == [
        "node k3s-cilium: check connectivity-test: expected test summary "
        "('All N tests ... successful' or 'N/M tests failed'), saw only the error 'Error: Unable to deploy "
        "connectivity test: waiting for deployment cilium-test-1/client to become ready: context deadline exceeded'"
    ]


def test_empty_output_is_not_found() -> None:
    verdict = run("")

    assert messages(verdict) == [
        "node k3s-cilium: check connectivity-test: expected test summary "
        "('All N tests ... successful' or 'N/M tests failed'), saw nothing (not found in output)"
    ]


def test_too_few_tests_fails() -> None:
    verdict = run(fixture("connectivity_success_cli_0.14.txt"), {"minTests": 60})

    assert messages(verdict) == ["node k3s-cilium: check connectivity-test: expected tests run >= 60, saw 42"]


def test_tab_separated_summary_is_still_read() -> None:
    text = "✅\tAll 42 tests (300 actions) successful, 10 tests skipped, 1 scenarios skipped.\n"

    assert parse_connectivity_test(text).tests == 42
