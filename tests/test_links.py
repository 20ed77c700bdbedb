"""Link cleaning (``ingest/links.py``): tracking parameters, redirect wrappers, the
canonical form; tables, then properties."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.ingest.clean import clean, sanitize
from digest.ingest.links import canonical, tidy, unwrap
from digest.model import FeedSource, RawEntry


@pytest.mark.parametrize(
    ("link", "shown"),
    [
        # tracking parameters go; the rest stays as written, in its order
        ("https://e.com/a?id=1&utm_source=rss&utm_medium=feed", "https://e.com/a?id=1"),
        ("https://e.com/a?utm_campaign=x", "https://e.com/a"),
        (
            "https://medium.com/p/abc-123?source=rss----5517fd7b58a6---4",
            "https://medium.com/p/abc-123",
        ),
        (
            "https://www.heise.de/news/x-1.html?wt_mc=rss.red.ho.ho.atom.beitrag.beitrag",
            "https://www.heise.de/news/x-1.html",
        ),
        ("https://e.com/a?b=2&fbclid=IwAR0&a=1", "https://e.com/a?b=2&a=1"),
        ("https://e.com/a?WT.mc_id=x&pk_campaign=y&mtm_source=z", "https://e.com/a"),
        ("https://e.com/a?ns_source=x&ns_mchannel=y&xtor=RSS-1", "https://e.com/a"),
        ("https://e.com/a#xtor=RSS-8", "https://e.com/a"),
        ("https://e.com/a?ref=rss", "https://e.com/a"),
        ("https://e.com/a?from=feed", "https://e.com/a"),
        # parameters that mean something stay, so do fragments that are no tracking
        ("https://github.com/o/r/compare?ref=main", "https://github.com/o/r/compare?ref=main"),
        ("https://e.com/search?source=web&q=x", "https://e.com/search?source=web&q=x"),
        ("https://e.com/a#comment-2", "https://e.com/a#comment-2"),
        ("https://e.com/a?id=1#section", "https://e.com/a?id=1#section"),
        ("http://e.com/a?x=%20y", "http://e.com/a?x=%20y"),
        # redirect wrappers: the target, itself tidied
        (
            "https://www.google.com/url?rct=j&sa=t&url=https://example.com/a%3Futm_source%3Dx"
            "%26id%3D2&ct=ga&cd=CAIy",
            "https://example.com/a?id=2",
        ),
        (
            "https://www.google.co.uk/url?q=https%3A%2F%2Fexample.org%2Fb&sa=D",
            "https://example.org/b",
        ),
        (
            "https://l.facebook.com/l.php?u=https%3A%2F%2Fexample.org%2Fc&h=AT0",
            "https://example.org/c",
        ),
        ("https://www.youtube.com/redirect?q=https://example.org/d&v=1", "https://example.org/d"),
        (
            "https://out.reddit.com/t3_x?url=https%3A%2F%2Fexample.org%2Fe&token=1",
            "https://example.org/e",
        ),
        (
            "https://t.umblr.com/redirect?z=https%3A%2F%2Fexample.org%2Ff&t=1",
            "https://example.org/f",
        ),
        ("https://duckduckgo.com/l/?uddg=https%3A%2F%2Fexample.org%2Fg", "https://example.org/g"),
        (
            "https://eur01.safelinks.protection.outlook.com/?url=https%3A%2F%2Fexample.org%2Fh&data=1",
            "https://example.org/h",
        ),
        (  # a wrapper in a wrapper
            "https://www.google.com/url?q="
            + quote(
                "https://l.facebook.com/l.php?u=" + quote("https://example.org/i", safe=""), safe=""
            ),
            "https://example.org/i",
        ),
        # a wrapper whose target is not an http(s) URL stays what it was
        (
            "https://www.google.com/url?q=javascript:alert(1)",
            "https://www.google.com/url?q=javascript:alert(1)",
        ),
        (
            "https://www.google.com/url?q=data:text/html,x",
            "https://www.google.com/url?q=data:text/html,x",
        ),
        (
            "https://www.google.com/url?q=%2F%2Fevil.example",
            "https://www.google.com/url?q=%2F%2Fevil.example",
        ),
        # not a wrapper: a search, another path
        (
            "https://www.google.com/search?q=https://example.org",
            "https://www.google.com/search?q=https://example.org",
        ),
        (
            "https://notgoogle.com/url?q=https://example.org/",
            "https://notgoogle.com/url?q=https://example.org/",
        ),
        # not http(s): no link
        ("javascript:alert(1)", None),
        ("ftp://e.com/a", None),
    ],
)
def test_links_shown_are_tidy(link: str, shown: str | None) -> None:
    assert tidy(link) == shown


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (
            "https://news.example/story?utm_source=a",
            "https://NEWS.example/story/?fbclid=1#top",
            True,
        ),
        ("http://www.e.com/a?b=2&a=1", "https://e.com/a?a=1&b=2", True),
        ("https://e.com/post", "https://e.com/post#more-12", True),
        ("https://www.google.com/url?q=https://e.com/x", "https://e.com/x", True),
        ("https://medium.com/p/1?source=rss----a", "https://medium.com/p/1", True),
        # the anchors of one page are distinct stories: comments, changelog entries
        ("https://e.com/post#comment-1", "https://e.com/post#comment-2", False),
        ("https://e.com/changelog#v1.2", "https://e.com/changelog#v1.3", False),
        ("https://e.com/changelog#v1.2", "https://e.com/changelog", False),
    ],
)
def test_canonical_links(a: str, b: str, same: bool) -> None:
    assert (canonical(a) == canonical(b)) is same


def test_entry_links_and_body_links_are_tidy() -> None:
    source = FeedSource("https://blog.example/feed")
    raw = RawEntry(
        guid="1",
        link="https://medium.com/p/x?source=rss----a---4",
        title="T",
        summary=None,
        content='<p><a href="https://e.com/a?utm_source=rss&id=3">a</a> '
        '<a href="https://www.google.com/url?q=https://e.com/b">b</a> <a href="/rel?x=1">c</a></p>',
    )
    entry = clean(raw, source, "Blog", datetime(2026, 1, 1, tzinfo=UTC))
    assert entry.link == "https://medium.com/p/x"
    assert entry.canonical_link == "https://medium.com/p/x"
    body = sanitize(entry.body_source, entry.body_base)
    assert 'href="https://e.com/a?id=3"' in body
    assert 'href="https://e.com/b"' in body
    assert 'href="https://blog.example/rel?x=1"' in body


SCHEMES = st.sampled_from(["http", "https", "javascript", "data", "ftp", "file", "", "HTTPS"])
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(SCHEMES)
    host = draw(st.sampled_from(["e.com", "www.google.com", "l.facebook.com", "duckduckgo.com"]))
    path = draw(st.sampled_from(["/", "/url", "/l.php", "/l/", "/a/b"]))
    params = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["q", "url", "u", "uddg", "utm_source", "id", "source", "ref"]),
                st.one_of(TEXT, st.deferred(lambda: urls())),
            ),
            max_size=4,
        )
    )
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    fragment = draw(st.one_of(st.just(""), TEXT.map(lambda t: "#" + quote(t))))
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "") + fragment


@given(st.one_of(urls(), TEXT))
def test_tidy_and_unwrap_only_ever_give_http_links(url: str) -> None:
    """Whatever a wrapper carries, what is shown and followed is an http(s) URL with a
    host (or nothing), and tidying it again changes nothing."""
    shown = tidy(url)
    if shown is not None:
        parts = urlsplit(shown)
        assert parts.scheme.lower() in ("http", "https") and parts.hostname
        assert tidy(shown) == shown
        assert urlsplit(unwrap(shown)).scheme.lower() in ("http", "https")
        assert not any(
            k.startswith("utm_") for k, _, _ in (p.partition("=") for p in parts.query.split("&"))
        )
    key = canonical(url)
    assert key is None or key.startswith("https://")  # never another scheme
