"""The L2 announcement failover on the namespace cluster, measured from the lab's bridge namespace.

After a phase with ``loadBalancer.mode: l2`` has passed, the verification's LoadBalancer Service answers
on its fixed address through ARP from the bridge namespace (where a LAN client would be). Then:

1. the node holding the Service's lease (``cilium-l2announce-<namespace>-<service>`` in kube-system),
   ``H``, is read, and every node's ``eth0`` MAC;
2. a prober in the bridge namespace (``python -m lab.cluster.l2_failover probe``) sends
   ``GET http://<address>/`` every 0.2 s with a 1 s timeout and writes one JSON line per request: when
   it started and ended (``time.monotonic``, one clock for every process of the machine), its result,
   the backend pod that answered (the test server answers with its host name), the bridge
   namespace's neighbour entry of the address right after it (``ip -j neigh show``), and the source
   MACs of the frames that came back on the bridge for that connection (a packet socket on the
   bridge): which node answered, whatever the neighbour entry says;
3. ``H`` fails as the segment sees a dead node: its ``eth0`` goes down inside its namespace, so it
   neither answers ARP nor renews the lease;
4. the lease is polled until another node holds it, and the probes go on until a request started
   after the failure is answered with the new holder's MAC in the neighbour entry, then 20 s more;
5. ``H``'s ``eth0`` comes back up with the default route the kernel dropped with the link (what the
   host's network configuration would put back), and the lab waits until ``H``'s kubelet renews its
   node lease, the node is Ready and ``H``'s agent says it is healthy.

:func:`analyse` turns the samples into the figures: the outage, the first answer from the new holder,
the success ratio after it. A smoke pod on ``H`` is a backend the new holder cannot reach until
Kubernetes marks it not ready, so requests balanced to it fail: the ratio says how many.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import Cluster
    from .node import Node

REPO = Path(__file__).resolve().parents[2]
INTERVAL_SECONDS = 0.2
REQUEST_TIMEOUT_SECONDS = 1.0
# Probing before the failure, to see the address answer from the holder.
SETTLE_SECONDS = 3.0
# The success ratio is taken over this long after the first answer from the new holder.
WINDOW_SECONDS = 20.0
# Longest wait for the lease to move and the address to answer again after the failure.
COMEBACK_TIMEOUT_SECONDS = 60.0
RESTORE_TIMEOUT_SECONDS = 180.0
LEASE_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Sample:
    """One request of the prober."""

    started: float
    ended: float
    ok: bool
    code: int
    # The answering backend (the test server's host name) when ok, else why the request failed.
    detail: str
    # The bridge namespace's neighbour entry of the address right after the request.
    mac: str | None
    state: str
    # The connection's local port, and the source MACs of the frames from the address to it (empty
    # when the prober does not sniff).
    port: int = 0
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    address: str
    port: int
    lease: str
    lease_namespace: str = "kube-system"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/"


# --- pure: what the samples and the lease say ---------------------------------------------------


def parse_neighbour(text: str) -> tuple[str | None, str]:
    """MAC and state of the first entry of ``ip -j neigh show <address>`` (``None``, ``""`` without one)."""
    try:
        entries = json.loads(text or "[]")
    except json.JSONDecodeError:
        return None, ""
    if not entries:
        return None, ""
    entry = entries[0]
    return entry.get("lladdr"), ",".join(entry.get("state") or [])


def parse_link_mac(text: str) -> str | None:
    """The MAC of ``ip -j link show <device>``."""
    try:
        links = json.loads(text or "[]")
    except json.JSONDecodeError:
        return None
    return links[0].get("address") if links else None


def micro_time(text: str | None) -> float | None:
    """A Kubernetes MicroTime (``2026-12-03T10:00:01.123456Z``) as Unix seconds."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def docs_bound(duration: float, renew_deadline: float) -> tuple[float, float]:
    """The failover time Cilium's docs give (l2-announcements, "Leader election"): between
    leaseDuration - leaseRenewDeadline and leaseDuration + leaseRenewDeadline."""
    return duration - renew_deadline, duration + renew_deadline


def read_samples(lines: Iterable[str]) -> list[Sample]:
    """The prober's JSON lines; a last line cut short (the prober was stopped while writing) is left out."""
    samples = []
    for line in lines:
        try:
            fields = json.loads(line)
            samples.append(Sample(**{**fields, "sources": tuple(fields.get("sources") or ())}))
        except (json.JSONDecodeError, TypeError):
            continue
    return samples


def parse_response(data: bytes) -> tuple[int, str]:
    """An HTTP response's status and the first line of its body (0 and why when it is not one)."""
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        return 0, f"not an HTTP response: {data[:40]!r}"
    lines = body.decode(errors="replace").strip().splitlines()
    return int(status[1]), lines[0] if lines else ""


def parse_frame(frame: bytes) -> tuple[str, str, int, int] | None:
    """An Ethernet frame carrying IPv4 TCP: (source MAC, source address, source port, destination port)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    header = (frame[14] & 0x0F) * 4
    if len(frame) < 14 + header + 4:
        return None
    mac = ":".join(f"{b:02x}" for b in frame[6:12])
    address = ".".join(str(b) for b in frame[26:30])
    tcp = 14 + header
    return mac, address, int.from_bytes(frame[tcp : tcp + 2], "big"), int.from_bytes(frame[tcp + 2 : tcp + 4], "big")


def first_answer_after(samples: Sequence[Sample], failed_at: float, mac: str | None) -> Sample | None:
    """The first request started after ``failed_at`` that was answered, with ``mac`` (the new holder's) in
    the neighbour entry when given."""
    return next(
        (s for s in samples if s.started >= failed_at and s.ok and (mac is None or s.mac == mac)),
        None,
    )


def analyse(
    samples: Sequence[Sample],
    failed_at: float,
    old_mac: str | None,
    new_mac: str | None,
    window: float = WINDOW_SECONDS,
) -> dict[str, Any]:
    """The figures of one failover, from the prober's samples and the moment (``time.monotonic``) the
    holder failed. Seconds are rounded to milliseconds.

    - ``beforeFailure``: requests started before the failure, answered, and with the old holder's MAC;
    - ``lastAnswerBeforeFailure``: seconds from that last answer to the failure (negative: before);
    - ``firstAnswerSeconds``: from the failure to the end of the first answered request started after
      it with the new holder's MAC; ``None`` when there is none (the address did not come back);
    - ``outageSeconds``: from the last answer before the failure to that first answer;
      ``failedDuringOutage``: the requests that failed in it; ``duringOutage``: the requests started
      between the failure and that first answer, what became of them and who answered;
      ``longestGapSeconds``: the longest time without any answer in the outage;
    - ``answeredByOldMacAfterFailure``: answers after the failure while the neighbour entry still named
      the failed holder, whose link is down: another node took the frames (``sources`` says which);
    - ``afterRecovery``: the requests started within ``window`` seconds after the first answer: how many,
      how many answered, the ratio, which backends answered and why the others failed.
    """
    before = [s for s in samples if s.started < failed_at]
    answered_before = [s for s in before if s.ok]
    last_before = answered_before[-1] if answered_before else None
    first = first_answer_after(samples, failed_at, new_mac)
    figures: dict[str, Any] = {
        "requests": len(samples),
        "beforeFailure": {
            "requests": len(before),
            "answered": len(answered_before),
            "withOldMac": sum(1 for s in answered_before if s.mac == old_mac),
        },
        "lastAnswerBeforeFailure": _seconds(last_before.ended - failed_at) if last_before else None,
        "firstAnswerSeconds": None,
        "outageSeconds": None,
        "failedDuringOutage": None,
        "answeredByOldMacAfterFailure": sum(
            1 for s in samples if s.started >= failed_at and s.ok and old_mac is not None and s.mac == old_mac
        ),
        "afterRecovery": None,
    }
    if first is None:
        after = [s for s in samples if s.started >= failed_at]
        figures["afterFailure"] = _outcomes(after)
        return figures
    outage_from = last_before.ended if last_before else failed_at
    figures["firstAnswerSeconds"] = _seconds(first.ended - failed_at)
    figures["outageSeconds"] = _seconds(first.ended - outage_from)
    figures["failedDuringOutage"] = sum(1 for s in samples if outage_from <= s.started < first.started and not s.ok)
    figures["duringOutage"] = _outcomes([s for s in samples if failed_at <= s.started < first.started])
    answers = [outage_from, *(s.ended for s in samples if s.ok and outage_from < s.ended < first.ended), first.ended]
    figures["longestGapSeconds"] = _seconds(max(b - a for a, b in pairwise(answers)))
    recovery = [s for s in samples if first.ended <= s.started < first.ended + window]
    figures["afterRecovery"] = {
        "windowSeconds": window,
        **_outcomes(recovery),
        "coveredSeconds": _seconds(recovery[-1].started - first.ended) if recovery else 0.0,
    }
    return figures


def _outcomes(samples: Sequence[Sample]) -> dict[str, Any]:
    answered = [s for s in samples if s.ok]
    return {
        "requests": len(samples),
        "answered": len(answered),
        "ratio": round(len(answered) / len(samples), 3) if samples else None,
        "backends": dict(Counter(s.detail for s in answered)),
        "failures": dict(Counter(s.detail for s in samples if not s.ok)),
        "macs": dict(Counter(s.mac or "none" for s in samples)),
        # Who sent the frames back, per request (several: more than one node took the same SYN).
        "sources": dict(Counter(",".join(s.sources) or "none" for s in samples)),
    }


def _seconds(value: float) -> float:
    return round(value, 3)


# --- the prober (runs in the bridge namespace) --------------------------------------------------


def request(target: str, timeout: float) -> tuple[int, str, int]:
    """``GET http://<target>/`` within ``timeout`` seconds: the status and the body's first line, or 0 and
    why there is none; and the connection's local port (bound first, so a failed one has it too)."""
    host, _, port = target.rpartition(":")
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        local = int(sock.getsockname()[1])
        data = b""
        try:
            sock.settimeout(timeout)
            sock.connect((host, int(port)))
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {target}\r\n\r\n".encode())
            while chunk := _receive(sock, deadline):
                data += chunk
        except OSError as error:
            return 0, str(error) or type(error).__name__, local
    code, detail = parse_response(data)
    return code, detail, local


def _receive(sock: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    sock.settimeout(left)
    return sock.recv(4096)


class Sniffer:
    """The source MACs of the TCP frames from ``address``:``port`` on ``device``, by destination port."""

    def __init__(self, device: str, address: str, port: int) -> None:
        self.address, self.port = address, port
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        self._socket.bind((device, 0))
        self._socket.settimeout(0.1)
        self._seen: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._socket.recv(128)
            except TimeoutError:
                continue
            parsed = parse_frame(frame)
            if parsed and parsed[1] == self.address and parsed[2] == self.port:
                with self._lock:
                    self._seen.setdefault(parsed[3], set()).add(parsed[0])

    def take(self, local_port: int) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._seen.pop(local_port, ())))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


def neighbour(address: str) -> tuple[str | None, str]:
    shown = subprocess.run(["ip", "-j", "neigh", "show", address], capture_output=True, text=True)
    return parse_neighbour(shown.stdout)


def probe(
    target: str,
    interval: float,
    timeout: float,
    out: IO[str],
    stopped: Callable[[], bool],
    sniffer: Sniffer | None = None,
) -> None:
    """Requests every ``interval`` seconds (start to start) until ``stopped``, one JSON line each."""
    address = target.rpartition(":")[0]
    while not stopped():
        started = time.monotonic()
        code, detail, port = request(target, timeout)
        ended = time.monotonic()
        mac, state = neighbour(address)
        sources = sniffer.take(port) if sniffer else ()
        sample = Sample(started, ended, 200 <= code < 300, code, detail, mac, state, port, sources)
        out.write(json.dumps(asdict(sample)) + "\n")
        out.flush()
        time.sleep(max(0.0, started + interval - time.monotonic()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.cluster.l2_failover")
    commands = parser.add_subparsers(dest="command", required=True)
    prober = commands.add_parser("probe", help="GET the address until SIGTERM, one JSON line per request")
    prober.add_argument("--target", required=True, help="ip:port")
    prober.add_argument("--interval", type=float, default=INTERVAL_SECONDS)
    prober.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_SECONDS)
    prober.add_argument("--device", help="sniff the answers' source MACs on this device (needs CAP_NET_RAW)")
    args = parser.parse_args(argv)
    stop = False

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    address, _, port = args.target.rpartition(":")
    sniffer = Sniffer(args.device, address, int(port)) if args.device else None
    try:
        probe(args.target, args.interval, args.timeout, sys.stdout, lambda: stop, sniffer)
    finally:
        if sniffer:
            sniffer.stop()
    return 0


# --- the measurement (the lab's side) -----------------------------------------------------------


class Prober:
    """The prober as a process in the lab's namespace ``netns``, writing its samples of ``target`` (ip:port) to
    ``path``; with ``device``, it also sniffs the answers' source MACs there."""

    def __init__(self, netns: str, target: str, path: Path, device: str | None = None) -> None:
        self.path, self.log = path, path.with_suffix(".log")
        self._out, self._err = path.open("w"), self.log.open("w")
        command = ["ip", "netns", "exec", netns, sys.executable, "-m", "lab.cluster.l2_failover", "probe"]
        command += ["--target", target, *(["--device", device] if device else [])]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self._out, stderr=self._err)

    def samples(self) -> list[Sample]:
        return read_samples(self.path.read_text().splitlines())

    def stop(self) -> list[Sample]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()
        self._err.close()
        return self.samples()

    def said(self) -> str:
        """The end of what the prober wrote on stderr."""
        return self.log.read_text()[-500:].strip() if self.log.exists() else ""


def lease(cluster: Cluster, target: Target) -> dict[str, Any]:
    got = cluster.plane.kubectl("-n", target.lease_namespace, "get", "lease", target.lease, "-o", "json")
    if got.returncode:
        return {}
    spec: dict[str, Any] = json.loads(got.stdout).get("spec") or {}
    return spec


def eth0_mac(member: Node) -> str | None:
    shown = subprocess.run(["ip", "-n", member.netns, "-j", "link", "show", "eth0"], capture_output=True, text=True)
    return parse_link_mac(shown.stdout)


def bridge_neighbour(cluster: Cluster, address: str) -> dict[str, Any]:
    shown = subprocess.run(
        ["ip", "-n", cluster.lab_netns, "neigh", "show", address], capture_output=True, text=True
    ).stdout.strip()
    listed = subprocess.run(
        ["ip", "-n", cluster.lab_netns, "-j", "neigh", "show", address], capture_output=True, text=True
    ).stdout
    mac, state = parse_neighbour(listed)
    return {"shown": shown, "mac": mac, "state": state}


def bridge_fdb(cluster: Cluster, mac: str | None) -> list[str]:
    """The bridge's forwarding entries of ``mac`` (``bridge fdb show``): where the switch sends frames to it."""
    from .cluster import BRIDGE

    shown = subprocess.run(
        ["bridge", "-n", cluster.lab_netns, "fdb", "show", "br", BRIDGE], capture_output=True, text=True
    ).stdout
    return [line.strip() for line in shown.splitlines() if mac and line.startswith(mac)]


def measure(
    cluster: Cluster, target: Target, timings: tuple[float, float], samples_file: Path, figures: dict[str, Any]
) -> None:
    """Fail the lease holder, measure the failover into ``figures`` (kept when it fails), and bring the
    holder back whatever happened. StepFailed with what was seen when the address did not answer again
    or the holder did not come back. ``timings``: the lease duration and renew deadline, in seconds."""
    from ..report import StepFailed
    from .cluster import BRIDGE, GATEWAY

    held = lease(cluster, target)
    holder = held.get("holderIdentity")
    members = {m.name: m for m in cluster.members}
    if holder not in members:
        raise StepFailed(f"lease {target.lease_namespace}/{target.lease}: holder {holder!r} is not a node ({held})")
    failing = members[holder]
    macs = {name: eth0_mac(member) for name, member in members.items()}
    lo, hi = docs_bound(*timings)
    figures |= {
        "address": target.address,
        "lease": f"{target.lease_namespace}/{target.lease}",
        "leaseBefore": held,
        "holderBefore": holder,
        "macs": macs,
        "neighbourBefore": bridge_neighbour(cluster, target.address),
        "failure": f"`ip link set eth0 down` in {holder}'s network namespace ({failing.netns}), "
        f"seen from the bridge {BRIDGE}'s namespace ({cluster.lab_netns})",
        "samplesFile": samples_file.name,
        "intervalSeconds": INTERVAL_SECONDS,
        "requestTimeoutSeconds": REQUEST_TIMEOUT_SECONDS,
        "docsBoundSeconds": [lo, hi],
    }
    prober = Prober(cluster.lab_netns, f"{target.address}:{target.port}", samples_file, BRIDGE)
    link_down = False
    try:
        time.sleep(SETTLE_SECONDS)
        settled = prober.samples()
        if not any(s.ok for s in settled):
            raise StepFailed(
                f"{target.url} did not answer from the bridge namespace before the failure: "
                f"{dict(Counter(s.detail for s in settled)) or 'no request made'} {prober.said()}"
            )
        figures["fdbBefore"] = bridge_fdb(cluster, macs[holder])
        failed_at, failed_at_wall = time.monotonic(), time.time()
        subprocess.run(["ip", "-n", failing.netns, "link", "set", "eth0", "down"], check=True, capture_output=True)
        link_down = True
        figures["failedAt"] = {
            "monotonic": failed_at,
            "utc": datetime.fromtimestamp(failed_at_wall, UTC).isoformat(timespec="microseconds"),
        }
        # The lease cannot move before leaseDuration - leaseRenewDeadline: time to see what the switch did.
        time.sleep(1.0)
        figures["fdbOneSecondAfter"] = bridge_fdb(cluster, macs[holder])
        moved, answered, figures["leasePolls"] = wait_for_failover(cluster, target, prober, holder, macs, failed_at)
        if moved is not None:
            seen_at, now_held = moved
            acquired = micro_time(now_held.get("acquireTime"))
            figures |= {
                "holderAfter": now_held.get("holderIdentity"),
                "leaseAfter": now_held,
                # The new holder's acquireTime against the failure: one clock, this machine's.
                "leaseMovedSeconds": _seconds(acquired - failed_at_wall) if acquired else None,
                "leaseSeenMovedSeconds": _seconds(seen_at - failed_at),
            }
        if answered is not None:
            # The ratio after recovery needs its window of requests.
            time.sleep(max(0.0, answered.ended + WINDOW_SECONDS + INTERVAL_SECONDS - time.monotonic()))
        samples = prober.stop()
        figures["neighbourAfter"] = bridge_neighbour(cluster, target.address)
        figures |= analyse(samples, failed_at, macs[holder], macs.get(figures.get("holderAfter") or ""))
        figures["macBefore"], figures["macAfter"] = macs[holder], figures["neighbourAfter"]["mac"]
        lease_moved = figures.get("leaseMovedSeconds")
        figures["leaseMovedWithinDocsBound"] = lease_moved is not None and lo <= lease_moved <= hi
        if moved is None or figures["firstAnswerSeconds"] is None:
            raise StepFailed(
                f"{target.url} did not answer again within {COMEBACK_TIMEOUT_SECONDS:.0f} s of {holder} failing: "
                f"lease holder {lease(cluster, target).get('holderIdentity')!r} (was {holder!r}), "
                f"neighbour entry {figures['neighbourAfter']['shown']!r}, "
                f"requests after the failure: {figures.get('afterFailure')}"
            )
    finally:
        prober.stop()
        if link_down:
            figures["restore"] = restore(cluster, failing, GATEWAY)
    if "timedOut" in figures["restore"]:
        raise StepFailed(
            f"{holder} did not come back after its eth0 came up: {figures['restore']['timedOut']} "
            f"not reached within {RESTORE_TIMEOUT_SECONDS:.0f} s ({figures['restore']})"
        )


def wait_for_failover(
    cluster: Cluster,
    target: Target,
    prober: Prober,
    holder: str,
    macs: dict[str, str | None],
    failed_at: float,
) -> tuple[tuple[float, dict[str, Any]] | None, Sample | None, int]:
    """Poll the lease until another node holds it, then the samples until a request started after the
    failure is answered with that node's MAC. Returns (when the lease was seen moved, the lease), that
    answer, and how many times the lease was read."""
    moved: tuple[float, dict[str, Any]] | None = None
    answered: Sample | None = None
    polls = 0
    while time.monotonic() < failed_at + COMEBACK_TIMEOUT_SECONDS:
        if moved is None:
            polls += 1
            now_held = lease(cluster, target)
            if now_held.get("holderIdentity") not in (None, "", holder):
                moved = (time.monotonic(), now_held)
        if moved is not None:
            new_mac = macs.get(moved[1].get("holderIdentity") or "")
            answered = first_answer_after(prober.samples(), failed_at, new_mac)
            if answered is not None:
                break
        time.sleep(LEASE_POLL_SECONDS)
    return moved, answered, polls


def restore(cluster: Cluster, member: Node, gateway: str) -> dict[str, Any]:
    """``eth0`` up again with its default route, then until the node's kubelet renews its lease, the node
    is Ready and its Cilium agent says it is healthy."""
    started, started_wall = time.monotonic(), time.time()
    subprocess.run(["ip", "-n", member.netns, "link", "set", "eth0", "up"], check=True, capture_output=True)
    # Taking the link down removed the routes through it; the lab's own default route goes back, as a
    # host's network configuration puts it back. Cilium's routes to the other nodes are its own.
    subprocess.run(
        ["ip", "-n", member.netns, "route", "replace", "default", "via", gateway], check=True, capture_output=True
    )
    kubectl = cluster.plane.kubectl
    deadline = started + RESTORE_TIMEOUT_SECONDS
    done: dict[str, Any] = {"node": member.name}

    def renewed() -> bool:
        got = kubectl("-n", "kube-node-lease", "get", "lease", member.name, "-o", "jsonpath={.spec.renewTime}")
        renew = micro_time(got.stdout.strip()) if got.returncode == 0 else None
        return renew is not None and renew > started_wall

    def ready() -> bool:
        got = kubectl("get", "node", member.name, "-o", "json")
        conditions: list[dict[str, Any]] = (
            json.loads(got.stdout).get("status", {}).get("conditions", []) if got.returncode == 0 else []
        )
        status: dict[str, Any] = next((c for c in conditions if c["type"] == "Ready"), {})
        done["readyCondition"] = {k: status.get(k) for k in ("status", "reason", "lastTransitionTime")}
        return status.get("status") == "True"

    def agent_healthy() -> bool:
        on_node = f"spec.nodeName={member.name}"
        pods = kubectl(
            "-n", "kube-system", "get", "pods", "-l", "k8s-app=cilium", "--field-selector", on_node, "-o", "json"
        )
        items = json.loads(pods.stdout).get("items", []) if pods.returncode == 0 else []
        if not items:
            return False
        pod = items[0]
        done["agentRestarts"] = sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", []))
        agent = pod["metadata"]["name"]
        status = kubectl(
            "-n", "kube-system", "exec", agent, "-c", "cilium-agent", "--", "cilium-dbg", "status", "--brief"
        )
        done["agentStatus"] = (status.stdout or status.stderr).strip()
        return status.returncode == 0

    for name, condition in (("nodeLeaseRenewed", renewed), ("nodeReady", ready), ("agentHealthy", agent_healthy)):
        while not condition():
            if time.monotonic() > deadline:
                done["timedOut"] = name
                return done
            time.sleep(1)
        done[f"{name}Seconds"] = _seconds(time.monotonic() - started)
    return done


if __name__ == "__main__":
    raise SystemExit(main())
