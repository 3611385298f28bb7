"""Spec rules for what signs: the JWT bearer grant, client authentication methods, audience and resource."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from tests.support.keys import ec_pem, ed25519_pem, encrypted_pem, rsa_pem
from tests.support.pki import CertificateAuthority
from workers.engine.spec import merge_changes, spec_from_stored, validate_spec
from workers.errors import SpecError
from workers.oauth.addresses import AddressPolicy

JWT = {
    "name": "sa",
    "grant_type": "jwt_bearer",
    "client_id": "robot@example.test",
    "token_url": "https://idp.example/token",
}


CA = CertificateAuthority()


def rejected(data: Any) -> dict[str, list[str]]:
    with pytest.raises(SpecError) as caught:
        validate_spec(data)
    return caught.value.errors


def service_account_file(**overrides: Any) -> str:
    document = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "kid-123",
        "private_key": rsa_pem(),
        "client_email": "robot@p.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
        **overrides,
    }
    return json.dumps(document)


def test_a_jwt_bearer_spec_needs_a_key_and_no_secret() -> None:
    """The grant signs with its key; without a client secret the client is not otherwise authenticated."""
    spec = validate_spec({**JWT, "private_key": ec_pem(), "assertion_claims": {"sub": "user@x", "lifetime": 120}})
    assert spec.auth_method == "none"
    assert spec.client_secret == ""
    assert spec.assertion_claims == {"sub": "user@x", "lifetime": 120}
    assert "private_key" not in spec.public_fields() and spec.secrets()["private_key"] == ec_pem()
    assert rejected(JWT) == {"private_key": ["required for grant_type jwt_bearer"]}


def test_a_jwt_bearer_spec_with_a_client_secret_also_authenticates_with_it() -> None:
    """Given a secret, a JWT bearer client authenticates with it too (Basic by default)."""
    spec = validate_spec({**JWT, "private_key": rsa_pem(), "client_secret": "s"})
    assert spec.auth_method == "client_secret_basic"


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"private_key": "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----"}, {"private_key"}),
        ({"private_key": encrypted_pem()}, {"private_key"}),
        ({"private_key": rsa_pem(1024)}, {"private_key"}),
        ({"private_key": ec_pem(), "signing_alg": "RS256"}, {"signing_alg"}),
        ({"private_key": ed25519_pem(), "signing_alg": "ES256"}, {"signing_alg"}),
        ({"private_key": rsa_pem(), "signing_alg": "HS256"}, {"signing_alg"}),
        ({"private_key": rsa_pem(), "assertion_claims": {"exp": 1}}, {"assertion_claims"}),
        ({"private_key": rsa_pem(), "assertion_claims": {"lifetime": 7200}}, {"assertion_claims"}),
        ({"private_key": rsa_pem(), "assertion_claims": {"lifetime": True}}, {"assertion_claims"}),
        ({"private_key": rsa_pem(), "assertion_claims": {"scope": None}}, {"assertion_claims"}),
        ({"private_key": rsa_pem(), "assertion_claims": {"x": {"nested": 1}}}, {"assertion_claims"}),
        ({"private_key": "{not json"}, {"private_key"}),
        ({"private_key": json.dumps({"type": "authorized_user"})}, {"private_key"}),
    ],
)
def test_a_key_or_claim_that_cannot_be_used_is_named_and_nothing_is_quoted(
    fields: dict[str, Any], errors: set[str]
) -> None:
    """Each unusable key, algorithm or claim is refused naming its field, and no message quotes key material."""
    found = rejected({**JWT, **fields})
    assert set(found) == errors
    assert "PRIVATE KEY" not in json.dumps(found)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "client_secret_jwt"])
def test_methods_that_use_the_secret_require_it(method: str) -> None:
    """Basic, POST and client_secret_jwt all need the client secret, and say so naming the method."""
    data = {**JWT, "grant_type": "client_credentials", "auth_method": method}
    assert rejected(data)["client_secret"] == [f"required with auth_method {method}"]


def test_client_secret_jwt_needs_a_secret_long_enough_for_hs256() -> None:
    """An HS256 key shorter than the hash is refused (RFC 7518 §3.2); 32 bytes pass."""
    data = {**JWT, "grant_type": "client_credentials", "auth_method": "client_secret_jwt", "client_secret": "short"}
    assert "at least 32 bytes" in rejected(data)["client_secret"][0]
    assert validate_spec({**data, "client_secret": "x" * 32}).auth_method == "client_secret_jwt"


def test_private_key_jwt_needs_a_key_and_no_secret() -> None:
    """private_key_jwt signs with its key: the key is required, the secret is not."""
    data = {**JWT, "grant_type": "client_credentials", "auth_method": "private_key_jwt"}
    assert rejected(data) == {"private_key": ["required with auth_method private_key_jwt"]}
    spec = validate_spec({**data, "private_key": rsa_pem(), "key_id": "k1", "signing_alg": "PS256"})
    assert (spec.signing_alg, spec.key_id, spec.client_secret) == ("PS256", "k1", "")


def test_a_public_client_needs_no_secret() -> None:
    """auth_method none: a public client (with PKCE) has no secret to give."""
    data = {**JWT, "grant_type": "authorization_code", "auth_url": "https://idp.example/auth", "auth_method": "none"}
    assert validate_spec(data).auth_method == "none"


def test_without_a_secret_or_a_secretless_method_the_secret_is_asked_for() -> None:
    """The default method needs a secret; the message names the methods that need none."""
    data = {**JWT, "grant_type": "client_credentials"}
    assert "required (or an auth_method that needs none" in rejected(data)["client_secret"][0]


def test_keys_are_refused_where_nothing_signs() -> None:
    """A key on a spec that never signs would be kept for nothing: refused, naming the fields."""
    data = {**JWT, "grant_type": "client_credentials", "client_secret": "s"}
    assert set(rejected({**data, "private_key": rsa_pem(), "key_id": "k"})) == {"private_key", "key_id"}
    assert set(rejected({**data, "assertion_audience": "https://idp.example"})) == {"assertion_audience"}


def test_audience_and_resource_fit_any_grant() -> None:
    """RFC 8693 audience and RFC 8707 resource (one URI or several, absolute, no fragment) go with any grant."""
    data = {**JWT, "grant_type": "client_credentials", "client_secret": "s"}
    spec = validate_spec({**data, "audience": "api://crm", "resource": ["https://api.example/", "urn:example:x"]})
    assert spec.audience == "api://crm" and spec.resource == ("https://api.example/", "urn:example:x")
    assert validate_spec({**data, "resource": "https://api.example/"}).resource == ("https://api.example/",)
    assert "resource" in rejected({**data, "resource": "https://api.example/#frag"})
    assert "resource" in rejected({**data, "resource": "relative/path"})
    assert "resource" in rejected({**data, "resource": []})


def test_a_google_service_account_file_is_taken_as_it_is() -> None:
    """The key file as Google issues it: its email is the client, its key signs, its key id is the kid."""
    spec = validate_spec({"name": "gsa", "private_key": service_account_file(), "scopes": ["https://x/auth/drive"]})
    assert spec.grant_type == "jwt_bearer"
    assert spec.provider == "google-service-account"
    assert spec.client_id == "robot@p.iam.gserviceaccount.com"
    assert spec.key_id == "kid-123"
    assert spec.private_key == rsa_pem()
    assert spec.token_url == "https://oauth2.googleapis.com/token"
    assert spec.auth_method == "none"
    assert spec.assertion_claims == {"sub": None}
    delegated = validate_spec(
        {"name": "gsa", "private_key": service_account_file(), "assertion_claims": {"sub": "admin@corp.example"}}
    )
    assert delegated.assertion_claims == {"sub": "admin@corp.example"}


def test_a_service_account_file_without_its_key_is_refused_without_quoting_it() -> None:
    """JSON that is no usable key file is refused naming private_key, quoting none of it."""
    found = rejected({"name": "gsa", "private_key": service_account_file(private_key="")})
    assert list(found) == ["private_key"] and "service-account key file" in found["private_key"][0]
    assert "robot@" not in json.dumps(found)


def test_a_stored_jwt_spec_survives_an_update() -> None:
    """The merged spec of an update keeps its key and claims; public fields keep neither secret nor empty maps."""
    spec = validate_spec({**JWT, "private_key": rsa_pem(), "assertion_claims": {"sub": "u"}})
    public = spec.public_fields()
    assert public["assertion_claims"] == {"sub": "u"} and "resource" not in public
    again = validate_spec(merge_changes(spec, {"scopes": "a b"}))
    assert again.private_key == rsa_pem() and again.scopes == ("a", "b")


MTLS = {
    "name": "bank",
    "grant_type": "client_credentials",
    "client_id": "bank-client",
    "auth_method": "tls_client_auth",
    "token_url": "https://bank.example/token",
}


def test_tls_client_auth_takes_a_certificate_and_its_key_and_no_secret() -> None:
    """RFC 8705: the certificate is a public field, its key a sealed secret; no client secret is needed."""
    issued = CA.issue("bank-client", client=True)
    spec = validate_spec({**MTLS, "client_certificate": issued.certificate, "client_key": issued.key})
    assert spec.client_secret == "" and spec.client_certificate == issued.certificate
    assert spec.public_fields()["client_certificate"] == issued.certificate  # a certificate is public
    assert "client_key" not in spec.public_fields() and spec.secrets()["client_key"] == issued.key


def test_an_unusable_certificate_or_key_is_named_and_nothing_is_quoted() -> None:
    """Missing, mismatched, expired, not yet valid, or sent over plain http: each refused naming its field."""
    issued, other = CA.issue("a", client=True), CA.issue("b", client=True)
    assert set(rejected(MTLS)) == {"client_certificate", "client_key"}
    mismatched = rejected({**MTLS, "client_certificate": issued.certificate, "client_key": other.key})
    assert list(mismatched) == ["client_key"] and "does not belong" in mismatched["client_key"][0]
    expired = CA.issue("old", client=True, starts_in=-datetime.timedelta(days=2), valid_for=datetime.timedelta(days=1))
    found = rejected({**MTLS, "client_certificate": expired.certificate, "client_key": expired.key})
    assert list(found) == ["client_certificate"] and "expired on" in found["client_certificate"][0]
    with pytest.raises(SpecError) as caught:
        validate_spec(
            {
                **MTLS,
                "token_url": "http://127.0.0.1:9/token",
                "client_certificate": issued.certificate,
                "client_key": issued.key,
            },
            addresses=AddressPolicy(allow_private=True),  # loopback allowed, as for local try-outs
        )
    plain = caught.value.errors
    assert list(plain) == ["token_url"] and "https://" in plain["token_url"][0]
    assert "PRIVATE KEY" not in json.dumps([mismatched, found, plain])


def test_a_certificate_is_refused_where_tls_client_auth_is_not_used() -> None:
    """A certificate no request would present is refused rather than kept for nothing."""
    issued = CA.issue("a", client=True)
    data = {
        **MTLS,
        "auth_method": "client_secret_basic",
        "client_secret": "s",
        "client_certificate": issued.certificate,
    }
    assert rejected(data) == {
        "client_certificate": [
            "only used by auth_method tls_client_auth (or, the certificate, with a signing private_key)"
        ]
    }


EXCHANGE = {
    "name": "downstream",
    "grant_type": "token_exchange",
    "client_id": "gateway",
    "client_secret": "s",
    "token_url": "https://idp.example/token",
}


def test_a_token_exchange_takes_exactly_one_subject() -> None:
    """RFC 8693: a stored subject token (a sealed secret) or another integration, never both, never neither."""
    stored = validate_spec({**EXCHANGE, "subject_token": "t-1", "audience": "https://api.example"})
    assert stored.secrets()["subject_token"] == "t-1" and "subject_token" not in stored.public_fields()
    follows = validate_spec({**EXCHANGE, "subject_integration": "okta_user"})
    assert follows.public_fields()["subject_integration"] == "okta_user"
    for data in (EXCHANGE, {**EXCHANGE, "subject_token": "t", "subject_integration": "okta_user"}):
        assert "exactly one" in rejected(data)["subject_token"][0]
    assert rejected({**EXCHANGE, "subject_integration": "downstream"}) == {
        "subject_integration": ["cannot be the integration itself"]
    }
    assert (
        "token type URI"
        in rejected({**EXCHANGE, "subject_token": "t", "subject_token_type": "jwt"})["subject_token_type"][0]
    )


def test_a_certificate_field_holding_a_key_is_refused_without_quoting_it() -> None:
    """A combined client.pem (certificate and key) would keep the key as a public field: refused."""
    issued = CA.issue("bank-client", client=True)
    found = rejected({**MTLS, "client_certificate": issued.certificate + issued.key, "client_key": issued.key})
    assert list(found) == ["client_certificate"] and "client_key" in found["client_certificate"][0]
    assert "PRIVATE KEY" not in json.dumps(found)
    spec = validate_spec({**MTLS, "client_certificate": issued.certificate, "client_key": issued.key})
    assert "CERTIFICATE" not in repr(spec)


def test_a_signing_key_may_bring_its_certificate_which_must_match() -> None:
    """private_key_jwt with the key's certificate (Entra ID finds keys by its thumbprint); another's is refused."""
    issued, other = CA.issue("app", client=True), CA.issue("other", client=True)
    data = {**JWT, "grant_type": "client_credentials", "auth_method": "private_key_jwt", "private_key": issued.key}
    spec = validate_spec({**data, "client_certificate": issued.certificate})
    assert spec.client_certificate == issued.certificate
    found = rejected({**data, "client_certificate": other.certificate})
    assert list(found) == ["private_key"] and "does not belong" in found["private_key"][0]


def test_a_rotated_service_account_key_file_brings_its_own_client_and_key_id() -> None:
    """Updating with a new key file replaces the old file's client_email and private_key_id."""
    spec = validate_spec({"name": "gsa", "private_key": service_account_file()})
    rotated = service_account_file(client_email="new@p.iam.gserviceaccount.com", private_key_id="kid-new")
    again = validate_spec(merge_changes(spec, {"private_key": rotated}))
    assert (again.client_id, again.key_id) == ("new@p.iam.gserviceaccount.com", "kid-new")


def test_a_refresh_token_left_by_an_authorization_does_not_block_an_update() -> None:
    """The refresh token a consent stored is grant state: an update validates without it."""
    spec = validate_spec(
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "c",
            "client_secret": "s",
            "token_url": "https://idp.example/token",
            "auth_url": "https://idp.example/auth",
        }
    )
    authorized = spec_from_stored(spec.public_fields(), {**spec.secrets(), "refresh_token": "rt-1"})
    assert validate_spec(merge_changes(authorized, {"scopes": "a b"})).scopes == ("a", "b")


@pytest.mark.parametrize(
    ("provider", "claims", "missing"),
    [("box-jwt", {}, "assertion_claims.sub"), ("salesforce-jwt", {"lifetime": 100}, "assertion_claims.sub")],
)
def test_presets_that_need_a_subject_say_so(provider: str, claims: dict[str, Any], missing: str) -> None:
    """Box needs its enterprise id and Salesforce its username as sub: named when missing."""
    data = {"name": "x", "provider": provider, "client_id": "c", "client_secret": "s", "private_key": rsa_pem()}
    assert rejected({**data, "assertion_claims": claims}) == {missing: [f"required by provider {provider}"]}
    assert validate_spec({**data, "assertion_claims": {**claims, "sub": "u"}}).assertion_claims["sub"] == "u"


def test_resources_go_into_the_authorization_request_too() -> None:
    """RFC 8707 §2.1: each resource is its own parameter of the authorization URL, replacing one in auth_url."""
    from urllib.parse import parse_qsl, urlsplit

    from workers.engine.authorization import authorization_url

    spec = validate_spec(
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "c",
            "client_secret": "s",
            "token_url": "https://idp.example/token",
            "auth_url": "https://idp.example/auth?resource=https://old.example/",
            "resource": ["https://a.example/", "https://b.example/"],
        }
    )
    query = parse_qsl(urlsplit(authorization_url(spec, "https://tk.example/cb", "st", None)).query)
    assert [value for key, value in query if key == "resource"] == ["https://a.example/", "https://b.example/"]
