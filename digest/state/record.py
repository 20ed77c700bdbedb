"""Stage 6 · record: the delivery ledger.

The order of writes is what makes delivery exactly-once through crashes:

1. In **one transaction**: the edition (its rendered content, and the variants some
   subscribers' preferences call for), its entries, and its recipients frozen into
   ``deliveries`` and ``batches`` (all ``pending``; a batch holds one variant).
2. Per batch: claimed by one sender (``claim``: several instances may send one
   edition), marked ``sending`` and **committed before** the request goes out; then
   ``sent`` (with the provider's id) or ``failed`` (with the reason) as it settles.
3. When no batch is pending, the edition is settled: ``done``, or ``abandoned`` when
   nothing at all went out (its entries are then forgotten, so they count as new again).

After a crash, a batch still ``sending`` (whose sender is gone: ``sweep``) may or may
not have gone out: it becomes ``unknown``, is never re-sent automatically (a duplicate
digest is worse than a missing one) and is reported; ``pending`` batches are sent by
the next run before any new edition. Entries count as seen once their edition exists;
an abandoned edition gives them back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..model import (
    Batch,
    BatchStatus,
    Composed,
    EditionStatus,
    Entry,
    FeedSource,
    Known,
    Recipient,
    SubscriberStatus,
    Variants,
)
from . import lease
from .db import schema
from .db.bulk import chunks, insert_new
from .fleet import CLAIM_TTL

E, B, D, N = schema.editions, schema.batches, schema.deliveries, schema.entries
V = schema.variants


def link_key(canonical_link: str) -> str:
    return hashlib.sha256(canonical_link.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _recipients(conn: sa.Connection, where: sa.ColumnElement[bool]) -> int:
    """How many recipients the batches matching ``where`` hold."""
    query = sa.select(sa.func.coalesce(sa.func.sum(B.c.size), 0)).where(where)
    return int(conn.execute(query).scalar_one())


# -- what is known ------------------------------------------------------------------------


def known(
    conn: sa.Connection,
    entries: Sequence[Entry],
    feed_ids: Mapping[str, int],
    since: datetime | None = None,
) -> Known:
    """Which of these entries the ledger already knows: by identity, by canonical link,
    and (recorded after ``since``) by feed, title and content."""
    by_feed_id = {v: k for k, v in feed_ids.items()}
    identities: set[tuple[str, str]] = set()
    wanted = sorted({e.identity for e in entries})
    for chunk in chunks(wanted):
        rows = conn.execute(sa.select(N.c.feed_id, N.c.identity).where(N.c.identity.in_(chunk)))
        for feed_id, ident in rows:
            if feed_id in by_feed_id:
                identities.add((by_feed_id[feed_id], ident))
    keys = {link_key(e.canonical_link): e.canonical_link for e in entries if e.canonical_link}
    links: set[str] = set()
    for chunk in chunks(sorted(keys)):
        for (key,) in conn.execute(sa.select(N.c.link_key).where(N.c.link_key.in_(chunk))):
            links.add(keys[key])
    return Known(
        identities=frozenset(identities),
        canonical_links=frozenset(links),
        fingerprints=_sent_fingerprints(conn, entries, feed_ids),
        recent_content=_recent_content(conn, entries, feed_ids, since) if since else {},
    )


def _recent_content(
    conn: sa.Connection, entries: Sequence[Entry], feed_ids: Mapping[str, int], since: datetime
) -> dict[tuple[str, str], bool]:
    """(feed url, fingerprint) of the entries recorded since ``since`` with the
    fingerprint of one of these → whether one of those had no link."""
    by_feed_id = {v: k for k, v in feed_ids.items()}
    wanted = sorted({e.fingerprint for e in entries if e.fingerprint})
    found: dict[tuple[str, str], bool] = {}
    for chunk in chunks(wanted):
        rows = conn.execute(
            sa.select(N.c.feed_id, N.c.fingerprint, N.c.link_key).where(
                N.c.fingerprint.in_(chunk) & (N.c.first_seen_at >= since)
            )
        )
        for feed_id, fingerprint, key in rows:
            if feed_id in by_feed_id:
                where = (by_feed_id[feed_id], fingerprint)
                found[where] = found.get(where, False) or key is None
    return found


def _sent_fingerprints(
    conn: sa.Connection, entries: Sequence[Entry], feed_ids: Mapping[str, int]
) -> dict[tuple[str, str], str]:
    """(feed url, identity) → the fingerprint recorded when it was sent, for the
    entries of feeds with resend_updated."""
    by_feed_id = {v: k for k, v in feed_ids.items()}
    wanted = sorted({e.identity for e in entries if e.source.resend_updated})
    found: dict[tuple[str, str], str] = {}
    for chunk in chunks(wanted):
        rows = conn.execute(
            sa.select(N.c.feed_id, N.c.identity, N.c.fingerprint).where(
                N.c.identity.in_(chunk)
                & N.c.fingerprint.is_not(None)
                & N.c.edition_id.is_not(None)  # back catalogue was never sent: no update
            )
        )
        for feed_id, ident, fingerprint in rows:
            if feed_id in by_feed_id:
                found[(by_feed_id[feed_id], ident)] = fingerprint
    return found


def remember(
    conn: sa.Connection,
    entries: Iterable[Entry],
    feed_ids: Mapping[str, int],
    edition_id: int | None,
    now: datetime,
) -> None:
    """Record entries as known: sent in ``edition_id``, or baseline when it is None.
    An update (``Entry.updated``) moves its row to the new edition, new fingerprint."""
    entries = list(entries)
    rows = [
        {
            "feed_id": feed_ids[e.source.url],
            "identity": e.identity,
            "link_key": link_key(e.canonical_link) if e.canonical_link else None,
            "title": e.title[:1000],
            "link": e.link[:2048] if e.link else None,
            "published_at": e.published,
            "first_seen_at": now,
            "edition_id": edition_id,
            "fingerprint": e.fingerprint,
        }
        for e in entries
        if not e.updated
    ]
    insert_new(conn, N, rows)
    for e in entries:
        if e.updated:
            conn.execute(
                sa.update(N)
                .where((N.c.feed_id == feed_ids[e.source.url]) & (N.c.identity == e.identity))
                .values(edition_id=edition_id, fingerprint=e.fingerprint, title=e.title[:1000])
            )


# -- editions -----------------------------------------------------------------------------


def begin_edition(
    conn: sa.Connection,
    now: datetime,
    nonce: str,
    slot: datetime | None = None,
    cycle: str | None = None,
    weekly: bool = False,
) -> int:
    """Reserve the next edition id (inside the caller's transaction). ``slot``: the
    scheduled time it is made for (unique: a second edition for it fails here);
    ``cycle``: the wall-clock time it is for in every zone group; ``weekly``: whether
    it is the weekly readers' too."""
    result = conn.execute(
        sa.insert(E).values(
            created_at=now,
            slot=slot,
            cycle=cycle,
            weekly=weekly,
            status=EditionStatus.SENDING,
            subject="",
            html="",
            text="",
            nonce=nonce,
            item_count=0,
            more_count=0,
            recipients=0,
            delivered=0,
            failed=0,
            unknown=0,
            compacted=False,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def last_sent_id(conn: sa.Connection) -> int | None:
    """The latest edition that went out (finished, or still being sent), if any."""
    return conn.execute(
        sa.select(sa.func.max(E.c.id)).where(
            E.c.status.in_([EditionStatus.DONE, EditionStatus.SENDING])
        )
    ).scalar_one_or_none()


def next_edition_id(conn: sa.Connection) -> int:
    """What the next edition will probably be called (for previews)."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(E.c.id), 0))).scalar_one()) + 1


def save_content(
    conn: sa.Connection, composed: Composed, items: int, more: int, page: str | None = None
) -> None:
    """The edition's rendered parts, its counts, and its archive page (every story)."""
    conn.execute(
        sa.update(E)
        .where(E.c.id == composed.edition_id)
        .values(
            subject=composed.subject,
            html=composed.html,
            text=composed.text,
            item_count=items,
            more_count=more,
            page=page,
        )
    )


def save_variant(
    conn: sa.Connection,
    number: int,
    composed: Composed,
    dropped: frozenset[str],
    span: frozenset[int] | None = None,
) -> None:
    """Store variant ``number`` of ``composed.edition_id``: the edition (or the stories
    of the editions in ``span``) without ``dropped``."""
    conn.execute(
        sa.insert(V).values(
            edition_id=composed.edition_id,
            number=number,
            dropped=json.dumps(sorted(dropped)),
            span=json.dumps(sorted(span)) if span is not None else None,
            subject=composed.subject,
            html=composed.html,
            text=composed.text,
        )
    )


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


def unfinished(conn: sa.Connection, now: datetime | None = None) -> list[int]:
    """The editions still sending; with ``now``, only those with something to do now
    (not those only waiting for zone groups whose hour has not come)."""
    query = sa.select(E.c.id).where(E.c.status == EditionStatus.SENDING)
    if now is not None:
        later = sa.exists().where(
            (B.c.edition_id == E.c.id)
            & (B.c.status == BatchStatus.WAITING)
            & (B.c.release_at > now)
        )
        work = sa.exists().where(
            (B.c.edition_id == E.c.id)
            & (
                B.c.status.in_([BatchStatus.PENDING, BatchStatus.SENDING])
                | ((B.c.status == BatchStatus.WAITING) & (B.c.release_at <= now))
            )
        )
        query = query.where(work | ~later)
    return [int(r[0]) for r in conn.execute(query.order_by(E.c.id))]


def load_composed(conn: sa.Connection, edition_id: int) -> Composed:
    row = conn.execute(sa.select(E).where(E.c.id == edition_id)).one()
    return Composed(
        edition_id=row.id,
        subject=row.subject,
        html=row.html,
        text=row.text,
        created=row.created_at,
        nonce=row.nonce,
    )


def load_variants(conn: sa.Connection, edition: Composed) -> dict[int, Composed]:
    """The variants of ``edition`` (number → content); the edition itself is variant 0."""
    rows = conn.execute(
        sa.select(V).where(V.c.edition_id == edition.edition_id).order_by(V.c.number)
    )
    return {
        r.number: Composed(
            edition_id=edition.edition_id,
            subject=r.subject,
            html=r.html,
            text=r.text,
            created=edition.created,
            nonce=edition.nonce,
        )
        for r in rows
    }


def edition_entry_count(conn: sa.Connection, edition_id: int) -> int:
    row = conn.execute(sa.select(E.c.item_count, E.c.more_count).where(E.c.id == edition_id)).one()
    return int(row.item_count + row.more_count)


# -- cycles: the stories of each, for the editions that span several ---------------------


def _story(e: Entry) -> dict[str, Any]:
    window = e.source.first_run_window
    return {
        "source": [
            e.source.url,
            e.source.name,
            e.source.category,
            None if window is None else window.total_seconds(),
            e.source.resend_updated,
        ],
        "source_title": e.source_title,
        "identity": e.identity,
        "title": e.title,
        "link": e.link,
        "canonical_link": e.canonical_link,
        "summary": e.summary,
        "content_html": e.content_html,
        "published": e.published.isoformat(),
        "dated": e.dated,
        "author": e.author,
        "thumbnail": e.thumbnail,
        "categories": list(e.categories),
        "body_source": e.body_source,
        "body_base": e.body_base,
        "fingerprint": e.fingerprint,
        "updated": e.updated,
    }


def _entry(d: dict[str, Any]) -> Entry:
    url, name, category, window, resend = d.pop("source")
    source = FeedSource(
        url, name, category, None if window is None else timedelta(seconds=window), resend
    )
    published = datetime.fromisoformat(d.pop("published"))
    return Entry(source=source, published=published, categories=tuple(d.pop("categories")), **d)


def save_stories(conn: sa.Connection, edition_id: int, entries: Sequence[Entry]) -> None:
    """Keep the edition's new stories, for the weekly and catch-up editions that rank
    them again (``load_stories``)."""
    data = json.dumps([_story(e) for e in entries], ensure_ascii=False)
    conn.execute(sa.update(E).where(E.c.id == edition_id).values(stories=data))


def load_stories(conn: sa.Connection, edition_ids: Iterable[int]) -> dict[int, list[Entry]]:
    out: dict[int, list[Entry]] = {}
    for chunk in chunks(sorted(set(edition_ids))):
        rows = conn.execute(sa.select(E.c.id, E.c.stories).where(E.c.id.in_(chunk)))
        for edition_id, data in rows:
            out[int(edition_id)] = [_entry(d) for d in json.loads(data)] if data else []
    return out


@dataclass(frozen=True, slots=True)
class CycleRow:
    id: int
    cycle: str
    weekly: bool


def cycles(conn: sa.Connection, since: str) -> list[CycleRow]:
    """The editions made for cycles from ``since`` on (not abandoned: their stories
    count as new again), oldest first."""
    rows = conn.execute(
        sa.select(E.c.id, E.c.cycle, E.c.weekly)
        .where(
            E.c.cycle.is_not(None) & (E.c.cycle >= since) & (E.c.status != EditionStatus.ABANDONED)
        )
        .order_by(E.c.id)
    )
    return [CycleRow(int(r.id), str(r.cycle), bool(r.weekly)) for r in rows]


def last_cycle(conn: sa.Connection) -> str | None:
    """The latest cycle an edition was made for."""
    return conn.execute(sa.select(sa.func.max(E.c.cycle))).scalar()


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
    free = (
        (B.c.edition_id == edition_id)
        & (B.c.status == BatchStatus.PENDING)
        & (B.c.claimed_by.is_(None) | B.c.claim_expires.is_(None) | (B.c.claim_expires <= now))
    )
    pick = sa.select(B.c.number).where(free).order_by(B.c.number).limit(limit)
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
        values |= {"claimed_by": None, "claim_expires": None, "sent_by": None}
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
        sa.update(B)
        .where(where)
        .values(
            status=BatchStatus.PENDING,
            updated_at=now,
            claimed_by=None,
            claim_expires=None,
            sent_by=None,
        )
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
