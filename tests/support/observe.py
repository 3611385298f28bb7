"""Watching what a run leaves behind: task events as Flower sees them, and every value in Redis."""

from __future__ import annotations

import threading

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
    """Every key and value of every type in the Redis at ``url``, as one text to search."""
    client = redis.Redis.from_url(url)
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        parts.append(repr(key))
        if kind == "string":
            parts.append(repr(client.get(key)))
        elif kind == "hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == "list":
            parts.append(repr(client.lrange(key, 0, -1)))
        elif kind == "zset":
            parts.append(repr(client.zrange(key, 0, -1)))
        elif kind == "set":
            parts.append(repr(client.smembers(key)))
        elif kind == "stream":
            parts.append(repr(client.xrange(key)))
        else:
            raise AssertionError(f"{key!r} is a {kind}, which this search cannot read")
    return "\n".join(parts)


def broker_messages(client: redis.Redis, queue: str) -> list[tuple[str, str]]:
    """Every task message the Redis broker holds (queued, or delivered and not yet acked): (raw, decoded body).

    What an attacker who can read the broker's keys (or its AOF) sees, body decoded as kombu encodes it.
    """
    import base64
    import json

    raws = [*client.lrange(queue, 0, -1), *client.hvals("unacked")]
    messages: list[tuple[str, str]] = []
    for raw in raws:
        text = raw.decode() if isinstance(raw, bytes) else raw
        envelope = json.loads(text)
        if isinstance(envelope, list):  # unacked: [message, exchange, routing key]
            envelope = envelope[0]
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        messages.append((text, body))
    return messages
