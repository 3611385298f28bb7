"""Token responses as real providers send them, and each error class of RFC 6749 §5.2."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from workers.errors import PermanentProviderError, ProviderError, TransientProviderError, UnclearProviderError
from workers.oauth.providers import ErrorCodes, error_codes
from workers.oauth.token_client import MAX_LIFETIME, basic_authorization, classify, jwt_expiry, parse_token_response
from workers.oauth.transport import retry_after_seconds

JSON = {"Content-Type": "application/json"}
SENT = 1_000.0


def parse(status: int = 200, body: Any = None, headers: dict[str, str] | None = None, **kwargs: Any):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_token_response(
        status, headers if headers is not None else JSON, raw, sent_at=SENT, now=SENT + 1, **kwargs
    )


def jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_basic_credentials_are_form_urlencoded_before_base64() -> None:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded, then joined, then Base64 (not plain HTTPBasicAuth)."""
    header = basic_authorization("my id:1", "p@ss/word+&=")
    decoded = base64.b64decode(header.removeprefix("Basic ")).decode()
    assert decoded == "my+id%3A1:p%40ss%2Fword%2B%26%3D"


def test_a_plain_answer_gives_token_expiry_and_refresh_token() -> None:
    """access_token, expires_in counted from when the request was sent, a rotated refresh token, scope."""
    token = parse(
        body={"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt2", "scope": "a b"}
    )
    assert (token.access_token, token.token_type, token.refresh_token, token.scope) == ("at", "Bearer", "rt2", "a b")
    assert token.expires_at == SENT + 3600


def test_expires_in_as_a_string() -> None:
    """Some providers quote expires_in."""
    assert parse(body={"access_token": "at", "expires_in": "120"}).expires_at == SENT + 120


def test_no_expires_in_uses_the_jwt_exp_claim() -> None:
    """Without expires_in, a JWT access token's exp gives the expiry."""
    token = parse(body={"access_token": jwt({"exp": 5_000, "sub": "x"}), "token_type": "bearer"})
    assert token.expires_at == 5_000.0


def test_no_lifetime_at_all_leaves_expiry_unknown() -> None:
    """Neither expires_in nor a JWT: expiry unknown (the scheduler falls back to its default lifetime)."""
    assert parse(body={"access_token": "opaque", "expires_in": "soon"}).expires_at is None
    assert jwt_expiry("a.b.c") is None
    assert jwt_expiry(jwt({"exp": True})) is None


def test_no_refresh_token_in_a_refresh_answer_is_none() -> None:
    """A refresh answer without refresh_token means: keep the old one."""
    assert parse(body={"access_token": "at", "expires_in": 60}).refresh_token is None
    assert parse(body={"access_token": "at", "refresh_token": ""}).refresh_token is None


@pytest.mark.parametrize(
    ("given", "stored"), [("bearer", "Bearer"), ("BEARER", "Bearer"), (None, "Bearer"), ("MAC", "MAC")]
)
def test_token_type_in_any_case(given: str | None, stored: str) -> None:
    """token_type is case-insensitive; bearer is normalised for use in a header."""
    body: dict[str, Any] = {"access_token": "at"}
    if given is not None:
        body["token_type"] = given
    assert parse(body=body).token_type == stored


def test_form_encoded_answers_like_githubs() -> None:
    """GitHub answers application/x-www-form-urlencoded unless asked for JSON."""
    token = parse(
        body=b"access_token=gho_x&scope=repo%2Cgist&token_type=bearer",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert (token.access_token, token.scope, token.token_type) == ("gho_x", "repo,gist", "Bearer")


def test_http_200_carrying_an_error_is_an_error() -> None:
    """GitHub returns 200 with error=bad_refresh_token; that is a rejection, not a token."""
    with pytest.raises(PermanentProviderError) as caught:
        parse(
            body={"error": "bad_refresh_token", "error_description": "The refresh token passed is incorrect"},
            codes=error_codes("github"),
        )
    assert caught.value.error == "bad_refresh_token"
    assert "incorrect" in str(caught.value)


@pytest.mark.parametrize(
    "code",
    [
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "invalid_request",
        "unsupported_grant_type",
        "invalid_scope",
    ],
)
def test_rfc6749_rejections_are_permanent(code: str) -> None:
    """§5.2 error codes mean the same request will fail again: permanent, not retryable."""
    with pytest.raises(PermanentProviderError) as caught:
        parse(400, {"error": code})
    assert caught.value.error == code and caught.value.retryable is False


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (500, None),
        (502, None),
        (503, None),
        (504, None),
        (400, "temporarily_unavailable"),
        (500, "server_error"),
        (408, None),
        (429, None),
    ],
)
def test_server_trouble_is_transient(status: int, code: str | None) -> None:
    """5xx, 408, 429 and the temporary error codes are worth retrying."""
    body = {"error": code} if code else {"message": "oops"}
    with pytest.raises(TransientProviderError) as caught:
        parse(status, body)
    assert caught.value.retryable is True


def test_retry_after_in_seconds_and_as_a_date() -> None:
    """429 with Retry-After in either RFC 9110 form is carried on the error."""
    with pytest.raises(TransientProviderError) as caught:
        parse(429, b"slow down", headers={"Retry-After": "30"})
    assert caught.value.retry_after == 30.0
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 1970 00:20:00 GMT"}, now=1_000.0) == 200.0
    assert retry_after_seconds({"Retry-After": "whenever"}, now=0) is None
    # Unicode digits that are not ASCII ("²".isdigit() is true): no number, not a crash.
    assert retry_after_seconds({"Retry-After": "²"}, now=0) is None


def test_an_html_error_page_is_described_not_echoed() -> None:
    """A 502 HTML page becomes a transient error that says so, without the page."""
    with pytest.raises(TransientProviderError) as caught:
        parse(
            502,
            b"<!DOCTYPE html><html><body>Bad gateway secret-looking</body></html>",
            headers={"Content-Type": "text/html"},
        )
    assert "HTML page" in str(caught.value) and "secret-looking" not in str(caught.value)


def test_an_html_401_is_unclear() -> None:
    """A 401 page without an error code may be a firewall's as well as a rejection: retried for a bounded time."""
    with pytest.raises(UnclearProviderError) as caught:
        parse(401, b"<html>nope</html>", headers={"Content-Type": "text/html"})
    assert caught.value.error == "http_401"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1,2]",
        json.dumps({"token_type": "bearer"}).encode(),
        json.dumps({"access_token": 12}).encode(),
    ],
)
def test_a_200_without_a_usable_token_is_transient(body: bytes) -> None:
    """Garbage with 200 is retried: providers do recover from such answers."""
    with pytest.raises(TransientProviderError) as caught:
        parse(200, body)
    assert caught.value.error == "malformed_response"


def test_a_redirect_is_reported_not_followed() -> None:
    """3xx is an error naming where it pointed; the request is never repeated there."""
    with pytest.raises(TransientProviderError) as caught:
        parse(307, b"", headers={"Location": "https://evil.example/steal"})
    assert caught.value.error == "redirect_not_followed" and "evil.example" in str(caught.value)


def test_secrets_echoed_by_a_provider_are_masked() -> None:
    """A provider that quotes our refresh token in error_description does not make us log it."""
    with pytest.raises(PermanentProviderError) as caught:
        parse(
            400,
            {"error": "invalid_grant", "error_description": "token rt-SECRET-1 was revoked"},
            secrets=("rt-SECRET-1", None),
        )
    assert "rt-SECRET-1" not in str(caught.value) and "[redacted]" in str(caught.value)


SLACK = error_codes("slack")
CLASSIFICATION: list[tuple[int, str | None, ErrorCodes, type[ProviderError]]] = [
    # 5xx and 429 are passing trouble whatever the body says.
    (500, "invalid_grant", ErrorCodes(), TransientProviderError),
    (503, "invalid_request", ErrorCodes(), TransientProviderError),
    (502, None, ErrorCodes(), TransientProviderError),
    (429, "invalid_client", ErrorCodes(), TransientProviderError),
    (408, None, ErrorCodes(), TransientProviderError),
    # RFC 6749 §5.2 on a 4xx: stop.
    (400, "invalid_grant", ErrorCodes(), PermanentProviderError),
    (401, "invalid_client", ErrorCodes(), PermanentProviderError),
    (400, "unauthorized_client", ErrorCodes(), PermanentProviderError),
    (400, "unsupported_grant_type", ErrorCodes(), PermanentProviderError),
    (400, "invalid_scope", ErrorCodes(), PermanentProviderError),
    (400, "temporarily_unavailable", ErrorCodes(), TransientProviderError),
    # A provider's own codes on 200, per preset.
    (200, "ratelimited", SLACK, TransientProviderError),
    (200, "internal_error", SLACK, TransientProviderError),
    (200, "service_unavailable", SLACK, TransientProviderError),
    (200, "fatal_error", SLACK, TransientProviderError),
    (200, "invalid_refresh_token", SLACK, PermanentProviderError),
    (200, "bad_refresh_token", error_codes("github"), PermanentProviderError),
    # Unknown codes, codes of another provider, and pages without a code: unclear.
    (200, "ratelimited", ErrorCodes(), UnclearProviderError),
    (200, "something_new", SLACK, UnclearProviderError),
    (400, "something_new", ErrorCodes(), UnclearProviderError),
    (403, None, ErrorCodes(), UnclearProviderError),
    (404, None, SLACK, UnclearProviderError),
]


@pytest.mark.parametrize(("status", "code", "codes", "kind"), CLASSIFICATION)
def test_classification_errs_toward_transient(
    status: int, code: str | None, codes: ErrorCodes, kind: type[ProviderError]
) -> None:
    """Each status and code lands in exactly the class the table says, and the class decides retryable."""
    assert classify(status, code, codes) is kind


def test_a_cdn_page_on_403_is_unclear_and_retryable() -> None:
    """A 403 HTML page from a CDN or WAF is retried (unclear), not a permanent rejection."""
    with pytest.raises(UnclearProviderError) as caught:
        parse(403, b"<html><body>Attention Required!</body></html>", headers={"Content-Type": "text/html"})
    assert caught.value.retryable is True and "HTML page" in str(caught.value)


def test_slacks_preset_lists_its_transient_codes() -> None:
    """The Slack preset names ratelimited, internal_error, service_unavailable and fatal_error as transient."""
    assert {"ratelimited", "internal_error", "service_unavailable", "fatal_error"} <= SLACK.transient
    assert error_codes(None) == ErrorCodes() and error_codes("no-such-provider") == ErrorCodes()


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (b"1e400", MAX_LIFETIME),
        (b'"Infinity"', MAX_LIFETIME),
        (b"Infinity", MAX_LIFETIME),
        (b"1" + b"0" * 400, MAX_LIFETIME),
        (b"1" + b"0" * 5000, MAX_LIFETIME),
        (b"400000000", MAX_LIFETIME),
        (b"3600", 3600.0),
        (b"1", 1.0),
    ],
)
def test_lifetimes_are_clamped_to_a_year(expires_in: bytes, lifetime: float) -> None:
    """An absurd expires_in gives a finite expiry at most a year on, and the refresh token is still read."""
    body = b'{"access_token": "at", "refresh_token": "rt2", "expires_in": ' + expires_in + b"}"
    token = parse(body=body)
    assert token.expires_at == SENT + lifetime and token.refresh_token == "rt2"


@pytest.mark.parametrize("expires_in", [b'"NaN"', b"NaN", b"-5", b'"-Infinity"', b"true", b"[1]", b"0"])
def test_a_lifetime_that_is_no_lifetime_is_ignored(expires_in: bytes) -> None:
    """NaN, negative, zero or non-numbers say nothing: the expiry is unknown (the default lifetime applies)."""
    body = b'{"access_token": "at", "refresh_token": "rt2", "expires_in": ' + expires_in + b"}"
    token = parse(body=body)
    assert token.expires_at is None and token.refresh_token == "rt2"


@pytest.mark.parametrize(
    ("exp", "expires_at"),
    [(SENT - 600, SENT), (10**400, SENT + MAX_LIFETIME), (1e308, SENT + MAX_LIFETIME), (SENT + 60, SENT + 60)],
)
def test_a_jwt_exp_is_clamped_too(exp: float, expires_at: float) -> None:
    """A JWT exp already past means expired on arrival; one centuries off is clamped to a year; none raises."""
    assert parse(body={"access_token": jwt({"exp": exp}), "refresh_token": "rt2"}).expires_at == expires_at


def test_odd_scopes_do_not_lose_the_answer() -> None:
    """A scope list with non-strings in it is read as far as it goes, never raising after a refresh token arrived."""
    token = parse(body={"access_token": "at", "refresh_token": "rt2", "scope": ["a", 1, None, "b"]})
    assert token.scope == "a b" and token.refresh_token == "rt2"


def test_invalid_target_is_permanent() -> None:
    """RFC 8707 §2: a resource or audience the server does not serve will not be served on a retry either."""
    assert classify(400, "invalid_target") is PermanentProviderError
