"""The daily run pays for new entries only: ``scan.split`` and ``parse.parse_new``.

Whatever the document, reading it without the entries seen before must give exactly
the entries reading it whole gives, minus those: checked over the whole shared corpus,
on generated documents (CDATA, comments, processing instructions, namespaces,
entities, BOMs, declared encodings, RSS 2.0, RSS 1.0/RDF, Atom), and with faults
injected where the scanner or feedparser could disagree. Where the scanner is not sure,
the document is parsed whole. Work is bounded by counting what feedparser is given.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.errors import ParseError
from digest.ingest import parse as parse_module
from digest.ingest import scan
from digest.ingest.parse import Fresh, ParseLimits, parse, parse_new

from .test_corpus import CORPUS, corpus_files, headers_for, manifest_headers

URL = "https://blog.example/feed/"
HEADERS = {"content-type": "application/rss+xml; charset=utf-8"}
WHEN = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)


def rss(items: list[str], head: str = "", channel: str = "", prolog: str | None = None) -> str:
    prolog = '<?xml version="1.0" encoding="utf-8"?>\n' if prolog is None else prolog
    return (
        f'{prolog}<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"{head}>\n'
        f"<channel>\n<title>A blog</title><link>https://blog.example/</link>"
        f"<lastBuildDate>{format_datetime(WHEN)}</lastBuildDate>{channel}\n"
        + "\n".join(items)
        + "\n</channel>\n</rss>\n"
    )


def item(n: int, body: str = "") -> str:
    when = format_datetime(WHEN - timedelta(hours=n))
    return (
        f"<item><title>Post {n}</title><link>https://blog.example/{n}/</link>"
        f'<guid isPermaLink="false">post-{n}</guid><pubDate>{when}</pubDate>'
        f"<description>{body or f'About {n}'}</description></item>"
    )


def feed(first: int, count: int) -> bytes:
    return rss([item(n) for n in range(first, first + count)]).encode()


class Calls:
    """What feedparser was given: one document per call."""

    def __init__(self) -> None:
        self.documents: list[bytes] = []

    def entries(self) -> list[int]:
        return [d.count(b"<item") + d.count(b"<entry") for d in self.documents]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    seen = Calls()
    real = feedparser.parse

    def counting(document: bytes, *args: object, **kwargs: object) -> object:
        seen.documents.append(document)
        return real(document, *args, **kwargs)

    monkeypatch.setattr(parse_module.feedparser, "parse", counting)
    return seen


def both_ways(body: bytes, headers: dict[str, str], mask: list[bool]) -> tuple[Fresh, Fresh, tuple]:
    """(``parse_new`` on a first read, on a read with the masked entries seen, the
    entries the second must give: the whole parse's minus the seen ones)."""
    whole = parse(body, URL, headers)
    first = parse_new(body, URL, headers)
    assert first.parsed.entries == whole.entries
    assert first.total == len(whole.entries)
    seen = {p for p, hide in zip(first.prints, mask, strict=False) if hide}
    again = parse_new(body, URL, headers, seen=seen)
    if not again.prints:  # not split: every entry, as ``parse`` gives them
        return first, again, whole.entries
    assert again.prints == first.prints
    want = tuple(e for e, p in zip(whole.entries, first.prints, strict=True) if p not in seen)
    assert again.parsed.title == whole.title and again.parsed.format == whole.format
    assert again.total == len(whole.entries)
    return first, again, want


# -- bounded work -------------------------------------------------------------------------


def test_a_feed_with_two_new_entries_costs_two_entries(calls: Calls) -> None:
    yesterday = parse_new(feed(2, 50), URL, HEADERS)
    assert len(yesterday.prints) == 50 and calls.entries() == [50]
    calls.documents.clear()
    today = parse_new(feed(0, 50), URL, HEADERS, seen=set(yesterday.prints))
    assert [e.guid for e in today.parsed.entries] == ["post-0", "post-1"]
    assert today.total == 50 and len(today.prints) == 50
    assert calls.entries() == [2]  # one call to feedparser, given two entries
    assert set(today.prints) & set(yesterday.prints) == set(yesterday.prints[:48])


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every document the scanner runs expat over (whole or in part)."""
    sizes: list[int] = []
    real = scan._Scanner.__init__

    def counting(self: scan._Scanner, body: bytes, *args: object, **kwargs: object) -> None:
        sizes.append(len(body))
        real(self, body, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scan._Scanner, "__init__", counting)
    return sizes


def test_the_seen_entries_are_not_scanned_again(scanned: list[int]) -> None:
    """The next day, expat reads the envelope and the new entries, with a stand-in for
    each seen one: the 48 seen entries' bytes are only searched and hashed."""
    yesterday = parse_new(feed(2, 50), URL, HEADERS)
    today_body = feed(0, 50)
    scanned.clear()
    today = parse_new(today_body, URL, HEADERS, seen=set(yesterday.prints))
    sizes = list(scanned)
    assert [e.guid for e in today.parsed.entries] == ["post-0", "post-1"]
    assert today.prints == parse_new(today_body, URL, HEADERS).prints
    # two scanners: one stopped at the first entry, one over the document with stand-ins
    assert len(sizes) == 2 and sizes[0] == len(today_body) and sizes[1] < len(today_body) // 3


@pytest.mark.parametrize(
    "where",
    [
        "<description><![CDATA[{seen}]]></description>",  # quoted in a new entry's CDATA
        "<!-- {seen} -->",  # in a comment between entries
        "<dc:extra>{seen}</dc:extra>",  # one level too deep
        "<item><title>New</title><guid>new</guid><description>x</description>{seen}</item>",
    ],
)
def test_seen_bytes_out_of_place_are_not_taken_for_the_entry(where: str) -> None:
    """An entry's bytes seen before but now somewhere an entry is not (quoted in a CDATA
    section, commented out, nested): the stand-in is not read as an entry there, so the
    bytes are scanned as they are now, and the reading is the whole one's."""
    seen_item = item(7)
    first = parse_new(rss([seen_item, item(8)]).encode(), URL, HEADERS)
    body = rss([item(6), where.format(seen=seen_item), item(8)]).encode()
    headers = {**HEADERS, "content-location": URL}
    assert scan._split_seen(body, URL, headers, set(first.prints)) is None
    whole = parse(body, URL, HEADERS)
    careful = parse_new(body, URL, HEADERS).prints  # nothing seen: the whole document scanned
    fresh = parse_new(body, URL, HEADERS, seen=set(first.prints))
    want = whole.entries
    if careful:
        want = tuple(
            e for e, p in zip(whole.entries, careful, strict=True) if p not in first.prints
        )
    assert fresh.parsed.entries == want and fresh.total == len(whole.entries)


def test_seen_entries_in_another_order_are_still_seen(scanned: list[int]) -> None:
    first = parse_new(feed(0, 6), URL, HEADERS)
    body = rss([item(n) for n in (9, 5, 3, 4, 1, 2, 0)]).encode()
    headers = {**HEADERS, "content-location": URL}
    quick = scan._split_seen(body, URL, headers, set(first.prints))
    assert quick is not None and quick == scan.split(body, URL, headers)
    fresh = parse_new(body, URL, HEADERS, seen=set(first.prints))
    assert [e.guid for e in fresh.parsed.entries] == ["post-9"] and fresh.total == 7


def test_nothing_seen_is_one_whole_parse(calls: Calls) -> None:
    fresh = parse_new(feed(0, 20), URL, HEADERS, seen={b"x" * 16})
    assert len(fresh.parsed.entries) == 20 and calls.entries() == [20]


def test_everything_seen_still_reads_the_feed(calls: Calls) -> None:
    first = parse_new(feed(0, 5), URL, HEADERS)
    again = parse_new(feed(0, 5), URL, HEADERS, seen=set(first.prints))
    assert again.parsed.entries == () and again.parsed.title == "A blog" and again.total == 5
    assert calls.entries() == [5, 0]


def test_a_changed_entry_is_read_again() -> None:
    items = [item(n) for n in range(3)]
    first = parse_new(rss(items).encode(), URL, HEADERS)
    items[1] = item(1, "About 1, corrected")
    again = parse_new(rss(items).encode(), URL, HEADERS, seen=set(first.prints))
    assert [e.summary for e in again.parsed.entries] == ["About 1, corrected"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda b: b.replace(b'version="2.0"', b'version="2.0" xml:base="/x/"'), id="base"
        ),
        pytest.param(lambda b: b.replace(b"<channel>", b'<channel xml:lang="fr">'), id="lang"),
        pytest.param(
            lambda b: b.replace(b'encoding="utf-8"', b'encoding="iso-8859-1"'), id="encoding"
        ),
    ],
)
def test_the_entries_context_is_part_of_their_fingerprint(change: object) -> None:
    body = feed(0, 3)
    first = parse_new(body, URL, HEADERS)
    changed = change(body)  # type: ignore[operator]
    assert set(scan.split(changed, URL, HEADERS).prints).isdisjoint(first.prints)  # type: ignore[union-attr]
    for other in ({**HEADERS, "content-location": URL + "x"}, {"content-type": "text/xml"}):
        assert set(scan.split(body, URL, other).prints).isdisjoint(first.prints)  # type: ignore[union-attr]
    assert set(scan.split(body, URL + "?2", HEADERS).prints).isdisjoint(first.prints)  # type: ignore[union-attr]


def test_the_envelope_outside_the_ancestors_is_not() -> None:
    first = scan.split(feed(0, 3), URL, HEADERS)
    rebuilt = feed(0, 3).replace(b"<title>A blog</title>", b"<title>A blog, renamed</title>")
    assert first is not None and scan.split(rebuilt, URL, HEADERS).prints == first.prints  # type: ignore[union-attr]


def test_more_entries_than_kept_are_parsed_whole(calls: Calls) -> None:
    limits = ParseLimits(max_entries=10)
    first = parse_new(feed(0, 12), URL, HEADERS, limits)
    assert first.prints == () and len(first.parsed.entries) == 10  # the cap, as ``parse``
    assert calls.entries() == [12]


# -- where the scanner is not sure: parsed whole ------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            rss([item(1)], prolog='<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY a "b">]>\n'),
            id="doctype",
        ),
        pytest.param(rss([item(1)]).replace("<channel>", "<channel><item>"), id="not-well-formed"),
        pytest.param(rss([item(1)], channel="<x:item xmlns:x='urn:x'/>"), id="item-elsewhere"),
        pytest.param(rss([item(1)]).replace("<channel>", "<item/><channel>"), id="item-above"),
        pytest.param(rss([item(1).replace("</title>", "</title><entry/>")]), id="entry-inside"),
        pytest.param("<html><body><item>x</item></body></html>", id="html"),
        pytest.param(
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns="http://my.netscape.com/rdf/simple/0.9/"><item><title>a</title></item></rdf:RDF>',
            id="rss-0.90",
        ),
        pytest.param(rss([item(1).replace("Post 1", "Post &nbsp; 1")]), id="undeclared-entity"),
        pytest.param(
            rss([item(1)]).replace("<rss ", '<rss xmlns="urn:other" '), id="rss-in-a-namespace"
        ),
    ],
)
def test_documents_the_scanner_does_not_split(body: str) -> None:
    assert scan.split(body.encode(), URL, HEADERS) is None


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-32", "shift_jis", "utf-7"])
def test_encodings_whose_markup_is_not_ascii_are_not_split(codec: str) -> None:
    body = rss([item(1)], prolog=f'<?xml version="1.0" encoding="{codec}"?>\n')
    assert scan.split(body.encode(codec if codec != "utf-7" else "ascii"), URL, {}) is None
    assert (
        scan.split(feed(0, 2), URL, {"content-type": f"application/xml; charset={codec}"}) is None
    )


def test_json_feed_is_untouched(calls: Calls) -> None:
    body = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "J",
            "items": [{"id": "1", "content_text": "<item>x</item>"}],
        }
    ).encode()
    fresh = parse_new(body, URL, {"content-type": "application/feed+json"})
    assert fresh.prints == () and len(fresh.parsed.entries) == 1 and calls.documents == []


def test_what_parse_refuses_parse_new_refuses() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY a{i} "{"&a;" * 10}">' for i in range(1))
        + "]><rss><channel>"
        + "&a0;" * 200_000
        + "</channel></rss>"
    ).encode()
    with pytest.raises(ParseError, match="entity bomb"):
        parse_new(bomb, URL, HEADERS)
    with pytest.raises(ParseError, match="HTML page"):
        parse_new(b"<html><body>hi</body></html>", URL, HEADERS)


# -- faults: where the split and feedparser could disagree, the whole parse decides --------


def test_another_encoding_chosen_without_the_seen_entries_means_a_whole_parse(
    calls: Calls,
) -> None:
    """Served as text/xml without a charset, feedparser tries US-ASCII first: the whole
    document (one entry is not ASCII) is read as UTF-8, the rest alone would be read
    as US-ASCII. The check notices, and the document is parsed whole."""
    items = [item(0), item(1, "Zoë"), item(2)]
    body = rss(items, prolog="").encode()
    headers = {"content-type": "text/xml"}
    first = parse_new(body, URL, headers)
    seen = {first.prints[1]}
    calls.documents.clear()
    again = parse_new(body, URL, headers, seen=seen)
    assert calls.entries() == [2, 3]  # tried without the seen one, then whole
    whole = parse(body, URL, headers)
    assert again.parsed.entries == (whole.entries[0], whole.entries[2])


def test_a_mis_split_is_caught(calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the scanner ever place an entry wrong, the reading without it does not
    check out (not one entry per span, or not well-formed) and the whole parse decides."""
    body = feed(0, 4)
    first = parse_new(body, URL, HEADERS)
    real = scan.split

    def off_by_some(body: bytes, url: str, headers: object, *seen: object) -> scan.Split | None:
        parts = real(body, url, headers, *seen)  # type: ignore[arg-type]
        assert parts is not None
        spans = tuple((s + 7, e + 7) for s, e in parts.spans)
        return scan.Split(spans, parts.prints)

    monkeypatch.setattr(scan, "split", off_by_some)
    calls.documents.clear()
    again = parse_new(body, URL, HEADERS, seen={first.prints[0]})
    assert [e.guid for e in again.parsed.entries] == [f"post-{n}" for n in range(1, 4)]
    assert len(calls.documents) == 2


def test_an_entry_feedparser_cannot_give_leaves_nothing_to_remember(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One fingerprint per entry, or none: a print must stand for an entry."""
    real = parse_module._entry

    def picky(raw: dict[str, object], *rest: object) -> object:
        if raw.get("id") == "post-1":
            raise ValueError("no")
        return real(raw, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(parse_module, "_entry", picky)
    fresh = parse_new(feed(0, 3), URL, HEADERS)
    assert len(fresh.parsed.entries) == 2 and fresh.prints == ()


# -- generated documents ------------------------------------------------------------------

TEXT = st.lists(
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
        max_size=5,
    )
    | st.sampled_from(["<", ">", "&", "]]>", "</item>", "</entry>", "<item>", "\n", "é", "€"]),
    max_size=8,
).map("".join)


def escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def field(draw: st.DrawFn) -> str:
    """Text as a feed may write it: escaped, in CDATA, with comments, processing
    instructions, character references and predefined entities around it."""
    text = draw(TEXT)
    way = draw(st.sampled_from(["escaped", "cdata", "comment", "pi", "refs"]))
    if way == "cdata":
        return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
    if way == "comment":
        note = text.replace("--", "- -").rstrip("-")
        return f"{escaped(text)}<!-- {note} </item></entry> -->"
    if way == "pi":
        return f"<?note {escaped(text).replace('?>', '? >')} </item>?>{escaped(text)}"
    if way == "refs":
        return "&#233;&#x20AC;&quot;&apos;" + escaped(text) + "&lt;/item&gt;"
    return escaped(text)


@st.composite
def document(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["rss", "atom", "atom-prefixed", "rdf"]))
    n = draw(st.integers(0, 6))
    entries = []
    for i in range(n):
        title, body = draw(field()), draw(field())
        extra = draw(
            st.sampled_from(["", ' xml:base="/sub/"', ' xml:lang="de"', ' xmlns:y="urn:y"'])
        )
        if kind == "rss":
            entries.append(
                f"<item{extra}><title>{title}</title><guid>g{i}</guid>"
                f"<description>{body}</description><dc:creator>{title}</dc:creator></item>"
            )
        elif kind == "rdf":
            entries.append(
                f'<item rdf:about="https://r.example/{i}"{extra}><title>{title}</title>'
                f"<link>https://r.example/{i}</link><description>{body}</description></item>"
            )
        else:
            p = "a:" if kind == "atom-prefixed" else ""
            entries.append(
                f"<{p}entry{extra}><{p}id>urn:e{i}</{p}id><{p}title>{title}</{p}title>"
                f'<{p}content type="html">{body}</{p}content></{p}entry>'
            )
    envelope_note = draw(field())
    if kind == "rss":
        doc = rss(entries, channel=f"<description>{envelope_note}</description>", prolog="")
    elif kind == "rdf":
        doc = (
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns="http://purl.org/rss/1.0/"><channel rdf:about="https://r.example/">'
            f"<title>R</title><link>https://r.example/</link><description>{envelope_note}"
            "</description></channel>" + "".join(entries) + "</rdf:RDF>"
        )
    else:
        p = "a:" if kind == "atom-prefixed" else ""
        ns = (
            ' xmlns:a="http://www.w3.org/2005/Atom"'
            if p
            else ' xmlns="http://www.w3.org/2005/Atom"'
        )
        doc = (
            f"<{p}feed{ns}><{p}title>A</{p}title><{p}id>urn:f</{p}id>"
            f"<{p}subtitle>{envelope_note}</{p}subtitle>" + "".join(entries) + f"</{p}feed>"
        )
    declared = draw(
        st.sampled_from([None, "utf-8", "UTF-8", "iso-8859-1", "windows-1252", "utf-16"])
    )
    prolog = "" if declared is None else f'<?xml version="1.0" encoding="{declared}"?>\n'
    prolog += draw(
        st.sampled_from(["", "<!-- a comment -->\n", '<?xml-stylesheet href="s.xsl"?>\n'])
    )
    codec = declared or "utf-8"
    body = (prolog + doc).encode(codec, "xmlcharrefreplace")
    if draw(st.booleans()) and codec.lower() == "utf-8":
        body = b"\xef\xbb\xbf" + body
    content_type = draw(
        st.sampled_from(["application/xml", "application/rss+xml; charset=utf-8", "text/xml", ""])
    )
    return body, {"content-type": content_type} if content_type else {}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document(), st.lists(st.booleans(), max_size=6))
def test_reading_without_the_seen_entries_is_reading_it_whole(
    doc: tuple[bytes, dict[str, str]], mask: list[bool]
) -> None:
    body, headers = doc
    try:
        parse(body, URL, headers)
    except ParseError:
        return  # not a feed either way: parse_new raises the same (checked above)
    first, again, want = both_ways(body, headers, mask)
    assert again.parsed.entries == want
    parts = scan.split(body, URL, {**headers, "content-location": URL})
    seen = {p for p, hide in zip(first.prints, mask, strict=False) if hide}
    quick = scan._split_seen(body, URL, {**headers, "content-location": URL}, seen)
    assert quick is None or quick == parts
    if parts is not None:  # each span is one whole entry element
        for start, end in parts.spans:
            piece = body[start:end]
            assert piece.startswith((b"<item", b"<entry", b"<a:entry"))
            assert piece.endswith((b"</item>", b"</entry>", b"</a:entry>", b"/>"))


# -- the whole corpus, both ways ----------------------------------------------------------


def corpus_documents() -> Iterator[tuple[str, bytes, dict[str, str]]]:
    declared = manifest_headers()
    for path in corpus_files():
        rel = path.relative_to(CORPUS).as_posix()
        body = path.read_bytes()
        headers = {k.lower(): v for k, v in headers_for(rel, body, declared).items()}
        if headers.pop("content-encoding", None):
            body = gzip.decompress(body)
        yield rel, body, headers


@pytest.mark.slow
def test_every_corpus_feed_reads_the_same_both_ways() -> None:
    """Each corpus document is read whole, then as a daily run reads it with some of its
    entries seen: each one alone, all but the first, every other one, all of them.
    Entry by entry, the result is the whole reading minus the seen ones."""
    if not corpus_files():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the corpus is missing at {CORPUS}")
        pytest.skip(f"no corpus at {CORPUS}")
    split = compared = quicks = 0
    for rel, body, headers in corpus_documents():
        url = f"https://corpus.example/{rel}"
        try:
            whole = parse(body, url, headers)
        except ParseError:
            with pytest.raises(ParseError):
                parse_new(body, url, headers)
            continue
        first = parse_new(body, url, headers)
        assert first.parsed.entries == whole.entries, rel
        prints = first.prints
        if not prints:
            continue
        split += 1
        masks = [{p} for p in prints[:5]] + [set(prints[1:]), set(prints[::2]), set(prints)]
        lowered = {**headers, "content-location": url}
        careful = scan.split(body, url, lowered)
        for seen in masks:
            quick = scan._split_seen(body, url, lowered, seen)
            assert quick is None or quick == careful, rel
            quicks += quick is not None
            again = parse_new(body, url, headers, seen=seen)
            want = tuple(e for e, p in zip(whole.entries, prints, strict=True) if p not in seen)
            assert again.parsed.entries == want, (rel, len(seen))
            assert (again.parsed.title, again.total) == (whole.title, len(whole.entries)), rel
            compared += 1
    assert split > 500 and compared > 2000  # the corpus was really split, not all parsed whole
    assert quicks > 1000  # and most of those the seen entries unscanned


def test_corpus_real_feeds_are_split() -> None:
    """The scanner's reach on feeds captured from real sites: most of them split."""
    real = [(rel, b, h) for rel, b, h in corpus_documents() if rel.startswith("real/")]
    if not real:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the corpus is missing at {CORPUS}")
        pytest.skip(f"no corpus at {CORPUS}")
    split = sum(scan.split(b, URL, h) is not None for _, b, h in real)
    assert split >= len(real) // 2, f"only {split} of {len(real)} real feeds split"


def test_prints_pack_and_unpack() -> None:
    parts = scan.split(feed(0, 3), URL, HEADERS)
    assert parts is not None
    assert scan.unpack(scan.pack(parts.prints)) == set(parts.prints)
    assert scan.unpack(None) == frozenset() and scan.unpack(b"") == frozenset()
    assert len(scan.pack(parts.prints)) == 3 * scan.PRINT_SIZE
