"""The instances of digest sharing one database: who is running, and doing what.

Each ``digest serve``, ``digest work`` and ``digest run`` is an ``Instance``: a row of
``instances`` written when it starts (its id is ``host:pid:random``, like a lease
holder's), kept fresh by a heartbeat thread every ``BEAT``, and marked ``stopped`` when
it stops cleanly. Each beat also renews the claims of the batches the instance holds
(``batches.claim_expires``), so a claim outlives its holder by at most ``CLAIM_TTL``:
after that another instance may take the batch over (a ``pending`` one is sent, a
``sending`` one becomes ``unknown``, never re-sent blindly).

An instance not seen for ``GONE`` is gone (killed, or its host lost); ``digest status``
lists the instances seen within ``RECENT``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from .. import __version__
from ..clock import utcnow
from ..errors import StoreError
from ..model import BatchStatus
from .db import schema
from .lease import holder_name

log = logging.getLogger(__name__)

N, B = schema.instances, schema.batches
#: How often an instance says it is alive and renews its claims.
BEAT = timedelta(seconds=10)
#: A claim not renewed for this long is its holder's no more.
CLAIM_TTL = timedelta(seconds=60)
#: An instance not seen for this long is gone.
GONE = timedelta(seconds=60)
#: ``digest status`` shows the instances seen this recently (gone ones among them).
RECENT = timedelta(hours=1)
#: Rows of instances not seen for this long are deleted.
FORGOTTEN = timedelta(days=7)
THREAD_NAME = "digest-instance"


class Role(StrEnum):
    SERVE = "serve"  # web app + scheduler + sending
    WORK = "work"  # sending only
    RUN = "run"  # one run from the command line


class State(StrEnum):
    BUILDING = "building"  # making an edition (holds the lease)
    SENDING = "sending"  # sending an edition's batches
    STANDBY = "standby"  # up, nothing to do right now
    STOPPED = "stopped"  # stopped cleanly


@dataclass(frozen=True, slots=True)
class Seen:
    """An instance as the database last heard of it."""

    id: str
    host: str
    pid: int
    role: str
    state: str
    edition_id: int | None
    version: str | None
    started_at: datetime
    seen_at: datetime
    sent: int
    detail: str | None

    def gone(self, now: datetime) -> bool:
        return self.state != State.STOPPED and now - self.seen_at > GONE


class Instance:
    """This process in ``instances``. ``start`` registers it and starts the heartbeat;
    ``now_doing`` records what it does; ``stop`` marks it stopped."""

    def __init__(
        self,
        engine: sa.Engine,
        role: Role,
        clock: Callable[[], datetime] = utcnow,
        beat: timedelta = BEAT,
    ) -> None:
        self.engine = engine
        self.role = role
        self.clock = clock
        self.beat = beat
        self.id = holder_name()
        self._doing = State.STANDBY  # what its sending does (``now_doing``)
        self._building = False  # its scheduler builds an edition (``building``)
        self.edition_id: int | None = None
        self.detail: str | None = None
        self.sent = 0  # recipients sent to since start
        #: Whether the last beat reached the database (for /healthz), and if not why.
        self.db_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Instance:
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(sa.delete(N).where(N.c.seen_at < now - FORGOTTEN))
            conn.execute(
                sa.insert(N).values(
                    id=self.id,
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                    role=self.role,
                    state=self.state,
                    version=__version__,
                    started_at=now,
                    seen_at=now,
                    sent=0,
                )
            )
        self._thread = threading.Thread(target=self._beating, name=THREAD_NAME, daemon=True)
        self._thread.start()
        return self

    @property
    def state(self) -> State:
        """What it does: building while its scheduler builds, whatever its sending loop
        (another thread) says meanwhile; else what the sending says."""
        return State.BUILDING if self._building else self._doing

    def now_doing(
        self, state: State, edition_id: int | None = None, detail: str | None = None
    ) -> None:
        """Say what this instance's sending does now (``SENDING``, ``STANDBY``); written
        at once (best effort) and each beat."""
        with self._lock:
            self._doing, self.edition_id, self.detail = state, edition_id, detail
        self.beat_once()

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        """While the block runs, this instance is ``BUILDING`` (an edition, under the
        lease), even as its sending loop stands by or sends."""
        with self._lock:
            self._building = True
        self.beat_once()
        try:
            yield
        finally:
            with self._lock:
                self._building = False
            self.beat_once()

    def count_sent(self, recipients: int) -> None:
        with self._lock:
            self.sent += recipients

    def beat_once(self) -> bool:
        """Say this instance is alive and renew its claims. False if the database could
        not be reached (``db_error`` says why); the next beat tries again."""
        now = self.clock()
        with self._lock:
            values = {
                "state": self.state,
                "edition_id": self.edition_id,
                "detail": self.detail,
                "sent": self.sent,
                "seen_at": now,
            }
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.update(N).where(N.c.id == self.id).values(values))
                renew_claims(conn, self.id, now)
        except (StoreError, sa.exc.SQLAlchemyError) as exc:
            self.db_error = f"unreachable: {type(exc.__cause__ or exc).__name__}"
            log.warning("instance %s: the database could not be reached: %s", self.id, exc)
            return False
        self.db_error = None
        return True

    def _beating(self) -> None:
        while not self._stop.wait(self.beat.total_seconds()):
            self.beat_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._doing, self._building, self.edition_id = State.STOPPED, False, None
        with contextlib.suppress(StoreError, sa.exc.SQLAlchemyError):
            self.beat_once()


def renew_claims(conn: sa.Connection, instance_id: str, now: datetime) -> int:
    """Extend the claims ``instance_id`` holds on batches not yet settled."""
    result = conn.execute(
        sa.update(B)
        .where(
            (B.c.claimed_by == instance_id)
            & B.c.status.in_([BatchStatus.PENDING, BatchStatus.SENDING])
        )
        .values(claim_expires=now + CLAIM_TTL)
    )
    return int(result.rowcount or 0)


def seen(conn: sa.Connection, now: datetime, within: timedelta = RECENT) -> list[Seen]:
    """The instances seen within ``within``, the most recently started first."""
    rows = conn.execute(
        sa.select(N).where(N.c.seen_at >= now - within).order_by(N.c.started_at.desc())
    )
    return [
        Seen(
            r.id,
            r.host,
            r.pid,
            r.role,
            r.state,
            r.edition_id,
            r.version,
            r.started_at,
            r.seen_at,
            r.sent,
            r.detail,
        )
        for r in rows
    ]
