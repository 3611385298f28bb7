"""Signed JWTs for token requests: RFC 7523 grant assertions (§2.1) and client assertions (§2.2).

A fresh assertion is signed for every request (its own ``jti``, ``iat`` and a short ``exp``), so a
captured one is useless a minute later and a server that remembers ``jti`` refuses a replay.
Signing uses ``cryptography`` directly: RS256, PS256, ES256 and EdDSA (or Ed25519) with a private key
(``private_key_jwt``, the JWT bearer grant), HS256 with the client secret (``client_secret_jwt``).

Keys are parsed once per process and kept (parsing an RSA key checks it, which costs more than
signing); a worker holds them as it holds any integration's opened secrets during a refresh.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# RFC 7523 §2.1 and §2.2.
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# "Ed25519" is RFC 9864's fully specified name for what "EdDSA" (RFC 8037) means with an Ed25519 key: newer
# servers deprecate the old name, most still know only it (the default).
KEY_ALGS = ("RS256", "PS256", "ES256", "EdDSA", "Ed25519")
# How long an assertion is good for unless the spec says otherwise: long enough for a clock a
# little off, short enough that a captured one soon dies. Google takes at most an hour.
DEFAULT_LIFETIME = 300
MAX_LIFETIME = 3600
MIN_RSA_BITS = 2048

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class UnusableKey(ValueError):
    """A private key that does not parse, or cannot sign with the algorithm asked for."""


@dataclass(frozen=True)
class Signer:
    """What signs: a private key and its algorithm, or a shared secret (HS256)."""

    alg: str
    key: SigningKey | bytes = field(repr=False)
    key_id: str | None = None
    # x5t#S256 / x5t of the key's certificate, for servers that find the key by it (Entra ID).
    thumbprints: Mapping[str, str] = field(default_factory=dict)

    def sign(self, claims: Mapping[str, Any]) -> str:
        header: dict[str, str] = {"alg": self.alg, "typ": "JWT"}
        if self.key_id:
            header["kid"] = self.key_id
        header.update(self.thumbprints)
        signing_input = f"{_segment(header)}.{_segment(claims)}".encode()
        return f"{signing_input.decode()}.{_b64(self._signature(signing_input))}"

    def _signature(self, data: bytes) -> bytes:
        key = self.key
        if isinstance(key, bytes):
            return hmac.new(key, data, hashlib.sha256).digest()
        if isinstance(key, rsa.RSAPrivateKey):
            if self.alg == "PS256":
                # RFC 7518 §3.5: the salt as long as the hash.
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
                return key.sign(data, pss, hashes.SHA256())
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            # JWS wants r and s as two 32-byte numbers, not the DER that cryptography returns.
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return key.sign(data)


def key_signer(
    pem: str, alg: str | None = None, key_id: str | None = None, thumbprints: Mapping[str, str] | None = None
) -> Signer:
    """A signer for a PEM private key; ``alg`` defaults to the key's own kind. Raises UnusableKey saying why not."""
    key = parse_key(pem)
    problem = alg_problem(key, alg)
    if problem:
        raise UnusableKey(problem)
    return Signer(alg or default_alg(key), key, key_id, dict(thumbprints or {}))


def secret_signer(client_secret: str) -> Signer:
    """client_secret_jwt (OpenID Connect Core §9): HS256 keyed with the client secret."""
    return Signer("HS256", client_secret.encode())


def default_alg(key: SigningKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    return "RS256"


@functools.lru_cache(maxsize=256)
def parse_key(pem: str) -> SigningKey:
    """The private key in ``pem``; raises UnusableKey saying what is wrong (never quoting the key)."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise UnusableKey("is encrypted with a passphrase; give the key unencrypted (it is sealed at rest)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        # cryptography's text names the parse failure, never the key material.
        raise UnusableKey(f"is not a PEM private key ({_first_line(exc)})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise UnusableKey(f"is a {type(key).__name__.removeprefix('_')}; an RSA, EC P-256 or Ed25519 key is needed")
    if alg_problem(key, None):
        raise UnusableKey(str(alg_problem(key, None)))
    return key


def alg_problem(key: SigningKey, alg: str | None) -> str | None:
    """Why ``key`` cannot sign with ``alg`` (its default when None); None when it can."""
    alg = alg or default_alg(key)
    if alg in ("RS256", "PS256"):
        if not isinstance(key, rsa.RSAPrivateKey):
            return f"{alg} needs an RSA key; this is {_kind(key)}"
        if key.key_size < MIN_RSA_BITS:
            return f"an RSA key of {key.key_size} bits is too weak to sign with; {MIN_RSA_BITS} or more"
        return None
    if alg == "ES256":
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            return f"ES256 needs an EC P-256 key; this is {_kind(key)}"
        return None
    if alg in ("EdDSA", "Ed25519"):
        return (
            None if isinstance(key, ed25519.Ed25519PrivateKey) else f"{alg} needs an Ed25519 key; this is {_kind(key)}"
        )
    return f"unknown signing_alg {alg!r}; one of {', '.join(KEY_ALGS)}"


def client_assertion(signer: Signer, client_id: str, audience: str, now: float) -> str:
    """RFC 7523 §2.2 / §3: the client asserts itself (iss = sub = client_id) to ``audience``."""
    return signer.sign(_claims({"iss": client_id, "sub": client_id, "aud": audience}, now, DEFAULT_LIFETIME))


def grant_assertion(signer: Signer, claims: Mapping[str, Any], now: float, lifetime: int = DEFAULT_LIFETIME) -> str:
    """RFC 7523 §2.1: ``claims`` (iss, sub, aud and any a provider wants, e.g. Google's ``scope``) signed,
    with iat, exp and jti of this moment."""
    return signer.sign(_claims(claims, now, lifetime))


def _claims(given: Mapping[str, Any], now: float, lifetime: int) -> dict[str, Any]:
    issued = int(now)
    return {**given, "iat": issued, "exp": issued + lifetime, "jti": secrets.token_urlsafe(16)}


def _kind(key: SigningKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"an RSA key ({key.key_size} bits)"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC key on {key.curve.name}"
    return "an Ed25519 key"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def _segment(data: Mapping[str, Any]) -> str:
    return _b64(json.dumps(data, separators=(",", ":"), sort_keys=False).encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
