"""Keeping the ledger from growing forever: compaction of finished editions.

Every edition writes one ``deliveries`` row per recipient (a million a day for a large
list) and one ``batches`` row per batch. Once an edition is settled (``done`` or
``abandoned``) and older than ``delivery.keep_ledger``, those rows are only history:
``compact`` deletes them, keeping the edition row with its counts (recipients,
delivered, failed, unknown, set when the edition settled) and marking it ``compacted``.
A compacted edition can no longer be re-sent (``digest resend`` says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from ..model import EditionStatus
from .db import schema

E, B, D = schema.editions, schema.batches, schema.deliveries


@dataclass(frozen=True, slots=True)
class Compacted:
    editions: int
    deliveries: int  # rows deleted
    batches: int


def compact(engine: sa.Engine, finished_before: datetime) -> Compacted:
    """Compact every settled edition finished before ``finished_before``, one edition
    per transaction (a crash in between leaves each edition either whole or compacted)."""
    with engine.connect() as conn:
        ids = [
            int(r[0])
            for r in conn.execute(
                sa.select(E.c.id)
                .where(
                    E.c.compacted.is_(False)
                    & E.c.status.in_([EditionStatus.DONE, EditionStatus.ABANDONED])
                    & (E.c.finished_at < finished_before)
                )
                .order_by(E.c.id)
            )
        ]
    deliveries = batches = 0
    for edition_id in ids:
        with engine.begin() as conn:
            deliveries += conn.execute(sa.delete(D).where(D.c.edition_id == edition_id)).rowcount
            batches += conn.execute(sa.delete(B).where(B.c.edition_id == edition_id)).rowcount
            conn.execute(sa.update(E).where(E.c.id == edition_id).values(compacted=True))
    return Compacted(len(ids), deliveries, batches)
