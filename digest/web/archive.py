"""The public archive: past editions as sent, with nobody's personal links, and an Atom feed.

An edition's stored HTML has markers where each recipient's links and address go;
the archive fills them with neutral values (``ARCHIVE_VALUES``), so no token and
no address ever appears. Only finished editions (``done``) are shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from xml.sax.saxutils import escape, quoteattr

import sqlalchemy as sa

from ..mail.markers import personalize
from ..model import Composed, EditionStatus
from ..state.db import schema

E, N = schema.editions, schema.entries
PAGE = 50


def archive_values(base_url: str) -> dict[str, str]:
    return {
        "unsubscribe_url": f"{base_url}/unsubscribe",
        "preferences_url": f"{base_url}/preferences",
        "email": "you",
        "name": "",
    }


@dataclass(frozen=True, slots=True)
class Listed:
    id: int
    subject: str
    sent: datetime
    entries: int


def listing(conn: sa.Connection, page: int = 1) -> tuple[list[Listed], bool]:
    """One page of finished editions, newest first, and whether there are more."""
    rows = conn.execute(
        sa.select(E.c.id, E.c.subject, E.c.created_at, E.c.item_count, E.c.more_count)
        .where(E.c.status == EditionStatus.DONE)
        .order_by(E.c.id.desc())
        .limit(PAGE + 1)
        .offset((page - 1) * PAGE)
    ).all()
    listed = [Listed(r.id, r.subject, r.created_at, r.item_count + r.more_count) for r in rows]
    return listed[:PAGE], len(listed) > PAGE


def edition_html(conn: sa.Connection, edition_id: int, base_url: str) -> str | None:
    """The edition's archive page: every story of it in the e-mail's layout (rendered
    when the edition was made), with nobody's personal links. Editions made before
    digest kept that page show their e-mail, with the stories it did not list after it."""
    row = conn.execute(
        sa.select(E).where((E.c.id == edition_id) & (E.c.status == EditionStatus.DONE))
    ).first()
    if row is None:
        return None
    composed = Composed(
        row.id, row.subject, row.page or row.html, row.text, row.created_at, row.nonce
    )
    html, _text = personalize(composed, archive_values(base_url))
    return html if row.page else with_hidden_stories(conn, edition_id, html)


def with_hidden_stories(conn: sa.Connection, edition_id: int, html: str) -> str:
    """For an edition stored without its archive page: the stories of the edition the
    e-mail does not link to are listed after it (an entry without a link by its title)."""
    rows = conn.execute(
        sa.select(N.c.title, N.c.link)
        .where(N.c.edition_id == edition_id)
        .order_by(N.c.published_at.desc())
    ).all()
    shown = links_in(html)
    missing = [(t, link) for t, link in rows if not link or link not in shown]
    if not missing:
        return html
    items = "".join(
        f'<li style="margin:0 0 6px;"><a href={quoteattr(link)}>{escape(title)}</a></li>'
        if link
        else f'<li style="margin:0 0 6px;">{escape(title)}</li>'
        for title, link in missing
    )
    section = (
        '<section id="headlines" style="max-width:600px;margin:0 auto;padding:16px 24px 32px;'
        "font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:15px;"
        'line-height:1.5;">'
        f'<h2 style="font-size:18px;">The rest of this edition</h2><ul>{items}</ul></section>'
    )
    at = html.lower().rfind("</body>")
    return html[:at] + section + html[at:] if at >= 0 else html + section


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.found.update(value for name, value in attrs if name == "href" and value)


def links_in(html: str) -> set[str]:
    """The targets of the page's links, as written before HTML escaping: an entry's link
    is compared with these, never searched for in the markup (which escapes ``&``, ``"``
    and more, each serializer its own way)."""
    parser = _Links()
    parser.feed(html)
    parser.close()
    return parser.found


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def atom(conn: sa.Connection, title: str, base_url: str, limit: int = 20) -> str:
    """An Atom feed of the latest editions: each links to its archive page and lists
    its stories."""
    editions, _more = listing(conn)
    editions = editions[:limit]
    ids = [e.id for e in editions]
    stories: dict[int, list[tuple[str, str | None]]] = {i: [] for i in ids}
    if ids:
        for edition_id, story, link in conn.execute(
            sa.select(N.c.edition_id, N.c.title, N.c.link)
            .where(N.c.edition_id.in_(ids))
            .order_by(N.c.published_at.desc())
        ):
            stories[edition_id].append((story, link))
    updated = _iso(editions[0].sent) if editions else "1970-01-01T00:00:00Z"
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        f"<title>{escape(title)}</title>",
        f"<id>{escape(base_url)}/archive</id>",
        f'<link rel="alternate" type="text/html" href={quoteattr(base_url + "/archive")}/>',
        f'<link rel="self" href={quoteattr(base_url + "/archive/feed.xml")}/>',
        f"<updated>{updated}</updated>",
    ]
    for e in editions:
        url = f"{base_url}/archive/{e.id}"
        items = "".join(
            f"<li><a href={quoteattr(link)}>{escape(story)}</a></li>"
            if link
            else f"<li>{escape(story)}</li>"
            for story, link in stories[e.id]
        )
        out += [
            "<entry>",
            f"<title>{escape(e.subject)}</title>",
            f"<id>{escape(url)}</id>",
            f'<link rel="alternate" type="text/html" href={quoteattr(url)}/>',
            f"<updated>{_iso(e.sent)}</updated>",
            f"<author><name>{escape(title)}</name></author>",
            f'<content type="html">{escape(f"<ul>{items}</ul>")}</content>',
            "</entry>",
        ]
    out.append("</feed>")
    return "\n".join(out) + "\n"
