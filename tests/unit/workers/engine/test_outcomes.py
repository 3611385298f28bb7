"""What a failed or odd token answer writes: the unclear-answer window and the reasons people read."""

from __future__ import annotations

import pytest

from workers.engine.outcomes import request_failed, span, token_obtained
from workers.engine.policy import RefreshPolicy
from workers.errors import TransientProviderError, UnclearProviderError
from workers.oauth.token_client import TokenResponse
from workers.store import Status

POLICY = RefreshPolicy(unclear_window=3600, min_interval=30)


def test_unclear_answers_retry_within_the_window_and_remember_when_they_began() -> None:
    """The first unclear answer starts the window; later ones keep its start and stay retrying."""
    error = UnclearProviderError("http_403", "the token endpoint sent an HTML page", status=403)
    first = request_failed(error, attempts=0, policy=POLICY, now=1000.0)
    later = request_failed(error, attempts=1, policy=POLICY, now=4599.0, unclear_since=1000.0)
    assert (first.fields["status"], first.fields["unclear_since"]) == (Status.RETRYING, 1000.0)
    assert (later.fields["status"], later.fields["unclear_since"]) == (Status.RETRYING, 1000.0)


def test_unclear_answers_for_the_whole_window_need_a_person() -> None:
    """An unbroken run of unclear answers as long as the window ends in needs_reauth, saying so."""
    error = UnclearProviderError("ratelimited", status=200)
    change = request_failed(error, attempts=9, policy=POLICY, now=4600.0, unclear_since=1000.0)
    assert change.fields["status"] == Status.NEEDS_REAUTH and change.due is None
    assert "kept failing with an unclear answer for 1 h" in change.fields["reason"]
    assert change.fields["unclear_since"] == ""


def test_a_clear_transient_answer_ends_the_unclear_run() -> None:
    """A 503 between unclear answers clears the run's start: the window counts unbroken runs only."""
    change = request_failed(TransientProviderError("http_503"), attempts=3, policy=POLICY, now=5000.0)
    assert change.fields["status"] == Status.RETRYING and change.fields["unclear_since"] == ""


def test_tokens_arriving_expired_say_so() -> None:
    """A token whose lifetime is within the min interval is stored with a reason naming the provider's odd tokens."""
    response = TokenResponse(access_token="at", token_type="Bearer", issued_at=1000.0, expires_at=1001.0)
    change = token_obtained(
        response,
        sealed_secrets="sealed",
        requested_scopes=(),
        policy=POLICY,
        now=1000.5,
        reason="refreshed",
        holds_refresh_token=True,
    )
    assert change.fields["status"] == Status.ACTIVE and change.due is not None and change.due >= 1030.0
    assert change.fields["reason"] == (
        "refreshed; the provider's tokens arrive already expired or nearly so: refreshing at most every 30 s"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(30, "30 s"), (0.5, "0.5 s"), (60, "1 min"), (90, "90 s"), (3600, "1 h")]
)
def test_spans_read_as_people_write_them(seconds: float, text: str) -> None:
    """Durations in reasons: 30 s, 1 min, 1 h."""
    assert span(seconds) == text
