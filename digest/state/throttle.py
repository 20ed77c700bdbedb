"""Limits the whole fleet shares, counted in the database (``throttles``).

Every instance on one database sees the same rows, so a limit holds for all of them
together, not per process:

- a **token bucket** (``take``): ``delivery.smtp.rate`` is the rate it fills at. A
  taker asks for ``n`` tokens and is told how long to wait before those ``n`` may go;
  the bucket may go into debt, so takers queue in the order they asked and the next
  one waits longer. Over any stretch of time ``t`` the tokens granted (counted at the
  time each may go) are at most ``rate × t + burst``. A new bucket starts full.
- a **hold** (``hold``, ``held_until``): "nothing goes before then", with the reason: a
  provider's 429 seen by one instance holds every instance.

Times are epoch seconds from the caller (injected in tests). Each call is one short
transaction that takes its row by an upsert first: on PostgreSQL that locks the row
until the commit, on SQLite it takes the write lock, so two takers never read the same
count (the way ``web/limits.py`` counts sign-ups). A clock behind the row's never
refills the bucket backwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from ..errors import StoreError
from .db import schema

T = schema.throttles
log = logging.getLogger(__name__)


def _upsert(conn: sa.Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(T)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(T)


def _locked(conn: sa.Connection, name: str, tokens: float, now: float) -> sa.Row[Any]:
    """The row ``name`` (made with ``tokens`` at ``now`` when missing), locked until the
    transaction ends."""
    insert = _upsert(conn).values(name=name, tokens=tokens, stamp=now, hold_until=0.0)
    upsert = insert.on_conflict_do_update(
        index_elements=[T.c.name], set_={"name": insert.excluded.name}
    ).returning(T.c.tokens, T.c.stamp, T.c.hold_until)
    row: sa.Row[Any] = conn.execute(upsert).one()
    return row


def refill(tokens: float, stamp: float, now: float, rate: float, burst: float) -> float:
    """What the bucket holds at ``now``: ``tokens`` at ``stamp``, filled at ``rate`` up to
    ``burst`` (pure)."""
    return min(burst, tokens + max(0.0, now - stamp) * rate)


def take(
    engine: sa.Engine, name: str, n: float, rate: float, now: float, burst: float | None = None
) -> float:
    """Take ``n`` tokens from the bucket ``name`` filling at ``rate`` per second (``burst``
    at most, by default one second's worth and never less than ``n``). Returns the
    seconds to wait before those ``n`` may go (0: now)."""
    if rate <= 0:
        raise ValueError("a bucket needs a rate above 0")
    cap = max(burst if burst is not None else rate, n)
    with engine.begin() as conn:
        row = _locked(conn, name, cap, now)
        tokens = refill(row.tokens, row.stamp, now, rate, cap) - n
        stamp = max(row.stamp, now)
        conn.execute(sa.update(T).where(T.c.name == name).values(tokens=tokens, stamp=stamp))
    return max(0.0, -tokens / rate)


def hold(engine: sa.Engine, name: str, until: float, reason: str | None = None) -> None:
    """Nothing under ``name`` goes before ``until`` (epoch seconds); a later hold
    already there stays."""
    with engine.begin() as conn:
        row = _locked(conn, name, 0.0, 0.0)
        if until > row.hold_until:
            values = {"hold_until": until, "reason": (reason or "")[:2000] or None}
            conn.execute(sa.update(T).where(T.c.name == name).values(values))


def held_until(engine: sa.Engine, name: str) -> tuple[float, str | None]:
    """Until when ``name`` is held (epoch seconds; 0.0: never held), and why."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(T.c.hold_until, T.c.reason).where(T.c.name == name)).first()
    return (float(row.hold_until), row.reason) if row is not None else (0.0, None)


class Hold:
    """One provider's hold for this process: written by whoever meets the limit, read
    again at most every ``fresh`` seconds. The database failing never stops sending:
    the hold is advice, the process's own wait still applies."""

    def __init__(
        self,
        engine: sa.Engine,
        name: str,
        fresh: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.name = name
        self.fresh = fresh
        self.monotonic = monotonic
        self.lock = threading.Lock()
        self.until = 0.0  # epoch seconds, as last read
        self.read_at: float | None = None  # monotonic

    def set(self, until: float, reason: str | None) -> None:
        try:
            hold(self.engine, self.name, until, reason)
        except StoreError as exc:
            log.warning("could not share the hold on %s with other instances: %s", self.name, exc)
        with self.lock:
            self.until = max(self.until, until)

    def left(self, now: float) -> float:
        """Seconds until the hold ends, seen from ``now`` (epoch seconds)."""
        with self.lock:
            stale = self.read_at is None or self.monotonic() - self.read_at >= self.fresh
            if stale:
                self.read_at = self.monotonic()
        if stale:
            try:
                until, _why = held_until(self.engine, self.name)
            except StoreError as exc:
                log.warning("could not read the hold on %s: %s", self.name, exc)
                until = 0.0
            with self.lock:
                self.until = max(until, self.until)
        return max(0.0, self.until - now)
