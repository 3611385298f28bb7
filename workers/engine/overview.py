"""What operators see of every integration: the rows of the status page and of ``tokenkeeper list``."""

from __future__ import annotations

from dataclasses import dataclass

from workers.engine.journal import describe_lost, stale_attempt
from workers.oauth.accounts import describe
from workers.oauth.providers import presets
from workers.store import Status, Store

# What needs a person first: stopped, then struggling, then waiting for consent, then fine.
# Keyed by the stored strings (Status is a str enum, so its members are those strings).
SEVERITY: dict[str, int] = {Status.NEEDS_REAUTH: 0, Status.RETRYING: 1, Status.PENDING: 2, Status.ACTIVE: 3}


@dataclass(frozen=True)
class IntegrationRow:
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
    def can_refresh(self) -> bool:
        # A stopped integration refuses a refresh until someone updates or re-authorizes it.
        return self.status not in (Status.PENDING, Status.NEEDS_REAUTH)


def overview(store: Store, now: float) -> list[IntegrationRow]:
    known = presets()
    rows = []
    for record, token in store.load_many(store.names()):
        provider = record.public.get("provider") or ""
        expires_at = token.get("expires_at")
        # Noted by the attempt after it, or still in flight past its lock with nobody after it yet.
        lost = record.lost_attempt or (record.attempt if stale_attempt(record.attempt, now) else {})
        rows.append(
            IntegrationRow(
                name=record.name,
                grant_type=record.grant_type,
                provider=known[provider].title if provider in known else "",
                status=record.status,
                reason=record.reason,
                expires_in=float(expires_at) - now if expires_at else None,
                last_refresh_ago=None if record.refreshed_at is None else now - record.refreshed_at,
                next_refresh_in=None if record.refresh_at is None else record.refresh_at - now,
                has_token=bool(token.get("access_token")),
                account=describe(record.account),
                lost_attempt=describe_lost(lost) if lost else "",
            )
        )
    return rows


def by_severity(rows: list[IntegrationRow]) -> list[IntegrationRow]:
    return sorted(rows, key=lambda row: (SEVERITY.get(row.status, 4), row.name))


def duration(seconds: float | None, *, empty: str = "—") -> str:
    """``3m 20s``, ``2h 5m``, ``4d 1h``: short and exact enough for a status line."""
    if seconds is None:
        return empty
    seconds = round(abs(seconds))
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // small_size
            return f"{seconds // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{seconds}s"
