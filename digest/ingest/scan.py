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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
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
#: An element's name as written (with its prefix), and what may follow it in a tag.
_NAME = re.compile(rb"[^\s/>]+")
_AFTER = frozenset((b" ", b"\t", b"\r", b"\n", b">", b"/"))
_CLOSE_REST = re.compile(rb"\s*>")


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


class _FirstEntry(Exception):
    """The head of the document is read: the first entry starts here."""


def split(
    body: bytes, url: str, headers: Mapping[str, str], seen: Collection[bytes] = frozenset()
) -> Split | None:
    """The entries of ``body`` (served from ``url`` with lower-case ``headers``), or
    None when the scanner is not sure of them. ``seen``: the fingerprints of the feed's
    last document; entries with those bytes are placed without reading them again
    (``_split_seen``), whenever that gives the same answer as reading them all."""
    if not _ascii_markup(body, headers.get("content-type", "")):
        return None
    if seen:
        quick = _split_seen(body, url, headers, seen)
        if quick is not None:
            return quick
    scanner = _Scanner(body)
    try:
        scanner.run()
    except (_Unsure, expat.ExpatError, ValueError, UnicodeError, LookupError):
        return None
    context = _context(body, url, headers, scanner.root, scanner.ancestors)
    return Split(tuple(scanner.spans), tuple(_print(context, body, s) for s in scanner.spans))


def _context(
    body: bytes, url: str, headers: Mapping[str, str], root: int, ancestors: Sequence[int]
) -> Any:
    """The hash of what around an entry changes how feedparser reads it."""
    context = hashlib.sha256(VERSION)  # faster than BLAKE2b where the CPU has SHA-NI
    for part in (
        feedparser.__version__,
        url,
        headers.get("content-type", ""),
        headers.get("content-location", ""),
    ):
        context.update(part.encode("utf-8", "surrogatepass") + b"\0")
    context.update(body[:root])
    for start in ancestors:
        context.update(body[start : _tag_end(body, start)])
    return context


def _print(context: Any, body: bytes, span: tuple[int, int]) -> bytes:
    h = context.copy()
    h.update(body[span[0] : span[1]])
    return bytes(h.digest()[:PRINT_SIZE])


def _split_seen(
    body: bytes, url: str, headers: Mapping[str, str], seen: Collection[bytes]
) -> Split | None:
    """``split`` without running expat over the entries seen before, or None (then the
    whole document is scanned). The entries are looked for as bytes (``<item`` ...
    ``</item>``, with the name the first entry has); those whose fingerprint is in
    ``seen`` are replaced by an empty element of that name, and the scanner reads that
    document, which must place every entry exactly there. That proves the rest: a
    fingerprint covers an entry's bytes and all that decides how they read (the
    prolog, the ancestors' start tags, the URL and headers), and one is only
    remembered for an entry this scanner placed, in a document it read whole or so."""
    head = _Scanner(body, stop_at_entry=True)
    try:
        head.run()
    except _FirstEntry:
        pass
    except (_Unsure, expat.ExpatError, ValueError, UnicodeError, LookupError):
        return None
    if head.first < 0:
        return None
    name = _NAME.match(body, head.first + 1)
    if name is None:
        return None
    spans = _candidates(body, head.first, name.group())
    if not spans:
        return None
    context = _context(body, url, headers, head.root, head.ancestors)
    prints = tuple(_print(context, body, span) for span in spans)
    if not any(p in seen for p in prints):
        return None
    stand_in = b"<" + name.group() + b"></" + name.group() + b">"
    pieces, expected, at, shift = [], [], 0, 0
    for (start, end), fingerprint in zip(spans, prints, strict=True):
        if fingerprint in seen:
            pieces += [body[at:start], stand_in]
            expected.append((start - shift, start - shift + len(stand_in)))
            shift += end - start - len(stand_in)
            at = end
        else:
            expected.append((start - shift, end - shift))
    pieces.append(body[at:])
    check = _Scanner(b"".join(pieces))
    try:
        check.run()
    except (_Unsure, expat.ExpatError, ValueError, UnicodeError, LookupError):
        return None
    if check.spans != expected or (check.root, check.ancestors) != (head.root, head.ancestors):
        return None
    return Split(tuple(spans), prints)


def _candidates(body: bytes, first: int, name: bytes) -> list[tuple[int, int]]:
    """Where the entries named ``name`` seem to be, from ``first`` on, by their bytes
    alone (checked by the caller)."""
    spans: list[tuple[int, int]] = []
    start = first
    opening, closing = b"<" + name, b"</" + name
    while start >= 0:
        close = body.find(closing, start)
        if close < 0:
            return []
        end = _CLOSE_REST.match(body, close + len(closing))
        if end is None:
            return []
        spans.append((start, end.end()))
        start = body.find(opening, end.end())
        while start >= 0 and body[start + len(opening) : start + len(opening) + 1] not in _AFTER:
            start = body.find(opening, start + 1)
    return spans


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

    def __init__(self, body: bytes, stop_at_entry: bool = False) -> None:
        self.body = body
        self.stop_at_entry = stop_at_entry
        self.first = -1  # where the first entry starts
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
            if self.first < 0:
                self.first = at
                if self.stop_at_entry:
                    raise _FirstEntry
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
