"""Feeds managed without hand-editing TOML (issue 16): ``digest feeds add`` (with feed
discovery), ``remove``, OPML ``import`` / ``export``, and ``digest init``.

``config.toml`` is edited in place: comments and layout survive every edit (a golden
file), an edit is refused when the file changed underneath, and the sites are local
servers serving a page with one, several or no feed links.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.cli import main
from digest.config import load_config
from digest.ingest import discover, opml

from .helpers import ROOT, SAMPLES_NOW

GOLDEN = Path(__file__).parent / "golden" / "config_edits"
CORPUS = ROOT.parent / "shared" / "corpus"

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>%s</title>
<link>https://example.org/</link><description>d</description>
<item><title>One</title><link>https://example.org/1</link><guid>1</guid></item>
<item><title>Two</title><link>https://example.org/2</link><guid>2</guid></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Comments</title><id>urn:x</id>
<updated>2027-03-15T08:00:00Z</updated><entry><title>c</title><id>urn:c</id>
<updated>2027-03-15T08:00:00Z</updated><link href="https://example.org/c"/></entry></feed>"""

COMMENTED = """\
# My digest. Hand-written, with comments that must survive.

[digest]
title = "Weekly"   # the name in every subject
from = "Weekly <weekly@example.org>"
base_url = "https://weekly.example.org"
postal_address = "1 Example Street"

[fetch]
allow_private = true  # the test sites are on 127.0.0.1

# The feeds, most important first.
[[feeds]]
url = "https://example.org/first.xml"   # the first one
name = "First"

[[feeds]]
# a feed with a comment inside
url = "https://example.org/second.xml"
category = "News"

# Subscribers of this digest, kept on the list.
[[subscribers]]
email = "ada@example.org"
"""


def page(*links: str) -> str:
    head = "".join(links)
    return f"<!doctype html><html><head><title>Site</title>{head}</head><body>hi</body></html>"


def alternate(href: str, kind: str = "application/rss+xml", title: str = "") -> str:
    return f'<link rel="alternate" type="{kind}" href="{href}" title="{title}">'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "config.toml").write_text(COMMENTED, encoding="utf-8")
    return tmp_path


def digest(folder: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(folder / "config.toml"), *args])
    return result.exit_code, result.stdout, result.stderr


def feed_urls(folder: Path) -> list[str]:
    return [f.url for f in load_config(folder / "config.toml").feeds]


def test_add_a_feed_by_its_own_address(folder: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(
        RSS % b"Site News", content_type="application/rss+xml"
    )
    url = httpserver.url_for("/feed.xml")
    code, out, err = digest(folder, "feeds", "add", url, "--category", "Local")
    assert code == 0, err
    assert "Added Site News" in out and "2 entries" in out
    config = load_config(folder / "config.toml")
    assert config.feeds[-1].url == url and config.feeds[-1].category == "Local"
    code, _, err = digest(folder, "feeds", "add", url)
    assert code == 2 and "already in" in err


def test_add_a_site_with_one_feed_link(folder: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/").respond_with_data(
        page('<base href="/blog/">', alternate("feed.xml", title="Blog")),
        content_type="text/html",
    )
    httpserver.expect_request("/blog/feed.xml").respond_with_data(
        RSS % b"The Blog", content_type="application/rss+xml"
    )
    code, out, err = digest(folder, "feeds", "add", httpserver.url_for("/"), "--name", "Their blog")
    assert code == 0, err
    assert "its feed is " + httpserver.url_for("/blog/feed.xml") in err
    added = load_config(folder / "config.toml").feeds[-1]
    assert (added.url, added.name) == (httpserver.url_for("/blog/feed.xml"), "Their blog")


def test_a_site_with_several_feeds_lists_them_and_adds_none(
    folder: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/").respond_with_data(
        page(
            alternate("/feed.xml", title="Posts"),
            alternate("/comments.atom", "application/atom+xml", title="Comments"),
            alternate("javascript:alert(1)"),  # never a candidate
            '<link rel="stylesheet" href="/style.css">',
        ),
        content_type="text/html",
    )
    before = (folder / "config.toml").read_text()
    code, _, err = digest(folder, "feeds", "add", httpserver.url_for("/"))
    assert code == 2
    assert "links to 2 feeds" in err
    assert httpserver.url_for("/feed.xml") in err and "(Posts)" in err
    assert httpserver.url_for("/comments.atom") in err and "javascript" not in err
    assert (folder / "config.toml").read_text() == before


def test_a_page_without_feed_links_is_refused(folder: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/").respond_with_data(
        page('<link rel="icon" href="/favicon.ico">'), content_type="text/html"
    )
    before = (folder / "config.toml").read_text()
    code, _, err = digest(folder, "feeds", "add", httpserver.url_for("/"))
    assert code == 2 and "links to none" in err and "Traceback" not in err
    assert (folder / "config.toml").read_text() == before


def test_a_feed_that_cannot_be_read_is_not_added(folder: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/gone.xml").respond_with_data("no", status=404)
    httpserver.expect_request("/").respond_with_data(
        page(alternate("/broken.xml")), content_type="text/html"
    )
    httpserver.expect_request("/broken.xml").respond_with_data(
        "<html>not a feed</html>", content_type="text/html"
    )
    before = (folder / "config.toml").read_text()
    code, _, err = digest(folder, "feeds", "add", httpserver.url_for("/gone.xml"))
    assert code == 2 and "cannot read" in err and "404" in err
    code, _, err = digest(folder, "feeds", "add", httpserver.url_for("/"))
    assert code == 2 and "which is not a feed" in err
    code, _, err = digest(folder, "feeds", "add", "ftp://example.org/feed")
    assert code == 2 and "feeds[2].url" in err and "http(s)" in err
    assert (folder / "config.toml").read_text() == before


def test_an_edit_is_refused_when_the_file_changed_underneath(
    folder: Path, httpserver: HTTPServer
) -> None:
    path = folder / "config.toml"

    def meanwhile(request: Request) -> Response:
        path.write_text(path.read_text() + "\n# edited by hand meanwhile\n")
        return Response(RSS % b"Slow", content_type="application/rss+xml")

    httpserver.expect_request("/feed.xml").respond_with_handler(meanwhile)
    code, _, err = digest(folder, "feeds", "add", httpserver.url_for("/feed.xml"))
    assert code == 2 and "changed while digest was editing it" in err
    assert path.read_text().endswith("# edited by hand meanwhile\n")  # theirs, untouched
    assert httpserver.url_for("/feed.xml") not in path.read_text()


def test_remove(folder: Path) -> None:
    code, out, err = digest(folder, "feeds", "remove", "https://example.org/first.xml")
    assert code == 0, err
    assert feed_urls(folder) == ["https://example.org/second.xml"]
    code, _, err = digest(folder, "feeds", "remove", "https://example.org/first.xml")
    assert code == 2 and "is not a feed of" in err and "second.xml" in err
    code, _, err = digest(folder, "feeds", "remove", "https://example.org/second.xml")
    assert code == 2 and "the only feed" in err


def test_comments_survive_every_edit(
    folder: Path, httpserver: HTTPServer, request: pytest.FixtureRequest
) -> None:
    """add, import, remove (the last feed and a middle one): the file after each edit
    is a golden file, and only the edited lines ever change."""
    httpserver.expect_request("/feed.xml").respond_with_data(
        RSS % b"Added", content_type="application/rss+xml"
    )
    url = httpserver.url_for("/feed.xml")
    reading = folder / "list.opml"
    reading.write_bytes(
        opml.write("x", [opml.Outline("https://example.net/a.xml", "A", ("Tech", "Py"))], NOW)
    )
    steps = [
        ("add", ["feeds", "add", url, "--name", "Added", "--category", "Local"]),
        ("import", ["feeds", "import", str(reading), "--category-from-folders"]),
        ("remove-last", ["feeds", "remove", "https://example.net/a.xml"]),
        ("remove-middle", ["feeds", "remove", "https://example.org/second.xml"]),
    ]
    path = folder / "config.toml"
    for name, args in steps:
        before = path.read_text()
        code, _, err = digest(folder, *args)
        assert code == 0, err
        after = path.read_text().replace(f"127.0.0.1:{httpserver.port}", "127.0.0.1:PORT")
        for line in before.splitlines():
            if line.startswith("#") or " # " in line:
                assert line in path.read_text() or name.startswith("remove"), line
        _golden(request, f"{name}.toml", after)
    text = path.read_text()
    for comment in (
        "# My digest. Hand-written, with comments that must survive.",
        'title = "Weekly"   # the name in every subject',
        "allow_private = true  # the test sites are on 127.0.0.1",
        "# The feeds, most important first.",
        'url = "https://example.org/first.xml"   # the first one',
        "# Subscribers of this digest, kept on the list.",
    ):
        assert comment in text


NOW = SAMPLES_NOW - timedelta(hours=4)  # an hour before the samples' newest post


def _golden(request: pytest.FixtureRequest, name: str, text: str) -> None:
    path = GOLDEN / name
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run pytest {__file__} --update-golden"
    expected = path.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True)))
    assert text == expected, f"{name} differs from its golden file:\n{diff}"


# -- OPML ---------------------------------------------------------------------------------

NESTED = b"""<?xml version="1.0" encoding="UTF-8"?>
<opml version="1.0">
  <head><title>Reader export</title></head>
  <body>
    <outline text="Loose" title="Loose" type="rss" xmlUrl="https://loose.example/feed"/>
    <outline text="Tech" title="Tech">
      <outline text="Python">
        <outline text="PyPI blog" type="rss" xmlUrl="https://blog.pypi.org/feed.xml"
                 htmlUrl="https://blog.pypi.org/"/>
        <outline text="Deeper">
          <outline text="Deep &amp; nested" type="rss" xmlUrl="https://deep.example/atom"/>
        </outline>
      </outline>
      <outline text="LWN" type="rss" xmlUrl="https://lwn.net/headlines/rss"/>
    </outline>
    <outline text="Empty folder"/>
    <outline text="Local file" type="rss" xmlUrl="/etc/passwd"/>
    <outline text="FTP" type="rss" xmlUrl="ftp://ftp.example/feed"/>
  </body>
</opml>
"""


def opml_files() -> list[Path]:
    """Ours, and every OPML file in the shared corpus (it holds none today)."""
    ours = Path(__file__).parent / "data" / "opml"
    found = sorted(ours.glob("*.opml"))
    if CORPUS.exists():
        found += sorted(CORPUS.rglob("*.opml"))
    return found


def test_opml_reads_nested_folders_and_refuses_what_is_not_http() -> None:
    reading = opml.read(NESTED, "nested.opml")
    assert [(f.url, f.title, f.category) for f in reading.feeds] == [
        ("https://loose.example/feed", "Loose", None),
        ("https://blog.pypi.org/feed.xml", "PyPI blog", "Tech / Python"),
        ("https://deep.example/atom", "Deep & nested", "Tech / Python / Deeper"),
        ("https://lwn.net/headlines/rss", "LWN", "Tech"),
    ]
    assert len(reading.skipped) == 2
    assert any("/etc/passwd" in s for s in reading.skipped)


def test_opml_that_is_not_opml_or_hostile_is_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaa">]><opml><body/></opml>'
    for data in (b"not xml", b"<html><body/></html>", bomb):
        with pytest.raises(Exception, match="not an OPML file"):
            opml.read(data, "x.opml")


def _config_with(folder: Path, feeds: list[tuple[str, str | None]]) -> None:
    text = COMMENTED.split("# The feeds")[0]
    text += "".join(f'[[feeds]]\nurl = "{u}"\n' for u, _ in feeds)
    (folder / "config.toml").write_text(text)


@pytest.mark.parametrize("source", opml_files(), ids=lambda p: p.name)
def test_opml_round_trip(tmp_path: Path, source: Path) -> None:
    """import → export → import gives the same feeds, names and categories."""
    first, second = tmp_path / "first", tmp_path / "second"
    for f in (first, second):
        f.mkdir()
        _config_with(f, [("https://seed.example/feed.xml", None)])
    code, out, err = digest(first, "feeds", "import", str(source), "--category-from-folders")
    assert code == 0, err
    exported = tmp_path / "export.opml"
    code, _, err = digest(first, "feeds", "export", "--out", str(exported))
    assert code == 0, err
    code, out, err = digest(second, "feeds", "import", str(exported), "--category-from-folders")
    assert code == 0, err
    assert "1 already there" in out  # the seed feed

    def feeds(f: Path) -> list[tuple[str, str | None, str | None]]:
        return [(x.url, x.name, x.category) for x in load_config(f / "config.toml").feeds]

    assert feeds(first) == feeds(second)
    expected = opml.read(source.read_bytes(), str(source)).feeds
    assert len(feeds(first)) == 1 + len(expected) > 1
    assert [(o.url, o.title, o.category) for o in expected] == feeds(first)[1:]


def test_export_to_stdout_is_opml(folder: Path) -> None:
    code, out, _ = digest(folder, "feeds", "export")
    assert code == 0
    reading = opml.read(out.encode(), "stdout")
    assert [(f.url, f.category) for f in reading.feeds] == [
        ("https://example.org/first.xml", None),
        ("https://example.org/second.xml", "News"),
    ]


def test_discovery_takes_only_http_feed_links() -> None:
    html = page(
        alternate("/a.xml"),
        alternate("/a.xml"),  # once
        alternate("https://other.example/b.json", "application/feed+json"),
        alternate("data:text/xml,<rss/>"),
        alternate("/c.xml", "text/html"),
        '<link rel="ALTERNATE feed" type="application/atom+xml" href="d.atom" title=" D \n">',
    )
    found = discover.candidates(html, "https://site.example/blog/")
    assert [(c.url, c.title) for c in found] == [
        ("https://site.example/a.xml", None),
        ("https://other.example/b.json", None),
        ("https://site.example/blog/d.atom", "D"),
    ]


# -- digest init --------------------------------------------------------------------------


def test_init_asks_nothing_off_a_terminal(tmp_path: Path) -> None:
    target = tmp_path / "new"
    result = CliRunner().invoke(
        main,
        ["init", str(target), "--from", "News <news@example.org>", "--title", "The News"],
        input="",
    )
    assert result.exit_code == 0, result.stderr
    path = target / "config.toml"
    assert os.stat(path).st_mode & 0o777 == 0o600
    text = path.read_text()
    assert 'from = "News <news@example.org>"' in text and 'title = "The News"' in text
    assert "Still example values in it: base_url, postal_address" in result.stderr
    again = CliRunner().invoke(main, ["init", str(target)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    # no feed yet: check says how to add one, and feeds add makes the config whole
    code, _, err = digest(target, "check")
    assert code == 2 and "digest feeds add URL" in err
    shutil.copy(ROOT / "digest" / "samples" / "harbour-tech.rss", target / "h.rss")
    code, out, err = digest(target, "feeds", "add", "h.rss")
    assert code == 0, err
    code, out, err = digest(target, "check")
    assert code == 0 and "valid (1 feed," in out, err


def test_init_checks_what_it_is_given(tmp_path: Path) -> None:
    for args, said in (
        (["--from", "not an address"], "--from:"),
        (["--base-url", "digest.example.org"], "--base-url:"),
    ):
        result = CliRunner().invoke(main, ["init", str(tmp_path), *args])
        assert result.exit_code == 2 and said in result.stderr
        assert not (tmp_path / "config.toml").exists()


def test_init_on_a_terminal_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("digest.cli.init.interactive", lambda: True)
    result = CliRunner().invoke(
        main,
        ["init", str(tmp_path), "--title", "T"],
        input="bad\nEd <ed@example.org>\nhttps://d.example.org\n2 Road, Town\n",
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "config.toml").read_text()
    assert 'from = "Ed <ed@example.org>"' in text
    assert 'base_url = "https://d.example.org"' in text
    assert re.search(r'postal_address = "2 Road, Town"', text)


# -- outside input, as properties ---------------------------------------------------------

HOSTILE = st.text(
    alphabet=st.sampled_from(list("<>\"'=/ \t\n\r\x00\x0barel:tyhfjsvxmp.#?&;") + ["\u2028", "é"]),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(HOSTILE, HOSTILE, HOSTILE), max_size=30), HOSTILE)
def test_discovered_links_are_always_one_http_url(
    links: list[tuple[str, str, str]], noise: str
) -> None:
    html = noise + "".join(
        f'<link rel="alternate" type="application/rss+xml" href="{h}" title="{t}">{x}'
        for h, t, x in links
    )
    found = discover.candidates(html, "https://site.example/a/")
    assert len(found) <= discover.MAX_CANDIDATES
    for c in found:
        assert c.url.startswith(("http://", "https://"))
        assert not any(ch.isspace() or not ch.isprintable() for ch in c.url)
        assert c.title is None or (c.title.isprintable() and "\n" not in c.title)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(HOSTILE, st.text(max_size=40)), max_size=10))
def test_opml_outlines_are_http_feeds_with_one_line_titles(items: list[tuple[str, str]]) -> None:
    from xml.sax.saxutils import quoteattr

    def clean(text: str) -> str:  # what XML can carry at all
        return "".join(c for c in text if c.isprintable() or c in "\t\n")

    body = "".join(
        f"<outline text={quoteattr(clean(t))} xmlUrl={quoteattr('https://x.example/' + clean(u))}/>"
        f"<outline text={quoteattr(clean(t))} xmlUrl={quoteattr(clean(u))}/>"
        for u, t in items
    )
    reading = opml.read(f"<opml><body>{body}</body></opml>".encode(), "x.opml")
    for feed in reading.feeds:
        assert feed.url.startswith(("http://", "https://"))
        assert not any(ch.isspace() or not ch.isprintable() for ch in feed.url)
        assert feed.title is None or (feed.title.isprintable() and len(feed.title) <= 200)
    assert len(reading.feeds) + len(reading.skipped) <= 2 * len(items)
