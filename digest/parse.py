"""Stage 2a · parse: feed bytes → ``ParsedFeed`` of untrusted ``RawEntry`` values.

RSS 0.9x/1.0/2.0, Atom and RDF go through feedparser, on the bytes we fetched (never
its own fetching), with its sanitizer and URI resolution off: ``clean`` sanitizes
with nh3 and resolves links itself, which is both faster and an allow-list. JSON
Feed 1.0/1.1 goes through ``jsonfeed``. Response headers reach feedparser with
lower-case keys, the only spelling it reads (``content-type`` for the charset,
``content-location`` for relative links).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import feedparser

from . import jsonfeed
from .errors import ParseError
from .model import ParsedFeed, RawEntry

# bozo exceptions that mean "parsed, with a caveat" rather than "not a feed"
_SURVIVABLE = ("CharacterEncodingOverride", "NonXMLContentType", "CharacterEncodingUnknown")


def parse(body: bytes, url: str, headers: Mapping[str, str] | None = None) -> ParsedFeed:
    """Parse one feed. Raises ParseError when the bytes are not a feed at all."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    headers.setdefault("content-location", url)
    if jsonfeed.looks_like_json(body, headers.get("content-type", "")):
        return jsonfeed.parse(body, url)
    try:
        result = feedparser.parse(
            body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False
        )
    except Exception as exc:  # feedparser's own bugs on hostile input: wrap, name the feed
        raise ParseError(url, f"the parser failed: {exc.__class__.__name__}: {exc}") from exc
    warnings: list[str] = []
    if result.get("bozo"):
        problem = result.get("bozo_exception")
        name = problem.__class__.__name__
        if not result.get("entries") and not result.get("version"):
            raise ParseError(url, _not_a_feed(body, problem))
        if name not in _SURVIVABLE:
            warnings.append(f"parsed loosely: {name}: {problem}")
    if not result.get("version") and not result.get("entries"):
        raise ParseError(url, _not_a_feed(body, None))
    feed = result.get("feed", {})
    entries = []
    for raw in result.get("entries", []):
        try:
            entries.append(_entry(raw, url))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            warnings.append(f"skipped an entry feedparser could not give us: {exc}")
    return ParsedFeed(
        format=result.get("version") or "unknown",
        title=_text(feed.get("title")),
        link=feed.get("link"),
        entries=tuple(entries),
        warnings=tuple(warnings),
    )


def _not_a_feed(body: bytes, problem: object) -> str:
    head = body[:1024].lstrip().lower()
    if not head:
        return "the server sent an empty document"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return (
            "not a feed: the server sent an HTML page (is this the site's address, not its feed's?)"
        )
    detail = f" ({problem})" if problem else ""
    return f"not a feed: neither RSS, Atom, RDF nor JSON Feed{detail}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _when(parsed: time.struct_time | None) -> datetime | None:
    if not parsed:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _entry(raw: Mapping[str, Any], feed_url: str) -> RawEntry:
    content = None
    base = feed_url
    contents = raw.get("content") or []
    if contents:
        html = [c for c in contents if "html" in (c.get("type") or "")]
        chosen = (html or contents)[0]
        content = chosen.get("value")
        base = chosen.get("base") or base
    summary = raw.get("summary")
    detail = raw.get("summary_detail") or {}
    if base == feed_url and detail.get("base"):
        base = detail["base"]
    if summary and content and summary.strip() == content.strip():
        summary = None
    return RawEntry(
        guid=_text(raw.get("id")),
        link=_text(raw.get("link")),
        title=raw.get("title") or "",
        summary=_text(summary),
        content=_text(content),
        author=_text(raw.get("author")),
        published=_when(raw.get("published_parsed")),
        updated=_when(raw.get("updated_parsed")),
        thumbnail=_thumbnail(raw),
        categories=tuple(t["term"] for t in raw.get("tags") or [] if t.get("term")),
        base=base,
    )


def _thumbnail(raw: Mapping[str, Any]) -> str | None:
    for thumb in raw.get("media_thumbnail") or []:
        if thumb.get("url"):
            return str(thumb["url"])
    for media in raw.get("media_content") or []:
        kind = (media.get("medium") or media.get("type") or "").lower()
        if media.get("url") and kind.startswith("image"):
            return str(media["url"])
    for link in raw.get("links") or []:
        if link.get("rel") == "enclosure" and (link.get("type") or "").startswith("image/"):
            return str(link.get("href")) if link.get("href") else None
    return None
