"""The provider presets: a valid data file, and specs that name a provider."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.keys import rsa_pem
from workers.engine.spec import AUTH_METHODS, GRANT_TYPES, validate_spec
from workers.errors import SpecError
from workers.oauth.discovery import choose_auth_method
from workers.oauth.providers import PLACEHOLDER, URL_KEYS, presets

PROVIDERS_PAGE = Path(__file__).resolve().parents[4] / "docs" / "providers.md"
REQUIRED = {
    "google",
    "microsoft",
    "github",
    "gitlab",
    "dropbox",
    "slack",
    "salesforce",
    "atlassian",
    "zoom",
    "hubspot",
    "box",
    "okta",
    "auth0",
    "spotify",
    "linkedin",
    "notion",
    "xero",
    "zendesk",
    "asana",
    "torq",
}


def _example_params(preset_params: dict[str, str | None]) -> dict[str, str]:
    return {key: "example-1.test" for key, default in preset_params.items() if default is None}


def test_the_file_holds_every_provider_the_issue_names() -> None:
    """At least twenty presets, including each well-known provider users asked for."""
    assert len(presets()) >= 20
    assert set(presets()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(presets()))
def test_each_preset_is_complete_and_consistent(name: str) -> None:
    """Grant types, auth method and https URLs are valid; every placeholder is a declared parameter."""
    preset = presets()[name]
    assert preset.title and preset.grant_types and set(preset.grant_types) <= set(GRANT_TYPES)
    assert preset.auth_method in AUTH_METHODS and isinstance(preset.pkce, bool)
    if "authorization_code" in preset.grant_types:
        assert preset.auth_url
    for key in URL_KEYS:
        url = getattr(preset, key)
        if url:
            assert url.startswith("https://"), (key, url)
            assert set(PLACEHOLDER.findall(url)) <= set(preset.params), (key, url)
    for key in preset.params:
        used_in = [getattr(preset, k) or "" for k in URL_KEYS] + [str(v) for v in preset.assertion_claims.values()]
        assert any(f"{{{key}}}" in text for text in used_in), f"parameter {key} is unused"


@pytest.mark.parametrize("name", sorted(presets()))
def test_a_spec_with_only_provider_id_secret_and_scopes_validates(name: str) -> None:
    """Each preset, expanded for each grant type it supports, passes the ordinary spec validation."""
    preset = presets()[name]
    for grant in preset.grant_types:
        data = {
            "name": "x",
            "provider": name,
            "grant_type": grant,
            "client_id": "id",
            "client_secret": "s",
            "scopes": ["read"],
        }
        if grant == "refresh_token":
            data["refresh_token"] = "rt"
        if grant == "jwt_bearer" or preset.auth_method == "private_key_jwt":
            data["private_key"] = rsa_pem()
        if preset.required_claims:
            data["assertion_claims"] = dict.fromkeys(preset.required_claims, "someone")
        if _example_params(dict(preset.params)):
            data["provider_params"] = _example_params(dict(preset.params))
        spec = validate_spec(data)
        assert spec.endpoint.startswith("https://") and "{" not in spec.endpoint
        assert spec.auth_method == preset.auth_method


def test_dropbox_and_google_get_their_offline_parameters() -> None:
    """The parameters without which these providers issue no refresh token are filled in."""
    dropbox = validate_spec(
        {"name": "d", "provider": "dropbox", "client_id": "i", "client_secret": "s", "scopes": "files.content.read"}
    )
    assert dropbox.grant_type == "authorization_code"
    assert dropbox.extra_auth_params == {"token_access_type": "offline"}
    assert dropbox.token_url == "https://api.dropboxapi.com/oauth2/token"
    google = validate_spec(
        {
            "name": "g",
            "provider": "google",
            "client_id": "i",
            "client_secret": "s",
            "extra_auth_params": {"login_hint": "a@example.com"},
        }
    )
    assert google.extra_auth_params == {"access_type": "offline", "prompt": "consent", "login_hint": "a@example.com"}


def test_the_spec_wins_over_the_preset_and_templates_fill_in() -> None:
    """Own fields override the preset; a tenant goes into the URLs; offline_access is added once."""
    spec = validate_spec(
        {
            "name": "m",
            "provider": "microsoft",
            "provider_params": {"tenant": "contoso.com"},
            "client_id": "i",
            "client_secret": "s",
            "scopes": "User.Read offline_access",
            "auth_method": "client_secret_basic",
        }
    )
    assert spec.token_url == "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
    assert spec.scopes == ("User.Read", "offline_access")
    assert spec.auth_method == "client_secret_basic"


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"provider": "nope"}, "provider", "unknown provider 'nope'"),
        ({"provider": "okta"}, "provider_params.domain", "required by provider okta"),
        ({"provider": "okta", "provider_params": {"domain": "evil.test/x?"}}, "provider_params.domain", "host name"),
        (
            {"provider": "okta", "provider_params": {"domain": "a.test", "tenant": "t"}},
            "provider_params.tenant",
            "not a parameter",
        ),
        ({"provider": "torq", "grant_type": "authorization_code"}, "grant_type", "supports client_credentials"),
        ({"provider_params": {"tenant": "t"}}, "provider_params", "only used together with provider"),
    ],
)
def test_bad_provider_input_names_the_field(data: dict[str, object], field: str, words: str) -> None:
    """Unknown providers, missing or unsafe parameters and unsupported grants are named."""
    with pytest.raises(SpecError) as caught:
        validate_spec(
            {
                "name": "x",
                "grant_type": "client_credentials",
                "client_id": "i",
                "client_secret": "s",
                "token_url": "https://a.test/t",
                **data,
            }
            if "provider" not in data
            else {"name": "x", "client_id": "i", "client_secret": "s", **data}
        )
    assert words in " ".join(caught.value.errors[field])


def test_docs_list_every_provider() -> None:
    """docs/providers.md's providers table has a row for each preset."""
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", PROVIDERS_PAGE.read_text(), re.MULTILINE))
    assert set(presets()) <= rows


def test_changing_the_tenant_moves_the_urls_with_it() -> None:
    """An update of provider_params re-expands the preset's URLs; other fields stay."""
    from workers.engine.spec import merge_changes

    current = validate_spec(
        {
            "name": "m",
            "provider": "microsoft",
            "provider_params": {"tenant": "a.example"},
            "client_id": "i",
            "client_secret": "s",
            "scopes": "User.Read",
        }
    )
    moved = validate_spec(merge_changes(current, {"provider_params": {"tenant": "b.example"}}))
    assert moved.token_url == "https://login.microsoftonline.com/b.example/oauth2/v2.0/token"
    assert moved.auth_url is not None and "/b.example/" in moved.auth_url
    assert moved.scopes == ("User.Read", "offline_access") and moved.client_secret == "s"


@pytest.mark.parametrize(
    ("supported", "spec", "chosen"),
    [
        (("client_secret_basic", "private_key_jwt"), {"client_secret": "s", "private_key": "k"}, "private_key_jwt"),
        (("client_secret_post",), {"client_secret": "s"}, "client_secret_post"),
        (("client_secret_basic", "client_secret_post"), {"client_secret": "s"}, "client_secret_basic"),
        (("tls_client_auth", "none"), {"client_certificate": "c"}, "tls_client_auth"),
        (("none",), {}, "none"),
        (("private_key_jwt",), {"client_secret": "s"}, None),
    ],
)
def test_discovery_chooses_the_strongest_method_the_spec_can_use(
    supported: tuple[str, ...], spec: dict[str, str], chosen: str | None
) -> None:
    """Key over certificate over secret; Basic before POST; None when the spec holds nothing the server takes."""
    assert choose_auth_method(supported, spec) == chosen
