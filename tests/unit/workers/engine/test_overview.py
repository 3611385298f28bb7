"""What operators read of integrations: the list's query, and a row's words and times."""

from __future__ import annotations

import json

import pytest

from workers.engine.overview import NONE_PROVIDER, duration, parse_query, row_of
from workers.errors import QueryError
from workers.store.index import NO_PROVIDER, Cell, Filters


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0, "0s"),
        (59.4, "59s"),
        (59.6, "1m"),
        (61, "1m 1s"),
        (3599, "59m 59s"),
        (3600, "1h"),
        (7325, "2h 2m"),
        (86399, "23h 59m"),
        (90000, "1d 1h"),
        (864000, "10d"),
        (-125, "2m 5s"),
    ],
)
def test_durations_are_short_and_exact_enough(seconds: float | None, text: str) -> None:
    """Two units at most, the larger first, a zero smaller unit left out; negative spans read as their size."""
    assert duration(seconds) == text


def test_a_query_takes_filters_a_prefix_and_a_cursor() -> None:
    """Empty values leave a filter out; 'none' asks for integrations without a provider preset."""
    query = parse_query(prefix="svc_", status="retrying", grant="refresh_token", provider=NONE_PROVIDER, after="svc_9")
    assert query.filters == Filters(status="retrying", grant="refresh_token", provider=NO_PROVIDER)
    assert (query.prefix, query.after, query.before, query.limit) == ("svc_", "svc_9", "", 100)
    assert parse_query().filters == Filters() and not Filters().narrowed
    assert parse_query(provider="dropbox").filters.provider == "dropbox"


def test_a_bad_query_names_every_part_that_is_wrong() -> None:
    """One error saying what each wrong part was and what it may be."""
    with pytest.raises(QueryError) as caught:
        parse_query(prefix="a b", status="broken", grant="magic", provider="nowhere", after="x", before="y", limit=0)
    message = str(caught.value)
    for part in (
        "prefix 'a b'",
        "status 'broken': use one of pending_authorization, active, retrying, needs_reauth",
        "grant 'magic': use one of client_credentials",
        "provider 'nowhere'",
        "limit 0: from 1 to 1000",
        "after and before: give one of them",
    ):
        assert part in message


def test_filters_admit_the_cells_they_name() -> None:
    """A filter left out admits any value; provider '' is the cell of those without a preset."""
    cell = Cell.parse("active:authorization_code:")
    assert cell == Cell("active", "authorization_code", NO_PROVIDER) and cell.id == "active:authorization_code:"
    assert Filters(status="active").admits(cell) and Filters(provider=NO_PROVIDER).admits(cell)
    assert not Filters(provider="dropbox").admits(cell) and not Filters(status="active", grant="jwt_bearer").admits(
        cell
    )


def test_a_row_reads_its_times_and_provider_from_the_fields_it_is_given() -> None:
    """Expiry, last and next refresh relative to now; the provider's title from the cell; an account and a
    dead attempt described; a row without a refresh time has no token."""
    since = 1000.0
    fields = {
        "grant_type": "authorization_code",
        "status": "retrying",
        "reason": "http_503",
        "refreshed_at": "1000",
        "refresh_at": "1130",
        "expires_at": "1300",
        "account": json.dumps({"sub": "42", "email": "ada@example.com"}),
        "attempt": json.dumps({"owner": "gone", "since": since, "until": since + 10, "fp": "abc123abc123"}),
        "index_cell": "retrying:authorization_code:dropbox",
    }
    row = row_of("team_box", fields, now=1100.0)
    assert (row.provider, row.account, row.expires_text, row.last_refresh_text, row.next_refresh_text) == (
        "Dropbox",
        "ada@example.com (sub 42)",
        "3m 20s",
        "1m 40s ago",
        "in 30s",
    )
    assert "#abc123abc123" in row.lost_attempt and row.backing_off and not row.can_refresh
    assert row.connect_label == "Reconnect"
    waiting = row_of("new", {"grant_type": "authorization_code", "status": "pending_authorization"}, now=0)
    assert (waiting.has_token, waiting.expires_text, waiting.next_refresh_text, waiting.connect_label) == (
        False,
        "—",
        "—",
        "Connect",
    )
