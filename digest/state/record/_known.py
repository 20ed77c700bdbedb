"""What the ledger knows of entries: by identity, by canonical link, by content;
and ``remember``, which records them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa

from ...model import (
    Entry,
    Known,
)
from ..db import schema
from ..db.bulk import chunks, insert_new

N = schema.entries


def link_key(canonical_link: str) -> str:
    return hashlib.sha256(canonical_link.encode("utf-8", "surrogatepass")).hexdigest()[:40]


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
