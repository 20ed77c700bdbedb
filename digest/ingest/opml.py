"""OPML reading lists in and out (``digest feeds import`` / ``export``).

Feed readers and rss2email speak OPML: an ``<outline>`` with an ``xmlUrl`` is a feed,
one without is a folder. An OPML file comes from outside: it is parsed with
defusedxml (no entities, no external references), only http(s) feed addresses are
taken (a path would make digest read a local file), and titles become one line of
plain text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, SubElement, indent, tostring

from ..errors import UsageError

FOLDER_SEPARATOR = " / "
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Outline:
    """One feed of a reading list, with the folders it sits in (outermost first)."""

    url: str
    title: str | None
    folders: tuple[str, ...] = ()

    @property
    def category(self) -> str | None:
        return FOLDER_SEPARATOR.join(self.folders) or None


@dataclass(frozen=True, slots=True)
class ReadingList:
    feeds: tuple[Outline, ...]
    skipped: tuple[str, ...]  # an outline that is not an http(s) feed, and why


def read(data: bytes, shown: str) -> ReadingList:
    """The feeds of an OPML document. UsageError when it is not OPML."""
    import defusedxml.ElementTree as safe  # type: ignore[import-untyped]
    from defusedxml import DefusedXmlException

    try:
        root = safe.fromstring(data)
    except (safe.ParseError, DefusedXmlException, ValueError) as exc:
        raise UsageError(f"{shown}: not an OPML file ({exc})") from exc
    body = root.find("body")
    if root.tag != "opml" or body is None:
        raise UsageError(f"{shown}: not an OPML file (no <opml> with a <body>)")
    feeds: list[Outline] = []
    skipped: list[str] = []
    for outline, folders in _walk(body, ()):
        url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
        title = _text(outline.get("title") or outline.get("text"))
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            skipped.append(f"{title or url!r}: {url!r} is not an http(s) feed address")
        elif any(c.isspace() or not c.isprintable() for c in url):
            skipped.append(f"{title or url!r}: the address has spaces or control characters")
        else:
            feeds.append(Outline(url, title, folders))
    return ReadingList(tuple(feeds), tuple(skipped))


def _walk(parent: Element, folders: tuple[str, ...]) -> Iterator[tuple[Element, tuple[str, ...]]]:
    for outline in parent.findall("outline"):
        if outline.get("xmlUrl") or outline.get("xmlurl"):
            yield outline, folders
        elif len(outline):
            name = _text(outline.get("title") or outline.get("text"))
            yield from _walk(outline, (*folders, name) if name else folders)


def _text(value: str | None) -> str | None:
    """One line of plain text, bounded."""
    if not value:
        return None
    text = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return text[:MAX_TEXT] or None


def write(title: str, feeds: Sequence[Outline], now: datetime) -> bytes:
    """An OPML 2.0 document; a feed's category becomes its folders."""
    root = Element("opml", version="2.0")
    head = SubElement(root, "head")
    SubElement(head, "title").text = title
    SubElement(head, "dateCreated").text = format_datetime(now)
    SubElement(head, "docs").text = "https://opml.org/spec2.opml"
    body = SubElement(root, "body")
    folders: dict[tuple[str, ...], Element] = {(): body}
    for feed in feeds:
        parent = body
        for depth in range(1, len(feed.folders) + 1):
            path = feed.folders[:depth]
            if path not in folders:
                folders[path] = SubElement(parent, "outline", text=path[-1], title=path[-1])
            parent = folders[path]
        name = feed.title or feed.url
        SubElement(parent, "outline", type="rss", text=name, title=name, xmlUrl=feed.url)
    indent(root)
    text = tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{text}\n'.encode()


def folders_of(category: str | None) -> tuple[str, ...]:
    """The folders a category is written as: ``"Tech / Python"`` is two."""
    if not category:
        return ()
    return tuple(p.strip() for p in category.split(FOLDER_SEPARATOR) if p.strip())
