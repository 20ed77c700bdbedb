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
import functools
import importlib.util
import inspect
import re
import textwrap
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import feedparser
import feedparser.api
import feedparser.encodings
import feedparser.mixin
import feedparser.urls

from .. import faults
from ..errors import ParseError
from ..model import ParsedFeed, RawEntry
from . import dates, jsonfeed, scan

# bozo exceptions that mean "parsed, with a caveat" rather than "not a feed"
_SURVIVABLE = ("CharacterEncodingOverride", "NonXMLContentType", "CharacterEncodingUnknown")
#: Most text all the XML entities a feed declares may expand to, in characters.
MAX_ENTITY_EXPANSION = 1_000_000


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """The ``[fetch]`` limits that parsing enforces."""

    #: Most characters a feed's XML entities may expand to (see ``entity_bomb``).
    max_entity_expansion: int = MAX_ENTITY_EXPANSION
    #: Most entries taken from one feed: the newest ones.
    max_entries: int = 1000
    #: Most CPU seconds spent reading one feed (enforced by ``ingest.digest_feed``).
    max_seconds: float = 30.0
    #: Most bytes a body left compressed may inflate to (``fetch.decoded``).
    max_bytes: int = 10_000_000


DEFAULT_LIMITS = ParseLimits()

_DECLARATION = re.compile(
    r"<!ENTITY\s+(%\s+)?([^\s\"'>]+)\s+(?:\"([^\"]*)\"|'([^']*)'|(SYSTEM|PUBLIC)\b)"
)
_REFERENCE = re.compile(r"&([^\s&;#]+);")


def _remember_joins() -> None:
    """Memoize feedparser's URL joining, a pure function it calls on every start tag
    with the same two arguments (the document's base, twice) when it knows the
    document's URL: a third of its time on a typical feed, for nothing."""
    join = getattr(feedparser.urls, "_urljoin", None)
    if join is None or hasattr(join, "cache_info"):
        return
    cached = functools.lru_cache(maxsize=4096)(join)
    feedparser.urls._urljoin = cached
    if getattr(feedparser.mixin, "_urljoin", None) is join:
        feedparser.mixin._urljoin = cached


_remember_joins()


def _skip_missing_sax_drivers() -> None:
    """feedparser asks xml.sax for libxml2's SAX driver (``drv_libxml2``, a separate
    package) before the standard library's expat on every parse; where it is not
    installed, xml.sax tries to import it again each time (about 0.1 ms a parse, a
    tenth of reading a feed's two new entries). Asked once here instead: xml.sax then
    goes straight to the parser it fell back to each time, so nothing else changes."""
    preferred = getattr(feedparser.api, "PREFERRED_XML_PARSERS", None)
    if isinstance(preferred, list):
        preferred[:] = [name for name in preferred if _importable(name)]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_skip_missing_sax_drivers()

#: Characters feedparser maps to what windows-1252 meant by them (C1 controls).
_C1 = re.compile("[\x80-\x9f]")
_TRANSLATE = "output = output.translate(_cp1252)"


def _cp1252_where_needed(text: str) -> str:
    """feedparser's ``text.translate(_cp1252)``, done only when ``text`` holds a C1
    control character: on text that is not pure ASCII, ``str.translate`` looks every
    character up in the mapping and raises a KeyError for nearly each one (80 ns a
    character: 0.25 ms for a 3 KB body with one curly quote), and the answer is the
    text unchanged unless such a character is there (a regex finds none in 12 µs)."""
    if text.isascii() or not _C1.search(text):
        return text
    return text.translate(feedparser.mixin._cp1252)


def _quick_cp1252() -> None:
    """feedparser's ``pop``, which ends every element it reads, recompiled with its one
    line ``output = output.translate(_cp1252)`` calling ``_cp1252_where_needed``: the
    same text, a quarter less time reading a typical non-English entry (first reading
    of a 50-entry feed: 40 ms → 31 ms). Where feedparser's source is not what we read
    (the line not there exactly once, no source installed), nothing is changed."""
    mixin = feedparser.mixin._FeedParserMixin
    try:
        lines, first = inspect.getsourcelines(mixin.pop)
        filename = inspect.getsourcefile(mixin.pop) or "<feedparser>"
    except (OSError, TypeError):
        return
    source = "\n" * (first - 1) + textwrap.dedent("".join(lines))  # its lines, its numbers
    if source.count(_TRANSLATE) != 1 or any(
        w in source for w in ("super(", "__class__", '"""', "'''")
    ):
        return
    source = source.replace(_TRANSLATE, "output = _digest_cp1252_where_needed(output)")
    feedparser.mixin._digest_cp1252_where_needed = _cp1252_where_needed
    made: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), vars(feedparser.mixin), made)
    made["pop"].__qualname__ = mixin.pop.__qualname__
    mixin.pop = made["pop"]


#: feedparser's ``pop`` as installed, for the test that compares both ways.
FEEDPARSER_POP = feedparser.mixin._FeedParserMixin.pop
_quick_cp1252()


def parse(
    body: bytes,
    url: str,
    headers: Mapping[str, str] | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> ParsedFeed:
    """Parse one feed. Raises ParseError when the bytes are not a feed at all, or are
    an entity bomb (see ``entity_bomb``). At most ``limits.max_entries`` entries are
    kept: the newest."""
    faults.fail("parse", url)
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    headers.setdefault("content-location", url)
    if jsonfeed.looks_like_json(body, headers.get("content-type", "")):
        parsed = jsonfeed.parse(body, url)
    else:
        bomb = entity_bomb(body, limits.max_entity_expansion)
        if bomb:
            raise ParseError(url, bomb)
        parsed = _parse(body, url, headers)
    if len(parsed.entries) <= limits.max_entries:
        return parsed
    note = (
        f"kept the {limits.max_entries:,} newest of {len(parsed.entries):,} entries "
        "(fetch.max_entries)"
    )
    entries = newest(parsed.entries, limits.max_entries)
    return replace(parsed, entries=entries, warnings=(*parsed.warnings, note))


@dataclass(frozen=True, slots=True)
class Fresh:
    """A feed read for what is new in it (``parse_new``)."""

    #: The feed, with the entries not seen before (all of them when none was).
    parsed: ParsedFeed
    #: How many entries the feed holds, seen ones included.
    total: int
    #: Every entry's fingerprint, to remember for the next run; empty when the
    #: document cannot be split into entries (it is then parsed whole every time).
    prints: tuple[bytes, ...] = ()


def parse_new(
    body: bytes,
    url: str,
    headers: Mapping[str, str] | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
    seen: Collection[bytes] = frozenset(),
) -> Fresh:
    """``parse``, paying only for the entries whose fingerprint is not in ``seen`` (those
    of the feed's last document): the document is split into its entries
    (``scan.split``) and feedparser reads it without the seen ones. The entries are
    those ``parse`` gives minus the seen ones, in the same order. A document whose
    reading without them does not check out is parsed whole, and the seen ones left
    out after; one the scanner is not sure of is parsed whole, as ``parse`` does, and
    all its entries come back (``prints`` is empty). Raises what ``parse`` raises."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    lowered.setdefault("content-location", url)
    parts = None
    if not jsonfeed.looks_like_json(body, lowered.get("content-type", "")):
        parts = scan.split(body, url, lowered, seen)
    if parts is None or len(parts.prints) > limits.max_entries:
        parsed = parse(body, url, headers, limits)
        return Fresh(parsed, len(parsed.entries))
    unseen = sum(p not in seen for p in parts.prints)
    if unseen < len(parts.prints):
        faults.fail("parse", url)
        fresh = _unseen(body, url, lowered, parts, seen, unseen)
        if fresh is not None:
            return fresh
    parsed = parse(body, url, headers, limits)
    total = len(parsed.entries)
    if total != len(parts.prints):  # a print stands for an entry only when one per span
        return Fresh(parsed, total)
    kept = tuple(e for e, p in zip(parsed.entries, parts.prints, strict=True) if p not in seen)
    return Fresh(replace(parsed, entries=kept), total, parts.prints)


def _unseen(
    body: bytes,
    url: str,
    headers: dict[str, str],
    parts: scan.Split,
    seen: Collection[bytes],
    unseen: int,
) -> Fresh | None:
    """The document without its seen entries, read by feedparser; None when the reading
    is not the one the whole document would get: another encoding chosen (feedparser
    tries encodings until one decodes the bytes, and fewer bytes may decode in an
    earlier one), a loose parse, or not one entry per unseen span."""
    document = parts.without(body, seen)
    try:
        result = _feedparser(document, url, headers)
        problem = result.get("bozo_exception") if result.get("bozo") else None
        if (
            (problem is not None and problem.__class__.__name__ not in _SURVIVABLE)
            or len(result.get("entries", ())) != unseen
            or not _same_encoding(body, headers, result.get("encoding"), problem)
        ):
            return None
        parsed = _read(result, document, url)
    except ParseError:  # the whole parse says what is wrong with the document, if anything
        return None
    if len(parsed.entries) != unseen:
        return None
    return Fresh(parsed, len(parts.prints), parts.prints)


def _same_encoding(body: bytes, headers: dict[str, str], chosen: str, problem: object) -> bool:
    """Whether feedparser reads the whole document in the encoding it chose for the
    document without its seen entries. It tries encodings in turn until one decodes
    the bytes. When it took the first one (the declared one, by RFC 3023's rules: the
    same for both, as the headers and the prolog are), the whole takes it too if it
    decodes the whole; an encoding that failed on fewer bytes fails on all of them
    (the entries cut out start with "<" and end with ">"). Otherwise, ask feedparser."""
    if problem is not None and problem.__class__.__name__ == "CharacterEncodingOverride":
        whole: dict[str, Any] = {}
        feedparser.encodings.convert_to_utf8(headers, body, whole)
        return bool(whole.get("encoding") == chosen)
    try:
        body.decode(chosen)
    except (UnicodeError, LookupError, TypeError):
        return False
    return True


def newest(entries: Sequence[RawEntry], count: int) -> tuple[RawEntry, ...]:
    """The ``count`` newest entries, in the feed's order: dated ones by date, then
    undated ones as the feed lists them."""

    def key(i: int) -> tuple[int, float, int]:
        when = entries[i].published or entries[i].updated
        return (0, -when.timestamp(), i) if when else (1, 0.0, i)

    keep = set(sorted(range(len(entries)), key=key)[:count])
    return tuple(e for i, e in enumerate(entries) if i in keep)


#: A character reference to a surrogate (U+D800-U+DFFF): no character at all, and XML
#: forbids it; feedparser decodes it anyway, then fails on the whole document.
_SURROGATE_REF = re.compile(
    rb"&#(?:[xX]0*[dD][89a-fA-F][0-9a-fA-F]{2}"
    rb"|0*(?:5529[6-9]|55[3-9][0-9]{2}|56[0-9]{3}|57[0-2][0-9]{2}|573[0-3][0-9]|5734[0-3]));"
)


def _parse(body: bytes, url: str, headers: dict[str, str]) -> ParsedFeed:
    return _read(_feedparser(body, url, headers), body, url)


def _feedparser(body: bytes, url: str, headers: dict[str, str]) -> Any:
    if b"&#" in body:  # one bad reference costs a character (U+FFFD), not the feed
        body = _SURROGATE_REF.sub(b"&#xFFFD;", body)
    try:
        return feedparser.parse(
            body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False
        )
    except Exception as exc:  # feedparser's own bugs on hostile input: wrap, name the feed
        raise ParseError(url, f"the parser failed: {exc.__class__.__name__}: {exc}") from exc


def _read(result: Any, body: bytes, url: str) -> ParsedFeed:
    """feedparser's result as a ``ParsedFeed``, or ParseError when it found no feed."""
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
    language = _text(feed.get("language"))
    entries = []
    for raw in result.get("entries", []):
        try:
            entries.append(_entry(raw, url, language))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            warnings.append(f"skipped an entry feedparser could not give us: {exc}")
    return ParsedFeed(
        format=result.get("version") or "unknown",
        title=_text(feed.get("title")),
        link=feed.get("link"),
        entries=tuple(entries),
        warnings=tuple(warnings),
    )


def entity_bomb(body: bytes, limit: int = MAX_ENTITY_EXPANSION) -> str | None:
    """Why the XML entities this document declares are refused, or None when they are safe.

    expat (behind feedparser's strict parser) stops a "billion laughs" only after 8 MB
    of expansion, and feedparser's loose parser expands the declarations it deems safe
    with no limit at all: one 100 KB entity referenced 20,000 times is 2 GB of text.
    So before any parser sees the document, every internal entity's full expansion is
    computed and multiplied by how often the document uses it; past ``limit``
    characters (``fetch.max_entity_expansion``) the feed is refused. Parameter entities with an
    inline value (a way to declare entities indirectly) are refused too. References to
    external entities are never fetched by either parser, so they are harmless here.
    """
    text = _as_text(body)
    if text is None:
        return None
    values: dict[str, str] = {}
    for m in _DECLARATION.finditer(text):
        parameter, name, value = m.group(1), m.group(2), m.group(3) or m.group(4)
        if parameter and value is not None:
            return "refused: the feed declares XML parameter entities (a way to hide entity bombs)"
        if not parameter and value is not None:
            values.setdefault(name, value)
    if not values:
        return None
    sizes: dict[str, int] = {}

    def size(name: str, depth: int = 0) -> int:
        if name in sizes:
            return sizes[name]
        if depth > 20:
            return limit + 1
        sizes[name] = limit + 1  # a cycle counts as too big
        value = values[name]
        total = len(_REFERENCE.sub("", value))
        for ref in _REFERENCE.findall(value):
            total += size(ref, depth + 1) if ref in values else len(ref) + 2
            if total > limit:
                break
        sizes[name] = min(total, limit + 1)
        return sizes[name]

    expansion = 0
    for name in values:
        uses = text.count(f"&{name};")
        if uses:
            expansion += uses * size(name)
        if expansion > limit:
            return (
                "refused: the feed's XML entities would expand to more than "
                f'{limit:,} characters (an entity bomb, "billion laughs"; '
                "fetch.max_entity_expansion)"
            )
    return None


def _as_text(body: bytes) -> str | None:
    """The document as text for the entity check; None when it declares no entity."""
    for mark, codec in _WIDE:
        if body.startswith(mark):
            text = body.decode(codec, "replace")
            return text if "<!ENTITY" in text else None
    # ASCII-compatible encodings: the markup is ASCII, whatever the text around it.
    return body.decode("latin-1") if b"<!ENTITY" in body else None


#: How UTF-16 and UTF-32 documents start (byte-order mark, or "<" with its zero bytes).
_WIDE = (
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\xfe\xff", "utf-16"),
    (b"\xff\xfe", "utf-16"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<", "utf-16-be"),
    (b"<\x00", "utf-16-le"),
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


#: Plain ``dict.get``: feedparser's own ``get`` maps old key names, and warns (slowly,
#: through the warnings machinery) each time ``updated_parsed`` is missing.
_get = dict.get


def _entry(raw: dict[str, Any], feed_url: str, language: str | None = None) -> RawEntry:
    content = None
    base = feed_url
    contents = _get(raw, "content") or []
    if contents:
        html = [c for c in contents if "html" in (_get(c, "type") or "")]
        chosen = (html or contents)[0]
        content = _markup(_get(chosen, "value"), chosen)
        base = _get(chosen, "base") or base
    detail = _get(raw, "summary_detail") or {}
    summary = _markup(_get(raw, "summary"), detail)
    if base == feed_url and _get(detail, "base"):
        base = detail["base"]
    if summary and content and summary.strip() == content.strip():
        summary = None
    return RawEntry(
        guid=_text(_get(raw, "id")),
        link=_text(_get(raw, "link")),
        title=_title(raw),
        summary=_text(summary),
        content=_text(content),
        author=_author(raw),
        published=_date(raw, "published"),
        updated=_date(raw, "updated"),
        thumbnail=_thumbnail(raw),
        categories=tuple(t["term"] for t in _get(raw, "tags") or [] if _get(t, "term")),
        base=base,
        language=_text(_get(_get(raw, "title_detail") or {}, "language")) or language,
    )


def _date(raw: dict[str, Any], key: str) -> datetime | None:
    """The date feedparser read, else one in another language (``dates``)."""
    return _when(_get(raw, f"{key}_parsed")) or dates.parse(_text(_get(raw, key)))


def _author(raw: dict[str, Any]) -> str | None:
    """The author, or every author's name, comma-separated, when the entry names several."""
    names = [a["name"] for a in _get(raw, "authors") or [] if isinstance(_get(a, "name"), str)]
    return ", ".join(names) if len(names) > 1 else _text(_get(raw, "author"))


def _title(raw: dict[str, Any]) -> str:
    return _markup(_get(raw, "title"), _get(raw, "title_detail") or {}) or ""


def _markup(value: Any, detail: dict[str, Any]) -> Any:
    """A text as markup: one the feed marks as plain text (Atom's ``type="text"``, an RSS
    title with no markup in it) keeps its ``<`` and ``>`` as characters."""
    plain = isinstance(value, str) and _get(detail, "type") == "text/plain"
    return value.replace("<", "&lt;").replace(">", "&gt;") if plain and "<" in value else value


def _thumbnail(raw: dict[str, Any]) -> str | None:
    for thumb in _get(raw, "media_thumbnail") or []:
        if _get(thumb, "url"):
            return str(thumb["url"])
    for media in _get(raw, "media_content") or []:
        kind = (_get(media, "medium") or _get(media, "type") or "").lower()
        if _get(media, "url") and kind.startswith("image"):
            return str(media["url"])
    for link in _get(raw, "links") or []:
        if _get(link, "rel") == "enclosure" and (_get(link, "type") or "").startswith("image/"):
            return str(link["href"]) if _get(link, "href") else None
    return None
