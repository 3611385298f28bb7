"""Client certificates for mutual TLS client authentication (RFC 8705 §2, ``tls_client_auth``).

Python's ``ssl`` loads a certificate and key only from a path. The key is handed over through an
anonymous in-memory file (``memfd_create``: no name in any directory, gone when closed) where the
system has one, else through a 0600 temporary file removed as soon as it is read. Either way it
never rests in a file. One SSL context per certificate is kept per process, so connections (and
their pools) are shared only by integrations presenting the same certificate: a connection
authenticated as one tenant never carries another tenant's request.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterator

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

# Certificates (and their keys) a worker keeps contexts for; more are built again when needed.
CONTEXTS = 64


def certificate_problems(certificate: str, key: str, now: float) -> dict[str, str]:
    """What keeps ``certificate`` and ``key`` from authenticating a client now, by spec field; empty when nothing."""
    kinds = {line.strip()[11:-5] for line in certificate.splitlines() if line.strip().startswith("-----BEGIN ")}
    if kinds - {"CERTIFICATE"}:
        # A combined "client.pem": the key would be kept and shown as a public field. Never quoted.
        return {"client_certificate": "holds more than certificates (a key?); put the key in client_key"}
    try:
        chain = x509.load_pem_x509_certificates(certificate.encode())
    except ValueError:
        return {"client_certificate": "is not a PEM certificate"}
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except TypeError:
        return {"client_key": "is encrypted with a passphrase; give the key unencrypted (it is sealed at rest)"}
    except (ValueError, UnsupportedAlgorithm):
        return {"client_key": "is not a PEM private key"}
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, spki) != private.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        return {"client_key": "does not belong to client_certificate (their public keys differ)"}
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if leaf.not_valid_after_utc <= moment:
        return {"client_certificate": f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"}
    if leaf.not_valid_before_utc > moment:
        return {"client_certificate": f"is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"}
    return {}


@functools.lru_cache(maxsize=CONTEXTS)
def certificate_expiry(certificate: str) -> float:
    """When the (first) certificate in ``certificate`` expires, as Unix seconds."""
    return x509.load_pem_x509_certificates(certificate.encode())[0].not_valid_after_utc.timestamp()


@functools.lru_cache(maxsize=CONTEXTS)
def thumbprints(certificate: str) -> dict[str, str]:
    """RFC 7515 §4.1.7-8: the (first) certificate's x5t#S256 and x5t, as Entra ID finds a signing key by."""
    der = x509.load_pem_x509_certificates(certificate.encode())[0].public_bytes(serialization.Encoding.DER)
    return {
        "x5t#S256": _b64(hashlib.sha256(der).digest()),
        # SHA-1 here names a certificate (the header RFC 7515 defines); it protects nothing.
        "x5t": _b64(hashlib.sha1(der).digest()),  # noqa: S324
    }


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@functools.lru_cache(maxsize=CONTEXTS)
def client_context(certificate: str, key: str) -> ssl.SSLContext:
    """A TLS client context that verifies servers as usual and presents ``certificate``."""
    context = ssl.create_default_context()
    # TLS 1.3 servers that ask for the certificate only once they see the request path (urllib3 does the same).
    context.post_handshake_auth = True
    with _readable_once(f"{certificate.strip()}\n{key.strip()}\n") as path:
        context.load_cert_chain(path)
    return context


@contextlib.contextmanager
def _readable_once(text: str) -> Iterator[str]:
    """A path ``text`` can be read from, for as long as the block lasts, without it resting on disk."""
    data = text.encode()
    if hasattr(os, "memfd_create"):
        descriptor = os.memfd_create("tokenkeeper-client-key", os.MFD_CLOEXEC)
        try:
            _write_all(descriptor, data)
            yield f"/proc/self/fd/{descriptor}"
        finally:
            os.close(descriptor)
        return
    # Systems without memfd (not Linux): mkstemp makes the file 0600, readable by this user only.
    descriptor, path = tempfile.mkstemp(prefix="tokenkeeper-")
    try:
        _write_all(descriptor, data)
        os.close(descriptor)
        descriptor = -1
        yield path
    finally:
        if descriptor >= 0:
            os.close(descriptor)
        os.unlink(path)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]
