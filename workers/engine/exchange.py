"""Token exchange (RFC 8693): the subject token each exchange sends.

A stored ``subject_token`` is exchanged again whenever the exchanged token is due. With
``subject_integration`` the subject is another integration's current access token, read from
its consumer hash at each exchange; every write of a new token for that integration makes its
dependents due at once (``workers.engine.guarded``), so the exchanged token never outlives the
token it was made from by more than one exchange.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.engine.runtime import Runtime
from workers.engine.spec import IntegrationSpec
from workers.errors import PermanentProviderError, TransientProviderError
from workers.oauth.token_client import TokenResponse
from workers.store import Status, Store


def obtain(rt: Runtime, spec: IntegrationSpec) -> TokenResponse:
    """A new token by a grant that keeps no refresh token: client credentials, JWT bearer, token exchange."""
    if spec.grant_type != "token_exchange":
        return rt.client.obtain(spec)
    try:
        return rt.client.token_exchange(spec, subject_token(rt.store, spec, rt.clock()))
    except PermanentProviderError as error:
        if not spec.subject_integration or error.error not in ("invalid_grant", "invalid_request"):
            raise
        # Most likely the subject's token was replaced or revoked as it was sent: its next token is
        # exchanged at once, so this waits for that instead of giving up.
        raise TransientProviderError(
            error.error,
            f"{error.description or error.error}; exchanged again with the next token of {spec.subject_integration!r}",
            status=error.status,
        ) from None


def allows(subject_public: Mapping[str, Any], name: str) -> bool:
    """Whether a subject integration's spec lets ``name`` exchange its token (its ``exchangeable_by``)."""
    allowed = subject_public.get("exchangeable_by") or ()
    return isinstance(allowed, list | tuple) and name in allowed


def refusal(subject: str, name: str) -> str:
    return f"no integration named {subject!r} lets {name!r} exchange its token (see its exchangeable_by)"


def subject_token(store: Store, spec: IntegrationSpec, now: float) -> str:
    """The token ``spec`` exchanges now; raises a ProviderError saying why there is none to send."""
    if spec.subject_token:
        return spec.subject_token
    name = spec.subject_integration or ""
    loaded = store.load_many([name])
    record, token = loaded[0] if loaded else (None, {})
    if record is None or not allows(record.public, spec.name):
        # One answer for "no such integration" and "not yours to exchange": names are not to be probed.
        raise PermanentProviderError("subject_not_allowed", refusal(name, spec.name))
    status, access_token, expires_at = token.get("status"), token.get("access_token"), token.get("expires_at")
    if status != Status.ACTIVE or not access_token:
        # Retried with backoff; the subject's next token makes this one due at once.
        raise TransientProviderError(
            "subject_not_ready", f"subject integration {name!r} is {status or 'unknown'}; exchanged once it is active"
        )
    if expires_at and float(expires_at) <= now:
        raise TransientProviderError("subject_expired", f"the token of subject integration {name!r} has expired")
    return access_token
