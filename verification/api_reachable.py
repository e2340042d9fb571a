"""Does the Kubernetes API answer from where Pulumi runs? ``python -m verification.api_reachable``.

Synopsis::

    [<cluster CA PEM> |] python -m verification.api_reachable --endpoint <host> [--port 6443]
        [--timeout 10] [--attempts 3] [--delay 2] [--target <host> --via <user>@<host>:<port>]

The Kubernetes provider and the Helm release dial ``https://<endpoint>:6443``
directly from the machine that runs Pulumi; ``ssh.bastion`` carries only the
SSH commands. Without this check, an endpoint that machine cannot reach shows
up as a Helm release that times out after K3s is installed, leaving the
cluster without a CNI. This is a bounded TLS handshake: each attempt is cut
off after ``--timeout`` seconds, ``--attempts`` of them ``--delay`` seconds
apart (the API server just came up; a load balancer may take a moment).

With the cluster CA on stdin the handshake verifies the certificate chain and
that it names ``<endpoint>``, exactly as the provider will: an endpoint that
reaches something else (a wrong forward, another cluster) fails too, and is
not retried. Without it (empty stdin) any TLS server will do.

``--target``/``--via`` name the SSH local forward that fixes an unreachable
endpoint: ``ssh -N -L <port>:<target>:<port> -p <via port> <via user>@<via
host>``, with ``127.0.0.1`` as endpoint (K3s' serving certificate holds
127.0.0.1). The program passes the bastion as ``via`` and the first server as
``target``; without a bastion, the first server itself and ``127.0.0.1``.

Exit status 0: the endpoint answered (one line on stdout). 1: it did not; the
reason and the fix are on stderr. 2: bad usage or a CA that is not PEM.
Standard library only.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import ssl
import sys
import time
from collections.abc import Sequence

DEFAULT_PORT = 6443
DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 3
DEFAULT_DELAY = 2.0
PROG = "api-reachable"


class Unreachable(Exception):
    """One failed attempt; ``final`` when trying again cannot help (a certificate problem)."""

    def __init__(self, reason: str, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final


def _bracket(host: str) -> str:
    """``host`` for a URL or an ssh ``-L`` spec (IPv6 literals in brackets)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def url(host: str, port: int) -> str:
    return f"https://{_bracket(host)}:{port}"


def forward_command(target: str | None, port: int, via: str | None) -> str:
    """The ssh command that forwards local ``port`` to ``target:port`` through ``via`` (user@host:port)."""
    spec = f"{port}:{_bracket(target) if target else '<server>'}:{port}"
    if not via:
        return f"ssh -N -L {spec} <bastion>"
    login, _, ssh_port = via.rpartition(":")
    if not login:  # no port given
        login, ssh_port = via, ""
    user, _, host = login.rpartition("@")
    host = host.removeprefix("[").removesuffix("]")
    destination = f"{user}@{host}" if user else host
    return f"ssh -N -L {spec} -p {ssh_port} {destination}" if ssh_port else f"ssh -N -L {spec} {destination}"


def _context(ca: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        context.load_verify_locations(cadata=ca)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def handshake(host: str, port: int, timeout: float, context: ssl.SSLContext) -> None:
    """One TLS handshake, connect and handshake each bounded by ``timeout``."""
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return
    except socket.gaierror as error:
        raise Unreachable(f"cannot resolve {host} ({error.strerror})") from None
    except ssl.SSLCertVerificationError as error:
        raise Unreachable(f"its certificate is not valid for this cluster: {error.verify_message}", True) from None
    except TimeoutError:
        raise Unreachable(f"no TLS handshake within {timeout:g}s") from None
    except ConnectionRefusedError:
        raise Unreachable("connection refused") from None
    except ssl.SSLError as error:
        raise Unreachable(f"TLS handshake failed ({error.reason or error})") from None
    except OSError as error:
        raise Unreachable(error.strerror or str(error)) from None


def fix(host: str, port: int, reason: Unreachable, target: str | None, via: str | None) -> str:
    forward = forward_command(target, port, via)
    if reason.final:
        return (
            f"what answers there is not this cluster's API server (the certificate is not signed by the CA in the "
            f"cluster's kubeconfig, or does not name {host}). Point k3s.apiEndpoint, or the SSH forward "
            f"({forward}), at a server of this cluster."
        )
    if host == "127.0.0.1" or host == "::1" or host == "localhost":
        return (
            f"k3s.apiEndpoint is {host}: start the SSH local forward to a server first and keep it open while "
            f"Pulumi runs: {forward}"
        )
    return (
        "the Kubernetes provider and the Cilium Helm release connect to it from this machine (ssh.bastion carries "
        "only the SSH commands). Make it reachable from here (VPN, load balancer, a self-hosted runner), or run an "
        f"SSH local forward through the bastion to a server, `{forward}`, and set k3s.apiEndpoint to 127.0.0.1 "
        "(`pulumi config set --path k3s.apiEndpoint 127.0.0.1`; K3s' serving certificate holds 127.0.0.1), "
        "then run `pulumi up` again"
    )


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m verification.{PROG.replace('-', '_')}", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="the API server's host (k3s.apiEndpoint)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT, help="seconds per attempt")
    parser.add_argument("--attempts", type=int, choices=range(1, 101), default=DEFAULT_ATTEMPTS, metavar="N")
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY, help="seconds between attempts")
    parser.add_argument("--target", help="where the fix's SSH forward goes (a server, as the SSH hop sees it)")
    parser.add_argument("--via", help="the fix's SSH hop, user@host:port (the bastion, or the server itself)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ca = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read().strip()
    try:
        context = _context(ca)
    except (ssl.SSLError, ValueError) as error:
        print(f"{PROG}: stdin is not a PEM CA certificate: {error}", file=sys.stderr)
        return 2
    endpoint = url(args.endpoint, args.port)
    attempt = 0
    while True:
        attempt += 1
        try:
            handshake(args.endpoint, args.port, args.timeout, context)
        except Unreachable as problem:
            if problem.final or attempt >= args.attempts:
                tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                print(
                    f"{PROG}: the Kubernetes API at {endpoint} does not answer from where Pulumi runs "
                    f"({problem.reason}; {tries}): {fix(args.endpoint, args.port, problem, args.target, args.via)}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(args.delay)
            continue
        verified = "verified against the cluster CA" if ca else "certificate not verified: no CA given"
        print(f"{PROG}: {endpoint} answered the TLS handshake ({verified})")
        return 0


if __name__ == "__main__":
    sys.exit(main())
