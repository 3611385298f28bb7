"""Signed assertions, checked by an independent JOSE library (joserfc, which Authlib's server uses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from tests.support.keys import ec_pem, ed25519_pem, encrypted_pem, public_pem, rsa_pem
from workers.oauth.assertions import (
    UnusableKey,
    client_assertion,
    grant_assertion,
    key_signer,
    secret_signer,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("pem", "alg", "key_class"),
    [
        (rsa_pem, "RS256", RSAKey),
        (rsa_pem, "PS256", RSAKey),
        (ec_pem, "ES256", ECKey),
        (ed25519_pem, "EdDSA", OKPKey),
        (ed25519_pem, "Ed25519", OKPKey),  # RFC 9864's name for the same signature
    ],
)
def test_each_algorithm_signs_what_a_verifier_accepts(pem: Callable[[], str], alg: str, key_class: Any) -> None:
    """Each algorithm's signature verifies with the public key alone; header and claims are as RFC 7523 §3 wants."""
    signer = key_signer(pem(), alg, key_id="k1")
    token = client_assertion(signer, "client-1", "https://idp.test/token", NOW)
    decoded = jwt.decode(token, key_class.import_key(public_pem(pem())), algorithms=[alg])
    assert decoded.header == {"alg": alg, "typ": "JWT", "kid": "k1"}
    claims = decoded.claims
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("client-1", "client-1", "https://idp.test/token")
    assert claims["iat"] == int(NOW) and claims["exp"] == int(NOW) + 300
    assert len(claims["jti"]) >= 16


def test_a_signature_by_another_key_does_not_verify() -> None:
    """The verifier's check is real: a key pair other than the signer's refuses the token."""
    token = client_assertion(key_signer(rsa_pem()), "c", "https://idp.test/token", NOW)
    with pytest.raises(Exception, match="signature"):
        jwt.decode(token, RSAKey.import_key(public_pem(rsa_pem(3072))), algorithms=["RS256"])


def test_every_assertion_is_new() -> None:
    """Two assertions signed in the same second differ by their jti: a server remembering jti refuses a replay."""
    signer = key_signer(ec_pem())
    first, second = (grant_assertion(signer, {"iss": "a"}, NOW) for _ in range(2))
    assert first != second


def test_the_key_kind_picks_the_default_algorithm() -> None:
    """Without signing_alg, a key signs with the algorithm its kind is for."""
    assert key_signer(rsa_pem()).alg == "RS256"
    assert key_signer(ec_pem()).alg == "ES256"
    assert key_signer(ed25519_pem()).alg == "EdDSA"


def test_client_secret_jwt_is_hs256_with_the_secret() -> None:
    """client_secret_jwt: HS256 keyed with the client secret, as OpenID Connect Core §9 says."""
    secret = "s" * 40
    token = client_assertion(secret_signer(secret), "c", "https://idp.test/token", NOW)
    decoded = jwt.decode(token, OctKey.import_key(secret), algorithms=["HS256"])
    assert decoded.claims["sub"] == "c"


def test_grant_claims_and_lifetime_are_carried() -> None:
    """A grant assertion carries the claims it is given, and lives for the lifetime asked."""
    token = grant_assertion(key_signer(rsa_pem()), {"iss": "sa@x", "scope": "a b", "aud": "u"}, NOW, lifetime=60)
    claims = jwt.decode(token, RSAKey.import_key(public_pem(rsa_pem())), algorithms=["RS256"]).claims
    assert claims["scope"] == "a b" and claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize(
    ("pem", "alg", "message"),
    [
        (lambda: "not a key", None, "is not a PEM private key"),
        (encrypted_pem, None, "encrypted with a passphrase"),
        (lambda: rsa_pem(1024), None, "1024 bits is too weak"),
        (rsa_pem, "ES256", "ES256 needs an EC P-256 key; this is an RSA key"),
        (ec_pem, "RS256", "RS256 needs an RSA key"),
        (lambda: ec_pem("secp384r1"), None, "ES256 needs an EC P-256 key; this is an EC key on secp384r1"),
        (ed25519_pem, "PS256", "PS256 needs an RSA key"),
    ],
)
def test_a_key_that_cannot_sign_says_why(pem: Callable[[], str], alg: str | None, message: str) -> None:
    """Every unusable key is refused with the reason, and the error never quotes the key."""
    with pytest.raises(UnusableKey, match=message) as caught:
        key_signer(pem(), alg)
    assert "PRIVATE KEY" not in str(caught.value)


def test_a_certificate_names_the_key_by_its_thumbprints() -> None:
    """x5t#S256 and x5t (RFC 7515 §4.1.7-8) of the DER certificate, as Entra ID looks a key up by them."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tests.support.pki import CertificateAuthority
    from workers.oauth.client_tls import thumbprints

    issued = CertificateAuthority().issue("app", client=True)
    signer = key_signer(issued.key, thumbprints=thumbprints(issued.certificate))
    token = client_assertion(signer, "c", "https://login.example/token", NOW)
    header = jwt.decode(token, ECKey.import_key(public_pem(issued.key)), algorithms=["ES256"]).header
    der = x509.load_pem_x509_certificate(issued.certificate.encode()).public_bytes(serialization.Encoding.DER)
    assert header["x5t#S256"] == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert header["x5t"] == base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()  # noqa: S324 -- the thumbprint the header defines
    assert "PrivateKey" not in repr(signer) and "key=" not in repr(signer)
