"""Authorization links: the capability an operator hands out so one person can connect one integration.

A link token is ``base64url(payload) "." base64url(HMAC-SHA256(payload))``; the payload is
compact JSON ``{"n": name, "e": expiry (Unix seconds), "a": new account allowed, "i": id}``.
The HMAC key is derived from each of the service's Fernet keys with a fixed label, so the
first key signs and every listed key verifies (links survive a key rotation while the old
key is listed) and a link key is never the key that encrypts secrets. Verifying needs no
Redis: a request without a valid link is refused before anything is read or written.
Whether a link is spent is kept in Redis by id (see :mod:`workers.store`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from config import Settings
from workers.errors import ConfigurationError, LinkError

# Domain separation: a MAC made for links is useful for nothing else that uses these keys.
LABEL = b"tokenkeeper authorization link v1"
# Real tokens are ~130 characters; anything far longer is refused before any decoding.
MAX_TOKEN_LENGTH = 1024

_ASK_AGAIN = "Ask the person who sent it for a new link."


@dataclass(frozen=True)
class Link:
    name: str
    expires_at: int
    new_account: bool
    id: str


class LinkSigner:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigurationError(
                "TOKENKEEPER_SECRET_KEY is not set: authorization links are signed with a key derived from it"
            )
        self._keys = [hmac.new(base64.urlsafe_b64decode(key.encode()), LABEL, hashlib.sha256).digest() for key in keys]

    def issue(self, name: str, expires_at: float, *, new_account: bool = False) -> str:
        payload = json.dumps(
            {"n": name, "e": int(expires_at), "a": new_account, "i": secrets.token_urlsafe(12)},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        body = _b64(payload)
        return f"{body}.{_b64(self._mac(self._keys[0], body))}"

    def verify(self, token: str | None, name: str, now: float) -> Link:
        """The link ``token`` grants for ``name`` at ``now``, or :class:`LinkError` saying why not."""
        if not token:
            raise LinkError("This page opens only from an authorization link, and none was given. " + _ASK_AGAIN)
        body, _, signature = token.partition(".")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not body or not signature:
            raise LinkError("This authorization link is malformed. " + _ASK_AGAIN)
        try:
            presented = _unb64(signature)
        except ValueError:
            raise LinkError("This authorization link is malformed. " + _ASK_AGAIN) from None
        if not any(hmac.compare_digest(presented, self._mac(key, body)) for key in self._keys):
            raise LinkError("This authorization link was not issued by this service. " + _ASK_AGAIN)
        claims = json.loads(_unb64(body))  # ours: signed, so well formed
        if claims["n"] != name:
            raise LinkError("This authorization link is for another integration. " + _ASK_AGAIN)
        if claims["e"] <= now:
            raise LinkError("This authorization link has expired. " + _ASK_AGAIN)
        return Link(name=claims["n"], expires_at=int(claims["e"]), new_account=bool(claims["a"]), id=claims["i"])

    @staticmethod
    def _mac(key: bytes, body: str) -> bytes:
        return hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()


def link_token(
    settings: Settings, name: str, *, now: float, ttl: float | None = None, new_account: bool = False
) -> str:
    """A signed link token for ``name``, valid ``ttl`` seconds (default: the configured link lifetime)."""
    lifetime = settings.authorize_link_ttl if ttl is None else ttl
    return LinkSigner(settings.secret_keys).issue(name, now + lifetime, new_account=new_account)


def authorization_link(
    settings: Settings, name: str, *, now: float, ttl: float | None = None, new_account: bool = False
) -> str:
    """The full URL a person opens to connect ``name``."""
    token = link_token(settings, name, now=now, ttl=ttl, new_account=new_account)
    return f"{settings.public_url.rstrip('/')}/oauth/authorize/{quote(name, safe='')}?{urlencode({'t': token})}"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` or plain seconds; raises ValueError naming the problem."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration: use e.g. 90s, 30m, 24h, 7d or plain seconds")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a duration: it must be more than zero")
    return seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode("ascii"))
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64url") from exc
