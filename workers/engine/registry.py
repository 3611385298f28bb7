"""Creating, updating and deleting integrations: the producer operations.

A client_credentials or refresh_token integration is stored only once its
first token request succeeded; an authorization_code one starts as
``pending_authorization``. A rejected spec or a failed first request stores
nothing, and a name already taken leaves the existing integration untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from workers.engine.declared import decode, encode
from workers.engine.device import device_started
from workers.engine.exchange import allows, obtain, refusal
from workers.engine.guarded import write_answer
from workers.engine.links import authorization_link
from workers.engine.outcomes import Change, history_entry, pending_token, token_obtained
from workers.engine.overlap import run_overlapping
from workers.engine.policy import LOCK_WAIT
from workers.engine.runtime import Runtime
from workers.engine.spec import (
    FIELD_GRANTS,
    GRANT_TYPES,
    STANDALONE_GRANTS,
    IntegrationSpec,
    check_url,
    merge_changes,
    stored_spec,
    validate_spec,
)
from workers.errors import ConflictError, NotFoundError, ProviderError, SpecError, StateError, TokenkeeperError
from workers.oauth.discovery import choose_auth_method, discover
from workers.oauth.providers import expand_preset
from workers.store import KEEP_SCHEDULE, WRITE_DELETED, IntegrationRecord, Lock, NewIntegration, Status

log = logging.getLogger(__name__)

T = TypeVar("T")


def _taken(name: str) -> ConflictError:
    return ConflictError(f"an integration named {name!r} already exists")


def _attempt(call: Callable[[IntegrationSpec], T], spec: IntegrationSpec) -> T | Exception:
    """``call(spec)``, its exception returned rather than raised (one spec's failure is its own)."""
    try:
        return call(spec)
    except Exception as exc:  # noqa: BLE001 -- returned as this spec's outcome
        return exc


def failure(spec: Any, error: Exception) -> dict[str, str]:
    """A spec's outcome when it was not created: its name (when it has one) and what kept it out.

    Our errors say what is wrong without secrets; anyone else's text may quote one: its type only.
    """
    name = spec.get("name") if isinstance(spec, Mapping) else None
    message = str(error) if isinstance(error, TokenkeeperError) else f"internal error ({type(error).__name__})"
    return {"name": name if isinstance(name, str) else "", "error": message}


def summary(
    name: str,
    status: str,
    expires_at: str = "",
    authorization_url: str = "",
    device: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    result = {"name": name, "status": status}
    if expires_at:
        result["expires_at"] = expires_at
    if authorization_url:
        result["authorization_url"] = authorization_url
    if device:
        # RFC 8628: what the person is to do (the device code itself stays with the secrets).
        result.update({key: str(device[key]) for key in DEVICE_SUMMARY if device.get(key)})
    return result


DEVICE_SUMMARY = ("user_code", "verification_uri", "verification_uri_complete")


class Registry:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def authorization_url(self, name: str) -> str:
        """A signed link (default lifetime) for the person who is to connect ``name``."""
        return authorization_link(self.rt.settings, name, now=self.rt.clock())

    def validate(self, data: Any, *, check_subject: bool = True) -> IntegrationSpec:
        """The spec, resolved and validated; ``check_subject=False`` leaves a token exchange's subject unchecked
        (a plan checks it against the file, where the subject may be created first)."""
        spec = validate_spec(
            self.resolve(data), insecure_hosts=self.rt.settings.insecure_http_hosts, addresses=self.rt.client.addresses
        )
        if spec.subject_integration and check_subject:
            self._check_subject_chain(spec)
        return spec

    def _check_subject_chain(self, spec: IntegrationSpec) -> None:
        """The integration to exchange exists, and following subjects from it never comes back to ``spec``."""
        chain, current = [spec.name], spec.subject_integration
        while current:
            if current in chain:
                loop = " -> ".join([*chain, current])
                raise SpecError({"subject_integration": [f"would exchange its own token in a loop: {loop}"]})
            record = self.rt.store.load(current)
            if current == spec.subject_integration and (record is None or not allows(record.public, spec.name)):
                raise SpecError({"subject_integration": [refusal(current, spec.name)]})
            if record is None:
                return
            chain.append(current)
            current = record.public.get("subject_integration")

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
            for name in ("auth_url", "token_url", "revocation_url", "device_authorization_url")
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
        discovered = discover(self.rt.client, issuer)
        if "auth_method" not in spec and "auth_methods" in discovered:
            chosen = choose_auth_method(discovered["auth_methods"], spec)
            if chosen is not None:
                spec["auth_method"] = chosen
        # RFC 8705 §5: a client presenting a certificate uses the server's mTLS aliases where it has them.
        aliases = discovered.get("mtls_aliases", {}) if spec.get("auth_method") == "tls_client_auth" else {}
        for source, value in {**discovered, **aliases}.items():
            if source in wanted:
                spec[wanted[source]] = value
        return spec

    def create(self, data: Any) -> dict[str, str]:
        """Create from a producer's spec, whose secret fields arrive sealed (see workers.crypto.sealing)."""
        outcome = self.create_many([data])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def create_many(self, data: Sequence[Any]) -> list[dict[str, str] | Exception]:
        """Create from many specs, each on its own: its summary, or the error that kept it from being stored.

        Done as a refresh batch is: one round trip reserves every name, the first token requests
        overlap, and the answers are stored in groups, one round trip each.
        """
        outcomes: list[dict[str, str] | Exception | None] = [None] * len(data)
        specs: dict[int, IntegrationSpec] = {}
        given: dict[int, dict[str, str] | None] = {}
        seen: set[str] = set()
        for index, item in enumerate(data):
            try:
                opened = self.rt.opener.open_fields(item)
                spec = self.validate(opened)
            except Exception as exc:  # noqa: BLE001 -- this spec's error, reported as its outcome
                outcomes[index] = exc
                continue
            if spec.name in seen:
                outcomes[index] = _taken(spec.name)
                continue
            seen.add(spec.name)
            specs[index] = spec
            # Kept for the integrations a file keeps (`tokenkeeper apply`), which alone are planned against them.
            given[index] = self.rt.digests.given(opened) if spec.managed_by else None
        store = self.rt.store
        # Long enough to outlast the first token request.
        ttl = self.rt.settings.http_connect_timeout + self.rt.settings.http_read_timeout + 30
        order = list(specs)
        held = store.reserve_many([specs[index].name for index in order], ttl)
        reserved = [index for index, ok in zip(order, held, strict=True) if ok]
        for index, ok in zip(order, held, strict=True):
            if not ok:
                outcomes[index] = _taken(specs[index].name)
        try:
            prepare = [
                partial(_attempt, partial(self._new_integration, given=given[index]), specs[index])
                for index in reserved
            ]
            for group in run_overlapping(prepare):
                ready: list[tuple[int, NewIntegration, dict[str, str]]] = []
                for position, prepared in group:
                    if isinstance(prepared, Exception):
                        outcomes[reserved[position]] = prepared
                    else:
                        ready.append((reserved[position], *prepared))
                try:
                    created = store.create_many([new for _, new, _ in ready])
                except Exception as exc:  # noqa: BLE001 -- this group's outcome; groups stored before stand
                    for index, _, _ in ready:
                        outcomes[index] = exc
                    continue
                for (index, new, result), ok in zip(ready, created, strict=True):
                    outcomes[index] = result if ok else _taken(new.name)
                    subject = specs[index].subject_integration
                    if ok and subject:
                        self._follow_subject(new.name, subject)
        finally:
            store.unreserve_many([specs[index].name for index in reserved])
        # None: the thread asking the provider died under it (see run_overlapping).
        return [StateError("the creation did not finish") if outcome is None else outcome for outcome in outcomes]

    def _new_integration(
        self, spec: IntegrationSpec, given: Mapping[str, str] | None
    ) -> tuple[NewIntegration, dict[str, str]]:
        """What creating ``spec`` stores, and its summary; asks the provider for the first token."""
        rt = self.rt
        now = rt.clock()
        base = {
            "grant_type": spec.grant_type,
            "spec": spec.public_fields(),
            "created_at": now,
            **spec.rate_fields(),
        }
        if given is not None:
            base["given"] = encode(given)
        if spec.grant_type == "authorization_code":
            fields = {
                **base,
                "secrets": rt.box.seal(spec.secrets()),
                "status": Status.PENDING,
                "reason": "waiting for the user to authorize",
                "status_at": now,
                "attempts": 0,
            }
            history = history_entry(now, Status.PENDING, "created")
            new = NewIntegration(spec.name, fields, pending_token(now), history, None)
            return new, summary(spec.name, Status.PENDING, authorization_url=self.authorization_url(spec.name))
        if spec.grant_type == "device_code":
            change, device = self._device_started(spec, reason="created")
            new = NewIntegration(spec.name, {**base, **change.fields}, change.token, change.history, change.due)
            return new, summary(spec.name, Status.PENDING, device=device)
        change = self._first_token(spec, reason="created")
        new = NewIntegration(spec.name, {**base, **change.fields}, change.token, change.history, change.due)
        return new, summary(spec.name, change.fields["status"], expires_at=change.token["expires_at"])

    def _device_started(self, spec: IntegrationSpec, reason: str) -> tuple[Change, dict[str, Any]]:
        """Ask for a device code (RFC 8628 §3.1); raises the provider's error. The device code is sealed."""
        rt = self.rt
        authorization = rt.client.device_authorization(spec)
        secrets = {**spec.secrets(), "device_code": authorization.device_code}
        return device_started(authorization, sealed_secrets=rt.box.seal(secrets), now=rt.clock(), reason=reason)

    def _first_token(self, spec: IntegrationSpec, reason: str) -> Change:
        """Request a token with ``spec``'s own credentials; raises the provider's error."""
        rt = self.rt
        secrets = spec.secrets()
        response = (
            obtain(rt, spec)
            if spec.grant_type in STANDALONE_GRANTS
            else rt.client.refresh(spec, spec.refresh_token or "")
        )
        if response.refresh_token and spec.grant_type == "refresh_token":
            # A rotated refresh token replaces the one given; it is sealed with the rest. The grants that
            # ask afresh every time have no use for one: it is not kept.
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
            given = decode(record.given)
            if given is not None and rt.digests.known(given):
                # Kept only where it was since creation: a partial record would read as fields removed.
                base["given"] = encode(rt.digests.updated(name, given, changes))
            if spec.grant_type == "authorization_code":
                # The refresh token the person's consent gave stays: the update changes the spec, not the grant.
                kept = {"refresh_token": current.refresh_token} if current.refresh_token else {}
                fields = {**base, "secrets": rt.box.seal({**spec.secrets(), **kept})}
                version = rt.store.write(
                    lock, record.version, fields, {}, history_entry(now, record.status, "updated"), KEEP_SCHEDULE
                )
                if version < 0:
                    raise self._refused(name, version)
                return summary(name, record.status, authorization_url=self.authorization_url(name))
            if spec.grant_type == "device_code":
                # An update starts over: a new code for the person (after a denial or an expiry, say).
                change, device = self._device_started(spec, reason="updated")
                version = rt.store.write(
                    lock, record.version, {**base, **change.fields}, change.token, change.history, change.due
                )
                if version < 0:
                    raise self._refused(name, version)
                return summary(name, Status.PENDING, device=device)
            change = self._first_token(spec, reason="updated")
            # The stored refresh token was just spent: the answer is the only live one, so it is written
            # as a refresh writes it (rides out a Redis restart, on disk and replicas before we answer).
            version = write_answer(rt, lock, record, change, extra_fields=base)
            if version < 0:
                raise self._refused(name, version, spent=spec.grant_type == "refresh_token")
            if spec.subject_integration != current.subject_integration:
                # Only now that the new spec is stored: a refused update leaves every link as it was.
                if current.subject_integration:
                    rt.store.depend(current.subject_integration, name, on=False)
                if spec.subject_integration:
                    self._follow_subject(name, spec.subject_integration)
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
            spec = stored_spec(record, self.rt.box)
            result.update(self._revoke(spec, store.token(name)))
            if spec.subject_integration:
                store.depend(spec.subject_integration, name, on=False)
            if not store.delete(name):
                raise NotFoundError(f"no integration named {name!r}")
            return result
        finally:
            if lock is not None:
                store.release(lock)

    def _follow_subject(self, name: str, subject: str) -> None:
        # Not fatal: without the link the exchange still happens at its own plan, only not at once.
        if not self.rt.store.depend(subject, name):
            log.warning("%s exchanges %s's token, which no longer exists", name, subject)

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
