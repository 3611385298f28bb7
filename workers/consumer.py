"""Reading tokens, for workflow runners written in Python.

Any language can do the same with one ``HGETALL tokenkeeper:token:<name>``;
this adds a typed result and, with ``min_valid``, an immediate refresh that it
waits for (bounded) when the stored token would expire too soon. A refresh asked
for while the integration backs off after a failure is deferred to its retry
time; when ``request_refresh`` returns the task's answer, that fails at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from workers.clock import Clock
from workers.errors import NotFoundError, StateError, TokenkeeperError
from workers.ops.metrics import observe_read
from workers.store.codec import text_map
from workers.store.keys import DEFAULT_PREFIX, Keys
from workers.store.status import Status

READABLE_FIELDS = ("access_token", "token_type", "expires_at", "scope", "status")


@dataclass(frozen=True)
class Token:
    name: str
    access_token: str = field(repr=False)
    token_type: str
    expires_at: float | None
    scope: str
    status: str
    updated_at: float | None

    @classmethod
    def from_hash(cls, name: str, raw: Mapping[str, str]) -> Token:
        return cls(
            name=name,
            access_token=raw.get("access_token", ""),
            token_type=raw.get("token_type", ""),
            expires_at=float(raw["expires_at"]) if raw.get("expires_at") else None,
            scope=raw.get("scope", ""),
            status=raw.get("status", ""),
            updated_at=float(raw["updated_at"]) if raw.get("updated_at") else None,
        )

    def valid_for(self, now: float) -> float:
        """Seconds this token stays valid; infinite when the provider gave no lifetime."""
        if not self.access_token:
            return 0.0
        return float("inf") if self.expires_at is None else self.expires_at - now


class TokenReader:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        request_refresh: Callable[[str], object] | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.request_refresh = request_refresh
        self.clock = clock

    def read(self, name: str) -> Token:
        """The stored token as it is, whatever its expiry."""
        raw = self.redis.hgetall(self.keys.token(name))
        if not raw:
            raise NotFoundError(f"no integration named {name!r}")
        token = Token.from_hash(name, text_map(raw))
        observe_read(token.updated_at, self.clock())
        return token

    def read_many(self, names: Iterable[str]) -> dict[str, Token | None]:
        """Several tokens in one round trip; ``None`` for a name that does not exist."""
        return {
            name: Token.from_hash(name, raw) if raw is not None else None
            for name, raw in self.read_raw_many(names).items()
        }

    def read_raw_many(self, names: Iterable[str]) -> dict[str, dict[str, str] | None]:
        """The consumer hashes of ``names`` as stored, in one round trip (a single HGETALL for one name)."""
        wanted = list(dict.fromkeys(names))
        if len(wanted) == 1:
            replies = [self.redis.hgetall(self.keys.token(wanted[0]))]
        else:
            replies = self._hgetall_many([self.keys.token(name) for name in wanted])
        found = {name: text_map(raw) if raw else None for name, raw in zip(wanted, replies, strict=True)}
        now = self.clock()
        for raw in found.values():
            if raw and raw.get("updated_at"):
                observe_read(float(raw["updated_at"]), now)
        return found

    def _hgetall_many(self, keys: list[str]) -> list[Any]:
        # All commands in one write, all replies in one read: a pipeline without
        # redis-py's Pipeline object, whose bookkeeping costs more than the round trip.
        pool = self.redis.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands([("HGETALL", key) for key in keys]))
            replies = [connection.read_response() for _ in keys]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
        return [
            reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True)) for reply in replies
        ]

    def get(self, name: str, min_valid: float = 0.0, timeout: float = 10.0) -> Token:
        """A token valid for more than ``min_valid`` seconds, refreshing now and waiting if needed."""
        token = self.read(name)
        if token.valid_for(self.clock()) > min_valid:
            return token
        _raise_if_stopped(token)
        if self.request_refresh is None:
            raise StateError(f"token of {name!r} expires within {min_valid:g}s and no refresh can be requested")
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            # Subscribe before asking, so the refresh cannot finish unseen in between.
            pubsub.subscribe(self.keys.events(name))
            answer = self.request_refresh(name)
            if isinstance(answer, Mapping) and answer.get("outcome") == "deferred":
                # The integration is backing off: no new token comes before its retry time.
                raise TokenkeeperError(
                    f"token of {name!r} expires within {min_valid:g}s and the integration is "
                    f"{answer.get('status')}, backing off: {answer.get('detail', '')}"
                )
            deadline = time.monotonic() + timeout
            while True:
                token = self.read(name)
                if token.valid_for(self.clock()) > min_valid:
                    return token
                _raise_if_stopped(token)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TokenkeeperError(
                        f"no token of {name!r} valid for {min_valid:g}s arrived within {timeout:g}s "
                        f"(status {token.status})"
                    )
                pubsub.get_message(timeout=remaining)
        finally:
            pubsub.close()


def _raise_if_stopped(token: Token) -> None:
    if token.status in (Status.NEEDS_REAUTH, Status.PENDING):
        raise StateError(f"integration {token.name!r} is {token.status}; it will not refresh by itself")
