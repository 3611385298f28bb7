"""The plain objects a worker, the web app or the CLI works with, built from settings.

Everything here is handed its Redis client, HTTP session and clock, so tests can
build a :class:`Runtime` against their own Redis and token server.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis
import requests
from redis.sentinel import Sentinel

from config import Settings
from workers.clock import Clock
from workers.crypto.sealing import Opener
from workers.crypto.secretbox import SecretBox
from workers.engine.declared import Digests, given_key
from workers.engine.policy import RefreshPolicy
from workers.oauth.addresses import AddressPolicy
from workers.oauth.token_client import TokenClient
from workers.oauth.transport import guarded_session
from workers.ops.notifications import Webhook
from workers.store import Store
from workers.store.clock import RedisClock


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    client: TokenClient
    policy: RefreshPolicy
    clock: Clock
    _secret_keys: tuple[str, ...]
    webhook: Webhook | None = None

    @functools.cached_property
    def box(self) -> SecretBox:
        # Built on use so commands that never touch secrets run without a key.
        return SecretBox(self._secret_keys)

    @functools.cached_property
    def digests(self) -> Digests:
        """Digests of spec fields as given (what `tokenkeeper plan` compares); the key is read once."""
        return Digests(given_key(self.store, self.box))

    @functools.cached_property
    def opener(self) -> Opener:
        """Opens the sealed secrets of task arguments (the key pairs derive from the same keys)."""
        return Opener(self._secret_keys, accept_plain=self.settings.accept_plain_secrets)


# Bounded timeouts: a Redis that went away must fail a task, not hang it.
_CLIENT_OPTIONS = {
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
    "health_check_interval": 30,
    "retry_on_timeout": True,
}


def redis_client(url: str, sentinel_master: str = "") -> redis.Redis:
    """A client for ``url``; for ``sentinel://`` URLs, one that follows the named master through failovers."""
    if url.startswith("sentinel://"):
        return sentinel_client(url, sentinel_master)
    return redis.Redis.from_url(url, **_CLIENT_OPTIONS)


def sentinel_client(url: str, master: str) -> redis.Redis:
    """``sentinel://[user:password@]host:port;sentinel://host2:port/db``, the form Celery's broker URL takes.

    The credentials are the master's (as in kombu); the sentinels are asked without them.
    """
    hosts: list[tuple[str, int]] = []
    username = password = db = None
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        hosts.append((parsed.hostname or "127.0.0.1", parsed.port or 26379))
        username = username or (unquote(parsed.username) if parsed.username else None)
        password = password or (unquote(parsed.password) if parsed.password else None)
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
    sentinel = Sentinel(hosts, socket_timeout=5, socket_connect_timeout=5)
    return sentinel.master_for(master, db=db or 0, username=username, password=password, **_CLIENT_OPTIONS)


def address_policy(settings: Settings) -> AddressPolicy:
    """Where outbound requests may go, from TOKENKEEPER_ALLOW_PRIVATE_NETWORKS and TOKENKEEPER_ALLOWED_NETWORKS."""
    return AddressPolicy.from_strings(settings.allowed_networks, allow_private=settings.allow_private_networks)


def token_session(policy: AddressPolicy) -> requests.Session:
    """The HTTP session for token, discovery, revocation and webhook requests, guarded by ``policy``."""
    return guarded_session(policy)


def build_runtime(
    settings: Settings,
    *,
    client: redis.Redis | None = None,
    session: requests.Session | None = None,
    clock: Clock | None = None,
    local_clock: Clock = time.time,
) -> Runtime:
    """The runtime for ``settings``; its clock is Redis TIME (via ``local_clock`` + offset) unless ``clock`` is given.

    One clock for every process: due times, claims and the rate slot written by one
    machine are compared by another, so none may use its own clock.
    """
    policy = address_policy(settings)
    # A session passed in is guarded too (TokenClient does it): the webhook shares it.
    http = session or token_session(policy)
    redis_conn = client or redis_client(settings.redis_url, settings.redis_sentinel_master)
    clock = clock or RedisClock(redis_conn, local=local_clock)
    return Runtime(
        settings=settings,
        store=Store(
            redis_conn,
            settings.key_prefix,
            outbox=bool(settings.webhook_url),
            wait_replicas=settings.wait_replicas,
        ),
        client=TokenClient(
            session=http,
            clock=clock,
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
            max_bytes=settings.max_response_bytes,
            addresses=policy,
        ),
        policy=RefreshPolicy(
            lead=settings.refresh_lead,
            jitter=settings.refresh_jitter,
            default_lifetime=settings.default_expires_in,
            backoff_base=settings.backoff_base,
            backoff_max=settings.backoff_max,
            keepalive=settings.keepalive_interval,
            min_interval=settings.min_refresh_interval,
            unclear_window=settings.unclear_error_window,
        ),
        clock=clock,
        _secret_keys=settings.secret_keys,
        webhook=Webhook(
            settings.webhook_url,
            settings.webhook_secret,
            http,
            clock,
            (settings.http_connect_timeout, settings.http_read_timeout),
            settings.max_response_bytes,
            addresses=policy,
        )
        if settings.webhook_url
        else None,
    )
