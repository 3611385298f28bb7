"""Client certificates: checked before they are stored, and handed to TLS without a file left behind."""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.pki import CertificateAuthority
from workers.oauth import client_tls
from workers.oauth.client_tls import certificate_problems, client_context

CA = CertificateAuthority()


def test_a_matching_current_pair_has_no_problems() -> None:
    """A certificate with its own key, valid now, alone or with its chain, passes."""
    issued = CA.issue("client-1", client=True)
    assert certificate_problems(issued.certificate, issued.key, time.time()) == {}
    # A chain (leaf first) is taken as well.
    assert certificate_problems(issued.certificate + CA.pem, issued.key, time.time()) == {}


def test_each_unusable_pair_names_its_field() -> None:
    """Not a certificate, not a key, a key of another certificate, expired, not yet valid: each named."""
    issued, other = CA.issue("client-1", client=True), CA.issue("client-2", client=True)
    now = time.time()
    assert certificate_problems("nope", issued.key, now) == {"client_certificate": "is not a PEM certificate"}
    assert certificate_problems(issued.certificate, "nope", now) == {"client_key": "is not a PEM private key"}
    assert "does not belong" in certificate_problems(issued.certificate, other.key, now)["client_key"]
    expired = CA.issue("old", client=True, starts_in=-datetime.timedelta(days=2), valid_for=datetime.timedelta(days=1))
    assert "expired on" in certificate_problems(expired.certificate, expired.key, now)["client_certificate"]
    early = CA.issue("early", client=True, starts_in=datetime.timedelta(days=1))
    assert "not valid before" in certificate_problems(early.certificate, early.key, now)["client_certificate"]
    assert "PRIVATE KEY" not in str(certificate_problems(issued.certificate, other.key, now))


def _files_holding(folder: Path, text: str) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]


def test_the_key_reaches_tls_through_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The context presents the certificate; no file holding the key is left (or made) in the temporary folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    issued = CA.issue("client-mem", client=True)
    context = client_context(issued.certificate, issued.key)
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert _files_holding(tmp_path, issued.key.splitlines()[1]) == []
    assert client_context(issued.certificate, issued.key) is context  # kept: one pool per certificate


def test_without_memfd_the_file_is_private_and_removed_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where there is no memfd, the key passes through a 0600 file that is gone once TLS has read it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delattr(os, "memfd_create", raising=False)
    modes: list[int] = []
    load = ssl.SSLContext.load_cert_chain

    def watched(self: ssl.SSLContext, certfile: str, *args: object, **kwargs: object) -> None:
        modes.append(os.stat(certfile).st_mode & 0o777)
        load(self, certfile)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", watched)
    issued = CA.issue("client-file", client=True)
    client_tls.client_context.cache_clear()
    client_context(issued.certificate, issued.key)
    assert modes == [0o600]
    assert list(tmp_path.iterdir()) == []
