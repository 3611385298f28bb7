"""tls_client_auth (RFC 8705) against Authlib's server on a real TLS listener that requires a client certificate.

The server trusts only the test CA and refuses a handshake without a certificate from it; tokenkeeper
trusts the test CA as an operator with a private CA would (REQUESTS_CA_BUNDLE).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.authorization_server import AuthorizationServerApp
from tests.support.observe import all_redis_text, disk_text, spellings
from tests.support.pki import CertificateAuthority, Issued
from tests.support.processes import wait_until
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.errors import ProviderError
from workers.producer import call

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture
def ca_file(authority: CertificateAuthority, tmp_path: Path) -> Path:
    return authority.write(tmp_path)


@pytest.fixture
def provider(authority: CertificateAuthority, tmp_path: Path) -> Iterator[AuthorizationServerApp]:
    server_cert = authority.issue("127.0.0.1", client=False)
    (tmp_path / "server.pem").write_text(server_cert.certificate + server_cert.key)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "server.pem")
    tls.verify_mode = ssl.CERT_REQUIRED  # no certificate from the test CA: no handshake
    tls.load_verify_locations(cadata=authority.pem)
    server = AuthorizationServerApp(lifetime=4, tls=tls).start()
    yield server
    server.stop()


def _spec(provider: AuthorizationServerApp, name: str, client_id: str, issued: Issued) -> dict[str, Any]:
    return {
        "name": name,
        "grant_type": "client_credentials",
        "client_id": client_id,
        "auth_method": "tls_client_auth",
        "client_certificate": issued.certificate,
        "client_key": issued.key,
        "token_url": provider.token_url,
        "revocation_url": f"{provider.base_url}/revoke",
        "scopes": "read",
    }


def _register(provider: AuthorizationServerApp, client_id: str, issued: Issued) -> None:
    provider.register_client(
        client_id=client_id,
        auth_method="tls_client_auth",
        tls_subject=issued.subject,
        grant_types=("client_credentials",),
        scope="read",
    )


def test_a_certificate_authenticates_creation_refreshes_and_revocation(
    provider: AuthorizationServerApp,
    authority: CertificateAuthority,
    ca_file: Path,
    process_env: dict[str, str],
    start_processes: Any,
    celery_client: Any,
    redis_client: Any,
    redis_url: str,
    redis_data_dir: Path,
) -> None:
    """Created through the producer task (the key sealed), refreshed twice by the engine, revoked on delete."""
    issued = authority.issue("billing-robot", client=True)
    _register(provider, "billing", issued)
    process_env["REQUESTS_CA_BUNDLE"] = str(ca_file)
    worker = start_processes("worker")
    start_processes("beat")
    created = call(celery_client, "tokenkeeper.create_integration", _spec(provider, "billing", "billing", issued))
    assert created["status"] == "active", created
    wait_until(lambda: provider.state.issued.get("client_credentials:billing", 0) >= 3, 30, "two refreshes", 0.2)
    token = redis_client.hgetall("tokenkeeper:token:billing")
    assert token["status"] == "active" and provider.is_valid(token["access_token"])
    assert set(provider.state.certificates) == {("billing", issued.subject)}
    assert all("client_secret" not in keys for keys in provider.state.form_keys)

    # The client key: sealed in Redis and its files, never in the worker's log.
    key_lines = [line for line in issued.key.splitlines() if len(line) > 40]
    stored, on_disk = all_redis_text(redis_url), disk_text(redis_data_dir, redis_client)
    for line in key_lines:
        assert line not in worker.output() and line not in stored
        assert not any(form in on_disk for form in spellings(line))

    deleted = call(celery_client, "tokenkeeper.delete_integration", "billing")
    assert deleted["revoked"] == ["access_token"], deleted
    assert provider.state.revoked == [("billing", "access_token")]


def test_each_tenant_presents_its_own_certificate_on_a_shared_host(
    provider: AuthorizationServerApp, authority: CertificateAuthority, ca_file: Path, runtime: Any
) -> None:
    """Two integrations, one token endpoint: a kept-alive connection of one never carries the other's request."""
    first, second = authority.issue("tenant-a", client=True), authority.issue("tenant-b", client=True)
    _register(provider, "a", first)
    _register(provider, "b", second)
    runtime.client.session.verify = str(ca_file)
    registry, refresher = Registry(runtime), Refresher(runtime)
    registry.create(_spec(provider, "ta", "a", first))
    registry.create(_spec(provider, "tb", "b", second))
    for name in ("ta", "tb", "ta", "tb", "ta"):
        assert refresher.refresh(name).outcome == "refreshed"
    assert provider.state.certificates == [
        ("a", first.subject),
        ("b", second.subject),
        ("a", first.subject),
        ("b", second.subject),
        ("a", first.subject),
        ("b", second.subject),
        ("a", first.subject),
    ]


def test_a_certificate_the_server_does_not_trust_fails_and_stores_nothing(
    provider: AuthorizationServerApp, ca_file: Path, runtime: Any, redis_client: Any
) -> None:
    """A certificate from another CA: the handshake fails, creation reports it, nothing is stored."""
    stranger = CertificateAuthority("another CA").issue("intruder", client=True)
    _register(provider, "x", stranger)
    runtime.client.session.verify = str(ca_file)
    with pytest.raises(ProviderError) as caught:
        Registry(runtime).create(_spec(provider, "tx", "x", stranger))
    assert caught.value.error == "connection_error"
    assert provider.state.issued == {} and not redis_client.exists("tokenkeeper:integration:tx")
