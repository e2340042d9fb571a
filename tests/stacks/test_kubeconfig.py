"""The kubeconfig's client-certificate expiry: parsed from real openssl certificates, warned about in time."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest

from stacks.kubeconfig import certificate_not_after, client_certificate_expiry, expiry_warning
from tests.certs import fake_certificate, kubeconfig_with

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def openssl_certificate(tmp_path: Path, days: int) -> tuple[str, dt.datetime]:
    """A self-signed certificate from openssl and the notAfter openssl itself reports."""
    assert shutil.which("openssl"), "openssl is needed to make real certificates (apt-get install openssl)"
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", "/O=system:masters/CN=system:admin"],
        check=True, capture_output=True,
    )
    end = subprocess.run(
        ["openssl", "x509", "-enddate", "-noout", "-in", str(cert)], check=True, capture_output=True, text=True
    ).stdout.strip().removeprefix("notAfter=")
    return cert.read_text(), dt.datetime.strptime(end, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=dt.UTC)


@pytest.mark.parametrize("days", [1, 365, 3650])
def test_not_after_matches_what_openssl_reports(tmp_path, days):
    pem, reported = openssl_certificate(tmp_path, days)
    assert certificate_not_after(pem) == reported


def test_generalized_time_after_2049():
    assert certificate_not_after(fake_certificate(dt.datetime(2061, 3, 4, 5, 6, 7, tzinfo=dt.UTC))) == dt.datetime(
        2061, 3, 4, 5, 6, 7, tzinfo=dt.UTC
    )


def test_kubeconfig_expiry_is_the_earliest_client_certificate():
    soon, later = NOW + dt.timedelta(days=10), NOW + dt.timedelta(days=300)
    assert client_certificate_expiry(kubeconfig_with(later, soon)) == soon


def test_kubeconfig_without_client_certificate_is_an_error():
    with pytest.raises(ValueError, match="no client-certificate-data"):
        client_certificate_expiry("apiVersion: v1\nusers:\n- name: a\n  user:\n    token: abc\n")


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (dt.timedelta(days=31), None),
        (dt.timedelta(days=29, hours=23), "expires in 29 days"),
        (dt.timedelta(seconds=-1), "expired"),
    ],
)
def test_warning_within_thirty_days(left, expected):
    message = expiry_warning(NOW + left, NOW, "renew it")
    if expected is None:
        assert message is None
    else:
        assert message is not None and expected in message and message.endswith(": renew it")
