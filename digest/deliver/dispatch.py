"""Drive an edition's pending batches through a backend, writing the ledger as they go.

The main thread owns the database: it loads a batch, marks it ``sending`` and commits,
and only then hands it to a worker; it records each outcome as it comes back. Workers
only talk to the backend (one sender each, kept for the edition), retry transient
failures with exponential backoff and jitter (or the server's ``Retry-After``), and
give up after ``retries``. A fatal error (bad credentials, refused sender) stops the
edition: the batch that met it goes back to ``pending``, like every batch not yet
started, and the next run resumes them.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from .. import faults, record
from ..errors import PermanentDeliveryError, TransientDeliveryError
from ..model import Batch, BatchResult, BatchStatus, Composed
from .base import Backend, Sender

log = logging.getLogger(__name__)
MAX_BACKOFF = 300.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    workers: int = 1
    retries: int = 3
    backoff: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], datetime] = field(default=_utcnow, compare=False)
    should_stop: Callable[[], bool] = field(default=lambda: False, compare=False)
    on_progress: Callable[[int], None] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Dispatched:
    batches: int
    #: Why the edition stopped before every batch was tried, if it did.
    stopped: str | None = None


def dispatch(
    engine: sa.Engine, backend: Backend, composed: Composed, settings: DispatchSettings
) -> Dispatched:
    edition_id = composed.edition_id
    with engine.connect() as conn:
        numbers = record.pending_batches(conn, edition_id)
    if not numbers:
        return Dispatched(0)
    jobs: queue.Queue[Batch | None] = queue.Queue()
    results: queue.Queue[BatchResult | BaseException] = queue.Queue()
    workers = max(1, min(settings.workers, len(numbers)))
    threads = [
        threading.Thread(
            target=_work,
            args=(backend, composed, settings, jobs, results),
            name=f"digest-send-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    stopped: str | None = None
    bug: BaseException | None = None
    in_flight = 0
    done = 0
    pending = iter(numbers)
    try:
        while True:
            while in_flight < workers and stopped is None and bug is None:
                if settings.should_stop():
                    stopped = "asked to stop: unsent batches stay pending for the next run"
                    break
                number = next(pending, None)
                if number is None:
                    break
                with engine.begin() as conn:
                    batch = record.load_batch(conn, edition_id, number)
                    record.mark(conn, edition_id, number, BatchStatus.SENDING, settings.clock())
                faults.point("batch-marked-sending")
                jobs.put(batch)
                in_flight += 1
            if in_flight == 0:
                break
            outcome = results.get()
            in_flight -= 1
            if isinstance(outcome, BaseException):
                bug = bug or outcome
                continue
            _record(engine, outcome, settings)
            done += 1
            faults.point("between-batches")
            if outcome.fatal and stopped is None:
                stopped = f"stopped: {outcome.detail}"
                log.error("edition %s stopped: %s", edition_id, outcome.detail)
            if settings.on_progress and outcome.status is not BatchStatus.PENDING:
                settings.on_progress(len(outcome.batch.recipients))
    finally:
        for _ in threads:
            jobs.put(None)
        for thread in threads:
            thread.join()
    if bug is not None:
        raise bug
    return Dispatched(done, stopped)


def _record(engine: sa.Engine, result: BatchResult, settings: DispatchSettings) -> None:
    batch = result.batch
    with engine.begin() as conn:
        record.mark(
            conn,
            batch.edition_id,
            batch.number,
            result.status,
            settings.clock(),
            provider_id=result.provider_id,
            detail=result.detail,
            attempts=result.attempts,
        )
        if result.rejected:
            record.reject(conn, batch.edition_id, result.rejected)


def _work(
    backend: Backend,
    composed: Composed,
    settings: DispatchSettings,
    jobs: queue.Queue[Batch | None],
    results: queue.Queue[BatchResult | BaseException],
) -> None:
    sender: Sender | None = None
    try:
        while (batch := jobs.get()) is not None:
            try:
                if sender is None:
                    sender = backend.open(composed)
                results.put(_attempt(sender, batch, settings))
            except PermanentDeliveryError as exc:  # from open(): nothing was sent
                results.put(
                    BatchResult(batch, BatchStatus.PENDING, detail=str(exc), fatal=True, attempts=0)
                )
            except BaseException as exc:  # a bug: it may have been sent, so record unknown
                results.put(
                    BatchResult(
                        batch, BatchStatus.UNKNOWN, detail=f"internal error: {exc!r}", attempts=1
                    )
                )
                results.put(exc)
    finally:
        if sender is not None:
            sender.close()


def _attempt(sender: Sender, batch: Batch, settings: DispatchSettings) -> BatchResult:
    attempt = 0
    while True:
        attempt += 1
        try:
            sent = sender.send(batch)
            return BatchResult(
                batch,
                BatchStatus.SENT,
                provider_id=sent.provider_id,
                attempts=attempt,
                rejected=dict(sent.rejected),
            )
        except TransientDeliveryError as exc:
            if attempt > settings.retries:
                return BatchResult(
                    batch,
                    BatchStatus.FAILED,
                    attempts=attempt,
                    detail=f"{exc} (gave up after {attempt} attempts)",
                )
            delay = exc.retry_after
            if delay is None:
                delay = settings.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
            log.warning("batch %s: %s; retrying in %.1fs", batch.number, exc, delay)
            settings.sleep(min(max(delay, 0.0), MAX_BACKOFF))
        except PermanentDeliveryError as exc:
            if exc.fatal:  # refused before anything was accepted: not sent, try again later
                return BatchResult(
                    batch, BatchStatus.PENDING, detail=str(exc), fatal=True, attempts=attempt
                )
            return BatchResult(batch, BatchStatus.FAILED, detail=str(exc), attempts=attempt)
