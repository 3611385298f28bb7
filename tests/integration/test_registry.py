"""Creating, updating and deleting integrations: nothing half-written, conflicts untouched."""

from __future__ import annotations

import pytest
import redis

from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import Canned, TokenServer
from workers.engine.declared import decode
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime, build_runtime
from workers.errors import ConflictError, NotFoundError, PermanentProviderError, SpecError


def test_creation_stores_token_secrets_sealed_and_schedule(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A created integration has a consumer hash, an encrypted secret and a planned refresh."""
    result = Registry(runtime).create(cc_spec(token_server, "svc", scopes="read write"))
    assert result["status"] == "active" and int(result["expires_at"]) > 0
    token = redis_client.hgetall("tokenkeeper:token:svc")
    assert set(token) == {"access_token", "token_type", "expires_at", "scope", "status", "updated_at"}
    assert token["scope"] == "read write" and token["token_type"] == "Bearer"
    integration = redis_client.hgetall("tokenkeeper:integration:svc")
    assert "client-secret" not in repr(integration)
    assert runtime.box.open(integration["secrets"])["client_secret"] == "client-secret"
    assert redis_client.zscore("tokenkeeper:schedule", "svc") is not None


def test_a_failed_first_request_stores_nothing(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Bad credentials: the provider's error comes back and no key is written."""
    with pytest.raises(PermanentProviderError, match="invalid_client"):
        Registry(runtime).create(cc_spec(token_server, "svc", client_secret="wrong"))
    assert redis_client.keys("*") in ([], ["tokenkeeper:given_key"])  # the service's digest key may stay


def test_a_rejected_spec_stores_nothing(runtime: Runtime, redis_client: redis.Redis) -> None:
    """A spec error names the field and writes nothing."""
    with pytest.raises(SpecError, match="token_url"):
        Registry(runtime).create(
            {
                "name": "svc",
                "grant_type": "client_credentials",
                "client_id": "a",
                "client_secret": "b",
                "token_url": "gopher://x",
            }
        )
    assert redis_client.keys("*") in ([], ["tokenkeeper:given_key"])  # the service's digest key may stay


def test_a_taken_name_is_a_conflict_and_the_original_is_untouched(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Creating a name twice fails without touching the first integration or calling the provider."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    before = redis_client.hgetall("tokenkeeper:token:svc")
    calls = len(token_server.bodies)
    with pytest.raises(ConflictError, match="svc"):
        Registry(runtime).create(cc_spec(token_server, "svc", client_secret="other"))
    assert redis_client.hgetall("tokenkeeper:token:svc") == before
    assert len(token_server.bodies) == calls


def test_a_rotated_refresh_token_from_creation_is_kept(runtime: Runtime, token_server: TokenServer) -> None:
    """The refresh token pasted by the operator is spent at creation; the rotated one is stored."""
    spec = rt_spec(token_server, "user")
    Registry(runtime).create(spec)
    secrets = runtime.box.open(runtime.store.load("user").sealed_secrets)
    assert secrets["refresh_token"] != spec["refresh_token"]
    assert secrets["refresh_token"] in token_server.live_refresh


def test_authorization_code_starts_pending_with_a_link(runtime: Runtime, redis_client: redis.Redis) -> None:
    """An authorization_code integration waits for consent and says where to send the user."""
    result = Registry(runtime).create(
        {
            "name": "drive",
            "grant_type": "authorization_code",
            "client_id": "a",
            "client_secret": "b",
            "token_url": "https://idp.example/token",
            "auth_url": "https://idp.example/auth",
        }
    )
    # The link is signed and single-use (tests/integration/test_authorization_attacks.py pins the rest).
    assert result.pop("authorization_url").startswith(f"{runtime.settings.public_url}/oauth/authorize/drive?t=")
    assert result == {"name": "drive", "status": "pending_authorization"}
    assert redis_client.hget("tokenkeeper:token:drive", "status") == "pending_authorization"
    assert redis_client.zscore("tokenkeeper:schedule", "drive") is None


def test_update_with_new_credentials_gets_a_new_token(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Changing the secret is checked against the provider before it is stored."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    token_server.clients["client-id"] = "rotated-secret"
    result = Registry(runtime).update("svc", {"client_secret": "rotated-secret", "scopes": ["x"]})
    assert result["status"] == "active"
    assert runtime.box.open(runtime.store.load("svc").sealed_secrets)["client_secret"] == "rotated-secret"
    assert redis_client.hget("tokenkeeper:token:svc", "scope") == "x"


def test_a_failed_update_changes_nothing(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Wrong new credentials or a bad field leave the stored integration exactly as it was."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    before = (redis_client.hgetall("tokenkeeper:integration:svc"), redis_client.hgetall("tokenkeeper:token:svc"))
    with pytest.raises(PermanentProviderError):
        Registry(runtime).update("svc", {"client_secret": "wrong"})
    with pytest.raises(SpecError, match="grant_type"):
        Registry(runtime).update("svc", {"grant_type": "refresh_token"})
    token_server.queue(Canned(500, b"", {}))
    with pytest.raises(Exception, match="http_500"):
        Registry(runtime).update("svc", {"scopes": "new"})
    after = (redis_client.hgetall("tokenkeeper:integration:svc"), redis_client.hgetall("tokenkeeper:token:svc"))
    assert after == before
    assert runtime.store.acquire("svc", 1) is not None  # the update released its lock


def test_update_brings_a_needs_reauth_integration_back(runtime: Runtime, token_server: TokenServer) -> None:
    """Pasting a new refresh token into a needs_reauth integration makes it active again."""
    from workers.engine.refresher import Refresher

    Registry(runtime).create(rt_spec(token_server, "user"))
    token_server.live_refresh.clear()
    assert Refresher(runtime).refresh("user").status == "needs_reauth"
    result = Registry(runtime).update("user", {"refresh_token": token_server.new_refresh_token()})
    assert result["status"] == "active"
    assert [e["status"] for e in runtime.store.history("user")][:2] == ["active", "needs_reauth"]


def test_delete_removes_every_key(runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis) -> None:
    """After delete nothing of the integration is left; deleting again is not found."""
    Registry(runtime).create(cc_spec(token_server, "svc"))
    assert Registry(runtime).delete("svc") == {"name": "svc", "deleted": True}
    assert redis_client.keys("*") in ([], ["tokenkeeper:given_key"])  # the service's digest key may stay
    with pytest.raises(NotFoundError):
        Registry(runtime).delete("svc")
    with pytest.raises(NotFoundError):
        Registry(runtime).update("svc", {})


def test_a_batch_of_creations_stores_each_good_spec_and_names_each_bad_one(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Eight specs in one batch: the three good ones stored; a bad URL, a name twice in the batch, a name already
    taken (left untouched), a refused client secret and a non-spec each come back as their own error, nothing of
    them stored; every name reserved in one script call, the stores in a few."""
    Registry(runtime).create(cc_spec(token_server, "old"))
    old = redis_client.hgetall("tokenkeeper:integration:old")
    specs: list[object] = [
        cc_spec(token_server, "a"),
        {**cc_spec(token_server, "bad_url"), "token_url": "ftp://x"},
        cc_spec(token_server, "b"),
        cc_spec(token_server, "a"),
        cc_spec(token_server, "old"),
        cc_spec(token_server, "bad_secret", client_secret="nope"),
        "not a spec",
        cc_spec(token_server, "c"),
    ]
    stats = redis_client.info("commandstats")
    before = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    outcomes = Registry(runtime).create_many(specs)
    calls = int(redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)) - before
    kinds = [type(outcome).__name__ if isinstance(outcome, Exception) else outcome["status"] for outcome in outcomes]
    assert kinds == [
        "active",
        "SpecError",
        "active",
        "ConflictError",
        "ConflictError",
        "PermanentProviderError",
        "SpecError",
        "active",
    ], outcomes
    assert "invalid_client" in str(outcomes[5]) and "nope" not in str(outcomes[5])
    assert redis_client.smembers("tokenkeeper:names") == {"old", "a", "b", "c"}
    assert redis_client.hgetall("tokenkeeper:integration:old") == old
    assert not redis_client.keys("tokenkeeper:reserve:*")
    assert not redis_client.exists("tokenkeeper:integration:bad_secret", "tokenkeeper:token:bad_secret")
    assert 2 <= calls <= 4, calls


def test_what_was_given_is_kept_as_keyed_digests_and_an_update_follows_it(
    runtime, token_server: TokenServer, redis_client
) -> None:
    """For an integration a file keeps: each field as given, digested (never the secret itself); the key is
    made once and shared. One made by hand keeps none (nothing plans against it)."""
    Registry(runtime).create(cc_spec(token_server, "svc", scopes="read", managed_by="team"))
    Registry(runtime).create(cc_spec(token_server, "by-hand"))
    assert redis_client.hget("tokenkeeper:integration:by-hand", "given") is None
    raw = redis_client.hget("tokenkeeper:integration:svc", "given")
    given = decode(raw)
    assert set(given) == {"grant_type", "client_id", "client_secret", "token_url", "scopes", "managed_by", "_key"}
    assert "client-secret" not in raw and len(raw) < 100
    assert "client-secret" not in redis_client.get("tokenkeeper:given_key")
    other = build_runtime(runtime.settings)  # another process: the same key, found in Redis
    assert other.digests.of("svc", "client_secret", "client-secret") == given["client_secret"]
    Registry(runtime).update("svc", {"scopes": None, "audience": "api"})
    updated = decode(redis_client.hget("tokenkeeper:integration:svc", "given"))
    assert "scopes" not in updated and updated["audience"] == other.digests.of("svc", "audience", "api")
