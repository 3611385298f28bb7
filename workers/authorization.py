"""The Authorization Code grant (RFC 6749 §4.1) with PKCE (RFC 7636) and iss checks (RFC 9207).

``begin`` makes a one-time ``state`` (256 random bits, kept in Redis for at most ten
minutes, bound to one integration) and the provider URL; ``receive`` consumes the
state exactly once and parks the code, sealed, under an opaque id; ``exchange``
(run by a worker: workers, not the web app, call token endpoints) trades the code
for tokens once, never retrying it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from workers.errors import ConsentError, NotFoundError, StateError, UnknownStateError
from workers.outcomes import token_obtained
from workers.runtime import Runtime
from workers.spec import IntegrationSpec, spec_from_stored
from workers.store import IntegrationRecord, Lock

STATE_TTL = 600
EXCHANGE_TTL = 120
LOCK_WAIT = 10.0

# What a user is told for the provider's RFC 6749 §4.1.2.1 error codes.
CONSENT_ERRORS = {
    "access_denied": "Access was not granted: the request was declined at the provider.",
    "invalid_scope": "The provider refused the requested scopes.",
    "unauthorized_client": "The provider does not allow this client to ask for authorization this way.",
    "server_error": "The provider had an internal error. Please try again.",
    "temporarily_unavailable": "The provider is temporarily unavailable. Please try again later.",
}


def pkce_pair() -> tuple[str, str]:
    """A code verifier (RFC 7636 §4.1, 86 characters) and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_url(spec: IntegrationSpec, redirect_uri: str, state: str, code_challenge: str | None) -> str:
    """``auth_url`` with the request's parameters merged into any query it already has.

    Existing parameters keep their place; a parameter we set replaces the one of the
    same name instead of appearing twice.
    """
    assert spec.auth_url is not None
    ours: dict[str, str] = dict(spec.extra_auth_params)
    ours.update({"response_type": "code", "client_id": spec.client_id, "redirect_uri": redirect_uri})
    if spec.scopes:
        ours["scope"] = " ".join(spec.scopes)
    ours["state"] = state
    if code_challenge:
        ours.update({"code_challenge": code_challenge, "code_challenge_method": "S256"})
    parts = urlsplit(spec.auth_url)
    kept = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key not in ours]
    return urlunsplit(parts._replace(query=urlencode(kept + list(ours.items()))))


def _state_id(state: str) -> str:
    # Only a hash of the state is a key name, so a reader of key names cannot replay it.
    return hashlib.sha256(state.encode()).hexdigest()


class Authorizations:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    @property
    def redirect_uri(self) -> str:
        return self.rt.settings.callback_url

    def begin(self, name: str) -> str:
        record = self._load(name)
        spec = self._spec(record)
        state = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair() if spec.pkce else (None, None)
        sealed = self.rt.box.seal({"code_verifier": verifier} if verifier else {})
        # The token request must repeat the exact redirect_uri of this request (RFC 6749 §4.1.3).
        self.rt.store.put_state(_state_id(state), {"name": name, "sealed": sealed,
                                                   "redirect_uri": self.redirect_uri}, STATE_TTL)
        return authorization_url(spec, self.redirect_uri, state, challenge)

    def receive(self, params: Mapping[str, str]) -> tuple[str, str]:
        """Consume the callback's state; return (integration name, exchange id) or raise."""
        state = params.get("state", "")
        if not state:
            raise UnknownStateError("The callback has no state parameter, so it cannot be matched to a request.")
        parked = self.rt.store.take_state(_state_id(state))
        if parked is None:
            raise UnknownStateError(
                "This authorization response is unknown, expired or was already used. Start again from the link."
            )
        name = parked["name"]
        error = params.get("error")
        if error:
            described = CONSENT_ERRORS.get(error, "The provider reported an error.")
            detail = params.get("error_description", "")
            raise ConsentError(f"{described} ({error}{': ' + detail[:200] if detail else ''})")
        record = self._load(name)
        spec = self._spec(record)
        issuer = params.get("iss")
        # With a known issuer the match is exact (RFC 9207 §2.4); without one, the same origin as auth_url.
        expected_issuer = issuer == spec.issuer if spec.issuer else _same_origin(issuer or "", spec.auth_url or "")
        if issuer is not None and not expected_issuer:
            raise ConsentError(
                f"The response claims to come from {issuer!r}, not from the provider this integration uses; "
                "it was ignored (RFC 9207)."
            )
        code = params.get("code", "")
        if not code:
            raise ConsentError("The provider sent neither a code nor an error.")
        exchange_id = secrets.token_urlsafe(16)
        verifier = self.rt.box.open(parked["sealed"]).get("code_verifier")
        payload = {"code": code, **({"code_verifier": verifier} if verifier else {})}
        self.rt.store.put_exchange(exchange_id, {"name": name, "sealed": self.rt.box.seal(payload),
                                                 "redirect_uri": parked["redirect_uri"]}, EXCHANGE_TTL)
        return name, exchange_id

    def exchange(self, exchange_id: str) -> dict[str, Any]:
        """Trade the parked code for tokens, once; the integration becomes active."""
        parked = self.rt.store.take_exchange(exchange_id)
        if parked is None:
            raise UnknownStateError("This authorization was already completed or has expired.")
        name = parked["name"]
        payload = self.rt.box.open(parked["sealed"])
        lock = self._wait_for_lock(name)
        try:
            record = self._load(name)
            stored = self.rt.box.open(record.sealed_secrets)
            spec = spec_from_stored(record.public, stored)
            response = self.rt.client.exchange_code(spec, payload["code"], parked["redirect_uri"],
                                                    payload.get("code_verifier"))
            refresh_token = response.refresh_token or stored.get("refresh_token")
            kept = {**stored, **({"refresh_token": refresh_token} if refresh_token else {})}
            now = self.rt.clock()
            change = token_obtained(
                response, sealed_secrets=self.rt.box.seal(kept), requested_scopes=spec.scopes,
                policy=self.rt.policy, now=now, reason="authorized", holds_refresh_token=bool(refresh_token),
            )
            note = ""
            if not refresh_token:
                if response.expires_at is None:
                    note = "The provider issued no refresh token and no expiry: the token does not expire."
                    change = dataclasses.replace(change, due=None, fields={**change.fields, "refresh_at": ""})
                else:
                    note = ("The provider issued no refresh token, so this token cannot be renewed: authorize "
                            "again before it expires (Google, for one, needs access_type=offline and "
                            "prompt=consent in extra_auth_params).")
                    change = dataclasses.replace(change, due=response.expires_at,
                                                 fields={**change.fields, "refresh_at": response.expires_at})
            version = self.rt.store.write(lock, record.version, change.fields, change.token, change.history,
                                          change.due)
            if version < 0:
                raise StateError(f"integration {name!r} changed during authorization; authorize again")
            return {
                "name": name, "status": change.fields["status"], "expires_at": change.token["expires_at"],
                "scope": change.token["scope"], "refresh_token_issued": bool(response.refresh_token),
                "note": note,
            }
        finally:
            self.rt.store.release(lock)

    def _load(self, name: str) -> IntegrationRecord:
        record = self.rt.store.load(name)
        if record is None:
            raise NotFoundError(f"no integration named {name!r}")
        if record.grant_type != "authorization_code":
            raise StateError(f"integration {name!r} uses {record.grant_type}, not authorization_code")
        return record

    def _spec(self, record: IntegrationRecord) -> IntegrationSpec:
        return spec_from_stored(record.public, self.rt.box.open(record.sealed_secrets))

    def _wait_for_lock(self, name: str) -> Lock:
        lock = self.rt.store.acquire_within(name, self.rt.settings.lock_ttl, LOCK_WAIT)
        if lock is None:
            raise StateError(f"a refresh of {name!r} is under way; authorize again in a moment")
        return lock


def _same_origin(issuer: str, auth_url: str) -> bool:
    a, b = urlsplit(issuer), urlsplit(auth_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
