"""What every path that stores a provider's answer shares: how long its write rides out Redis being away,
and what becomes of tokens the write was refused (the integration is being deleted).

A refresh, an update and the authorization-code exchange all spend or receive a refresh token that exists
only in this process until written, so they all write with the same patience and durability
(workers.store.Store.write); a write refused because a deletion fenced the integration revokes what it got,
since nobody else will know of it.
"""

from __future__ import annotations

import logging

from workers.engine.outcomes import Change
from workers.engine.runtime import Runtime
from workers.engine.spec import stored_spec
from workers.errors import ProviderError
from workers.store import IntegrationRecord

log = logging.getLogger(__name__)


def write_patience(lock_ttl: float) -> float:
    """Seconds a write keeps retrying while Redis is unreachable (a restart, a failover)."""
    return min(10.0, lock_ttl / 2)


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
