"""What every path that stores a provider's answer shares: how long its write rides out Redis being away,
and what becomes of tokens the write was refused (the integration is being deleted).

A refresh, an update and the authorization-code exchange all spend or receive a refresh token that exists
only in this process until written, so they all write with the same patience and durability
(workers.store.Store.write); a write refused because a deletion fenced the integration revokes what it got,
since nobody else will know of it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from workers.engine.outcomes import Change
from workers.engine.runtime import Runtime
from workers.engine.spec import stored_spec
from workers.errors import ProviderError
from workers.store import WRITE_DELETED, IntegrationRecord, Lock

log = logging.getLogger(__name__)


def write_patience(lock_ttl: float) -> float:
    """Seconds a write keeps retrying while Redis is unreachable (a restart, a failover)."""
    return min(10.0, lock_ttl / 2)


def write_answer(
    rt: Runtime,
    lock: Lock,
    record: IntegrationRecord,
    change: Change,
    *,
    extra_fields: Mapping[str, Any] | None = None,
    release: bool = False,
    marks: Iterable[tuple[str, str, float]] = (),
    counters: Iterable[tuple[str, str, float]] = (),
) -> int:
    """Store a provider's answer as every path must: patient while Redis is away, on disk (and replicas) before
    returning when it rotated the refresh token, and revoked when a deletion refused it. Returns the store's
    version (negative: refused, see ``workers.store.Store.write``)."""
    rotated = change.fields.get("secrets", record.sealed_secrets) != record.sealed_secrets
    version = rt.store.write(
        lock,
        record.version,
        {**(extra_fields or {}), **change.fields},
        change.token,
        change.history,
        change.due,
        patience=write_patience(rt.settings.lock_ttl),
        durable=rotated,
        release=release,
        marks=marks,
        counters=counters,
    )
    if version == WRITE_DELETED:
        # Fenced by a deletion: what we got is stored nowhere, so nobody else would revoke it.
        revoke_unkept(rt, record, change)
    return version


def revoke_unkept(rt: Runtime, record: IntegrationRecord, change: Change) -> list[str]:
    """Revoke (RFC 7009, best effort) the tokens in ``change`` that were not stored; returns the hints revoked."""
    spec = stored_spec(record, rt.box)
    if not spec.revocation_url:
        return []
    kept = rt.box.open(change.fields["secrets"]) if "secrets" in change.fields else {}
    revoked = []
    got = (("refresh_token", kept.get("refresh_token")), ("access_token", change.token.get("access_token")))
    for hint, value in got:
        # A refresh token the answer did not replace is the stored one: the deletion revokes that.
        if not value or (hint == "refresh_token" and value == spec.refresh_token):
            continue
        try:
            rt.client.revoke(spec, value, hint)
        except ProviderError as error:
            log.warning("revoking an unkept %s of %s failed: %s", hint, record.name, error)
        else:
            revoked.append(hint)
    return revoked
