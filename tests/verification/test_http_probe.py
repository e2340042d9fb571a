"""The runner's HTTP probe (verify.fromRunner) against servers this test starts on 127.0.0.1."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from verification import http_probe
from verification.parsers import parse_probe_lines


class Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (Answer,), {"status": getattr(request, "param", 200)})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_an_answering_address_is_ok_on_the_first_attempt(server):
    line = http_probe.probe("loadbalancer-from-runner", server, attempts=3, delay=0, timeout=2)
    assert line == f"probe=loadbalancer-from-runner target={server} result=ok code=200 attempts=1"


@pytest.mark.parametrize("server", [503], indirect=True)
def test_a_non_2xx_answer_fails_after_every_attempt(server):
    line = http_probe.probe("lb", server, attempts=2, delay=0, timeout=2)
    assert line == f"probe=lb target={server} result=fail code=503 attempts=2"


def test_nothing_listening_fails_with_the_reason_and_the_checks_parser_reads_it():
    target = closed_port()
    line = http_probe.probe("lb", target, attempts=2, delay=0, timeout=1)
    (probe,) = parse_probe_lines(line + "\n").probes
    assert (probe.name, probe.fields["target"], probe.fields["result"]) == ("lb", target, "fail")
    assert "refused" in probe.fields.get("detail", "").lower()
