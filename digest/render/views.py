"""What templates see: the edition, its groups and items, the recipient.

Frozen dataclasses with plain fields; docs/templates.md documents every field (a test
keeps the two in step). Nothing here renders or reads a clock.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ..mail.markers import Marker
from ..model import Entry

GroupBy = Literal["category", "feed", "none"]
ELLIPSIS = "…"
#: ``digest.subject``: a Jinja2 template over title, date, count and top.
DEFAULT_SUBJECT = (
    "{{ title }}{% if top %}: {{ top }}{% endif %}"
    "{% if count > 1 %} ({{ _('+%(num)s more', num=(count - 1) | number) }}){% endif %}"
)


@dataclass(frozen=True, slots=True)
class AlsoView:
    """Another feed carrying the same story: its name and its link to it."""

    source: str
    link: str | None


@dataclass(frozen=True, slots=True)
class ItemView:
    """One entry, as templates see it."""

    title: str
    link: str | None
    summary: str
    source: str
    category: str | None
    categories: tuple[str, ...]
    published: datetime
    dated: bool
    author: str | None
    thumbnail: str | None
    #: 1, 2, 3... in the order ``edition.items`` shows them; 0 for a headline in ``more``.
    number: int = 0
    #: Sent in an earlier edition, and changed since (feeds with ``resend_updated``).
    updated: bool = False
    #: The same story from other feeds: "Also in: B, C" (``cluster``).
    also: tuple[AlsoView, ...] = ()
    #: The language the feed declares for it (a checked BCP 47 tag), for ``lang=""``.
    lang: str | None = None

    @property
    def anchor(self) -> str:
        """The id of the item in the HTML (``#item-3``), for the table of contents."""
        return f"item-{self.number}"

    @classmethod
    def of(
        cls,
        entry: Entry,
        number: int = 0,
        summary_limit: int | None = None,
        thumbnails: bool = True,
    ) -> ItemView:
        return cls(
            title=entry.title,
            link=entry.link,
            summary=shorten(entry.summary, summary_limit) if summary_limit else entry.summary,
            source=entry.source_title,
            category=entry.source.category,
            categories=entry.categories,
            published=entry.published,
            dated=entry.dated,
            author=entry.author,
            thumbnail=entry.thumbnail if thumbnails else None,
            number=number,
            updated=entry.updated,
            also=tuple(AlsoView(e.source_title, e.link) for e in entry.also),
            lang=entry.language,
        )


@dataclass(frozen=True, slots=True)
class GroupView:
    """Items under one heading: a category, a feed, or (``name`` None) no heading."""

    name: str | None
    items: tuple[ItemView, ...]


@dataclass(frozen=True, slots=True)
class HeadlineGroup:
    """Headlines under one heading, grouped like the items; in the e-mail at most
    ``email.headlines_per_group`` of them, the rest counted and linked online."""

    name: str | None
    items: tuple[ItemView, ...]  # listed here
    more: int  # of this group, not listed here: "12 more from Technology →"
    anchor: str  # the group's id on the archive page: "more-technology"
    url: str  # the group on the archive page: "{archive_url}#more-technology"
    #: The groups of which the size budget left no headline here, as one link: "212 more
    #: new stories →" to the headlines on the archive page (no heading of its own).
    others: bool = False


@dataclass(frozen=True, slots=True)
class EditionView:
    """The edition, as templates see it."""

    id: int
    title: str
    date: datetime  # when the edition was made, in the digest's time zone
    lead: ItemView | None  # the most important story, shown first and largest
    items: tuple[ItemView, ...]  # shown in full: the lead, then the groups' items in order
    groups: tuple[GroupView, ...]  # the items after the lead, grouped
    headlines: tuple[HeadlineGroup, ...]  # the rest, as headlines, grouped like the items
    more: tuple[ItemView, ...]  # every headline listed, in the order of ``headlines``
    hidden: int  # new too, but not listed in this part: counted, and listed online
    archive_url: str  # this edition on the web ("view in browser")
    contents: bool  # show a table of contents
    shortened: bool  # summaries were shortened to fit the size budget
    online: bool = False  # the archive page: every story listed, nothing counted

    @property
    def count(self) -> int:
        """Every new entry of the edition: shown, listed and counted."""
        return len(self.items) + len(self.more) + self.hidden

    @property
    def grouped(self) -> bool:
        """True when the groups have headings."""
        return any(g.name for g in self.groups)


@dataclass(frozen=True, slots=True)
class RecipientView:
    """The recipient's personal values: markers, filled in per recipient after rendering."""

    unsubscribe_url: Marker
    preferences_url: Marker
    email: Marker
    name: Marker


def group(entries: Sequence[Entry], by: GroupBy) -> list[tuple[str | None, list[Entry]]]:
    """Entries under their headings, in order of each heading's first (newest) entry;
    entries without a category come last, under no heading of their own."""
    if by == "none":
        return [(None, list(entries))] if entries else []
    groups: dict[str | None, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(group_key(entry, by), []).append(entry)
    named = [(k, v) for k, v in groups.items() if k is not None]
    return named + ([(None, groups[None])] if None in groups else [])


def group_key(entry: Entry, by: GroupBy) -> str | None:
    """The heading an entry goes under (None: no heading of its own)."""
    if by == "none":
        return None
    return (entry.source.category if by == "category" else entry.source_title) or None


def headline_groups(
    entries: Sequence[Entry], listed: int, by: GroupBy, cap: int | None
) -> list[tuple[str | None, list[Entry], int]]:
    """Headlines grouped like the items, in order of each group's first entry (those
    without a heading last): of each group, at most ``cap`` entries (None: no cap), its
    feeds taking turns; of those of every group, the first ``listed`` in the edition's
    order (the size budget's); and how many each group has besides."""
    groups = _grouped(entries, by)
    capped = {key: _taking_turns(members)[:cap] for key, members in groups.items()}
    chosen = set(sorted(i for members in capped.values() for i, _e in members)[:listed])
    out = []
    for key, members in capped.items():
        shown = [e for i, e in members if i in chosen]
        out.append((key, shown, len(groups[key]) - len(shown)))
    return out


def listable(entries: Sequence[Entry], by: GroupBy, cap: int | None) -> int:
    """How many of ``entries`` ``headline_groups`` can list: at most ``cap`` a group."""
    sizes = [len(members) for members in _grouped(entries, by).values()]
    return sum(sizes if cap is None else (min(n, cap) for n in sizes))


def _grouped(entries: Sequence[Entry], by: GroupBy) -> dict[str | None, list[tuple[int, Entry]]]:
    """Entries with their index, by heading, in order of each heading's first entry
    (no heading last)."""
    groups: dict[str | None, list[tuple[int, Entry]]] = {}
    for i, entry in enumerate(entries):
        groups.setdefault(group_key(entry, by), []).append((i, entry))
    if None in groups:
        groups[None] = groups.pop(None)  # last
    return groups


def _taking_turns(members: list[tuple[int, Entry]]) -> list[tuple[int, Entry]]:
    """A group's entries with its feeds taking turns (each feed's in their order), so a
    feed with many new entries does not fill a group's few headlines on its own."""
    turn: dict[str, int] = {}
    keyed = []
    for i, entry in members:
        n = turn[entry.source.url] = turn.get(entry.source.url, -1) + 1
        keyed.append(((n, i), (i, entry)))
    return [m for _k, m in sorted(keyed, key=lambda k: k[0])]


def anchors(names: Sequence[str | None]) -> dict[str | None, str]:
    """An HTML id per group name, the same whichever part or page is rendered: readable
    where the name allows ("more-technology"), unique in the edition."""
    out: dict[str | None, str] = {}
    taken: set[str] = set()
    for name in sorted(set(names), key=lambda n: (n is None, n or "")):
        words = unicodedata.normalize("NFKD", name or "other").encode("ascii", "ignore").decode()
        slug = "-".join(re.findall(r"[a-z0-9]+", words.lower()))[:40].strip("-")
        if not slug:
            slug = hashlib.sha1((name or "").encode()).hexdigest()[:8]
        anchor, n = f"more-{slug}", 2
        while anchor in taken:
            anchor, n = f"more-{slug}-{n}", n + 1
        taken.add(anchor)
        out[name] = anchor
    return out


def shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" \n,;:.-–—") + ELLIPSIS
