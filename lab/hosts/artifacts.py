"""What the lab stack installs from: air-gap artifacts the lab makes itself, and its throwaway secrets.

No K3s can be had on these machines, so the lab stack is an air-gapped one whose artifacts come
from the Pulumi host, and the "K3s binary" among them is NOT K3s: a small script that says so.
The program must stop at it on every node (the staging step checks the binary's version against
``k3s.version`` before placing anything), which is what the lab's Pulumi steps assert.

The secrets are made anew for every run: a copy of the lab's SSH key encrypted with a passphrase
(so that ``sshPrivateKeyPassword`` is used for real), and a cluster token. The lab looks for each
of them in every output, log and state file afterwards.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOT_K3S = """#!/bin/sh
# The lab's stand-in for the k3s binary: NOT K3s (none can be had on the lab's machines).
echo "lab stand-in, not K3s"
"""
NOT_AN_INSTALLER = """#!/bin/sh
# The lab's stand-in for the K3s install script: never meant to run.
echo "lab stand-in for the K3s install script: refusing to run" >&2
exit 1
"""


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str

    def entry(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256}


@dataclass(frozen=True)
class Artifacts:
    binary: Artifact
    install_script: Artifact
    images: Artifact

    def airgap_config(self) -> dict[str, Any]:
        """The stack's ``airgap`` block: everything uploaded from this machine, each with its digest."""
        return {
            "k3s": {
                "binary": self.binary.entry(),
                "installScript": self.install_script.entry(),
                "images": [self.images.entry()],
            }
        }


def _written(path: Path, content: bytes, mode: int) -> Artifact:
    path.write_bytes(content)
    path.chmod(mode)
    return Artifact(path, hashlib.sha256(content).hexdigest())


def make_artifacts(directory: Path) -> Artifacts:
    """The lab's air-gap artifacts in ``directory`` (a small image archive, deterministic content)."""
    directory.mkdir(parents=True, exist_ok=True)
    archive = io.BytesIO()
    readme = b"The lab's image archive: no image in it (nothing imports it: K3s never starts in the lab).\n"
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("README")
        info.size, info.mtime, info.mode = len(readme), 0, 0o644
        tar.addfile(info, io.BytesIO(readme))
    return Artifacts(
        binary=_written(directory / "k3s", NOT_K3S.encode(), 0o755),
        install_script=_written(directory / "install.sh", NOT_AN_INSTALLER.encode(), 0o755),
        images=_written(directory / "k3s-airgap-images-amd64.tar", archive.getvalue(), 0o644),
    )


@dataclass(frozen=True)
class Secrets:
    """This run's secrets; ``plaintexts`` are what must never appear anywhere but in the engine's memory."""

    private_key: str  # the lab's key, encrypted with the passphrase
    key_passphrase: str
    token: str

    @property
    def plaintexts(self) -> dict[str, str]:
        body = [line for line in self.private_key.splitlines() if line and not line.startswith("-----")]
        return {
            "sshPrivateKey (a line of it)": body[len(body) // 2],
            "sshPrivateKeyPassword": self.key_passphrase,
            "k3sToken": self.token,
        }


def make_secrets(lab_key: Path, directory: Path) -> Secrets:
    passphrase = "lab-passphrase-" + secrets.token_hex(12)
    copy = directory / "id_ed25519.encrypted"
    copy.write_bytes(lab_key.read_bytes())
    copy.chmod(0o600)
    # ssh-keygen takes a new passphrase only as an argument: a throwaway one, on the lab's own machine.
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-P", "", "-N", passphrase, "-f", str(copy)], check=True, capture_output=True
    )
    key = copy.read_text()
    copy.unlink()
    return Secrets(private_key=key, key_passphrase=passphrase, token="lab-token-" + secrets.token_hex(24))
