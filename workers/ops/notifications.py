"""Status-change notifications: each change, signed, POSTed to the operator's webhook.

A change is recorded in the outbox in the same atomic write as the change itself
(see :mod:`workers.store`); the scheduling tick hands the outbox to delivery
tasks. Receivers check the signature over ``timestamp.body`` and may drop an
``id`` they have seen (a redelivered task sends the same event again).

The webhook goes through the same address policy as token requests (no loopback
or private address unless allowed, pinned to the checked address, ended by the
connect + read deadline), and at most ``max_bytes`` of its answer are read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from workers.clock import Clock
from workers.errors import WebhookError
from workers.oauth.addresses import AddressPolicy
from workers.oauth.transport import (
    TRANSIENT_STATUSES,
    DeadlinePassed,
    ForbiddenAddressError,
    guard,
    iter_body,
    retry_after_seconds,
)
from workers.ops.metrics import count_delivery
from workers.store import Store

SIGNATURE_HEADER = "X-Tokenkeeper-Signature"
TIMESTAMP_HEADER = "X-Tokenkeeper-Timestamp"
EVENT_ID_HEADER = "X-Tokenkeeper-Event-Id"
# A receiver should refuse signatures older than this (replays).
SIGNATURE_TOLERANCE = 300

Event = dict[str, Any]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float) -> bool:
    """What a receiver does: a matching signature made within the tolerance."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > SIGNATURE_TOLERANCE:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str = field(repr=False)
    session: requests.Session
    clock: Clock
    timeout: tuple[float, float] = (5.0, 20.0)
    max_bytes: int = 1_048_576
    addresses: AddressPolicy = field(default_factory=AddressPolicy)

    def __post_init__(self) -> None:
        guard(self.session, self.addresses)

    def deliver(self, event: Mapping[str, Any]) -> None:
        """POST one event; raises WebhookError, retryable when trying again can help."""
        body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            EVENT_ID_HEADER: str(event.get("id", "")),
        }
        try:
            with self.session.post(
                self.url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False, stream=True
            ) as response:
                status = response.status_code
                _drain(response, self.max_bytes)
        except ForbiddenAddressError as exc:
            raise WebhookError(f"webhook refused: {exc}", retryable=False) from None
        except DeadlinePassed as exc:
            raise WebhookError(f"webhook did not answer in time: {exc}", retryable=True) from None
        except requests.RequestException as exc:
            raise WebhookError(f"webhook unreachable: {type(exc).__name__}", retryable=True) from None
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in TRANSIENT_STATUSES
        raise WebhookError(
            f"webhook answered HTTP {status}",
            retryable=retryable,
            retry_after=retry_after_seconds(response.headers, self.clock()),
        )


def send(webhook: Webhook, store: Store, event: Mapping[str, Any], *, last_try: bool) -> None:
    """Deliver ``event`` and count how it went (delivered, retrying or failed: see WEBHOOK_OUTCOMES);
    ``last_try``: no retry follows a failure, so a retryable one counts as failed too."""
    try:
        webhook.deliver(event)
    except WebhookError as exc:
        count_delivery(store, "retrying" if exc.retryable and not last_try else "failed")
        raise
    count_delivery(store, "delivered")


def _drain(response: requests.Response, limit: int) -> None:
    """Read at most ``limit`` bytes of an answer nobody needs (so a small one keeps its connection alive)."""
    read = 0
    for chunk in iter_body(response):
        read += len(chunk)
        if read >= limit:
            return  # closing the response drops the connection with the rest unread


def forward_events(store: Store, send: Callable[[Event], None], limit: int = 500) -> int:
    """Hand the outbox to ``send`` (which queues a delivery task); returns how many went."""
    events = store.take_events(limit)
    for position, event in enumerate(events):
        try:
            send(event)
        except Exception:
            # The broker is down: keep what was not sent for the next tick.
            store.put_back_events(events[position:])
            raise
    return len(events)
