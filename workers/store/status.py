"""The status of an integration: one value, the same string in Redis, in JSON and on the status page."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A ``str`` enum, so a stored ``"active"`` and ``Status.ACTIVE`` compare, hash and serialise alike."""

    PENDING = "pending_authorization"
    ACTIVE = "active"
    RETRYING = "retrying"
    NEEDS_REAUTH = "needs_reauth"
