"""The Authorization Code grant (RFC 6749 §4.1) with PKCE (RFC 7636) and iss checks (RFC 9207).

``begin`` needs a valid authorization link (:mod:`workers.engine.links`, checked before Redis is
touched) and the browser's binding cookie value; it makes a one-time ``state`` (256 random
bits, kept in Redis for at most ten minutes under a hash of state *and* binding, a few at most
per link) and the provider URL, from the spec's public fields only. ``receive`` consumes the
state exactly once, and only with the same binding (another browser finds nothing and writes
nothing), and parks the code, sealed, under an opaque id; ``exchange`` (run by a worker:
workers, not the web app, call token endpoints) trades the code for tokens once, never
retrying it, refuses an account other than the one connected before unless the link allows
a new one, and spends the link in the same write that stores the tokens.

What the provider writes (``error_description``, error codes we do not know) goes to the log
and the integration's history, for operators; the person at the browser gets our own words.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from workers.engine.guarded import write_answer
from workers.engine.links import LinkSigner
from workers.engine.outcomes import history_entry, token_obtained, without_refresh_token
from workers.engine.policy import LOCK_WAIT
from workers.engine.runtime import Runtime
from workers.engine.spec import IntegrationSpec, spec_from_stored
from workers.errors import (
    ConsentError,
    LinkError,
    NotFoundError,
    ProviderError,
    StateError,
    TooManyStatesError,
    TransientProviderError,
    UnknownStateError,
    scrub,
)
from workers.oauth.accounts import account_from_id_token, describe, same_account
from workers.store import WRITE_DELETED, IntegrationRecord, Lock

log = logging.getLogger(__name__)

STATE_TTL = 600
EXCHANGE_TTL = 120
# Flows one link may have under way at once: enough for a retry in another tab, too few to fill Redis.
MAX_STATES_PER_LINK = 5
# A state or binding longer than this is not one of ours; refused without a Redis lookup.
MAX_PARAM_LENGTH = 512

_NEW_LINK = "Start again from the authorization link."

# What a user is told for the provider's RFC 6749 §4.1.2.1 error codes.
CONSENT_ERRORS = {
    "access_denied": "Access was not granted: the request was declined at the provider.",
    "invalid_scope": "The provider refused the requested scopes.",
    "unauthorized_client": "The provider does not allow this client to ask for authorization this way.",
    "server_error": "The provider had an internal error. Please try again.",
    "temporarily_unavailable": "The provider is temporarily unavailable. Please try again later.",
    "invalid_request": "The provider found the authorization request malformed.",
    "unsupported_response_type": "The provider does not support this kind of authorization request.",
    "login_required": "The provider needs you to sign in first.",
    "consent_required": "The provider needs your consent first.",
    "interaction_required": "The provider needs you to complete a step at its site first.",
    "account_selection_required": "The provider needs you to choose an account first.",
}
# What a user is told when the token endpoint refuses the code (RFC 6749 §5.2 codes).
EXCHANGE_ERRORS = {
    "invalid_grant": "The provider no longer accepts this authorization (it expired or was used).",
    "invalid_client": "The provider did not accept this service's client credentials.",
    "unauthorized_client": "The provider does not allow this client to use authorization codes.",
    "invalid_request": "The provider found the token request malformed.",
    "invalid_scope": "The provider refused the requested scopes.",
    "unsupported_grant_type": "The provider does not support authorization codes for this client.",
    "access_denied": "The provider refused to issue tokens.",
}
UNEXPLAINED = "The provider reported an error. The details are in the integration's status history."


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
    # RFC 8707 §2.1: the resources the grant is for, each its own parameter (as the token requests send them).
    resources = [("resource", resource) for resource in spec.resource]
    parts = urlsplit(spec.auth_url)
    ours_names = set(ours) | ({"resource"} if resources else set())
    kept = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key not in ours_names]
    return urlunsplit(parts._replace(query=urlencode(kept + list(ours.items()) + resources)))


def _state_id(state: str, binding: str) -> str:
    # Only a hash is a key name, so a reader of key names cannot replay it; and the browser's
    # binding is part of it, so a state presented from another browser names no key at all.
    return hashlib.sha256(f"{state}\x00{binding}".encode()).hexdigest()


def _shown(code: str, messages: Mapping[str, str]) -> str:
    """Our words for a provider's error code; the code itself only when it is a standard one."""
    return f"{messages[code]} ({code})" if code in messages else UNEXPLAINED


class Authorizations:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    @property
    def redirect_uri(self) -> str:
        return self.rt.settings.callback_url

    def begin(self, name: str, link_token: str | None, binding: str) -> str:
        """The provider URL for a fresh flow through the link ``link_token``, bound to ``binding``."""
        # Signature, name and expiry first: without a valid link nothing is read or written.
        link = LinkSigner(self.rt.settings.secret_keys).verify(link_token, name, self.rt.clock())
        if not binding or len(binding) > MAX_PARAM_LENGTH:
            raise StateError("This browser did not accept tokenkeeper's cookie; allow cookies and try again.")
        record = self._load(name)
        # Public fields only: client_id and URLs. Secrets are not decrypted to build a URL.
        spec = spec_from_stored(record.public, {"client_secret": ""})
        state = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair() if spec.pkce else (None, None)
        sealed = self.rt.box.seal({"code_verifier": verifier} if verifier else {})
        # The token request must repeat the exact redirect_uri of this request (RFC 6749 §4.1.3).
        value = {
            "name": name,
            "sealed": sealed,
            "redirect_uri": self.redirect_uri,
            "link_expires": link.expires_at,
            "new_account": link.new_account,
        }
        stored = self.rt.store.put_state(
            _state_id(state, binding), value, STATE_TTL, link_id=link.id, now=self.rt.clock(), most=MAX_STATES_PER_LINK
        )
        if stored < 0:
            raise LinkError(
                "This authorization link was already used to connect the integration. "
                "Ask the person who sent it for a new link."
            )
        if stored == 0:
            raise TooManyStatesError(
                f"This link already has {MAX_STATES_PER_LINK} authorizations under way. Finish one of them, "
                "or wait ten minutes for them to expire."
            )
        return authorization_url(spec, self.redirect_uri, state, challenge)

    def receive(self, params: Mapping[str, str], binding: str) -> tuple[str, str]:
        """Consume the callback's state; return (integration name, exchange id) or raise."""
        state = params.get("state", "")
        if not state:
            raise UnknownStateError("The callback has no state parameter, so it cannot be matched to a request.")
        if not binding:
            raise UnknownStateError(
                "This authorization was not started in this browser (tokenkeeper's cookie is missing), so it "
                "was ignored. Open the authorization link in this browser and finish there."
            )
        parked = None
        if len(state) <= MAX_PARAM_LENGTH and len(binding) <= MAX_PARAM_LENGTH:
            parked = self.rt.store.take_state(_state_id(state, binding))
        if parked is None:
            raise UnknownStateError(
                "This authorization response is unknown, expired or was already used, or it was started in "
                "another browser. " + _NEW_LINK
            )
        name = parked["name"]
        error = params.get("error")
        if error:
            detail = params.get("error_description", "")
            self._note(name, f"authorization failed at the provider: {error[:80]}{': ' + detail if detail else ''}")
            raise ConsentError(_shown(error, CONSENT_ERRORS))
        record = self._load(name)
        spec = spec_from_stored(record.public, {"client_secret": ""})
        issuer = params.get("iss")
        # With a known issuer the match is exact (RFC 9207 §2.4); without one, the same origin as auth_url.
        expected_issuer = issuer == spec.issuer if spec.issuer else _same_origin(issuer or "", spec.auth_url or "")
        if issuer is not None and not expected_issuer:
            self._note(name, f"authorization response ignored: iss {issuer[:200]!r} is not this provider")
            raise ConsentError(
                "The response claims to come from another provider than the one this integration uses; "
                "it was ignored (RFC 9207)."
            )
        code = params.get("code", "")
        if not code:
            raise ConsentError("The provider sent neither a code nor an error.")
        if self.rt.store.link_spent(parked["link"]):
            raise LinkError(
                "This authorization link was already used to connect the integration. "
                "Ask the person who sent it for a new link."
            )
        exchange_id = secrets.token_urlsafe(16)
        verifier = self.rt.box.open(parked["sealed"]).get("code_verifier")
        payload = {"code": code, **({"code_verifier": verifier} if verifier else {})}
        self.rt.store.put_exchange(
            exchange_id,
            {
                "name": name,
                "sealed": self.rt.box.seal(payload),
                "redirect_uri": parked["redirect_uri"],
                "link": parked["link"],
                "link_expires": parked["link_expires"],
                "new_account": parked["new_account"],
            },
            EXCHANGE_TTL,
        )
        return name, exchange_id

    def exchange(self, exchange_id: str) -> dict[str, Any]:
        """Trade the parked code for tokens, once; the integration becomes active and the link spent."""
        parked = self.rt.store.take_exchange(exchange_id)
        if parked is None:
            raise UnknownStateError("This authorization was already completed or has expired.")
        name = parked["name"]
        payload = self.rt.box.open(parked["sealed"])
        lock = self._wait_for_lock(name)
        try:
            record = self._load(name)
            if self.rt.store.link_spent(parked["link"]):
                raise LinkError(
                    "This authorization link was already used to connect the integration. "
                    "Ask the person who sent it for a new link."
                )
            stored = self.rt.box.open(record.sealed_secrets)
            spec = spec_from_stored(record.public, stored)
            try:
                response = self.rt.client.exchange_code(
                    spec, payload["code"], parked["redirect_uri"], payload.get("code_verifier")
                )
            except ProviderError as error:
                # The provider's text is for operators only (it is scrubbed of our secrets by the client).
                self._note(name, f"the authorization code was not accepted: {error}", record=record)
                if error.retryable:
                    raise TransientProviderError(
                        "provider_unavailable", "the provider did not complete the token request"
                    ) from None
                raise ConsentError(_shown(error.error, EXCHANGE_ERRORS)) from None
            account = self._check_account(spec, record, response, new_account=bool(parked["new_account"]))
            refresh_token = response.refresh_token or stored.get("refresh_token")
            kept = {**stored, **({"refresh_token": refresh_token} if refresh_token else {})}
            now = self.rt.clock()
            reason = f"authorized by {describe(account)}" if account else "authorized"
            change = token_obtained(
                response,
                sealed_secrets=self.rt.box.seal(kept),
                requested_scopes=spec.scopes,
                policy=self.rt.policy,
                now=now,
                reason=reason,
                holds_refresh_token=bool(refresh_token),
            )
            change = dataclasses.replace(change, fields={**change.fields, "account": account or ""})
            note = ""
            if not refresh_token:
                change, note = without_refresh_token(change, response)
            # The link is spent in the same step that stores the tokens: one success per link.
            spent = (self.rt.store.keys.link_spent(parked["link"]), "1", max(1.0, parked["link_expires"] - now))
            # Written as a refresh writes: the code is spent, the answer exists only here until stored.
            version = write_answer(self.rt, lock, record, change, marks=[spent])
            if version == WRITE_DELETED:
                raise NotFoundError(f"integration {name!r} is being deleted")
            if version < 0:
                raise StateError(f"integration {name!r} changed during authorization; authorize again")
            return {
                "name": name,
                "status": change.fields["status"],
                "expires_at": change.token["expires_at"],
                "scope": change.token["scope"],
                "refresh_token_issued": bool(response.refresh_token),
                "note": note,
            }
        finally:
            self.rt.store.release(lock)

    def _check_account(
        self, spec: IntegrationSpec, record: IntegrationRecord, response: Any, *, new_account: bool
    ) -> dict[str, str] | None:
        """The account that consented; refuses (revoking the new tokens) one other than the connected one."""
        try:
            account = account_from_id_token(response.id_token, spec.client_id)
        except ConsentError as error:
            self._discard(spec, record, response, f"tokens refused: {error}")
            raise
        before = record.account.get("sub")
        if not before or new_account:
            return account
        if account is None:
            self._discard(
                spec,
                record,
                response,
                f"tokens refused: the provider did not say which account "
                f"consented, and {describe(record.account)} is connected",
            )
            raise ConsentError(
                "The provider did not say which account you signed in with, so this could not be "
                "checked against the connected account and was refused; nothing was changed. "
                "To connect another account, ask for a link made for a new account."
            )
        if not same_account(account, dict(record.account)):
            self._discard(
                spec,
                record,
                response,
                f"tokens refused: {describe(account)} signed in, but "
                f"{describe(record.account)} is connected (the link does "
                "not allow a new account)",
            )
            raise ConsentError(
                "You signed in with a different account than the one connected before, so this "
                "was refused and nothing was changed. To connect another account, ask for a link "
                "made for a new account."
            )
        return account

    def _discard(self, spec: IntegrationSpec, record: IntegrationRecord, response: Any, reason: str) -> None:
        """Revoke tokens we will not keep (RFC 7009, best effort) and tell operators why."""
        revoked = []
        if spec.revocation_url:
            for hint, value in (("refresh_token", response.refresh_token), ("access_token", response.access_token)):
                if not value:
                    continue
                try:
                    self.rt.client.revoke(spec, value, hint)
                except ProviderError as error:
                    log.warning("revoking a refused %s of %s failed: %s", hint, spec.name, error)
                else:
                    revoked.append(hint)
        self._note(spec.name, reason + (f"; revoked: {', '.join(revoked)}" if revoked else ""), record=record)

    def _note(self, name: str, reason: str, record: IntegrationRecord | None = None) -> None:
        reason = scrub(reason, (), limit=400)
        log.warning("authorization of %s: %r", name, reason)
        current = record or self.rt.store.load(name)
        if current is not None:
            self.rt.store.note(name, history_entry(self.rt.clock(), current.status, reason))

    def _load(self, name: str) -> IntegrationRecord:
        record = self.rt.store.load(name)
        if record is None:
            raise NotFoundError(f"no integration named {name!r}")
        if record.grant_type != "authorization_code":
            raise StateError(f"integration {name!r} uses {record.grant_type}, not authorization_code")
        return record

    def _wait_for_lock(self, name: str) -> Lock:
        lock = self.rt.store.acquire_within(name, self.rt.settings.lock_ttl, LOCK_WAIT)
        if lock is None:
            raise StateError(f"a refresh of {name!r} is under way; authorize again in a moment")
        return lock


def _same_origin(issuer: str, auth_url: str) -> bool:
    a, b = urlsplit(issuer), urlsplit(auth_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
