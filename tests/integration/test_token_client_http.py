"""The token client over real HTTP on 127.0.0.1: authentication, caps, redirects, timeouts."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.support.token_server import Canned, TokenServer
from workers.engine.spec import IntegrationSpec, validate_spec
from workers.errors import PermanentProviderError, TransientProviderError
from workers.oauth.addresses import AddressPolicy
from workers.oauth.token_client import TokenClient

# TOKENKEEPER_ALLOW_PRIVATE_NETWORKS=true: these servers listen on 127.0.0.1.
LOCAL = AddressPolicy(allow_private=True)


def client(max_bytes: int = 1_048_576, read_timeout: float = 2.0) -> TokenClient:
    return TokenClient(
        session=requests.Session(),
        clock=time.time,
        connect_timeout=1.0,
        read_timeout=read_timeout,
        max_bytes=max_bytes,
        addresses=LOCAL,
    )


def spec(url: str, **extra: object):
    return validate_spec(
        {
            "name": "x",
            "grant_type": "client_credentials",
            "client_id": "client-id",
            "client_secret": "client-secret",
            "token_url": url,
            **extra,
        },
        addresses=LOCAL,
    )


def test_client_secret_basic_with_awkward_characters() -> None:
    """A server decoding RFC 6749 §2.3.1 Basic credentials accepts id and secret with reserved characters."""
    server = TokenServer(clients={"id with:colon": "s/e+c r=t&"}).start()
    try:
        token = client().client_credentials(
            validate_spec(
                {
                    "name": "x",
                    "grant_type": "client_credentials",
                    "client_id": "id with:colon",
                    "client_secret": "s/e+c r=t&",
                    "token_url": server.url,
                    "scopes": ["a", "b"],
                    "extra_token_params": {"audience": "api"},
                },
                addresses=LOCAL,
            )
        )
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


def test_after_a_body_cut_off_at_the_cap_the_next_request_gets_a_whole_answer(token_server: TokenServer) -> None:
    """The rest of a cut-off body is never read as the next answer: its connection is dropped, not kept."""
    token_server.queue(Canned(200, b"x" * 10_000_000, {"Content-Type": "application/json"}))
    same = client(max_bytes=64_000)
    with pytest.raises(TransientProviderError, match="cap"):
        same.client_credentials(spec(token_server.url))
    assert same.client_credentials(spec(token_server.url)).access_token.startswith("at-")


class _ForwardProxy(ThreadingHTTPServer):
    """A plain HTTP forward proxy: takes absolute-form requests, forwards them, records their targets."""

    daemon_threads = True

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.session = requests.Session()
        self.session.trust_env = False  # the proxy's own requests go straight out, not to itself
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                proxy.targets.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                upstream = proxy.session.post(self.path, data=body, headers=headers, timeout=5, allow_redirects=False)
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", upstream.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_token_requests_go_through_the_proxy_the_environment_names(
    token_server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY set: the token request goes to the proxy, in absolute form, and its answer comes back."""
    from workers.oauth.transport import guarded_session

    proxy = _ForwardProxy()
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        proxied = TokenClient(session=guarded_session(LOCAL), clock=time.time, addresses=LOCAL)
        token = proxied.client_credentials(spec(token_server.url))
        assert token.access_token.startswith("at-")
        assert proxy.targets == [token_server.url]
    finally:
        proxy.shutdown()
        proxy.server_close()


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


class _Endpoint:
    """A token endpoint on one loopback address that counts the requests reaching it."""

    def __init__(self, host: str, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.hits = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b'{"access_token": "at-pinned", "token_type": "Bearer", "expires_in": 60}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _answer(address: str, port: int) -> list[tuple[object, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


def _rebinding_client(
    monkeypatch: pytest.MonkeyPatch, port: int, lookups: list[str], resolved_for: float
) -> tuple[TokenClient, IntegrationSpec]:
    """A client allowed only 127.0.0.2, whose DNS answers idp.test with 127.0.0.2 once and loopback after;
    every lookup, ours and any the HTTP stack would make itself, goes to that DNS. Returns it and its spec."""
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host != "idp.test":
            return real_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]
        lookups.append(host)
        return _answer("127.0.0.2" if len(lookups) == 1 else "127.0.0.1", port)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    allowed = AddressPolicy.from_strings(["127.0.0.2/32"]).allowed_networks
    policy = AddressPolicy(allowed, resolve=rebinding, resolved_for=resolved_for)
    token_client = TokenClient(
        session=requests.Session(), clock=time.time, connect_timeout=1.0, read_timeout=2.0, addresses=policy
    )
    url = f"http://idp.test:{port}/token"
    spec_ = validate_spec(
        {"name": "x", "grant_type": "client_credentials", "client_id": "c", "client_secret": "s", "token_url": url},
        insecure_hosts=["idp.test"],
        addresses=policy,
    )
    return token_client, spec_


def test_a_name_rebound_between_check_and_connect_reaches_only_the_checked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS that answers an allowed address for the check and loopback afterwards never gets the request to loopback.

    127.0.0.2 stands for the allowed (public) address: nothing but loopback may be contacted on a test machine.
    """
    allowed = _Endpoint("127.0.0.2")
    forbidden = _Endpoint("127.0.0.1", allowed.port)
    lookups: list[str] = []
    # Resolved before every request (the default reuses a checked address for 30 s; see the next test).
    token_client, spec_ = _rebinding_client(monkeypatch, allowed.port, lookups, resolved_for=0)
    try:
        token = token_client.client_credentials(spec_)
        assert token.access_token == "at-pinned"
        assert (allowed.hits, forbidden.hits) == (1, 0)
        assert lookups == ["idp.test"]  # resolved once; the connection went to what was checked
        # The next request resolves again (to loopback now) and is refused before anything is sent.
        with pytest.raises(PermanentProviderError) as caught:
            token_client.client_credentials(spec_)
        assert caught.value.error == "forbidden_address" and "127.0.0.1 is a loopback address" in str(caught.value)
        assert forbidden.hits == 0
    finally:
        allowed.stop()
        forbidden.stop()


def test_a_checked_address_is_reused_for_a_while_and_never_an_unchecked_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default policy a name is looked up once for the requests of the next 30 s: the second request
    makes no lookup and goes to the address checked for the first, though DNS now answers loopback."""
    allowed = _Endpoint("127.0.0.2")
    forbidden = _Endpoint("127.0.0.1", allowed.port)
    lookups: list[str] = []
    token_client, spec_ = _rebinding_client(
        monkeypatch, allowed.port, lookups, resolved_for=AddressPolicy().resolved_for
    )
    try:
        for _ in range(3):
            assert token_client.client_credentials(spec_).access_token == "at-pinned"
        assert lookups == ["idp.test"] and (allowed.hits, forbidden.hits) == (3, 0)
    finally:
        allowed.stop()
        forbidden.stop()


def _certificates(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A test CA, and a server certificate it signed for ``name``: (ca.pem, cert.pem, key.pem)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokenkeeper test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp_path / "ca.pem", tmp_path / f"{name}.pem", tmp_path / f"{name}.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.mark.parametrize(("certified", "verifies"), [("idp.test", True), ("other.test", False)])
def test_a_pinned_https_connection_still_verifies_the_certificate_against_the_name(
    tmp_path: Path,
    certified: str,
    verifies: bool,
) -> None:
    """Connecting to the checked address keeps TLS honest: SNI and the hostname check use the URL's name."""
    ca, cert, key = _certificates(tmp_path, certified)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    tls.sni_callback = lambda sock, server_name, context: server_names.append(server_name)
    endpoint = _Endpoint("127.0.0.1", tls=tls)
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment would win over the test CA
    session.verify = str(ca)
    policy = AddressPolicy(allow_private=True, resolve=lambda host, port, **_: _answer("127.0.0.1", port))
    token_client = TokenClient(
        session=session, clock=time.time, connect_timeout=1.0, read_timeout=2.0, addresses=policy
    )
    spec_ = validate_spec(
        {
            "name": "x",
            "grant_type": "client_credentials",
            "client_id": "c",
            "client_secret": "s",
            "token_url": f"https://idp.test:{endpoint.port}/token",
        },
        addresses=policy,
    )
    try:
        if verifies:
            assert token_client.client_credentials(spec_).access_token == "at-pinned"
            assert endpoint.hits == 1
        else:
            with pytest.raises(TransientProviderError):
                token_client.client_credentials(spec_)
            assert endpoint.hits == 0  # the handshake failed: nothing, not even the client secret, was sent
        assert server_names and set(server_names) == {"idp.test"}
    finally:
        endpoint.stop()


def test_a_loopback_token_endpoint_is_refused_at_request_time_by_default() -> None:
    """With the default policy a token URL on 127.0.0.1 gets forbidden_address and the server sees nothing."""
    server = TokenServer().start()
    try:
        strict = TokenClient(session=requests.Session(), clock=time.time, connect_timeout=1.0, read_timeout=2.0)
        with pytest.raises(PermanentProviderError) as caught:
            strict.client_credentials(spec(server.url + "/token"))  # validated with the setting on, run without
        assert caught.value.error == "forbidden_address"
        assert "TOKENKEEPER_ALLOW_PRIVATE_NETWORKS" in str(caught.value)
        assert server.bodies == []
    finally:
        server.stop()
