"""What the breaker and the warm-up read from the ledger: each recent edition's
complaint and hard-bounce counts (from SendGrid's recorded events), the edition the
operator last released, and how many recipients were sent to since a time.

The decisions themselves are ``digest/reputation.py``'s (pure).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..model import BatchStatus, EditionStatus
from ..reputation import EditionRates, Thresholds, Verdict, judge
from .db import schema

RELEASED_KEY = "breaker.released_through"
#: Events whose edition id is one of these kinds count against it.
COMPLAINT, BOUNCE = "spamreport", "bounce"


def recent_rates(conn: sa.Connection, since: datetime) -> list[EditionRates]:
    """Each edition finished since ``since``, or still going out (a warm-up spreads one
    over days), newest first, with the subscribers who reported it as spam and those
    whose address hard-bounced (a ``blocked`` bounce is a refusal of the message, not
    of the address: not counted)."""
    E, EV, B = schema.editions, schema.events, schema.batches
    sent_so_far = (
        sa.select(sa.func.coalesce(sa.func.sum(B.c.size), 0))
        .where((B.c.edition_id == E.c.id) & (B.c.status == BatchStatus.SENT))
        .scalar_subquery()
    )
    delivered = sa.case((E.c.status == EditionStatus.DONE, E.c.delivered), else_=sent_so_far)
    editions = conn.execute(
        sa.select(E.c.id, delivered.label("delivered"))
        .where(
            ((E.c.status == EditionStatus.DONE) & (E.c.finished_at >= since))
            | (E.c.status == EditionStatus.SENDING)
        )
        .order_by(E.c.id.desc())
    ).all()
    if not editions:
        return []
    ids = [row.id for row in editions]
    who = sa.func.coalesce(sa.cast(EV.c.subscriber_id, sa.String), sa.func.lower(EV.c.email))
    rows = conn.execute(
        sa.select(EV.c.edition_id, EV.c.kind, who.label("who"), EV.c.payload).where(
            EV.c.edition_id.in_(ids) & EV.c.kind.in_([COMPLAINT, BOUNCE])
        )
    )
    complaints: dict[int, set[str]] = {}
    bounces: dict[int, set[str]] = {}
    for edition_id, kind, person, payload in rows:
        if kind == COMPLAINT:
            complaints.setdefault(edition_id, set()).add(str(person))
        elif _hard(payload):
            bounces.setdefault(edition_id, set()).add(str(person))
    return [
        EditionRates(
            row.id,
            int(row.delivered),
            len(complaints.get(row.id, ())),
            len(bounces.get(row.id, ())),
        )
        for row in editions
    ]


def _hard(payload: str) -> bool:
    try:
        event = json.loads(payload)
    except ValueError:
        return True
    kind = event.get("type") if isinstance(event, dict) else None
    return not (isinstance(kind, str) and kind.lower() == "blocked")


def released_through(conn: sa.Connection) -> int:
    M = schema.meta
    value = conn.execute(sa.select(M.c.value).where(M.c.key == RELEASED_KEY)).scalar()
    return int(value) if value and value.isdigit() else 0


def release(conn: sa.Connection) -> int:
    """Release the hold: every edition made so far is forgiven. Returns the last one."""
    E, M = schema.editions, schema.meta
    last = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(E.c.id), 0))).scalar_one())
    conn.execute(sa.delete(M).where(M.c.key == RELEASED_KEY))
    conn.execute(sa.insert(M).values(key=RELEASED_KEY, value=str(last)))
    return last


def sent_since(conn: sa.Connection, since: datetime) -> int:
    """Recipients in batches handed over since ``since`` (sent, unknown, or being sent):
    what a day's warm-up limit counts."""
    B = schema.batches
    went = [BatchStatus.SENT, BatchStatus.UNKNOWN, BatchStatus.SENDING]
    query = sa.select(sa.func.coalesce(sa.func.sum(B.c.size), 0)).where(
        B.c.status.in_(went) & (B.c.updated_at >= since)
    )
    return int(conn.execute(query).scalar_one())


#: Editions finished this long ago or less are judged by the breaker (complaints come
#: in for days after an edition; older ones were judged when the next was made).
LOOKBACK = timedelta(days=14)


def verdict(conn: sa.Connection, thresholds: Thresholds, now: datetime) -> Verdict:
    """The breaker's verdict now: ``reputation.judge`` over the recent editions."""
    return judge(recent_rates(conn, now - LOOKBACK), thresholds, released_through(conn))
