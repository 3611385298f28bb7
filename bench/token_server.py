"""A lean client-credentials token endpoint for benchmarks, run as its own process.

    python -m bench.token_server --port 8700 --min-lifetime 600 --max-lifetime 1200 [--delay 0.05]

Each client id gets a fixed lifetime in [min, max] (spread by a hash of the id).
It counts requests, and "early" ones: a client asking again before half the
lifetime of its last token has passed. GET /stats returns the counts as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.early = 0
        self.connections = 0
        self.last: dict[str, tuple[float, float]] = {}


def lifetime_of(client: str, low: float, high: float) -> int:
    spread = int.from_bytes(hashlib.blake2b(client.encode(), digest_size=4).digest(), "big") / 2**32
    return int(low + (high - low) * spread)


def serve(port: int, low: float, high: float, delay: float = 0.0) -> None:
    stats = Stats()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.posted = False
            # Headers and body go out in two writes; without this, Nagle's algorithm and
            # delayed ACKs hold every keep-alive answer back by about 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if delay:
                time.sleep(delay)  # a provider across a network: the answer takes this long
            auth = self.headers.get("Authorization", "")
            client = auth[6:] if auth.startswith("Basic ") else "anonymous"
            lifetime = lifetime_of(client, low, high)
            now = time.time()
            with stats.lock:
                stats.requests += 1
                if not self.posted:
                    # Connections that carried token requests (the stats' own GETs are not counted).
                    stats.connections += 1
                    self.posted = True
                previous = stats.last.get(client)
                if previous is not None and now - previous[0] < previous[1] / 2 - 1:
                    stats.early += 1
                stats.last[client] = (now, lifetime)
                count = stats.requests
            body = json.dumps({"access_token": f"at-{count}", "token_type": "bearer", "expires_in": lifetime}).encode()
            self._send(body)

        def do_GET(self) -> None:
            with stats.lock:
                body = json.dumps(
                    {
                        "requests": stats.requests,
                        "early": stats.early,
                        "clients": len(stats.last),
                        "connections": stats.connections,
                    }
                ).encode()
            self._send(body)

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", port), Handler)
    server.serve_forever()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Read by listen() in the constructor: set on an instance afterwards it would leave the backlog at 5,
    # and a burst of new connections would wait out a dropped SYN's one-second retransmission.
    request_queue_size = 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--min-lifetime", type=float, default=600)
    parser.add_argument("--max-lifetime", type=float, default=1200)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each token answer takes")
    args = parser.parse_args()
    serve(args.port, args.min_lifetime, args.max_lifetime, args.delay)


if __name__ == "__main__":
    main()
