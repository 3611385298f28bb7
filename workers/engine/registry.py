"""Creating, updating and deleting integrations: the producer operations.

A client_credentials or refresh_token integration is stored only once its
first token request succeeded; an authorization_code one starts as
``pending_authorization``. A rejected spec or a failed first request stores
nothing, and a name already taken leaves the existing integration untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from workers.engine.guarded import write_answer
from workers.engine.links import authorization_link
from workers.engine.outcomes import Change, history_entry, token_obtained
from workers.engine.policy import LOCK_WAIT
from workers.engine.runtime import Runtime
from workers.engine.spec import (
    FIELD_GRANTS,
    GRANT_TYPES,
    IntegrationSpec,
    check_url,
    merge_changes,
    stored_spec,
    validate_spec,
)
from workers.errors import ConflictError, NotFoundError, ProviderError, StateError
from workers.oauth.discovery import discover
from workers.oauth.providers import expand_preset
from workers.store import KEEP_SCHEDULE, WRITE_DELETED, IntegrationRecord, Lock, Status

log = logging.getLogger(__name__)


def summary(name: str, status: str, expires_at: str = "", authorization_url: str = "") -> dict[str, str]:
    result = {"name": name, "status": status}
    if expires_at:
        result["expires_at"] = expires_at
    if authorization_url:
        result["authorization_url"] = authorization_url
    return result


class Registry:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def authorization_url(self, name: str) -> str:
        """A signed link (default lifetime) for the person who is to connect ``name``."""
        return authorization_link(self.rt.settings, name, now=self.rt.clock())

    def validate(self, data: Any) -> IntegrationSpec:
        return validate_spec(
            self.resolve(data), insecure_hosts=self.rt.settings.insecure_http_hosts, addresses=self.rt.client.addresses
        )

    def resolve(self, data: Any) -> Any:
        """The spec with its provider preset and, for an ``issuer`` alone, discovered endpoints filled in."""
        if not isinstance(data, Mapping):
            return data  # validation says what is wrong
        spec = expand_preset(data)
        grant = spec.get("grant_type")
        if spec.get("issuer") is None or grant not in GRANT_TYPES:
            return spec
        wanted = {
            name: ("refresh_url" if name == "token_url" and grant == "refresh_token" else name)
            for name in ("auth_url", "token_url", "revocation_url")
        }
        wanted = {
            source: target
            for source, target in wanted.items()
            if grant in FIELD_GRANTS.get(target, GRANT_TYPES) and target not in spec
        }
        if not wanted.keys() - {"revocation_url"}:
            return spec
        issuer = check_url(
            "issuer",
            spec["issuer"],
            insecure_hosts=self.rt.settings.insecure_http_hosts,
            addresses=self.rt.client.addresses,
        )
        for source, value in discover(self.rt.client, issuer).items():
            if source in wanted:
                spec[wanted[source]] = value
        return spec

    def create(self, data: Any) -> dict[str, str]:
        """Create from a producer's spec, whose secret fields arrive sealed (see workers.crypto.sealing)."""
        spec = self.validate(self.rt.opener.open_fields(data))
        store = self.rt.store
        # Long enough to outlast the first token request.
        ttl = self.rt.settings.http_connect_timeout + self.rt.settings.http_read_timeout + 30
        if not store.reserve(spec.name, ttl):
            raise ConflictError(f"an integration named {spec.name!r} already exists")
        try:
            return self._create_reserved(spec)
        finally:
            store.unreserve(spec.name)

    def _create_reserved(self, spec: IntegrationSpec) -> dict[str, str]:
        rt = self.rt
        now = rt.clock()
        base = {"grant_type": spec.grant_type, "spec": spec.public_fields(), "created_at": now, **spec.rate_fields()}
        if spec.grant_type == "authorization_code":
            fields = {
                **base,
                "secrets": rt.box.seal(spec.secrets()),
                "status": Status.PENDING,
                "reason": "waiting for the user to authorize",
                "status_at": now,
                "attempts": 0,
            }
            token = {
                "access_token": "",
                "token_type": "",
                "expires_at": "",
                "scope": "",
                "status": Status.PENDING,
                "updated_at": str(int(now)),
            }
            history = history_entry(now, Status.PENDING, "created")
            if not rt.store.create(spec.name, fields, token, history, None):
                raise ConflictError(f"an integration named {spec.name!r} already exists")
            return summary(spec.name, Status.PENDING, authorization_url=self.authorization_url(spec.name))
        change = self._first_token(spec, reason="created")
        if not rt.store.create(spec.name, {**base, **change.fields}, change.token, change.history, change.due):
            raise ConflictError(f"an integration named {spec.name!r} already exists")
        return summary(spec.name, change.fields["status"], expires_at=change.token["expires_at"])

    def _first_token(self, spec: IntegrationSpec, reason: str) -> Change:
        """Request a token with ``spec``'s own credentials; raises the provider's error."""
        rt = self.rt
        secrets = spec.secrets()
        response = (
            rt.client.client_credentials(spec)
            if spec.grant_type == "client_credentials"
            else rt.client.refresh(spec, spec.refresh_token or "")
        )
        if response.refresh_token:
            # A rotated refresh token replaces the one given; it is sealed with the rest.
            secrets["refresh_token"] = response.refresh_token
        return token_obtained(
            response,
            sealed_secrets=rt.box.seal(secrets),
            requested_scopes=spec.scopes,
            policy=rt.policy,
            now=rt.clock(),
            reason=reason,
            holds_refresh_token=bool(secrets.get("refresh_token")),
        )

    def update(self, name: str, changes: Any) -> dict[str, str]:
        """Apply a producer's changes, whose secret fields arrive sealed like a spec's."""
        rt = self.rt
        # Opened before the lock: a refused secret must not hold up refreshes.
        changes = rt.opener.open_fields(changes)
        lock = self._wait_for_lock(name)
        try:
            record = self._load(name)
            current = stored_spec(record, rt.box)
            spec = self.validate(merge_changes(current, changes))
            now = rt.clock()
            base = {"spec": spec.public_fields(), **spec.rate_fields()}
            if spec.grant_type == "authorization_code":
                fields = {**base, "secrets": rt.box.seal(spec.secrets())}
                version = rt.store.write(
                    lock, record.version, fields, {}, history_entry(now, record.status, "updated"), KEEP_SCHEDULE
                )
                if version < 0:
                    raise self._refused(name, version)
                return summary(name, record.status, authorization_url=self.authorization_url(name))
            change = self._first_token(spec, reason="updated")
            # The stored refresh token was just spent: the answer is the only live one, so it is written
            # as a refresh writes it (rides out a Redis restart, on disk and replicas before we answer).
            version = write_answer(rt, lock, record, change, extra_fields=base)
            if version < 0:
                raise self._refused(name, version, spent=spec.grant_type == "refresh_token")
            return summary(name, change.fields["status"], expires_at=change.token["expires_at"])
        finally:
            rt.store.release(lock)

    def delete(self, name: str) -> dict[str, Any]:
        """Revoke the tokens at the provider (RFC 7009) where it can, then remove every key of ``name``."""
        self._load(name)
        store = self.rt.store
        # Fenced first: from here every write is refused, so a refresh in flight cannot store a grant this
        # deletion would not revoke (it revokes what it got itself). Only then is the stored grant read.
        if not store.fence(name, self.rt.clock()):
            raise NotFoundError(f"no integration named {name!r}")
        # Give a refresh under way the chance to finish (and revoke its answer) before we answer.
        lock = store.acquire_within(name, self.rt.settings.lock_ttl, LOCK_WAIT)
        try:
            record = self._load(name)
            result: dict[str, Any] = {"name": name, "deleted": True}
            result.update(self._revoke(stored_spec(record, self.rt.box), store.token(name)))
            if not store.delete(name):
                raise NotFoundError(f"no integration named {name!r}")
            return result
        finally:
            if lock is not None:
                store.release(lock)

    def _revoke(self, spec: IntegrationSpec, token: Mapping[str, str]) -> dict[str, Any]:
        if not spec.revocation_url:
            return {}
        revoked: list[str] = []
        failures: list[str] = []
        # The refresh token first: at most providers that also ends the access tokens issued from it.
        for hint, value in (("refresh_token", spec.refresh_token), ("access_token", token.get("access_token"))):
            if not value:
                continue
            try:
                self.rt.client.revoke(spec, value, hint)
            except ProviderError as error:
                # Deletion goes ahead: the operator asked for the integration to be gone.
                log.warning("revoking the %s of %s failed: %s", hint, spec.name, error)
                failures.append(f"{hint}: {error}")
            else:
                revoked.append(hint)
        result: dict[str, Any] = {"revoked": revoked}
        if failures:
            result["revocation_failed"] = "; ".join(failures)
        return result

    @staticmethod
    def _refused(name: str, version: int, *, spent: bool = False) -> Exception:
        if version == WRITE_DELETED:
            return NotFoundError(f"integration {name!r} is being deleted")
        if spent:
            # Trying again would send the refresh token the provider has just retired.
            return StateError(
                f"integration {name!r} changed during the update, and the refresh token it sent was spent; "
                "update again with a new refresh token"
            )
        return StateError(f"integration {name!r} changed during the update; try again")

    def _load(self, name: str) -> IntegrationRecord:
        record = self.rt.store.load(name)
        if record is None:
            raise NotFoundError(f"no integration named {name!r}")
        return record

    def _wait_for_lock(self, name: str) -> Lock:
        if not self.rt.store.exists(name):
            raise NotFoundError(f"no integration named {name!r}")
        lock = self.rt.store.acquire_within(name, self.rt.settings.lock_ttl, LOCK_WAIT)
        if lock is None:
            raise StateError(f"a refresh of {name!r} is under way; try the update again")
        return lock
