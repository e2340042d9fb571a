"""Minimal X.509 certificates in PEM for tests: only the fields a parser walks to ``validity``.

The signature is not real; what matters is the DER layout of RFC 5280's
TBSCertificate, so a kubeconfig in the mock engine holds a certificate with a
chosen expiry. Real certificates made by ``openssl`` check the parser too.
"""

from __future__ import annotations

import base64
import datetime as dt
import textwrap

_RSA_OID = bytes.fromhex("06092a864886f70d01010b")  # sha256WithRSAEncryption


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _time(moment: dt.datetime) -> bytes:
    if moment.year < 2050:
        return _der(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
    return _der(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode())


def fake_certificate(not_after: dt.datetime, not_before: dt.datetime | None = None) -> str:
    """A PEM certificate whose validity ends at ``not_after`` (UTC)."""
    not_before = not_before or not_after - dt.timedelta(days=365)
    name = _der(0x30, _der(0x31, _der(0x30, bytes.fromhex("0603550403") + _der(0x0C, b"system:admin"))))
    tbs = _der(
        0x30,
        _der(0xA0, _der(0x02, b"\x02"))
        + _der(0x02, b"\x01" * 9)
        + _der(0x30, _RSA_OID)
        + name
        + _der(0x30, _time(not_before) + _time(not_after))
        + name
        + _der(0x30, _der(0x30, _RSA_OID) + _der(0x03, b"\x00" + b"k" * 300)),
    )
    der = _der(0x30, tbs + _der(0x30, _RSA_OID) + _der(0x03, b"\x00" + b"s" * 256))
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def kubeconfig_with(*not_after: dt.datetime) -> str:
    """A K3s-style admin kubeconfig with one user per expiry."""
    users = "".join(
        f"- name: user-{i}\n  user:\n    client-certificate-data: "
        f"{base64.b64encode(fake_certificate(moment).encode()).decode()}\n    client-key-data: RkFLRS1LRVk=\n"
        for i, moment in enumerate(not_after)
    )
    return (
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: RkFLRS1DQQ==\n"
        "    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n"
        "    user: user-0\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {}\n"
        f"users:\n{users}"
    )
