"""Presets for well-known providers: the URLs, parameters and quirks a user would otherwise look up.

A spec that names a ``provider`` is expanded here before it is validated, so the
preset goes through the same checks as a hand-written spec. Whatever the spec
says itself wins over the preset. The data lives in ``data/providers.json``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.errors import SpecError

PRESETS_FILE = Path(__file__).with_name("data") / "providers.json"

# A parameter becomes part of a host name or a path segment: nothing that could
# end the host, start a path or a query, or name another host. Used with fullmatch:
# ``$`` alone would let a final newline through.
PARAM_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
URL_KEYS = ("auth_url", "token_url", "revocation_url", "issuer", "device_authorization_url")


@dataclass(frozen=True)
class ErrorCodes:
    """A provider's own ``error`` codes, where they differ from RFC 6749's: which mean "try later", which "stop".

    Codes in neither list are unclear: retried, but only for a bounded time.
    """

    transient: frozenset[str] = frozenset()
    permanent: frozenset[str] = frozenset()

    @classmethod
    def from_data(cls, raw: Mapping[str, Any]) -> ErrorCodes:
        unknown = set(raw) - {"transient", "permanent"}
        if unknown:
            raise ValueError(f"error_codes: unknown keys {sorted(unknown)}")
        return cls(frozenset(raw.get("transient", ())), frozenset(raw.get("permanent", ())))


NO_ERROR_CODES = ErrorCodes()


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    grant_types: tuple[str, ...]
    token_url: str
    auth_method: str
    pkce: bool
    auth_url: str | None = None
    revocation_url: str | None = None
    issuer: str | None = None
    device_authorization_url: str | None = None
    params: Mapping[str, str | None] = field(default_factory=dict)
    extra_auth_params: Mapping[str, str] = field(default_factory=dict)
    extra_token_params: Mapping[str, str] = field(default_factory=dict)
    offline_scopes: tuple[str, ...] = ()
    quirks: tuple[str, ...] = ()
    error_codes: ErrorCodes = NO_ERROR_CODES
    # Refreshes per second this provider takes from one client, where it is known to limit them:
    # replaces TOKENKEEPER_MAX_REFRESH_RATE for its integrations.
    max_refresh_rate: float | None = None
    # JWT bearer grant: claims every assertion of this provider carries (a null leaves a default out),
    # and whether the scopes travel as the assertion's ``scope`` claim instead of a parameter (Google).
    assertion_claims: Mapping[str, Any] = field(default_factory=dict)
    scope_in_assertion: bool = False
    # Claims the spec must give itself (Box's enterprise id, Salesforce's username as sub).
    required_claims: tuple[str, ...] = ()

    @classmethod
    def from_data(cls, name: str, raw: Mapping[str, Any]) -> Preset:
        data = dict(raw)
        for key in ("grant_types", "offline_scopes", "quirks", "required_claims"):
            if key in data:
                data[key] = tuple(data[key])
        if "error_codes" in data:
            data["error_codes"] = ErrorCodes.from_data(data["error_codes"])
        return cls(name=name, **data)

    def urls(self, values: Mapping[str, str]) -> dict[str, str]:
        """The preset's URLs with its parameters filled in."""
        return {
            key: PLACEHOLDER.sub(lambda match: values[match.group(1)], url)
            for key in URL_KEYS
            if (url := getattr(self, key))
        }


@functools.cache
def presets() -> Mapping[str, Preset]:
    raw = json.loads(PRESETS_FILE.read_text())
    return {name: Preset.from_data(name, entry) for name, entry in raw.items()}


def error_codes(provider: str | None) -> ErrorCodes:
    """The named provider's own error codes; none for a hand-written spec or an unknown name."""
    preset = presets().get(provider) if provider else None
    return preset.error_codes if preset is not None else NO_ERROR_CODES


def max_refresh_rate(provider: str | None) -> float | None:
    """The named provider's own refresh rate cap; None: the operator's default applies."""
    preset = presets().get(provider) if provider else None
    return preset.max_refresh_rate if preset is not None else None


def scope_in_assertion(provider: str | None) -> bool:
    """Whether the named provider wants the scopes inside a JWT bearer assertion, not as a parameter."""
    preset = presets().get(provider) if provider else None
    return preset.scope_in_assertion if preset is not None else False


def expand_preset(data: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with its provider's preset filled in; a spec without ``provider`` comes back as is."""
    spec = from_service_account_file(data)
    name = spec.get("provider")
    if name is None:
        if spec.get("provider_params"):
            raise SpecError({"provider_params": ["only used together with provider"]})
        return spec
    known = presets()
    if not isinstance(name, str) or name not in known:
        raise SpecError({"provider": [f"unknown provider {name!r}; known: {', '.join(sorted(known))}"]})
    preset = known[name]
    values = _param_values(preset, spec.get("provider_params", {}))
    grant = spec.setdefault("grant_type", preset.grant_types[0])
    if grant not in preset.grant_types:
        raise SpecError({"grant_type": [f"{preset.title} supports {', '.join(preset.grant_types)}"]})
    urls = preset.urls(values)
    if grant == "refresh_token":
        spec.setdefault("refresh_url", urls["token_url"])
    else:
        spec.setdefault("token_url", urls["token_url"])
    if grant == "authorization_code":
        if "auth_url" in urls:
            spec.setdefault("auth_url", urls["auth_url"])
        spec.setdefault("pkce", preset.pkce)
        spec["extra_auth_params"] = {**preset.extra_auth_params, **_mapping(spec.get("extra_auth_params"))}
        if preset.offline_scopes:
            spec["scopes"] = _with_offline_scopes(spec.get("scopes"), preset.offline_scopes)
    for key in ("revocation_url", "issuer"):
        if key in urls:
            spec.setdefault(key, urls[key])
    if grant == "device_code" and "device_authorization_url" in urls:
        spec.setdefault("device_authorization_url", urls["device_authorization_url"])
    spec.setdefault("auth_method", preset.auth_method)
    if grant == "jwt_bearer" and preset.assertion_claims:
        claims = {key: _filled(value, values) for key, value in preset.assertion_claims.items()}
        spec["assertion_claims"] = {**claims, **_mapping(spec.get("assertion_claims"))}
    if grant == "jwt_bearer":
        missing = [claim for claim in preset.required_claims if not _mapping(spec.get("assertion_claims")).get(claim)]
        if missing:
            raise SpecError({f"assertion_claims.{claim}": [f"required by provider {preset.name}"] for claim in missing})
    if preset.extra_token_params:
        spec["extra_token_params"] = {**preset.extra_token_params, **_mapping(spec.get("extra_token_params"))}
    return spec


# The preset a Google service-account key file brings, unless the spec names a provider or token_url itself.
SERVICE_ACCOUNT_PRESET = "google-service-account"


def is_service_account_file(text: Any) -> bool:
    """Whether ``text`` looks like a key file (JSON), not a PEM key; :func:`from_service_account_file` checks it."""
    return isinstance(text, str) and text.lstrip().startswith("{")


def from_service_account_file(data: Mapping[str, Any]) -> dict[str, Any]:
    """A Google service-account key file given as ``private_key``, taken as it is.

    Its key signs, its ``client_email`` is the client (the assertion's issuer), its
    ``private_key_id`` the key id, its ``token_uri`` the token endpoint; the grant is the
    JWT bearer grant with the ``google-service-account`` preset. Whatever the spec says
    itself wins. Nothing of the file is quoted in an error.
    """
    spec = dict(data)
    text = spec.get("private_key")
    if not isinstance(text, str) or not is_service_account_file(text):
        return spec
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    required = ("private_key", "client_email")
    if (
        not isinstance(document, dict)
        or document.get("type") != "service_account"
        or not all(isinstance(document.get(key), str) and document[key] for key in required)
    ):
        raise SpecError(
            {
                "private_key": [
                    "is JSON but not a service-account key file (one with type service_account, "
                    "private_key and client_email); give a PEM private key or the key file as Google issued it"
                ]
            }
        )
    spec["private_key"] = document["private_key"]
    spec.setdefault("grant_type", "jwt_bearer")
    spec.setdefault("client_id", document["client_email"])
    if isinstance(document.get("private_key_id"), str) and document["private_key_id"]:
        spec.setdefault("key_id", document["private_key_id"])
    if spec["grant_type"] == "jwt_bearer":
        spec.setdefault("provider", SERVICE_ACCOUNT_PRESET)
        if isinstance(document.get("token_uri"), str) and document["token_uri"]:
            # Checked like any token_url; the preset's is Google's own, the same for every key Google issues.
            spec.setdefault("token_url", document["token_uri"])
    return spec


def _param_values(preset: Preset, given: Any) -> dict[str, str]:
    if not isinstance(given, Mapping):
        raise SpecError({"provider_params": ["must be an object of strings"]})
    errors: dict[str, list[str]] = {}
    for key, value in given.items():
        if key not in preset.params:
            expected = ", ".join(preset.params) or "none"
            errors[f"provider_params.{key}"] = [f"not a parameter of {preset.title} (it takes: {expected})"]
        elif not isinstance(value, str) or not PARAM_PATTERN.fullmatch(value):
            errors[f"provider_params.{key}"] = ["must be a host name or identifier (letters, digits, '.', '-')"]
    values = {key: default for key, default in preset.params.items() if default is not None}
    values.update({key: value for key, value in given.items() if isinstance(value, str)})
    for key in preset.params:
        if key not in values:
            errors[f"provider_params.{key}"] = [f"required by provider {preset.name}"]
    if errors:
        raise SpecError(errors)
    return values


def _filled(value: Any, values: Mapping[str, str]) -> Any:
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], value) if isinstance(value, str) else value


def _mapping(value: Any) -> Mapping[str, Any]:
    # A wrong type is left for the spec schema to report; here it only must not break the merge.
    return value if isinstance(value, Mapping) else {}


def _with_offline_scopes(scopes: Any, offline: tuple[str, ...]) -> Any:
    """Add the scopes without which the provider issues no refresh token."""
    if scopes is None:
        scopes = []
    if isinstance(scopes, str):
        scopes = scopes.split()
    if not isinstance(scopes, list):
        return scopes
    return scopes + [scope for scope in offline if scope not in scopes]
