"""Drive an edition's pending batches through a backend, writing the ledger as they go.

The calling thread claims pending batches in the database a page at a time (memory
does not grow with the list; other instances sending the same edition claim other
batches: ``record.claim``) into a short queue; ``workers`` threads take them, each
with its own sender (one SMTP connection, one SendGrid client) kept for the edition.
For each batch a worker:

1. *prepares* it (builds the messages or the request body: pure work, no I/O);
2. commits it as ``sending`` in its own transaction;
3. *delivers* it, retrying transient failures with exponential backoff and jitter, or
   after the wait the server asked for (a 429's reset time is honoured by every
   worker, not only the one that met it, and with ``hold`` by every instance on the
   database: ``state/throttle.py``); and gives up after ``retries``;
4. commits the outcome: ``sent`` (with the provider's id), ``failed`` (with the
   reason), or back to ``pending`` when a fatal error stopped the edition.

While one worker waits for the network, another prepares its next batch, so the
request for batch n+1 is built while batch n is in flight.

A fatal error (bad credentials, refused sender, a rate limit asking for a longer wait
than ``max_wait``) stops the edition: batches not yet started stay ``pending`` and the
next run resumes them. A request that went out but got no answer (``UnansweredError``)
is retried when ``retry_unanswered`` (the default, as SendGrid advises for timeouts);
otherwise it is recorded ``unknown``, like a batch a crash interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import faults
from ..clock import utcnow
from ..errors import PermanentDeliveryError, TransientDeliveryError, UnansweredError
from ..model import Batch, BatchResult, BatchStatus, Composed
from ..state import fleet, record, throttle
from ..state.lease import holder_name
from .base import Backend, Sender

log = logging.getLogger(__name__)
#: Recipients claimed and loaded from the database at a time (at least one batch)...
PAGE_RECIPIENTS = 2000
#: ...and at most this many batches: what one instance holds and others cannot take
#: stays small (a page of 2,000 one-message SMTP batches would keep the other instances
#: of a fleet waiting at the end of an edition).
PAGE_BATCHES = 32


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    workers: int = 1
    retries: int = 3
    backoff: float = 2.0
    #: The longest wait worth holding the run for (a retry, a rate limit's reset).
    max_wait: float = 300.0
    #: Retry a request that went out but got no answer (it may then arrive twice).
    retry_unanswered: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], datetime] = field(default=utcnow, compare=False)
    monotonic: Callable[[], float] = field(default=time.monotonic, compare=False)
    should_stop: Callable[[], bool] = field(default=lambda: False, compare=False)
    on_progress: Callable[[int], None] | None = field(default=None, compare=False)
    #: At most this many recipients in this dispatch (the warm-up's allowance for
    #: today); the batches past it stay pending. None: no limit.
    limit: int | None = None
    #: A provider's "wait until" shared with every instance on the database (a 429
    #: met by one holds all); None: this process's workers only.
    hold: throttle.Hold | None = field(default=None, compare=False)
    #: Who claims the batches and is recorded as their sender (``batches.sent_by``): the
    #: ``fleet.Instance`` id, whose heartbeat renews the claims. None: a name of this
    #: dispatch's own, its claims renewed by a thread of its own.
    holder: str | None = None


@dataclass(frozen=True, slots=True)
class Dispatched:
    batches: int
    #: Why the edition stopped before every batch was tried, if it did.
    stopped: str | None = None
    #: Batches were left pending because ``limit`` was reached.
    capped: bool = False


class _Shared:
    """What the workers share: the stop flag, the rate-limit gate, counters, a bug."""

    def __init__(self, settings: DispatchSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.stopped: str | None = None
        self.bug: BaseException | None = None
        self.done = 0
        self.until = 0.0  # no request before this (monotonic): a 429 holds everyone

    def stop(self, reason: str) -> None:
        with self.lock:
            if self.stopped is None:
                self.stopped = reason

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.bug = self.bug or exc
            if self.stopped is None:
                self.stopped = f"stopped by an internal error: {exc!r}"

    def hold(self, seconds: float, reason: str | None = None) -> None:
        with self.lock:
            self.until = max(self.until, self.settings.monotonic() + seconds)
        fleet = self.settings.hold
        if fleet is not None:  # every instance on the database waits too
            fleet.set(self.settings.clock().timestamp() + seconds, reason)

    def wait_gate(self) -> None:
        left = self.until - self.settings.monotonic()
        fleet = self.settings.hold
        if fleet is not None:  # held by another instance (read at most once a second)
            left = max(left, fleet.left(self.settings.clock().timestamp()))
        if left > 0:
            self.settings.sleep(min(left, self.settings.max_wait))

    def settled(self, result: BatchResult) -> None:
        with self.lock:
            self.done += 1
            if result.fatal and self.stopped is None:
                self.stopped = f"stopped: {result.detail}"
            if self.settings.on_progress and result.status is not BatchStatus.PENDING:
                self.settings.on_progress(len(result.batch.recipients))


def dispatch(
    engine: sa.Engine,
    backend: Backend,
    composed: Composed,
    settings: DispatchSettings,
    variants: Mapping[int, Composed] | None = None,
) -> Dispatched:
    """Send the edition's pending batches: ``composed`` to batches of variant 0, and
    ``variants[n]`` to those of variant n. The batches are claimed a page at a time
    (``record.claim``) as ``settings.holder``, so other instances sending the same
    edition take other batches; the claims not started when it stops are given back."""
    edition_id = composed.edition_id
    contents = {**(variants or {}), 0: composed}
    shared = _Shared(settings)
    holder = settings.holder or holder_name()
    workers = max(1, settings.workers)
    jobs: queue.Queue[Batch | None] = queue.Queue(maxsize=workers * 2)
    threads = [
        threading.Thread(
            target=_work,
            args=(engine, backend, contents, shared, jobs, holder),
            name=f"digest-send-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    started = False
    left = settings.limit
    capped = False
    renewing = _renewing(engine, holder, settings) if settings.holder is None else None
    with _fewer_collections(), renewing or contextlib.nullcontext():
        try:
            page = max(workers * 2, min(PAGE_RECIPIENTS // backend.batch_size, PAGE_BATCHES))
            for batch in claimed(engine, edition_id, holder, page, settings.clock):
                if left is not None:
                    if len(batch.recipients) > left:
                        capped = True  # this one and the rest wait for the next day
                        break
                    left -= len(batch.recipients)
                if not started:
                    for thread in threads:
                        thread.start()
                    started = True
                if settings.should_stop():
                    shared.stop("asked to stop: unsent batches stay pending for the next run")
                while shared.stopped is None:
                    try:
                        jobs.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if shared.stopped is not None:
                    break
        finally:
            if started:
                for _ in threads:
                    jobs.put(None)
                for thread in threads:
                    thread.join()
            _give_back(engine, edition_id, holder)
    if shared.bug is not None:
        raise shared.bug
    return Dispatched(shared.done, shared.stopped, capped)


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Building a request makes ~10,000 small containers and none of them form cycles;
    with the default thresholds the cyclic collector would run every 700 of them and
    rescan whatever is alive. Ask for collections less often while sending."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], 50_000), before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def claimed(
    engine: sa.Engine, edition_id: int, holder: str, page: int, clock: Callable[[], datetime]
) -> Iterator[Batch]:
    """The edition's pending batches that ``holder`` claims, in order, ``page`` at a time,
    until none is left to claim. What gone instances left is swept first, and again
    whenever nothing is left to claim (one may have died since)."""
    sweep = True
    while True:
        with engine.begin() as conn:
            if sweep:
                swept(record.sweep(conn, edition_id, clock(), mine=holder), edition_id)
            numbers = record.claim(conn, edition_id, holder, page, clock())
            batches = record.load_batches(conn, edition_id, numbers)
        if not batches:
            if sweep:
                return
            sweep = True
            continue
        sweep = False
        yield from batches


def swept(unknown: int, edition_id: int) -> None:
    """Log the recipients a sweep made unknown, if any."""
    if unknown:
        log.warning(
            "edition %s: %s recipients in batches interrupted mid-send (their sender is "
            "gone) are marked unknown, not re-sent",
            edition_id,
            unknown,
        )


def _give_back(engine: sa.Engine, edition_id: int, holder: str) -> None:
    try:
        with engine.begin() as conn:
            record.give_back(conn, edition_id, holder)
    except Exception:  # the claims expire by themselves
        log.warning("edition %s: could not give back the claims of %s", edition_id, holder)


@contextlib.contextmanager
def _renewing(engine: sa.Engine, holder: str, settings: DispatchSettings) -> Iterator[None]:
    """Renew ``holder``'s claims while sending, when no ``fleet.Instance`` beats for it."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(fleet.BEAT.total_seconds()):
            with contextlib.suppress(Exception), engine.begin() as conn:  # next beat
                fleet.renew_claims(conn, holder, settings.clock())

    thread = threading.Thread(target=beat, name="digest-claims", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _work(
    engine: sa.Engine,
    backend: Backend,
    contents: Mapping[int, Composed],
    shared: _Shared,
    jobs: queue.Queue[Batch | None],
    holder: str,
) -> None:
    settings = shared.settings
    sender: Sender | None = None
    variant = 0  # what ``sender`` sends
    try:
        while (batch := jobs.get()) is not None:
            if shared.stopped is None and settings.should_stop():  # SIGTERM: queued batches
                shared.stop("asked to stop: unsent batches stay pending for the next run")
            if shared.stopped is not None:
                continue  # left pending: the next run sends it
            try:
                if sender is not None and batch.variant != variant:
                    # Batches come in order, each variant's together: one switch each.
                    _close(sender)
                    sender = None
                if sender is None:
                    variant = batch.variant
                    if variant not in contents:
                        raise KeyError(f"edition {batch.edition_id} has no variant {variant}")
                    sender = backend.open(contents[variant])
                prepared = sender.prepare(batch)
                with engine.begin() as conn:
                    mine = record.start(
                        conn, batch.edition_id, batch.number, holder, settings.clock()
                    )
            except PermanentDeliveryError as exc:  # from open(): nothing was sent
                shared.stop(f"stopped: {exc}")
                log.error("edition %s stopped: %s", batch.edition_id, exc)
                continue
            except BaseException as exc:  # a bug, or the database failed: nothing was sent
                shared.fail(exc)
                continue
            if not mine:  # the claim lapsed and another instance took the batch
                log.warning(
                    "edition %s: batch %s was taken over by another instance (this one's "
                    "claim lapsed): not sent here",
                    batch.edition_id,
                    batch.number,
                )
                continue
            faults.point("batch-marked-sending")
            try:
                result = _attempt(sender, batch, prepared, shared)
            except BaseException as exc:  # a bug while sending: it may have gone out
                result = BatchResult(
                    batch, BatchStatus.UNKNOWN, detail=f"internal error: {exc!r}", attempts=1
                )
                shared.fail(exc)
            try:
                _record(engine, result, settings, holder)
            except BaseException as exc:  # left "sending": the next run reports it unknown
                shared.fail(exc)
                continue
            faults.point("between-batches")
            try:
                shared.settled(result)  # calls the progress display: never let it kill us
            except BaseException as exc:
                shared.fail(exc)
            if result.fatal:
                log.error("edition %s stopped: %s", batch.edition_id, result.detail)
    finally:
        if sender is not None:
            _close(sender)


def _close(sender: Sender) -> None:
    try:
        sender.close()
    except Exception:
        log.debug("closing the sender failed", exc_info=True)


def _record(
    engine: sa.Engine, result: BatchResult, settings: DispatchSettings, holder: str
) -> None:
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
            relay=result.relay,
            holder=holder,
        )
        if result.rejected:
            record.reject(conn, batch.edition_id, result.rejected)


def _attempt(sender: Sender, batch: Batch, prepared: Any, shared: _Shared) -> BatchResult:
    result = _attempts(sender, batch, prepared, shared)
    relay = getattr(prepared, "relay", None)  # SMTP: the relay(s) that answered for it
    return dataclasses.replace(result, relay=relay) if relay else result


def _attempts(sender: Sender, batch: Batch, prepared: Any, shared: _Shared) -> BatchResult:
    settings = shared.settings
    attempt = 0
    waited = False  # this worker just waited out the gate it set itself
    uncertain = False  # an earlier attempt went out unanswered: it may have arrived
    while True:
        attempt += 1
        if not waited:
            shared.wait_gate()
        waited = False
        try:
            sent = sender.deliver(prepared)
            return BatchResult(
                batch,
                BatchStatus.SENT,
                provider_id=sent.provider_id,
                attempts=attempt,
                rejected=dict(sent.rejected),
            )
        except UnansweredError as exc:
            if not settings.retry_unanswered:
                return BatchResult(
                    batch,
                    BatchStatus.UNKNOWN,
                    attempts=attempt,
                    detail=f"{exc}; not retried (delivery.retry_unanswered = false): check "
                    "the provider's log, and `digest resend --unknown` if it did not arrive",
                )
            uncertain = True
            if attempt > settings.retries:
                return _gave_up(batch, attempt, exc, uncertain)
            delay = _backoff(settings, attempt)
            log.warning("batch %s: %s; retrying in %.1fs", batch.number, exc, delay)
            settings.sleep(delay)
        except TransientDeliveryError as exc:
            if attempt > settings.retries:
                return _gave_up(batch, attempt, exc, uncertain)
            if exc.retry_after is not None:
                delay = exc.retry_after
                if delay > settings.max_wait and not uncertain:  # a quota: come back later
                    return BatchResult(
                        batch,
                        BatchStatus.PENDING,
                        attempts=attempt,
                        fatal=True,
                        detail=f"{exc}; asked to wait {delay:.0f}s, more than "
                        f"delivery.max_retry_wait ({settings.max_wait:.0f}s): the unsent "
                        "batches stay pending for the next run",
                    )
                delay = min(delay, settings.max_wait)
                shared.hold(delay, str(exc))
                waited = True
            else:
                delay = _backoff(settings, attempt)
            log.warning("batch %s: %s; retrying in %.1fs", batch.number, exc, delay)
            settings.sleep(max(delay, 0.0))
        except PermanentDeliveryError as exc:
            if uncertain:  # refused now, but an earlier attempt may have arrived
                return _gave_up(batch, attempt, exc, uncertain, fatal=exc.fatal)
            if exc.fatal:  # refused before anything was accepted: not sent, try again later
                return BatchResult(
                    batch, BatchStatus.PENDING, detail=str(exc), fatal=True, attempts=attempt
                )
            return BatchResult(batch, BatchStatus.FAILED, detail=str(exc), attempts=attempt)


def _backoff(settings: DispatchSettings, attempt: int) -> float:
    delay: float = settings.backoff * 2.0 ** (attempt - 1) * (0.5 + random.random())
    return min(delay, settings.max_wait)


def _gave_up(
    batch: Batch, attempt: int, exc: Exception, uncertain: bool, fatal: bool = False
) -> BatchResult:
    if uncertain:  # an attempt got no answer: it may have arrived, so never "failed"
        return BatchResult(
            batch,
            BatchStatus.UNKNOWN,
            attempts=attempt,
            fatal=fatal,
            detail=f"{exc} (gave up after {attempt} attempts; one went out unanswered "
            "and may have arrived: check the provider's log)",
        )
    return BatchResult(
        batch,
        BatchStatus.FAILED,
        attempts=attempt,
        detail=f"{exc} (gave up after {attempt} attempts)",
    )
