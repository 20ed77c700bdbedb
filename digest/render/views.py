"""What templates see: the edition, its groups and items, the recipient.

Frozen dataclasses with plain fields; docs/templates.md documents every field (a test
keeps the two in step). Nothing here renders or reads a clock.
"""

from __future__ import annotations

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
        )


@dataclass(frozen=True, slots=True)
class GroupView:
    """Items under one heading: a category, a feed, or (``name`` None) no heading."""

    name: str | None
    items: tuple[ItemView, ...]


@dataclass(frozen=True, slots=True)
class EditionView:
    """The edition, as templates see it."""

    id: int
    title: str
    date: datetime  # when the edition was made, in the digest's time zone
    items: tuple[ItemView, ...]  # shown in full, in the order the groups show them
    groups: tuple[GroupView, ...]  # the same items, grouped
    more: tuple[ItemView, ...]  # new too, listed as headlines with links
    hidden: int  # new too, but neither shown nor listed (the size budget): counted
    archive_url: str  # this edition on the web ("view in browser")
    contents: bool  # show a table of contents
    shortened: bool  # summaries were shortened to fit the size budget

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
        key = entry.source.category if by == "category" else entry.source_title
        groups.setdefault(key or None, []).append(entry)
    named = [(k, v) for k, v in groups.items() if k is not None]
    return named + ([(None, groups[None])] if None in groups else [])


def shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" \n,;:.-–—") + ELLIPSIS
