from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from digest.clean import clean, finish, identity, plain_text, sanitize, truncate
from digest.errors import ParseError
from digest.model import FeedSource, RawEntry
from digest.parse import parse

from .conftest import SAMPLES

NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
SOURCE = FeedSource("https://blog.example/feed.xml")


def raw(**kw: object) -> RawEntry:
    base = {
        "guid": "g1",
        "link": "https://blog.example/p1",
        "title": "Title",
        "summary": None,
        "content": None,
        "base": "https://blog.example/feed.xml",
    }
    base.update(kw)
    return RawEntry(**base)  # type: ignore[arg-type]


def test_rss_atom_and_wordpress_samples_parse() -> None:
    for name, fmt, count in [
        ("harbour-tech.rss", "rss20", 4),
        ("field-notes.atom", "atom10", 3),
        ("allotment-diary.rss", "rss20", 3),
    ]:
        path = SAMPLES / name
        parsed = parse(path.read_bytes(), path.as_uri())
        assert parsed.format == fmt
        assert len(parsed.entries) == count
        assert all(e.published for e in parsed.entries)


def test_wordpress_content_encoded_is_the_body() -> None:
    path = SAMPLES / "allotment-diary.rss"
    first = parse(path.read_bytes(), path.as_uri()).entries[0]
    assert first.content and "<figure" in first.content
    assert first.summary and first.summary.startswith("Forty cloves")
    assert first.author == "Margaret Okonkwo"
    assert first.categories == ("Planting", "Events")


def test_relative_links_resolve_against_xml_base_and_content_location() -> None:
    path = SAMPLES / "field-notes.atom"
    entry = parse(path.read_bytes(), "https://mirror.example/atom.xml").entries[0]
    assert entry.link == "https://fieldnotes.example/posts/counting-glaciers"
    cleaned = finish(clean(entry, SOURCE, "Field Notes", NOW))
    assert 'src="https://fieldnotes.example/images/glacier-camp.jpg"' in cleaned.content_html
    assert (
        'href="https://fieldnotes.example/posts/counting-glaciers#method"' in cleaned.content_html
    )
    assert "tracker.example" not in cleaned.content_html  # the 1×1 pixel
    assert cleaned.thumbnail == "https://fieldnotes.example/images/glacier-camp.jpg"


def test_lowercase_headers_matter_to_feedparser() -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        b"<item><title>x</title><link>/relative</link></item></channel></rss>"
    )
    entry = parse(
        body, "https://site.example/blog/feed", {"Content-Type": "application/rss+xml"}
    ).entries[0]
    assert entry.link == "https://site.example/relative"


def test_rdf_and_rss091() -> None:
    rdf = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
 <channel rdf:about="https://r.example/"><title>R</title><link>https://r.example/</link></channel>
 <item rdf:about="https://r.example/1"><title>One</title><link>https://r.example/1</link></item>
</rdf:RDF>"""
    parsed = parse(rdf, "https://r.example/rss")
    assert parsed.format == "rss10" and parsed.entries[0].title == "One"
    rss091 = (
        b'<rss version="0.91"><channel><title>O</title><item><title>Old</title>'
        b"<link>https://o.example/1</link></item></channel></rss>"
    )
    assert parse(rss091, "https://o.example/").entries[0].link == "https://o.example/1"


def test_json_feed() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "home_page_url": "https://j.example/",
        "authors": [{"name": "Jay"}],
        "items": [
            {
                "id": 1,
                "url": "/one",
                "title": "One",
                "content_html": "<p>Hi <b>there</b></p>",
                "date_published": "2026-11-27T10:00:00Z",
                "tags": ["a", "b"],
            },
            {"id": "2", "content_text": "Text only <not html>", "summary": "Short"},
            "junk",
        ],
    }
    parsed = parse(
        json.dumps(doc).encode(),
        "https://j.example/feed.json",
        {"content-type": "application/feed+json"},
    )
    assert parsed.format == "json11"
    one, two = parsed.entries
    assert one.guid == "1" and one.link == "https://j.example/one"
    assert one.published == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert one.author == "Jay" and one.categories == ("a", "b")
    assert two.content == "Text only &lt;not html&gt;"
    assert parsed.warnings


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<!DOCTYPE html><html><body>Welcome</body></html>", "HTML page"),
        (b"", "empty document"),
        (b'{"hello": "world"}', "not a JSON Feed"),
        (b"{not json", "invalid JSON"),
        (b"just some text, nothing else", "not a feed"),
    ],
)
def test_not_a_feed(body: bytes, why: str) -> None:
    with pytest.raises(ParseError, match=why):
        parse(body, "https://x.example/feed")


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        "<style>body{display:none}</style>",
        '<iframe src="x"></iframe>',
        '<form action="x"><input name="q"></form>',
        '<a href="javascript:alert(1)">j</a>',
        '<img src="data:image/png;base64,AAAA">',
        '<p onclick="alert(1)">p</p>',
        '<a href="JaVaScRiPt:alert(1)">j</a>',
        '<object data="x"></object>',
        '<svg onload="x">',
        "<img src=x onerror=alert(1)>",
        '<a href="vbscript:x">v</a>',
        "<math><mi>x</mi></math>",
    ],
)
def test_sanitizer_removes_active_content(hostile: str) -> None:
    out = sanitize(f"<p>ok</p>{hostile}", "https://x.example/")
    lowered = out.lower()
    for bad in (
        "<script",
        "<style",
        "<iframe",
        "<form",
        "javascript:",
        "data:",
        "onclick",
        "onerror",
        "onload",
        "<object",
        "<svg",
        "vbscript:",
        "<math",
    ):
        assert bad not in lowered, (hostile, out)
    assert "<p>ok</p>" in out


def test_links_get_rel_and_images_keep_alt() -> None:
    out = sanitize(
        '<a href="/x">x</a><img src="a.png" alt="An image" width="20">', "https://x.example/blog/"
    )
    assert 'href="https://x.example/x"' in out and 'rel="noopener noreferrer nofollow"' in out
    assert '<img src="https://x.example/blog/a.png" alt="An image" width="20">' in out


def test_titles_are_plain_text() -> None:
    assert plain_text("AT&amp;amp;T <b>rocks</b>") == "AT&T rocks"
    assert plain_text("5 &lt; 6 &amp; <i>7</i> &gt; 3") == "5 < 6 & 7 > 3"
    assert plain_text("line\none\r\ntwo\ttabs") == "line one two tabs"
    assert plain_text("<p>para</p><p>two</p>") == "para two"
    assert plain_text("zero\u200bwidth \x00nul") == "zerowidth nul"


def test_clean_entry() -> None:
    e = clean(
        raw(
            title="<b>Hello</b> &amp; welcome",
            summary="<p>Short &hellip;</p>",
            content="<p>" + "word " * 400 + "</p>",
        ),
        SOURCE,
        "Blog",
        NOW,
        100,
    )
    assert e.title == "Hello & welcome"
    assert e.summary == "Short …"
    e = clean(raw(content="<p>" + "word " * 400 + "</p>"), SOURCE, "Blog", NOW, 100)
    assert len(e.summary) <= 100 and e.summary.endswith("…") and "word wor…" not in e.summary


def test_non_http_links_are_dropped() -> None:
    for link in ("javascript:alert(1)", "mailto:a@b.example", "ftp://x.example/f", "  "):
        assert clean(raw(link=link), SOURCE, "Blog", NOW).link is None


def test_dates() -> None:
    undated = clean(raw(), SOURCE, "Blog", NOW)
    assert undated.published == NOW and not undated.dated
    future = clean(raw(published=NOW + timedelta(days=3)), SOURCE, "Blog", NOW)
    assert future.published == NOW and future.dated
    updated = clean(raw(updated=NOW - timedelta(days=1)), SOURCE, "Blog", NOW)
    assert updated.published == NOW - timedelta(days=1)


def test_identity_guid_then_link_then_hash() -> None:
    assert identity(raw(guid="a")) == identity(raw(guid="a", link="other"))
    assert identity(raw(guid=None)) == identity(raw(guid=None, title="other title"))
    no_link = raw(guid=None, link=None, title="T", content="C")
    assert identity(no_link) == identity(raw(guid=None, link=None, title="T", content="C"))
    assert identity(no_link) != identity(raw(guid=None, link=None, title="T", content="D"))


def test_untitled_entries_get_a_title() -> None:
    assert (
        clean(raw(title="", summary="A summary that says it all"), SOURCE, "B", NOW).title
        == "A summary that says it all"
    )
    assert clean(raw(title=""), SOURCE, "B", NOW).title == "(untitled)"


def test_truncate() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("one two three four five", 12) == "one two…"
    assert len(truncate("x" * 50, 10)) == 10


def test_bodies_are_sanitized_only_when_finished() -> None:
    hostile = '<p>Hi <img src="/a.png"></p><script>alert(1)</script><noscript>Turn on JS</noscript>'
    e = clean(raw(content=hostile), SOURCE, "Blog", NOW)
    assert e.content_html == "" and e.body_source  # untrusted until finished
    assert e.summary == "Hi"  # the excerpt never holds what the body drops
    done = finish(e)
    assert done.content_html == '<p>Hi <img src="https://blog.example/a.png"></p>'
    assert done.body_source == "" and done.thumbnail == "https://blog.example/a.png"
    assert finish(done) == done
