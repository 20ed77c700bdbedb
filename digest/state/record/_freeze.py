"""The recipients of an edition frozen into deliveries and batches, by choice, zone
group and variant, in one transaction with the edition."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ...model import (
    BatchStatus,
    SubscriberStatus,
    Variants,
)
from ..db import schema
from ..db.bulk import chunks
from ._batches import _recipients

E, B, D = schema.editions, schema.batches, schema.deliveries


@dataclass(frozen=True, slots=True)
class Choice:
    """What a number of active subscribers stored alike: their frequency, zone, ledger
    cursor (None: in step) and preferences (JSON). Editions are planned per choice, so
    a million subscribers with a few hundred distinct choices are a few hundred rows."""

    frequency: str | None
    timezone: str | None
    covered_through: int | None
    preferences: str | None


def _choice_key(S: sa.Table) -> list[sa.ColumnElement[Any]]:
    """The columns of a choice, each with NULL as a value a column never holds."""
    return [
        sa.func.coalesce(S.c.frequency, ""),
        sa.func.coalesce(S.c.timezone, ""),
        sa.func.coalesce(S.c.covered_through, -1),
        sa.func.coalesce(S.c.preferences, ""),
    ]


def choices(
    conn: sa.Connection, default_zone: str, daily_default: bool, everyone: bool = False
) -> dict[Choice, int]:
    """The distinct choices of active subscribers, with how many made each; the plain
    one left out unless ``everyone``: daily (stored as nothing or "daily", when
    ``daily_default``), in ``default_zone``, in step, without preferences. Plain
    subscribers (most, at scale) get the edition itself in the default zone group."""
    S = schema.subscribers
    daily = (S.c.frequency.is_(None) | (S.c.frequency == "daily")) if daily_default else sa.false()
    zone = S.c.timezone.is_(None) | (S.c.timezone == default_zone)
    plain = daily & zone & S.c.covered_through.is_(None) & S.c.preferences.is_(None)
    columns = [S.c.frequency, S.c.timezone, S.c.covered_through, S.c.preferences]
    query = sa.select(*columns, sa.func.count()).where(S.c.status == SubscriberStatus.ACTIVE)
    if not everyone:
        query = query.where(sa.not_(plain))
    rows = conn.execute(query.group_by(*columns))
    return {Choice(*row[:4]): int(row[4]) for row in rows}


@dataclass(frozen=True)
class Grouping:
    """Who is in which zone group with which variant, by their choices; when each zone
    group's hour comes."""

    default: str  # the zone of the plain subscribers (and of any choice not listed)
    groups: Mapping[Choice, tuple[str, int] | None]  # → (zone group, variant); None: left out
    release: Mapping[str, datetime]  # zone group → when it goes
    #: Choices of those who were behind (a cursor) and are in step with this edition.
    caught_up: frozenset[Choice] = frozenset()


def freeze_recipients(
    conn: sa.Connection,
    edition_id: int,
    batch_size: int,
    now: datetime,
    variants: Variants | None = None,
    *,
    engaged_first: bool = False,
    grouping: Grouping | None = None,
) -> int:
    """Copy the active subscribers into the edition's deliveries, in batches. Returns how many.

    One INSERT ... SELECT: the list is never loaded into memory, whatever its size. Each
    batch holds one group, a zone group's subscribers of one variant: by their choices
    (``grouping``), or by subscriber (``variants``), both written first to small
    temporary tables; everyone else is in group 0, the default zone and the edition
    itself. Those with nothing to receive, or whose edition this is not, are left out.
    A zone group whose hour has not come waits.
    ``engaged_first`` (a warm-up sends the first batches first, and the rest on later
    days): those who never bounced before those who did, then the longest subscribed
    first. Each recipient's cursor before this edition is kept in ``deliveries.since``.
    """
    S, EV = schema.subscribers, schema.events
    groups, members, by_choice = _groups(variants or Variants(), grouping)
    variant_of = {g: v for g, (_, v) in groups.items()}
    T = _member_table(conn, members, variant_of)
    C = _choice_table(conn, by_choice, variant_of, grouping.caught_up if grouping else frozenset())
    order: list[sa.ColumnElement[Any]] = [S.c.id]
    if engaged_first:
        bounced = sa.exists().where((EV.c.subscriber_id == S.c.id) & (EV.c.kind == "bounce"))
        since = sa.func.coalesce(S.c.confirmed_at, S.c.created_at)
        order = [sa.case((bounced, 1), else_=0), since, S.c.id]
    group = sa.func.coalesce(T.c.grp, C.c.grp, 0)
    active = sa.select(sa.func.count()).where(S.c.status == SubscriberStatus.ACTIVE)
    stride = int(conn.execute(active).scalar_one()) // batch_size + 1  # batches a group may fill
    number = sa.func.row_number().over(partition_by=group, order_by=order) - 1
    # each group's variant is a column of the small tables, not a CASE over every group
    # evaluated for each subscriber
    variant = sa.func.coalesce(T.c.variant, C.c.variant, 0)
    same = sa.and_(  # C's own columns, unwrapped: its primary key finds the row
        *(a == b for a, b in zip(_choice_key(S), list(C.c)[:4], strict=True))
    )
    joined = S.outerjoin(T, T.c.subscriber_id == S.c.id).outerjoin(C, same)
    select = (
        sa.select(
            sa.literal(edition_id),
            S.c.id,
            group * stride + number // batch_size,
            variant,
            S.c.email,
            S.c.name,
            S.c.covered_through,
        )
        .select_from(joined)
        .where((S.c.status == SubscriberStatus.ACTIVE) & (group >= 0))
    )
    columns = ["edition_id", "subscriber_id", "batch", "variant", "email", "name", "since"]
    conn.execute(sa.insert(D).from_select(columns, select))
    if grouping is not None and grouping.caught_up:
        behind = sa.exists().where(same & (C.c.caught_up == sa.true()))
        conn.execute(
            sa.update(S)
            .where((S.c.status == SubscriberStatus.ACTIVE) & S.c.covered_through.is_not(None))
            .where(behind)
            .values(covered_through=None)
        )
    T.drop(conn)
    C.drop(conn)
    mine = D.c.edition_id == edition_id
    conn.execute(
        sa.insert(B).from_select(
            ["edition_id", "number", "variant", "size", "status", "attempts", "updated_at"],
            sa.select(
                sa.literal(edition_id),
                D.c.batch,
                D.c.variant,
                sa.func.count(),
                sa.literal(BatchStatus.PENDING.value),
                sa.literal(0),
                sa.literal(now, schema.UTCDateTime),
            )
            .where(mine)
            .group_by(D.c.batch, D.c.variant),
        )
    )
    if grouping is not None:
        _hold_for_zones(conn, edition_id, now, grouping.release, groups, stride)
    total = _recipients(conn, B.c.edition_id == edition_id)
    conn.execute(sa.update(E).where(E.c.id == edition_id).values(recipients=total))
    return total


def _groups(
    variants: Variants, grouping: Grouping | None
) -> tuple[dict[int, tuple[str, int]], dict[int, int], dict[Choice, int]]:
    """Group number → (zone group, variant); subscriber → group and choice → group for
    all not in group 0 (the default zone, the edition itself); -1: left out."""
    default = grouping.default if grouping else ""
    keys: set[tuple[str, int]] = {(default, v) for v in variants.assigned.values()}
    if grouping is not None:
        keys |= {g for g in grouping.groups.values() if g is not None}
    numbered = {key: n for n, key in enumerate(sorted(keys - {(default, 0)}), 1)}
    numbered[(default, 0)] = 0
    members = {s: numbered[(default, v)] for s, v in variants.assigned.items()}
    for subscriber_id in variants.nothing | variants.later:
        members[subscriber_id] = -1
    by_choice = {}
    if grouping is not None:
        by_choice = {c: -1 if g is None else numbered[g] for c, g in grouping.groups.items()}
    return {n: key for key, n in numbered.items()}, members, by_choice


def _member_table(
    conn: sa.Connection, members: Mapping[int, int], variant_of: Mapping[int, int]
) -> sa.Table:
    """A temporary table of ``members`` (subscriber → group, and its variant)."""
    T = sa.Table(
        "freeze_members",
        sa.MetaData(),
        sa.Column("subscriber_id", sa.Integer, primary_key=True),
        sa.Column("grp", sa.Integer, nullable=False),
        sa.Column("variant", sa.Integer, nullable=False),
        prefixes=["TEMPORARY"],
    )
    T.create(conn)
    rows = [
        {"subscriber_id": s, "grp": g, "variant": variant_of.get(g, 0)} for s, g in members.items()
    ]
    for chunk in chunks(rows, 10_000):
        conn.execute(sa.insert(T), list(chunk))
    return T


def _choice_table(
    conn: sa.Connection,
    by_choice: Mapping[Choice, int],
    variant_of: Mapping[int, int],
    caught_up: frozenset[Choice],
) -> sa.Table:
    """A temporary table of choices (→ group, its variant, and whether they are in step
    again), keyed by the values ``_choice_key`` makes of a subscriber's columns."""
    C = sa.Table(
        "freeze_choices",
        sa.MetaData(),
        sa.Column("frequency", sa.String(8), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("covered_through", sa.Integer, nullable=False),
        sa.Column("preferences", sa.Text, nullable=False),
        sa.Column("grp", sa.Integer, nullable=False),
        sa.Column("variant", sa.Integer, nullable=False),
        sa.Column("caught_up", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("frequency", "timezone", "covered_through", "preferences"),
        prefixes=["TEMPORARY"],
    )
    C.create(conn)
    rows = [
        {
            "frequency": c.frequency or "",
            "timezone": c.timezone or "",
            "covered_through": -1 if c.covered_through is None else c.covered_through,
            "preferences": c.preferences or "",
            "grp": g,
            "variant": variant_of.get(g, 0),
            "caught_up": c in caught_up,
        }
        for c, g in by_choice.items()
    ]
    for chunk in chunks(rows, 10_000):
        conn.execute(sa.insert(C), list(chunk))
    return C


def _hold_for_zones(
    conn: sa.Connection,
    edition_id: int,
    now: datetime,
    release: Mapping[str, datetime],
    groups: Mapping[int, tuple[str, int]],
    stride: int,
) -> None:
    """Each batch's zone group and hour; those whose hour has not come wait."""
    mine = B.c.edition_id == edition_id
    for group, (zone, _) in groups.items():
        at = release[zone]
        conn.execute(
            sa.update(B)
            .where(mine & B.c.number.between(group * stride, group * stride + stride - 1))
            .values(
                zone=zone,
                release_at=at,
                status=BatchStatus.WAITING if at > now else BatchStatus.PENDING,
            )
        )
