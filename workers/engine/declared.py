"""Integrations as code: what a file of specs would change (``tokenkeeper plan``), compared without secrets.

Every create and update keeps, beside the sealed secrets, a keyed digest of each field *as the
producer gave it* (``given``). A plan digests the file's fields the same way and compares: a field
whose digest differs is changed, one given before and absent now is removed. So a secret is
compared without being stored twice or shown, and a refresh token the provider has rotated since
is still "unchanged" when the file holds the one given at creation (sending that one again would
spend a dead token).

The digest key is random, made once and kept in Redis sealed with the secret keys (rotated with
them by ``tokenkeeper rotate-keys``): without those keys a digest cannot test a guess. Each digest
covers the integration's name and the field's too, so equal values elsewhere give different
digests. ``given`` records which key made it (``_key``): digests made under a key that is gone
(deleted from Redis, or no longer opened by any secret key) count as unknown, and the integration is
compared by its stored values instead, its refresh token as unchanged — never as "changed", which
would send again a refresh token the provider may have retired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from workers.engine.spec import SECRET_FIELDS
from workers.errors import ConfigurationError

log = logging.getLogger(__name__)

# 64 bits: a changed value goes unnoticed with odds of 2**-64; 11 characters of base64, as every integration
# keeps one per field.
DIGEST_BYTES = 8
# The field of ``given`` naming the key its digests were made with.
KEY_FIELD = "_key"
# Stored compactly, every integration keeping one: ``<key id>;<code><digest>;…``, a field's code being one
# character, its place in this list (append only: a code, once stored, must keep meaning its field), or
# ``(name)`` for a field not listed.
CODED_FIELDS = (
    "grant_type", "client_id", "client_secret", "token_url", "auth_url", "refresh_url", "refresh_token", "scopes",
    "auth_method", "pkce", "extra_auth_params", "extra_token_params", "provider", "provider_params", "issuer",
    "revocation_url", "private_key", "key_id", "signing_alg", "assertion_claims", "assertion_audience", "audience",
    "resource", "client_certificate", "client_key", "device_authorization_url", "subject_token",
    "subject_integration", "subject_token_type", "requested_token_type", "exchangeable_by", "managed_by",
)  # fmt: skip
_CODES = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CODE_OF = {name: _CODES[index] for index, name in enumerate(CODED_FIELDS)}
_FIELD_OF = {code: name for name, code in _CODE_OF.items()}


class _KeyStore(Protocol):
    def given_key(self) -> str | None: ...
    def put_given_key(self, sealed: str, *, replace: bool = False) -> None: ...


class _Box(Protocol):
    def seal(self, secrets: dict[str, str]) -> str: ...
    def open(self, sealed: str) -> dict[str, str]: ...


def given_key(store: _KeyStore, box: _Box) -> bytes:
    """The digest key: made by whichever process needs it first (``put_given_key`` keeps the first one).

    One that no secret key opens any more (dropped before ``rotate-keys`` ran) is replaced: the digests
    made under it then count as unknown (see the module's docstring), and creating goes on working.
    """
    sealed = store.given_key()
    if sealed is not None:
        try:
            return base64.b64decode(box.open(sealed)["key"])
        except ConfigurationError:
            log.warning("the key of the given digests opens with no secret key; a new one is made")
            store.put_given_key(_new_key(box), replace=True)
    else:
        store.put_given_key(_new_key(box))
    sealed = store.given_key()
    assert sealed is not None
    return base64.b64decode(box.open(sealed)["key"])


def _new_key(box: _Box) -> str:
    return box.seal({"key": base64.b64encode(os.urandom(32)).decode()})


class Digests:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self.key_id = hmac.new(key, b"tokenkeeper given-digest key id", hashlib.sha256).hexdigest()[:8]

    def of(self, name: str, key: str, value: Any) -> str:
        canonical = json.dumps([name, key, value], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hmac.new(self._key, canonical.encode(), hashlib.sha256).digest()[:DIGEST_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def given(self, data: Mapping[str, Any]) -> dict[str, str]:
        """Each field of a spec as given (secrets opened), digested, and the key's id; the name is not a field."""
        name = str(data.get("name", ""))
        digests = {key: self.of(name, key, value) for key, value in data.items() if key != "name" and value is not None}
        return {**digests, KEY_FIELD: self.key_id}

    def updated(self, name: str, current: Mapping[str, str], changes: Mapping[str, Any]) -> dict[str, str]:
        """``current`` after an update's ``changes`` (null removes a field, as the update does)."""
        result = dict(current)
        for key, value in changes.items():
            if key == "name":
                continue
            if value is None:
                result.pop(key, None)
            else:
                result[key] = self.of(name, key, value)
        return result

    def known(self, given: Mapping[str, str] | None) -> bool:
        """Whether ``given`` was made with this key (else its digests say nothing)."""
        return given is not None and given.get(KEY_FIELD) == self.key_id


@dataclass(frozen=True)
class Difference:
    """How one integration in a file differs from the stored one (field names only, never values)."""

    changed: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.changed or self.secrets or self.removed)

    def fields(self) -> tuple[str, ...]:
        return (*self.changed, *self.secrets, *self.removed)


def encode(given: Mapping[str, str]) -> str:
    """``given`` as stored: one short string (see CODED_FIELDS)."""
    entries = [given.get(KEY_FIELD, "")]
    for key, digest in sorted(given.items()):
        if key != KEY_FIELD:
            entries.append(_CODE_OF.get(key, f"({key})") + digest)
    return ";".join(entries)


def decode(raw: str | None) -> dict[str, str] | None:
    """The stored string read back; None when there is none (or it cannot be read: then it says nothing)."""
    if not raw:
        return None
    key_id, *entries = raw.split(";")
    given = {KEY_FIELD: key_id}
    for entry in entries:
        if entry.startswith("("):
            name, _, digest = entry[1:].partition(")")
        elif entry[:1] in _FIELD_OF:
            name, digest = _FIELD_OF[entry[0]], entry[1:]
        else:
            return None
        given[name] = digest
    return given


def difference(stored: Mapping[str, str], wanted: Mapping[str, str]) -> Difference:
    fields = [key for key in wanted if key != KEY_FIELD]
    changed = sorted(key for key in fields if stored.get(key) != wanted[key])
    return Difference(
        changed=tuple(key for key in changed if key not in SECRET_FIELDS),
        secrets=tuple(key for key in changed if key in SECRET_FIELDS),
        removed=tuple(sorted(key for key in stored if key not in wanted and key != KEY_FIELD)),
    )


def legacy_given(
    digests: Digests, public: Mapping[str, Any], secrets: Mapping[str, str], wanted: Mapping[str, Any]
) -> dict[str, str]:
    """What an integration stored before ``given`` was kept is taken to have been given: its stored value of
    each field the file names. A refresh token counts as unchanged: the stored one may have been rotated
    since, and sending the file's again could only spend a dead token."""
    name = str(wanted.get("name", ""))
    result: dict[str, str] = {}
    for key, value in wanted.items():
        if key == "name" or value is None:
            continue
        if key == "refresh_token":
            result[key] = digests.of(name, key, value)
        elif key in SECRET_FIELDS:
            if key in secrets:
                result[key] = digests.of(name, key, secrets[key])
        elif key in public:
            result[key] = digests.of(name, key, public[key])
    return result


@dataclass
class Plan:
    """The answer of a plan: names in each group; ``update`` maps a name to what differs."""

    create: list[str] = field(default_factory=list)
    update: dict[str, Difference] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "create": self.create,
            "update": [
                {"name": name, "changed": list(d.changed), "secrets": list(d.secrets), "removed": list(d.removed)}
                for name, d in self.update.items()
            ],
            "delete": self.delete,
            "unchanged": self.unchanged,
            "errors": [{"name": name, "error": error} for name, error in self.errors.items()],
        }


def to_prune(managed: Iterable[tuple[str, Mapping[str, Any]]], project: str, named: set[str]) -> list[str]:
    """The stored integrations this project manages that its file no longer names."""
    return sorted(name for name, public in managed if public.get("managed_by") == project and name not in named)
