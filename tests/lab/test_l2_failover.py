"""The L2 failover measurement's parts that need no cluster: the figures from a prober's samples, what
``ip`` and the Lease say, the prober itself against a local server, and its wiring to the program's plan."""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.cluster import l2_failover
from lab.cluster.chart import L2_ANNOUNCE_LABEL, program_plan, stack_config, write_stack
from lab.cluster.datapath import PHASES, failover_summary, l2_target, lease_timings
from lab.cluster.l2_failover import Sample, analyse

OLD, NEW = "aa:aa:aa:aa:aa:01", "aa:aa:aa:aa:aa:02"
REPO = Path(__file__).resolve().parents[2]


def timeline(*parts: tuple[float, float, bool, str | None], step: float = 0.2, took: float = 0.01) -> list[Sample]:
    """Samples every ``step`` s from each part's start to its end, all ok or all timing out (1 s)."""
    samples = []
    for start, end, ok, mac in parts:
        t = start
        while t < end - 1e-9:
            ended = t + (took if ok else 1.0)
            detail = "smoke-pod-a" if ok else "timed out"
            samples.append(Sample(t, ended, ok, 200 if ok else 0, detail, mac, "REACHABLE"))
            t = ended if not ok else t + step
    return samples


def test_the_outage_runs_from_the_last_answer_before_the_failure_to_the_first_from_the_new_holder() -> None:
    samples = timeline((0.0, 10.0, True, OLD), (10.0, 15.0, False, OLD), (15.0, 40.0, True, NEW))
    figures = analyse(samples, failed_at=10.05, old_mac=OLD, new_mac=NEW)
    # The last answer before: the request started at 9.8 s, ended 9.81 s; the first after: 15.0-15.01 s.
    assert figures["lastAnswerBeforeFailure"] == pytest.approx(9.81 - 10.05, abs=1e-3)
    assert figures["firstAnswerSeconds"] == pytest.approx(15.01 - 10.05, abs=1e-3)
    assert figures["outageSeconds"] == pytest.approx(15.01 - 9.81, abs=1e-3)
    assert figures["failedDuringOutage"] == 5  # 10.0, 11.0, ... 14.0: each timed out after 1 s
    assert figures["longestGapSeconds"] == figures["outageSeconds"]
    assert figures["duringOutage"]["requests"] == 4 and figures["duringOutage"]["answered"] == 0
    assert figures["beforeFailure"] == {"requests": 51, "answered": 50, "withOldMac": 50}
    assert figures["answeredByOldMacAfterFailure"] == 0
    after = figures["afterRecovery"]
    assert after["windowSeconds"] == 20.0
    assert after["answered"] == after["requests"] == 100 and after["ratio"] == 1.0
    assert after["macs"] == {NEW: 100}


def test_requests_to_an_unreachable_backend_lower_the_ratio_after_recovery_and_are_reported() -> None:
    # After the failover every other request goes to the backend on the failed node and times out.
    recovered: list[Sample] = []
    t = 6.0
    while t < 40.0:
        ok = len(recovered) % 2 == 0
        recovered.append(
            Sample(t, t + (0.01 if ok else 1.0), ok, 200 if ok else 0, "pod-b" if ok else "timed out", NEW, "REACHABLE")
        )
        t += 0.2 if ok else 1.0
    samples = timeline((0.0, 2.0, True, OLD), (2.0, 6.0, False, OLD)) + recovered
    figures = analyse(samples, failed_at=2.0, old_mac=OLD, new_mac=NEW, window=12.0)
    assert figures["firstAnswerSeconds"] == pytest.approx(4.01, abs=1e-3)
    after = figures["afterRecovery"]
    # Started within 12 s after the first answer (6.01 s): 6.2 (fail), 7.2 (ok), 7.4 (fail), ...
    assert after["requests"] == 20 and after["answered"] == 10 and after["ratio"] == 0.5
    assert after["backends"] == {"pod-b": 10}
    assert after["failures"] == {"timed out": 10}


def test_an_answer_with_the_old_mac_is_not_the_failover_and_is_counted() -> None:
    # Requests answered after the failure while the neighbour entry still names the failed holder: the
    # frames flooded to the other nodes, which answered (one of them twice: the connection was reset).
    third = "aa:aa:aa:aa:aa:03"
    samples = [
        *timeline((0.0, 2.0, True, OLD)),
        Sample(2.1, 2.11, True, 200, "pod-a", OLD, "REACHABLE", 40001, (NEW,)),
        Sample(2.3, 2.31, False, 0, "[Errno 104] Connection reset by peer", OLD, "REACHABLE", 40002, (NEW, third)),
        Sample(2.5, 3.5, False, 0, "timed out", OLD, "STALE", 40003, ()),
        Sample(3.5, 3.51, True, 200, "pod-a", NEW, "REACHABLE", 40004, (NEW,)),
    ]
    figures = analyse(samples, failed_at=2.0, old_mac=OLD, new_mac=NEW)
    assert figures["answeredByOldMacAfterFailure"] == 1
    assert figures["firstAnswerSeconds"] == pytest.approx(1.51, abs=1e-3)
    assert figures["outageSeconds"] == pytest.approx(3.51 - 1.81, abs=1e-3)
    # No answer from 2.11 s to 3.51 s.
    assert figures["longestGapSeconds"] == pytest.approx(1.4, abs=1e-3)
    assert figures["duringOutage"]["sources"] == {NEW: 1, f"{NEW},{third}": 1, "none": 1}
    assert figures["duringOutage"]["failures"] == {"[Errno 104] Connection reset by peer": 1, "timed out": 1}


def test_an_address_that_never_answers_again_has_no_failover_figures_but_what_was_seen() -> None:
    samples = timeline((0.0, 2.0, True, OLD), (2.0, 8.0, False, OLD))
    figures = analyse(samples, failed_at=2.0, old_mac=OLD, new_mac=None)
    assert figures["firstAnswerSeconds"] is None and figures["outageSeconds"] is None
    assert figures["afterRecovery"] is None
    assert figures["afterFailure"] == {
        "requests": 6,
        "answered": 0,
        "ratio": 0.0,
        "backends": {},
        "failures": {"timed out": 6},
        "macs": {OLD: 6},
        "sources": {"none": 6},
    }


def test_what_ip_and_the_lease_say_is_read() -> None:
    shown = '[{"dst":"10.99.0.206","dev":"lab0","lladdr":"9a:1b:2c:3d:4e:5f","state":["REACHABLE"]}]'
    assert l2_failover.parse_neighbour(shown) == ("9a:1b:2c:3d:4e:5f", "REACHABLE")
    # An entry being resolved has no lladdr yet; no entry at all, or no output.
    assert l2_failover.parse_neighbour('[{"dst":"10.99.0.206","dev":"lab0","state":["INCOMPLETE"]}]') == (
        None,
        "INCOMPLETE",
    )
    assert l2_failover.parse_neighbour("[]") == (None, "")
    assert l2_failover.parse_neighbour("") == (None, "")
    link = '[{"ifindex":2,"ifname":"eth0","address":"4a:00:00:00:00:11","broadcast":"ff:ff:ff:ff:ff:ff"}]'
    assert l2_failover.parse_link_mac(link) == "4a:00:00:00:00:11"
    assert l2_failover.micro_time("2026-12-03T10:00:01.250000Z") == pytest.approx(1796292001.25)
    assert l2_failover.micro_time(None) is None
    assert l2_failover.docs_bound(5.0, 3.0) == (2.0, 8.0)


def test_a_line_cut_short_when_the_prober_stopped_is_left_out() -> None:
    sample = Sample(1.0, 1.1, True, 200, "p", None, "", 40000, (NEW, OLD))
    line = json.dumps(dataclasses.asdict(sample))
    assert l2_failover.read_samples([line, line[:20]]) == [sample]


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"smoke-pod-a\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def stop_after(requests: int) -> Callable[[], bool]:
    asked = iter(range(requests + 1))
    return lambda: next(asked) == requests


def test_the_prober_records_who_answered_and_why_a_request_failed(server: int) -> None:
    out = io.StringIO()
    l2_failover.probe(f"127.0.0.1:{server}", 0.05, 1.0, out, stop_after(3))
    samples = l2_failover.read_samples(out.getvalue().splitlines())
    assert [(s.ok, s.code, s.detail, s.sources) for s in samples] == [(True, 200, "smoke-pod-a", ())] * 3
    assert all(s.started <= s.ended for s in samples)
    assert samples[1].started - samples[0].started >= 0.05
    # Each request on a connection of its own, its local port known.
    assert len({s.port for s in samples}) == 3 and all(s.port > 0 for s in samples)
    code, detail, port = l2_failover.request("127.0.0.1:1", 1.0)
    assert code == 0 and "refused" in detail.lower() and port > 0


def test_a_request_gives_up_after_its_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        started = time.monotonic()
        code, detail, _ = l2_failover.request(f"127.0.0.1:{silent.getsockname()[1]}", 0.3)
        took = time.monotonic() - started
    assert (code, detail) == (0, "timed out")
    assert 0.3 <= took < 0.6


def test_an_http_response_gives_its_status_and_the_first_line_of_its_body() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nsmoke-pod-a\n"
    assert l2_failover.parse_response(answer) == (200, "smoke-pod-a")
    assert l2_failover.parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\n") == (503, "")
    assert l2_failover.parse_response(b"")[0] == 0
    assert l2_failover.parse_response(b"SSH-2.0-OpenSSH_9.2\r\n")[0] == 0


def tcp_frame(source_mac: str, source: str, source_port: int, destination_port: int, options: int = 0) -> bytes:
    ethernet = bytes(6) + bytes.fromhex(source_mac.replace(":", "")) + b"\x08\x00"
    ihl = 5 + options
    ip = bytes([0x40 | ihl, 0]) + bytes(7) + b"\x06" + bytes(2) + bytes(map(int, source.split("."))) + bytes(4)
    ip += bytes(4 * options)
    tcp = source_port.to_bytes(2, "big") + destination_port.to_bytes(2, "big") + bytes(16)
    return ethernet + ip + tcp


def test_a_frame_from_the_address_names_the_node_that_sent_it() -> None:
    frame = tcp_frame(NEW, "10.99.0.206", 80, 41234)
    assert l2_failover.parse_frame(frame) == (NEW, "10.99.0.206", 80, 41234)
    # IP options move the TCP header.
    assert l2_failover.parse_frame(tcp_frame(OLD, "10.99.0.206", 80, 5000, options=2)) == (OLD, "10.99.0.206", 80, 5000)
    udp = frame[:23] + b"\x11" + frame[24:]
    arp = frame[:12] + b"\x08\x06" + frame[14:]
    assert l2_failover.parse_frame(udp) is None and l2_failover.parse_frame(arp) is None
    assert l2_failover.parse_frame(frame[:30]) is None


def test_the_prober_command_writes_a_line_per_request_until_sigterm(server: int) -> None:
    prober = subprocess.Popen(
        [sys.executable, "-m", "lab.cluster.l2_failover", "probe", "--target", f"127.0.0.1:{server}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert prober.stdout is not None
    first = prober.stdout.readline()
    time.sleep(0.5)
    prober.send_signal(signal.SIGTERM)
    rest, _ = prober.communicate(timeout=10)
    assert prober.returncode == 0
    samples = l2_failover.read_samples([first, *rest.splitlines()])
    assert len(samples) >= 3 and all(s.ok and s.detail == "smoke-pod-a" for s in samples)


def test_the_l2_phase_follows_kpr_and_its_target_is_the_programs_own(tmp_path: Path) -> None:
    names = [phase.name for phase in PHASES]
    l2 = PHASES[names.index("l2")]
    assert names[names.index("l2") - 1] == "kpr" and l2.tier == "kpr" and l2.required
    assert [phase.name for phase in PHASES if phase.l2] == ["l2"]
    nodes = [("server-1", "10.99.0.10"), ("agent-1", "10.99.0.11"), ("agent-2", "10.99.0.12")]
    config = stack_config("kpr", nodes, l2=True)
    key, value = L2_ANNOUNCE_LABEL
    assert config["k3s-cilium:loadBalancer"]["l2"]["nodeSelector"] == {key: value}
    assert config["k3s-cilium:verify"] == {"fromRunner": True}
    plan = program_plan(write_stack(tmp_path / "Pulumi.l2.yaml", config))
    target = l2_target(plan)
    # The last address but one of 10.99.0.200/29, and the lease Cilium names after the test Service.
    assert (target.address, target.port, target.url) == ("10.99.0.206", 80, "http://10.99.0.206:80/")
    assert target.lease == "cilium-l2announce-k3s-cilium-verify-smoke-lb"
    assert lease_timings(plan) == (5.0, 3.0)
    assert plan["ciliumValues"]["l2announcements"]["enabled"] is True


def test_the_summary_names_the_failover_figures() -> None:
    lines = failover_summary(
        {
            "address": "10.99.0.206",
            "holderBefore": "agent-1",
            "holderAfter": "agent-2",
            "macBefore": OLD,
            "macAfter": NEW,
            "leaseMovedSeconds": 4.512,
            "leaseSeenMovedSeconds": 4.7,
            "docsBoundSeconds": [2.0, 8.0],
            "firstAnswerSeconds": 4.9,
            "outageSeconds": 5.1,
            "afterRecovery": {"windowSeconds": 20.0, "requests": 60, "answered": 40, "ratio": 0.667, "failures": {}},
            "restore": {"node": "agent-1", "nodeLeaseRenewedSeconds": 2.0, "nodeReadySeconds": 2.1},
        }
    )
    text = "\n".join(lines)
    assert "holder agent-1 -> agent-2" in text and f"MAC {OLD} -> {NEW}" in text
    assert "lease moved 4.512 s" in text and "docs: 2.0-8.0 s" in text
    assert "first answer 4.9 s, outage 5.1 s" in text and "40/60 answered (ratio 0.667)" in text
    assert failover_summary({}) == []


@pytest.mark.root
def test_the_prober_names_who_sent_the_answers_frames(server: int) -> None:
    """On loopback every frame's source MAC is zero: the sniffer sees the server's frames to each connection."""
    if os.geteuid() != 0:
        pytest.fail("this test opens a packet socket: run it as root")
    sniffer = l2_failover.Sniffer("lo", "127.0.0.1", server)
    out = io.StringIO()
    try:
        l2_failover.probe(f"127.0.0.1:{server}", 0.05, 1.0, out, stop_after(2), sniffer)
    finally:
        sniffer.stop()
    samples = l2_failover.read_samples(out.getvalue().splitlines())
    assert [(s.ok, s.sources) for s in samples] == [(True, ("00:00:00:00:00:00",))] * 2
