"""A webhook receiver on 127.0.0.1 that records what it is sent and can refuse the first deliveries."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self) -> None:
        self.deliveries: queue.Queue[Delivery] = queue.Queue()
        self.refused: list[Delivery] = []
        self.fail_next = 0
        # The answer to a delivery refused by fail_next: 503 (retried) unless a test wants another.
        self.fail_status = 503
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def take(self, count: int, timeout: float) -> list[Delivery]:
        """Wait for ``count`` accepted deliveries."""
        return [self.deliveries.get(timeout=timeout) for _ in range(count)]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                delivery = Delivery(dict(self.headers.items()), body)
                with receiver.lock:
                    refuse = receiver.fail_next > 0
                    receiver.fail_next -= refuse
                if refuse:
                    receiver.refused.append(delivery)
                    self.send_response(receiver.fail_status)
                    self.send_header("Retry-After", "1")
                else:
                    receiver.deliveries.put(delivery)
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
