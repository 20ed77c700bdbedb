"""Zone groups: batches held until their group's hour, released when it comes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from ...model import (
    BatchStatus,
)
from ..db import schema
from ._batches import _recipients

E, B, D = schema.editions, schema.batches, schema.deliveries


# -- zone groups ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Released:
    """What ``release`` did to one edition's zone groups."""

    edition_id: int
    released: tuple[str, ...]
    missed: tuple[str, ...]
    recipients_missed: int


def release(conn: sa.Connection, now: datetime, grace: timedelta | None) -> list[Released]:
    """Zone groups whose hour has come go out: their waiting batches become pending.
    Those missed by more than ``grace`` (digest was down) are taken out of their
    edition, and their subscribers' cursors go back: the stories wait for their next
    edition."""
    waiting = B.c.status == BatchStatus.WAITING
    rows = conn.execute(
        sa.select(B.c.edition_id, B.c.zone, sa.func.min(B.c.release_at))
        .where(waiting & (B.c.release_at <= now))
        .group_by(B.c.edition_id, B.c.zone)
        .order_by(B.c.edition_id, B.c.zone)
    ).all()
    done: dict[int, tuple[list[str], list[str], int]] = {}
    for edition_id, zone, at in rows:
        released, missed, count = done.setdefault(int(edition_id), ([], [], 0))
        group = waiting & (B.c.edition_id == edition_id) & (B.c.zone == zone)
        if grace is not None and now - at > grace:
            missed.append(zone)
            done[int(edition_id)] = (released, missed, count + _take_out(conn, edition_id, group))
        else:
            released.append(zone)
            conn.execute(sa.update(B).where(group).values(status=BatchStatus.PENDING))
    return [Released(e, tuple(r), tuple(m), n) for e, (r, m, n) in done.items()]


def _take_out(conn: sa.Connection, edition_id: int, group: sa.ColumnElement[bool]) -> int:
    S = schema.subscribers
    numbers = sa.select(B.c.number).where(group)
    mine = (D.c.edition_id == edition_id) & D.c.batch.in_(numbers)
    D2 = D.alias("earlier")
    since = sa.func.coalesce(
        sa.select(D.c.since)
        .where((D.c.edition_id == edition_id) & (D.c.subscriber_id == S.c.id))
        .scalar_subquery(),
        sa.select(sa.func.max(D2.c.edition_id))
        .where((D2.c.subscriber_id == S.c.id) & (D2.c.edition_id < edition_id))
        .scalar_subquery(),
        sa.select(sa.func.max(E.c.id)).where(E.c.id < edition_id).scalar_subquery(),
    )
    conn.execute(
        sa.update(S)
        .where(
            (S.c.covered_through.is_(None) | (S.c.covered_through >= edition_id))
            & S.c.id.in_(sa.select(D.c.subscriber_id).where(mine))
        )
        .values(covered_through=since)
    )
    count = _recipients(conn, group)
    conn.execute(sa.delete(D).where(mine))
    conn.execute(sa.delete(B).where(group))
    conn.execute(sa.update(E).where(E.c.id == edition_id).values(recipients=E.c.recipients - count))
    return count


def zones_of(conn: sa.Connection, edition_id: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The edition's zone groups released so far, and those still waiting."""
    rows = conn.execute(
        sa.select(B.c.zone, B.c.status)
        .where((B.c.edition_id == edition_id) & B.c.zone.is_not(None))
        .group_by(B.c.zone, B.c.status)
    ).all()
    pending = sorted({str(z) for z, st in rows if st == BatchStatus.WAITING})
    released = sorted({str(z) for z, _ in rows} - set(pending))
    return tuple(released), tuple(pending)


def next_release(conn: sa.Connection) -> datetime | None:
    """When the next waiting zone group's hour comes."""
    query = sa.select(sa.func.min(B.c.release_at)).where(B.c.status == BatchStatus.WAITING)
    return conn.execute(query).scalar()
