"""The issue's proof: a real local HTTP server serving every kind of trouble.

Slow drip, gzip bomb, billion laughs, a 10 MB feed, an HTML page instead of a feed,
301 to a new URL, 410, 500 and 304: each ends as the rules say, alone (through
``ingest``: fetch → parse → clean) and all together in one config, where the edition
still goes out with the good feeds and ``digest run --json`` names each failed feed
with a reason a person understands.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.errors import ParseError
from digest.ingest.feeds import Digested, ingest
from digest.ingest.fetch import FetchSettings
from digest.ingest.parse import newest, parse
from digest.model import FeedSource, FetchStatus, RawEntry, Validators

from .helpers import NOW, SAMPLES, Project

RSS = (SAMPLES / "harbour-tech.rss").read_bytes()
ATOM = (SAMPLES / "field-notes.atom").read_bytes()
HTML = b"<!DOCTYPE html><html><head><title>Home</title></head><body>Welcome!</body></html>"


def billion_laughs() -> bytes:
    lol = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n' + "\n".join(lol) + "\n]>\n"
        '<rss version="2.0"><channel><title>&lol9;</title><item><title>&lol9;</title>'
        "<guid>x</guid></item></channel></rss>"
    ).encode()


def quadratic_blowup() -> bytes:
    """One plain 100 KB entity used 20,000 times: the kind feedparser deems "safe"."""
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "' + "A" * 100_000 + '">\n]>\n'
        '<rss version="2.0"><channel><title>t</title><item><title>x</title><description>'
        + "&a;" * 20_000
        + "</description></item></channel></rss>"
    ).encode()


def ten_megabytes() -> bytes:
    """A feed of just under 10 MB (the default fetch.max_bytes): ten 950 KB posts."""
    para = "<p>" + "All work and no play makes a very long post. " * 20 + "</p>\n"
    content = para * (950_000 // len(para))
    items = "".join(
        f"<item><title>Huge post {i}</title><link>https://big.example/{i}</link>"
        f"<guid>big-{i}</guid><pubDate>Sat, 28 Nov 2026 0{i}:00:00 +0000</pubDate>"
        f"<description><![CDATA[{content}]]></description></item>"
        for i in range(10)
    )
    body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>Big</title>{items}'
    return (body + "</channel></rss>").encode()


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """200 MB of zeros in about 200 KB of gzip."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * 1_000_000
    return b"".join(c.compress(chunk) for _ in range(200)) + c.flush()


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    """A threaded server, so a dripping response does not hold up the others."""
    s = HTTPServer(host="127.0.0.1", threaded=True)
    s.start()
    yield s
    s.clear()
    s.stop()


def drip(request: Request) -> Response:
    def body() -> Iterator[bytes]:
        yield b'<?xml version="1.0"?><rss version="2.0"><channel>'
        for _ in range(30):  # 3 s at most, long after the client gave up
            time.sleep(0.1)
            yield b" "

    return Response(body(), content_type="application/rss+xml")


def etag_feed(request: Request) -> Response:
    if request.headers.get("If-None-Match") == '"v1"':
        return Response(status=304)
    return Response(RSS, content_type="application/rss+xml", headers={"ETag": '"v1"'})


def serve_trouble(server: HTTPServer, bomb: bytes) -> dict[str, str]:
    """Every case on one server; returns name → URL."""
    server.expect_request("/drip").respond_with_handler(drip)
    server.expect_request("/bomb").respond_with_data(
        bomb, content_type="application/rss+xml", headers={"Content-Encoding": "gzip"}
    )
    server.expect_request("/laughs").respond_with_data(
        billion_laughs(), content_type="application/rss+xml"
    )
    server.expect_request("/quadratic").respond_with_data(
        quadratic_blowup(), content_type="application/rss+xml"
    )
    server.expect_request("/big").respond_with_data(
        ten_megabytes(), content_type="application/rss+xml"
    )
    server.expect_request("/home").respond_with_data(HTML, content_type="text/html")
    server.expect_request("/old").respond_with_data("", status=301, headers={"Location": "/new"})
    server.expect_request("/new").respond_with_data(ATOM, content_type="application/atom+xml")
    server.expect_request("/gone").respond_with_data("", status=410)
    server.expect_request("/broken").respond_with_data("Internal error", status=500)
    server.expect_request("/etag").respond_with_handler(etag_feed)
    names = ("drip", "bomb", "laughs", "quadratic", "big", "home", "old", "gone", "broken")
    urls = {name: server.url_for(f"/{name}") for name in names}
    urls["etag"] = server.url_for("/etag")
    return urls


def read(url: str, known: Validators | None = None, **settings: object) -> Digested:
    fetch = FetchSettings(**{"timeout": 5.0, **settings})  # type: ignore[arg-type]
    return ingest([FeedSource(url)], {url: known} if known else {}, fetch, NOW, 300)[0]


# -- each case alone ----------------------------------------------------------------------


def test_slow_drip_is_cut_off_at_the_timeout(server: HTTPServer) -> None:
    server.expect_request("/drip").respond_with_handler(drip)
    started = time.perf_counter()
    got = read(server.url_for("/drip"), timeout=0.4)
    assert got.status is FetchStatus.FAILED
    assert got.error and got.error.message.endswith("timed out after 0.4s (fetch.timeout)")
    assert time.perf_counter() - started < 2.5  # the server drips for 3 s


def test_gzip_bomb_is_refused_without_inflating_it(server: HTTPServer, gzip_bomb: bytes) -> None:
    server.expect_request("/bomb").respond_with_data(
        gzip_bomb, headers={"Content-Encoding": "gzip"}
    )
    tracemalloc.start()
    try:
        got = read(server.url_for("/bomb"), max_bytes=2_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.status is FetchStatus.FAILED
    assert got.error and "larger than 2,000,000 bytes once decompressed" in got.error.message
    assert peak < 20_000_000  # 200 MB were on offer


@pytest.mark.parametrize("document", [billion_laughs, quadratic_blowup])
def test_entity_bombs_are_refused_before_any_parser(server: HTTPServer, document: object) -> None:
    body = document()  # type: ignore[operator]
    server.expect_request("/feed").respond_with_data(body, content_type="application/rss+xml")
    tracemalloc.start()
    try:
        got = read(server.url_for("/feed"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.status is FetchStatus.FAILED
    assert (
        got.error and "entity bomb" in got.error.message and "billion laughs" in got.error.message
    )
    assert peak < 30_000_000  # fetching included; feedparser alone needs gigabytes here
    tracemalloc.start()
    try:
        with pytest.raises(ParseError, match="entity bomb"):
            parse(body, "https://x.example/feed")
        assert tracemalloc.get_traced_memory()[1] < 1_000_000
    finally:
        tracemalloc.stop()


def test_feedparser_is_still_what_needs_the_guard() -> None:
    """Why the guard exists: feedparser's loose parser expands the quadratic blow-up."""
    import feedparser

    small = quadratic_blowup().replace(b"&a;" * 20_000, b"&a;" * 30)
    result = feedparser.parse(small, sanitize_html=False, resolve_relative_uris=False)
    assert len(result.entries[0].summary) >= 30 * 100_000


def test_a_10_mb_feed_is_read_and_its_posts_bounded(server: HTTPServer) -> None:
    body = ten_megabytes()
    assert 9_000_000 < len(body) < 10_000_000
    server.expect_request("/big").respond_with_data(body, content_type="application/rss+xml")
    got = read(server.url_for("/big"))
    assert got.status is FetchStatus.OK and len(got.entries) == 10
    for entry in got.entries:
        assert len(entry.summary) <= 300 and entry.summary.endswith("…")
        assert len(entry.content_html) < 110_000  # a 950 KB post cannot bloat the e-mail
    over = read(server.url_for("/big"), max_bytes=9_000_000)
    assert over.error and "larger than 9,000,000 bytes" in over.error.message


def test_an_html_page_is_not_a_feed(server: HTTPServer) -> None:
    server.expect_request("/home").respond_with_data(HTML, content_type="text/html")
    got = read(server.url_for("/home"))
    assert got.status is FetchStatus.FAILED
    assert got.error and "not a feed: the server sent an HTML page" in got.error.message


def test_301_is_followed_and_reported(server: HTTPServer) -> None:
    server.expect_request("/old").respond_with_data("", status=301, headers={"Location": "/new"})
    server.expect_request("/new").respond_with_data(ATOM, content_type="application/atom+xml")
    got = read(server.url_for("/old"))
    assert got.status is FetchStatus.OK and len(got.entries) == 3
    assert got.fetched.moved_to == server.url_for("/new")


@pytest.mark.parametrize(
    ("status", "words", "gone"),
    [(410, "HTTP 410 Gone: the site removed this feed", True), (500, "HTTP 500", False)],
)
def test_410_and_500(server: HTTPServer, status: int, words: str, gone: bool) -> None:
    server.expect_request("/feed").respond_with_data("no", status=status)
    got = read(server.url_for("/feed"))
    assert got.status is FetchStatus.FAILED and got.error and words in got.error.message
    assert got.fetched.gone is gone


def test_304_is_not_parsed(server: HTTPServer) -> None:
    server.expect_request("/etag").respond_with_handler(etag_feed)
    first = read(server.url_for("/etag"))
    assert first.status is FetchStatus.OK and first.entries
    again = read(server.url_for("/etag"), first.fetched.validators)
    assert again.status is FetchStatus.NOT_MODIFIED
    assert again.entries == () and again.total == 0 and again.error is None


# -- all together, through the command ----------------------------------------------------


def digest(project: Project, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(project.path), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


@pytest.mark.slow
def test_the_edition_goes_out_with_the_good_feeds(
    project: Project, server: HTTPServer, gzip_bomb: bytes, cli_env: dict[str, str], tmp_path: Path
) -> None:
    urls = serve_trouble(server, gzip_bomb)
    server.expect_request("/good.json").respond_with_json(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "Jay's notes",
            "items": [
                {
                    "id": "j1",
                    "url": "https://j.example/1",
                    "title": "A JSON Feed post",
                    "content_html": "<p>Hello</p>",
                    "date_published": "2026-11-28T06:00:00Z",
                }
            ],
        }
    )
    project.feed(str(SAMPLES / "allotment-diary.rss"), first_run_window="all")
    project.feed(server.url_for("/good.json"), first_run_window="all")
    for url in urls.values():
        project.feed(url, first_run_window="all")
    project.subscriber("ada@example.org")
    project.data["fetch"] = {"timeout": "500ms"}
    project.write()

    first = digest(project, cli_env, "run", "--now", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    feeds = {f["url"]: f for f in report["feeds"]}
    assert len(feeds) == 12
    expected = {
        "drip": "timed out after 0.5s (fetch.timeout)",
        "bomb": "larger than 10,000,000 bytes once decompressed (fetch.max_bytes)",
        "laughs": 'an entity bomb, "billion laughs"',
        "quadratic": 'an entity bomb, "billion laughs"',
        "home": "not a feed: the server sent an HTML page",
        "gone": "HTTP 410 Gone: the site removed this feed; it is disabled",
        "broken": "HTTP 500 INTERNAL SERVER ERROR",
    }
    for name, words in expected.items():
        f = feeds[urls[name]]
        assert f["status"] == "failed", (name, f)
        assert words in f["error"], (name, f["error"])
        assert "Traceback" not in f["error"] and "Exception" not in f["error"]
    assert feeds[urls["big"]]["status"] == "ok" and feeds[urls["big"]]["entries"] == 10
    assert feeds[urls["old"]]["status"] == "ok"
    assert feeds[urls["old"]]["moved_to"] == server.url_for("/new")
    assert feeds[urls["etag"]]["status"] == "ok"
    (edition,) = report["editions"]
    assert edition["recipients_delivered"] == 1 and report["ok"] is True
    # 3 allotment + 1 JSON + 10 big + 3 moved Atom + 4 etag RSS
    assert edition["entries"] == 21
    mail = next((project.folder / "outbox").glob("*.eml")).read_text(encoding="utf-8")
    assert "A JSON Feed post" in mail and "Huge post 3" in mail
    assert "lol" not in mail

    second = digest(project, cli_env, "run", "--now", "--json")
    assert second.returncode == 0, second.stderr
    feeds = {f["url"]: f for f in json.loads(second.stdout)["feeds"]}
    assert feeds[urls["etag"]]["status"] == "not_modified"
    assert feeds[urls["gone"]]["status"] == "skipped"
    assert "paused" in feeds[urls["gone"]]["error"]
    # the move is followed, and pending until it has held for a day (health.ADOPT_AFTER)
    assert [r.path for r, _ in server.log].count("/old") == 2

    health = json.loads(digest(project, cli_env, "feeds", "--json").stdout)
    rows = {r["url"]: r for r in health}
    assert rows[urls["old"]]["pending_move"] == server.url_for("/new")
    assert rows[urls["gone"]]["paused"] and "410" in rows[urls["gone"]]["pause_reason"]
    assert rows[urls["broken"]]["status"] == "failing"
    assert rows[urls["broken"]]["consecutive_failures"] == 2
    assert "HTTP 500" in rows[urls["broken"]]["last_error"]
    assert rows[urls["old"]]["moved_to"] is None  # not adopted yet
    assert rows[urls["etag"]]["status"] == "ok" and rows[urls["etag"]]["last_success_at"]


def test_a_few_harmless_entities_pass_and_the_limit_is_configurable(server: HTTPServer) -> None:
    doc = (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY site "tag:example.com,2026:">\n]>\n'
        b'<rss version="2.0"><channel><title>t</title><item><title>One</title>'
        b"<guid>&site;1</guid></item></channel></rss>"
    )
    assert parse(doc, "https://x.example/feed").entries[0].guid == "tag:example.com,2026:1"
    server.expect_request("/feed").respond_with_data(doc, content_type="application/rss+xml")
    got = read(server.url_for("/feed"), max_entity_expansion=10)
    assert got.error and "fetch.max_entity_expansion" in got.error.message
    assert read(server.url_for("/feed")).status is FetchStatus.OK


def test_a_feed_of_endless_tiny_items_is_cut_to_the_newest(server: HTTPServer) -> None:
    items = "".join(
        f"<item><title>Item {i}</title><guid>i{i}</guid>"
        f"<pubDate>{format_datetime(NOW - timedelta(minutes=i))}</pubDate></item>"
        for i in range(5000)
    )
    body = f'<rss version="2.0"><channel><title>t</title>{items}</channel></rss>'.encode()
    server.expect_request("/many").respond_with_data(body, content_type="application/rss+xml")
    got = read(server.url_for("/many"), max_entries=100)
    assert got.status is FetchStatus.OK and got.total == 100 and len(got.entries) == 100
    assert [e.title for e in got.entries[:2]] == ["Item 0", "Item 1"]
    assert got.entries[-1].title == "Item 99"
    assert any(
        "kept the 100 newest of 5,000 entries (fetch.max_entries)" in w for w in got.warnings
    )


def test_newest_keeps_dated_entries_first_then_undated_in_order() -> None:
    def raw(guid: str, hours: float | None) -> RawEntry:
        when = NOW - timedelta(hours=hours) if hours is not None else None
        return RawEntry(
            guid=guid, link=None, title=guid, summary=None, content=None, published=when
        )

    entries = [raw("old", 48), raw("undated-1", None), raw("new", 1), raw("undated-2", None)]
    assert [e.guid for e in newest(entries, 2)] == ["old", "new"]
    assert [e.guid for e in newest(entries, 3)] == ["old", "undated-1", "new"]
