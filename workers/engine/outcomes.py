"""What a successful or failed token request writes, shared by creation, refresh and update."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from workers.engine.policy import RefreshPolicy
from workers.errors import ProviderError, UnclearProviderError
from workers.oauth.token_client import TokenResponse
from workers.store import Status


@dataclass(frozen=True)
class Change:
    """One guarded write: integration fields, consumer fields, history entry, next refresh."""

    fields: dict[str, Any]
    token: dict[str, Any] = field(repr=False)
    history: dict[str, Any]
    due: float | None


def history_entry(now: float, status: str, reason: str) -> dict[str, Any]:
    return {"at": round(now, 3), "status": status, "reason": reason}


def pending_token(now: float) -> dict[str, Any]:
    """The consumer hash of an integration waiting for a person: no token yet, and its status says why."""
    return {
        "access_token": "",
        "token_type": "",
        "expires_at": "",
        "scope": "",
        "status": Status.PENDING,
        "updated_at": str(int(now)),
    }


def token_obtained(
    response: TokenResponse,
    *,
    sealed_secrets: str,
    requested_scopes: tuple[str, ...],
    policy: RefreshPolicy,
    now: float,
    reason: str,
    holds_refresh_token: bool,
) -> Change:
    """``holds_refresh_token``: the integration has a refresh token to keep alive (not client credentials)."""
    due = policy.next_refresh(response.issued_at, response.expires_at, refresh_token=holds_refresh_token)
    expires_at = "" if response.expires_at is None else str(int(response.expires_at))
    if policy.arrives_expired(response.issued_at, response.expires_at):
        reason += (
            "; the provider's tokens arrive already expired or nearly so: "
            f"refreshing at most every {span(policy.min_interval)}"
        )
    return Change(
        fields={
            "secrets": sealed_secrets,
            "status": Status.ACTIVE,
            "reason": reason,
            "status_at": now,
            "refreshed_at": now,
            "refresh_at": "" if due is None else due,
            "expires_at": expires_at,
            "attempts": 0,
            "last_error": "",
            "unclear_since": "",
        },
        token={
            "access_token": response.access_token,
            "token_type": response.token_type,
            "expires_at": expires_at,
            "scope": response.scope if response.scope is not None else " ".join(requested_scopes),
            "status": Status.ACTIVE,
            "updated_at": str(int(now)),
        },
        history=history_entry(now, Status.ACTIVE, reason),
        due=due,
    )


def without_refresh_token(change: Change, response: TokenResponse) -> tuple[Change, str]:
    """A person's consent (code or device) answered with no refresh token: nothing can renew the token.

    Without an expiry it lasts (never refreshed); with one, the integration is looked at when it expires,
    which ends in needs_reauth saying why. Returns the change and a note for the person.
    """
    if response.expires_at is None:
        note = "The provider issued no refresh token and no expiry: the token does not expire."
        return dataclasses.replace(change, due=None, fields={**change.fields, "refresh_at": ""}), note
    note = (
        "The provider issued no refresh token, so this token cannot be renewed: authorize "
        "again before it expires (Google, for one, needs access_type=offline and "
        "prompt=consent in extra_auth_params)."
    )
    fields = {**change.fields, "refresh_at": response.expires_at}
    return dataclasses.replace(change, due=response.expires_at, fields=fields), note


# Failures after which the provider may have acted on a request we never heard back from.
LOST_RESPONSE_ERRORS = frozenset({"timeout", "connection_error", "request_failed"})


def request_failed(
    error: ProviderError,
    *,
    attempts: int,
    policy: RefreshPolicy,
    now: float,
    last_error: str = "",
    unclear_since: float | None = None,
) -> Change:
    """Transient: keep the old token and retry with backoff. Permanent: stop and wait for a person.

    Unclear (an unknown code, a CDN page): transient while the run of unclear answers that began at
    ``unclear_since`` is shorter than the policy's window, then permanent with a reason that says so.
    """
    reason = str(error)
    unclear = isinstance(error, UnclearProviderError)
    since = (unclear_since if unclear_since is not None else now) if unclear else None
    gave_up = since is not None and now - since >= policy.unclear_window
    if gave_up:
        reason += (
            f"; kept failing with an unclear answer for {span(policy.unclear_window)}: "
            "check the provider (a firewall, a changed endpoint, a revoked app), then update or authorize again"
        )
    if error.retryable and not gave_up:
        attempt = attempts + 1
        due = now + policy.retry_delay(attempt, error.retry_after)
        status = Status.RETRYING
        reason = f"{reason}; retry {attempt} at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(due))} UTC"
        fields: dict[str, Any] = {"attempts": attempt, "refresh_at": due}
    else:
        due = None
        status = Status.NEEDS_REAUTH
        fields = {"attempts": attempts + 1, "refresh_at": ""}
        if error.error == "invalid_grant" and last_error in LOST_RESPONSE_ERRORS:
            reason += (
                f" after an unanswered refresh ({last_error}): the provider probably rotated the "
                "refresh token in the answer that was lost; authorize again or paste a new refresh token"
            )
    fields.update(
        {
            "status": status,
            "reason": reason,
            "status_at": now,
            "last_error": error.error,
            # Any clear answer ends a run of unclear ones; giving up ends it too.
            "unclear_since": since if since is not None and not gave_up else "",
        }
    )
    return Change(
        fields=fields,
        token={"status": status, "updated_at": str(int(now))},
        history=history_entry(now, status, reason),
        due=due,
    )


def span(seconds: float) -> str:
    """A duration as a person would write it: 30 s, 5 min, 1 h."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
