"""The namespace cluster's certificates, made with the openssl command (no Python crypto dependency).

One CA signs everything: the API server's serving certificate, and client
certificates whose subject is the Kubernetes identity (CN = user, O = group).
Keys are ECDSA P-256: quick to make, accepted by every component.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "30"
# A new, unencrypted P-256 key with each request.
NEW_KEY = ("-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def ca(directory: Path) -> Pair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = Pair(directory / "ca.crt", directory / "ca.key")
    _openssl(
        "req",
        "-x509",
        *NEW_KEY,
        "-keyout",
        str(pair.key),
        "-out",
        str(pair.cert),
        "-days",
        DAYS,
        "-subj",
        "/CN=k3s-cilium-lab-ca",
    )
    return pair


def signed(
    authority: Pair, directory: Path, name: str, subject: str, *, sans: list[str] | None = None, server: bool = False
) -> Pair:
    """A certificate for ``subject`` (``/CN=admin/O=system:masters``), signed by ``authority``."""
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", f"extendedKeyUsage={usage}"]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    extensions.write_text("\n".join(lines) + "\n")
    _openssl("req", "-new", *NEW_KEY, "-keyout", str(pair.key), "-out", str(request), "-subj", subject)
    _openssl(
        "x509",
        "-req",
        "-in",
        str(request),
        "-CA",
        str(authority.cert),
        "-CAkey",
        str(authority.key),
        "-CAcreateserial",
        "-out",
        str(pair.cert),
        "-days",
        DAYS,
        "-extfile",
        str(extensions),
    )
    request.unlink()
    extensions.unlink()
    return pair


def service_account_keys(directory: Path) -> Pair:
    """The key pair service account tokens are signed with (``cert`` holds the public key)."""
    pair = Pair(directory / "sa.pub", directory / "sa.key")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(pair.key))
    _openssl("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
    return pair
