"""The attempt journal's words: which refresh token an attempt sent (a keyed fingerprint, never the token),
and what to tell operators when an attempt died between the provider's answer and our write.

The journal itself is kept by the store (``lua/acquire_and_load.lua``, cleared by the write or release).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Any

# Long enough to tell tokens apart in a history, far too short to guess anything from.
FINGERPRINT_LENGTH = 12


class Fingerprints:
    """Short keyed hashes of refresh tokens: equal tokens match, and nobody without the key can test a guess."""

    def __init__(self, secret_keys: Sequence[str]) -> None:
        # A key of its own, derived from the first secret key: the fingerprint never reveals the key.
        first = secret_keys[0].encode() if secret_keys else b""
        self._key = hashlib.sha256(b"tokenkeeper refresh-token fingerprint\0" + first).digest()

    def of(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()[:FINGERPRINT_LENGTH]


def utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def lost_attempt(record_attempt: Mapping[str, Any], record_lost: Mapping[str, Any]) -> Mapping[str, Any]:
    """The evidence of a dead attempt found when taking the lock: the earliest one kept, else the entry left."""
    return record_lost or record_attempt


def describe_lost(entry: Mapping[str, Any]) -> str:
    """'an attempt with refresh token #… died at …': what a reason or the status page says."""
    token = f"refresh token #{entry['fp']}" if entry.get("fp") else "the refresh token"
    return f"an attempt with {token} crashed at {utc(float(entry['since']))} before storing the answer"


def stale_attempt(entry: Mapping[str, Any], now: float) -> bool:
    """A journal entry whose lock ran out without a write or release: its attempt died (or is stopped)."""
    return bool(entry) and now > float(entry.get("until") or 0)
