"""When the admin kubeconfig's client certificate expires (stdlib only: the plan and program stay light).

K3s issues its client certificates for a year and renews the ones within 90
days of expiry when it starts; the kubeconfig in state keeps the certificate it
was read with, so the program exports the date and warns before it runs out.
"""

from __future__ import annotations

import base64
import datetime as dt
import ssl

import yaml

# Warn this long before the certificate in state expires (K3s renews from 90 days before).
WARN_BEFORE = dt.timedelta(days=30)

_SEQUENCE, _CONTEXT_0, _UTC_TIME, _GENERALIZED_TIME = 0x30, 0xA0, 0x17, 0x18


def _element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``pos``."""
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(der[pos : pos + size], "big")
        pos += size
    if pos + length > len(der):
        raise ValueError("truncated DER element")
    return tag, pos, pos + length


def _time(tag: int, text: str) -> dt.datetime:
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ; RFC 5280: YY < 50 is 20YY
        year = int(text[:2])
        text = f"{2000 + year if year < 50 else 1900 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME:
        raise ValueError(f"unexpected time tag 0x{tag:02x}")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


def certificate_not_after(pem: str) -> dt.datetime:
    """The ``notAfter`` of an X.509 certificate in PEM (RFC 5280 TBSCertificate.validity)."""
    der = ssl.PEM_cert_to_DER_cert(pem.strip() + "\n")
    _, cert, _ = _element(der, 0)
    tag, pos, _ = _element(der, cert)  # tbsCertificate
    if tag != _SEQUENCE:
        raise ValueError("not an X.509 certificate")
    tag, _, end = _element(der, pos)
    if tag == _CONTEXT_0:  # explicit version
        pos = end
        tag, _, end = _element(der, pos)
    for _field in ("serialNumber", "signature", "issuer"):
        _, _, pos = _element(der, pos)
    tag, validity, _ = _element(der, pos)
    _, _, after_not_before = _element(der, validity)
    tag, start, end = _element(der, after_not_before)
    return _time(tag, der[start:end].decode("ascii"))


def client_certificate_expiry(kubeconfig: str) -> dt.datetime:
    """The earliest expiry of the client certificates a kubeconfig holds."""
    doc = yaml.safe_load(kubeconfig)
    certificates = [
        base64.b64decode(user["user"]["client-certificate-data"]).decode()
        for user in (doc or {}).get("users") or []
        if "client-certificate-data" in (user.get("user") or {})
    ]
    if not certificates:
        raise ValueError("the kubeconfig holds no client-certificate-data")
    return min(certificate_not_after(pem) for pem in certificates)


def expiry_warning(expires: dt.datetime, now: dt.datetime, renew_hint: str) -> str | None:
    """A warning when ``expires`` is within :data:`WARN_BEFORE` of ``now`` (or past), else None."""
    left = expires - now
    if left > WARN_BEFORE:
        return None
    when = "expired" if left.total_seconds() <= 0 else f"expires in {left.days} days"
    return f"the kubeconfig's client certificate {when} ({expires.isoformat()}): {renew_hint}"
