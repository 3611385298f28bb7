"""Discovery (RFC 8414 / OpenID), revocation on delete (RFC 7009) and keep-alive, against a real HTTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from config import load_settings
from tests.support.specs import cc_spec, rt_spec
from tests.support.token_server import TokenServer
from workers.engine.refresher import Refresher
from workers.engine.registry import Registry
from workers.engine.runtime import Runtime, build_runtime
from workers.errors import SpecError


def _metadata(server: TokenServer, issuer: str) -> dict[str, str]:
    return {
        "issuer": issuer,
        "token_endpoint": server.url,
        "authorization_endpoint": f"{server.base}/authorize",
        "revocation_endpoint": server.revocation_url,
    }


def test_an_issuer_alone_gives_the_endpoints(runtime: Runtime, token_server: TokenServer) -> None:
    """RFC 8414 metadata at the well-known path inserted before the issuer's path fills in the URLs."""
    issuer = f"{token_server.base}/tenant-a"
    token_server.documents["/.well-known/oauth-authorization-server/tenant-a"] = _metadata(token_server, issuer)
    spec = {
        "name": "disc",
        "grant_type": "client_credentials",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "issuer": issuer,
    }
    assert Registry(runtime).create(spec)["status"] == "active"
    record = runtime.store.load("disc")
    assert record is not None
    assert record.public["token_url"] == token_server.url
    assert record.public["revocation_url"] == token_server.revocation_url


def test_openid_configuration_is_the_fallback(runtime: Runtime, token_server: TokenServer) -> None:
    """Without RFC 8414 metadata, /.well-known/openid-configuration under the issuer is read."""
    issuer = f"{token_server.base}/realms/x"
    token_server.documents["/realms/x/.well-known/openid-configuration"] = _metadata(token_server, issuer)
    result = Registry(runtime).create(
        {
            "name": "oidc",
            "grant_type": "authorization_code",
            "client_id": "client-id",
            "client_secret": "client-secret",
            "issuer": issuer,
        }
    )
    assert result["status"] == "pending_authorization"
    record = runtime.store.load("oidc")
    assert record is not None and record.public["auth_url"] == f"{token_server.base}/authorize"


def test_metadata_naming_another_issuer_is_refused(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """A mismatching issuer in the metadata is an error naming ``issuer``, and nothing is stored."""
    issuer = f"{token_server.base}/good"
    token_server.documents["/.well-known/oauth-authorization-server/good"] = _metadata(
        token_server, f"{token_server.base}/evil"
    )
    with pytest.raises(SpecError) as caught:
        Registry(runtime).create(
            {
                "name": "disc",
                "grant_type": "client_credentials",
                "client_id": "client-id",
                "client_secret": "client-secret",
                "issuer": issuer,
            }
        )
    assert "refused" in caught.value.errors["issuer"][0]
    assert redis_client.keys("*") == []


def test_an_issuer_without_metadata_is_named(runtime: Runtime, token_server: TokenServer) -> None:
    """No metadata anywhere: the error names the issuer and says what was tried."""
    with pytest.raises(SpecError) as caught:
        Registry(runtime).create(
            {
                "name": "disc",
                "grant_type": "client_credentials",
                "client_id": "client-id",
                "client_secret": "client-secret",
                "issuer": f"{token_server.base}/none",
            }
        )
    assert "HTTP 404" in caught.value.errors["issuer"][0]


def test_an_unsafe_issuer_is_not_fetched(runtime: Runtime, token_server: TokenServer) -> None:
    """A plain-http issuer on a non-loopback host is rejected before any request."""
    with pytest.raises(SpecError) as caught:
        Registry(runtime).create(
            {
                "name": "disc",
                "grant_type": "client_credentials",
                "client_id": "client-id",
                "client_secret": "client-secret",
                "issuer": "http://idp.example.com",
            }
        )
    assert "https" in caught.value.errors["issuer"][0]


def test_delete_revokes_both_tokens_then_removes_every_key(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """Refresh token then access token are revoked at the provider; no key of the integration is left."""
    registry = Registry(runtime)
    registry.create(rt_spec(token_server, "gone", revocation_url=token_server.revocation_url))
    registry.create(cc_spec(token_server, "kept"))
    access = redis_client.hget("tokenkeeper:token:gone", "access_token")
    refresh = runtime.box.open(runtime.store.load("gone").sealed_secrets)["refresh_token"]  # type: ignore[union-attr]
    result = registry.delete("gone")
    assert result == {"name": "gone", "deleted": True, "revoked": ["refresh_token", "access_token"]}
    assert token_server.revoked == [("refresh_token", refresh), ("access_token", access)]
    assert not token_server.is_valid(access)
    assert [key for key in redis_client.keys("*") if "gone" in key] == []
    assert "gone" not in redis_client.smembers("tokenkeeper:names")
    assert redis_client.zscore("tokenkeeper:schedule", "gone") is None
    assert redis_client.exists("tokenkeeper:token:kept")


def test_a_failed_revocation_still_deletes(
    runtime: Runtime, token_server: TokenServer, redis_client: redis.Redis
) -> None:
    """An unreachable revocation endpoint is reported in the result; the integration is deleted anyway."""
    registry = Registry(runtime)
    registry.create(cc_spec(token_server, "gone", revocation_url="http://127.0.0.1:9/revoke"))
    result = registry.delete("gone")
    assert result["deleted"] is True and result["revoked"] == []
    assert "could not connect to the revocation endpoint" in result["revocation_failed"]
    assert redis_client.keys("*gone*") == []


@pytest.fixture
def forever() -> Iterator[TokenServer]:
    """A provider whose answers carry no expires_in."""
    server = TokenServer(lifetime=None).start()
    yield server
    server.stop()


def _with(environ: dict[str, str], **settings: str) -> Runtime:
    # Plain specs handed to the domain in-process (see the runtime fixture).
    return build_runtime(load_settings({**environ, "TOKENKEEPER_ACCEPT_PLAIN_SECRETS": "true", **settings}))


def test_a_token_that_never_expires_keeps_its_refresh_token_alive(
    environ: dict[str, str], forever: TokenServer, redis_client: redis.Redis
) -> None:
    """No expires_in: the refresh token is still used every TOKENKEEPER_KEEPALIVE_INTERVAL seconds."""
    runtime = _with(environ, TOKENKEEPER_KEEPALIVE_INTERVAL="120")
    start = runtime.clock()
    result = Registry(runtime).create(rt_spec(forever, "forever"))
    assert "expires_at" not in result
    plan = redis_client.zscore("tokenkeeper:schedule", "forever")
    jitter = float(environ["TOKENKEEPER_REFRESH_JITTER"])
    assert plan is not None and start + 120 - jitter - 1 <= plan <= runtime.clock() + 120
    # The planned refresh uses the refresh token and plans the next one as far ahead.
    assert Refresher(runtime).refresh("forever", planned_at=plan).outcome == "refreshed"
    assert forever.count("refresh_token") == 2
    assert redis_client.zscore("tokenkeeper:schedule", "forever") > runtime.clock() + 100
    # Client credentials without a lifetime keep the assumed lifetime instead.
    Registry(runtime).create(cc_spec(forever, "cc"))
    assert redis_client.zscore("tokenkeeper:schedule", "cc") > runtime.clock() + 1000


def test_keep_alive_off_means_no_refresh_for_a_token_that_never_expires(
    environ: dict[str, str], forever: TokenServer, redis_client: redis.Redis
) -> None:
    """TOKENKEEPER_KEEPALIVE_INTERVAL=0: a non-expiring token with a refresh token is not refreshed."""
    Registry(_with(environ, TOKENKEEPER_KEEPALIVE_INTERVAL="0")).create(rt_spec(forever, "forever"))
    assert redis_client.zscore("tokenkeeper:schedule", "forever") is None
    assert redis_client.hget("tokenkeeper:token:forever", "status") == "active"


def test_discovery_picks_the_client_authentication_the_server_takes(
    runtime: Runtime, token_server: TokenServer
) -> None:
    """A server that takes only client_secret_post: a spec that names no auth_method gets it, and it works."""
    issuer = f"{token_server.base}/post-only"
    token_server.documents["/.well-known/oauth-authorization-server/post-only"] = {
        **_metadata(token_server, issuer),
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
    }
    spec = {
        "name": "post",
        "grant_type": "client_credentials",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "issuer": issuer,
    }
    assert Registry(runtime).create(spec)["status"] == "active"
    record = runtime.store.load("post")
    assert record is not None and record.public["auth_method"] == "client_secret_post"
    assert token_server.auth_headers[-1] is None and token_server.bodies[-1]["client_secret"] == "client-secret"
