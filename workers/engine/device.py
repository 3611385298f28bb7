"""The device authorization grant (RFC 8628) while its person has not finished: what each poll writes.

Polls are scheduled like refreshes, at the server's interval (plus 5 s for each ``slow_down``,
§3.5); a poll that finds the person still busy changes nothing but the next poll's time, so the
history records only the start and the end: authorized, denied, or expired.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from workers.engine.outcomes import Change, history_entry, pending_token
from workers.errors import ProviderError
from workers.oauth.token_client import DeviceAuthorization
from workers.store import Status

# RFC 8628 §3.5: what slow_down adds to the interval, for this and every later poll.
SLOW_DOWN_STEP = 5.0
# The longest wait that failures in a row grow to between two polls.
MAX_BACKOFF = 300.0


def device_fields(authorization: DeviceAuthorization) -> dict[str, Any]:
    """What is kept of a device authorization beside the integration (the device code goes with the secrets)."""
    return {
        "user_code": authorization.user_code,
        "verification_uri": authorization.verification_uri,
        "verification_uri_complete": authorization.verification_uri_complete or "",
        "expires_at": round(authorization.expires_at, 3),
        "interval": authorization.interval,
    }


def waiting_reason(device: Mapping[str, Any]) -> str:
    until = time.strftime("%H:%M:%S", time.gmtime(float(device["expires_at"])))
    code, page = device["user_code"], device["verification_uri"]
    return f"waiting for the user to enter code {code} at {page} (until {until} UTC)"


def device_started(
    authorization: DeviceAuthorization, *, sealed_secrets: str, now: float, reason: str
) -> tuple[Change, dict[str, Any]]:
    """A new device authorization: pending, first poll one interval on; and what to tell the person."""
    device = device_fields(authorization)
    text = f"{reason}; {waiting_reason(device)}"
    due = now + authorization.interval
    change = Change(
        fields={
            "secrets": sealed_secrets,
            "status": Status.PENDING,
            "reason": text,
            "status_at": now,
            "attempts": 0,
            "refresh_at": due,
            "last_error": "",
            "device": json.dumps(device),
        },
        token=pending_token(now),
        history=history_entry(now, Status.PENDING, text),
        due=due,
    )
    return change, device


def still_waiting(error: ProviderError | None, device: Mapping[str, Any], now: float, attempts: int = 0) -> Change:
    """A poll that found the person not done (or could not tell): the next poll, nothing else changes.

    ``error`` None: the device code ran out before anyone finished, found without asking. ``attempts``:
    passing failures in a row so far; each doubles the wait (RFC 8628 §3.5), up to ``MAX_BACKOFF``.
    """
    if error is None or error.error == "expired_token":
        return _ended(now, "the device code expired before the user entered it (expired_token); update to start again")
    if error.error == "access_denied":
        return _ended(now, "the user denied access on the verification page (access_denied); update it to ask again")
    if error.error not in ("authorization_pending", "slow_down") and not error.retryable:
        return _ended(now, f"{error}; update the integration to start again")
    interval = float(device["interval"]) + (SLOW_DOWN_STEP if error.error == "slow_down" else 0.0)
    answered = error.error in ("authorization_pending", "slow_down")
    # A timeout or a 5xx: the server may be overloaded, so each one in a row doubles the wait; Retry-After if longer.
    failures = 0 if answered else attempts + 1
    wait = max(min(interval * 2**failures, MAX_BACKOFF), error.retry_after or 0.0)
    due = min(now + wait, float(device["expires_at"]))
    last_error = "" if error.error == "authorization_pending" else error.error
    fields: dict[str, Any] = {
        "refresh_at": due,
        "last_error": last_error,
        "attempts": failures,
        # Unchanged as a rule (no history entry); it also ends a "retrying" an unexpected error left.
        "status": Status.PENDING,
        "reason": waiting_reason(device),
    }
    if interval != float(device["interval"]):
        fields["device"] = json.dumps({**device, "interval": interval})
    return Change(
        fields=fields,
        token={"status": Status.PENDING},
        history=history_entry(now, Status.PENDING, waiting_reason(device)),
        due=due,
    )


def _ended(now: float, reason: str) -> Change:
    return Change(
        fields={
            "status": Status.NEEDS_REAUTH,
            "reason": reason,
            "status_at": now,
            "refresh_at": "",
            "device": "",
        },
        token={"status": Status.NEEDS_REAUTH, "updated_at": str(int(now))},
        history=history_entry(now, Status.NEEDS_REAUTH, reason),
        due=None,
    )
