"""A real OAuth 2.0 token endpoint on 127.0.0.1 for tests: short tokens, rotation, reuse detection.

It checks client authentication the way RFC 6749 §2.3.1 wants (form-urlencoded
id and secret inside HTTP Basic, or both in the body), rotates refresh tokens
on every use, and records any refresh token presented twice. Tests can queue
canned answers to imitate a misbehaving provider, or hold a response.
"""

from __future__ import annotations

import base64
import json
import secrets
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote_plus


@dataclass
class Canned:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Process the request for real (rotating the refresh token), then hang up without answering.
    lose_response: bool = False
    # Hold the request unprocessed until this is set; drop it if the client has gone by then,
    # like a server that cancels work on disconnect.
    hold: threading.Event | None = None
    # Process the request for real (rotating the refresh token), then send the answer only after
    # ``answer_late`` seconds, or (``process_first`` with ``hold``) once ``hold`` is set: an answer
    # the provider already acted on, which is lost if the client died meanwhile.
    answer_late: float = 0.0
    process_first: bool = False
    arrived: threading.Event = field(default_factory=threading.Event)
    dropped: bool = False
    # Process the request for real (rotating the refresh token), then answer with these fields of the JSON
    # replaced: each value is raw JSON text (so `1e400` reaches the client as written); None leaves a field out.
    patch: dict[str, str | None] | None = None


@dataclass
class Issued:
    client_id: str
    expires_at: float
    grant: str


class TokenServer:
    def __init__(
        self, lifetime: float | None = 5.0, rotate: bool = True, clients: dict[str, str] | None = None
    ) -> None:
        # None: answers carry no expires_in (a token that never expires).
        self.lifetime = lifetime
        self.rotate = rotate
        self.clients = clients or {"client-id": "client-secret"}
        self.lock = threading.Lock()
        self.live_refresh: dict[str, str] = {}  # refresh token -> client id
        self.spent_refresh: set[str] = set()
        self.spent_codes: set[str] = set()
        self.reused: list[str] = []
        self.access: dict[str, Issued] = {}
        self.grants: list[tuple[float, str]] = []
        self.grants_by_client: dict[str, list[float]] = {}
        self.canned: deque[Canned] = deque()
        # Served on GET by path: discovery documents (RFC 8414, OpenID).
        self.documents: dict[str, dict[str, Any]] = {}
        self.revoked: list[tuple[str, str]] = []  # (token_type_hint, token)
        self.bodies: list[dict[str, str]] = []
        self.auth_headers: list[str | None] = []
        self.cookie_headers: list[str | None] = []
        self.release = threading.Event()
        self.release.set()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.base}/token"

    @property
    def revocation_url(self) -> str:
        return f"{self.base}/revoke"

    def revoke(self, headers: Any, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """RFC 7009: authenticated; unknown tokens are fine; the token stops working."""
        if self._authenticate(headers.get("Authorization"), body) is None:
            return 401, {"error": "invalid_client"}
        token = body.get("token", "")
        with self.lock:
            self.revoked.append((body.get("token_type_hint", ""), token))
            self.live_refresh.pop(token, None)
            self.access.pop(token, None)
        return 200, {}

    def start(self) -> TokenServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def new_refresh_token(self, client_id: str = "client-id") -> str:
        token = "rt-" + secrets.token_urlsafe(12)
        with self.lock:
            self.live_refresh[token] = client_id
        return token

    def is_valid(self, access_token: str, at: float | None = None) -> bool:
        with self.lock:
            issued = self.access.get(access_token)
        return issued is not None and issued.expires_at > (time.time() if at is None else at)

    def queue(self, *answers: Canned) -> None:
        self.canned.extend(answers)

    def count(self, grant: str) -> int:
        with self.lock:
            return sum(1 for _, g in self.grants if g == grant)

    # -- protocol ---------------------------------------------------------
    def answer(self, headers: Any, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client = self._authenticate(headers.get("Authorization"), body)
        if client is None:
            return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        grant = body.get("grant_type")
        with self.lock:
            self.grants.append((time.time(), grant or ""))
            self.grants_by_client.setdefault(client, []).append(time.time())
            if grant == "client_credentials":
                return 200, self._issue(client, grant, None, body.get("scope"))
            if grant == "refresh_token":
                presented = body.get("refresh_token", "")
                if presented in self.spent_refresh:
                    self.reused.append(presented)
                    return 400, {"error": "invalid_grant", "error_description": "refresh token reused"}
                if self.live_refresh.get(presented) != client:
                    return 400, {"error": "invalid_grant", "error_description": "unknown refresh token"}
                if self.rotate:
                    del self.live_refresh[presented]
                    self.spent_refresh.add(presented)
                    new = "rt-" + secrets.token_urlsafe(12)
                    self.live_refresh[new] = client
                    return 200, self._issue(client, grant, new, body.get("scope"))
                return 200, self._issue(client, grant, None, body.get("scope"))
            if grant == "authorization_code":
                if not body.get("code") or body["code"] in self.spent_codes:
                    return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
                self.spent_codes.add(body["code"])
                new = "rt-" + secrets.token_urlsafe(12)
                self.live_refresh[new] = client
                return 200, self._issue(client, grant, new, body.get("scope"))
        return 400, {"error": "unsupported_grant_type"}

    def _issue(self, client: str, grant: str, refresh_token: str | None, scope: str | None) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(16)
        lifetime = self.lifetime if self.lifetime is not None else float("inf")
        self.access[token] = Issued(client, time.time() + lifetime, grant)
        answer: dict[str, Any] = {"access_token": token, "token_type": "bearer"}
        if self.lifetime is not None:
            answer["expires_in"] = self.lifetime
        if refresh_token:
            answer["refresh_token"] = refresh_token
        if scope:
            answer["scope"] = scope
        return answer

    def _authenticate(self, authorization: str | None, body: dict[str, str]) -> str | None:
        if authorization and authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            raw_id, _, raw_secret = decoded.partition(":")
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        else:
            client_id, secret = body.get("client_id", ""), body.get("client_secret", "")
        return client_id if self.clients.get(client_id) == secret and secret else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes; without this, Nagle's algorithm and
                # delayed ACKs hold every keep-alive answer back by about 40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                document = server.documents.get(self.path)
                if document is None:
                    self._send(404, b"not found", {"Content-Type": "text/plain"})
                else:
                    self._send(200, json.dumps(document).encode(), {"Content-Type": "application/json"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = dict(parse_qsl(self.rfile.read(length).decode()))
                if self.path == "/revoke":
                    status, payload = server.revoke(self.headers, body)
                    self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})
                    return
                with server.lock:
                    server.bodies.append(body)
                    server.auth_headers.append(self.headers.get("Authorization"))
                    server.cookie_headers.append(self.headers.get("Cookie"))
                    canned = server.canned.popleft() if server.canned else None
                if canned is not None and (canned.answer_late or canned.process_first):
                    status, payload = server.answer(self.headers, body)
                    canned.arrived.set()
                    if canned.hold is not None:
                        canned.hold.wait(120)
                    else:
                        time.sleep(canned.answer_late)  # the provider's slowness is the scenario
                    self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})
                    return
                if canned is not None and canned.hold is not None:
                    canned.arrived.set()
                    canned.hold.wait(120)
                    if _client_gone(self.connection):
                        canned.dropped = True
                        return
                    canned = None
                if canned is not None and canned.lose_response:
                    server.answer(self.headers, body)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if canned is not None and canned.patch is not None:
                    status, payload = server.answer(self.headers, body)
                    self._send(status, _patched(payload, canned.patch), {"Content-Type": "application/json"})
                    return
                if canned is not None:
                    if canned.delay:
                        time.sleep(canned.delay)
                    self._send(canned.status, canned.body, canned.headers)
                    return
                status, payload = server.answer(self.headers, body)
                server.release.wait(30)
                self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    if "Content-Length" not in headers:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _patched(payload: dict[str, Any], patch: dict[str, str | None]) -> bytes:
    kept = {key: value for key, value in payload.items() if key not in patch}
    spliced = [f"{json.dumps(key)}: {raw}" for key, raw in patch.items() if raw is not None]
    parts = [part for part in (json.dumps(kept)[1:-1], *spliced) if part]
    return ("{" + ", ".join(parts) + "}").encode()


def _client_gone(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
