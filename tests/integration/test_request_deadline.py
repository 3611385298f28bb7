"""Every outbound request ends by its wall-clock deadline (connect + read timeouts), whatever the server or DNS does.

Each server here is a raw socket on 127.0.0.1 that plays one way of holding a worker: a body dripped a
byte at a time, headers dripped a byte at a time, a connection accepted and never answered; and a
resolver that never answers. Each drip comes faster than the read timeout, so only a deadline on the
whole request can end it.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.test_token_client_http import _certificates
from workers.engine.spec import validate_spec
from workers.errors import TransientProviderError, WebhookError
from workers.oauth.addresses import AddressPolicy
from workers.oauth.token_client import TokenClient
from workers.ops.notifications import Webhook

LOCAL = AddressPolicy(allow_private=True)
CONNECT, READ = 0.5, 1.0
DEADLINE = CONNECT + READ
# Room for a loaded machine; every server below would go on for 12 s.
MARGIN = 1.0
DRIP = 0.3


class Scripted:
    """A one-connection-at-a-time server on 127.0.0.1 that reads a request, then sends ``head`` and drips ``drip``.

    ``head`` goes at once; each byte of ``drip`` follows after DRIP seconds. With ``silent`` it accepts and
    never answers. It stops at the first send the client no longer takes.
    """

    def __init__(
        self, head: bytes = b"", drip: bytes = b"", silent: bool = False, tls: ssl.SSLContext | None = None
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.tls = tls
        self.stop = threading.Event()
        self.head, self.drip, self.silent = head, drip, silent
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/endpoint"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            if self.tls is not None:
                try:
                    connection = self.tls.wrap_socket(connection, server_side=True)
                except OSError:
                    continue
            with connection:
                if self.silent:
                    self.stop.wait()
                    return
                connection.recv(65536)
                try:
                    connection.sendall(self.head)
                    for byte in self.drip:
                        if self.stop.wait(DRIP):
                            return
                        connection.sendall(bytes([byte]))
                except OSError:
                    continue  # the client hung up: what the tests want

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=15)


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
SLOW_BODY = b'{"access_token": "at-drip", "x": "' + b" " * 40


@pytest.fixture
def body_dripper() -> Iterator[Scripted]:
    server = Scripted(head=JSON_HEAD, drip=SLOW_BODY)
    yield server
    server.close()


@pytest.fixture
def header_dripper() -> Iterator[Scripted]:
    server = Scripted(drip=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"x" * 40)
    yield server
    server.close()


@pytest.fixture
def silent() -> Iterator[Scripted]:
    server = Scripted(silent=True)
    yield server
    server.close()


def client(policy: AddressPolicy = LOCAL) -> TokenClient:
    return TokenClient(
        session=requests.Session(), clock=time.time, connect_timeout=CONNECT, read_timeout=READ, addresses=policy
    )


def spec(url: str, policy: AddressPolicy = LOCAL):
    return validate_spec(
        {
            "name": "x",
            "grant_type": "client_credentials",
            "client_id": "client-id",
            "client_secret": "client-secret",
            "token_url": url,
        },
        insecure_hosts=["idp.test"],
        addresses=policy,
    )


def timed_failure(call, error: type[Exception]) -> tuple[float, Exception]:
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    return time.monotonic() - started, caught.value


@pytest.mark.parametrize("server", ["body_dripper", "header_dripper"])
def test_a_dripping_token_endpoint_is_cut_at_the_deadline(server: str, request: pytest.FixtureRequest) -> None:
    """A token endpoint dripping its headers or its body a byte at a time ends at the deadline, transiently."""
    url = request.getfixturevalue(server).url
    elapsed, error = timed_failure(lambda: client().client_credentials(spec(url)), TransientProviderError)
    assert elapsed < DEADLINE + MARGIN, f"the request ran {elapsed:.1f}s past a {DEADLINE}s deadline"
    assert elapsed >= DEADLINE - 0.1  # the deadline, not a read timeout, ended it
    assert error.error == "timeout" and "deadline" in str(error)


def test_a_token_endpoint_dripping_over_tls_is_cut_at_the_deadline(tmp_path: Path) -> None:
    """Over HTTPS, to a pinned address with the certificate checked against the name, a dripped body ends too."""
    ca, cert, key = _certificates(tmp_path, "idp.test")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = Scripted(head=JSON_HEAD, drip=SLOW_BODY, tls=tls)
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca)
    policy = AddressPolicy(
        allow_private=True,
        resolve=lambda host, port, **_: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))],
    )
    token_client = TokenClient(
        session=session, clock=time.time, connect_timeout=CONNECT, read_timeout=READ, addresses=policy
    )
    url = f"https://idp.test:{server.listener.getsockname()[1]}/token"
    try:
        elapsed, error = timed_failure(
            lambda: token_client.client_credentials(spec(url, policy)), TransientProviderError
        )
    finally:
        server.close()
    assert DEADLINE - 0.1 <= elapsed < DEADLINE + MARGIN
    assert error.error == "timeout" and "deadline" in str(error)


def test_a_token_endpoint_that_accepts_and_never_answers_ends_within_the_deadline(silent: Scripted) -> None:
    """A connection accepted and never answered ends within the deadline as a transient timeout."""
    elapsed, error = timed_failure(lambda: client().client_credentials(spec(silent.url)), TransientProviderError)
    assert elapsed < DEADLINE + MARGIN
    assert error.error == "timeout"


def test_a_resolver_that_hangs_ends_at_the_deadline() -> None:
    """A name whose DNS lookup never returns fails at the deadline as a transient error, not a refused address."""
    released = threading.Event()

    def hanging(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        released.wait(30)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    policy = AddressPolicy(allow_private=True, resolve=hanging)
    try:
        elapsed, error = timed_failure(
            lambda: client(policy).client_credentials(spec("http://idp.test/token", policy)), TransientProviderError
        )
    finally:
        released.set()
    assert elapsed < DEADLINE + MARGIN
    assert error.error == "timeout" and "deadline" in str(error)


def test_discovery_metadata_dripped_is_cut_at_the_deadline(body_dripper: Scripted) -> None:
    """Fetching discovery metadata from a dripping server ends at the deadline, transiently."""
    elapsed, error = timed_failure(lambda: client().get_json(body_dripper.url, "metadata"), TransientProviderError)
    assert elapsed < DEADLINE + MARGIN
    assert "deadline" in str(error)


def test_a_dripping_webhook_is_cut_at_the_deadline(body_dripper: Scripted) -> None:
    """A webhook receiver dripping its answer ends the delivery at the deadline with a retryable error."""
    webhook = Webhook(body_dripper.url, "secret", requests.Session(), time.time, (CONNECT, READ), addresses=LOCAL)
    elapsed, error = timed_failure(lambda: webhook.deliver({"id": "e1", "name": "x", "status": "active"}), WebhookError)
    assert elapsed < DEADLINE + MARGIN
    assert error.retryable and "deadline" in str(error)  # type: ignore[attr-defined]


def test_a_prompt_token_endpoint_answers_as_before_after_an_earlier_deadline_passed(token_server) -> None:
    """A request that finished in time leaves nothing behind that could cut a later request on the same session."""
    token_client = client()
    assert token_client.client_credentials(spec(token_server.url)).access_token.startswith("at-")
    # Not synchronisation: wall-clock time must pass for the first request's deadline to come and go.
    time.sleep(DEADLINE + 0.2)
    started = time.monotonic()
    assert token_client.client_credentials(spec(token_server.url)).access_token.startswith("at-")
    assert time.monotonic() - started < READ
