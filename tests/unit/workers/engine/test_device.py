"""RFC 8628 polling outcomes and the checks on a device authorization answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workers.engine.device import MAX_BACKOFF, SLOW_DOWN_STEP, still_waiting
from workers.engine.spec import validate_spec
from workers.errors import PermanentProviderError, SpecError, TransientProviderError, UnclearProviderError
from workers.oauth.token_client import DEFAULT_DEVICE_INTERVAL, device_authorization_from

NOW = 1_800_000_000.0
DEVICE = {
    "user_code": "WDJB-MJHT",
    "verification_uri": "https://idp.test/device",
    "expires_at": NOW + 600,
    "interval": 5,
}
GOOD = {
    "device_code": "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS",
    "user_code": "WDJB-MJHT",
    "verification_uri": "https://idp.test/device",
    "verification_uri_complete": "https://idp.test/device?user_code=WDJB-MJHT",
    "expires_in": 1800,
    "interval": 5,
}


def test_a_good_answer_is_read() -> None:
    """Code, page, lifetime and interval are read; the device code never shows in a repr."""
    auth = device_authorization_from(GOOD, NOW)
    assert (auth.user_code, auth.verification_uri, auth.interval) == ("WDJB-MJHT", "https://idp.test/device", 5)
    assert auth.expires_at == NOW + 1800 and auth.verification_uri_complete == GOOD["verification_uri_complete"]
    assert "GmRhm" not in repr(auth)  # the device code is a secret


def test_googles_verification_url_and_missing_interval_are_taken() -> None:
    """Google answers with verification_url (as RFC 8628's drafts did); no interval means 5 s (§3.2)."""
    answer = {key: value for key, value in GOOD.items() if key not in ("verification_uri", "interval")}
    auth = device_authorization_from({**answer, "verification_url": "https://www.google.com/device"}, NOW)
    assert auth.verification_uri == "https://www.google.com/device" and auth.interval == DEFAULT_DEVICE_INTERVAL


@pytest.mark.parametrize(
    "change",
    [
        {"device_code": ""},
        {"user_code": None},
        {"user_code": "A\nB"},
        {"user_code": "x" * 65},
        {"user_code": " padded"},
        {"verification_uri": "javascript:alert(1)"},
        {"verification_uri": "file:///etc/passwd"},
        {"verification_uri": None},
    ],
)
def test_what_would_be_shown_to_a_person_must_be_plain(change: dict[str, Any]) -> None:
    """A hostile or broken server cannot put a script link or a multi-line text before the person."""
    with pytest.raises(TransientProviderError) as caught:
        device_authorization_from({**GOOD, **change}, NOW)
    assert caught.value.error == "malformed_response"


def test_a_bad_complete_uri_is_dropped_and_extreme_numbers_are_bounded() -> None:
    """A non-web complete URI is left out; interval and lifetime are held to an hour and a day."""
    auth = device_authorization_from(
        {**GOOD, "verification_uri_complete": "javascript:x", "interval": 1e9, "expires_in": 1e12}, NOW
    )
    assert auth.verification_uri_complete is None and auth.interval == 3600.0 and auth.expires_at == NOW + 86400


def test_pending_waits_one_interval_and_changes_no_status() -> None:
    """authorization_pending: the next poll one interval on; the status stays pending (no new history entry)."""
    change = still_waiting(UnclearProviderError("authorization_pending", ""), DEVICE, NOW)
    assert change.due == NOW + 5 and change.fields["status"] == "pending_authorization"
    assert change.fields["attempts"] == 0 and "WDJB-MJHT" in change.fields["reason"]


def test_passing_failures_in_a_row_double_the_wait() -> None:
    """RFC 8628 §3.5: a client must slow down after timeouts; each failure in a row doubles the wait, capped."""
    waits = []
    attempts = 0
    for _ in range(8):
        change = still_waiting(
            TransientProviderError("timeout", ""), {**DEVICE, "expires_at": NOW + 9999}, NOW, attempts
        )
        attempts = change.fields["attempts"]
        waits.append(change.due - NOW)
    assert waits[:4] == [10, 20, 40, 80] and max(waits) == MAX_BACKOFF
    answered = still_waiting(UnclearProviderError("authorization_pending", ""), DEVICE, NOW, attempts)
    assert answered.fields["attempts"] == 0 and answered.due == NOW + 5


def test_slow_down_adds_five_seconds_for_good() -> None:
    """RFC 8628 §3.5: the interval grows by 5 s, and the new interval is kept for the next polls."""
    change = still_waiting(UnclearProviderError("slow_down", ""), DEVICE, NOW)
    assert change.due == NOW + 5 + SLOW_DOWN_STEP
    assert json.loads(change.fields["device"])["interval"] == 5 + SLOW_DOWN_STEP


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (PermanentProviderError("access_denied", "no"), "denied"),
        (PermanentProviderError("expired_token", ""), "expired"),
        (None, "expired"),
        (PermanentProviderError("invalid_client", "unknown client"), "invalid_client"),
    ],
)
def test_denial_expiry_and_permanent_errors_end_waiting(error: Any, words: str) -> None:
    """Denied, expired (told or found) and permanent errors: needs_reauth with a reason; polling stops."""
    change = still_waiting(error, DEVICE, NOW)
    assert change.fields["status"] == "needs_reauth" and words in change.fields["reason"]
    assert change.due is None and change.fields["device"] == ""


def test_a_passing_failure_keeps_waiting_and_honours_retry_after_but_not_past_expiry() -> None:
    """A 503 keeps the integration waiting, polling after Retry-After, but never later than the code lives."""
    change = still_waiting(TransientProviderError("http_503", "", status=503, retry_after=30), DEVICE, NOW)
    assert change.due == NOW + 30 and change.fields["status"] == "pending_authorization"
    late = still_waiting(TransientProviderError("http_503", "", status=503, retry_after=3600), DEVICE, NOW)
    assert late.due == DEVICE["expires_at"]


def test_a_device_spec_needs_its_endpoints_and_defaults_to_a_public_client() -> None:
    """Both endpoints are required and named; without a secret the client is public (auth_method none)."""
    data = {"name": "tv", "grant_type": "device_code", "client_id": "tv-app"}
    with pytest.raises(SpecError) as caught:
        validate_spec(data)
    assert set(caught.value.errors) == {"token_url", "device_authorization_url"}
    spec = validate_spec(
        {**data, "token_url": "https://idp.test/token", "device_authorization_url": "https://idp.test/device/code"}
    )
    assert spec.auth_method == "none" and spec.device_authorization_url == "https://idp.test/device/code"
