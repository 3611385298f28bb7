"""Build the one settings object from a mapping of ``TOKENKEEPER_*`` variables.

Only entry points (the Celery app, the Flask factory, the CLI) pass ``os.environ``
here; everything else receives the resulting :class:`Settings`. Every bad variable
is reported at once, and secrets never show in ``repr``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "TOKENKEEPER_"
# The Redis that `tokenkeeper standalone` starts (port TOKENKEEPER_REDIS_PORT); the URL with
# its credentials comes from config.local when no TOKENKEEPER_REDIS_URL is set.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6380/0"
# How much longer than a token request's deadline the refresh lock must live (see load_settings).
LOCK_MARGIN = 1.0


class SettingsError(ValueError):
    """One or more ``TOKENKEEPER_*`` variables are invalid; the message lists each."""


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    # With Redis Sentinel: the monitored master's name; the URLs then list the sentinels.
    redis_sentinel_master: str = ""
    broker_url: str = DEFAULT_REDIS_URL
    result_backend: str = DEFAULT_REDIS_URL
    queue: str = "tokenkeeper"
    key_prefix: str = "tokenkeeper:"
    # Comma-separated Fernet keys; the first encrypts, all decrypt (rotation).
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    # The public key producers without the secret key seal to (what `tokenkeeper public-key` prints on a
    # worker host); pinned here because a key read from Redis could have been planted by any Redis login.
    public_key: str = ""
    public_url: str = "http://127.0.0.1:5000"
    bind: str = "127.0.0.1:5000"
    # Hosts (besides loopback) whose token/auth URLs may use plain http://.
    insecure_http_hosts: tuple[str, ...] = ()
    # Private or reserved networks (CIDR) that token and auth URLs may reach.
    allowed_networks: tuple[str, ...] = ()
    # Loopback and every private range become reachable (local try-outs, tests); off in production.
    allow_private_networks: bool = False
    # Task arguments may carry secrets in clear instead of sealed boxes (not recommended).
    accept_plain_secrets: bool = False
    # How long an authorization link (``/oauth/authorize/<name>?t=…``) stays valid by default.
    authorize_link_ttl: float = 86400.0
    # /metrics without the operator login, for a scraper on a private network.
    metrics_public: bool = False
    # The port of the Redis that standalone starts when TOKENKEEPER_REDIS_URL is not set.
    redis_port: int = 6380
    # Lifetime assumed when a provider gives neither expires_in nor a JWT exp.
    default_expires_in: int = 3600
    # A token with no lifetime but a refresh token: refresh this often anyway, so the
    # refresh token does not die of disuse (0: never).
    keepalive_interval: float = 3600.0
    # Refresh this many seconds before expiry (never before half the lifetime).
    refresh_lead: float = 60.0
    # Spread refreshes of tokens created together over up to this many seconds.
    refresh_jitter: float = 30.0
    # Beat queues the scheduling tick this often, and each tick enqueues the
    # refreshes due within the horizon with a countdown.
    schedule_interval: float = 2.0
    schedule_horizon: float = 10.0
    # A queued refresh not finished this long after its planned time is
    # presumed lost (crashed worker) and queued again by the next tick.
    lost_after: float = 30.0
    # Refreshes started per second at one token endpoint host, all workers together (0: no
    # cap; a preset may have its own). A backlog after an outage is worked off at this rate
    # instead of in one burst at the provider, but the cap never holds a refresh past its
    # deadline (deadline_margin before its token expires): it spreads early work only.
    max_refresh_rate: float = 500.0
    lock_ttl: float = 30.0
    # A write that stores a rotated refresh token waits until this many replicas have it
    # (WAIT, up to 1 s), so a failover cannot lose it. 0: the local disk only (WAITAOF).
    wait_replicas: int = 0
    http_connect_timeout: float = 5.0
    http_read_timeout: float = 20.0
    max_response_bytes: int = 1_048_576
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    # No integration is refreshed sooner than this after its last refresh, even when its tokens
    # arrive already expired (expires_in 1, a JWT exp in the past).
    min_refresh_interval: float = 30.0
    # Unclear answers (an unknown error code, a CDN or firewall page) are retried this long before
    # the integration goes to needs_reauth.
    unclear_error_window: float = 3600.0
    result_expires: int = 3600
    # Redis broker: a message not acked within this long is redelivered. Must
    # exceed the longest countdown we ever set (the horizon) by a wide margin.
    visibility_timeout: int = 3600
    data_dir: str = ".tokenkeeper"
    flower_port: int = 5555
    operator_user: str = "admin"
    # Flower's basic-auth password; standalone makes one in the data directory when unset.
    operator_password: str = field(default="", repr=False)
    log_level: str = "INFO"
    # "text" or "json" (one JSON object per line).
    log_format: str = "text"
    # Status changes are POSTed here as JSON signed with HMAC-SHA256 of the webhook secret.
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    # Spans (OpenTelemetry, the otel extra) exported by OTLP over HTTP; the OTEL_* variables say where and how.
    tracing: bool = False

    def __repr__(self) -> str:
        # URLs may carry a password (redis://user:password@host): shown masked, like the secret fields hidden.
        shown = (f"{item.name}={_masked(getattr(self, item.name))!r}" for item in dataclasses.fields(self) if item.repr)
        return f"Settings({', '.join(shown)})"

    @property
    def refresh_queue(self) -> str:
        """Where the scheduler's refreshes travel: not behind producers' messages (a bulk creation) in ``queue``.
        Every worker consumes it whatever its ``-Q``."""
        return f"{self.queue}.refresh"

    @property
    def deadline_margin(self) -> float:
        """How long before its token expires a refresh must start whatever the rate cap: half the lead (30 s), more
        than one request's deadline (25 s)."""
        return self.refresh_lead / 2

    @property
    def capacity_patience(self) -> float:
        """A claimed refresh that no worker holds this long after it could start is waiting for a worker. Shorter
        than lost_after, after which it is queued again with a new start."""
        return self.lost_after / 2

    @property
    def callback_url(self) -> str:
        return self.public_url.rstrip("/") + "/oauth/callback"


def _masked(value: Any) -> Any:
    """A URL's password replaced by ``***`` (each URL of a ``;``-separated list); any other value as it is."""
    if not isinstance(value, str) or "@" not in value:
        return value
    return ";".join(_masked_url(part) for part in value.split(";"))


def _masked_url(url: str) -> str:
    scheme, found, rest = url.partition("://")
    credentials, _, host = rest.rpartition("@")
    if not found or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.partition(':')[0]}:***@{host}"


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _networks(raw: str) -> tuple[str, ...]:
    import ipaddress

    networks = _csv(raw)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"{network!r} is not a network in CIDR form (e.g. 10.0.0.0/8)") from None
    return networks


def _number(kind: Callable[[str], float], *, allow_zero: bool) -> Callable[[str], Any]:
    words = "zero or more" if allow_zero else "more than zero"

    def parse(raw: str) -> float:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(f"must be a {'whole ' if kind is int else ''}number, {words}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise ValueError(f"must be a finite number, {words}")
        return value

    return parse


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


_positive_float = _number(float, allow_zero=False)
_non_negative_float = _number(float, allow_zero=True)
_positive_int = _number(int, allow_zero=False)
_non_negative_int = _number(int, allow_zero=True)


def _redis_url(raw: str) -> str:
    url = _text(raw)
    if not url.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
        raise ValueError("must start with redis://, rediss://, unix:// or sentinel://")
    return url


def _http_url(raw: str) -> str:
    url = _text(raw)
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return url.rstrip("/")


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _fernet_keys(raw: str) -> tuple[str, ...]:
    import base64
    import binascii

    keys = _csv(raw)
    for position, key in enumerate(keys, start=1):
        try:
            decoded = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 32:
            # Never echo the key itself: it is a secret.
            raise ValueError(f"key #{position} is not a 32-byte url-safe base64 Fernet key")
    return keys


def _public_key(raw: str) -> str:
    import base64
    import binascii

    # Mirrors workers.crypto.sealing.decode_public_key; config imports nothing of ours.
    key = raw.strip()
    try:
        decoded = base64.b64decode(key.encode(), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 32:
        raise ValueError("must be 32 bytes in standard base64 (what `tokenkeeper public-key` prints)")
    return key


_PARSERS: dict[str, Callable[[str], Any]] = {
    "redis_url": _redis_url,
    "redis_sentinel_master": _text,
    "broker_url": _text,
    "result_backend": _text,
    "queue": _text,
    "key_prefix": _text,
    "secret_keys": _fernet_keys,
    "public_key": _public_key,
    "public_url": _http_url,
    "bind": _text,
    "insecure_http_hosts": _csv,
    "allowed_networks": _networks,
    "allow_private_networks": _flag,
    "accept_plain_secrets": _flag,
    "authorize_link_ttl": _positive_float,
    "metrics_public": _flag,
    "redis_port": _positive_int,
    "default_expires_in": _positive_int,
    "keepalive_interval": _non_negative_float,
    "refresh_lead": _non_negative_float,
    "refresh_jitter": _non_negative_float,
    "schedule_interval": _positive_float,
    "schedule_horizon": _positive_float,
    "lost_after": _positive_float,
    "max_refresh_rate": _non_negative_float,
    "lock_ttl": _positive_float,
    "wait_replicas": _non_negative_int,
    "http_connect_timeout": _positive_float,
    "http_read_timeout": _positive_float,
    "max_response_bytes": _positive_int,
    "backoff_base": _positive_float,
    "backoff_max": _positive_float,
    "min_refresh_interval": _non_negative_float,
    "unclear_error_window": _non_negative_float,
    "result_expires": _positive_int,
    "visibility_timeout": _positive_int,
    "data_dir": _text,
    "flower_port": _positive_int,
    "operator_user": _text,
    "operator_password": _text,
    "log_level": _log_level,
    "log_format": _choice("text", "json"),
    "webhook_url": _http_url,
    "webhook_secret": _text,
    "tracing": _flag,
}

# Variables whose names do not follow the field names.
_ALIASES = {"secret_keys": "SECRET_KEY"}


def variable_name(field_name: str) -> str:
    return PREFIX + _ALIASES.get(field_name, field_name.upper())


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Return the settings described by ``environ``; raise listing every bad variable."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, parse in _PARSERS.items():
        variable = variable_name(name)
        if variable not in environ:
            continue
        try:
            values[name] = parse(environ[variable])
        except ValueError as exc:
            problems.append(f"{variable}: {exc}")
    known = {variable_name(name) for name in _PARSERS}
    for variable in sorted(environ):
        if variable.startswith(PREFIX) and variable not in known:
            problems.append(f"{variable}: unknown setting")
    if "redis_url" not in values and "redis_port" in values:
        values["redis_url"] = f"redis://127.0.0.1:{values['redis_port']}/0"
    if "redis_url" in values:
        values.setdefault("broker_url", values["redis_url"])
        values.setdefault("result_backend", values["redis_url"])
    settings = dataclasses.replace(Settings(), **values)
    if settings.schedule_horizon * 4 > settings.visibility_timeout:
        problems.append(
            f"{variable_name('visibility_timeout')}: must be at least 4x "
            f"{variable_name('schedule_horizon')} so countdown tasks are not redelivered"
        )
    if settings.lock_ttl < settings.http_connect_timeout + settings.http_read_timeout + LOCK_MARGIN:
        # A lock that can expire during the token request lets a second refresh start and send the same
        # refresh token. Connect + read timeout is the request's hard deadline (workers.oauth.transport);
        # the margin covers the milliseconds before the request (decrypting, building it), so only a
        # stopped process can outlive its lock mid-request. After the answer the lock no longer matters:
        # the write is guarded by the version (lua/write.lua).
        problems.append(
            f"{variable_name('lock_ttl')}: must exceed {variable_name('http_connect_timeout')} + "
            f"{variable_name('http_read_timeout')} by at least {LOCK_MARGIN:g} s"
        )
    sentinel = [
        variable_name(name)
        for name in ("redis_url", "broker_url", "result_backend")
        if getattr(settings, name).startswith("sentinel://")
    ]
    if sentinel and not settings.redis_sentinel_master:
        problems.append(
            f"{variable_name('redis_sentinel_master')}: required when {', '.join(sentinel)} lists sentinels"
        )
    if settings.redis_sentinel_master and not settings.redis_url.startswith("sentinel://"):
        problems.append(
            f"{variable_name('redis_url')}: must list the sentinels (sentinel://host:26379;"
            f"sentinel://host2:26379/0) when {variable_name('redis_sentinel_master')} is set"
        )
    if settings.webhook_url and not settings.webhook_secret:
        problems.append(
            f"{variable_name('webhook_secret')}: required with {variable_name('webhook_url')}, "
            "so receivers can tell our events from forgeries"
        )
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    return settings
