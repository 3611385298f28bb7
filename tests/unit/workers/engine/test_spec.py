"""Spec validation follows docs/contract.md field by field; every rejection names the field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.engine.spec import merge_changes, validate_spec
from workers.errors import SpecError
from workers.oauth.addresses import AddressPolicy

CC = {
    "name": "svc",
    "grant_type": "client_credentials",
    "client_id": "id",
    "client_secret": "s3cret",
    "token_url": "https://idp.example/token",
}
AC = {
    "name": "drive",
    "grant_type": "authorization_code",
    "client_id": "id",
    "client_secret": "s3cret",
    "token_url": "https://idp.example/token",
    "auth_url": "https://idp.example/auth?access_type=offline",
}
RT = {
    "name": "pasted",
    "grant_type": "refresh_token",
    "client_id": "id",
    "client_secret": "s3cret",
    "refresh_url": "https://idp.example/token",
    "refresh_token": "r-123",
}
# TOKENKEEPER_ALLOW_PRIVATE_NETWORKS=true: loopback is reachable (local try-outs).
LOCAL = AddressPolicy(allow_private=True)


def rejected(data: Any, **kwargs: Any) -> dict[str, list[str]]:
    with pytest.raises(SpecError) as caught:
        validate_spec(data, **kwargs)
    return caught.value.errors


@pytest.mark.parametrize("data", [CC, AC, RT])
def test_each_grant_type_accepts_its_minimal_spec(data: dict[str, Any]) -> None:
    """The minimal spec of each grant type validates with the contract's defaults."""
    spec = validate_spec(data)
    assert spec.name == data["name"]
    assert spec.auth_method == "client_secret_basic"
    assert spec.pkce is True
    assert spec.scopes == ()


def test_scopes_may_be_a_list_or_a_space_separated_string() -> None:
    """Both scope forms give the same tuple."""
    assert validate_spec({**CC, "scopes": "read  write"}).scopes == ("read", "write")
    assert validate_spec({**CC, "scopes": ["read", "write"]}).scopes == ("read", "write")
    assert "scopes" in rejected({**CC, "scopes": ["read write"]})
    assert "scopes" in rejected({**CC, "scopes": 7})


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        (CC, "token_url"),
        (AC, "auth_url"),
        (AC, "token_url"),
        (RT, "refresh_url"),
        (RT, "refresh_token"),
        (CC, "client_id"),
        (CC, "client_secret"),
        (CC, "name"),
        (CC, "grant_type"),
    ],
)
def test_a_missing_required_field_is_named(data: dict[str, Any], missing: str) -> None:
    """Leaving out a field the grant type needs names exactly that field."""
    errors = rejected({key: value for key, value in data.items() if key != missing})
    assert missing in errors


def test_unknown_fields_and_wrong_types_are_named() -> None:
    """An unknown field and a wrongly typed one are both reported, each by name."""
    errors = rejected({**CC, "client_secert": "typo", "client_id": 5, "auth_method": "magic"})
    assert {"client_secert", "client_id", "auth_method"} <= set(errors)


def test_fields_of_another_grant_type_are_refused() -> None:
    """auth_url on client_credentials, or pkce on refresh_token, is a mistake worth naming."""
    assert "auth_url" in rejected({**CC, "auth_url": "https://idp.example/a"})
    assert "pkce" in rejected({**RT, "pkce": False})
    assert "token_url" in rejected({**RT, "token_url": "https://idp.example/t"})


@pytest.mark.parametrize("name", ["1abc", "", "a" * 65, "has space", "dot.name", "ünï"])
def test_bad_names_are_refused(name: str) -> None:
    """Names follow ^[A-Za-z][A-Za-z0-9_-]{0,63}$."""
    assert "name" in rejected({**CC, "name": name})


def test_good_names_with_dashes_and_underscores_pass() -> None:
    """Dashes and underscores after the first letter are fine, up to 64 characters."""
    assert validate_spec({**CC, "name": "a" + "-_9" * 21}).name.startswith("a-_9")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://idp.example/t",
        "idp.example/token",
        "javascript:alert(1)",
        "https://user:pw@idp.example/t",
        "https://idp.example/t#frag",
        "https:///nohost",
        "https://idp.example:99999/t",
    ],
)
def test_urls_must_be_plain_absolute_http_urls(url: str) -> None:
    """Non-http(s) URLs, credentials in URLs, fragments and bad ports are refused."""
    assert "token_url" in rejected({**CC, "token_url": url})


def test_plain_http_only_to_loopback_unless_allowed() -> None:
    """http:// to a remote host is refused unless the operator lists the host."""
    errors = rejected({**CC, "token_url": "http://idp.example/token"})
    assert "https" in errors["token_url"][0]
    for url in ("http://127.0.0.1:8080/t", "http://localhost/t", "http://[::1]:9/t", "http://127.9.9.9/t"):
        assert validate_spec({**CC, "token_url": url}, addresses=LOCAL).token_url == url
    allowed = validate_spec({**CC, "token_url": "http://idp.internal/t"}, insecure_hosts=["IDP.internal"])
    assert allowed.token_url == "http://idp.internal/t"


def test_pkce_must_be_a_real_boolean() -> None:
    """pkce accepts true/false only, not 1 or "yes"."""
    assert validate_spec({**AC, "pkce": False}).pkce is False
    assert "pkce" in rejected({**AC, "pkce": 1})
    assert "pkce" in rejected({**AC, "pkce": "yes"})


def test_extra_params_are_string_maps() -> None:
    """extra_auth_params and extra_token_params map strings to strings."""
    spec = validate_spec({**AC, "extra_auth_params": {"prompt": "consent"}, "extra_token_params": {"audience": "x"}})
    assert spec.extra_auth_params == {"prompt": "consent"}
    assert "extra_token_params.audience.value" in rejected({**CC, "extra_token_params": {"audience": 3}})


def test_non_objects_are_refused() -> None:
    """A JSON array or string is not a spec."""
    assert "_spec" in rejected(["not", "a", "spec"])
    assert "_spec" in rejected("spec")


def test_public_fields_never_hold_secrets() -> None:
    """What is stored and shown plainly carries neither the client secret nor the refresh token."""
    spec = validate_spec(RT)
    public = spec.public_fields()
    assert "s3cret" not in repr(public) and "r-123" not in repr(public)
    assert "s3cret" not in repr(spec) and "r-123" not in repr(spec)
    assert spec.secrets() == {"client_secret": "s3cret", "refresh_token": "r-123"}


def test_changes_cannot_rename_or_change_grant_type() -> None:
    """name and grant_type are immutable; other fields merge, and null removes an optional one."""
    spec = validate_spec({**CC, "scopes": "a"})
    with pytest.raises(SpecError) as caught:
        merge_changes(spec, {"name": "other", "grant_type": "refresh_token"})
    assert set(caught.value.errors) == {"name", "grant_type"}
    merged = validate_spec(merge_changes(spec, {"client_secret": "new", "scopes": None}))
    assert merged.client_secret == "new" and merged.scopes == ()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)


# The first draw builds the text strategy's tables, which can take seconds on a busy machine.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from([*CC, *AC, *RT, "scopes", "pkce", "auth_method", "extra"]), json_values))
def test_any_json_either_validates_or_raises_spec_error(data: dict[str, Any]) -> None:
    """Whatever JSON arrives, validation answers with a spec or a SpecError naming fields, nothing else."""
    try:
        spec = validate_spec(data)
    except SpecError as exc:
        assert exc.errors and all(isinstance(field, str) for field in exc.errors)
    else:
        assert spec.name == data["name"]


@pytest.mark.parametrize("name", ["svc\n", "svc\r\n", "\nsvc", "svc\x00"])
def test_a_name_with_a_trailing_newline_or_control_character_is_refused(name: str) -> None:
    """``$`` matches before a final newline; the name must match the pattern as a whole."""
    assert "name" in rejected({**CC, "name": name})


def test_a_provider_parameter_with_a_trailing_newline_is_refused() -> None:
    """A tenant or host parameter ending in a newline would end up inside a URL; it is refused."""
    errors = rejected(
        {
            "name": "ms",
            "provider": "microsoft",
            "client_id": "id",
            "client_secret": "s",
            "provider_params": {"tenant": "contoso\n"},
        }
    )
    assert "provider_params.tenant" in errors


def test_the_rate_cap_bucket_is_the_token_endpoints_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresh_url's host for pasted refresh tokens, lower-cased, without port; a preset's own cap rides along."""
    from workers.oauth import providers

    assert validate_spec({**RT, "refresh_url": "https://IdP.Example:8443/t"}).rate_fields() == {
        "rate_host": "idp.example",
        "rate_cap": "",
    }
    preset = providers.presets()["google"]
    limited = {**providers.presets(), "google": dataclasses.replace(preset, max_refresh_rate=5.0)}
    monkeypatch.setattr(providers, "presets", lambda: limited)
    pasted = {key: value for key, value in RT.items() if key != "refresh_url"}
    spec = validate_spec({**pasted, "provider": "google"})
    assert spec.rate_fields() == {"rate_host": "oauth2.googleapis.com", "rate_cap": "5.0"}
