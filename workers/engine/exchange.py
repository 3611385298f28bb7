"""Token exchange (RFC 8693): the subject token each exchange sends.

A stored ``subject_token`` is exchanged again whenever the exchanged token is due. With
``subject_integration`` the subject is another integration's current access token, read from
its consumer hash at each exchange; every write of a new token for that integration makes its
dependents due at once (``workers.engine.guarded``), so the exchanged token never outlives the
token it was made from by more than one exchange.
"""

from __future__ import annotations

from workers.engine.runtime import Runtime
from workers.engine.spec import IntegrationSpec
from workers.errors import PermanentProviderError, TransientProviderError
from workers.oauth.token_client import TokenResponse
from workers.store import Status, Store


def obtain(rt: Runtime, spec: IntegrationSpec) -> TokenResponse:
    """A new token by a grant that keeps no refresh token: client credentials, JWT bearer, token exchange."""
    if spec.grant_type == "token_exchange":
        return rt.client.token_exchange(spec, subject_token(rt.store, spec, rt.clock()))
    return rt.client.obtain(spec)


def subject_token(store: Store, spec: IntegrationSpec, now: float) -> str:
    """The token ``spec`` exchanges now; raises a ProviderError saying why there is none to send."""
    if spec.subject_token:
        return spec.subject_token
    name = spec.subject_integration or ""
    token = store.token(name)
    if not token:
        raise PermanentProviderError(
            "subject_missing", f"subject integration {name!r} no longer exists; update subject_integration"
        )
    status, access_token, expires_at = token.get("status"), token.get("access_token"), token.get("expires_at")
    if status != Status.ACTIVE or not access_token:
        # Retried with backoff; the subject's next token makes this one due at once.
        raise TransientProviderError(
            "subject_not_ready", f"subject integration {name!r} is {status or 'unknown'}; exchanged once it is active"
        )
    if expires_at and float(expires_at) <= now:
        raise TransientProviderError("subject_expired", f"the token of subject integration {name!r} has expired")
    return access_token
