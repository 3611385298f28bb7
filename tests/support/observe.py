"""Watching what a run leaves behind: task events as Flower sees them, and every value in Redis."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import redis
from celery import Celery


class EventLog:
    """Captures the task events a worker sends, as Flower receives them."""

    def __init__(self, app: Celery) -> None:
        self.events: list[dict] = []
        self.connection = app.connection()
        self.receiver = app.events.Receiver(self.connection, handlers={"*": self.events.append})
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()

    def _run(self) -> None:
        announce = self.receiver.on_consume_ready

        def on_consume_ready(*args: object, **kwargs: object) -> None:
            announce(*args, **kwargs)
            self.ready.set()

        self.receiver.on_consume_ready = on_consume_ready
        self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventLog:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.receiver.should_stop = True
        self.thread.join(5)
        self.connection.release()


def all_redis_text(url: str) -> str:
    """Every key and value of every type in the Redis at ``url``, as one text to search.

    Broker messages are kept base64-encoded; their decoded bodies are added, as an attacker would read them.
    """
    client = redis.Redis.from_url(url)
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        parts.append(repr(key))
        if kind == "string":
            parts.append(repr(client.get(key)))
        elif kind == "hash":
            fields = client.hgetall(key)
            parts.append(repr(fields))
            # The broker's ``unacked`` hash holds delivered messages: their bodies are base64 too.
            parts += [body for body in map(_message_body, fields.values()) if body]
        elif kind == "list":
            items = client.lrange(key, 0, -1)
            parts.append(repr(items))
            parts += [body for body in map(_message_body, items) if body]
        elif kind == "zset":
            parts.append(repr(client.zrange(key, 0, -1)))
        elif kind == "set":
            parts.append(repr(client.smembers(key)))
        elif kind == "stream":
            parts.append(repr(client.xrange(key)))
        elif kind != "none":  # "none": gone between SCAN and TYPE (a worker still running emptied it)
            raise AssertionError(f"{key!r} is a {kind}, which this search cannot read")
    return "\n".join(parts)


def _message_body(raw: bytes | str) -> str:
    """The decoded body of a kombu message (a queued one, or an ``unacked`` entry), else ''."""
    import base64
    import binascii
    import json

    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ""
    if isinstance(envelope, list) and envelope:
        envelope = envelope[0]
    if not isinstance(envelope, dict) or not isinstance(envelope.get("body"), str):
        return ""
    if envelope.get("properties", {}).get("body_encoding") != "base64":
        return envelope["body"]
    try:
        return base64.b64decode(envelope["body"]).decode(errors="replace")
    except (binascii.Error, ValueError):
        return ""


def broker_messages(client: redis.Redis, queue: str) -> list[tuple[str, str]]:
    """Every task message the Redis broker holds (queued, or delivered and not yet acked): (raw, decoded body).

    What an attacker who can read the broker's keys (or its AOF) sees, body decoded as kombu encodes it.
    """
    raws = [*client.lrange(queue, 0, -1), *client.hvals("unacked")]
    return [(raw.decode() if isinstance(raw, bytes) else raw, _message_body(raw)) for raw in raws]


def disk_text(data_dir: Path, client: redis.Redis) -> bytes:
    """Everything the Redis whose files live in ``data_dir`` has written to disk: AOF files and a fresh RDB.

    The AOF holds every write since the server started, so a secret that ever passed through Redis in
    clear (a queued task, say) is still there after the queue drained.
    """
    before = client.lastsave()
    client.bgsave()
    deadline = time.monotonic() + 30
    # BGSAVE publishes no event; LASTSAVE moves once the snapshot is on disk.
    while client.lastsave() == before:
        if time.monotonic() > deadline:
            raise AssertionError("BGSAVE did not finish within 30 s")
        time.sleep(0.05)
    return b"\n".join(path.read_bytes() for path in sorted(data_dir.rglob("*")) if path.is_file())


def spellings(secret: str) -> list[bytes]:
    """``secret`` as it may stand in a file: as is, and base64-encoded at each of the three alignments
    (Celery keeps message bodies base64-encoded, so a plain secret in a task shows only in this form)."""
    raw = secret.encode()
    forms = [raw]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        start, end = -(-offset // 3) * 4, (offset + len(raw)) // 3 * 4
        forms.append(encoded[start:end])
    return forms


class FreshnessWatch:
    """Reads the tokens of ``names`` as a runner would, counting expired reads and each refresh's lateness."""

    def __init__(self, client: redis.Redis, names: list[str]) -> None:
        self.client = client
        self.names = names
        self.reads = self.expired = 0
        self.lateness: dict[tuple[str, str], float] = {}  # (name, refreshed_at) -> seconds late

    def look(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for name in self.names:
            pipe.hmget(f"tokenkeeper:integration:{name}", "refreshed_at", "lateness")
            pipe.hget(f"tokenkeeper:token:{name}", "expires_at")
        answers = pipe.execute()
        now = time.time()
        for name, (refreshed_at, late), expires_at in zip(self.names, answers[::2], answers[1::2], strict=True):
            self.reads += 1
            if expires_at and float(expires_at) <= now:
                self.expired += 1
            if refreshed_at and late:
                self.lateness[(name, str(refreshed_at))] = float(late)

    def late(self) -> list[float]:
        return sorted(self.lateness.values())
