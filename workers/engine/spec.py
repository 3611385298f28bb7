"""The integration spec: validation of what producers send, and its stored form.

Plain Python and marshmallow only. ``validate_spec`` is the single door every spec
goes through (create, update, re-validation of a stored spec), so the rules of
``docs/contract.md`` live here once.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from workers.errors import SpecError
from workers.oauth.addresses import AddressPolicy, is_loopback
from workers.oauth.assertions import KEY_ALGS, MAX_LIFETIME, UnusableKey, alg_problem, parse_key
from workers.oauth.client_tls import certificate_problems
from workers.oauth.providers import expand_preset, is_service_account_file, max_refresh_rate

if TYPE_CHECKING:
    from workers.crypto.secretbox import SecretBox
    from workers.store import IntegrationRecord

GRANT_TYPES = (
    "client_credentials",
    "authorization_code",
    "refresh_token",
    "jwt_bearer",
    "device_code",
    "token_exchange",
)
AUTH_METHODS = (
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
    "none",
)
# Grants whose every token is had afresh from what the spec holds: no refresh token to keep.
STANDALONE_GRANTS = ("client_credentials", "jwt_bearer", "token_exchange")
# Client authentication that proves itself without a client secret.
SECRETLESS_AUTH = ("private_key_jwt", "tls_client_auth", "none")
# RFC 7518 §3.2: an HS256 key at least as long as the hash.
MIN_JWT_SECRET = 32
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
# fullmatch, not match: ``$`` also matches before a final newline, and "svc\n" is no name.
_NAME = re.compile(NAME_PATTERN)
_PROJECT = re.compile(r"[A-Za-z0-9_./-]{1,100}")

# Which grant types each optional or conditional field belongs to.
FIELD_GRANTS: dict[str, tuple[str, ...]] = {
    "token_url": ("client_credentials", "authorization_code", "jwt_bearer", "device_code", "token_exchange"),
    "subject_token": ("token_exchange",),
    "subject_integration": ("token_exchange",),
    "subject_token_type": ("token_exchange",),
    "requested_token_type": ("token_exchange",),
    "device_authorization_url": ("device_code",),
    "assertion_claims": ("jwt_bearer",),
    "auth_url": ("authorization_code",),
    "refresh_url": ("refresh_token",),
    "refresh_token": ("refresh_token",),
    "pkce": ("authorization_code",),
    "extra_auth_params": ("authorization_code",),
}
REQUIRED_BY_GRANT: dict[str, tuple[str, ...]] = {
    "client_credentials": ("token_url",),
    "authorization_code": ("token_url", "auth_url"),
    "refresh_token": ("refresh_url", "refresh_token"),
    "jwt_bearer": ("token_url", "private_key"),
    "device_code": ("token_url", "device_authorization_url"),
    "token_exchange": ("token_url",),
}
SECRET_FIELDS = ("client_secret", "refresh_token", "private_key", "client_key", "subject_token")
# Newer optional fields, left out of the stored spec when empty (specs stored before them stay as they were).
_OMITTED_WHEN_EMPTY = frozenset({"assertion_claims", "resource", "exchangeable_by"})
# Claims of a JWT bearer assertion that are ours to set for every request.
FRESH_CLAIMS = frozenset({"iat", "exp", "nbf", "jti"})
URL_FIELDS = ("token_url", "auth_url", "refresh_url", "issuer", "revocation_url", "device_authorization_url")


@dataclass(frozen=True)
class IntegrationSpec:
    name: str
    grant_type: str
    client_id: str
    client_secret: str = field(default="", repr=False)
    token_url: str | None = None
    auth_url: str | None = None
    refresh_url: str | None = None
    refresh_token: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = ()
    auth_method: str = "client_secret_basic"
    pkce: bool = True
    extra_auth_params: Mapping[str, str] = field(default_factory=dict)
    extra_token_params: Mapping[str, str] = field(default_factory=dict)
    provider: str | None = None
    provider_params: Mapping[str, str] = field(default_factory=dict)
    issuer: str | None = None
    revocation_url: str | None = None
    # Keys that sign: the JWT bearer grant's assertions and private_key_jwt client assertions.
    private_key: str | None = field(default=None, repr=False)
    key_id: str | None = None
    signing_alg: str | None = None
    assertion_claims: Mapping[str, Any] = field(default_factory=dict)
    # The aud of client assertions, where the server wants other than its token endpoint (e.g. its issuer).
    assertion_audience: str | None = None
    # RFC 8693 / RFC 8707: who the token is for, sent with every token request of any grant.
    audience: str | None = None
    resource: tuple[str, ...] = ()
    # tls_client_auth (RFC 8705 §2): the certificate presented on the TLS connection, and its key.
    client_certificate: str | None = field(default=None, repr=False)
    client_key: str | None = field(default=None, repr=False)
    # RFC 8628 §3.1: where a device_code integration asks for its user code.
    device_authorization_url: str | None = None
    # RFC 8693: the token to exchange (a secret), or the integration whose access token is exchanged.
    subject_token: str | None = field(default=None, repr=False)
    subject_integration: str | None = None
    subject_token_type: str | None = None
    requested_token_type: str | None = None
    # Which integrations may exchange this one's access token (RFC 8693 subject_integration): none unless named.
    exchangeable_by: tuple[str, ...] = ()
    # The project of the file `tokenkeeper apply` keeps this integration from; its `--prune` deletes only its own.
    managed_by: str | None = None

    @property
    def endpoint(self) -> str:
        """Where tokens are requested: ``refresh_url`` for the refresh_token grant."""
        url = self.refresh_url if self.grant_type == "refresh_token" else self.token_url
        assert url is not None  # guaranteed by validation
        return url

    def public_fields(self) -> dict[str, Any]:
        """The spec as JSON-safe data without its secrets (what may be shown and stored plainly).

        Field by field rather than ``dataclasses.asdict``, which deep-copies every value recursively and
        was 6 % of a worker's time in a bulk creation; mappings are still copied, so what is returned
        shares nothing mutable with the spec.
        """
        data: dict[str, Any] = {}
        for key in _PUBLIC_FIELDS:
            value = getattr(self, key)
            if value is None or not (value or key not in _OMITTED_WHEN_EMPTY):
                continue
            if self.grant_type not in FIELD_GRANTS.get(key, GRANT_TYPES):
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = copy.deepcopy(dict(value)) if value else {}
            data[key] = value
        return data

    def rate_fields(self) -> dict[str, str]:
        """Stored beside the spec for the scheduler: the rate cap's bucket (the token endpoint's host) and the
        provider's own cap, if its preset has one."""
        cap = max_refresh_rate(self.provider)
        host = (urlsplit(self.endpoint).hostname or "").lower()
        return {"rate_host": host, "rate_cap": "" if cap is None else repr(cap)}

    def secrets(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SECRET_FIELDS if getattr(self, name)}


class _Scopes(fields.Field[tuple[str, ...]]):
    """A list of strings, or one space-separated string; stored as a tuple."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            return tuple(value.split())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            scopes: list[str] = []
            for item in value:
                if not item.strip() or len(item.split()) != 1:
                    raise ValidationError("each scope must be one non-empty word without spaces")
                scopes.append(item.strip())
            return tuple(scopes)
        raise ValidationError("must be a list of strings or one space-separated string")


class _StrictBoolean(fields.Field[bool]):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class _Url(fields.String):
    """An absolute http(s) URL; plain http only to loopback or operator-allowed hosts."""

    def __init__(self, insecure_hosts: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.insecure_hosts = {host.lower() for host in insecure_hosts}
        self.addresses = AddressPolicy()

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            parts = urlsplit(text)
            host = parts.hostname
            parts.port  # noqa: B018 -- raises ValueError on a bad port
        except ValueError as exc:
            raise ValidationError(f"is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise ValidationError("must be an http:// or https:// URL")
        if not host:
            raise ValidationError("must name a host")
        if parts.username or parts.password:
            raise ValidationError("must not carry credentials; use client_id and client_secret")
        if parts.fragment:
            raise ValidationError("must not have a #fragment")
        problem = self.addresses.check_host(host)
        if problem:
            raise ValidationError(f"must not point at {host}: {problem}")
        if parts.scheme == "http" and not (is_loopback(host) or host.lower() in self.insecure_hosts):
            raise ValidationError(
                f"plain http:// is only allowed to loopback hosts; use https:// for {host!r} "
                "(or list the host in TOKENKEEPER_INSECURE_HTTP_HOSTS)"
            )
        return text


class _Resources(fields.Field[tuple[str, ...]]):
    """RFC 8707 §2: one absolute URI, or several, each without a fragment."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(item, str) for item in items):
            raise ValidationError("must be an absolute URI or a list of them")
        for item in items:
            parts = urlsplit(item)
            if not parts.scheme or not (parts.netloc or parts.path) or "#" in item or item != item.strip():
                raise ValidationError(f"{item[:100]!r} is not an absolute URI without a #fragment (RFC 8707 §2)")
        return tuple(items)


# What public_fields reads, in the spec's order: every field but the secrets.
_PUBLIC_FIELDS = tuple(item.name for item in dataclasses.fields(IntegrationSpec) if item.name not in SECRET_FIELDS)


def _valid_claims(value: Mapping[str, Any]) -> None:
    """What a JWT bearer assertion may be told: its standard claims, a lifetime, and a provider's own claims."""
    problems: list[str] = []
    for key, claim in value.items():
        if key in FRESH_CLAIMS:
            problems.append(f"{key} is set afresh for every request")
        elif key == "lifetime":
            if isinstance(claim, bool) or not isinstance(claim, int) or not 1 <= claim <= MAX_LIFETIME:
                problems.append(f"lifetime must be a whole number of seconds from 1 to {MAX_LIFETIME}")
        elif claim is None:
            if key not in ("iss", "sub", "aud"):
                problems.append(f"{key}: null only leaves out one of iss, sub, aud")
        elif not isinstance(claim, str | int | float | bool) and not (
            isinstance(claim, list) and all(isinstance(item, str) for item in claim)
        ):
            problems.append(f"{key} must be a string, a number, true/false or a list of strings")
    if problems:
        raise ValidationError("; ".join(problems))


def _token_type_uri(value: str) -> None:
    # RFC 8693 §3: token types are URIs (urn:ietf:params:oauth:token-type:…, or a provider's own).
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S{1,500}", value):
        raise ValidationError("must be a token type URI such as urn:ietf:params:oauth:token-type:access_token")


def _valid_project(value: str) -> None:
    if not _PROJECT.fullmatch(value):
        raise ValidationError("must be 1 to 100 letters, digits, or _ - . / characters (a project's name)")


def _valid_name(value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValidationError("must start with a letter and contain only letters, digits, _ and - (at most 64)")


# Request parameters that carry a credential. In a parameter map they would travel and rest in clear
# (maps are public fields, shown by `show` and the status page; auth parameters even reach the browser),
# so a secret smuggled there is refused: each has a sealed field of its own, or is ours to set.
SECRET_PARAMETERS = frozenset(
    {
        "client_secret",
        "client_assertion",
        "refresh_token",
        "access_token",
        "id_token",
        "code",
        "code_verifier",
        "password",
        "assertion",
        "subject_token",
        "actor_token",
        "device_code",
        "private_key",
        "client_key",
    }
)


def _no_secret_parameters(value: Mapping[str, str]) -> None:
    smuggled = sorted(key for key in value if key.strip().lower() in SECRET_PARAMETERS)
    if smuggled:
        raise ValidationError(
            f"{', '.join(smuggled)} would travel and be stored in clear here; secrets go in "
            "their own (sealed) spec fields"
        )


def _string_map() -> fields.Dict:
    return fields.Dict(keys=fields.String(), values=fields.String(), validate=_no_secret_parameters)


class SpecSchema(Schema):
    class Meta:
        unknown = RAISE

    def __init__(
        self, *, insecure_hosts: Iterable[str] = (), addresses: AddressPolicy | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        for name in URL_FIELDS:
            url_field: Any = self.fields[name]
            url_field.insecure_hosts = {h.lower() for h in insecure_hosts}
            url_field.addresses = addresses or AddressPolicy()

    name = fields.String(required=True, validate=_valid_name)
    grant_type = fields.String(required=True, validate=validate.OneOf(GRANT_TYPES))
    client_id = fields.String(required=True, validate=validate.Length(min=1))
    client_secret = fields.String(validate=validate.Length(min=1))
    token_url = _Url()
    auth_url = _Url()
    refresh_url = _Url()
    refresh_token = fields.String(validate=validate.Length(min=1))
    scopes = _Scopes()
    auth_method = fields.String(validate=validate.OneOf(AUTH_METHODS))
    pkce = _StrictBoolean()
    extra_auth_params = _string_map()
    extra_token_params = _string_map()
    provider = fields.String()
    provider_params = _string_map()
    issuer = _Url()
    revocation_url = _Url()
    private_key = fields.String(validate=validate.Length(min=1))
    key_id = fields.String(validate=validate.Length(min=1, max=256))
    signing_alg = fields.String(validate=validate.OneOf(KEY_ALGS))
    assertion_claims = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), validate=_valid_claims)
    assertion_audience = fields.String(validate=validate.Length(min=1))
    audience = fields.String(validate=validate.Length(min=1))
    resource = _Resources()
    client_certificate = fields.String(validate=validate.Length(min=1))
    client_key = fields.String(validate=validate.Length(min=1))
    device_authorization_url = _Url()
    subject_token = fields.String(validate=validate.Length(min=1))
    subject_integration = fields.String(validate=_valid_name)
    subject_token_type = fields.String(validate=_token_type_uri)
    requested_token_type = fields.String(validate=_token_type_uri)
    exchangeable_by = fields.List(fields.String(validate=_valid_name), validate=validate.Length(max=100))
    managed_by = fields.String(validate=_valid_project)

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _fits_grant_type(self, data: dict[str, Any], original: dict[str, Any], **kwargs: Any) -> None:
        # ``original``: a field that failed its own validation is absent from ``data``
        # but must not be reported as missing as well.
        grant = data.get("grant_type")
        if grant not in GRANT_TYPES:
            return
        errors: dict[str, list[str]] = {}
        for name, grants in FIELD_GRANTS.items():
            if name in original and grant not in grants:
                errors[name] = [f"not used by grant_type {grant}; only by {', '.join(grants)}"]
        for name in REQUIRED_BY_GRANT[grant]:
            if name not in original:
                errors[name] = [f"required for grant_type {grant}"]
        if grant == "token_exchange":
            given = [name for name in ("subject_token", "subject_integration") if name in original]
            if len(given) != 1:
                errors["subject_token"] = ["give either subject_token or subject_integration (exactly one)"]
            elif data.get("subject_integration") and data.get("subject_integration") == data.get("name"):
                errors["subject_integration"] = ["cannot be the integration itself"]
        for name, problem in _credential_problems(data, original, grant).items():
            errors.setdefault(name, []).append(problem)
        if errors:
            raise ValidationError(errors)

    @post_load
    def _default_auth_method(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data.setdefault("auth_method", default_auth_method(data))
        if "exchangeable_by" in data:
            data["exchangeable_by"] = tuple(dict.fromkeys(data["exchangeable_by"]))
        return data


def default_auth_method(data: Mapping[str, Any]) -> str:
    """HTTP Basic with a client secret. Without one, a JWT bearer grant authenticates by its assertion alone,
    and a device (a CLI, a TV) is usually a public client."""
    if data.get("grant_type") in ("jwt_bearer", "device_code") and not data.get("client_secret"):
        return "none"
    return "client_secret_basic"


def _certificate_problems(
    data: Mapping[str, Any], original: Mapping[str, Any], method: str, signs: bool
) -> dict[str, str]:
    pair = ("client_certificate", "client_key")
    if method != "tls_client_auth" and signs:
        # A signing key's certificate: its thumbprint names the key to servers that want it so (Entra ID).
        found_problems: dict[str, str] = {}
        if "client_key" in original:
            found_problems["client_key"] = "only used by auth_method tls_client_auth; a signing key goes in private_key"
        certificate, pem = data.get("client_certificate"), data.get("private_key")
        if certificate and pem:
            found = certificate_problems(certificate, pem, time.time())
            found_problems.update({"private_key" if k == "client_key" else k: text for k, text in found.items()})
        return found_problems
    if method != "tls_client_auth":
        return {
            name: "only used by auth_method tls_client_auth (or, the certificate, with a signing private_key)"
            for name in pair
            if name in original
        }
    missing = {name: "required with auth_method tls_client_auth" for name in pair if name not in original}
    if missing:
        return missing
    problems: dict[str, str] = {}
    for name in ("token_url", "refresh_url", "revocation_url", "device_authorization_url"):
        if str(data.get(name, "")).lower().startswith("http:"):
            problems[name] = "must be https:// with auth_method tls_client_auth (the certificate goes over TLS)"
    certificate, key = data.get("client_certificate"), data.get("client_key")
    if certificate and key:
        # The wall clock: a certificate is valid or expired by the time of day, whatever clock refreshes run by.
        problems.update(certificate_problems(certificate, key, time.time()))
    return problems


def _credential_problems(data: Mapping[str, Any], original: Mapping[str, Any], grant: str) -> dict[str, str]:
    """What is missing or does not fit in how the client authenticates and what it signs with."""
    problems: dict[str, str] = {}
    given = "auth_method" in original
    method = data.get("auth_method") or ("" if given else default_auth_method(original))
    if method and method not in SECRETLESS_AUTH and "client_secret" not in original:
        problems["client_secret"] = (
            f"required with auth_method {method}"
            if given
            else f"required (or an auth_method that needs none: {', '.join(SECRETLESS_AUTH)})"
        )
    secret = data.get("client_secret")
    if method == "client_secret_jwt" and secret and len(secret.encode()) < MIN_JWT_SECRET:
        problems["client_secret"] = (
            f"client_secret_jwt signs with HS256, which needs a secret of at least {MIN_JWT_SECRET} bytes "
            "(RFC 7518 §3.2)"
        )
    signs = grant == "jwt_bearer" or method == "private_key_jwt"
    if method == "private_key_jwt" and "private_key" not in original:
        problems["private_key"] = "required with auth_method private_key_jwt"
    if not signs:
        for name in ("private_key", "key_id", "signing_alg"):
            if name in original:
                problems[name] = "only used by grant_type jwt_bearer or auth_method private_key_jwt"
    if "assertion_audience" in original and method not in ("client_secret_jwt", "private_key_jwt"):
        problems["assertion_audience"] = "only used by auth_method client_secret_jwt or private_key_jwt"
    problems.update(_certificate_problems(data, original, method, signs))
    pem = data.get("private_key")
    if signs and pem:
        try:
            key = parse_key(pem)
        except UnusableKey as exc:
            problems["private_key"] = str(exc)
        else:
            problem = alg_problem(key, data.get("signing_alg"))
            if problem:
                problems["signing_alg" if data.get("signing_alg") else "private_key"] = problem
    return problems


# Building a schema (marshmallow deep-copies every field) costs more than validating a spec with it:
# each thread keeps the ones it built, for the few URL policies a process uses.
_schemas = threading.local()


def _schema(insecure_hosts: frozenset[str], addresses: AddressPolicy) -> SpecSchema:
    built: dict[tuple[frozenset[str], AddressPolicy], SpecSchema] = _schemas.__dict__.setdefault("built", {})
    key = (insecure_hosts, addresses)
    schema = built.get(key)
    if schema is None:
        if len(built) >= 16:
            built.clear()
        schema = built[key] = SpecSchema(insecure_hosts=insecure_hosts, addresses=addresses)
    return schema


def validate_spec(
    data: Any, *, insecure_hosts: Iterable[str] = (), addresses: AddressPolicy | None = None
) -> IntegrationSpec:
    """Return the validated spec, or raise :class:`SpecError` naming every bad field."""
    if not isinstance(data, Mapping):
        raise SpecError({"_spec": ["must be a JSON object"]})
    schema = _schema(frozenset(host.lower() for host in insecure_hosts), addresses or AddressPolicy())
    try:
        loaded = schema.load(expand_preset(data))
    except ValidationError as exc:
        raise SpecError(_flatten(exc.messages)) from None
    return IntegrationSpec(**loaded)


def check_url(
    name: str, value: Any, *, insecure_hosts: Iterable[str] = (), addresses: AddressPolicy | None = None
) -> str:
    """One URL checked by the rules of the spec's URL fields, before anything is fetched from it."""
    url = _Url(insecure_hosts=insecure_hosts)
    url.addresses = addresses or AddressPolicy()
    try:
        return url.deserialize(value)
    except ValidationError as exc:
        raise SpecError({name: [str(message) for message in exc.messages]}) from None


def merge_changes(current: IntegrationSpec, changes: Any) -> dict[str, Any]:
    """The spec data after applying ``changes``; ``name`` and ``grant_type`` stay fixed."""
    if not isinstance(changes, Mapping):
        raise SpecError({"_changes": ["must be a JSON object"]})
    errors = {
        key: ["cannot change"]
        for key in ("name", "grant_type")
        if key in changes and changes[key] != getattr(current, key)
    }
    if errors:
        raise SpecError(errors)
    # A refresh token an authorization (or a provider) left is the grant's state, not part of the spec the
    # update is validated as; the caller keeps what it must.
    spec_secrets = {
        key: value
        for key, value in current.secrets().items()
        if current.grant_type in FIELD_GRANTS.get(key, GRANT_TYPES)
    }
    merged = {**current.public_fields(), **spec_secrets}
    if is_service_account_file(changes.get("private_key")):
        # A new key file brings its own client, key id and endpoint (a rotated key), unless the change names them.
        for key in ("client_id", "key_id", "token_url"):
            if key not in changes:
                merged.pop(key, None)
    if "provider" in changes or "provider_params" in changes:
        # The preset's URLs follow a new provider or tenant unless the change names them itself.
        for key in URL_FIELDS:
            merged.pop(key, None)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)  # null removes an optional field
        else:
            merged[key] = value
    return merged


# Sealed beside the spec's secrets but no part of the spec: a grant's own state (RFC 8628's device code).
GRANT_STATE_SECRETS = frozenset({"device_code"})


def spec_from_stored(public: Mapping[str, Any], secrets: Mapping[str, str]) -> IntegrationSpec:
    """Rebuild a spec that was validated before it was stored."""
    data: dict[str, Any] = {**public, **{k: v for k, v in secrets.items() if k not in GRANT_STATE_SECRETS}}
    data["scopes"] = tuple(data.get("scopes", ()))
    data["resource"] = tuple(data.get("resource", ()))
    data["exchangeable_by"] = tuple(data.get("exchangeable_by", ()))
    return IntegrationSpec(**data)


def stored_spec(record: IntegrationRecord, box: SecretBox) -> IntegrationSpec:
    """The whole spec of a stored integration, its secrets opened with ``box``."""
    return spec_from_stored(record.public, box.open(record.sealed_secrets))


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    flat: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = str(key) if key != "_schema" else "_spec"
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(value, Mapping):
                flat.update(_flatten(value, path))
            else:
                flat[path] = [str(item) for item in (value if isinstance(value, list) else [value])]
    else:
        flat[prefix or "_spec"] = [str(messages)]
    return flat


__all__ = ["EXCLUDE", "IntegrationSpec", "SpecSchema", "merge_changes", "spec_from_stored", "validate_spec"]
