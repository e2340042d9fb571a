"""Boot and tear down the lab's QEMU hosts and the private L2 segment between them.

Network, all of it local to this machine:

- NIC1 of every host is QEMU user-mode networking with ``restrict=on`` (the guest
  cannot open a connection to anything outside QEMU) and forwards bound to
  127.0.0.1 only: SSH, and the K3s API on servers.
- NIC2 of every host is plugged into a ``vde_switch`` whose only port is a unix
  socket directory in the run directory: the hosts' private L2 segment
  (192.168.56.0/24 inside the guests), which exists nowhere but in those
  processes.

Every process this module starts is recorded (pid and command line) in the run
directory's ``state.json``; ``down`` stops exactly those, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths

L2_NETWORK = "192.168.56"
L2_PREFIX = 24
FIRST_HOST_OCTET = 10
GUEST_MEMORY_MB = 2048
# A kernel that runs under KVM prints "Linux version" in well under a second.
KVM_PROBE_SECONDS = 20.0
SSH_WAIT_SECONDS = 300.0


@dataclass
class Host:
    name: str
    role: str  # server | agent
    index: int
    ssh_port: int
    api_port: int | None
    l2_address: str
    dir: str
    host_key: str = ""
    pid: int | None = None
    emulation: str = ""  # kvm | tcg
    boot_seconds: float | None = None
    ssh_seconds: float | None = None
    system_state: str = ""

    @property
    def mac1(self) -> str:
        return f"52:54:00:00:00:{self.index + 1:02x}"

    @property
    def mac2(self) -> str:
        return f"52:54:00:56:00:{self.index + 1:02x}"

    @property
    def serial_log(self) -> Path:
        return Path(self.dir) / "serial.log"


@dataclass
class LabState:
    run_dir: str
    image_dir: str
    hosts: list[Host] = field(default_factory=list)
    switch_pid: int | None = None
    emulation: str = ""
    emulation_note: str = ""

    @property
    def state_file(self) -> Path:
        return Path(self.run_dir) / "state.json"

    @property
    def known_hosts(self) -> Path:
        return Path(self.run_dir) / "known_hosts"

    @property
    def switch_dir(self) -> Path:
        return Path(self.run_dir) / "l2.vde"

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, run_dir: Path) -> LabState | None:
        try:
            data = json.loads((run_dir / "state.json").read_text())
        except FileNotFoundError:
            return None
        hosts = [Host(**h) for h in data.pop("hosts")]
        return cls(hosts=hosts, **data)


def free_port(wanted: int = 0) -> int:
    """``wanted`` when it is free on 127.0.0.1, else a TCP port nothing listens on right now."""
    if wanted:
        try:
            return free_port_exactly(wanted)
        except OSError:
            pass
    return free_port_exactly(0)


def free_port_exactly(wanted: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", wanted))
        port: int = sock.getsockname()[1]
        return port


def plan_hosts(run_dir: Path, servers: int, agents: int) -> list[Host]:
    roles = [("server", i + 1) for i in range(servers)] + [("agent", i + 1) for i in range(agents)]
    hosts = []
    for index, (role, number) in enumerate(roles):
        name = f"{role}-{number}"
        hosts.append(
            Host(
                name=name,
                role=role,
                index=index,
                ssh_port=free_port(),
                # The first server's API on 127.0.0.1:6443 when free: what a kubeconfig for
                # https://127.0.0.1:6443 (the first server's SSH address) reaches.
                api_port=(free_port(6443) if index == 0 else free_port()) if role == "server" else None,
                l2_address=f"{L2_NETWORK}.{FIRST_HOST_OCTET + index}",
                dir=str(run_dir / name),
            )
        )
    return hosts


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ours(pid: int | None, run_dir: str) -> bool:
    """Whether ``pid`` is still a process this lab started (its command line names the run directory)."""
    return pid is not None and run_dir in _cmdline(pid)


def stop(pid: int | None, run_dir: str, grace: float = 5.0) -> None:
    if not ours(pid, run_dir):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and ours(pid, run_dir):
        time.sleep(0.1)
    if ours(pid, run_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Reap it when it is our child; otherwise init does.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def start_switch(state: LabState) -> None:
    """The private L2 segment: a vde_switch reachable only through its unix socket directory."""
    switch = shutil.which("vde_switch")
    if not switch:
        raise RuntimeError("vde_switch is not installed (apt-get install vde2)")
    pidfile = Path(state.run_dir) / "vde_switch.pid"
    log = Path(state.run_dir) / "vde_switch.log"
    # No pipes: the daemon keeps its stdio, and dies of SIGPIPE once a pipe's reader is gone.
    with open(log, "wb") as out:
        subprocess.run(
            [switch, "--sock", str(state.switch_dir), "--daemon", "--pidfile", str(pidfile), "--mode", "0700"],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        if time.monotonic() > deadline:
            raise RuntimeError(f"vde_switch wrote no pid file: {log.read_text(errors='replace').strip()}")
        time.sleep(0.1)
    state.switch_pid = int(pidfile.read_text().strip())
    state.save()


def qemu_argv(state: LabState, host: Host, accel: str) -> list[str]:
    image = Path(state.image_dir)
    hdir = Path(host.dir)
    fwd = f"hostfwd=tcp:127.0.0.1:{host.ssh_port}-:22"
    if host.api_port:
        fwd += f",hostfwd=tcp:127.0.0.1:{host.api_port}-:6443"
    # -arch-capabilities: with it QEMU 7.2 aborts on some nested hosts ("failed to set MSR 0x10a").
    accel_args = (
        ["-accel", "kvm", "-cpu", "host,-arch-capabilities"]
        if accel == "kvm"
        else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    )
    return [
        "qemu-system-x86_64",
        "-name",
        f"lab-{host.name}",
        *accel_args,
        "-machine",
        "q35",
        "-smp",
        "2",
        "-m",
        str(GUEST_MEMORY_MB),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        f"file:{host.serial_log}",
        "-kernel",
        str(image / "vmlinuz"),
        "-initrd",
        str(image / "initrd.img"),
        "-append",
        "root=/dev/vda rw console=ttyS0,115200 quiet systemd.show_status=1 net.ifnames=1",
        "-drive",
        f"file={hdir / 'root.qcow2'},if=virtio,format=qcow2,cache=unsafe",
        "-drive",
        f"file={hdir / 'seed.img'},if=virtio,format=raw,readonly=on",
        "-netdev",
        f"user,id=n1,restrict=on,{fwd}",
        "-device",
        f"virtio-net-pci,netdev=n1,mac={host.mac1}",
        "-netdev",
        f"vde,id=n2,sock={state.switch_dir}",
        "-device",
        f"virtio-net-pci,netdev=n2,mac={host.mac2}",
        "-device",
        "virtio-rng-pci",
        "-pidfile",
        str(hdir / "qemu.pid"),
    ]


def prepare_disks(state: LabState, host: Host, build_script: Path) -> None:
    hdir = Path(host.dir)
    hdir.mkdir(parents=True, exist_ok=True)
    base = Path(state.image_dir) / "disk.raw"
    (hdir / "root.qcow2").unlink(missing_ok=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(hdir / "root.qcow2")],
        check=True,
    )
    subprocess.run(
        [
            str(build_script),
            "seed",
            host.name,
            f"{host.l2_address}/{L2_PREFIX}",
            host.mac1,
            host.mac2,
            str(hdir / "seed.img"),
        ],
        check=True,
    )
    keydir = paths.cache_dir() / "hostkeys" / host.name
    host.host_key = " ".join((keydir / "ssh_host_ed25519_key.pub").read_text().split()[:2])


def launch(state: LabState, host: Host, accel: str) -> subprocess.Popen[bytes]:
    host.serial_log.unlink(missing_ok=True)
    log = open(Path(host.dir) / "qemu.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        qemu_argv(state, host, accel),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    host.pid = proc.pid
    host.emulation = accel
    state.save()
    return proc


def serial_text(host: Host) -> str:
    try:
        return host.serial_log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def kvm_probe(state: LabState, host: Host) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Boot ``host`` under KVM: the running process when its console shows life in time, else None and why.

    A standard kernel under nested KVM on some machines hangs right after the boot loader, printing nothing.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return None, "no usable /dev/kvm"
    proc = launch(state, host, "kvm")
    deadline = time.monotonic() + KVM_PROBE_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (Path(host.dir) / "qemu.log").read_text(errors="replace").strip()
            host.pid = None
            return None, f"qemu -accel kvm exited with {proc.returncode}: {log[-300:]}"
        # The initramfs and systemd print even with `quiet`; a hung kernel prints nothing at all.
        if serial_text(host).strip():
            return proc, "the guest printed on its console under KVM"
        time.sleep(0.5)
    stop(proc.pid, state.run_dir)
    host.pid = None
    return None, f"no console output within {KVM_PROBE_SECONDS:.0f} s under KVM (nested virtualization hang)"


def ssh_base(state: LabState, host: Host, known_hosts: Path | None = None) -> list[str]:
    """ssh to ``host`` as root, its key pinned; one multiplexed connection per host (key exchange is slow on TCG).

    With another ``known_hosts`` the command opens its own connection, so the pin is checked afresh.
    """
    control = ["-o", "ControlPath=none"]
    if known_hosts is None:
        control = [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={Path(state.run_dir) / ('ssh-' + host.name + '.sock')}",
            "-o",
            "ControlPersist=600",
        ]
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(paths.lab_key()),
        "-p",
        str(host.ssh_port),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts or state.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=30",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "LogLevel=ERROR",
        *control,
        "root@127.0.0.1",
    ]


def close_ssh(state: LabState, host: Host) -> None:
    """End the host's multiplexing master, if one runs."""
    if (Path(state.run_dir) / f"ssh-{host.name}.sock").exists():
        subprocess.run([*ssh_base(state, host)[:-1], "-O", "exit", "root@127.0.0.1"], capture_output=True, timeout=30)


def write_known_hosts(state: LabState) -> None:
    lines = [f"[127.0.0.1]:{h.ssh_port} {h.host_key}" for h in state.hosts]
    state.known_hosts.write_text("\n".join(lines) + "\n")


def wait_for_ssh(state: LabState, host: Host, started: float, timeout: float = SSH_WAIT_SECONDS) -> None:
    """Until ``host`` answers over SSH with its pinned key and systemd finished booting."""
    deadline = started + timeout
    while True:
        if not ours(host.pid, state.run_dir):
            raise RuntimeError(f"{host.name}: qemu exited; console tail:\n{serial_text(host)[-1500:]}")
        result = subprocess.run(
            [*ssh_base(state, host), "systemctl is-system-running --wait"],
            capture_output=True,
            text=True,
            timeout=SSH_WAIT_SECONDS,
        )
        if result.returncode in (0, 1) and result.stdout.strip():
            host.system_state = result.stdout.strip()
            host.ssh_seconds = round(time.monotonic() - started, 1)
            host.boot_seconds = host.ssh_seconds
            return
        if "Host key verification failed" in result.stderr or "REMOTE HOST IDENTIFICATION" in result.stderr:
            raise RuntimeError(f"{host.name}: the host key does not match the pinned one: {result.stderr.strip()}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{host.name}: no SSH within {timeout:.0f} s ({result.stderr.strip()}); console tail:\n"
                f"{serial_text(host)[-1500:]}"
            )
        time.sleep(2)


def _probe_key() -> str:
    """What decides whether KVM works: this machine's kernel, QEMU's version and the guest image."""
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"{os.uname().release} | {qemu}"


def _probe_file() -> Path:
    return paths.cache_dir() / "kvm-probe.json"


def _cached_probe() -> tuple[bool, str] | None:
    try:
        data = json.loads(_probe_file().read_text())
    except (FileNotFoundError, ValueError):
        return None
    if data.get("key") != _probe_key():
        return None
    return bool(data["ok"]), str(data["why"])


def _cache_probe(ok: bool, why: str) -> None:
    _probe_file().write_text(json.dumps({"key": _probe_key(), "ok": ok, "why": why}) + "\n")


def boot(state: LabState, accel: str, build_script: Path, progress: Callable[[str], None]) -> None:
    """Start the switch and every host (in parallel), and wait until each answers over SSH."""
    start_switch(state)
    for host in state.hosts:
        prepare_disks(state, host, build_script)
    write_known_hosts(state)
    chosen = accel
    started = time.monotonic()
    first: subprocess.Popen[bytes] | None = None
    known = _cached_probe()
    if accel == "auto" and known is not None and not known[0]:
        chosen = "tcg"
        state.emulation_note = f"KVM probe (cached in {_probe_file()}): {known[1]}"
        progress(f"{state.emulation_note}; using TCG")
    elif accel == "auto":
        first, why = kvm_probe(state, state.hosts[0])
        _cache_probe(first is not None, why)
        chosen = "kvm" if first else "tcg"
        state.emulation_note = f"KVM probe: {why}"
        progress(f"KVM probe: {why}; using {chosen.upper()}")
        if first is None:
            # Start over from a fresh overlay: the probe may have written to it.
            prepare_disks(state, state.hosts[0], build_script)
            started = time.monotonic()
    state.emulation = chosen
    for host in state.hosts:
        if first is None or host is not state.hosts[0]:
            launch(state, host, chosen)
    for host in state.hosts:
        wait_for_ssh(state, host, started)
        progress(f"{host.name}: SSH up after {host.ssh_seconds} s ({host.system_state}, {chosen.upper()})")
    state.save()


def teardown(state: LabState) -> list[str]:
    """Stop every process the lab started and remove the run directory; returns what went wrong."""
    problems = []
    for host in state.hosts:
        close_ssh(state, host)
        stop(host.pid, state.run_dir)
        if ours(host.pid, state.run_dir):
            problems.append(f"{host.name}: qemu pid {host.pid} still running")
    stop(state.switch_pid, state.run_dir)
    if ours(state.switch_pid, state.run_dir):
        problems.append(f"vde_switch pid {state.switch_pid} still running")
    if not problems:
        shutil.rmtree(state.run_dir, ignore_errors=True)
    return problems


def running(state: LabState) -> Iterator[tuple[str, int | None, bool]]:
    yield "vde_switch", state.switch_pid, ours(state.switch_pid, state.run_dir)
    for host in state.hosts:
        yield host.name, host.pid, ours(host.pid, state.run_dir)


def ssh_run(
    state: LabState, host: Host, command: str, stdin: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on ``host``; a failure to connect (exit 255 from ssh itself) is retried twice."""
    for attempt in range(3):
        result = subprocess.run(
            [*ssh_base(state, host), command], input=stdin, capture_output=True, text=True, timeout=timeout
        )
        connect_failed = result.returncode == 255 and any(
            text in result.stderr for text in ("banner exchange", "Connection refused", "Connection reset", "timed out")
        )
        if not connect_failed or attempt == 2:
            return result
        time.sleep(3)
    raise AssertionError("unreachable")


def ssh_argv(state: LabState, host: Host) -> Sequence[str]:
    return ssh_base(state, host)
