"""The refresh engine: single-flight refreshes, one forced or a scheduled batch at a time.

Single flight holds across workers, duplicate deliveries and a second beat: a
lock with an owner token (released by compare-and-delete), and a write accepted
only if the stored version is still the one this refresh started from. So a
rotated refresh token is used once, and a late writer never overwrites a newer
token with an older one; a writer whose lock lapsed under a slow answer still
keeps its rotated token while nobody wrote since.

Taking the lock also journals the attempt (which refresh token, since when), so
an attempt that dies between the provider's answer and our write is known to the
next one, and to the operator.

A batch shares its Redis round trips (every lock and record in one Lua call, the
answers written a group at a time) and overlaps its token requests
(:mod:`workers.engine.overlap`); a request that would go out late extends its lock
first, so no refresh token is sent by a refresh whose lock has passed on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from workers.engine.device import still_waiting
from workers.engine.exchange import obtain
from workers.engine.guarded import Answer, write_answers
from workers.engine.journal import Fingerprints, describe_lost, lost_attempt
from workers.engine.outcomes import (
    Change,
    history_entry,
    request_failed,
    token_obtained,
    without_refresh_token,
)
from workers.engine.overlap import run_overlapping
from workers.engine.runtime import Runtime
from workers.engine.spec import STANDALONE_GRANTS, IntegrationSpec, spec_from_stored
from workers.errors import NotFoundError, ProviderError, StateError, StoredDataError, TokenkeeperError
from workers.ops.metrics import RefreshMetrics
from workers.store import WRITE_DELETED, WRITE_FAILED, WRITE_LOST_LOCK, IntegrationRecord, Lock, Status

log = logging.getLogger(__name__)

# Plans travel as JSON floats and Redis scores; they compare equal within this.
_PLANNED_TOLERANCE = 0.001

# A batch's request that goes out later than this before its lock would run out during it extends the lock.
LOCK_MARGIN = 2.0

# last_error of an integration whose refresh raised something that is not ours.
UNEXPECTED_ERROR = "internal_error"


@dataclass(frozen=True)
class RefreshResult:
    name: str
    # refreshed | retrying | needs_reauth | busy | skipped | superseded | deferred; a device grant's poll:
    # waiting (the person has not finished) | authorized (the first token)
    outcome: str
    status: str
    expires_at: str = ""
    detail: str = ""
    written: bool = field(default=False, repr=False, compare=False)
    # Set when the provider was asked: seconds the request took, and how late it went out against its plan.
    duration: float | None = field(default=None, repr=False, compare=False)
    lateness: float | None = field(default=None, repr=False, compare=False)
    grant_type: str = field(default="", repr=False, compare=False)
    # When the token request went out (the shared clock), where one was made: for its trace span.
    requested_at: float | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, str]:
        result = {"name": self.name, "outcome": self.outcome, "status": self.status}
        if self.expires_at:
            result["expires_at"] = self.expires_at
        if self.detail:
            result["detail"] = self.detail
        return result


@dataclass(frozen=True)
class _Job:
    """A refresh holding its lock, about to ask the provider."""

    lock: Lock
    record: IntegrationRecord
    planned_at: float | None
    taken_at: float  # when the lock was taken (the shared clock)


@dataclass(frozen=True)
class _Abandoned:
    """A refresh that could neither ask nor write (its failure could not even be described): lock to release."""

    lock: Lock


@dataclass(frozen=True)
class _Answer:
    """What asking the provider came to, to be written: the change, and the error when it failed."""

    job: _Job
    change: Change
    failed: ProviderError | None = None
    timing: _Timing | None = None
    # Where it is neither "refreshed" nor the status the failure led to: a device poll ("waiting", "authorized").
    outcome: str | None = None


class Refresher:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.metrics = RefreshMetrics(runtime.store)
        self.fingerprints = Fingerprints(runtime.settings.secret_keys)

    def refresh(self, name: str, planned_at: float | None = None) -> RefreshResult:
        """Refresh ``name`` now, unless another refresh holds it or it was already done.

        ``planned_at`` marks a refresh queued by the scheduler: it is dropped when
        a newer plan exists (a duplicate delivery, or a refresh forced meanwhile).
        Without it the refresh is forced (a producer asked for it).
        """
        result = self._run([(name, planned_at)], alone=True)[0]
        if result is None:
            # Alone, a refresh that cannot be carried out raises; this one failed past describing (logged).
            raise StateError(f"the refresh of {name!r} failed unexpectedly; it is tried again as planned")
        return result

    def refresh_batch(self, items: Sequence[tuple[str, float]]) -> list[RefreshResult | None]:
        """Scheduled refreshes that start together: one Redis round trip takes every lock and reads every
        integration, the token requests overlap, and the answers are written in groups as they come.

        One result per item, in order; None where the refresh could not be carried out
        (the integration was deleted meanwhile, Redis failed): logged, and the others go on.
        """
        if not items:
            return []
        try:
            return self._run(items, alone=False)
        except Exception as exc:  # noqa: BLE001 -- Redis failed before any lock was taken: nothing to undo
            log.error("scheduled refreshes of %d integrations failed: %s", len(items), type(exc).__name__)
            return [None] * len(items)

    def _run(self, items: Sequence[tuple[str, float | None]], *, alone: bool) -> list[RefreshResult | None]:
        """Refresh ``items``; ``alone``: one forced or scheduled refresh whose failures are raised, not logged."""
        store = self.rt.store
        taken_at = self.rt.clock()
        loaded = store.acquire_and_load_many([name for name, _ in items], self.rt.settings.lock_ttl, taken_at)
        results: list[RefreshResult | None] = [None] * len(items)
        jobs: dict[int, _Job] = {}
        unneeded: list[Lock] = []
        for index, ((name, planned_at), taken) in enumerate(zip(items, loaded, strict=True)):
            if isinstance(taken, Exception):
                if alone:
                    raise taken
                log.error("scheduled refresh of %s: %s", name, taken)
                continue
            lock, record = taken
            try:
                prepared = self._prepare(name, planned_at, lock, record, taken_at)
            except TokenkeeperError as exc:
                if alone:
                    if lock is not None:
                        store.release(lock)
                    raise
                # One integration's trouble (deleted meanwhile, say) must not hold up the rest.
                log.warning("scheduled refresh of %s: %s", name, exc)
                prepared = None
            if isinstance(prepared, _Job):
                jobs[index] = prepared
                continue
            results[index] = prepared
            if lock is not None:
                unneeded.append(lock)
        if unneeded:
            self._release(unneeded, alone=alone)
        if len(jobs) == 1:
            ((index, job),) = jobs.items()
            results[index] = self._finish([self._ask(job)], alone=alone)[0]
        elif jobs:
            order = list(jobs)
            asks = [partial(self._ask, jobs[index]) for index in order]
            # Every group is finished, whatever became of the one before: its answers exist only here.
            for finished in run_overlapping(asks):
                try:
                    done = self._finish([asked for _, asked in finished], alone=False)
                except Exception as exc:  # noqa: BLE001 -- logged by type; the next group goes on
                    log.error("storing %d refresh answers failed: %s", len(finished), type(exc).__name__)
                    continue
                for (position, _), result in zip(finished, done, strict=True):
                    results[order[position]] = result
        for result in results:
            if result is not None:
                self._report(result)
        return results

    def _release(self, locks: Sequence[Lock], *, alone: bool) -> None:
        try:
            self.rt.store.release_many(locks)
        except Exception as exc:
            if alone:
                raise
            # The locks lapse by themselves (TOKENKEEPER_LOCK_TTL).
            log.error("releasing %d refresh locks failed: %s", len(locks), type(exc).__name__)

    def _prepare(
        self,
        name: str,
        planned_at: float | None,
        lock: Lock | None,
        record: IntegrationRecord | None,
        taken_at: float,
    ) -> RefreshResult | _Job | None:
        """What a refresh comes to before asking the provider: a result, or the job of asking it."""
        if record is None:
            raise NotFoundError(f"no integration named {name!r}")
        if lock is None:
            return RefreshResult(
                name, "busy", record.status, detail="another refresh is under way", grant_type=record.grant_type
            )
        if planned_at is not None and _superseded(record, planned_at):
            return RefreshResult(name, "superseded", record.status, grant_type=record.grant_type)
        if record.status == Status.PENDING and record.device and planned_at is not None:
            return _Job(lock, record, planned_at, taken_at)  # a device grant's poll (RFC 8628 §3.4)
        if record.status in (Status.NEEDS_REAUTH, Status.PENDING):
            if planned_at is not None:
                return RefreshResult(name, "skipped", record.status, detail=record.reason, grant_type=record.grant_type)
            raise StateError(
                f"integration {name!r} is {record.status}: update or re-authorize it first"
                + (f" ({record.reason})" if record.reason else "")
            )
        if planned_at is None and _backing_off(record, self.rt.clock()):
            # A forced refresh waits for the backoff (and Retry-After) like the schedule does:
            # during an outage every reader wanting a fresh token would otherwise call again.
            return RefreshResult(
                name,
                "deferred",
                record.status,
                expires_at=record.expires_at,
                detail=record.reason,
                grant_type=record.grant_type,
            )
        return _Job(lock, record, planned_at, taken_at)

    def _report(self, result: RefreshResult) -> None:
        """One log line and the metrics for each refresh."""
        if not result.written:
            # A written result was counted by the write itself.
            self.metrics.record(result.outcome, result.duration, result.lateness)
        if result.duration is None:
            log.debug("refresh %s: %s (%s)", result.name, result.outcome, result.detail or "no request made")
            return
        level = logging.INFO if result.outcome in ("refreshed", "authorized", "waiting") else logging.WARNING
        if not log.isEnabledFor(level):
            return  # at scale workers log warnings only: the line is not even built
        late = "" if result.lateness is None else f", {result.lateness:.3f}s late"
        log.log(
            level,
            "refresh %s: %s in %.3fs%s%s",
            result.name,
            result.outcome,
            result.duration,
            late,
            f" ({result.detail})" if result.detail and result.outcome != "refreshed" else "",
            extra={
                "integration": result.name,
                "outcome": result.outcome,
                "status": result.status,
                "duration": round(result.duration, 4),
                "lateness": None if result.lateness is None else round(result.lateness, 4),
            },
        )

    def _ask(self, job: _Job) -> _Answer | RefreshResult | _Abandoned:
        """Ask the provider for ``job``'s integration; never raises (what fails is written as its failure)."""
        try:
            if not self._lock_lasts(job):
                # Another refresh may hold it now: sending would spend the refresh token twice.
                return RefreshResult(
                    job.record.name,
                    "busy",
                    job.record.status,
                    detail="its lock ran out before the request went out",
                    grant_type=job.record.grant_type,
                )
            return self._ask_provider(job)
        except Exception as exc:  # noqa: BLE001 -- written as this integration's failure, never lost
            # Secrets no key opens, a number out of range, Redis failing mid-way: this integration
            # retries with backoff and says why; the batch's other work goes on.
            try:
                return self._unexpected(job, exc)
            except Exception as again:  # noqa: BLE001 -- nothing left to write; its type only, to our log
                log.error("refresh %s: unexpected %s", job.record.name, type(again).__name__)
                return _Abandoned(job.lock)

    def _lock_lasts(self, job: _Job) -> bool:
        """Whether ``job``'s lock outlasts its request: extended first when the request goes out late."""
        settings = self.rt.settings
        budget = settings.http_connect_timeout + settings.http_read_timeout
        now = self.rt.clock()
        if now - job.taken_at <= settings.lock_ttl - budget - LOCK_MARGIN:
            return True
        # A batch's requests waited behind slow ones: one round trip, only for these.
        if self.rt.store.extend(job.lock, settings.lock_ttl, now):
            return True
        # Too late: our journal entry goes (nothing was sent), the lock is someone else's or nobody's.
        self.rt.store.release(job.lock)
        return False

    def _ask_provider(self, job: _Job) -> _Answer:
        rt, record = self.rt, job.record
        secrets = rt.box.open(record.sealed_secrets)
        spec = spec_from_stored(record.public, secrets)
        if record.device:
            return self._poll_device(job, spec, secrets)
        now = rt.clock()
        try:
            if spec.grant_type in STANDALONE_GRANTS:
                response = obtain(rt, spec)
            else:
                refresh_token = secrets.get("refresh_token")
                if not refresh_token:
                    return self._no_refresh_token(job)
                fingerprint = self.fingerprints.of(refresh_token)
                if fingerprint != record.refresh_fp:
                    # Not stored yet (first refresh after a creation or update): the journal names it now.
                    rt.store.journal_fingerprint(job.lock, fingerprint)
                response = rt.client.refresh(spec, refresh_token)
        except ProviderError as error:
            change = request_failed(
                error,
                attempts=record.attempts,
                policy=rt.policy,
                now=rt.clock(),
                last_error=record.last_error,
                unclear_since=record.unclear_since,
            )
            return _Answer(job, change, failed=error, timing=_Timing(now, self.rt.clock(), job.planned_at))
        if (
            response.refresh_token
            and response.refresh_token != secrets.get("refresh_token")
            and spec.grant_type not in STANDALONE_GRANTS  # they ask afresh every time: a refresh token is not kept
        ):
            secrets = {**secrets, "refresh_token": response.refresh_token}
            sealed = rt.box.seal(secrets)
        else:
            sealed = record.sealed_secrets
        done = rt.clock()
        try:
            change = token_obtained(
                response,
                sealed_secrets=sealed,
                requested_scopes=spec.scopes,
                policy=rt.policy,
                now=done,
                reason="refreshed",
                holds_refresh_token=bool(secrets.get("refresh_token")),
            )
        except Exception as exc:  # noqa: BLE001 -- the provider has rotated: its new token is kept whatever failed
            return self._unexpected(job, exc, sealed_secrets=sealed)
        if sealed == record.sealed_secrets:
            # Unchanged: not sent again (a few hundred bytes less for every refresh to encode and Redis to rewrite).
            del change.fields["secrets"]
        if secrets.get("refresh_token"):
            fingerprint = self.fingerprints.of(secrets["refresh_token"])
            if fingerprint != record.refresh_fp:
                change.fields["refresh_fp"] = fingerprint
        if job.planned_at is not None:
            # How late against the plan the request went out (negative: early): the scheduler's accuracy.
            change.fields["lateness"] = round(now - job.planned_at, 3)
        return _Answer(job, change, timing=_Timing(now, done, job.planned_at))

    def _poll_device(self, job: _Job, spec: IntegrationSpec, secrets: Mapping[str, str]) -> _Answer:
        """Ask whether the person has finished (RFC 8628 §3.4); the next poll, the end, or the first token."""
        rt, device = self.rt, job.record.device
        now = rt.clock()
        device_code = secrets.get("device_code")
        if not device_code or now >= float(device["expires_at"]):
            change = still_waiting(None, device, now)
            return _Answer(job, change, failed=ProviderError("expired_token", change.fields["reason"]))
        try:
            response = rt.client.poll_device(spec, device_code)
        except ProviderError as error:
            change = still_waiting(error, device, rt.clock(), job.record.attempts)
            timing = _Timing(now, rt.clock(), job.planned_at)
            if change.fields["status"] == Status.NEEDS_REAUTH:
                return _Answer(job, change, failed=error, timing=timing)
            return _Answer(job, change, failed=error, timing=timing, outcome="waiting")
        kept = {key: value for key, value in secrets.items() if key != "device_code"}
        if response.refresh_token:
            kept["refresh_token"] = response.refresh_token
        change = token_obtained(
            response,
            sealed_secrets=rt.box.seal(kept),
            requested_scopes=spec.scopes,
            policy=rt.policy,
            now=rt.clock(),
            reason="authorized on the device",
            holds_refresh_token=bool(response.refresh_token),
        )
        change.fields["device"] = ""
        if response.refresh_token:
            change.fields["refresh_fp"] = self.fingerprints.of(response.refresh_token)
        else:
            change, note = without_refresh_token(change, response)
            # Nobody is on a page to read it: the reason says it (status page, show).
            change.fields["reason"] = change.history["reason"] = f"authorized on the device; {note}"
        return _Answer(job, change, timing=_Timing(now, rt.clock(), job.planned_at), outcome="authorized")

    def _unexpected(self, job: _Job, exc: Exception, *, sealed_secrets: str | None = None) -> _Answer:
        """``sealed_secrets``: what the provider's answer already replaced (a rotated refresh token), kept."""
        record = job.record
        # Ours say what is wrong without secrets; anyone else's text may quote one: its type only.
        what = f"{type(exc).__name__}: {exc}" if isinstance(exc, TokenkeeperError) else type(exc).__name__
        log.error("refresh %s: unexpected %s", record.name, what, extra={"integration": record.name})
        now = self.rt.clock()
        attempt = record.attempts + 1
        due = now + self.rt.policy.retry_delay(attempt)
        reason = (
            f"unexpected error ({what}); retry {attempt} at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(due))} UTC"
        )
        fields: dict[str, Any] = {
            "status": Status.RETRYING,
            "reason": reason,
            "status_at": now,
            "attempts": attempt,
            "refresh_at": due,
            "last_error": UNEXPECTED_ERROR,
        }
        if sealed_secrets is not None and sealed_secrets != record.sealed_secrets:
            fields["secrets"] = sealed_secrets
        change = Change(
            fields=fields,
            token={"status": Status.RETRYING, "updated_at": str(int(now))},
            history=history_entry(now, Status.RETRYING, reason),
            due=due,
        )
        return _Answer(job, change, failed=ProviderError(UNEXPECTED_ERROR, type(exc).__name__))

    def _no_refresh_token(self, job: _Job) -> _Answer:
        error = ProviderError("no_refresh_token", "the provider issued no refresh token; authorize again")
        change = request_failed(error, attempts=job.record.attempts, policy=self.rt.policy, now=self.rt.clock())
        return _Answer(job, change, failed=error)

    def _finish(
        self, asked: Sequence[_Answer | RefreshResult | _Abandoned], *, alone: bool
    ) -> list[RefreshResult | None]:
        """Write the answers among ``asked`` (one round trip); the results of all, in order."""
        answers = [item for item in asked if isinstance(item, _Answer)]
        abandoned = [item.lock for item in asked if isinstance(item, _Abandoned)]
        if abandoned:
            self._release(abandoned, alone=False)
        committed = iter(self._commit(answers, alone=alone) if answers else [])
        return [
            next(committed) if isinstance(item, _Answer) else item if isinstance(item, RefreshResult) else None
            for item in asked
        ]

    def _commit(self, answers: Sequence[_Answer], *, alone: bool) -> list[RefreshResult | None]:
        """Write ``answers`` (releasing their locks) in one round trip; their results in order."""
        written = [self._written(answer) for answer in answers]
        try:
            versions = write_answers(self.rt, [entry for entry, _ in written], release=True)
        except Exception as exc:
            # Redis gone past the write's patience: the tick queues these again once presumed lost.
            self._release([answer.job.lock for answer in answers], alone=False)
            if alone:
                raise
            log.error("storing %d refresh answers failed: %s", len(answers), type(exc).__name__)
            return [None] * len(answers)
        # A refused write released nothing: the lock (and its journal entry) go now.
        refused = [answer.job.lock for answer, version in zip(answers, versions, strict=True) if version < 0]
        if refused:
            self._release(refused, alone=False)
        results: list[RefreshResult | None] = []
        for (_, timing), answer, version in zip(written, answers, versions, strict=True):
            if version == WRITE_FAILED:
                unreadable = StoredDataError(
                    f"the answer for {answer.job.record.name!r} could not be stored: a stored value cannot be read"
                )
                if alone:
                    raise unreadable
                log.error("scheduled refresh of %s: %s", answer.job.record.name, unreadable)
                results.append(None)
            else:
                results.append(self._result(answer, version, timing))
        return results

    def _written(self, answer: _Answer) -> tuple[Answer, _Outcome]:
        change, failed, timing = answer.change, answer.failed, answer.timing
        lost = lost_attempt(answer.job.record.attempt, answer.job.record.lost_attempt)
        try:
            if lost and "reason" in change.fields:
                _explain_lost(change, lost, failed)
        except Exception as exc:  # noqa: BLE001 -- an unreadable journal must not keep the answer from being stored
            log.error("refresh %s: the attempt journal cannot be read (%s)", answer.job.record.name, type(exc).__name__)
        outcome = answer.outcome or (change.fields["status"] if failed is not None else "refreshed")
        duration = None if timing is None else max(0.0, timing.done - timing.started)
        lateness = None if timing is None or timing.planned_at is None else timing.started - timing.planned_at
        record = answer.job.record
        entry = Answer(
            answer.job.lock,
            record,
            change,
            # Counted in the same step as the write: no extra round trip per refresh.
            counters=tuple(self.metrics.increments(outcome, duration, lateness)),
            latest=tuple(self.metrics.latest(outcome, timing.done if timing is not None else self.rt.clock())),
            # An exchange of a token replaced meanwhile is due again once written.
            started=answer.job.taken_at if record.grant_type == "token_exchange" else None,
        )
        return entry, _Outcome(outcome, duration, lateness, None if timing is None else timing.started)

    def _result(self, answer: _Answer, version: int, timing: _Outcome) -> RefreshResult:
        outcome, duration, lateness, requested_at = timing
        record, change = answer.job.record, answer.change
        if version < 0:
            # Someone else changed it since we read it (our lock ran out): theirs stands.
            why = {WRITE_LOST_LOCK: "lock expired", WRITE_DELETED: "being deleted"}.get(version, "changed meanwhile")
            return RefreshResult(
                record.name,
                "superseded",
                record.status,
                detail=why,
                duration=duration,
                lateness=lateness,
                grant_type=record.grant_type,
                requested_at=requested_at,
            )
        obtained = outcome in ("refreshed", "authorized")
        return RefreshResult(
            record.name,
            outcome,
            change.fields.get("status", record.status),
            expires_at=change.token["expires_at"] if obtained else "",
            detail="" if obtained else change.fields.get("reason", record.reason),
            written=True,
            duration=duration,
            lateness=lateness,
            grant_type=record.grant_type,
            requested_at=requested_at,
        )


class _Outcome(NamedTuple):
    """What a written answer came to: its outcome, and the request's duration, lateness and start."""

    outcome: str
    duration: float | None
    lateness: float | None
    requested_at: float | None


@dataclass(frozen=True)
class _Timing:
    started: float  # when the token request went out
    done: float  # when its answer (or failure) was in
    planned_at: float | None  # the plan of a scheduled refresh


def _backing_off(record: IntegrationRecord, now: float) -> bool:
    # The retry time already honours Retry-After (workers.engine.outcomes.request_failed).
    return record.status == Status.RETRYING and record.refresh_at is not None and record.refresh_at > now


def _explain_lost(change: Change, lost: Mapping[str, Any], failed: ProviderError | None) -> None:
    """Say in the reason that an earlier attempt died after perhaps spending the refresh token."""
    crash = describe_lost(lost)
    if failed is not None and failed.error == "invalid_grant":
        reason = (
            f"{failed}: the refresh token was probably lost in a crash: {crash} (the provider had likely "
            "rotated it already); authorize again or paste a new refresh token"
        )
    elif failed is not None:
        reason = f"{change.fields['reason']}; {crash}"
    else:
        reason = f"{change.fields['reason']}; {crash}, but the provider still took the token it sent"
    change.fields["reason"] = reason
    change.history["reason"] = reason


def _superseded(record: IntegrationRecord, planned_at: float) -> bool:
    # A scheduled refresh carries the plan it was queued for; any other stored plan
    # means a refresh (or update) has happened since. Not an ordering: jitter may
    # put a newer plan before an older one.
    return record.refresh_at is None or abs(record.refresh_at - planned_at) > _PLANNED_TOLERANCE
