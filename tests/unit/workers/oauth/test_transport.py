"""The whole-request deadline a requests timeout stands for."""

from __future__ import annotations

import pytest
import urllib3

from workers.oauth.transport import deadline_budget


@pytest.mark.parametrize(
    ("timeout", "budget"),
    [
        ((5.0, 20.0), 25.0),
        (3, 6.0),
        (urllib3.Timeout(connect=1.0, read=2.0), 3.0),
        (urllib3.Timeout(total=4.0), 4.0),
    ],
)
def test_the_deadline_is_connect_plus_read(timeout: object, budget: float) -> None:
    """A request's deadline is its connect timeout plus its read timeout (a single number counts as both)."""
    assert deadline_budget(timeout) == budget


@pytest.mark.parametrize("timeout", [None, (5.0, None), (None, 5.0)])
def test_a_request_without_timeouts_is_refused(timeout: object) -> None:
    """A request through a guarded session without both timeouts is a programming error, not an unbounded wait."""
    with pytest.raises(ValueError, match="timeouts"):
        deadline_budget(timeout)
