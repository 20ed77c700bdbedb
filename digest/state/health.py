"""Feed state kept between runs: conditional-GET validators, moves, and health.

A feed's row remembers its ETag / Last-Modified, the hash of its last body and the
fingerprints of that body's entries (``ingest.scan``), a permanent redirect, when it
was first read (the first-run rule), and its health: last success, last error,
consecutive failures. After ``pause_after`` failures in a row, or
a 410 Gone, the feed is paused: skipped by runs, reported by ``digest feeds``, until
``digest feeds --resume``.

A permanent redirect (301/308) is a claim by whoever answers the feed's address, so it
is adopted (read from then on instead of the configured URL) only once it has proved
stable: seen again, to the same URL, at least ``ADOPT_AFTER`` after it was first seen,
with no answer without it in between (``move``). Until then it is *pending*: followed
on each run and shown by ``digest feeds``. A move to an address inside the network is
followed when allowed, never adopted.

Everything stored here came from outside, so each value is made to fit its column:
text without NUL or other control characters, cut to the column's length.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

import sqlalchemy as sa

from ..ingest import egress
from ..model import Fetched, FetchStatus, Validators
from .db import schema
from .db.bulk import chunks

F = schema.feeds
#: How long a permanent redirect must hold, across runs, before it is adopted.
ADOPT_AFTER = timedelta(hours=24)
#: The most characters kept of a text column without a length (an error, a reason).
MAX_TEXT = 2000


class FeedStatus(StrEnum):
    """A feed's health, as ``digest feeds`` shows it."""

    NEVER_READ = "never read"
    OK = "ok"
    FAILING = "failing"  # its last read failed; paused after ``fetch.pause_after`` in a row
    PAUSED = "paused"  # not read until ``digest feeds --resume``


@dataclass(frozen=True, slots=True)
class FeedState:
    id: int
    url: str
    validators: Validators
    title: str | None
    first_read_at: datetime | None
    last_fetched_at: datetime | None
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    paused_at: datetime | None
    pause_reason: str | None
    retry_after: datetime | None
    #: A permanent redirect seen but not adopted yet, and since when it has held.
    pending_move: str | None = None
    pending_since: datetime | None = None
    #: The fingerprints of the entries of the feed's last document read, as stored
    #: (``ingest.scan.pack``): those entries are not parsed again.
    entry_prints: bytes = b""

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def status(self) -> FeedStatus:
        """Where the feed stands, as ``digest feeds`` shows it."""
        if self.last_fetched_at is None:
            return FeedStatus.NEVER_READ
        if self.paused:
            return FeedStatus.PAUSED
        return FeedStatus.FAILING if self.consecutive_failures else FeedStatus.OK

    def held(self, now: datetime) -> str | None:
        """Why a run leaves the feed unread at ``now``, if it does: paused, or the server
        asked to be left alone until later (a Retry-After)."""
        if self.paused:
            return f"paused: {self.pause_reason} (`digest feeds --resume` to read it again)"
        if self.retry_after and self.retry_after > now:
            return f"the server asked us to wait until {self.retry_after:%Y-%m-%d %H:%M} UTC"
        return None


def _state(row: sa.Row[tuple[object, ...]]) -> FeedState:
    m = row._mapping
    return FeedState(
        id=m["id"],
        url=m["url"],
        validators=Validators(m["etag"], m["last_modified"], m["body_hash"], m["moved_to"]),
        title=m["title"],
        first_read_at=m["first_read_at"],
        last_fetched_at=m["last_fetched_at"],
        last_success_at=m["last_success_at"],
        last_error_at=m["last_error_at"],
        last_error=m["last_error"],
        consecutive_failures=m["consecutive_failures"],
        paused_at=m["paused_at"],
        pause_reason=m["pause_reason"],
        retry_after=m["retry_after"],
        pending_move=m["move_pending"],
        pending_since=m["move_seen_at"],
        entry_prints=bytes(m["entry_prints"] or b""),
    )


def states(conn: sa.Connection, urls: Sequence[str], create: bool = True) -> dict[str, FeedState]:
    """The state of each feed; rows for feeds seen for the first time are created
    (unless ``create`` is False: then those feeds are simply absent)."""
    if create:
        existing = {r.url for r in conn.execute(sa.select(F.c.url).where(F.c.url.in_(urls)))}
        missing = [u for u in dict.fromkeys(urls) if u not in existing]
        if missing:
            conn.execute(sa.insert(F), [{"url": u, "consecutive_failures": 0} for u in missing])
    rows = conn.execute(sa.select(F).where(F.c.url.in_(urls)))
    return {r.url: _state(r) for r in rows}


def all_states(conn: sa.Connection) -> list[FeedState]:
    return [_state(r) for r in conn.execute(sa.select(F).order_by(F.c.id))]


def record_fetch(
    conn: sa.Connection,
    fetched: Fetched,
    now: datetime,
    pause_after: int,
    title: str | None = None,
    parse_error: str | None = None,
    prints: bytes | None = None,
) -> str | None:
    """Update a feed's row after a fetch (and parse). Returns a warning for the operator.
    ``prints``: the fingerprints of the entries just read, stored with the validators
    (None keeps the stored ones: nothing was parsed)."""
    url = fetched.source.url
    row = conn.execute(sa.select(F).where(F.c.url == url)).one()
    state = _state(row)
    values: dict[str, object] = {"last_fetched_at": now}
    decided = move(state, fetched, now)
    values.update(move_pending=decided.pending, move_seen_at=decided.since)
    warning = None
    if decided.adopt:
        values["moved_to"] = decided.adopt
        warning = (
            f"{url} moved permanently to {decided.adopt} (the same answer for "
            f"{ADOPT_AFTER.total_seconds() / 3600:g} hours): digest reads the new address from "
            "now on; update the config"
        )
    error = fetched.error.message if fetched.error else parse_error
    if fetched.status is FetchStatus.FAILED or parse_error:
        failures = state.consecutive_failures + 1
        values.update(last_error_at=now, last_error=error, consecutive_failures=failures)
        if fetched.retry_after:
            values["retry_after"] = fetched.retry_after
        if fetched.gone:
            values.update(paused_at=now, pause_reason="410 Gone: the site removed this feed")
            warning = f"{url} is gone (HTTP 410): paused; remove it from the config"
        elif failures >= pause_after and state.paused_at is None:
            values.update(
                paused_at=now,
                pause_reason=f"{failures} failures in a row; last: {error}",
            )
            warning = (
                f"{url} failed {failures} times in a row and is paused: fix it, then "
                f"`digest feeds --resume {url}`"
            )
    else:
        values.update(consecutive_failures=0, last_success_at=now, retry_after=None)
        if state.first_read_at is None:
            values["first_read_at"] = now
        if fetched.status is FetchStatus.OK:
            v = fetched.validators
            values.update(etag=v.etag, last_modified=v.last_modified, body_hash=v.body_hash)
            if prints is not None:
                values["entry_prints"] = prints
        if title:
            values["title"] = title
    conn.execute(sa.update(F).where(F.c.id == state.id).values(_fitted(values)))
    return warning


def _fitted(values: dict[str, object]) -> dict[str, object]:
    """Each text value as its column can hold it: no NUL or other control characters
    (PostgreSQL refuses NUL; none belongs in a title, an error or a URL), cut to the
    column's length (PostgreSQL refuses longer). Validators arrive fitted already
    (``fetch`` drops the ones that do not fit: a cut ETag would never match)."""
    out: dict[str, object] = {}
    for name, value in values.items():
        if isinstance(value, str):
            value = "".join(c if c.isprintable() or c in "\n\t" else " " for c in value)
            value = value[: _length(name)]
        out[name] = value
    return out


def _length(column: str) -> int:
    length = getattr(F.c[column].type, "length", None)
    return int(length) if length else MAX_TEXT


@dataclass(frozen=True, slots=True)
class Move:
    """What a fetch means for a feed's permanent redirect: the move still pending (and
    since when), and the URL adopted now, if any."""

    pending: str | None
    since: datetime | None
    adopt: str | None = None


def move(state: FeedState, fetched: Fetched, now: datetime) -> Move:
    """Pure: a permanent redirect is adopted when it is seen again, to the same URL, at
    least ``ADOPT_AFTER`` after first seen, with no plain answer in between. A fetch
    that got no answer (a timeout...) neither confirms nor contradicts it."""
    pending, since = state.pending_move, state.pending_since
    seen = fetched.moved_to
    if seen is None:
        if fetched.status is FetchStatus.FAILED:
            return Move(pending, since)
        return Move(None, None)  # answered where it is: not moving after all
    if not _adoptable(seen, fetched.source.url):
        return Move(None, None)
    if seen != pending or since is None:
        return Move(seen, now)
    if now - since >= ADOPT_AFTER:
        return Move(None, None, adopt=seen)
    return Move(pending, since)


def _adoptable(url: str, configured: str) -> bool:
    """Never remember a move inside the network (it may be followed when allowed), nor
    one longer than the column holds."""
    host = urlsplit(url).hostname or ""
    same_host = egress.normal_host(host) == egress.normal_host(urlsplit(configured).hostname)
    return len(url) <= _length("moved_to") and (same_host or not egress.names_internal(host))


def resume(conn: sa.Connection, urls: Iterable[str] | None = None) -> int:
    """Unpause feeds (all paused ones when ``urls`` is None). Returns how many."""
    query = sa.update(F).where(F.c.paused_at.is_not(None))
    if urls is not None:
        query = query.where(F.c.url.in_(list(urls)))
    result = conn.execute(
        query.values(paused_at=None, pause_reason=None, consecutive_failures=0, retry_after=None)
    )
    return int(result.rowcount)


def recent_identities(
    conn: sa.Connection, feed_ids: Mapping[str, int], since: datetime
) -> dict[str, frozenset[str]]:
    """Identities of each feed's entries the ledger learned since ``since``.

    Only a shortcut: entries listed here are not cleaned again. Anything older is
    cleaned and then recognised by the full check (``record.known``), so the bound
    keeps this query small on a database that has years of entries without changing
    what is new.
    """
    by_id = {v: k for k, v in feed_ids.items()}
    found: dict[str, set[str]] = {}
    for chunk in chunks(sorted(by_id)):
        rows = conn.execute(
            sa.select(schema.entries.c.feed_id, schema.entries.c.identity).where(
                schema.entries.c.feed_id.in_(chunk), schema.entries.c.first_seen_at >= since
            )
        )
        for feed_id, identity in rows:
            found.setdefault(by_id[feed_id], set()).add(identity)
    return {url: frozenset(v) for url, v in found.items()}


def ids(states_by_url: Mapping[str, FeedState]) -> dict[str, int]:
    return {url: s.id for url, s in states_by_url.items()}
