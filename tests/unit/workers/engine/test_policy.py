"""When refreshes are planned and how retries back off."""

from __future__ import annotations

import pytest

from workers.engine.policy import MAX_RETRY_AFTER, RefreshPolicy


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_long_tokens_refresh_lead_seconds_early_with_jitter(rand: float) -> None:
    """A one-hour token is refreshed 60 s before expiry, spread over the jitter window."""
    policy = RefreshPolicy(lead=60, jitter=30)
    due = policy.next_refresh(0, 3600, rand=lambda: rand)
    assert 3600 - 60 - 30 <= due <= 3600 - 60


@pytest.mark.parametrize("lifetime", [1, 5, 60, 119])
def test_never_before_half_the_lifetime(lifetime: float) -> None:
    """Short tokens are refreshed at half their life at the earliest, whatever the lead and jitter."""
    policy = RefreshPolicy(lead=60, jitter=30)
    for rand in (0.0, 0.5, 0.999):
        assert policy.next_refresh(100, 100 + lifetime, rand=lambda r=rand: r) >= 100 + lifetime / 2


def test_unknown_lifetime_uses_the_default() -> None:
    """Without an expiry, the default lifetime decides."""
    policy = RefreshPolicy(lead=60, jitter=0, default_lifetime=600)
    assert policy.next_refresh(0, None) == 540


def test_backoff_doubles_up_to_the_cap() -> None:
    """Retry n waits between half and all of min(cap, base * 2^(n-1))."""
    policy = RefreshPolicy(backoff_base=2, backoff_max=60)
    assert [policy.retry_delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5, 6, 7)] == [2, 4, 8, 16, 32, 60, 60]
    assert [policy.retry_delay(n, rand=lambda: 0.0) for n in (1, 2, 7)] == [1, 2, 30]


def test_retry_after_is_honoured_but_bounded() -> None:
    """A provider's Retry-After is waited out, up to an hour."""
    policy = RefreshPolicy(backoff_base=2, backoff_max=60)
    assert policy.retry_delay(1, retry_after=120, rand=lambda: 1.0) == 120
    assert policy.retry_delay(1, retry_after=10**6) == MAX_RETRY_AFTER


@pytest.mark.parametrize(("issued", "expires"), [(100, 101), (100, 50), (100, None)])
def test_never_sooner_than_the_min_interval(issued: float, expires: float | None) -> None:
    """Tokens expired on arrival, or nearly, are refreshed no sooner than min_interval after the last refresh."""
    policy = RefreshPolicy(lead=60, jitter=30, min_interval=30, keepalive=10)
    for rand in (0.0, 0.999):
        assert policy.next_refresh(issued, expires, rand=lambda r=rand: r, refresh_token=True) >= issued + 30
    assert policy.arrives_expired(issued, expires) is (expires is not None)
    assert policy.arrives_expired(issued, issued + 31) is False
