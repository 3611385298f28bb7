"""Which account consented: the OpenID Connect ``id_token`` of a token response.

Only the payload is read, without checking the signature: the token arrived over TLS straight
from the token endpoint in answer to our own authenticated request, which OpenID Connect Core
§3.1.3.7 (item 6) accepts in place of a signature check. ``aud`` must still name our client, so
an id_token minted for another client is not taken as an answer about ours.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from workers.errors import ConsentError

# Account fields kept and shown; the rest of the claims are not stored. ``sub`` is unique only within
# its issuer (OpenID Connect Core §2), so an account is the pair (iss, sub).
ACCOUNT_FIELDS = ("iss", "sub", "email", "name")
FIELD_LIMIT = 200


def account_from_id_token(id_token: str | None, client_id: str) -> dict[str, str] | None:
    """``{"sub", "email"?, "name"?}`` from ``id_token``, or None when there is none or it names nobody."""
    if not id_token:
        return None
    claims = _payload(id_token)
    if claims is None or not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise ConsentError(
            "The provider's answer says who signed in, but not in a form tokenkeeper can read; nothing was changed."
        )
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences:
        raise ConsentError("The provider's answer names an account for another application; nothing was changed.")
    return {
        key: str(claims[key])[:FIELD_LIMIT]
        for key in ACCOUNT_FIELDS
        if isinstance(claims.get(key), str) and claims[key]
    }


def same_account(one: dict[str, str], other: dict[str, str]) -> bool:
    """Whether two recorded accounts are the same person: the same ``sub`` from the same issuer."""
    return (one.get("iss"), one.get("sub")) == (other.get("iss"), other.get("sub"))


def describe(account: dict[str, str] | Any) -> str:
    """``alice@example.com (sub 1234)``: how operators see an account."""
    if not account or not account.get("sub"):
        return ""
    label = account.get("email") or account.get("name") or ""
    return f"{label} (sub {account['sub']})" if label else f"sub {account['sub']}"


def _payload(id_token: str) -> dict[str, Any] | None:
    parts = id_token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None
