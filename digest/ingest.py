"""Read every feed: fetch (concurrently) → parse → clean, with each feed's outcome a value.

Parsing runs in a process pool over all cores when there are enough feeds to pay for
it, overlapping with the fetching still under way; with a handful of feeds it runs
inline. A body identical to the last one (or a 304) is not parsed at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from .clean import clean
from .errors import FeedError
from .fetch import FetchSettings, fetch_all
from .model import Entry, FeedSource, Fetched, FetchStatus, Validators
from .parse import parse

log = logging.getLogger(__name__)
#: Below this many feeds to parse, a process pool costs more than it saves.
POOL_THRESHOLD = 8


@dataclass(frozen=True, slots=True)
class Digested:
    """One feed after fetch → parse → clean."""

    fetched: Fetched
    title: str | None = None
    entries: tuple[Entry, ...] = ()
    error: FeedError | None = None
    warnings: tuple[str, ...] = ()

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


def display_name(source: FeedSource, title: str | None) -> str:
    return source.name or title or urlsplit(source.url).hostname or source.url


def digest_feed(fetched: Fetched, now: datetime, summary_length: int) -> Digested:
    """Parse and clean one fetched feed. Top-level so a process pool can run it."""
    if fetched.status is not FetchStatus.OK or fetched.unchanged:
        return Digested(fetched, error=fetched.error)
    try:
        parsed = parse(fetched.body, fetched.url or fetched.source.url, fetched.headers)
    except FeedError as exc:
        return Digested(fetched, error=exc)
    name = display_name(fetched.source, parsed.title)
    entries = tuple(clean(raw, fetched.source, name, now, summary_length) for raw in parsed.entries)
    return Digested(fetched, parsed.title, entries, warnings=parsed.warnings)


def ingest(
    sources: Sequence[FeedSource],
    validators: Mapping[str, Validators],
    settings: FetchSettings,
    now: datetime,
    summary_length: int,
    workers: int = 0,
    on_fetched: Callable[[Fetched], None] | None = None,
) -> list[Digested]:
    """Fetch, parse and clean every source; results in the order of ``sources``."""
    if not sources:
        return []
    processes = workers or os.cpu_count() or 1
    use_pool = processes > 1 and len(sources) >= POOL_THRESHOLD
    pool = concurrent.futures.ProcessPoolExecutor(processes) if use_pool else None
    futures: dict[str, concurrent.futures.Future[Digested]] = {}

    def fetched_one(result: Fetched) -> None:
        if pool is not None and result.status is FetchStatus.OK and not result.unchanged:
            futures[result.source.url] = pool.submit(digest_feed, result, now, summary_length)
        if on_fetched is not None:
            on_fetched(result)

    try:
        fetched = asyncio.run(fetch_all(sources, validators, settings, fetched_one))
        return [
            futures[r.source.url].result()
            if r.source.url in futures
            else digest_feed(r, now, summary_length)
            for r in fetched
        ]
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
