"""``python -m verification.http_probe --name <probe> --target <ip:port>``: one HTTP probe from here.

Prints the probe line ``python -m verification probes`` judges, the same one
``verify-probes.sh`` prints on the nodes::

    probe=<name> target=<ip:port> result=ok|fail code=<http code> attempts=<n> [detail=<text>]

Used where Pulumi runs (``verify.fromRunner``): the LoadBalancer test
Service's address must answer from outside the cluster too, which only an
announced (L2) or advertised (BGP) address does. A failed probe is a result,
not an error: the exit status is 0 after printing.
"""

from __future__ import annotations

import argparse
import http.client
import shlex
import time
from collections.abc import Sequence


def attempt(target: str, timeout: float) -> tuple[int, str]:
    """The HTTP status of ``GET http://<target>/`` (0 and why when there is none)."""
    host, _, port = target.rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status, ""
    except (OSError, http.client.HTTPException) as error:
        return 0, str(error) or type(error).__name__
    finally:
        connection.close()


def probe(name: str, target: str, attempts: int, delay: float, timeout: float) -> str:
    code, detail, made = 0, "", 0
    for made in range(1, attempts + 1):
        code, detail = attempt(target, timeout)
        if 200 <= code < 300:
            break
        if made < attempts:
            time.sleep(delay)
    result = "ok" if 200 <= code < 300 else "fail"
    line = f"probe={name} target={target} result={result} code={code:03d} attempts={made}"
    return f"{line} detail={shlex.quote(detail)}" if detail else line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verification.http_probe", description=__doc__)
    parser.add_argument("--name", required=True, help="the probe's name in the output")
    parser.add_argument("--target", required=True, help="ip:port ([ipv6]:port) to GET / from")
    parser.add_argument("--attempts", type=int, default=10)
    parser.add_argument("--delay", type=float, default=1.0, help="seconds between attempts")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per attempt")
    args = parser.parse_args(argv)
    print(probe(args.name, args.target, args.attempts, args.delay, args.timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
