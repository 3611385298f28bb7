"""The refresh engine: one single-flight refresh of one integration.

Single flight holds across workers, duplicate deliveries and a second beat: a
lock with an owner token (released by compare-and-delete), and a write accepted
only if the stored version is still the one this refresh started from. So a
rotated refresh token is used once, and a late writer never overwrites a newer
token with an older one; a writer whose lock lapsed under a slow answer still
keeps its rotated token while nobody wrote since.

Taking the lock also journals the attempt (which refresh token, since when), so
an attempt that dies between the provider's answer and our write is known to the
next one, and to the operator.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from workers.engine.guarded import write_answer
from workers.engine.journal import Fingerprints, describe_lost, lost_attempt
from workers.engine.outcomes import Change, history_entry, request_failed, token_obtained
from workers.engine.runtime import Runtime
from workers.engine.spec import spec_from_stored
from workers.errors import NotFoundError, ProviderError, StateError, TokenkeeperError
from workers.ops.metrics import RefreshMetrics
from workers.store import WRITE_DELETED, WRITE_LOST_LOCK, IntegrationRecord, Lock, Status

log = logging.getLogger(__name__)

T = TypeVar("T")

# Plans travel as JSON floats and Redis scores; they compare equal within this.
_PLANNED_TOLERANCE = 0.001

# A batch's refreshes run one after another on one thread while they are quick (threads
# would only fight over the GIL). When none has finished for BATCH_PATIENCE seconds (a
# provider hanging), another thread takes up the rest, up to BATCH_THREADS: a provider that
# hangs for its whole deadline holds one thread, and the batch goes on on the others. Each
# refresh is still single-flight (its own lock) with its own deadline.
BATCH_THREADS = 8
BATCH_PATIENCE = 0.2

# last_error of an integration whose refresh raised something that is not ours.
UNEXPECTED_ERROR = "internal_error"


@dataclass(frozen=True)
class RefreshResult:
    name: str
    outcome: str  # refreshed | retrying | needs_reauth | busy | skipped | superseded | deferred
    status: str
    expires_at: str = ""
    detail: str = ""
    written: bool = field(default=False, repr=False, compare=False)
    # Set when the provider was asked: seconds the request took, and how late it went out against its plan.
    duration: float | None = field(default=None, repr=False, compare=False)
    lateness: float | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, str]:
        result = {"name": self.name, "outcome": self.outcome, "status": self.status}
        if self.expires_at:
            result["expires_at"] = self.expires_at
        if self.detail:
            result["detail"] = self.detail
        return result


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
        result = self._refresh(name, planned_at)
        self._report(result)
        return result

    def refresh_batch(self, items: Sequence[tuple[str, float]]) -> list[RefreshResult | None]:
        """Scheduled refreshes that start together, their network waits overlapping.

        One result per item, in order; None where the refresh could not be carried out
        (the integration was deleted meanwhile, Redis failed): logged, and the others go on.
        """
        if len(items) <= 1:
            return [self._one_of_batch(name, planned_at) for name, planned_at in items]
        return run_overlapping([partial(self._one_of_batch, name, planned_at) for name, planned_at in items])

    def _one_of_batch(self, name: str, planned_at: float) -> RefreshResult | None:
        try:
            return self.refresh(name, planned_at=planned_at)
        except TokenkeeperError as exc:
            # One integration's trouble (deleted meanwhile, say) must not hold up the rest.
            log.warning("scheduled refresh of %s: %s", name, exc)
        except Exception as exc:  # noqa: BLE001 -- any failure is one integration's, logged by type
            # Not even its failure could be written (Redis gone, say): the tick queues it again once lost.
            log.error("scheduled refresh of %s failed: %s", name, type(exc).__name__)
        return None

    def _report(self, result: RefreshResult) -> None:
        """One log line and the metrics for each refresh."""
        if not result.written:
            # A written result was counted by the write itself.
            self.metrics.record(result.outcome, result.duration, result.lateness)
        if result.duration is None:
            log.debug("refresh %s: %s (%s)", result.name, result.outcome, result.detail or "no request made")
            return
        late = "" if result.lateness is None else f", {result.lateness:.3f}s late"
        level = logging.INFO if result.outcome == "refreshed" else logging.WARNING
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

    def _refresh(self, name: str, planned_at: float | None) -> RefreshResult:
        store = self.rt.store
        lock, record = store.acquire_and_load(name, self.rt.settings.lock_ttl, self.rt.clock())
        result: RefreshResult | None = None
        try:
            if record is None:
                raise NotFoundError(f"no integration named {name!r}")
            if lock is None:
                return RefreshResult(name, "busy", record.status, detail="another refresh is under way")
            if planned_at is not None and _superseded(record, planned_at):
                return RefreshResult(name, "superseded", record.status)
            if record.status in (Status.NEEDS_REAUTH, Status.PENDING):
                if planned_at is not None:
                    return RefreshResult(name, "skipped", record.status, detail=record.reason)
                raise StateError(
                    f"integration {name!r} is {record.status}: update or re-authorize it first"
                    + (f" ({record.reason})" if record.reason else "")
                )
            if planned_at is None and _backing_off(record, self.rt.clock()):
                # A forced refresh waits for the backoff (and Retry-After) like the schedule does:
                # during an outage every reader wanting a fresh token would otherwise call again.
                return RefreshResult(
                    name, "deferred", record.status, expires_at=record.expires_at, detail=record.reason
                )
            try:
                result = self._refresh_locked(lock, record, planned_at)
            except Exception as exc:  # noqa: BLE001 -- written as this integration's failure, never lost
                # Secrets no key opens, a number out of range, Redis failing mid-way: this integration
                # retries with backoff and says why; the caller's other work goes on.
                result = self._unexpected(lock, record, exc)
            return result
        finally:
            # An accepted write released the lock in the same step.
            if lock is not None and not (result is not None and result.written):
                store.release(lock)

    def _refresh_locked(self, lock: Lock, record: IntegrationRecord, planned_at: float | None) -> RefreshResult:
        rt = self.rt
        secrets = rt.box.open(record.sealed_secrets)
        spec = spec_from_stored(record.public, secrets)
        now = rt.clock()
        try:
            if spec.grant_type == "client_credentials":
                response = rt.client.client_credentials(spec)
            else:
                refresh_token = secrets.get("refresh_token")
                if not refresh_token:
                    return self._no_refresh_token(lock, record)
                fingerprint = self.fingerprints.of(refresh_token)
                if fingerprint != record.refresh_fp:
                    # Not stored yet (first refresh after a creation or update): the journal names it now.
                    rt.store.journal_fingerprint(lock, fingerprint)
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
            return self._commit(lock, record, change, failed=error, timing=_Timing(now, self.rt.clock(), planned_at))
        if response.refresh_token and response.refresh_token != secrets.get("refresh_token"):
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
            return self._unexpected(lock, record, exc, sealed_secrets=sealed)
        if secrets.get("refresh_token"):
            change.fields["refresh_fp"] = self.fingerprints.of(secrets["refresh_token"])
        if planned_at is not None:
            # How late against the plan the request went out (negative: early): the scheduler's accuracy.
            change.fields["lateness"] = round(now - planned_at, 3)
        return self._commit(lock, record, change, timing=_Timing(now, done, planned_at))

    def _unexpected(
        self, lock: Lock, record: IntegrationRecord, exc: Exception, *, sealed_secrets: str | None = None
    ) -> RefreshResult:
        """``sealed_secrets``: what the provider's answer already replaced (a rotated refresh token), kept."""
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
        return self._commit(lock, record, change, failed=ProviderError(UNEXPECTED_ERROR, type(exc).__name__))

    def _no_refresh_token(self, lock: Lock, record: IntegrationRecord) -> RefreshResult:
        error = ProviderError("no_refresh_token", "the provider issued no refresh token; authorize again")
        change = request_failed(error, attempts=record.attempts, policy=self.rt.policy, now=self.rt.clock())
        return self._commit(lock, record, change, failed=error)

    def _commit(
        self,
        lock: Lock,
        record: IntegrationRecord,
        change: Change,
        failed: ProviderError | None = None,
        timing: _Timing | None = None,
    ) -> RefreshResult:
        lost = lost_attempt(record.attempt, record.lost_attempt)
        if lost:
            _explain_lost(change, lost, failed)
        status = change.fields["status"]
        outcome = status if failed is not None else "refreshed"
        duration = None if timing is None else max(0.0, timing.done - timing.started)
        lateness = None if timing is None or timing.planned_at is None else timing.started - timing.planned_at
        version = write_answer(
            self.rt,
            lock,
            record,
            change,
            release=True,
            # Counted in the same step as the write: no extra round trip per refresh.
            counters=self.metrics.increments(outcome, duration, lateness),
        )
        if version < 0:
            # Someone else changed it since we read it (our lock ran out): theirs stands.
            why = {WRITE_LOST_LOCK: "lock expired", WRITE_DELETED: "being deleted"}.get(version, "changed meanwhile")
            return RefreshResult(
                record.name, "superseded", record.status, detail=why, duration=duration, lateness=lateness
            )
        return RefreshResult(
            record.name,
            outcome,
            status,
            expires_at="" if failed else change.token["expires_at"],
            detail=change.fields["reason"] if failed else "",
            written=True,
            duration=duration,
            lateness=lateness,
        )


def run_overlapping(
    calls: Sequence[Callable[[], T]], threads: int = BATCH_THREADS, patience: float = BATCH_PATIENCE
) -> list[T | None]:
    """Run ``calls`` in order on one thread, adding a thread whenever none finished for ``patience`` s.

    Returns their results in order (None for one whose thread died under it). ``calls`` must not raise.
    """
    results: list[T | None] = [None] * len(calls)
    pending = deque(enumerate(calls))
    progress = threading.Condition()
    finished = 0

    def drain() -> None:
        nonlocal finished
        while True:
            with progress:
                if not pending:
                    return
                index, call = pending.popleft()
            results[index] = call()
            with progress:
                finished += 1
                if finished == len(calls):
                    # Only the end wakes the watcher: a wake-up per call would cost the quick path.
                    progress.notify_all()

    started: list[threading.Thread] = []

    def start() -> None:
        thread = threading.Thread(target=drain, name=f"tokenkeeper-refresh-{len(started)}", daemon=True)
        started.append(thread)
        thread.start()

    start()
    with progress:
        while finished < len(calls) and (pending or any(thread.is_alive() for thread in started)):
            seen = finished
            progress.wait(patience)
            alive = sum(1 for thread in started if thread.is_alive())
            # No call finished for a whole patience: one is hanging; take up the rest on another thread.
            if pending and ((finished == seen and alive < threads) or alive == 0):
                start()
    for thread in started:
        thread.join()
    return results


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
