"""The copy of the etcd snapshot to where Pulumi runs (k3s.upgrade.snapshotTo): snapshot-fetch.sh run for real
against a real sshd on 127.0.0.1 (tests/engine/sshd.py), with a passphrase-protected key and a pinned host key."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from components import remote
from components.scripts import ScriptValue, render
from tests.engine.sshd import sshd
from tests.shell import lint

PASSPHRASE = "snapshot-pass-4e1b"


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "client" / "id_ed25519"
    path.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(path)], check=True)
    return path


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "server" / "k3s-cilium-v1.33.3-k3s1-to-v1.34.1-k3s1-server-1-1764720000"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 1000)
    return path


def fetch(key: Path, params: dict[str, ScriptValue], passphrase: str = PASSPHRASE) -> subprocess.CompletedProcess[str]:
    """What the local command runs: the bundle on stdin, then the passphrase line and the key."""
    script = remote.Script("snapshot-fetch", render("snapshot-fetch", params))
    stdin = str(remote.bundle(script)) + passphrase + "\n" + key.read_text()
    return subprocess.run(
        ["/bin/bash", "-c", remote.command_line("root", "snapshot-fetch")],
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )


def test_the_script_passes_lint(tmp_path: Path) -> None:
    lint(render("snapshot-fetch", {"SNAPSHOT": "/x", "BASTION_HOST": "b"}), tmp_path, "snapshot-fetch.sh")


def test_the_snapshot_is_copied_with_a_pinned_host_and_a_passphrase_and_checked(tmp_path, key, snapshot) -> None:
    allowed = [f"sha256sum {snapshot}", f"cat {snapshot}"]
    with sshd(tmp_path / "sshd", Path(f"{key}.pub"), allowed) as server:
        done = fetch(key, {"SNAPSHOT": str(snapshot), "DEST_DIR": str(tmp_path / "copies"), "HOST": "127.0.0.1",
                           "PORT": server.port, "REMOTE_USER": "root", "HOST_KEY": server.host_key})
        assert done.returncode == 0, done.stderr
        copied = tmp_path / "copies" / snapshot.name
        digest = hashlib.sha256(snapshot.read_bytes()).hexdigest()
        assert done.stdout == f"copy=done path={copied} sha256={digest} bytes=256000\n"
        assert copied.read_bytes() == snapshot.read_bytes()
        assert (copied.stat().st_mode & 0o777, copied.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        # Another host key than the pinned one: refused, nothing copied.
        other = tmp_path / "other"
        wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIZiUXqtFSrE/zt9GCrZ2EO2ECWpfP+gsr2jD8uK12pA"
        refused = fetch(key, {"SNAPSHOT": str(snapshot), "DEST_DIR": str(other), "HOST": "127.0.0.1",
                              "PORT": server.port, "REMOTE_USER": "root", "HOST_KEY": wrong})
        assert refused.returncode == 1
        assert f"snapshot-fetch: cannot read {snapshot} on 127.0.0.1" in refused.stderr
        assert not any(other.iterdir())


def agents() -> list[str]:
    """The ssh-agents the script starts (its own socket in a mktemp directory), running now."""
    found = subprocess.run(["pgrep", "-f", "ssh-agent -s -a /"], capture_output=True, text=True, check=False)
    return found.stdout.split()


def test_a_wrong_passphrase_is_named_and_nothing_is_asked(tmp_path, key, snapshot) -> None:
    before = agents()
    done = fetch(key, {"SNAPSHOT": str(snapshot), "DEST_DIR": str(tmp_path / "copies"), "HOST": "127.0.0.1",
                       "PORT": 1, "REMOTE_USER": "root"}, passphrase="not-it")
    assert done.returncode == 1
    assert "the private key does not open with sshPrivateKeyPassword" in done.stderr
    assert PASSPHRASE not in done.stderr + done.stdout
    # Its key agent is gone with it.
    assert agents() == before


def test_nothing_saved_is_nothing_to_copy(tmp_path, key) -> None:
    done = fetch(key, {"SNAPSHOT": "", "SKIP_REASON": "sqlite", "DEST_DIR": str(tmp_path / "copies"),
                       "HOST": "127.0.0.1", "REMOTE_USER": "root"})
    assert (done.returncode, done.stdout) == (0, "copy=skipped reason=sqlite\n")
    assert not (tmp_path / "copies").exists()
