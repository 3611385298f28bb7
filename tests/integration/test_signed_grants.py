"""Signed grants and client assertions against Authlib's authorization server, with real workers and beat.

Each integration is created through the producer task (its key sealed), refreshed by the engine at
least twice, and revoked when deleted; Authlib verifies every signature, audience, lifetime and
``jti`` (a replayed one is refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import cli
from tests.support.authorization_server import AuthorizationServerApp
from tests.support.keys import ec_pem, ed25519_pem, public_pem, rsa_pem
from tests.support.observe import EventLog, all_redis_text, disk_text, spellings
from tests.support.processes import wait_until
from workers.engine.registry import Registry
from workers.errors import ProviderError
from workers.oauth.assertions import JWT_BEARER_GRANT
from workers.producer import call

pytestmark = pytest.mark.e2e

LONG_SECRET = "a-client-secret-long-enough-for-hs256-0123456789"


@pytest.fixture
def provider() -> Iterator[AuthorizationServerApp]:
    server = AuthorizationServerApp(lifetime=4).start()
    yield server
    server.stop()


def _spec(provider: AuthorizationServerApp, name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "token_url": provider.token_url, "revocation_url": f"{provider.base_url}/revoke", **fields}


def _register_signing_clients(provider: AuthorizationServerApp, grant_key: str, client_key: str) -> None:
    """robot: the JWT bearer grant with ``grant_key``; signer: private_key_jwt with ``client_key``; sharer:
    client_secret_jwt."""
    provider.register_client(
        client_id="robot", auth_method="none", public_key=public_pem(grant_key), grant_types=(JWT_BEARER_GRANT,)
    )
    provider.register_client(
        client_id="signer",
        auth_method="private_key_jwt",
        public_key=public_pem(client_key),
        grant_types=("client_credentials",),
        scope="read write",
    )
    provider.register_client(
        client_id="sharer",
        client_secret=LONG_SECRET,
        auth_method="client_secret_jwt",
        grant_types=("client_credentials",),
        scope="read",
    )


def test_each_signed_method_is_created_refreshed_twice_and_revoked(
    provider: AuthorizationServerApp, start_processes: Any, celery_client: Any, redis_client: Any
) -> None:
    """JWT bearer (a new assertion each time), private_key_jwt and client_secret_jwt: all through Celery."""
    key = rsa_pem()
    _register_signing_clients(provider, key, ec_pem())
    specs = [
        _spec(
            provider,
            "sa",
            grant_type="jwt_bearer",
            client_id="robot",
            private_key=key,
            key_id="k-1",
            scopes=["profile"],
            assertion_claims={"sub": "alice", "lifetime": 120},
        ),
        _spec(
            provider,
            "pkjwt",
            grant_type="client_credentials",
            client_id="signer",
            auth_method="private_key_jwt",
            private_key=ec_pem(),
            scopes="read",
        ),
        _spec(
            provider,
            "csjwt",
            grant_type="client_credentials",
            client_id="sharer",
            client_secret=LONG_SECRET,
            auth_method="client_secret_jwt",
            scopes="read",
        ),
    ]
    start_processes("worker")
    start_processes("beat")
    for spec in specs:
        created = call(celery_client, "tokenkeeper.create_integration", spec, timeout=20)
        assert created["status"] == "active", created

    issued = provider.state.issued
    keys = {
        "sa": f"{JWT_BEARER_GRANT}:robot",
        "pkjwt": "client_credentials:signer",
        "csjwt": "client_credentials:sharer",
    }
    wait_until(lambda: all(issued.get(k, 0) >= 3 for k in keys.values()), 40, "two refreshes of each", 0.2)
    for name, client_id in (("sa", "robot"), ("pkjwt", "signer"), ("csjwt", "sharer")):
        token = redis_client.hgetall(f"tokenkeeper:token:{name}")
        assert token["status"] == "active"
        assert provider.is_valid(token["access_token"]), name
        assert provider.live_tokens(client_id)

    # A new assertion for every token: its own jti, the claims the spec asked for.
    assertions = provider.state.assertions
    assert len({claims["jti"] for claims in assertions}) == len(assertions) >= 3
    assert {(c["iss"], c["sub"], c["aud"]) for c in assertions} == {("robot", "alice", provider.token_url)}
    assert all(c["exp"] - c["iat"] == 120 for c in assertions)
    assert provider.state.replayed_jti == []
    assert len(provider.state.seen_jti) >= 6  # two client-assertion integrations, three tokens each at least
    # Nothing secret went as a form field but the assertions themselves.
    assert all("client_secret" not in keys_ for keys_ in provider.state.form_keys)

    for name in ("sa", "pkjwt", "csjwt"):
        deleted = call(celery_client, "tokenkeeper.delete_integration", name, timeout=20)
        assert deleted["revoked"] == ["access_token"], deleted
        assert not redis_client.exists(f"tokenkeeper:token:{name}")
    assert {client for client, _ in provider.state.revoked} == {"robot", "signer", "sharer"}


@pytest.mark.parametrize(
    ("pem", "alg"), [(rsa_pem, "RS256"), (rsa_pem, "PS256"), (ec_pem, "ES256"), (ed25519_pem, "EdDSA")]
)
def test_each_algorithm_gets_a_token(provider: AuthorizationServerApp, runtime: Any, pem: Any, alg: str) -> None:
    """RS256, PS256, ES256 and EdDSA assertions are each verified and accepted by the server."""
    provider.register_client(client_id="robot", public_key=public_pem(pem()), grant_types=(JWT_BEARER_GRANT,))
    created = Registry(runtime).create(
        _spec(provider, "sa", grant_type="jwt_bearer", client_id="robot", private_key=pem(), signing_alg=alg)
    )
    assert created["status"] == "active"


def test_a_key_the_server_does_not_know_is_refused_and_nothing_is_stored(
    provider: AuthorizationServerApp, runtime: Any, redis_client: Any
) -> None:
    """A key other than the registered one: the server's invalid_grant comes back, nothing is stored."""
    provider.register_client(
        client_id="robot",
        public_key=public_pem(rsa_pem()),
        grant_types=(JWT_BEARER_GRANT,),
    )
    with pytest.raises(ProviderError) as caught:
        Registry(runtime).create(
            _spec(provider, "sa", grant_type="jwt_bearer", client_id="robot", private_key=rsa_pem(3072))
        )
    assert caught.value.error == "invalid_grant"
    assert not redis_client.exists("tokenkeeper:integration:sa", "tokenkeeper:token:sa")


def test_a_service_account_key_file_from_the_cli(
    provider: AuthorizationServerApp,
    start_processes: Any,
    process_env: dict[str, str],
    redis_client: Any,
    tmp_path: Path,
) -> None:
    """`tokenkeeper create --service-account key.json`: the file as Google issues it, scopes inside the assertion."""
    key = rsa_pem()
    email = "robot@project.iam.gserviceaccount.com"
    provider.register_client(
        client_id=email, auth_method="none", public_key=public_pem(key), grant_types=(JWT_BEARER_GRANT,)
    )
    key_file = tmp_path / "key.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "project",
                "private_key_id": "0123abcd",
                "private_key": key,
                "client_email": email,
                "client_id": "1234567890",
                "token_uri": provider.token_url,
            }
        )
    )
    start_processes("worker")
    created = cli(
        process_env,
        "create",
        "--service-account",
        str(key_file),
        "--name",
        "workspace",
        "--scopes",
        "profile email",
        "--subject",
        "alice",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["status"] == "active"
    (claims,) = provider.state.assertions
    assert (claims["iss"], claims["sub"], claims["aud"], claims["scope"]) == (
        email,
        "alice",
        provider.token_url,
        "profile email",
    )
    assert provider.is_valid(redis_client.hget("tokenkeeper:token:workspace", "access_token"))
    shown = cli(process_env, "show", "workspace")
    assert "PRIVATE KEY" not in shown.stdout and json.loads(shown.stdout)["spec"]["key_id"] == "0123abcd"

    missing = cli(process_env, "create", "--service-account", str(tmp_path / "nope.json"), "--name", "x")
    assert missing.returncode != 0 and "cannot read" in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_planted_keys_and_assertions_are_found_nowhere(
    provider: AuthorizationServerApp,
    start_processes: Any,
    celery_client: Any,
    redis_url: str,
    redis_client: Any,
    redis_data_dir: Path,
) -> None:
    """Private keys, an HS256 client secret and every assertion signed: not in logs, events, results, Redis
    values or Redis's files (the keys are stored sealed only)."""
    grant_key, client_key = rsa_pem(), ec_pem()
    _register_signing_clients(provider, grant_key, client_key)
    worker = start_processes("worker")  # logs at INFO
    beat = start_processes("beat")
    shown: list[str] = []
    with EventLog(celery_client) as events:
        for spec in (
            _spec(provider, "sa", grant_type="jwt_bearer", client_id="robot", private_key=grant_key),
            _spec(
                provider,
                "pk",
                grant_type="client_credentials",
                client_id="signer",
                auth_method="private_key_jwt",
                private_key=client_key,
                scopes="read",
            ),
            _spec(
                provider,
                "cs",
                grant_type="client_credentials",
                client_id="sharer",
                client_secret=LONG_SECRET,
                auth_method="client_secret_jwt",
                scopes="read",
            ),
        ):
            shown.append(repr(call(celery_client, "tokenkeeper.create_integration", spec, timeout=20)))
        shown.append(repr(call(celery_client, "tokenkeeper.refresh_integration", "pk", timeout=20)))
        wait_until(lambda: len(provider.state.raw_assertions) >= 9, 30, "scheduled refreshes", 0.2)
    # A key's PEM body lines, each long enough to be unmistakable.
    key_lines = [line for pem in (grant_key, client_key) for line in pem.splitlines() if len(line) > 40]
    never_anywhere = [LONG_SECRET, *key_lines, *provider.state.raw_assertions]
    places = {
        "worker log": worker.output(),
        "beat log": beat.output(),
        "task events": repr(events.events),
        "results": "\n".join(shown),
        "redis": all_redis_text(redis_url),
    }
    assert "refresh sa: refreshed" in places["worker log"]  # the log was on, and said what happened
    for secret in never_anywhere:
        for place, text in places.items():
            assert secret not in text, f"a planted secret is in the {place}"
    on_disk = disk_text(redis_data_dir, redis_client)
    for secret in never_anywhere:
        assert not any(form in on_disk for form in spellings(secret)), "a planted secret is in Redis's files"
