"""What every path that stores a provider's answer shares: how long its write rides out Redis being away,
and what becomes of tokens the write was refused (the integration is being deleted).

A refresh, an update and the authorization-code exchange all spend or receive a refresh token that exists
only in this process until written, so they all write with the same patience and durability
(workers.store.Store.write); a write refused because a deletion fenced the integration revokes what it got,
since nobody else will know of it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.engine.outcomes import Change
from workers.engine.runtime import Runtime
from workers.engine.spec import stored_spec
from workers.errors import ProviderError
from workers.store import WRITE_DELETED, IntegrationRecord, Lock, Write

log = logging.getLogger(__name__)


def write_patience(lock_ttl: float) -> float:
    """Seconds a write keeps retrying while Redis is unreachable (a restart, a failover)."""
    return min(10.0, lock_ttl / 2)


@dataclass(frozen=True)
class Answer:
    """A provider's answer to store: the change, on the integration as read under ``lock``.

    ``extra_fields`` are written with the change's own; ``marks`` (key, value, seconds to live) set,
    ``counters`` (hash, field, amount) added and ``latest`` (hash, field, time) kept where later, in the
    same step.
    """

    lock: Lock
    record: IntegrationRecord
    change: Change
    extra_fields: Mapping[str, Any] = field(default_factory=dict)
    marks: tuple[tuple[str, str, float], ...] = ()
    counters: tuple[tuple[str, str, float], ...] = ()
    started: float | None = None  # a token exchange's: when it began (see workers.store.Write)
    latest: tuple[tuple[str, str, float], ...] = ()


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
    """:func:`write_answers` of one."""
    answer = Answer(lock, record, change, dict(extra_fields or {}), tuple(marks), tuple(counters))
    return write_answers(rt, [answer], release=release)[0]


def write_answers(rt: Runtime, answers: Sequence[Answer], *, release: bool = False) -> list[int]:
    """Store providers' answers as every path must, in one round trip: patient while Redis is away, on disk
    (and replicas) before returning when one rotated a refresh token, and revoked when a deletion refused
    it. Returns the store's version for each (negative: refused, see ``workers.store.Store.write_many``);
    ``release`` drops each lock with its accepted write."""
    writes = [
        Write(
            answer.lock,
            answer.record.version,
            {**answer.extra_fields, **answer.change.fields},
            answer.change.token,
            answer.change.history,
            answer.change.due,
            release=release,
            counters=answer.counters,
            marks=answer.marks,
            started=answer.started,
            latest=answer.latest,
        )
        for answer in answers
    ]
    rotated = any(
        answer.change.fields.get("secrets", answer.record.sealed_secrets) != answer.record.sealed_secrets
        for answer in answers
    )
    versions = rt.store.write_many(writes, patience=write_patience(rt.settings.lock_ttl), durable=rotated)
    for answer, version in zip(answers, versions, strict=True):
        if version == WRITE_DELETED:
            # Fenced by a deletion: what we got is stored nowhere, so nobody else would revoke it.
            revoke_unkept(rt, answer.record, answer.change)
    follow_new_tokens(rt, answers, versions)
    return versions


def follow_new_tokens(rt: Runtime, answers: Sequence[Answer], versions: Sequence[int]) -> None:
    """Integrations exchanging a token just stored are due now (RFC 8693 subject_integration)."""
    names = [
        name
        for answer, version in zip(answers, versions, strict=True)
        if version >= 0 and answer.change.token.get("access_token")
        for name in answer.record.dependents
    ]
    if not names:
        return
    try:
        rt.store.follow(names, rt.clock(), rt.policy.min_interval)
    except Exception as exc:  # noqa: BLE001 -- they keep their own plan and exchange at it
        log.warning("making %d exchanging integrations due failed: %s", len(names), type(exc).__name__)


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
