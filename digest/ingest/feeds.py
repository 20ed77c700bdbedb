"""Read every feed: fetch (concurrently) → parse → clean, with each feed's outcome a value.

Parsing runs in a process pool over all cores when there are enough feeds to pay for
it, overlapping with the fetching still under way: a feed is handed to the pool the
moment its body has arrived while a worker may be idle, and feeds that arrive while
the pool is behind go together as one task (``_Batches``). With a handful of feeds it
runs inline. The workers are forked while this process runs no other thread than our
own lease keeper (``digest run``: fast, and safe then), and come from a fork server
otherwise (``digest serve``, where the scheduler and the web app have threads of their
own: a fork could copy a lock one of them holds, and the worker would hang on it). A
body identical to the last one (or a 304) is not parsed at all; in a changed one, the
entries with the same bytes as last time (``prints``: fingerprints per feed URL) are
not parsed either (``parse.parse_new``), and entries the ledger already knows
(``known``: identities per feed URL) are not cleaned: only their identity is computed.
A body reaches the parser as sent (gzip or deflate: 34 KB to pipe where the inflated
feed is 200 KB) and is inflated there, under ``fetch.max_bytes``, failing as the
fetcher would have failed it (``fetch.decoded``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime

from ..errors import FeedError, ParseError
from ..model import Entry, FeedSource, Fetched, FetchStatus, Validators
from .clean import MAX_TITLE_CHARS, clean, identity, plain_text, stand_ins, truncate
from .fetch import FetchSettings, decoded, fetch_all, run_sync
from .parse import DEFAULT_LIMITS, ParseLimits, parse_new
from .scan import pack, unpack

log = logging.getLogger(__name__)
#: Below this many feeds to parse, a process pool costs more than it saves.
POOL_THRESHOLD = 8
#: How parser processes start; None: chosen by ``start_method``.
START_METHOD: str | None = None


@dataclass(frozen=True, slots=True)
class Digested:
    """One feed after fetch → parse → clean."""

    fetched: Fetched
    title: str | None = None
    #: The entries to consider: every entry of the feed except those already known.
    entries: tuple[Entry, ...] = ()
    error: FeedError | None = None
    warnings: tuple[str, ...] = ()
    #: How many entries the feed holds, known ones included.
    total: int = 0
    #: The fingerprints of the feed's entries (``scan.pack``) to remember, when the
    #: feed was parsed; None leaves the remembered ones as they are.
    prints: bytes | None = None

    @property
    def source(self) -> FeedSource:
        return self.fetched.source

    @property
    def status(self) -> FetchStatus:
        if self.error is not None:
            return FetchStatus.FAILED
        if self.fetched.status is FetchStatus.OK and self.fetched.unchanged:
            return FetchStatus.NOT_MODIFIED
        return self.fetched.status


def digest_feed(
    fetched: Fetched,
    now: datetime,
    summary_length: int,
    known: Collection[str] = frozenset(),
    limits: ParseLimits = DEFAULT_LIMITS,
    seen: Collection[bytes] = frozenset(),
) -> Digested:
    """Parse one fetched feed and clean its entries not in ``known`` (identities), in
    at most ``limits.max_seconds`` of CPU time. Entries whose fingerprint is in
    ``seen`` (those of the feed's last document) are not even parsed: they were read
    and recorded before (``parse.parse_new``). Top-level so a process pool can run it.
    Never raises for the feed: whatever goes wrong (a bug, a library's surprise on
    hostile input) becomes this feed's error, with a reason."""
    fetched = decoded(fetched, limits.max_bytes)  # a body left compressed by ``ingest``
    if fetched.status is not FetchStatus.OK or fetched.unchanged:
        return Digested(fetched, error=fetched.error)
    url = fetched.url or fetched.source.url
    stage = "parsing"
    try:
        with _cpu_limit(limits.max_seconds):
            fresh = parse_new(fetched.body, url, fetched.headers, limits, seen)
            parsed = fresh.parsed
            stage = "cleaning"
            title = truncate(plain_text(parsed.title), MAX_TITLE_CHARS) or None
            name = fetched.source.display_name(title)
            entries = tuple(
                clean(raw, fetched.source, name, seen, summary_length, key)
                for raw, seen in zip(parsed.entries, stand_ins(parsed.entries, now), strict=True)
                if (key := identity(raw)) not in known
            )
    except FeedError as exc:
        return Digested(fetched, error=exc)
    except _TooSlow:
        error = ParseError(
            url,
            f"reading it took more than {limits.max_seconds:g}s of CPU time "
            "(fetch.parse_timeout): skipped",
        )
        return Digested(fetched, error=error)
    except Exception as exc:
        return Digested(fetched, error=unexpected(fetched, stage, exc))
    return Digested(
        fetched,
        title,
        entries,
        warnings=parsed.warnings,
        total=fresh.total,
        prints=pack(fresh.prints),
    )


def digest_apart(
    fetched: Fetched,
    now: datetime,
    summary_length: int,
    known: Collection[str] = frozenset(),
    limits: ParseLimits = DEFAULT_LIMITS,
    seen: Collection[bytes] = frozenset(),
) -> Digested:
    """``digest_feed`` in a pool's worker: the result goes back without the body (the
    caller has it, and piping a 200 KB feed back costs as much as parsing 2 entries);
    the caller puts its own ``fetched`` back (``_rejoined``)."""
    digested = digest_feed(fetched, now, summary_length, known, limits, seen)
    return replace(digested, fetched=replace(digested.fetched, body=b""))


def _rejoined(digested: Digested, fetched: Fetched) -> Digested:
    """The worker's result with the caller's ``fetched`` (its body as fetched: still
    compressed, as its headers say, when ``ingest`` left it so); unless the worker found
    that body too big or corrupt once inflated: the feed failed then, as it would have
    while fetching."""
    if digested.fetched.status is FetchStatus.FAILED and fetched.status is FetchStatus.OK:
        return digested
    return replace(digested, fetched=fetched)


def unexpected(fetched: Fetched, stage: str, exc: Exception) -> ParseError:
    """An exception nobody expected while ``stage`` one feed: logged with its traceback
    for whoever fixes it, and that feed's error (the others carry on)."""
    log.warning("%s: unexpected error while %s it", fetched.source.url, stage, exc_info=exc)
    text = " ".join(str(exc).split())[:300]
    what = f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
    return ParseError(fetched.url or fetched.source.url, f"unexpected error while {stage}: {what}")


class _TooSlow(BaseException):
    """Raised by the CPU timer; a BaseException, so no ``except Exception`` swallows it."""


def _too_slow(signum: int, frame: object) -> None:
    raise _TooSlow


@contextmanager
def _cpu_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` of this process's CPU time (a feed built to
    make the parser crawl). Only where signals can be used: the main thread of a
    process, as in the pool's workers and the command; elsewhere, no limit."""
    usable = (
        seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return
    previous = signal.signal(signal.SIGVTALRM, _too_slow)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds, 0.5)  # again every 0.5 s if missed
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def _ready() -> None:
    """Run once per pool worker before fetching starts, so workers are forked early."""


def start_method(quiet: Collection[str] = ()) -> str:
    """``fork`` while no other thread runs here, else ``forkserver`` (``spawn`` where
    neither exists): forking a process with other threads can copy a lock one of them
    holds into the child, which then hangs on it. Threads named in ``quiet`` do not
    count: the caller vouches that they hold nothing a parser needs (the lease keeper
    sleeps, or renews the lease through the database, which a parser never touches)."""
    if START_METHOD is not None:
        return START_METHOD
    methods = multiprocessing.get_all_start_methods()
    others = [
        t
        for t in threading.enumerate()
        if t is not threading.current_thread() and t.name not in quiet
    ]
    if "fork" in methods and threading.current_thread() is threading.main_thread() and not others:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _pool(processes: int, quiet: Collection[str]) -> concurrent.futures.ProcessPoolExecutor:
    method = start_method(quiet)
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([__name__])  # imported once, by the server
    return concurrent.futures.ProcessPoolExecutor(processes, mp_context=context)


def _start_pool(
    processes: int, quiet: Collection[str]
) -> concurrent.futures.ProcessPoolExecutor | None:
    """A process pool with its workers already running (forked before the event loop
    and its threads start), or None where processes cannot be started: parse inline."""
    pool = _pool(processes, quiet)
    # Forked workers inherit this process's objects: frozen, their collector never walks
    # them (nor copies the pages it would touch); here they are collectable again after.
    gc.freeze()
    try:
        for started in [pool.submit(_ready) for _ in range(processes)]:
            started.result()
    except (OSError, BrokenProcessPool) as exc:
        log.warning("cannot start parser processes (%s): parsing in this one", exc)
        pool.shutdown(wait=False, cancel_futures=True)
        return None
    finally:
        gc.unfreeze()
    return pool


def ingest(
    sources: Sequence[FeedSource],
    validators: Mapping[str, Validators],
    settings: FetchSettings,
    now: datetime,
    summary_length: int,
    workers: int = 0,
    on_fetched: Callable[[Fetched], None] | None = None,
    known: Mapping[str, Collection[str]] | None = None,
    quiet_threads: Collection[str] = (),
    prints: Mapping[str, bytes] | None = None,
) -> list[Digested]:
    """Fetch, parse and clean every source; results in the order of ``sources``.

    ``known`` maps a feed URL to identities of its entries the ledger knows: those are
    not cleaned, and left out of the result (they could not be new anyway).
    ``prints`` maps a feed URL to the fingerprints of its last document's entries, as
    remembered (``Digested.prints``): entries with the same bytes are not parsed.
    ``quiet_threads``: see ``start_method``.
    """
    if not sources:
        return []
    known = known or {}
    prints = prints or {}
    limits = ParseLimits(
        settings.max_entity_expansion,
        settings.max_entries,
        settings.parse_timeout,
        settings.max_bytes,
    )
    processes = workers or os.cpu_count() or 1
    use_pool = processes > 1 and len(sources) >= POOL_THRESHOLD
    pool = _start_pool(processes, quiet_threads) if use_pool else None
    batches = _Batches(pool, processes, now, summary_length, limits) if pool else None

    def ids(url: str) -> frozenset[str]:
        return frozenset(known.get(url, ()))

    def seen(url: str) -> frozenset[bytes]:
        return unpack(prints.get(url))

    def fetched_one(result: Fetched) -> None:
        if batches is not None and result.status is FetchStatus.OK and not result.unchanged:
            url = result.source.url
            batches.add(url, (result, ids(url), seen(url)))
        if on_fetched is not None:
            on_fetched(result)

    def finish(result: Fetched) -> Digested:
        url = result.source.url
        try:
            digested = batches.result(result) if batches is not None else None
        except _Again as again:
            args = (now, summary_length, ids(url), limits, seen(url))
            return _isolated(result, *args, why=str(again), quiet=quiet_threads)
        if digested is None:
            return digest_feed(result, now, summary_length, ids(url), limits, seen(url))
        return digested

    try:
        # Bodies stay compressed until a parser inflates them (``digest_feed``): 34 KB
        # piped to a worker instead of 200 KB, and this process spends its time fetching.
        fetched = run_sync(fetch_all(sources, validators, settings, fetched_one, decode=False))
        if batches is not None:
            batches.flush()
        return [finish(r) for r in fetched]
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


#: A job for a worker: a fetched feed, the identities and the fingerprints it knows.
_Job = tuple[Fetched, frozenset[str], frozenset[bytes]]
#: At most this many feeds wait for a busy pool before they go as one batch, or as
#: many as have this many bytes of bodies (as sent: one pickle holds them all).
MAX_BATCH = 16
MAX_BATCH_BYTES = 4_000_000


class _Again(Exception):
    """The feed's worker died or its batch's results could not come back: read it again
    in a process of its own, where it fails alone if it is the one that did it."""


def digest_batch(
    jobs: Sequence[_Job], now: datetime, summary_length: int, limits: ParseLimits
) -> list[Digested]:
    """``digest_apart`` for each job, in a pool's worker (each within its CPU limit)."""
    return [digest_apart(f, now, summary_length, known, limits, seen) for f, known, seen in jobs]


class _Batches:
    """Feeds handed to the pool as they arrive: at once while a worker may be idle (two
    tasks per worker in flight: one running, one queued), gathered while the pool is
    behind and sent as one task when it catches up, or when a batch is full
    (``MAX_BATCH`` feeds, or ``MAX_BATCH_BYTES`` of bodies). A pool pays per task, in
    both processes (a future, pickling, pipe writes, wakeups, a selector in its manager
    thread): a daily run's feeds parse in a few milliseconds, and that cost was a fifth
    of it. Called from the fetching loop's thread (``add``; a finished task wakes it to
    send what waits, so no feed waits for an idle worker), then from the caller's once
    the loop is closed (``flush``, ``result``)."""

    def __init__(
        self,
        pool: concurrent.futures.ProcessPoolExecutor,
        processes: int,
        now: datetime,
        summary_length: int,
        limits: ParseLimits,
    ) -> None:
        self.pool, self.processes = pool, processes
        self.args = (now, summary_length, limits)
        self.waiting: list[tuple[str, _Job]] = []
        self.running: list[concurrent.futures.Future[list[Digested]]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Feed URL → its batch (None: the pool had broken before it could take it),
        #: its place in it, and the batch's size.
        self.placed: dict[
            str, tuple[concurrent.futures.Future[list[Digested]] | None, int, int]
        ] = {}

    def add(self, url: str, job: _Job) -> None:
        """Called in the fetching loop: the loop a finished task wakes (``_pump``)."""
        self.loop = asyncio.get_running_loop()
        self.waiting.append((url, job))
        self._pump(full=_full(self.waiting, MAX_BATCH))

    def _pump(self, full: bool = False) -> None:
        """Send what waits if a worker may be idle (or the batch is full)."""
        self.running = [f for f in self.running if not f.done()]
        if self.waiting and (full or len(self.running) < 2 * self.processes):
            self._send(self.waiting)
            self.waiting = []

    def _finished(self, _: object) -> None:
        """A task ended (in the pool's thread): the loop sends what waits, if it runs."""
        if self.loop is not None:
            with suppress(RuntimeError):  # the loop is closed: ``flush`` sends the rest
                self.loop.call_soon_threadsafe(self._pump)

    def flush(self) -> None:
        """Send what waits (the fetching is over), in batches small enough that the
        workers finish together."""
        rest, self.waiting = self.waiting, []
        size = max(1, min(MAX_BATCH, -(-len(rest) // (4 * self.processes))))
        batch: list[tuple[str, _Job]] = []
        for item in rest:
            batch.append(item)
            if _full(batch, size):
                self._send(batch)
                batch = []
        if batch:
            self._send(batch)

    def _send(self, batch: list[tuple[str, _Job]]) -> None:
        future: concurrent.futures.Future[list[Digested]] | None
        try:
            future = self.pool.submit(digest_batch, [job for _, job in batch], *self.args)
            self.running.append(future)
            future.add_done_callback(self._finished)
        except BrokenProcessPool:
            future = None
        for index, (url, _) in enumerate(batch):
            self.placed[url] = (future, index, len(batch))

    def result(self, fetched: Fetched) -> Digested | None:
        """The feed's outcome, or None when it was not handed to the pool (parse it
        here). Raises ``_Again`` when its worker died (killed for memory, or a library
        crashed on hostile input) or its batch's results could not come back."""
        place = self.placed.get(fetched.source.url)
        if place is None:
            return None
        future, index, size = place
        if future is None:
            raise _Again("the parser processes had stopped")
        try:
            return _rejoined(future.result()[index], fetched)
        except BrokenProcessPool as exc:
            raise _Again("a parser process died") from exc
        except Exception as exc:  # a result could not come back (pickling...)
            if size > 1:
                raise _Again("a batch of results could not come back") from exc
            return Digested(fetched, error=unexpected(fetched, "parsing", exc))


def _full(batch: Sequence[tuple[str, _Job]], size: int) -> bool:
    return len(batch) >= size or sum(len(job[0].body) for _, job in batch) >= MAX_BATCH_BYTES


def _isolated(
    fetched: Fetched,
    now: datetime,
    summary_length: int,
    known: frozenset[str],
    limits: ParseLimits,
    seen: frozenset[bytes],
    why: str = "a parser process died",
    quiet: Collection[str] = (),
) -> Digested:
    """Parse one feed in a process of its own, after a worker died (killed for memory,
    or a library crashed on hostile input) or its batch failed as a whole: the feed
    that did it fails alone."""
    log.warning("%s; reading %s again on its own", why, fetched.source.url)
    with _pool(1, quiet) as solo:
        try:
            digested = solo.submit(
                digest_apart, fetched, now, summary_length, known, limits, seen
            ).result()
            return _rejoined(digested, fetched)
        except BrokenProcessPool:
            error = ParseError(
                fetched.url or fetched.source.url,
                "the parser process died reading this feed (out of memory, or a crash "
                "in a parsing library): skipped",
            )
            return Digested(fetched, error=error)
        except Exception as exc:  # its result could not come back (pickling...)
            return Digested(fetched, error=unexpected(fetched, "parsing", exc))
