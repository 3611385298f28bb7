"""A client for OAuth 2.0 token endpoints (RFC 6749 §3.2, §4.1.3, §4.4, §6).

The HTTP session and clock are passed in; the session is guarded by the address
policy (:mod:`workers.oauth.transport`), so every request goes only to an address that
was checked just before. Redirects are never followed, so a 307 can never resend
a refresh token or client secret to another host. Bodies
are read up to a size cap, and every request ends by its deadline, connect +
read timeout, however slowly the server answers. Every failure becomes a :class:`ProviderError` whose
type says whether a retry can help (:func:`classify`).

A token answer is read so that nothing in it can raise once its access token is found: a lifetime
of ``1e400``, ``"Infinity"`` or a JWT ``exp`` far off is clamped to :data:`MAX_LIFETIME`, so the
rotated refresh token it carries always reaches the caller.
"""

from __future__ import annotations

import base64
import json
import math
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote_plus, urlsplit

import requests

from workers.clock import Clock
from workers.errors import (
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    UnclearProviderError,
    scrub,
)
from workers.oauth.addresses import AddressPolicy
from workers.oauth.assertions import (
    CLIENT_ASSERTION_TYPE,
    DEFAULT_LIFETIME,
    JWT_BEARER_GRANT,
    Signer,
    UnusableKey,
    client_assertion,
    grant_assertion,
    key_signer,
    secret_signer,
)
from workers.oauth.client_tls import certificate_expiry, client_context, thumbprints
from workers.oauth.providers import NO_ERROR_CODES, ErrorCodes, error_codes, scope_in_assertion
from workers.oauth.transport import (
    TRANSIENT_STATUSES,
    DeadlinePassed,
    ForbiddenAddressError,
    Streamed,
    guard,
    iter_body,
    post_form,
    retry_after_seconds,
)

# RFC 6749 §5.2 codes (and access_denied): on a 4xx, the same request will fail again until a person acts.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
        # RFC 8707 §2: the resource or audience asked for is not one the server serves.
        "invalid_target",
    }
)
# Codes some providers send from the token endpoint for passing trouble.
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})

# RFC 8693 §2.1 and §3.
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 -- a grant URN
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 -- a URN naming a kind of token
# RFC 8628 §3.4.
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# RFC 8628 §3.2: the interval when the server names none; and what a device code may live, at most.
DEFAULT_DEVICE_INTERVAL = 5.0
MAX_DEVICE_LIFETIME = 86400.0
# A user code is read out to a person: one short line of printable text.
MAX_USER_CODE = 64

# No token is trusted for longer than a year, whatever its expires_in or exp says.
MAX_LIFETIME = 365 * 86400.0


class ClientSpec(Protocol):
    """What a token or revocation request needs to know of an integration.

    The engine's ``IntegrationSpec`` has all of it; the protocol layer names only what it reads,
    so it never depends on how integrations are validated or kept.
    """

    @property
    def grant_type(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def client_secret(self) -> str: ...
    @property
    def refresh_token(self) -> str | None: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...
    @property
    def auth_method(self) -> str: ...
    @property
    def extra_token_params(self) -> Mapping[str, str]: ...
    @property
    def revocation_url(self) -> str | None: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def token_url(self) -> str | None: ...
    @property
    def private_key(self) -> str | None: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def signing_alg(self) -> str | None: ...
    @property
    def assertion_claims(self) -> Mapping[str, Any]: ...
    @property
    def assertion_audience(self) -> str | None: ...
    @property
    def audience(self) -> str | None: ...
    @property
    def resource(self) -> tuple[str, ...]: ...
    @property
    def device_authorization_url(self) -> str | None: ...
    @property
    def subject_token_type(self) -> str | None: ...
    @property
    def requested_token_type(self) -> str | None: ...
    @property
    def client_certificate(self) -> str | None: ...
    @property
    def client_key(self) -> str | None: ...


@dataclass(frozen=True)
class TokenResponse:
    access_token: str = field(repr=False)
    token_type: str
    issued_at: float
    # None when the provider gave no lifetime and the token is not a JWT with exp.
    expires_at: float | None
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None
    # OpenID Connect: says which account consented (read by the Authorization Code flow).
    id_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DeviceAuthorization:
    """RFC 8628 §3.2: what the user is to do, and what the device polls with."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_at: float
    interval: float


@dataclass(frozen=True)
class TokenClient:
    session: requests.Session
    clock: Clock
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_bytes: int = 1_048_576
    addresses: AddressPolicy = field(default_factory=AddressPolicy)

    def __post_init__(self) -> None:
        # Whatever session is passed in, its requests go through the address policy.
        guard(self.session, self.addresses)

    def obtain(self, spec: ClientSpec) -> TokenResponse:
        """A token by a grant that needs nothing kept from an earlier answer (client credentials, JWT bearer)."""
        return self.jwt_bearer(spec) if spec.grant_type == "jwt_bearer" else self.client_credentials(spec)

    def client_credentials(self, spec: ClientSpec) -> TokenResponse:
        params = {"grant_type": "client_credentials"}
        if spec.scopes:
            params["scope"] = " ".join(spec.scopes)
        return self.request(spec, params)

    def refresh(self, spec: ClientSpec, refresh_token: str) -> TokenResponse:
        params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if spec.scopes and spec.grant_type == "refresh_token":
            params["scope"] = " ".join(spec.scopes)
        return self.request(spec, params, secrets=(refresh_token,))

    def jwt_bearer(self, spec: ClientSpec) -> TokenResponse:
        """RFC 7523 §2.1: a newly signed assertion is the grant; there is no refresh token to keep."""
        claims: dict[str, Any] = {"iss": spec.client_id, "sub": spec.client_id, "aud": spec.endpoint}
        lifetime = DEFAULT_LIFETIME
        for key, value in spec.assertion_claims.items():
            if key == "lifetime":
                lifetime = int(value)
            elif value is None:
                claims.pop(key, None)  # a default left out (Google's sub names a user to act for, if any)
            else:
                claims[key] = value
        params = {"grant_type": JWT_BEARER_GRANT}
        if spec.scopes:
            if scope_in_assertion(spec.provider):
                claims["scope"] = " ".join(spec.scopes)
            else:
                params["scope"] = " ".join(spec.scopes)
        assertion = grant_assertion(self._signer(spec), claims, self.clock(), lifetime)
        return self.request(spec, {**params, "assertion": assertion}, secrets=(assertion,))

    def device_authorization(self, spec: ClientSpec) -> DeviceAuthorization:
        """RFC 8628 §3.1: a device code, and the user code and page to show a person."""
        assert spec.device_authorization_url is not None  # required by validation
        params: dict[str, str | Sequence[str]] = {}
        if spec.scopes:
            params["scope"] = " ".join(spec.scopes)
        # Who the token will be for, where the server fixes it at this step (Auth0's audience).
        if spec.audience:
            params["audience"] = spec.audience
        if spec.resource:
            params["resource"] = list(spec.resource)
        sent_at = self.clock()
        status, headers, body, assertion = self._post(
            spec, spec.device_authorization_url, params, "device authorization endpoint"
        )
        payload = _decode_body(headers.get("Content-Type", ""), body)
        if payload is not None and payload.get("error"):
            known = (spec.client_secret, assertion)
            raise _oauth_error(status, headers, payload, known, self.clock(), error_codes(spec.provider))
        if not 200 <= status < 300 or payload is None:
            raise classify(status, None)(f"http_{status}", _describe_body(body), status=status)
        return device_authorization_from(payload, sent_at)

    def token_exchange(self, spec: ClientSpec, subject_token: str) -> TokenResponse:
        """RFC 8693 §2.1: ``subject_token`` exchanged for a token for the spec's audience / resource."""
        params = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": spec.subject_token_type or ACCESS_TOKEN_TYPE,
        }
        if spec.requested_token_type:
            params["requested_token_type"] = spec.requested_token_type
        if spec.scopes:
            params["scope"] = " ".join(spec.scopes)
        return self.request(spec, params, secrets=(subject_token,))

    def poll_device(self, spec: ClientSpec, device_code: str) -> TokenResponse:
        """RFC 8628 §3.4: whether the person has finished; raises ProviderError (authorization_pending…) until then."""
        params = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
        return self.request(spec, params, secrets=(device_code,))

    def exchange_code(self, spec: ClientSpec, code: str, redirect_uri: str, code_verifier: str | None) -> TokenResponse:
        params = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            params["code_verifier"] = code_verifier
        return self.request(spec, params, secrets=(code, code_verifier))

    def request(
        self, spec: ClientSpec, params: Mapping[str, str], secrets: tuple[str | None, ...] = ()
    ) -> TokenResponse:
        sent_at = self.clock()
        form: dict[str, str | Sequence[str]] = {**spec.extra_token_params, **params}
        if spec.audience:
            form["audience"] = spec.audience
        if spec.resource:
            form["resource"] = list(spec.resource)
        status, response_headers, body, assertion = self._post(spec, spec.endpoint, form, "token endpoint")
        known_secrets = (spec.client_secret, spec.refresh_token, assertion, *secrets)
        return parse_token_response(
            status,
            response_headers,
            body,
            sent_at=sent_at,
            secrets=known_secrets,
            now=self.clock(),
            codes=error_codes(spec.provider),
        )

    def revoke(self, spec: ClientSpec, token: str, hint: str) -> None:
        """Revoke ``token`` at the spec's revocation endpoint (RFC 7009 §2.1); raises ProviderError."""
        assert spec.revocation_url is not None  # the caller checks
        status, headers, body, assertion = self._post(
            spec,
            spec.revocation_url,
            {"token": token, "token_type_hint": hint},
            "revocation endpoint",
        )
        if status == 200:
            return  # also for a token the server no longer knows (§2.2)
        payload = _decode_body(headers.get("Content-Type", ""), body) or {}
        if "error" in payload:
            known = (spec.client_secret, token, assertion)
            raise _oauth_error(status, headers, payload, known, self.clock(), error_codes(spec.provider))
        raise classify(status, None)(
            "revocation_failed",
            f"HTTP {status} from the revocation endpoint",
            status=status,
            retry_after=retry_after_seconds(headers, self.clock()),
        )

    def get_json(self, url: str, what: str) -> dict[str, Any]:
        """GET a JSON document (discovery metadata) under the same address policy and size cap."""
        try:
            with self.session.get(
                url,
                headers={"Accept": "application/json"},
                timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,
                stream=True,
            ) as response:
                body = self._read_capped(response)
                status = response.status_code
        except ForbiddenAddressError as exc:
            raise PermanentProviderError("forbidden_address", f"{what}: {exc}") from None
        except DeadlinePassed as exc:
            raise TransientProviderError("timeout", f"{what}: {exc}") from None
        except requests.RequestException as exc:
            raise TransientProviderError("request_failed", f"{what}: {type(exc).__name__}") from None
        if status != 200:
            raise PermanentProviderError("not_found", f"{what} answered HTTP {status}", status=status)
        try:
            document = json.loads(body)
        except ValueError:
            raise PermanentProviderError("invalid_metadata", f"{what} is not JSON") from None
        if not isinstance(document, dict):
            raise PermanentProviderError("invalid_metadata", f"{what} is not a JSON object")
        return document

    def _signer(self, spec: ClientSpec) -> Signer:
        try:
            prints = thumbprints(spec.client_certificate) if spec.client_certificate else None
            return key_signer(spec.private_key or "", spec.signing_alg, spec.key_id, prints)
        except UnusableKey as exc:
            # Checked when the spec was stored: only a key that no longer loads gets here; a person must act.
            raise PermanentProviderError("invalid_private_key", f"the private key cannot sign: {exc}") from None

    def _client_tls(self, spec: ClientSpec) -> ssl.SSLContext | None:
        if spec.auth_method != "tls_client_auth":
            return None
        certificate = spec.client_certificate or ""
        if certificate_expiry(certificate) <= self.clock():
            # The server would refuse the handshake, which looks like a passing connection failure: say it now.
            raise PermanentProviderError(
                "client_certificate_expired",
                "the client certificate has expired; update client_certificate and client_key",
            )
        try:
            return client_context(certificate, spec.client_key or "")
        except (ssl.SSLError, OSError) as exc:
            # Checked when the spec was stored: a pair TLS still cannot use needs a person.
            raise PermanentProviderError(
                "invalid_client_certificate", f"the client certificate cannot be used: {type(exc).__name__}"
            ) from None

    def _authenticate(self, spec: ClientSpec, data: dict[str, Any], headers: dict[str, str]) -> str | None:
        """Add the client's credentials (RFC 6749 §2.3, RFC 7523 §2.2); returns the client assertion made, if any."""
        method = spec.auth_method
        if method == "client_secret_post":
            data["client_id"] = spec.client_id
            data["client_secret"] = spec.client_secret
        elif method in ("client_secret_jwt", "private_key_jwt"):
            signer = secret_signer(spec.client_secret) if method == "client_secret_jwt" else self._signer(spec)
            # The token endpoint is the audience RFC 7523 §3 names, for revocation requests too.
            audience = spec.assertion_audience or spec.endpoint
            assertion = client_assertion(signer, spec.client_id, audience, self.clock())
            data.update(
                client_id=spec.client_id, client_assertion_type=CLIENT_ASSERTION_TYPE, client_assertion=assertion
            )
            return assertion
        elif method == "tls_client_auth":
            # RFC 8705 §2.1: the certificate on the connection authenticates; the body names the client.
            data["client_id"] = spec.client_id
        elif method == "none":
            # A public client names itself, but for the JWT bearer grant's own assertion, which already does.
            if data.get("grant_type") != JWT_BEARER_GRANT:
                data["client_id"] = spec.client_id
        else:
            headers["Authorization"] = basic_authorization(spec.client_id, spec.client_secret)
        return None

    def _post(
        self, spec: ClientSpec, url: str, params: Mapping[str, str | Sequence[str]], what: str
    ) -> tuple[int, Mapping[str, str], bytes, str | None]:
        data: dict[str, Any] = dict(params)
        headers = {"Accept": "application/json"}
        assertion = self._authenticate(spec, data, headers)
        tls = self._client_tls(spec)
        timeout = (self.connect_timeout, self.read_timeout)
        try:
            with post_form(self.session, url, data, headers, timeout, client_tls=tls) as response:
                return response.status_code, response.headers, self._read_capped(response), assertion
        except ForbiddenAddressError as exc:
            raise PermanentProviderError("forbidden_address", f"the {what}: {exc}") from None
        except DeadlinePassed as exc:
            # "timeout" like the per-read one: either way the provider may have acted on the request.
            raise TransientProviderError("timeout", f"the {what} did not answer in time: {exc}") from None
        except requests.Timeout:
            raise TransientProviderError("timeout", f"the {what} did not answer in time") from None
        except requests.ConnectionError:
            raise TransientProviderError("connection_error", f"could not connect to the {what}") from None
        except requests.RequestException as exc:
            raise TransientProviderError("request_failed", type(exc).__name__) from None

    def _read_capped(self, response: Streamed) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise TransientProviderError(
                "response_too_large",
                f"body of {declared} bytes is over the {self.max_bytes}-byte cap",
                status=response.status_code,
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in iter_body(response):
            size += len(chunk)
            if size > self.max_bytes:
                raise TransientProviderError(
                    "response_too_large",
                    f"body is over the {self.max_bytes}-byte cap",
                    status=response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)


def basic_authorization(client_id: str, client_secret: str) -> str:
    """HTTP Basic credentials as RFC 6749 §2.3.1 wants: each part form-urlencoded first."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def parse_token_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    sent_at: float,
    now: float,
    secrets: tuple[str | None, ...] = (),
    codes: ErrorCodes = NO_ERROR_CODES,
) -> TokenResponse:
    """Turn what a token endpoint answered into a token, or raise a classified error.

    ``codes``: the provider's own error codes (its preset's), consulted before RFC 6749's.
    """
    payload = _decode_body(headers.get("Content-Type", ""), body)
    if 300 <= status < 400:
        raise TransientProviderError(
            "redirect_not_followed",
            f"the token endpoint answered with a redirect to {_location_host(headers)}; "
            "redirects are never followed, check token_url",
            status=status,
        )
    if payload is not None and payload.get("error"):
        raise _oauth_error(status, headers, payload, secrets, now, codes)
    if not 200 <= status < 300:
        raise classify(status, None)(
            f"http_{status}", _describe_body(body), status=status, retry_after=retry_after_seconds(headers, now)
        )
    if payload is None:
        raise TransientProviderError(
            "malformed_response", "the token endpoint sent neither JSON nor a form", status=status
        )
    access_token = payload.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TransientProviderError("malformed_response", "the answer has no access_token", status=status)
    # From here on nothing may raise: the answer may carry a rotated refresh token, the only copy.
    refresh_token = payload.get("refresh_token")
    scope = payload.get("scope")
    id_token = payload.get("id_token")
    return TokenResponse(
        access_token=access_token,
        token_type=_token_type(payload.get("token_type")),
        issued_at=sent_at,
        expires_at=_expires_at(payload.get("expires_in"), access_token, sent_at),
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        scope=_scope(scope),
        id_token=id_token if isinstance(id_token, str) and id_token else None,
    )


def device_authorization_from(payload: Mapping[str, Any], sent_at: float) -> DeviceAuthorization:
    """The server's answer, checked: what is shown to a person must be a plain code and an http(s) page."""
    device_code, user_code = payload.get("device_code"), payload.get("user_code")
    # Google names it verification_url, as drafts of RFC 8628 did.
    page = payload.get("verification_uri") or payload.get("verification_url")
    complete = payload.get("verification_uri_complete")
    if not isinstance(device_code, str) or not device_code:
        raise TransientProviderError("malformed_response", "the device authorization answer has no device_code")
    if (
        not isinstance(user_code, str)
        or not 0 < len(user_code) <= MAX_USER_CODE
        or not user_code.isprintable()
        or user_code != user_code.strip()
    ):
        raise TransientProviderError("malformed_response", "the device authorization answer has no usable user_code")
    if not _web_page(page):
        raise TransientProviderError(
            "malformed_response", "the device authorization answer has no http(s) verification_uri"
        )
    lifetime = _number(payload.get("expires_in"))
    interval = _number(payload.get("interval"))
    return DeviceAuthorization(
        device_code=device_code,
        user_code=user_code,
        verification_uri=str(page),
        verification_uri_complete=complete if _web_page(complete) else None,
        expires_at=sent_at + (min(lifetime, MAX_DEVICE_LIFETIME) if lifetime and lifetime > 0 else 1800.0),
        interval=min(max(interval, 1.0), 3600.0) if interval is not None and interval > 0 else DEFAULT_DEVICE_INTERVAL,
    )


def _web_page(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 2048 or not value.isprintable():
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def classify(status: int, code: str | None, codes: ErrorCodes = NO_ERROR_CODES) -> type[ProviderError]:
    """Which kind of failure an answer is; in doubt, one a retry may cure.

    5xx and 429 (and 408, 425) are passing trouble whatever the body says: a gateway may wrap any
    text around them. A code the provider's preset or RFC 6749 names decides next. Anything else
    (an unknown code, a CDN or firewall page, a 4xx without a code) is unclear: retried, but only
    for the unclear-answer window, after which a person is asked to look.
    """
    if status >= 500 or status in TRANSIENT_STATUSES:
        return TransientProviderError
    if code is None:
        return UnclearProviderError
    if code in codes.transient or (code in TRANSIENT_ERRORS and code not in codes.permanent):
        return TransientProviderError
    if code in codes.permanent or code in PERMANENT_ERRORS:
        return PermanentProviderError
    return UnclearProviderError


def _decode_body(content_type: str, body: bytes) -> dict[str, Any] | None:
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    if "json" in content_type or text.startswith("{"):
        try:
            data = json.loads(text, parse_int=_json_int)
        except (ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None
    if "x-www-form-urlencoded" in content_type or "text/plain" in content_type:
        # GitHub answers in this form unless asked for JSON.
        pairs = parse_qsl(text, keep_blank_values=True)
        return dict(pairs) if pairs and "<" not in text[:1] else None
    return None


def _oauth_error(
    status: int,
    headers: Mapping[str, str],
    payload: Mapping[str, Any],
    secrets: tuple[str | None, ...],
    now: float,
    codes: ErrorCodes = NO_ERROR_CODES,
) -> ProviderError:
    code = scrub(str(payload.get("error")), secrets, limit=80)
    description = scrub(str(payload.get("error_description") or ""), secrets)
    cls = classify(status, code, codes)
    return cls(code, description, status=status, retry_after=retry_after_seconds(headers, now))


def _token_type(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        return "Bearer"
    # RFC 6749 §5.1: case-insensitive; consumers put it straight in a header.
    return "Bearer" if raw.strip().lower() == "bearer" else raw.strip()


def _json_int(digits: str) -> int | float:
    # Python refuses to turn more than 4300 digits into an int (a ValueError that would lose the whole
    # answer); so long a number is a float, and infinite.
    return int(digits) if len(digits) <= 1000 else float(digits)


def _scope(scope: Any) -> str | None:
    if isinstance(scope, list):
        return " ".join(item for item in scope if isinstance(item, str))
    return scope if isinstance(scope, str) else None


def _expires_at(expires_in: Any, access_token: str, sent_at: float) -> float | None:
    """When the token expires, its lifetime clamped to [0, MAX_LIFETIME]; None when nothing says."""
    # Counting from when the request was sent errs on the early side.
    seconds = _number(expires_in)
    if seconds is not None and seconds > 0:
        return sent_at + min(seconds, MAX_LIFETIME)
    exp = jwt_expiry(access_token)
    if exp is None:
        return None
    # An exp already past (the provider's clock behind ours) is an expired token, not a negative lifetime.
    return sent_at + min(max(exp - sent_at, 0.0), MAX_LIFETIME)


def _number(raw: Any) -> float | None:
    """``raw`` as a float; None for what is not a number (NaN, a bool, text), +inf for what is too big for one."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    except OverflowError:  # an int of hundreds of digits
        return -math.inf if isinstance(raw, int) and raw < 0 else math.inf
    return None if math.isnan(value) else value


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT access token, read without verifying it (it is only a hint)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(segment.encode()), parse_int=_json_int)
    except (ValueError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, str):
        return None
    value = _number(exp)
    # Kept finite: the caller does arithmetic with it.
    return None if value is None else max(min(value, 1e15), -1e15)


def _describe_body(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    if text.lower().startswith(("<!doctype", "<html")) or "<body" in text[:500].lower():
        return "the token endpoint sent an HTML page"
    # Unknown text may echo what we sent; report only its size.
    return f"{len(body)} bytes of unexpected body" if text else "empty body"


def _location_host(headers: Mapping[str, str]) -> str:
    location = headers.get("Location", "")
    host = urlsplit(location).hostname if location else None
    return host or "an unnamed location"
