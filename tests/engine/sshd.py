"""A real sshd on 127.0.0.1 for the engine tests, that lets through only the commands a test allows.

The program's commands would install K3s on the machine that runs the tests, so the server's
ForceCommand runs a command only when the test allowed it, and then in a mount namespace whose
/run is an empty tmpfs: the preflight finds no systemd there and stops, or, with ``systemd=True``,
finds the directory by which systemd says it runs and passes. Any other command is refused with
a line on stderr.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"

GATE = """#!/bin/bash
# Only the commands listed in {allowed} run, each in a mount namespace with a /run of its own.
if ! grep -qxF -- "$SSH_ORIGINAL_COMMAND" {allowed}; then
  echo "test sshd: refused to run '$SSH_ORIGINAL_COMMAND' on the machine running the tests" >&2
  exit 97
fi
exec unshare --mount bash -c 'mount -t tmpfs test-run /run && {run_dirs} exec bash -c "$SSH_ORIGINAL_COMMAND"'
"""
# sd_booted(3): systemd runs when /run/systemd/system exists.
SYSTEMD_RUNNING = "mkdir -p /run/systemd/system &&"


@dataclass
class SSHServer:
    port: int
    host_key: str  # authorized_keys form, as a stack pins it
    log: Path


def _free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])


@contextmanager
def sshd(
    directory: Path, client_public_key: Path, allowed: list[str], systemd: bool = False
) -> Iterator[SSHServer]:
    """sshd on 127.0.0.1 accepting ``client_public_key`` for root; it runs only ``allowed`` command lines."""
    if not Path(SSHD).exists() or os.geteuid() != 0:
        raise RuntimeError("the engine tests start sshd: they need root and openssh-server (run-tests.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    host_key = directory / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = directory / "authorized_keys"
    shutil.copy(client_public_key, authorized)
    allowed_file = directory / "allowed"
    allowed_file.write_text("".join(f"{line}\n" for line in allowed))
    gate = directory / "gate"
    gate.write_text(GATE.format(allowed=shlex.quote(str(allowed_file)), run_dirs=SYSTEMD_RUNNING if systemd else ""))
    gate.chmod(0o755)
    port = _free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nPidFile none\nForceCommand {gate}\n"
    )
    log = directory / "sshd.log"
    server = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    if conn.recv(8).startswith(b"SSH-"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port}: {log.read_text()}")
            time.sleep(0.05)
        public = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        yield SSHServer(port=port, host_key=public, log=log)
    finally:
        server.kill()
        server.wait()
