"""Who sends a batch: claims in the database (several instances may send one edition),
and what a gone sender left: swept, a batch caught mid-send made ``unknown``."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from ...model import (
    BatchStatus,
    SubscriberStatus,
)
from .. import lease
from ..db import schema
from ..fleet import CLAIM_TTL
from ._batches import _recipients

B, D = schema.batches, schema.deliveries


# -- batches ------------------------------------------------------------------------------


DEPARTED = "unsubscribed or removed before this edition reached them: not sent"


def recover(conn: sa.Connection, edition_id: int, now: datetime) -> int:
    """Before an unfinished edition goes on (after a crash, a fatal error, or for
    ``digest resend``): batches caught ``sending`` by a holder that is gone become
    ``unknown`` (``sweep``); recipients of the batches still to send who are no longer
    active subscribers are left out. Returns the recipients now unknown."""
    S = schema.subscribers
    pending = sa.select(B.c.number).where(
        (B.c.edition_id == edition_id) & (B.c.status == BatchStatus.PENDING)
    )
    # Those who left, found through the status index: a list of every active subscriber
    # for each zone group's release would be the whole list each time. (A subscriber
    # erased takes their deliveries along: every recipient has a row.)
    gone = [s for s in SubscriberStatus if s is not SubscriberStatus.ACTIVE]
    departed = sa.select(S.c.id).where(S.c.status.in_(gone))
    conn.execute(
        sa.update(D)
        .where(
            (D.c.edition_id == edition_id)
            & D.c.error.is_(None)
            & D.c.batch.in_(pending)
            & D.c.subscriber_id.in_(departed)
        )
        .values(error=DEPARTED)
    )
    return sweep(conn, edition_id, now)


INTERRUPTED = (
    "the run stopped while this batch was being sent: it may or may not have gone out, "
    "so it is not sent again (check the provider's log)"
)


def orphaned(
    conn: sa.Connection, edition_id: int, now: datetime, mine: str | None = None
) -> sa.ColumnElement[bool]:
    """The edition's batches no live holder keeps: never claimed (or claimed before
    0013), claim expired (its holder stopped renewing it), or held by a process of this
    machine that no longer exists (``lease._dead``: no need to wait for the expiry).
    Never those of ``mine``: a sender does not sweep its own batches in flight."""
    holders = conn.execute(
        sa.select(B.c.claimed_by)
        .where(
            (B.c.edition_id == edition_id)
            & B.c.status.in_([BatchStatus.PENDING, BatchStatus.SENDING])
            & B.c.claimed_by.is_not(None)
            & (B.c.claim_expires > now)
        )
        .distinct()
    ).scalars()
    dead = [h for h in holders if lease._dead(h)]
    gone = B.c.claimed_by.is_(None) | B.c.claim_expires.is_(None) | (B.c.claim_expires <= now)
    if dead:
        gone = gone | B.c.claimed_by.in_(dead)
    if mine is not None:
        gone = gone & (B.c.claimed_by.is_(None) | (B.c.claimed_by != mine))
    return gone


def sweep(conn: sa.Connection, edition_id: int, now: datetime, mine: str | None = None) -> int:
    """What gone holders left of the edition: a batch caught ``sending`` becomes
    ``unknown`` (it may have gone out: never re-sent blindly); a ``pending`` one they had
    claimed is free to claim at once. Any worker runs this before claiming; a batch in
    flight at a live instance is never touched, nor any of ``mine`` (the sweeper's own).
    Returns the recipients now unknown."""
    edition = B.c.edition_id == edition_id
    left = orphaned(conn, edition_id, now, mine)
    where = edition & (B.c.status == BatchStatus.SENDING) & left
    count = _recipients(conn, where)
    conn.execute(
        sa.update(B)
        .where(where)
        .values(status=BatchStatus.UNKNOWN, updated_at=now, detail=INTERRUPTED)
    )
    conn.execute(
        sa.update(B)
        .where(edition & (B.c.status == BatchStatus.PENDING) & B.c.claimed_by.is_not(None) & left)
        .values(claimed_by=None, claim_expires=None)
    )
    return count


def claim(
    conn: sa.Connection, edition_id: int, holder: str, limit: int, now: datetime
) -> list[int]:
    """Claim up to ``limit`` of the edition's pending batches nobody holds (unclaimed, or
    the claim expired), the lowest numbers first, for ``CLAIM_TTL`` (the holder's beat
    renews it). One statement: on PostgreSQL the rows are picked ``FOR UPDATE SKIP
    LOCKED``, so workers claiming at once each get other batches without waiting for one
    another; SQLite's single writer serializes them. (A ``pending`` batch is released
    already: zone groups wait as ``waiting`` until ``release``.)"""
    pick = sa.select(B.c.number).where(_free(edition_id, now)).order_by(B.c.number).limit(limit)
    chosen: sa.ColumnElement[bool]
    if conn.dialect.name == "postgresql":
        # A CTE, MATERIALIZED: picked once. As a plain IN (subquery) PostgreSQL may run the
        # subquery again as it updates, each run locking the next rows past the limit.
        picked = pick.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        chosen = B.c.number.in_(sa.select(picked.c.number))
    else:
        chosen = B.c.number.in_(pick.scalar_subquery())
    numbers = conn.execute(
        sa.update(B)
        .where((B.c.edition_id == edition_id) & chosen)
        .values(claimed_by=holder, claim_expires=now + CLAIM_TTL)
        .returning(B.c.number)
    ).scalars()
    return sorted(int(n) for n in numbers)


def _free(edition_id: int, now: datetime) -> sa.ColumnElement[bool]:
    """The edition's pending batches nobody holds: unclaimed, or the claim expired."""
    return (
        (B.c.edition_id == edition_id)
        & (B.c.status == BatchStatus.PENDING)
        & (B.c.claimed_by.is_(None) | B.c.claim_expires.is_(None) | (B.c.claim_expires <= now))
    )


def claimable(conn: sa.Connection, edition_id: int, now: datetime) -> bool:
    """Whether ``claim`` would find a batch of the edition now (one index probe)."""
    query = sa.select(B.c.number).where(_free(edition_id, now)).limit(1)
    return conn.execute(query).first() is not None


def start(conn: sa.Connection, edition_id: int, number: int, holder: str, now: datetime) -> bool:
    """Mark a claimed batch ``sending`` (committed before its request goes out), if it is
    still ``holder``'s: False when its claim lapsed and another sender claimed it
    meanwhile (then this one must not send it). The row lock makes the two exclusive."""
    result = conn.execute(
        sa.update(B)
        .where(
            (B.c.edition_id == edition_id)
            & (B.c.number == number)
            & (B.c.status == BatchStatus.PENDING)
            & (B.c.claimed_by == holder)
        )
        .values(
            status=BatchStatus.SENDING,
            updated_at=now,
            detail=None,
            sent_by=holder[:200],
            claim_expires=now + CLAIM_TTL,
        )
    )
    return bool(result.rowcount)


def give_back(conn: sa.Connection, edition_id: int, holder: str) -> int:
    """The holder stops: its claims on batches it did not start are freed for the others
    at once; one it left ``sending`` (its outcome could not be recorded) is left to the
    next ``sweep``. Returns the batches freed."""
    mine = (B.c.edition_id == edition_id) & (B.c.claimed_by == holder)
    freed = conn.execute(
        sa.update(B)
        .where(mine & (B.c.status == BatchStatus.PENDING))
        .values(claimed_by=None, claim_expires=None)
    ).rowcount
    conn.execute(
        sa.update(B).where(mine & (B.c.status == BatchStatus.SENDING)).values(claimed_by=None)
    )
    return int(freed or 0)
