"""Batches: loaded for sending, marked as they settle, requeued, tallied; an edition
settled when nothing is left to send."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ...model import (
    Batch,
    BatchStatus,
    EditionStatus,
    Recipient,
)
from ..db import schema

E, B, D, N = schema.editions, schema.batches, schema.deliveries, schema.entries


def _recipients(conn: sa.Connection, where: sa.ColumnElement[bool]) -> int:
    """How many recipients the batches matching ``where`` hold."""
    query = sa.select(sa.func.coalesce(sa.func.sum(B.c.size), 0)).where(where)
    return int(conn.execute(query).scalar_one())


def pending_batches(
    conn: sa.Connection, edition_id: int, *, after: int = -1, limit: int | None = None
) -> list[int]:
    """Numbers of the edition's pending batches above ``after``, in order (``limit`` of
    them: the dispatcher pages through an edition, whatever its size)."""
    query = (
        sa.select(B.c.number)
        .where(
            (B.c.edition_id == edition_id)
            & (B.c.status == BatchStatus.PENDING)
            & (B.c.number > after)
        )
        .order_by(B.c.number)
    )
    if limit is not None:
        query = query.limit(limit)
    return [int(r[0]) for r in conn.execute(query)]


def load_batches(conn: sa.Connection, edition_id: int, numbers: Sequence[int]) -> list[Batch]:
    """These batches (ascending numbers) with their recipients, in one query: one row per
    batch, its recipients as one JSON array the database builds (a page of recipients
    costs one call into the driver per batch, not one per recipient, and JSON carries
    any name as it is)."""
    if not numbers:
        return []
    rows = conn.execute(
        sa.select(D.c.batch, _json_rows(conn, D.c.subscriber_id, D.c.email, D.c.name))
        .where(
            (D.c.edition_id == edition_id)
            & D.c.batch.between(numbers[0], numbers[-1])
            & D.c.error.is_(None)  # left out on purpose (see ``recover``)
        )
        .group_by(D.c.batch)  # within a batch, any order will do
    ).all()
    groups: dict[int, tuple[Recipient, ...]] = {n: () for n in numbers}
    for number, people in rows:
        if number in groups:  # a batch in the range that is not pending is left out
            found = people if isinstance(people, list) else json.loads(people)
            groups[number] = tuple([Recipient(*person) for person in found])
    variant = _variants_of(conn, edition_id, numbers[0], numbers[-1])
    return [Batch(edition_id, n, groups[n], variant.get(n, 0)) for n in numbers]


def _json_rows(conn: sa.Connection, *columns: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The group's rows as a JSON array of arrays (PostgreSQL's ``json_agg``, SQLite's
    ``json_group_array``)."""
    if conn.dialect.name == "postgresql":
        return sa.func.json_agg(sa.func.json_build_array(*columns))
    return sa.func.json_group_array(sa.func.json_array(*columns))


def _variants_of(conn: sa.Connection, edition_id: int, first: int, last: int) -> dict[int, int]:
    rows = conn.execute(
        sa.select(B.c.number, B.c.variant).where(
            (B.c.edition_id == edition_id) & B.c.number.between(first, last) & (B.c.variant != 0)
        )
    )
    return {int(n): int(v) for n, v in rows}


def load_batch(conn: sa.Connection, edition_id: int, number: int) -> Batch:
    rows = conn.execute(
        sa.select(D.c.subscriber_id, D.c.email, D.c.name)
        .where((D.c.edition_id == edition_id) & (D.c.batch == number))
        .order_by(D.c.subscriber_id)
    )
    recipients = tuple(Recipient(r.subscriber_id, r.email, r.name) for r in rows)
    variant = _variants_of(conn, edition_id, number, number).get(number, 0)
    return Batch(edition_id=edition_id, number=number, recipients=recipients, variant=variant)


#: A batch back to ``pending`` is nobody's: unclaimed, and sent by no one yet.
NOBODYS: dict[str, Any] = {"claimed_by": None, "claim_expires": None, "sent_by": None}


def mark(
    conn: sa.Connection,
    edition_id: int,
    number: int,
    status: BatchStatus,
    now: datetime,
    *,
    provider_id: str | None = None,
    detail: str | None = None,
    attempts: int | None = None,
    relay: str | None = None,
    holder: str | None = None,
) -> None:
    """Record a batch's state. ``holder``: the instance sending it (``sent_by``); a batch
    put back to ``pending`` is nobody's any more."""
    values: dict[str, Any] = {"status": status, "updated_at": now, "detail": detail}
    if status is BatchStatus.PENDING:
        values |= NOBODYS
    elif holder is not None:
        values["sent_by"] = holder[:200]
    if provider_id is not None:
        values["provider_id"] = provider_id[:200]
    if relay is not None:  # the SMTP relay(s) it went through (several: "a:25,b:25")
        values["relay"] = relay[:300]
    if attempts is not None:
        values["attempts"] = B.c.attempts + attempts
    conn.execute(
        sa.update(B).where((B.c.edition_id == edition_id) & (B.c.number == number)).values(values)
    )


def reject(conn: sa.Connection, edition_id: int, rejected: Mapping[int, str]) -> None:
    """Recipients left out of a batch that otherwise went out (a refused address)."""
    for subscriber_id, reason in rejected.items():
        conn.execute(
            sa.update(D)
            .where((D.c.edition_id == edition_id) & (D.c.subscriber_id == subscriber_id))
            .values(error=reason[:2000])
        )


def requeue_failed(conn: sa.Connection, edition_id: int, now: datetime) -> int:
    """Put failed batches back to pending (``digest resend --failed``). Returns recipients."""
    return requeue(conn, edition_id, [BatchStatus.FAILED], now)


def requeue(
    conn: sa.Connection, edition_id: int, statuses: Sequence[BatchStatus], now: datetime
) -> int:
    """Put batches in these states back to pending, and the edition back to sending.
    Returns how many recipients they hold. ``digest resend`` does this."""
    where = (B.c.edition_id == edition_id) & B.c.status.in_(list(statuses))
    count = _recipients(conn, where)
    conn.execute(
        sa.update(B).where(where).values(status=BatchStatus.PENDING, updated_at=now, **NOBODYS)
    )
    if count:
        conn.execute(sa.update(E).where(E.c.id == edition_id).values(status=EditionStatus.SENDING))
    return count


@dataclass(frozen=True, slots=True)
class Tally:
    recipients: int
    delivered: int
    failed: int
    unknown: int
    pending: int
    status: EditionStatus
    waiting: int = 0  # in zone groups whose hour has not come (counted in ``pending``)


def tally(conn: sa.Connection, edition_id: int) -> Tally:
    sizes: dict[str, int] = {
        str(status): int(size)
        for status, size in conn.execute(
            sa.select(B.c.status, sa.func.sum(B.c.size))
            .where(B.c.edition_id == edition_id)
            .group_by(B.c.status)
        )
    }
    rejected = int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(D.join(B, (D.c.edition_id == B.c.edition_id) & (D.c.batch == B.c.number)))
            .where(
                (D.c.edition_id == edition_id)
                & D.c.error.is_not(None)
                & (B.c.status == BatchStatus.SENT)
            )
        ).scalar_one()
    )
    row = conn.execute(sa.select(E.c.status, E.c.recipients).where(E.c.id == edition_id)).one()
    return Tally(
        recipients=int(row.recipients),
        delivered=sizes.get(BatchStatus.SENT, 0) - rejected,
        failed=sizes.get(BatchStatus.FAILED, 0) + rejected,
        unknown=sizes.get(BatchStatus.UNKNOWN, 0),
        pending=sizes.get(BatchStatus.PENDING, 0)
        + sizes.get(BatchStatus.SENDING, 0)
        + sizes.get(BatchStatus.WAITING, 0),
        status=EditionStatus(row.status),
        waiting=sizes.get(BatchStatus.WAITING, 0),
    )


def settle(conn: sa.Connection, edition_id: int, now: datetime) -> Tally:
    """Close the edition if nothing is pending (nor being sent, nor waiting for its zone
    group): done, or abandoned if nothing went out to any of its recipients. An edition
    with none (every subscriber unticked all that was new in it) is done: its entries
    reached everyone who wanted them. Idempotent: any worker that finds nothing left to
    claim settles, and only the first one to do so closes it."""
    t = tally(conn, edition_id)
    if t.pending or t.status is not EditionStatus.SENDING:
        return t
    went_out = t.delivered + t.unknown > 0 or t.recipients == 0
    status = EditionStatus.DONE if went_out else EditionStatus.ABANDONED
    closed = conn.execute(
        sa.update(E)
        .where((E.c.id == edition_id) & (E.c.status == EditionStatus.SENDING))
        .values(
            status=status,
            finished_at=now,
            delivered=t.delivered,
            failed=t.failed,
            unknown=t.unknown,
        )
    )
    if not closed.rowcount:  # another worker settled it just now
        return tally(conn, edition_id)
    if status is EditionStatus.ABANDONED:
        # Its entries count as new again. Their feeds may answer "not modified" next
        # time, so forget the validators too: the next run reads them in full.
        feed_ids = sa.select(N.c.feed_id).where(N.c.edition_id == edition_id).distinct()
        F = schema.feeds
        conn.execute(
            sa.update(F)
            .where(F.c.id.in_(feed_ids))
            .values(etag=None, last_modified=None, body_hash=None)
        )
        conn.execute(sa.delete(N).where(N.c.edition_id == edition_id))
    return Tally(t.recipients, t.delivered, t.failed, t.unknown, 0, status)


def problems(conn: sa.Connection, edition_id: int, limit: int = 20) -> list[str]:
    """What went wrong in an edition, in words, for the run report."""
    out = []
    rows = conn.execute(
        sa.select(B.c.number, B.c.status, B.c.size, B.c.detail, B.c.relay)
        .where(
            (B.c.edition_id == edition_id)
            & B.c.status.in_([BatchStatus.FAILED, BatchStatus.UNKNOWN])
            & B.c.detail.is_not(None)
        )
        .order_by(B.c.number)
        .limit(limit)
    )
    for number, status, size, detail, relay in rows:
        via = f" via {relay}" if relay else ""  # the SMTP relay whose log to check
        out.append(
            f"batch {number} ({size} recipient{'s' if size != 1 else ''}) {status}{via}: {detail}"
        )
    rejected = conn.execute(
        sa.select(D.c.email, D.c.error)
        .where((D.c.edition_id == edition_id) & D.c.error.is_not(None))
        .limit(limit)
    )
    out.extend(f"{email}: {error}" for email, error in rejected)
    return out
