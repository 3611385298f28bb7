"""What operators see of integrations: pages of the status page and of ``tokenkeeper list``, one integration.

A page comes from the index (:mod:`workers.store.index`): the names in name order that match a name
prefix, a status, a grant type and a provider, a page at a time, and then a few fields of each name
shown; nothing else is read, however many integrations there are.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from workers.engine.journal import describe_lost, stale_attempt
from workers.engine.spec import GRANT_TYPES
from workers.errors import QueryError
from workers.oauth.accounts import describe
from workers.oauth.providers import presets
from workers.store import Status, Store
from workers.store.index import NO_PROVIDER, Cell, Filters, Page

# What needs a person first: stopped, then struggling, then waiting for consent, then fine.
# Keyed by the stored strings (Status is a str enum, so its members are those strings).
SEVERITY: dict[str, int] = {Status.NEEDS_REAUTH: 0, Status.RETRYING: 1, Status.PENDING: 2, Status.ACTIVE: 3}

PAGE_SIZE = 100
MOST_PER_PAGE = 1000
# How a filter asks for integrations that name no provider preset.
NONE_PROVIDER = "none"

# What a row shows, read with one HMGET per row (never the sealed secrets or the spec).
ROW_FIELDS = (
    "grant_type",
    "status",
    "reason",
    "refreshed_at",
    "refresh_at",
    "expires_at",
    "account",
    "attempt",
    "lost_attempt",
    "index_cell",
)

# An integration's own page reads these besides the row's (the sealed secrets never).
DETAIL_FIELDS = (*ROW_FIELDS, "created_at", "status_at", "attempts", "last_error", "unclear_since", "spec", "device")
# Of a device grant's waiting state, what a person needs (the device code itself is sealed elsewhere).
DEVICE_SHOWN = ("user_code", "verification_uri", "verification_uri_complete", "expires_at")

# The characters of a name (spec.py's NAME), for a prefix or a page's cursor.
_NAME_PART = re.compile(r"[A-Za-z0-9_-]{0,64}")


class IntegrationRow(NamedTuple):
    """One integration in a list (a tuple: a page builds a hundred of them per request)."""

    name: str
    grant_type: str
    provider: str
    status: str
    reason: str
    expires_in: float | None  # None: no expiry known (never expires, or no token yet)
    last_refresh_ago: float | None
    next_refresh_in: float | None
    has_token: bool
    # Who consented, for authorization code integrations ("" when unknown).
    account: str = ""
    # A refresh that died between the provider's answer and our write, from the attempt journal:
    # "an attempt with refresh token #… crashed at …" ("" when none).
    lost_attempt: str = ""

    @property
    def can_authorize(self) -> bool:
        return self.grant_type == "authorization_code"

    @property
    def connect_label(self) -> str:
        return "Connect" if self.status == Status.PENDING else "Reconnect"

    @property
    def backing_off(self) -> bool:
        """Retrying, with its next attempt still ahead: a refresh asked for now waits for it (refresher.py)."""
        return self.status == Status.RETRYING and self.next_refresh_in is not None and self.next_refresh_in > 0

    @property
    def can_refresh(self) -> bool:
        # A stopped integration refuses a refresh until someone updates or re-authorizes it.
        return self.status not in (Status.PENDING, Status.NEEDS_REAUTH) and not self.backing_off

    # What the list's cells say, worked out here: a page of rows renders without logic of its own.
    @property
    def status_label(self) -> str:
        return self.status.replace("_", " ")

    @property
    def grant_label(self) -> str:
        return self.grant_type.replace("_", " ")

    @property
    def expires_text(self) -> str:
        if self.expires_in is None:
            return "never" if self.has_token else "—"
        return f"expired {duration(self.expires_in)} ago" if self.expires_in < 0 else duration(self.expires_in)

    @property
    def last_refresh_text(self) -> str:
        return "—" if self.last_refresh_ago is None else f"{duration(self.last_refresh_ago)} ago"

    @property
    def next_refresh_text(self) -> str:
        if self.next_refresh_in is None:
            return "—"
        return "due now" if self.next_refresh_in <= 0 else f"in {duration(self.next_refresh_in)}"


@dataclass(frozen=True)
class HistoryLine:
    at: float
    status: str
    reason: str


@dataclass(frozen=True)
class IntegrationDetail:
    """An integration's own page: its row, its times, its last error, its settings and history."""

    row: IntegrationRow
    provider_name: str
    created_at: float | None
    status_at: float | None
    refreshed_at: float | None
    refresh_at: float | None
    expires_at: float | None
    attempts: int
    last_error: str
    unclear_since: float | None
    token_type: str
    scope: str
    # The stored spec's fields as text: the stored spec holds no secret (those are sealed apart).
    spec: list[tuple[str, str]]
    # A device grant waiting for its person: what the person enters, and where (as `show` prints it).
    device: Mapping[str, str]
    history: list[HistoryLine]


@dataclass(frozen=True)
class Query:
    """One page's question: filters, a name prefix, and where the page starts (after) or ends (before)."""

    filters: Filters = field(default_factory=Filters)
    prefix: str = ""
    after: str = ""
    before: str = ""
    limit: int = PAGE_SIZE


@dataclass(frozen=True)
class Listing:
    rows: list[IntegrationRow]
    page: Page


def parse_query(
    *,
    prefix: str = "",
    status: str = "",
    grant: str = "",
    provider: str = "",
    after: str = "",
    before: str = "",
    limit: int = PAGE_SIZE,
) -> Query:
    """A query from what a person typed ("" leaves a filter out); :class:`QueryError` names every bad part."""
    problems = []
    for label, value in (("prefix", prefix), ("after", after), ("before", before)):
        if not _NAME_PART.fullmatch(value):
            problems.append(f"{label} {value[:70]!r}: names have only letters, digits, _ and - (at most 64)")
    if status and status not in set(Status):
        problems.append(f"status {status[:40]!r}: use one of {', '.join(Status)}")
    if grant and grant not in GRANT_TYPES:
        problems.append(f"grant {grant[:40]!r}: use one of {', '.join(GRANT_TYPES)}")
    if provider and provider != NONE_PROVIDER and provider not in _titles():
        problems.append(f"provider {provider[:40]!r}: use a preset name (see docs/providers.md) or {NONE_PROVIDER!r}")
    if not 1 <= limit <= MOST_PER_PAGE:
        problems.append(f"limit {limit}: from 1 to {MOST_PER_PAGE}")
    if after and before:
        problems.append("after and before: give one of them")
    if problems:
        raise QueryError("; ".join(problems))
    filters = Filters(
        status=status or None,
        grant=grant or None,
        provider=None if not provider else NO_PROVIDER if provider == NONE_PROVIDER else provider,
    )
    return Query(filters, prefix, after, before, limit)


def listing(store: Store, query: Query, now: float) -> Listing:
    """One page of rows: the index's names for ``query`` and :data:`ROW_FIELDS` of each, in one round trip."""
    page = store.index.page(
        query.filters,
        prefix=query.prefix,
        after=query.after,
        before=query.before,
        limit=query.limit,
        fields=ROW_FIELDS,
    )
    # An integration deleted by hands, past the index, has no fields: left out.
    rows = [row_of(name, fields, now) for name, fields in zip(page.names, page.rows, strict=True) if fields]
    return Listing(rows, page)


def detail(store: Store, name: str, now: float) -> IntegrationDetail | None:
    """One integration as its own page shows it (None: no such integration); never a secret."""
    fields = store.fields_of([name], DETAIL_FIELDS)[0]
    if not fields:
        return None
    token = store.token_fields(name, ("token_type", "scope"))
    spec = _json(fields.get("spec"))
    history = [
        HistoryLine(float(entry.get("at") or 0), str(entry.get("status", "")), str(entry.get("reason", "")))
        for entry in store.history(name)
    ]
    return IntegrationDetail(
        row=row_of(name, fields, now),
        provider_name=Cell.parse(fields.get("index_cell", "")).provider or str(spec.get("provider") or ""),
        created_at=_number(fields.get("created_at")),
        status_at=_number(fields.get("status_at")),
        refreshed_at=_number(fields.get("refreshed_at")),
        refresh_at=_number(fields.get("refresh_at")),
        expires_at=_number(fields.get("expires_at")),
        attempts=int(fields.get("attempts") or 0),
        last_error=fields.get("last_error", ""),
        unclear_since=_number(fields.get("unclear_since")),
        token_type=token.get("token_type", ""),
        scope=token.get("scope", ""),
        # Empty settings (no extra parameters, say) are left out.
        spec=sorted((key, _shown(value)) for key, value in spec.items() if key != "name" and value not in ({}, [], "")),
        device={key: str(value) for key, value in _json(fields.get("device")).items() if key in DEVICE_SHOWN},
        history=history,
    )


def row_of(name: str, fields: Mapping[str, str], now: float) -> IntegrationRow:
    # The cell is <status>:<grant>:<provider> (index.lua): its last part is the preset.
    provider = fields.get("index_cell", "").split(":", 2)[-1]
    expires_at = fields.get("expires_at")
    refreshed_at = _number(fields.get("refreshed_at"))
    refresh_at = _number(fields.get("refresh_at"))
    # Noted by the attempt after it, or still in flight past its lock with nobody after it yet (rare: most
    # rows have neither field).
    lost: dict[str, Any] = {}
    if "lost_attempt" in fields or "attempt" in fields:
        lost = _json(fields.get("lost_attempt"))
        if not lost:
            attempt = _json(fields.get("attempt"))
            lost = attempt if stale_attempt(attempt, now) else {}
    # In field order (a tuple built by keyword takes twice as long, and a page builds a hundred).
    return IntegrationRow(
        name,
        fields.get("grant_type", ""),
        provider_title(provider),
        fields.get("status", ""),
        fields.get("reason", ""),
        float(expires_at) - now if expires_at else None,
        None if refreshed_at is None else now - refreshed_at,
        None if refresh_at is None else refresh_at - now,
        # Every token tokenkeeper stores comes with a refresh time.
        refreshed_at is not None,
        describe(_json(fields["account"])) if fields.get("account") else "",
        describe_lost(lost) if lost else "",
    )


def provider_title(provider: str) -> str:
    """``Dropbox`` for ``dropbox``; "" for none (and for a preset since removed)."""
    return _titles().get(provider, "")


def provider_choices() -> dict[str, str]:
    """Every preset name and its title, for a filter."""
    return dict(_titles())


@functools.cache
def _titles() -> Mapping[str, str]:
    # The presets file is read once per process: pages ask for titles on every row.
    return {name: preset.title for name, preset in presets().items()}


def duration(seconds: float | None, *, empty: str = "—") -> str:
    """``3m 20s``, ``2h 5m``, ``4d 1h``: short and exact enough for a status line."""
    if seconds is None:
        return empty
    whole = round(abs(seconds))
    # Written out rather than looped: a page of the list asks three times per row.
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        big, small, units = whole // 60, whole % 60, "ms"
    elif whole < 86400:
        big, small, units = whole // 3600, whole % 3600 // 60, "hm"
    else:
        big, small, units = whole // 86400, whole % 86400 // 3600, "dh"
    return f"{big}{units[0]} {small}{units[1]}" if small else f"{big}{units[0]}"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _number(value: str | None) -> float | None:
    return float(value) if value else None


def _json(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    decoded = json.loads(value)
    return decoded if isinstance(decoded, dict) else {}
