"""Everything tokenkeeper keeps in Redis, and the atomic steps that change it.

Keys (``P`` is the configurable prefix, ``tokenkeeper:`` by default):

    P token:<name>        hash   the consumer interface (docs/contract.md); no secrets but the access token
    P integration:<name>  hash   spec (JSON, no secrets), sealed secrets, status, version, schedule,
                                 connected account (JSON: sub, email, name), the attempt journal
                                 (refresh in flight / lost, with a refresh token's keyed fingerprint),
                                 keyed digests of each spec field as given, for integrations a file
                                 keeps (``tokenkeeper plan``)
    P history:<name>      list   status changes, newest first, capped
    P names               set    every integration
    P index:names         zset   every integration, scores 0: name order, prefixes (the operators' index,
                                 kept by the same scripts that create, change and delete: see index.py)
    P index:cell:<status>:<grant>:<provider>
                          zset   the integrations with that status, grant type and provider preset
    P index:cells         hash   <status>:<grant>:<provider> -> how many integrations that cell holds
    P schedule            zset   name -> planned refresh time
    P inflight            zset   name -> time after which a queued refresh is presumed lost
    P lock:<name>         string owner token of the refresh under way (single flight)
    P reserve:<name>      string a creation under way
    P state:<sha256>      string one-time authorization state, keyed by state and browser cookie (TTL 10 min)
    P link:states:<id>    zset   outstanding states of one authorization link -> expiry (bounds them)
    P link:spent:<id>     string an authorization link a flow succeeded through (TTL: until the link expires)
    P exchange:<id>       string a sealed authorization code waiting for a worker (TTL 2 min)
    P outbox              list   status changes waiting to be sent to the webhook (only when one is set)
    P metrics:*           hashes counters behind /metrics (refresh outcomes, lateness, webhook deliveries), and
                                 the last refresh that worked
    P metrics:lifetimes   hash   whole seconds a current token lives -> how many refreshed integrations hold one
                                 (/metrics: the shortest); kept by the same writes as the token
    P rate_slots          hash   token endpoint host -> when its next refresh may start under the rate cap
    P beat:last_tick      string when the last scheduling tick ran
    P given_key           string the key of the ``given`` digests (random, sealed with the secret keys)
    P events:<name>       pub/sub a write announces the new version (the reader waits on it)

Key names are built by :class:`~workers.store.keys.Keys`. Writes that belong together are one Lua
script (``lua/*.lua``, each naming its KEYS and ARGV in its header), so a reader never sees a new
access token with an old expiry, and a write is accepted only when the stored version is the one the
work started from (its lock may have lapsed meanwhile; a newer version is never overwritten).
"""

from __future__ import annotations

import json
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from workers.errors import StoredDataError
from workers.store.codec import text, text_map
from workers.store.index import Index
from workers.store.keys import DEFAULT_PREFIX, Keys
from workers.store.scripts import lua
from workers.store.status import Status

__all__ = [
    "HISTORY_LENGTH",
    "KEEP_SCHEDULE",
    "TOKEN_FIELDS",
    "WRITE_DELETED",
    "WRITE_FAILED",
    "WRITE_LOST_LOCK",
    "WRITE_OK",
    "WRITE_STALE_VERSION",
    "IntegrationRecord",
    "Keys",
    "Lock",
    "NewIntegration",
    "Status",
    "Store",
    "Write",
]

TOKEN_FIELDS = ("access_token", "token_type", "expires_at", "scope", "status", "updated_at")
HISTORY_LENGTH = 50

# A guarded write that leaves the refresh schedule untouched.
KEEP_SCHEDULE = "keep"

# Outcomes of a guarded write.
WRITE_OK = 1
WRITE_LOST_LOCK = -1
WRITE_STALE_VERSION = -2
WRITE_DELETED = -3
WRITE_FAILED = -4


@dataclass(frozen=True)
class IntegrationRecord:
    name: str
    grant_type: str
    status: str
    reason: str
    version: int
    public: Mapping[str, Any]
    sealed_secrets: str = field(repr=False)
    refresh_at: float | None
    attempts: int
    created_at: float
    refreshed_at: float | None
    status_at: float
    last_error: str = ""
    # When the current run of unclear provider answers began (None: the last answer was clear).
    unclear_since: float | None = None
    # Who consented (OpenID sub, and email / name when the provider said); empty when unknown.
    account: Mapping[str, str] = field(default_factory=dict)
    # The stored access token's expiry (Unix seconds as stored; "" when none).
    expires_at: str = ""
    # The attempt journal (lua/acquire_and_load.lua): the refresh in flight {owner, since, until, fp},
    # and the evidence of one that died after perhaps sending its refresh token {fp, since}.
    attempt: Mapping[str, Any] = field(default_factory=dict)
    lost_attempt: Mapping[str, Any] = field(default_factory=dict)
    # Keyed fingerprint of the stored refresh token ("" when not known yet).
    refresh_fp: str = ""
    # A device_code integration waiting for its person (RFC 8628): user_code, verification_uri(_complete),
    # expires_at, interval. Empty once authorized.
    device: Mapping[str, Any] = field(default_factory=dict)
    # Integrations that exchange this one's access token (RFC 8693 subject_integration): due at its every new token.
    dependents: tuple[str, ...] = ()
    # Keyed digests of each spec field as the producer gave it, encoded (workers.engine.declared); "" when none
    # were kept (an integration no file keeps, or one stored before they were).
    given: str = ""

    @classmethod
    def from_hash(cls, name: str, raw: Mapping[str, str]) -> IntegrationRecord:
        return cls(
            name=name,
            grant_type=raw["grant_type"],
            status=raw["status"],
            reason=raw.get("reason", ""),
            version=int(raw["version"]),
            public=json.loads(raw["spec"]),
            sealed_secrets=raw["secrets"],
            refresh_at=_optional_float(raw.get("refresh_at")),
            attempts=int(raw.get("attempts") or 0),
            created_at=float(raw["created_at"]),
            refreshed_at=_optional_float(raw.get("refreshed_at")),
            status_at=float(raw["status_at"]),
            last_error=raw.get("last_error", ""),
            unclear_since=_optional_float(raw.get("unclear_since")),
            account=json.loads(raw["account"]) if raw.get("account") else {},
            expires_at=raw.get("expires_at", ""),
            attempt=json.loads(raw["attempt"]) if raw.get("attempt") else {},
            lost_attempt=json.loads(raw["lost_attempt"]) if raw.get("lost_attempt") else {},
            refresh_fp=raw.get("refresh_fp", ""),
            device=json.loads(raw["device"]) if raw.get("device") else {},
            dependents=tuple(json.loads(raw["dependents"])) if raw.get("dependents") else (),
            given=raw.get("given", ""),
        )


@dataclass(frozen=True)
class Lock:
    name: str
    owner: str


@dataclass(frozen=True)
class NewIntegration:
    """What creation stores (see :meth:`Store.create_many`); ``due`` None: nothing to refresh."""

    name: str
    fields: Mapping[str, Any]
    token: Mapping[str, Any]
    history: Mapping[str, Any]
    due: float | None


@dataclass(frozen=True)
class Write:
    """One guarded change (see :meth:`Store.write_many`).

    ``due`` is the next planned refresh (``None`` stops refreshing, ``KEEP_SCHEDULE`` leaves it as
    it is); ``release`` drops the lock in the same step when the change is accepted; ``counters``
    (hash, field, amount) are added, ``marks`` (key, value, seconds to live) set and ``latest``
    (hash, field, time) kept where later than the stored time, with it.
    """

    lock: Lock
    expected_version: int
    fields: Mapping[str, Any]
    token: Mapping[str, Any]
    history: Mapping[str, Any]
    due: float | str | None
    release: bool = False
    counters: tuple[tuple[str, str, float], ...] = ()
    marks: tuple[tuple[str, str, float], ...] = ()
    # When the work began, for a token exchange: see write.lua's ``started``.
    started: float | None = None
    latest: tuple[tuple[str, str, float], ...] = ()


class Store:
    """Redis access for one key prefix. Receives its client; opens nothing itself."""

    def __init__(
        self, client: redis.Redis, prefix: str = DEFAULT_PREFIX, *, outbox: bool = False, wait_replicas: int = 0
    ) -> None:
        self.redis = client
        # A durable write also waits until this many replicas have it (0: only the local disk).
        self.wait_replicas = wait_replicas
        self.prefix = prefix
        self.keys = Keys(prefix)
        # Status changes are queued for the webhook only when one is configured.
        self.outbox = outbox
        # The Lua scripts are files in lua/, each naming every KEYS[i] and ARGV[i] it reads in its header;
        # those that create, change or delete integrations keep the index with them (lua/index.lua).
        self.index = Index(client, self.keys)
        self._create = client.register_script(lua("create", "index", "lifetimes"))
        self._write = client.register_script(lua("write", "index", "lifetimes"))
        self._delete = client.register_script(lua("delete", "index", "lifetimes"))
        self._reserve = client.register_script(lua("reserve"))
        self._claim = client.register_script(lua("claim"))
        self._release = client.register_script(lua("release"))
        self._acquire_and_load = client.register_script(lua("acquire_and_load"))
        self._extend = client.register_script(lua("extend"))
        self._put_state = client.register_script(lua("put_state"))
        self._take_state = client.register_script(lua("take_state"))
        self._note = client.register_script(lua("note"))
        self._journal = client.register_script(lua("journal"))
        self._fence = client.register_script(lua("fence"))
        self._dependents = client.register_script(lua("dependents"))
        self._follow = client.register_script(lua("follow"))
        self._aof_supported: bool | None = None

    # -- reads -----------------------------------------------------------
    def exists(self, name: str) -> bool:
        return bool(self.redis.exists(self.keys.integration(name)))

    def load(self, name: str) -> IntegrationRecord | None:
        raw = self.redis.hgetall(self.keys.integration(name))
        return IntegrationRecord.from_hash(name, text_map(raw)) if raw else None

    def load_many(self, names: Iterable[str]) -> list[tuple[IntegrationRecord, dict[str, str]]]:
        """Integration and consumer hash of each of ``names`` in one round trip; deleted ones left out."""
        wanted = list(names)
        pipe = self.redis.pipeline(transaction=False)
        for name in wanted:
            pipe.hgetall(self.keys.integration(name))
            pipe.hgetall(self.keys.token(name))
        replies = pipe.execute()
        return [
            (IntegrationRecord.from_hash(name, text_map(raw)), text_map(token))
            for name, raw, token in zip(wanted, replies[::2], replies[1::2], strict=True)
            if raw
        ]

    def token_fields(self, name: str, wanted: Sequence[str]) -> dict[str, str]:
        """Some fields of ``name``'s consumer hash (those present): what a page may show of it."""
        values = self.redis.hmget(self.keys.token(name), wanted)
        return {key: text(value) for key, value in zip(wanted, values, strict=True) if value is not None}

    def token(self, name: str) -> dict[str, str]:
        return text_map(self.redis.hgetall(self.keys.token(name)))

    def tokens(self, names: Iterable[str]) -> list[dict[str, str]]:
        """The consumer hashes of ``names`` in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.token(name))
        return [text_map(raw) for raw in pipe.execute()]

    def names(self) -> list[str]:
        return sorted(text(name) for name in self.redis.smembers(self.keys.names))

    def public_specs(self, names: Sequence[str], chunk: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """The stored spec (no secrets) of each of ``names``, a round trip per ``chunk``; deleted ones left out."""
        found: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(names), chunk):
            part = names[start : start + chunk]
            found += [
                (name, json.loads(fields["spec"]))
                for name, fields in zip(part, self.fields_of(part, ["spec"]), strict=True)
                if "spec" in fields
            ]
        return found

    def fields_of(self, names: Sequence[str], wanted: Sequence[str]) -> list[dict[str, str]]:
        """``wanted`` fields of each of ``names``' integration hashes (absent ones left out), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self.keys.integration(name), wanted)
        return [
            {key: text(value) for key, value in zip(wanted, values, strict=True) if value is not None}
            for values in pipe.execute()
        ]

    def history(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(entry) for entry in self.redis.lrange(self.keys.history(name), 0, -1)]

    # -- creation --------------------------------------------------------
    def reserve(self, name: str, ttl: float) -> bool:
        """Hold ``name`` while its first token is fetched, so two creations cannot race."""
        return self.reserve_many([name], ttl)[0]

    def reserve_many(self, names: Sequence[str], ttl: float) -> list[bool]:
        """:meth:`reserve` each of ``names`` (taken or held elsewhere: False), in one round trip."""
        if not names:
            return []
        keys: list[str] = []
        for name in names:
            keys += [self.keys.integration(name), self.keys.reserve(name)]
        return [bool(held) for held in self._reserve(keys=keys, args=[int(ttl * 1000)])]

    def unreserve(self, name: str) -> None:
        self.unreserve_many([name])

    def unreserve_many(self, names: Sequence[str]) -> None:
        if names:
            self.redis.delete(*(self.keys.reserve(name) for name in names))

    def create(
        self,
        name: str,
        fields: Mapping[str, Any],
        token: Mapping[str, Any],
        history: Mapping[str, Any],
        due: float | None,
    ) -> bool:
        """Store a new integration unless the name is taken: :meth:`create_many` of one."""
        return self.create_many([NewIntegration(name, fields, token, history, due)])[0]

    def create_many(self, integrations: Sequence[NewIntegration]) -> list[bool]:
        """Store each new integration (its reservation dropped) unless its name is taken, in one round trip."""
        if not integrations:
            return []
        keys = [self.keys.names, self.keys.schedule, self.keys.outbox, self.keys.index_names, self.keys.index_cells]
        for new in integrations:
            keys += [
                self.keys.integration(new.name),
                self.keys.token(new.name),
                self.keys.history(new.name),
                self.keys.reserve(new.name),
            ]
        entries = [
            {
                "name": new.name,
                "fields": _string_fields(new.fields),
                "token": _string_fields(new.token),
                "history": json.dumps(new.history),
                "due": _score(new.due),
            }
            for new in integrations
        ]
        args = [
            json.dumps(entries),
            "1" if self.outbox else "0",
            self.keys.metrics("lifetimes"),
            self.keys.index_cell(""),
        ]
        created = self._create(keys=keys, args=args)
        return [bool(flag) for flag in created]

    # -- guarded writes --------------------------------------------------
    def write(
        self,
        lock: Lock,
        expected_version: int,
        fields: Mapping[str, Any],
        token: Mapping[str, Any],
        history: Mapping[str, Any],
        due: float | str | None,
        *,
        patience: float = 0.0,
        durable: bool = False,
        release: bool = False,
        counters: Iterable[tuple[str, str, float]] = (),
        marks: Iterable[tuple[str, str, float]] = (),
    ) -> int:
        """Apply one change if ``lock`` is still held and the version unchanged: :meth:`write_many` of one."""
        change = Write(lock, expected_version, fields, token, history, due, release, tuple(counters), tuple(marks))
        return self.write_many([change], patience=patience, durable=durable)[0]

    def write_many(self, writes: Sequence[Write], *, patience: float = 0.0, durable: bool = False) -> list[int]:
        """Apply each change if its lock is still held and its version unchanged, in one round trip.

        Returns for each the new version, or ``WRITE_LOST_LOCK`` (the version moved on after the
        lock lapsed) / ``WRITE_STALE_VERSION`` / ``WRITE_DELETED`` (gone or being deleted: the caller
        revokes what it got). The version is the guard: a write whose lock lapsed still lands while
        the version is unchanged (its refresh token may be the only live one). ``patience`` keeps
        retrying for that many seconds while Redis is unreachable (a rotated refresh token must not
        be dropped because Redis restarted; a retry after a lost reply recognises its own applied
        writes, so the answer says what happened); ``durable`` waits until the changes are in the
        AOF on disk and, with ``wait_replicas``, on that many replicas (a failover then keeps them).
        """
        if not writes:
            return []
        keys = [self.keys.schedule, self.keys.inflight, self.keys.outbox, self.keys.index_names, self.keys.index_cells]
        for change in writes:
            name = change.lock.name
            keys += [self.keys.integration(name), self.keys.token(name), self.keys.history(name), self.keys.lock(name)]
        # One JSON argument with named values per change (see lua/write.lua).
        args = [
            json.dumps([self._write_arguments(change) for change in writes]),
            self.keys.metrics("lifetimes"),
            self.keys.index_cell(""),
        ]
        deadline = time.monotonic() + patience
        while True:
            try:
                versions = [int(version) for version in self._write(keys=keys, args=args)]
                break
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                # Redis is restarting; there is no event to wait on from here.
                time.sleep(0.2)
        if durable and any(version > 0 for version in versions):
            self.wait_for_disk()
            self.wait_for_replicas()
        return versions

    def _write_arguments(self, change: Write) -> dict[str, Any]:
        return {
            "owner": change.lock.owner,
            "version": str(change.expected_version),
            "name": change.lock.name,
            "fields": _string_fields(change.fields),
            "token": _string_fields(change.token),
            "history": json.dumps(change.history),
            "due": _score(change.due),
            "channel": self.keys.events(change.lock.name),
            "history_length": HISTORY_LENGTH,
            "release": change.release,
            "outbox": self.outbox,
            "counters": [list(counter) for counter in change.counters],
            "marks": [[key, value, max(1, int(ttl * 1000))] for key, value, ttl in change.marks],
            "latest": [[key, name, repr(at)] for key, name, at in change.latest],
            # Left out rather than null: Lua's cjson reads null as a value that is true.
            **({"started": change.started} if change.started is not None else {}),
        }

    def wait_for_replicas(self, timeout_ms: int = 1000) -> int:
        """WAIT: block until ``wait_replicas`` replicas acknowledged the writes so far (or the timeout).

        Returns how many did; 0 without waiting when ``wait_replicas`` is 0. A shortfall is not an
        error: the change is stored, only less safe from a failover (the caller cannot undo it anyway).
        """
        if self.wait_replicas <= 0:
            return 0
        return int(self.redis.execute_command("WAIT", self.wait_replicas, timeout_ms))

    def wait_for_disk(self, timeout_ms: int = 1000) -> bool:
        """WAITAOF (Redis 7.2+, Valkey): block until the writes so far are fsynced to the AOF.

        Returns False where the server cannot (older Redis, or AOF off); then the
        durability window is the server's appendfsync policy (everysec: one second).
        """
        if self._aof_supported is False:
            return False
        try:
            self.redis.execute_command("WAITAOF", 1, 0, timeout_ms)
        except redis.ResponseError:
            self._aof_supported = False
            return False
        self._aof_supported = True
        return True

    def fence(self, name: str, now: float) -> bool:
        """Mark ``name`` as being deleted: every guarded write is refused from now on. False: it is gone."""
        return bool(self._fence(keys=[self.keys.integration(name)], args=[repr(now)]))

    def delete(self, name: str) -> bool:
        """Remove every key of ``name`` and its place in every set and in the index, in one step."""
        keys = [
            self.keys.integration(name),
            self.keys.token(name),
            self.keys.history(name),
            self.keys.reserve(name),
            self.keys.lock(name),
            self.keys.names,
            self.keys.schedule,
            self.keys.inflight,
            self.keys.index_names,
            self.keys.index_cells,
            self.keys.metrics("lifetimes"),
        ]
        return bool(self._delete(keys=keys, args=[name, self.keys.events(name), self.keys.index_cell("")]))

    # -- single flight ---------------------------------------------------
    def acquire(self, name: str, ttl: float) -> Lock | None:
        owner = _secrets.token_hex(16)
        if self.redis.set(self.keys.lock(name), owner, nx=True, px=int(ttl * 1000)):
            return Lock(name, owner)
        return None

    def acquire_and_load(self, name: str, ttl: float, now: float) -> tuple[Lock | None, IntegrationRecord | None]:
        """:meth:`acquire_and_load_many` of one; its StoredDataError raised."""
        loaded = self.acquire_and_load_many([name], ttl, now)[0]
        if isinstance(loaded, Exception):
            raise loaded
        return loaded

    def acquire_and_load_many(
        self, names: Sequence[str], ttl: float, now: float
    ) -> list[tuple[Lock | None, IntegrationRecord | None] | StoredDataError]:
        """Take each lock, read each integration and journal each attempt, all in one round trip.

        Each record comes whether its lock was taken or not, as it was before this step (None: no
        such integration): an ``attempt`` in it was left by an attempt that died. The attempt's write
        or :meth:`release` ends its journal entry. An integration whose stored values cannot be read
        comes back as a StoredDataError (its lock not kept); the others are unaffected. Safe to run
        again after a lost reply: redis-py does, with the same owner tokens, which find their locks.
        """
        if not names:
            return []
        owners = [_secrets.token_hex(16) for _ in names]
        keys: list[str] = []
        for name in names:
            keys += [self.keys.lock(name), self.keys.integration(name)]
        raw = self._acquire_and_load(keys=keys, args=[int(ttl * 1000), repr(now), *owners])
        loaded: list[tuple[Lock | None, IntegrationRecord | None] | StoredDataError] = []
        for name, owner, taken, fields in zip(names, owners, raw[::2], raw[1::2], strict=True):
            unreadable = StoredDataError(f"the stored journal of {name!r} cannot be read; its refresh cannot start")
            if taken == -1:
                loaded.append(unreadable)
                continue
            pairs = [text(item) for item in fields]
            lock = Lock(name, owner) if taken else None
            try:
                record = (
                    IntegrationRecord.from_hash(name, dict(zip(pairs[::2], pairs[1::2], strict=True)))
                    if pairs
                    else None
                )
            except (KeyError, ValueError, TypeError):
                if lock is not None:
                    self.release(lock)
                loaded.append(StoredDataError(f"the stored integration {name!r} cannot be read"))
                continue
            loaded.append((lock, record))
        return loaded

    def extend(self, lock: Lock, ttl: float, now: float) -> bool:
        """Give ``lock`` ``ttl`` more seconds from now if it is still ours (and its journal entry with it)."""
        keys = [self.keys.lock(lock.name), self.keys.integration(lock.name)]
        return bool(self._extend(keys=keys, args=[lock.owner, int(ttl * 1000), repr(now)]))

    def acquire_within(self, name: str, ttl: float, wait: float) -> Lock | None:
        """Like :meth:`acquire`, waiting up to ``wait`` seconds for a refresh under way."""
        deadline = time.monotonic() + wait
        while True:
            lock = self.acquire(name, ttl)
            if lock is not None or time.monotonic() > deadline:
                return lock
            # Polling: a refresh holds the lock for one HTTP request at most.
            time.sleep(0.05)

    def release(self, lock: Lock) -> bool:
        """Drop ``lock`` if still ours, and its attempt journal entry (the attempt wrote nothing)."""
        return self.release_many([lock])[0]

    def release_many(self, locks: Sequence[Lock]) -> list[bool]:
        """:meth:`release` each of ``locks``, in one round trip."""
        if not locks:
            return []
        keys: list[str] = []
        for lock in locks:
            keys += [self.keys.lock(lock.name), self.keys.integration(lock.name)]
        return [bool(dropped) for dropped in self._release(keys=keys, args=[lock.owner for lock in locks])]

    def journal_fingerprint(self, lock: Lock, fingerprint: str) -> bool:
        """Name the refresh token ``lock``'s attempt sends, where its journal entry could not yet."""
        keys = [self.keys.integration(lock.name)]
        return bool(self._journal(keys=keys, args=[lock.owner, fingerprint]))

    # -- scheduling ------------------------------------------------------
    def claim_due(
        self, now: float, horizon: float, lost_after: float, limit: int, max_rate: float = 0.0, margin: float = 0.0
    ) -> Claimed:
        """Move refreshes that may start before ``now + horizon`` to in-flight; return (name, plan, start).

        Refreshes queued earlier but not finished ``lost_after`` seconds after they
        could start are taken back first, so a task lost with a worker is queued again.
        With ``max_rate`` (refreshes per second at one token endpoint host, all schedulers
        together; an integration's own ``rate_cap`` replaces it) starts are spaced out, so
        a backlog after an outage is worked off at that rate, not in a burst, but never
        later than ``margin`` seconds before the token expires.
        """
        gap = 1.0 / max_rate if max_rate > 0 else 0.0
        raw = self._claim(
            keys=[self.keys.schedule, self.keys.inflight, self.keys.rate_slots, self.keys.metrics("cap_yielded")],
            args=[
                repr(now),
                repr(now + horizon),
                repr(lost_after),
                limit,
                self.keys.integration(""),
                repr(gap),
                self.keys.token(""),
                repr(margin),
            ],
        )
        claimed = Claimed((text(raw[i]), float(raw[i + 1]), float(raw[i + 2])) for i in range(0, len(raw) - 2, 3))
        claimed.more = len(raw) % 3 == 1
        return claimed

    def schedule(self, name: str, due: float) -> None:
        self.redis.zadd(self.keys.schedule, {name: due})

    # -- one-time values (authorization state, parked codes) -------------
    def put_state(
        self, state_id: str, value: Mapping[str, Any], ttl: int, *, link_id: str, now: float, most: int
    ) -> int:
        """Store a state for the link ``link_id`` unless it is spent (-1) or has ``most`` outstanding (0)."""
        keys = [self.keys.state(state_id), self.keys.link_states(link_id), self.keys.link_spent(link_id)]
        return int(self._put_state(keys=keys, args=[json.dumps({**value, "link": link_id}), ttl, repr(now), most]))

    def take_state(self, state_id: str) -> dict[str, Any] | None:
        """Return and delete in one step, so a state is used once even by racing callbacks."""
        raw = self._take_state(keys=[self.keys.state(state_id)], args=[self.keys.link_states("")])
        return json.loads(raw) if raw else None

    def link_spent(self, link_id: str) -> bool:
        return bool(self.redis.exists(self.keys.link_spent(link_id)))

    def depend(self, subject: str, name: str, *, on: bool = True) -> bool:
        """Record (or with ``on`` false, forget) that ``name`` exchanges ``subject``'s token; False: no ``subject``."""
        keys = [self.keys.integration(subject)]
        return bool(self._dependents(keys=keys, args=["add" if on else "remove", name]))

    def follow(self, names: Sequence[str], now: float, min_interval: float) -> int:
        """Make ``names`` (active or retrying ones) due now, or ``min_interval`` after their last refresh if
        that is later: the token they exchange was just replaced."""
        if not names:
            return 0
        keys = [self.keys.schedule, *(self.keys.integration(name) for name in names)]
        return int(self._follow(keys=keys, args=[repr(now), repr(min_interval), *names]))

    def note(self, name: str, entry: Mapping[str, Any]) -> bool:
        """Add an entry to ``name``'s history without changing its status (what only operators may read)."""
        keys = [self.keys.integration(name), self.keys.history(name)]
        return bool(self._note(keys=keys, args=[json.dumps(entry), HISTORY_LENGTH]))

    def put_exchange(self, exchange_id: str, value: Mapping[str, Any], ttl: int) -> None:
        self.redis.set(self.keys.exchange(exchange_id), json.dumps(value), ex=ttl)

    def take_exchange(self, exchange_id: str) -> dict[str, Any] | None:
        raw = self.redis.getdel(self.keys.exchange(exchange_id))
        return json.loads(raw) if raw else None

    def add_counters(self, counters: Iterable[tuple[str, str, float]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key, name, amount in counters:
            pipe.hincrbyfloat(key, name, amount)
        pipe.execute()

    # -- the webhook's outbox ----------------------------------------------
    def take_events(self, limit: int) -> list[dict[str, Any]]:
        """Remove and return up to ``limit`` of the oldest events; two takers never get the same one."""
        raw: list[str | bytes] = self.redis.lpop(self.keys.outbox, limit) or []  # type: ignore[assignment]
        return [json.loads(item) for item in raw]

    def put_back_events(self, events: list[dict[str, Any]]) -> None:
        """Return events that could not be handed on, to the front, in their order."""
        if events:
            self.redis.lpush(self.keys.outbox, *[json.dumps(event) for event in reversed(events)])

    # -- the key of the given digests ---------------------------------------
    def given_key(self) -> str | None:
        raw = self.redis.get(self.keys.given_key)
        return text(raw) if raw is not None else None

    def put_given_key(self, sealed: str, *, replace: bool = False) -> None:
        """Keep the first key made (two processes making one at once agree on it); ``replace`` re-seals it."""
        if replace:
            self.redis.set(self.keys.given_key, sealed, xx=True)
        else:
            self.redis.set(self.keys.given_key, sealed, nx=True)

    def mark_tick(self, now: float) -> None:
        """Record that a scheduling tick ran (beat and a worker are both alive)."""
        self.redis.set(self.keys.last_tick, repr(now))

    def last_tick(self) -> float | None:
        raw = self.redis.get(self.keys.last_tick)
        return float(raw) if raw else None

    # -- capacity ----------------------------------------------------------
    def capacity_counts(
        self, now: float, window: float, waited: float, lost_after: float, outcomes: Iterable[str], most: int = 1000
    ) -> tuple[int, int, float, dict[str, str]]:
        """(refreshes planned within ``window`` s, claimed refreshes that could start over ``waited`` s ago and that
        no worker holds (at most ``most`` looked at), refreshes with these ``outcomes`` so far, the figures the
        last tick saved)."""
        outcomes = list(outcomes)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcount(self.keys.schedule, repr(now), repr(now + window))
        # In flight under start + lost_after: started before now - waited <=> score below this.
        pipe.zrangebyscore(self.keys.inflight, "-inf", f"({now - waited + lost_after!r}", start=0, num=most)
        pipe.hmget(self.keys.metrics("refresh_outcomes"), outcomes)
        pipe.hgetall(self.keys.capacity)
        due, late, counts, saved = pipe.execute()
        waiting = 0
        if late:
            pipe = self.redis.pipeline(transaction=False)
            for name in late:
                pipe.exists(self.keys.lock(text(name)))
            # One a worker holds is under way (a slow provider); one nobody holds was taken by no worker.
            waiting = sum(1 for held in pipe.execute() if not held)
        return int(due), waiting, sum(float(count) for count in counts if count), text_map(saved)

    def capacity(self) -> dict[str, str]:
        """The tick's latest capacity figures (need, doing, waiting, at, and the finished-count sample)."""
        return text_map(self.redis.hgetall(self.keys.capacity))

    def save_capacity(self, fields: Mapping[str, Any]) -> None:
        mapping: dict[Any, Any] = dict(_string_fields(fields))
        self.redis.hset(self.keys.capacity, mapping=mapping)

    def cap_yielded(self) -> dict[str, str]:
        """Refreshes per token endpoint host that went at their deadline although the rate cap was booked."""
        return text_map(self.redis.hgetall(self.keys.metrics("cap_yielded")))


class Claimed(list[tuple[str, float, float]]):
    """Claimed refreshes as (name, plan, start); ``more``: the claim stopped at its bound, call again."""

    more: bool = False


def _optional_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _score(due: float | str | None) -> str:
    if due == KEEP_SCHEDULE:
        return KEEP_SCHEDULE
    return "" if due is None else repr(due)


def _string_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    # Hash values are strings; None means "empty" in the consumer contract.
    return {key: "" if value is None else _plain(value) for key, value in fields.items()}


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)
