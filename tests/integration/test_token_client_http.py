"""The token client over real HTTP on 127.0.0.1: authentication, caps, redirects, timeouts."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.support.token_server import Canned, TokenServer
from workers.errors import TransientProviderError
from workers.spec import validate_spec
from workers.token_client import TokenClient


def client(max_bytes: int = 1_048_576, read_timeout: float = 2.0) -> TokenClient:
    return TokenClient(session=requests.Session(), clock=time.time, connect_timeout=1.0,
                       read_timeout=read_timeout, max_bytes=max_bytes)


def spec(url: str, **extra: object):
    return validate_spec({"name": "x", "grant_type": "client_credentials", "client_id": "client-id",
                          "client_secret": "client-secret", "token_url": url, **extra})


def test_client_secret_basic_with_awkward_characters() -> None:
    """A server decoding RFC 6749 §2.3.1 Basic credentials accepts id and secret with reserved characters."""
    server = TokenServer(clients={"id with:colon": "s/e+c r=t&"}).start()
    try:
        token = client().client_credentials(
            validate_spec({"name": "x", "grant_type": "client_credentials", "client_id": "id with:colon",
                           "client_secret": "s/e+c r=t&", "token_url": server.url, "scopes": ["a", "b"],
                           "extra_token_params": {"audience": "api"}}))
        assert token.access_token.startswith("at-")
        assert server.bodies[-1] == {"grant_type": "client_credentials", "scope": "a b", "audience": "api"}
    finally:
        server.stop()


def test_client_secret_post_sends_credentials_in_the_body(token_server: TokenServer) -> None:
    """client_secret_post puts id and secret in the form and sends no Authorization header."""
    client().client_credentials(spec(token_server.url, auth_method="client_secret_post"))
    assert token_server.bodies[-1]["client_secret"] == "client-secret"
    assert token_server.auth_headers[-1] is None


def test_an_oversized_body_is_cut_off(token_server: TokenServer) -> None:
    """A 10 MB answer is not read into memory; it is a transient error naming the cap."""
    token_server.queue(Canned(200, b"x" * 10_000_000, {"Content-Type": "application/json"}))
    with pytest.raises(TransientProviderError, match="cap"):
        client(max_bytes=64_000).client_credentials(spec(token_server.url))


def test_a_redirect_to_another_host_is_not_followed() -> None:
    """A 307 would resend the secret to its Location; the other host never hears from us."""
    target = TokenServer().start()
    origin = TokenServer().start()
    try:
        origin.queue(Canned(307, b"", {"Location": target.url}))
        with pytest.raises(TransientProviderError, match="redirect"):
            client().client_credentials(spec(origin.url))
        assert target.bodies == []
    finally:
        target.stop()
        origin.stop()


def test_a_read_timeout_is_transient(token_server: TokenServer) -> None:
    """A server that holds its answer past the read timeout gives a transient timeout error."""
    token_server.queue(Canned(200, b"{}", delay=2.0))
    with pytest.raises(TransientProviderError) as caught:
        client(read_timeout=0.3).client_credentials(spec(token_server.url))
    assert caught.value.error == "timeout"


def test_connection_refused_is_transient() -> None:
    """Nothing listening: a transient connection error, no traceback of requests' internals."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransientProviderError) as caught:
        client().client_credentials(spec(f"http://127.0.0.1:{port}/token"))
    assert caught.value.error == "connection_error"


def test_accept_json_is_sent() -> None:
    """Providers like GitHub answer JSON only when asked with Accept: application/json."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("Accept"))
            body = b'{"access_token": "a", "token_type": "bearer"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client().client_credentials(spec(f"http://127.0.0.1:{httpd.server_address[1]}/t"))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen == ["application/json"]
