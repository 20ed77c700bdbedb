"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1) → ``ParsedFeed``.

feedparser 6.0.x reads no JSON Feed, so this small parser does, producing the same
``RawEntry`` values as the XML path.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from ..errors import ParseError
from ..model import ParsedFeed, RawEntry


def looks_like_json(body: bytes, content_type: str) -> bool:
    if "json" in content_type.lower():
        return True
    start = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return start.startswith(b"{")


#: A surrogate not paired with another: JSON can escape one ("\\ud800"), UTF-8 cannot
#: carry it, so every later step (sanitizing, hashing, the message) would fail on it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of the document with each lone surrogate in its strings (and in the
    lists it holds) made U+FFFD: one bad escape costs a character, not the feed."""
    return {_whole(k): _whole(v) for k, v in pairs}


def _whole(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def parse(body: bytes, url: str) -> ParsedFeed:
    try:
        doc = json.loads(body.decode("utf-8-sig"), object_pairs_hook=_whole_characters)
    except ValueError as exc:  # not UTF-8, not JSON, or a number past Python's digit limit
        raise ParseError(url, f"not a feed: invalid JSON ({exc})") from exc
    except RecursionError as exc:
        raise ParseError(url, "not a feed: JSON nested too deeply to read") from exc
    if not isinstance(doc, dict) or "jsonfeed.org/version/" not in str(doc.get("version", "")):
        raise ParseError(url, "not a feed: JSON, but not a JSON Feed (no jsonfeed.org version)")
    version = "json11" if str(doc["version"]).rstrip("/").endswith("1.1") else "json10"
    home = _str(doc.get("home_page_url"))
    try:
        base = urljoin(url, home) if home else url
    except ValueError:
        base = url
    items = doc.get("items")
    if not isinstance(items, list):
        raise ParseError(url, "not a feed: a JSON Feed needs an items list")
    entries, warnings = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            warnings.append(f"items[{i}] is not an object: skipped")
            continue
        try:
            entries.append(_entry(item, base, _author(doc), _str(doc.get("language"))))
        except ValueError as exc:  # a URL urljoin cannot read
            warnings.append(f"items[{i}] skipped: {exc}")
    return ParsedFeed(
        format=version,
        title=_str(doc.get("title")),
        link=home,
        entries=tuple(entries),
        warnings=tuple(warnings),
    )


def _entry(
    item: dict[str, Any], base: str, feed_author: str | None, language: str | None = None
) -> RawEntry:
    link = _str(item.get("url")) or _str(item.get("external_url"))
    guid = item.get("id")
    html, text = _str(item.get("content_html")), _str(item.get("content_text"))
    content = html if html else _escape_text(text)
    tags = item.get("tags")
    return RawEntry(
        guid=str(guid) if guid not in (None, "") else None,
        link=urljoin(base, link) if link else None,
        title=_escape_text(_str(item.get("title"))) or "",  # plain text in JSON Feed
        summary=_escape_text(_str(item.get("summary"))),
        content=content,
        author=_author(item) or feed_author,
        published=_date(item.get("date_published")),
        updated=_date(item.get("date_modified")),
        thumbnail=_str(item.get("image")) or _str(item.get("banner_image")),
        categories=tuple(str(t) for t in tags if isinstance(t, str | int))
        if isinstance(tags, list)
        else (),
        base=base,
        language=_str(item.get("language")) or language,  # JSON Feed 1.1
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _escape_text(text: str | None) -> str | None:
    if text is None:
        return None
    from html import escape

    return escape(text)


def _author(obj: dict[str, Any]) -> str | None:
    authors = obj.get("authors")
    if isinstance(authors, list):
        names = [str(a["name"]) for a in authors if isinstance(a, dict) and _str(a.get("name"))]
        if names:
            return ", ".join(names)
    author = obj.get("author")  # JSON Feed 1.0
    if isinstance(author, dict):
        return _str(author.get("name"))
    return None


def _date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("z", "Z"))
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):  # not a date, or out of range once in UTC
        return None
