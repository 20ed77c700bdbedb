"""Split a feed document into its entries, byte for byte, or say it cannot.

A daily run mostly sees feeds that changed a little: two new posts on top of 48 known
ones. ``split`` finds each entry's bytes (an RSS ``<item>``, an Atom ``<entry>``, an
RSS 1.0 ``<item>``) and fingerprints them, so ``parse.parse_new`` can hand feedparser
the document without the entries it has seen before, and pay for the news only.

The scanner is expat (the parser behind feedparser's own strict mode), because it
reports where each element starts in the bytes (``CurrentByteIndex``), which lxml does
not. It is hardened the same way a parser of untrusted XML must be, by refusing
rather than limiting: a document with a DOCTYPE (the only way to declare entities)
is not split at all, no external entity or DTD is ever read, nothing is fetched; the
document's size is bounded by ``fetch.max_bytes`` before it gets here, and the
number of entries by ``fetch.max_entries`` after.

Whenever the scanner is not sure, it returns None and the document goes to feedparser
whole, exactly as without it: not well-formed XML, a DOCTYPE, an encoding whose
bytes might not be ASCII for the markup (UTF-16, UTF-32, Shift_JIS...), a root it does
not know (JSON Feed never comes here), or an element named like an entry anywhere
but where entries belong.

A fingerprint covers the entry's own bytes and everything outside them that can
change how feedparser reads them: the feed's URL and the headers it reads, the bytes
before the root element (the XML declaration: the encoding), and the start tags of
the entry's ancestors (namespaces, ``xml:base``, ``xml:lang``, the RSS version). Not
the rest of the envelope: a ``lastBuildDate`` changes on every update and is not the
entries' business.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from xml.parsers import expat

import feedparser

#: Bumped when what a fingerprint covers changes: remembered prints then match nothing.
VERSION = b"scan 2"
#: Bytes of one fingerprint.
PRINT_SIZE = 16

_RSS1 = "http://purl.org/rss/1.0/"
_ATOM = "http://www.w3.org/2005/Atom"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
#: Root element → the path (below the root) of the feed's entries, as expat names
#: them with namespace processing ("namespace local", or "local" without one).
_LAYOUTS: dict[str, tuple[str, ...]] = {
    "rss": ("channel", "item"),
    f"{_ATOM} feed": (f"{_ATOM} entry",),
    f"{_RDF} RDF": (f"{_RSS1} item",),
}
#: Local names feedparser may take for an entry wherever they are.
_ENTRY_NAMES = frozenset({"item", "entry"})
_SUSPECT = tuple(_ENTRY_NAMES)
_DECLARED = re.compile(
    rb"""^(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']"""
)
_START_TAG = re.compile(rb"""<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*/?>""")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Split:
    """A document's entries: where each one's bytes are, and its fingerprint."""

    spans: tuple[tuple[int, int], ...]
    prints: tuple[bytes, ...]

    def without(self, body: bytes, seen: Collection[bytes]) -> bytes:
        """The document with the entries whose fingerprint is in ``seen`` cut out."""
        pieces, at = [], 0
        for (start, end), fingerprint in zip(self.spans, self.prints, strict=True):
            if fingerprint in seen:
                pieces.append(body[at:start])
                at = end
        pieces.append(body[at:])
        return b"".join(pieces)


class _Unsure(Exception):
    """The document is not one the scanner splits: it goes to feedparser whole."""


def split(body: bytes, url: str, headers: Mapping[str, str]) -> Split | None:
    """The entries of ``body`` (served from ``url`` with lower-case ``headers``), or
    None when the scanner is not sure of them."""
    if not _ascii_markup(body, headers.get("content-type", "")):
        return None
    scanner = _Scanner(body)
    try:
        scanner.run()
    except (_Unsure, expat.ExpatError, ValueError, UnicodeError, LookupError):
        return None
    context = hashlib.sha256(VERSION)  # faster than BLAKE2b where the CPU has SHA-NI
    for part in (
        feedparser.__version__,
        url,
        headers.get("content-type", ""),
        headers.get("content-location", ""),
    ):
        context.update(part.encode("utf-8", "surrogatepass") + b"\0")
    context.update(body[: scanner.root])
    for start in scanner.ancestors:
        context.update(body[start : _tag_end(body, start)])
    prints = []
    for start, end in scanner.spans:
        h = context.copy()
        h.update(body[start:end])
        prints.append(h.digest()[:PRINT_SIZE])
    return Split(tuple(scanner.spans), tuple(prints))


def pack(prints: Collection[bytes]) -> bytes:
    """Fingerprints as stored (a feed's column), in any order."""
    return b"".join(sorted(prints))


def unpack(stored: bytes | None) -> frozenset[bytes]:
    if not stored:
        return frozenset()
    return frozenset(stored[i : i + PRINT_SIZE] for i in range(0, len(stored), PRINT_SIZE))


def _ascii_markup(body: bytes, content_type: str) -> bool:
    """True when the markup of ``body`` is plain ASCII bytes, as the byte offsets and
    the tag pattern here assume: UTF-8 or a single-byte encoding, in the document and
    in the ``Content-Type`` feedparser may prefer to it."""
    if body[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00") or body[:2] in (
        b"\xfe\xff",
        b"\xff\xfe",
    ):
        return False
    if b"\x00" in body[:4]:
        return False
    declared = _DECLARED.match(body[:512])
    charset = _CHARSET.search(content_type)
    names = [m.group(1).decode("ascii") for m in (declared,) if m]
    names += [charset.group(1)] if charset else []
    return all(_single_or_utf8(name) for name in names)


def _single_or_utf8(name: str) -> bool:
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return False
    return codec in ("utf-8", "ascii", "latin-1") or codec.startswith(("iso8859", "cp125"))


def _tag_end(body: bytes, start: int) -> int:
    """Where the start tag (or empty-element tag) at ``start`` ends."""
    tag = _START_TAG.match(body, start)
    if tag is None:
        raise _Unsure("a start tag the scanner cannot read")
    return tag.end()


class _Scanner:
    """One pass of expat over the document, noting where the entries are."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.root = -1
        self.layout: tuple[str, ...] = ()
        self.path: list[str] = []
        self.ancestors: list[int] = []
        self.spans: list[tuple[int, int]] = []
        self._entry_start = -1
        self._inside = 0  # elements open inside the current entry
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._doctype
        parser.EntityDeclHandler = self._doctype
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        self.parser = parser

    def run(self) -> None:
        self.parser.Parse(self.body, True)
        if self.root < 0:
            raise _Unsure("no root element")

    def _doctype(self, *args: object) -> None:
        raise _Unsure("a DOCTYPE: entities may be declared")

    def _start(self, name: str, attrs: object) -> None:
        at = self.parser.CurrentByteIndex
        depth = len(self.path)
        self.path.append(name)
        if depth == 0:
            layout = _LAYOUTS.get(name)
            if layout is None:
                raise _Unsure(f"a root the scanner does not split: {name}")
            self.root, self.layout = at, layout
            self.ancestors.append(at)
            return
        place = self.path[1:] == list(self.layout[:depth])
        if place and depth < len(self.layout):
            self.ancestors.append(at)
        elif place:  # an entry: inside it, only its end and misplaced entries matter
            self._entry_start, self._inside = at, 0
            self.parser.StartElementHandler = self._inner_start
            self.parser.EndElementHandler = self._inner_end
        elif name.endswith(_SUSPECT):
            _suspect(name)

    def _end(self, name: str) -> None:
        self.path.pop()

    def _inner_start(self, name: str, attrs: object) -> None:
        self._inside += 1
        if name.endswith(_SUSPECT):
            _suspect(name)

    def _inner_end(self, name: str) -> None:
        if self._inside:
            self._inside -= 1
            return
        self.path.pop()
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        at, start = self.parser.CurrentByteIndex, self._entry_start
        if at == start:  # an empty-element tag: <item/>
            end = _tag_end(self.body, start)
        elif self.body.startswith(b"</", at):
            end = self.body.index(b">", at) + 1
        else:
            raise _Unsure("an end tag the scanner cannot place")
        if self.body[start : start + 1] != b"<" or (self.spans and self.spans[-1][1] > start):
            raise _Unsure("entries the scanner cannot place")
        self.spans.append((start, end))


def _suspect(name: str) -> None:
    """An element whose local name is an entry's, where no entry belongs."""
    if name.rpartition(" ")[2] in _ENTRY_NAMES:
        raise _Unsure(f"an element named like an entry out of place: {name}")
