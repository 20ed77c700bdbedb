"""A lease in the database so that two runs never send at once.

``digest run``, the scheduler and a second process all take the lease named "send"
before they touch editions. The holder renews it while it works (a background thread
every ``ttl / 3``); a holder that was killed stops renewing and its lease expires
after ``ttl`` (default 2 minutes), so a crash blocks the next run for at most that
long. On the same machine a dead holder is noticed at once (its process id is gone), so a
crashed run is resumed by the next without waiting. A run that finds a live lease
stops with ``LeaseError`` (exit code 3).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..clock import utcnow
from ..errors import LeaseError, StoreError
from .db import schema

#: The renewing thread; parser processes may still be forked beside it (ingest.py).
THREAD_NAME = "digest-lease"

L = schema.leases
DEFAULT_TTL = timedelta(minutes=2)


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead(holder: str) -> bool:
    """True when the holder ran on this machine and its process no longer exists."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, but not ours to signal
    return False


def acquire(
    engine: sa.Engine, name: str, holder: str, ttl: timedelta, now: datetime
) -> datetime | None:
    """Take the lease if it is free or expired. Returns None on success, else when the
    current holder's lease expires."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(L).where(L.c.name == name).with_for_update()).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        sa.insert(L).values(
                            name=name, holder=holder, acquired_at=now, expires_at=now + ttl
                        )
                    )
                return None
            except sa.exc.IntegrityError:
                row = conn.execute(sa.select(L).where(L.c.name == name)).one()
        if row.holder != holder and row.expires_at > now and not _dead(row.holder):
            return row.expires_at  # type: ignore[no-any-return]
        result = conn.execute(
            sa.update(L)
            .where(
                (L.c.name == name) & (L.c.holder == row.holder) & (L.c.expires_at == row.expires_at)
            )
            .values(holder=holder, acquired_at=now, expires_at=now + ttl)
        )
        if result.rowcount != 1:  # someone else took it between our read and write
            return now + ttl
        return None


def renew(engine: sa.Engine, name: str, holder: str, ttl: timedelta, now: datetime) -> bool:
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(L)
            .where((L.c.name == name) & (L.c.holder == holder))
            .values(expires_at=now + ttl)
        )
        return bool(result.rowcount)


def release(engine: sa.Engine, name: str, holder: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(L).where((L.c.name == name) & (L.c.holder == holder)))


@contextmanager
def held(
    engine: sa.Engine,
    name: str = "send",
    ttl: timedelta = DEFAULT_TTL,
    clock: Callable[[], datetime] = utcnow,
) -> Iterator[str]:
    """Hold the lease for the duration of the block, renewing it in the background."""
    holder = holder_name()
    busy_until = acquire(engine, name, holder, ttl, clock())
    if busy_until is not None:
        raise LeaseError(
            f"another digest run is sending right now (its lease runs until "
            f"{busy_until:%H:%M:%S} UTC); this run stops without sending. If that run was "
            f"killed, the lease expires by itself within {int(ttl.total_seconds())}s"
        )
    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(ttl.total_seconds() / 3):
            with contextlib.suppress(StoreError, sa.exc.SQLAlchemyError):  # busy: next beat
                renew(engine, name, holder, ttl, clock())

    beat = threading.Thread(target=keep_alive, name=THREAD_NAME, daemon=True)
    beat.start()
    try:
        yield holder
    finally:
        stop.set()
        beat.join()
        release(engine, name, holder)
