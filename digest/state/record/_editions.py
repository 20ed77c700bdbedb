"""Editions: made, their content and variants saved and loaded; the stories of each
cycle, for the editions that span several."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ...model import (
    BatchStatus,
    Composed,
    EditionStatus,
    Entry,
    FeedSource,
)
from ..db import schema
from ..db.bulk import chunks

E, B, V = schema.editions, schema.batches, schema.variants
S = schema.edition_stories


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
    conn.execute(sa.insert(S).values(edition_id=edition_id, stories=data))


def load_stories(conn: sa.Connection, edition_ids: Iterable[int]) -> dict[int, list[Entry]]:
    """The stories kept for each of ``edition_ids``; an edition with none kept (made
    before 0009) is left out."""
    out: dict[int, list[Entry]] = {}
    for chunk in chunks(sorted(set(edition_ids))):
        rows = conn.execute(sa.select(S.c.edition_id, S.c.stories).where(S.c.edition_id.in_(chunk)))
        for edition_id, data in rows:
            out[int(edition_id)] = [_entry(d) for d in json.loads(data)]
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
