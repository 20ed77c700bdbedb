from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.errors import ParseError
from digest.ingest.clean import (
    clean,
    finish,
    identity,
    plain_text,
    sanitize,
    stand_ins,
    truncate,
)
from digest.ingest.parse import parse
from digest.model import FeedSource, RawEntry

from .helpers import NOW, SAMPLES

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
    assert truncate("one two\nthree four", 10) == "one two…"  # a line break is a word break
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


# -- tracking pixels, however they are sized ------------------------------------------------

#: CSS pixels per unit, written out here (not taken from the code under test).
UNITS = {"px": 1, "": 1, "pt": 4 / 3, "in": 96, "em": 16, "rem": 16, "pc": 16}
TINY = [0, 0.5, 1, 2, 2.5, 3]  # a tracking pixel or a spacer
REAL = [4, 5, 20, 300, 1200]  # an image


def length(pixels: float, unit: str, upper: bool) -> str:
    text = f"{pixels / UNITS[unit]:g}{unit}"
    return text.upper() if upper else text


SIZED = st.fixed_dictionaries(
    {
        "pixels": st.sampled_from(TINY + REAL),
        "unit": st.sampled_from(sorted(UNITS)),
        "upper": st.booleans(),
        "important": st.booleans(),
        "how": st.sampled_from(
            ["width=", "height=", "width:", "height:", "max-width:", "max-height:"]
        ),
    }
)


def image(sizes: list[dict[str, object]], other: str) -> str:
    attributes, style = [], [other] if other else []
    for s in sizes:
        how = str(s["how"])
        unit = str(s["unit"]) if not how.endswith("=") or s["unit"] in ("", "px") else ""
        value = length(s["pixels"], unit, bool(s["upper"]))  # type: ignore[arg-type]
        if how.endswith("="):  # an attribute is read in pixels, whatever follows the number
            attributes.append(f'{how}"{value}"')
        else:
            important = " !important" if s["important"] else ""
            style.append(f"{how.upper() if s['upper'] else how} {value}{important}")
    style_attribute = f' style="{"; ".join(style)}"' if style else ""
    return f'<p>Text</p><img src="/i.png" alt="An image" {" ".join(attributes)}{style_attribute}>'


@given(
    sizes=st.lists(SIZED, max_size=3, unique_by=lambda s: str(s["how"])),
    other=st.sampled_from(["", "color: red", "border: 0", "position: fixed"]),
)
def test_images_sized_a_few_pixels_either_way_are_dropped(
    sizes: list[dict[str, object]], other: str
) -> None:
    """By attribute or by style, in any unit, in any case, !important or not."""
    out = sanitize(image(sizes, other), "https://x.example/")
    tiny = any(s["pixels"] in TINY for s in sizes)  # a bare number: pixels (quirks mode)
    assert ("<img" not in out) == tiny, out
    assert "style" not in out and "<p>Text</p>" in out


@pytest.mark.parametrize(
    "pixel",
    [
        '<img src="/t.gif" style="width:1px;height:1px">',
        '<img src="/t.gif" style="display:none">',
        '<img src="/t.gif" style="visibility: hidden">',
        '<img src="/t.gif" style="WIDTH: 0">',
        '<img src="/t.gif" width="1.0" height="1.0">',
        '<img src="/t.gif" width="0">',
        '<img src="/t.gif" height="2px">',
        '<img src="/t.gif" style="max-height: 0.1em">',
        '<img src="/t.gif" style="width: 1px !important">',
    ],
)
def test_tracking_pixels_are_dropped(pixel: str) -> None:
    assert "<img" not in sanitize(f"<p>a</p>{pixel}<p>b</p>", "https://x.example/")


@pytest.mark.parametrize(
    "kept",
    [
        '<img src="/i.png" width="600" height="400">',
        '<img src="/i.png" width="50%">',
        '<img src="/i.png" style="width: 100%; height: auto">',
        '<img src="/i.png" style="max-width: 100vw">',
        '<img src="/i.png" alt="a > b">',
    ],
)
def test_real_images_stay_without_their_style(kept: str) -> None:
    out = sanitize(kept, "https://x.example/")
    assert out.startswith('<img src="https://x.example/i.png"') and "style" not in out


# -- hostile values never break parsing or cleaning -------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-10:00",
            "1970-01-01T00:00:00Z",
            "http://[::1",
            "javascript:alert(1)",
            "<img src=x style='width:1px'>",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
ITEM_KEYS = st.sampled_from(
    [
        "id",
        "url",
        "external_url",
        "title",
        "content_html",
        "content_text",
        "summary",
        "date_published",
        "date_modified",
        "image",
        "tags",
        "authors",
        "author",
    ]
)


@given(
    items=st.lists(st.dictionaries(ITEM_KEYS, JSON_VALUES, max_size=6), max_size=4),
    home=JSON_VALUES,
)
def test_any_json_feed_parses_or_is_refused_and_cleans(items: list[object], home: object) -> None:
    doc = {"version": "https://jsonfeed.org/version/1.1", "home_page_url": home, "items": items}
    try:
        parsed = parse(json.dumps(doc).encode(), "https://j.example/feed.json")
    except ParseError:
        return
    for entry in parsed.entries:
        done = finish(clean(entry, SOURCE, "J", NOW))
        assert done.published <= NOW and done.published.tzinfo is not None


def test_dates_before_1970_count_as_no_date() -> None:
    ancient = clean(raw(published=datetime(1, 1, 1, tzinfo=UTC)), SOURCE, "B", NOW)
    assert ancient.published == NOW and not ancient.dated
    zero = clean(raw(published=datetime(1970, 1, 1, tzinfo=UTC)), SOURCE, "B", NOW)
    assert not zero.dated
    fallback = clean(
        raw(published=datetime(1, 1, 1, tzinfo=UTC), updated=NOW - timedelta(days=1)),
        SOURCE,
        "B",
        NOW,
    )
    assert fallback.dated and fallback.published == NOW - timedelta(days=1)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (
            b'{"version": "https://jsonfeed.org/version/1", "x": ' + b"1" * 5000 + b"}",
            "invalid JSON",
        ),
    ],
)
def test_json_that_python_cannot_read_is_not_a_feed(body: bytes, why: str) -> None:
    with pytest.raises(ParseError, match=why):
        parse(body, "https://j.example/feed.json", {"content-type": "application/feed+json"})


# -- the feed's language (issue 11 item 8) ---------------------------------------------------


def test_the_feeds_language_reaches_the_entry() -> None:
    from digest.ingest.jsonfeed import parse as parse_json

    rss = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title>'
        b"<language>ur-pk</language><item><title>a</title><link>https://u.example/1</link>"
        b"</item></channel></rss>"
    )
    atom = (
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xml:lang="de">'
        b'<title>x</title><entry xml:lang="sk"><title>a</title><id>1</id></entry>'
        b"<entry><title>b</title><id>2</id></entry></feed>"
    )
    json_feed = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "language": "zh-hans-cn",
            "items": [{"id": "1", "title": "a"}, {"id": "2", "title": "b", "language": "en"}],
        }
    ).encode()
    got = {
        "rss": [e.language for e in parse(rss, "https://u.example/feed").entries],
        "atom": [e.language for e in parse(atom, "https://d.example/feed").entries],
        "json": [e.language for e in parse_json(json_feed, "https://z.example/feed").entries],
    }
    assert got == {"rss": ["ur-pk"], "atom": ["sk", "de"], "json": ["zh-hans-cn", "en"]}
    tags = [clean(raw(language=v), SOURCE, "B", NOW).language for v in ("ur-pk", "zh-hans-cn")]
    assert tags == ["ur-PK", "zh-Hans-CN"]
    assert clean(raw(), SOURCE, "B", NOW).language is None


@given(st.text(max_size=40))
def test_a_language_is_a_checked_tag_or_nothing(value: str) -> None:
    """Whatever the feed writes, what reaches lang="" is letters, digits and hyphens."""
    import re

    from digest.ingest.clean import language_tag

    tag = language_tag(value)
    assert tag is None or re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{1,8}){0,4}", tag)
    for bad in ('en" onload="x', "<b>", "English", "e", "en--us", "en-"):
        assert language_tag(bad) is None


# -- issue 12: titles keep their characters, summaries their shape, authors a short line


@pytest.mark.parametrize(
    ("title_xml", "shown"),
    [
        # RSS: no markup in it, so feedparser marks it plain text
        (b"<title>Understanding Vec&lt;T&gt; in Rust</title>", "Understanding Vec<T> in Rust"),
        (b"<title>if a &lt; b &amp;&amp; c &gt; d</title>", "if a < b && c > d"),
        # RSS with markup: HTML, tags stripped
        (b"<title>&lt;b&gt;Bold&lt;/b&gt; news</title>", "Bold news"),
        (b"<title><![CDATA[<em>Big</em> day]]></title>", "Big day"),
    ],
)
def test_plain_text_titles_keep_their_characters(title_xml: bytes, shown: str) -> None:
    body = (
        b'<rss version="2.0"><channel><title>x</title><item>%s</item></channel></rss>' % title_xml
    )
    (entry,) = parse(body, SOURCE.url).entries
    assert clean(entry, SOURCE, "Blog", NOW).title == shown


def test_atom_text_titles_keep_their_characters() -> None:
    body = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title>'
        b'<entry><title type="text">Vec&lt;T&gt; and &lt;b&gt;</title></entry>'
        b'<entry><title type="html">Vec&amp;lt;T&amp;gt; &lt;b&gt;now&lt;/b&gt;</title></entry>'
        b"</feed>"
    )
    titles = [clean(e, SOURCE, "Blog", NOW).title for e in parse(body, SOURCE.url).entries]
    assert titles == ["Vec<T> and <b>", "Vec<T> now"]


@pytest.mark.parametrize(
    ("summary", "text"),
    [
        (
            "<p>One\nstill one.</p><p>Two &amp; <b>bold</b><br>line two</p>",
            "One still one.\n\nTwo & bold\nline two",
        ),
        ("<ul><li>a</li><li>b</li></ul><blockquote>Quote</blockquote>", "a\nb\n\nQuote"),
        (
            "Show notes:\r\n\r\n00:00 intro\n01:00 guests\n\n\nLast",
            "Show notes:\n\n00:00 intro 01:00 guests\n\nLast",
        ),
        ("<div><p></p><p>  </p><p>Only</p></div>", "Only"),
        ("plain", "plain"),
    ],
)
def test_summaries_keep_their_paragraphs(summary: str, text: str) -> None:
    assert clean(raw(summary=summary), SOURCE, "Blog", NOW, 1000).summary == text


def test_a_title_made_of_a_summary_is_one_line() -> None:
    e = clean(raw(title="", summary="<p>First</p><p>Second</p>"), SOURCE, "Blog", NOW)
    assert e.title == "First Second" and e.summary == "First\n\nSecond"


@given(st.lists(st.text(max_size=40), max_size=6))
def test_summary_paragraphs_are_never_empty_nor_padded(parts: list[str]) -> None:
    text = plain_text("".join(f"<p>{p}</p>" for p in parts), paragraphs=True)
    for paragraph in text.split("\n\n") if text else []:
        assert paragraph and paragraph == paragraph.strip()
        assert all(line and line == line.strip() for line in paragraph.split("\n"))


@pytest.mark.parametrize(
    ("author", "line"),
    [
        ("A. Smith", "A. Smith"),
        ("Smith, John", "Smith, John"),
        ("A. Smith and B. Jones", "A. Smith and B. Jones"),
        ("A. Smith, B. Jones, C. Brown", "A. Smith, B. Jones, C. Brown"),
        ("A. Smith, B. Jones, C. Brown, D. Lee", "A. Smith, B. Jones et al."),
        ("A; B; C; D; E; F; G; H; I; J; K; L; M", "A, B et al."),
        ("Ann Lee, Bo Chen, Cy Diaz & Di Eng", "Ann Lee, Bo Chen et al."),
        ("Kaur, M., Shukla, A., Kanwar, S., Shukla, V.", "Kaur, M., Shukla, A. et al."),
        ("Van Dijken, A. J. H., Di Sora, A.", "Van Dijken, A. J. H., Di Sora, A."),
        ("Smith, J.", "Smith, J."),
    ],
)
def test_author_lists_are_shortened(author: str, line: str) -> None:
    assert clean(raw(author=author), SOURCE, "Blog", NOW).author == line


def test_every_atom_author_counts() -> None:
    authors = b"".join(b"<author><name>Author %d</name></author>" % i for i in range(13))
    body = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title><entry><title>Paper</title>%s</entry></feed>'
        % authors
    )
    (entry,) = parse(body, SOURCE.url).entries
    assert clean(entry, SOURCE, "Blog", NOW).author == "Author 0, Author 1 et al."


def test_undated_entries_are_placed_by_their_neighbours_in_the_feed() -> None:
    """Not as the newest: at the date of the dated entry above (else below) them."""
    hour = timedelta(hours=1)
    raws = [
        raw(guid="top"),
        raw(guid="a", published=NOW - 2 * hour),
        raw(guid="b"),
        raw(guid="c"),
        raw(guid="d", published=NOW - 5 * hour),
        raw(guid="e", published=NOW + 3 * hour),  # in the future: no stand-in beyond now
        raw(guid="f"),
    ]
    placed = stand_ins(raws, NOW)
    assert placed == [NOW - 2 * hour, NOW, NOW - 2 * hour, NOW - 2 * hour, NOW, NOW, NOW]
    entries = [clean(r, SOURCE, "Blog", seen) for r, seen in zip(raws, placed, strict=True)]
    assert [e.published for e in entries][:4] == [NOW - 2 * hour] * 4
    assert not entries[0].dated and entries[1].dated
    assert stand_ins([raw(), raw()], NOW) == [NOW, NOW]  # nothing dated: when first seen


@given(st.lists(st.one_of(st.none(), st.integers(-48, 48)), max_size=15))
def test_undated_entries_are_never_placed_as_the_newest(hours: list[int | None]) -> None:
    """An undated entry's stand-in is never after when digest saw it, nor after the
    newest dated entry of its feed, and is the date of a dated neighbour when there is
    one; without any, it is when digest saw it."""
    raws = [
        raw(guid=str(i), published=None if h is None else NOW + timedelta(hours=h))
        for i, h in enumerate(hours)
    ]
    placed = stand_ins(raws, NOW)
    known = [min(NOW + timedelta(hours=h), NOW) for h in hours if h is not None]
    for h, seen in zip(hours, placed, strict=True):
        assert seen <= NOW
        if h is None:
            assert seen in known if known else seen == NOW


def test_atom_text_summaries_and_bodies_keep_their_characters() -> None:
    body = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title><entry><title>t</title>'
        b'<summary type="text">Use Vec&lt;T&gt; &amp; Box&lt;T&gt;</summary>'
        b'<content type="text">Body: Vec&lt;T&gt;</content></entry></feed>'
    )
    (raw_entry,) = parse(body, SOURCE.url).entries
    e = clean(raw_entry, SOURCE, "Blog", NOW)
    assert e.summary == "Use Vec<T> & Box<T>"
    assert "Body: Vec&lt;T&gt;" in finish(e).content_html  # shown as text, not a tag
