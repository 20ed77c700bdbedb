"""The fleet at a glance, read from the database (``digest status``): the instances seen
recently and what each does, the current edition's batches by state, by instance and by
relay, the recent editions with what became of their recipients, the complaints and
bounces the breaker judges, and the feeds' health. Reads only: no clock of its own (the
time is handed in), no network, no config.

What needs a person (an instance gone while it holds batches, recipients of the current
edition failed or unknown, the breaker holding the next edition) is ``Overview.problems``,
in words: ``digest status`` exits 1 when there is any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..model import BatchStatus, EditionStatus
from ..reputation import EditionRates, Thresholds, Verdict, judge
from . import fleet, health, record, reputation
from .db import schema

E, B = schema.editions, schema.batches
#: How many of the latest editions ``digest status`` lists.
EDITIONS = 8
#: A batch in these states is still to be settled: a claim on it is held work.
IN_FLIGHT = (BatchStatus.PENDING, BatchStatus.SENDING)
#: The order states are shown in (others, if a later version adds one, after them).
STATES = tuple(BatchStatus)


@dataclass(frozen=True, slots=True)
class Member:
    """An instance seen recently, with what the database says of it now."""

    seen: fleet.Seen
    #: ``gone`` (not seen for ``fleet.GONE``), else its own state (``stopped``...).
    state: str
    #: Unsettled batches it has claimed (pending or sending).
    claims: int

    @property
    def gone(self) -> bool:
        return self.state == "gone"


@dataclass(frozen=True, slots=True)
class Count:
    batches: int = 0
    recipients: int = 0


@dataclass(frozen=True, slots=True)
class Share:
    """One instance's (or relay's) part of an edition's batches, by state. ``who`` is
    None for batches nobody has claimed or sent yet (or sent before the fleet)."""

    who: str | None
    by_state: dict[str, Count]


@dataclass(frozen=True, slots=True)
class Past:
    """One of the latest editions and what became of its recipients. ``complaints`` and
    ``bounces`` (hard ones) from SendGrid's events, as the breaker counts them; None for
    an abandoned edition (nothing went out)."""

    id: int
    created_at: datetime
    status: str
    recipients: int
    delivered: int
    failed: int
    unknown: int
    pending: int
    complaints: int | None
    bounces: int | None


@dataclass(frozen=True, slots=True)
class Current:
    """The edition being sent (the latest unfinished one), else the latest one."""

    edition: Past
    subject: str
    by_state: dict[str, Count]
    by_instance: tuple[Share, ...]
    #: Only batches whose relay is recorded (SMTP relays); empty otherwise.
    by_relay: tuple[Share, ...]


@dataclass(frozen=True, slots=True)
class Reputation:
    """Complaints and hard bounces of the editions the breaker judges (those finished
    within ``reputation.LOOKBACK``, and those still going out), and its verdict."""

    since: datetime
    delivered: int
    complaints: int
    bounces: int
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Overview:
    now: datetime
    instances: tuple[Member, ...]
    current: Current | None
    editions: tuple[Past, ...]
    reputation: Reputation
    #: How many feeds are in each ``health.FeedStatus`` (every status, zeros too).
    feeds: dict[str, int]

    @property
    def problems(self) -> tuple[str, ...]:
        """What needs a person, in words; empty when all is well."""
        found = [
            f"instance {m.seen.id} ({m.seen.role} on {m.seen.host}) is gone holding "
            f"{m.claims} batch(es): another instance takes them over once the claims "
            f"expire (pending ones are sent, those caught sending become unknown)"
            for m in self.instances
            if m.gone and m.claims
        ]
        e = self.current.edition if self.current else None
        if e is not None and (e.failed or e.unknown):
            found.append(
                f"edition {e.id}: {e.failed} recipient(s) failed and {e.unknown} unknown "
                f"(`digest resend --edition {e.id} --failed`, `--unknown` after checking)"
            )
        if self.reputation.verdict.held:
            found.append(str(self.reputation.verdict.reason))
        return tuple(found)


def gather(
    conn: sa.Connection,
    now: datetime,
    thresholds: Thresholds,
    feed_urls: Sequence[str] | None = None,
    editions: int = EDITIONS,
) -> Overview:
    """Everything ``digest status`` shows, at ``now``. ``feed_urls``: the feeds to count
    (the config's; None: every feed the database knows)."""
    rates = reputation.recent_rates(conn, now - reputation.LOOKBACK)
    return Overview(
        now=now,
        instances=members(conn, now),
        current=current(conn),
        editions=latest(conn, editions),
        reputation=_reputation(conn, now, rates, thresholds),
        feeds=feed_counts(conn, feed_urls),
    )


def members(conn: sa.Connection, now: datetime) -> tuple[Member, ...]:
    seen = fleet.seen(conn, now)
    held: dict[str, int] = {}
    if seen:
        rows = conn.execute(
            sa.select(B.c.claimed_by, sa.func.count())
            .where(B.c.claimed_by.in_([s.id for s in seen]) & B.c.status.in_(IN_FLIGHT))
            .group_by(B.c.claimed_by)
        )
        held = {str(who): int(n) for who, n in rows}
    return tuple(Member(s, "gone" if s.gone(now) else s.state, held.get(s.id, 0)) for s in seen)


def current(conn: sa.Connection) -> Current | None:
    going = conn.execute(
        sa.select(sa.func.max(E.c.id)).where(E.c.status == EditionStatus.SENDING)
    ).scalar()
    latest_id = going or conn.execute(sa.select(sa.func.max(E.c.id))).scalar()
    if latest_id is None:
        return None
    row = conn.execute(sa.select(E).where(E.c.id == latest_id)).one()
    rates = {r.edition_id: r for r in reputation.recent_rates(conn, row.created_at)}
    # Who handled a batch: its sender once sent (or settled), else who holds its claim.
    who = sa.func.coalesce(B.c.sent_by, B.c.claimed_by)
    return Current(
        edition=_past(conn, row, rates.get(row.id)),
        subject=row.subject,
        by_state=_by(conn, row.id, None).get(None, {}),
        by_instance=_shares(_by(conn, row.id, who)),
        by_relay=_shares(_by(conn, row.id, B.c.relay, B.c.relay.is_not(None))),
    )


def _by(
    conn: sa.Connection,
    edition_id: int,
    key: sa.ColumnElement[str | None] | None,
    where: sa.ColumnElement[bool] | None = None,
) -> dict[str | None, dict[str, Count]]:
    """The edition's batches and recipients by ``key`` (None: all together) and state."""
    group = key if key is not None else sa.null()
    query = (
        sa.select(group, B.c.status, sa.func.count(), sa.func.sum(B.c.size))
        .where(B.c.edition_id == edition_id)
        .group_by(*([key] if key is not None else []), B.c.status)
    )
    if where is not None:
        query = query.where(where)
    found: dict[str | None, dict[str, Count]] = {}
    for who, status, n, size in conn.execute(query):
        found.setdefault(who, {})[str(status)] = Count(int(n), int(size or 0))
    return {who: _ordered(states) for who, states in found.items()}


def _ordered(by_state: dict[str, Count]) -> dict[str, Count]:
    order = {str(s): i for i, s in enumerate(STATES)}
    return dict(sorted(by_state.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _shares(found: dict[str | None, dict[str, Count]]) -> tuple[Share, ...]:
    """Named ones first (by name), the unclaimed batches last."""
    return tuple(
        Share(who, states)
        for who, states in sorted(found.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    )


def latest(conn: sa.Connection, count: int = EDITIONS) -> tuple[Past, ...]:
    """The latest ``count`` editions, newest first; an unfinished one counted from its
    batches, a finished one from its row (compacted ones have no batches left)."""
    rows = conn.execute(sa.select(E).order_by(E.c.id.desc()).limit(count)).all()
    finished = [r.finished_at for r in rows if r.status == EditionStatus.DONE and r.finished_at]
    rates: dict[int, EditionRates] = {}
    if rows:
        since = min(finished, default=max(r.created_at for r in rows))
        rates = {r.edition_id: r for r in reputation.recent_rates(conn, since)}
    return tuple(_past(conn, r, rates.get(r.id)) for r in rows)


def _past(conn: sa.Connection, row: sa.Row[Any], rate: EditionRates | None) -> Past:
    if row.status == EditionStatus.SENDING:
        t = record.tally(conn, row.id)
        counts = (t.delivered, t.failed, t.unknown, t.pending)
    else:
        counts = (row.delivered, row.failed, row.unknown, 0)
    return Past(
        row.id,
        row.created_at,
        row.status,
        row.recipients,
        *counts,
        rate.complaints if rate else None,
        rate.hard_bounces if rate else None,
    )


def _reputation(
    conn: sa.Connection, now: datetime, rates: list[EditionRates], thresholds: Thresholds
) -> Reputation:
    return Reputation(
        since=now - reputation.LOOKBACK,
        delivered=sum(r.delivered for r in rates),
        complaints=sum(r.complaints for r in rates),
        bounces=sum(r.hard_bounces for r in rates),
        verdict=judge(rates, thresholds, reputation.released_through(conn)),
    )


def feed_counts(conn: sa.Connection, urls: Sequence[str] | None) -> dict[str, int]:
    """How many feeds are in each status, as ``digest feeds`` shows them."""
    if urls is None:
        states = health.all_states(conn)
        statuses = [s.status for s in states]
    else:
        known = health.states(conn, urls, create=False)
        statuses = [known[u].status if u in known else health.FeedStatus.NEVER_READ for u in urls]
    return {str(s): statuses.count(s) for s in health.FeedStatus}
