"""Feed discovery: the feeds a web page announces with ``<link rel="alternate">``.

A site's address is enough for ``digest feeds add``: when what it serves is a page,
not a feed, the page's alternate links of a feed type name the candidates. The page
comes from outside: only http(s) links are taken, resolved against the page (or its
``<base href>``), one line each, titles made plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

FEED_TYPES = frozenset(
    {
        "application/rss+xml",
        "application/atom+xml",
        "application/rdf+xml",
        "application/feed+json",
        "application/json",
        "text/xml",
        "application/xml",
    }
)
MAX_CANDIDATES = 20
MAX_TITLE = 200


@dataclass(frozen=True, slots=True)
class Candidate:
    url: str
    title: str | None
    type: str


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.links: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v or "" for k, v in attrs}
        if tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"]
        elif tag == "link" and len(self.links) < 10 * MAX_CANDIDATES:
            self.links.append(values)

    handle_startendtag = handle_starttag


def _one_line(text: str) -> str | None:
    """Plain text on one line, bounded: no control character, no line break."""
    shown = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return shown[:MAX_TITLE] or None


def candidates(page: str, page_url: str) -> list[Candidate]:
    """The feeds ``page`` links to as alternates, in page order, each once."""
    parser = _Links()
    parser.feed(page)
    parser.close()
    base = urljoin(page_url, parser.base) if parser.base else page_url
    found: list[Candidate] = []
    for link in parser.links:
        rels = link.get("rel", "").lower().split()
        kind = link.get("type", "").split(";")[0].strip().lower()
        if "alternate" not in rels or kind not in FEED_TYPES or not link.get("href"):
            continue
        url = urljoin(base, link["href"].strip())
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            continue
        if any(c.isspace() or not c.isprintable() for c in url):
            continue
        if url in (c.url for c in found):
            continue
        title = _one_line(link.get("title", ""))
        found.append(Candidate(url, title, kind))
        if len(found) == MAX_CANDIDATES:
            break
    return found
