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
    client = redis.Redis.from_url(url)
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
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
    return "\n".join(parts)
