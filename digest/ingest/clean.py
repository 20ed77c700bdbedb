"""Stage 2b · clean: untrusted ``RawEntry`` → ``Entry`` that is safe to put in an email.

* titles and summaries become plain text: tags stripped, entities decoded (twice when
  the feed escaped them twice), whitespace collapsed, mojibake repaired; a summary
  keeps its paragraphs ("\n\n") and line breaks ("\n"); a long author list becomes
  "A. Smith, B. Jones et al.";
* bodies are sanitized with an allow-list (nh3): no script, style, iframe, form,
  event-handler attributes, ``javascript:`` or ``data:`` URLs; relative links and
  images made absolute against xml:base or the feed URL; tracking pixels dropped;
* the summary is the feed's own when it has one, else an excerpt of the body, cut at a
  word boundary, never longer than ``summary_length``;
* an entry link that is not http(s) is dropped; links (the entry's and its body's) lose
  tracking parameters and redirect wrappers (``links.tidy``); every entry gets a UTC
  date (published, else updated, else its stand-in: see ``stand_ins``): a date in the
  future is clamped, one before ``EARLIEST`` (year 1, 1900...: no feed is that old)
  counts as no date.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import nh3

from .. import faults
from ..model import UNTITLED, Entry, FeedSource, RawEntry
from .links import absolute, canonical, http_only, tidy
from .mojibake import repair

#: Tags a digest keeps from a feed's body; everything else is stripped (text kept).
ALLOWED_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "caption",
        "cite",
        "code",
        "dd",
        "del",
        "dl",
        "dt",
        "em",
        "figcaption",
        "figure",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "ins",
        "kbd",
        "li",
        "mark",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "time",
        "tr",
        "u",
        "ul",
    }
)
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height", "style"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start"},
    "time": {"datetime"},
    "abbr": {"title"},
}
#: Tags removed together with everything inside them.
DROPPED_WITH_CONTENT = frozenset(
    {
        "script",
        "style",
        "iframe",
        "object",
        "embed",
        "form",
        "noscript",
        "template",
        "svg",
        "math",
        "select",
        "textarea",
        "button",
        "audio",
        "video",
        "canvas",
        "head",
        "title",
    }
)
URL_SCHEMES = frozenset({"http", "https", "mailto"})
#: The style properties read on an image to tell a tracking pixel (then the style goes).
IMAGE_STYLE = frozenset({"width", "height", "max-width", "max-height", "display", "visibility"})
#: An image this many CSS pixels wide or high, or less, is a tracking pixel or a spacer.
PIXEL = 3.0
#: CSS pixels per unit (em and rem at the usual 16px; a bare number is pixels, as in
#: quirks mode, where mail is often shown; % and viewport units unknown).
_UNITS = {
    "": 1.0,
    "px": 1.0,
    "pt": 4 / 3,
    "pc": 16.0,
    "in": 96.0,
    "cm": 96 / 2.54,
    "mm": 96 / 25.4,
    "q": 96 / 101.6,
    "em": 16.0,
    "rem": 16.0,
    "ex": 8.0,
    "ch": 8.0,
}
#: How much of a body the summary and sanitizer look at: a 200 KB post costs no more.
MAX_SOURCE_CHARS = 100_000
MAX_TITLE_CHARS = 300
#: Most authors named on an entry's line; more become "et al.".
MAX_AUTHORS = 3
#: The initials of a "Last, F. G." name.
_INITIALS = re.compile(r"(?:[^\W\d_]{1,2}\.[\s-]*)+")
_AUTHORS = re.compile(r"\s*[,;]\s*|\s+(?:and|&|und|et|e|y|en|и)\s+", re.IGNORECASE)
#: Dates before this are not publication dates (0001-01-01, a zero timestamp...).
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)

_BLOCK = re.compile(
    r"<(/?(?:p|div|br|li|ul|ol|h[1-6]|tr|td|th|blockquote|section|article|table|figure|"
    r"figcaption|pre|hr|dd|dt)\b)",
    re.IGNORECASE,
)
#: What a block tag leaves in a summary: a line break, a space, else a paragraph break.
#: (Markers, both whitespace to ``str.split``: ``_PARA`` ends a paragraph, ``_LINE`` a line.)
_PARA, _LINE = "\x1e", "\x1f"
_BREAKS = {"br": _LINE, "li": _LINE, "dt": _LINE, "dd": _LINE, "tr": _LINE, "td": " ", "th": " "}
_PARAS = re.compile(r"\s*\x1e\s*")
_LINES = re.compile(r"\s*\x1f\s*")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});")
_SPACE = re.compile(r"\s+")
_NOT_PLAIN = re.compile(r"[<&]|\s\s")
#: What blog engines append to excerpts: "[…]", "[...]", "Continue reading →".
#: A language tag: a 2-3 letter language, then subtags of 1-8 letters or digits.
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,4}")
_READ_MORE = re.compile(
    r"\s*(?:\[(?:…|\.\.\.|&hellip;)\]|(?:continue reading|read more)\W*)\s*$", re.IGNORECASE
)
_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r'\b(src|width|height|style)="([^"]*)"')
_IMPORTANT = re.compile(r"!\s*important", re.IGNORECASE)
_STYLE_ATTR = re.compile(r'\sstyle="[^"]*"')
_CSS_LENGTH = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)([a-z%]*)", re.IGNORECASE)
_HTML_LENGTH = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)")


def clean(
    raw: RawEntry,
    source: FeedSource,
    source_title: str,
    first_seen: datetime,
    summary_length: int = 300,
    key: str | None = None,
) -> Entry:
    """Make one entry safe and tidy. ``first_seen`` stands in for a missing date;
    ``key`` is the entry's ``identity`` when the caller has computed it already.

    The body is not sanitized here: an edition shows at most a few bodies among many
    entries, so ``finish`` sanitizes those it will show. Until then ``content_html``
    is empty and the untrusted source waits in ``body_source``.
    """
    faults.fail("clean", source.url)
    base = raw.base or source.url
    link = tidy(absolute(raw.link, base))
    fragment = (raw.content or raw.summary or "")[:MAX_SOURCE_CHARS]
    summary = plain_text(raw.summary, paragraphs=True) if raw.summary else ""
    if not summary:
        summary = plain_text(fragment, drop=DROPPED_WITH_CONTENT, paragraphs=True)
    trimmed = _READ_MORE.sub("", summary)
    if trimmed != summary:  # say "there is more" once, our way
        summary = trimmed if trimmed.endswith((".", "!", "?")) else trimmed.rstrip(" ,;:") + "…"
    title = truncate(plain_text(raw.title), MAX_TITLE_CHARS)
    if not title:
        title = truncate(" ".join(summary.split()), 80) or UNTITLED
    published = _plausible(raw.published) or _plausible(raw.updated)
    dated = published is not None
    if published is None or published > first_seen:
        published = first_seen
    return Entry(
        source=source,
        source_title=source_title,
        identity=key or identity(raw),
        title=title,
        link=link,
        canonical_link=canonical(link),
        summary=truncate(summary, summary_length),
        content_html="",
        published=published,
        dated=dated,
        author=authors(plain_text(raw.author)) if raw.author else None,
        thumbnail=http_only(absolute(raw.thumbnail, base)),
        categories=tuple(t for t in (plain_text(c) for c in raw.categories) if t),
        body_source=fragment,
        body_base=base,
        fingerprint=fingerprint(raw),
        language=language_tag(raw.language),
    )


def language_tag(value: str | None) -> str | None:
    """A feed's language as a BCP 47 tag for ``lang=""``: "en-us" → "en-US", "de" → "de";
    anything else (a name, markup, a quote) → None. RSS writes tags in lower case."""
    if not value or not _LANGUAGE.fullmatch(value.strip()):
        return None
    first, *rest = value.strip().replace("_", "-").split("-")
    parts = [first.lower()]
    for part in rest:
        parts.append(part.upper() if len(part) == 2 else part.title() if len(part) == 4 else part)
    return "-".join(parts)


def stand_ins(raws: Sequence[RawEntry], first_seen: datetime) -> list[datetime]:
    """What ``clean`` takes for each entry's missing date: for an undated entry, the date
    of the nearest dated entry above it in the feed (else below it), so that the feed's
    own order places it, never as the newest by default; ``first_seen`` when the feed
    dates none (or for a dated entry, where it only clamps dates in the future)."""
    dates = [_plausible(r.published) or _plausible(r.updated) for r in raws]
    below: list[datetime | None] = []
    nearest: datetime | None = None
    for when in reversed(dates):
        nearest = when or nearest
        below.append(nearest)
    below.reverse()
    found: list[datetime] = []
    above: datetime | None = None
    for when, after in zip(dates, below, strict=True):
        above = when or above
        near = above or after
        found.append(min(near, first_seen) if when is None and near else first_seen)
    return found


def _plausible(when: datetime | None) -> datetime | None:
    return when if when is not None and when >= EARLIEST else None


def fingerprint(raw: RawEntry) -> str:
    """What "the entry changed" means: its title or its content, as the feed wrote them."""
    text = f"{raw.title or ''}\n{raw.content or raw.summary or ''}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def finish(entry: Entry) -> Entry:
    """The entry with its body sanitized (``content_html``), and a thumbnail taken from
    the body when the feed named none: for entries an edition shows."""
    if not entry.body_source:
        return entry
    faults.fail("finish", entry.source.url)
    body = sanitize(entry.body_source, entry.body_base)
    return replace(
        entry,
        content_html=body,
        thumbnail=entry.thumbnail or first_image(body),
        body_source="",
    )


def identity(raw: RawEntry) -> str:
    """The entry's stable key within its feed: guid, else link, else a content hash.
    Computed from the raw entry, so known entries need no cleaning to be recognised."""
    if raw.guid and raw.guid.strip():
        key = "g:" + raw.guid.strip()
    elif raw.link and raw.link.strip():
        key = "l:" + raw.link.strip()
    else:
        key = "h:" + "\x1f".join((raw.title, raw.content or raw.summary or ""))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def plain_text(
    value: str | None, drop: frozenset[str] = frozenset(), paragraphs: bool = False
) -> str:
    """Markup → one line of plain text: tags stripped, entities decoded, mojibake repaired.
    Tags in ``drop`` go with their content (script and style always do).

    With ``paragraphs``, the text keeps its shape (for summaries): paragraphs (``<p>``,
    headings, quotes... or a blank line in plain text) are separated by a blank line
    (``"\n\n"``), line breaks (``<br>``, list items) by ``"\n"``."""
    if not value:
        return ""
    if value.isascii() and value.isprintable() and not _NOT_PLAIN.search(value):
        return value.strip()  # already plain: most names, categories and many titles
    value = value[:MAX_SOURCE_CHARS]
    if "<" in value:
        if paragraphs:  # spaces in markup are one space; the tags say where lines end
            value = _BLOCK.sub(_break, _SPACE.sub(" ", value))
        else:
            value = _BLOCK.sub(r" <\1", value)
        value = nh3.clean(value, tags=set(), clean_content_tags=set(drop | {"script", "style"}))
    elif paragraphs:  # plain text: a blank line ends a paragraph, a newline is a space
        value = _PARA.join(_BLANK_LINE.split(value))
    text = html.unescape(value)
    if _ENTITY.search(text):  # escaped twice by the feed: common, and never meant
        text = html.unescape(text)
    if not _SPACE.sub(" ", text).isprintable():  # the rare text with controls, zero-widths...
        text = "".join(c for c in text if c.isprintable() or c.isspace())
    text = repair(text)
    return _layout(text) if paragraphs else _SPACE.sub(" ", text).strip()


def _break(match: re.Match[str]) -> str:
    return _BREAKS.get(match.group(1).lstrip("/").lower(), _PARA) + "<" + match.group(1)


def _layout(text: str) -> str:
    """Paragraphs separated by one blank line, lines by a newline, spaces collapsed."""
    found = []
    for block in _PARAS.split(text):
        lines = [x for x in (_SPACE.sub(" ", line).strip() for line in _LINES.split(block)) if x]
        if lines:
            found.append("\n".join(lines))
    return "\n\n".join(found)


def sanitize(fragment: str, base: str) -> str:
    """Allow-listed HTML with absolute links, no active content, no tracking pixels."""
    if not fragment:
        return ""
    cleaned = nh3.clean(
        repair(fragment[:MAX_SOURCE_CHARS]),
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        url_relative=("rewrite_with_base", base) if _is_url(base) else "deny",
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
        filter_style_properties=set(IMAGE_STYLE),
        attribute_filter=_attribute,
    )
    return _IMG.sub(_drop_pixel, cleaned) if "<img" in cleaned else cleaned


def _attribute(tag: str, attribute: str, value: str) -> str:
    """A style lower-cased (property names are case-blind, nh3's filter is not); a link
    without tracking parameters or redirect wrapper (``links.tidy``)."""
    if attribute == "style":
        return value.lower()
    if attribute == "href" and value.startswith(("http://", "https://")):
        return tidy(value) or value
    return value


def _is_url(base: str) -> bool:
    return base.startswith(("http://", "https://", "file://"))


def _drop_pixel(match: re.Match[str]) -> str:
    """An image as kept (without its style), or nothing: no source, a tracking pixel
    (``PIXEL`` or less wide or high, by its attributes or its style), or hidden."""
    tag = match.group(0)
    attrs = dict(_ATTR.findall(tag))
    if "src" not in attrs:
        return ""
    style = _declarations(html.unescape(attrs.get("style", "")))
    sizes = [
        _html_pixels(attrs.get("width")),
        _html_pixels(attrs.get("height")),
        *(_css_pixels(style.get(p)) for p in ("width", "height", "max-width", "max-height")),
    ]
    hidden = style.get("display") == "none" or style.get("visibility") in ("hidden", "collapse")
    if hidden or any(size is not None and size <= PIXEL for size in sizes):
        return ""
    return _STYLE_ATTR.sub("", tag)


def _declarations(style: str) -> dict[str, str]:
    """``width: 1px; HEIGHT:2PX !important`` → {"width": "1px", "height": "2px"}."""
    found = {}
    for part in style.split(";"):
        name, colon, value = part.partition(":")
        if colon:
            found[name.strip().lower()] = _IMPORTANT.sub("", value).strip().lower()
    return found


def _css_pixels(value: str | None) -> float | None:
    """A CSS length in CSS pixels; None when it is not one, or relative to something
    unknown here (%, vw...) and not zero."""
    match = _CSS_LENGTH.fullmatch(value or "")
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2).lower()
    if number == 0:
        return 0.0
    if number < 0 or unit not in _UNITS:
        return None
    return number * _UNITS[unit]


def _html_pixels(value: str | None) -> float | None:
    """A ``width``/``height`` attribute in pixels, read as browsers do (leading number,
    the rest ignored); None for a percentage or no number."""
    match = _HTML_LENGTH.match(value or "")
    if not match or value is None or value[match.end() :].lstrip().startswith("%"):
        return None
    return float(match.group(1))


def first_image(body: str) -> str | None:
    """The first image of a sanitized body, for a thumbnail."""
    for tag in _IMG.findall(body):
        src = dict(_ATTR.findall(tag)).get("src")
        url = http_only(html.unescape(src)) if src else None
        if url:
            return url
    return None


def authors(text: str) -> str | None:
    """An author line a reader takes in at a glance: more than ``MAX_AUTHORS`` names
    (separated by commas, semicolons, "and" or "&") become the first two and "et al."
    ("A. Smith, B. Jones et al."); "Smith, A., Jones, B. C." is two names, as is
    "Smith, John"."""
    names = [n.strip() for n in _AUTHORS.split(text) if n.strip()]
    if len(names) % 2 == 0 and all(_INITIALS.fullmatch(n) for n in names[1::2]):
        names = [f"{last}, {first}" for last, first in zip(names[::2], names[1::2], strict=True)]
    if len(names) > MAX_AUTHORS:
        text = f"{names[0]}, {names[1]} et al."
    return truncate(text, 200) or None


def truncate(text: str, limit: int) -> str:
    """Cut at a word boundary so the result, with its ellipsis, fits in ``limit`` chars."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" \n,;:.-–—") + "…"
