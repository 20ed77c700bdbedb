"""The daily run through the real code path: fingerprints remembered per feed (SQLite
and PostgreSQL), a changed feed costing its new entries only, with the edition a run
that parses every feed whole would make; the same gzipped bytes not even decompressed."""

from __future__ import annotations

import gzip
import hashlib
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import feedparser
import pytest
import sqlalchemy as sa
from pytest_httpserver import HTTPServer

from digest.ingest import fetch as fetch_module
from digest.ingest import parse as parse_module
from digest.ingest.feeds import digest_feed, ingest
from digest.ingest.fetch import FetchSettings, fetch_all, run_sync
from digest.model import FeedSource, Fetched, FetchStatus, Validators
from digest.state import db, health
from digest.state.db import schema

from .helpers import NOW, Project


def feed(first: int, count: int) -> bytes:
    """A feed of ``count`` posts, newest first, numbered from ``first`` (post n was
    published n hours before NOW); its lastBuildDate says when post ``first`` came."""
    items = "".join(
        f"<item><title>Post {n}</title><link>https://blog.example/{n}/</link>"
        f'<guid isPermaLink="false">post-{n}</guid>'
        f"<pubDate>{format_datetime(NOW - timedelta(hours=n))}</pubDate>"
        f"<description><![CDATA[<p>About post {n}</p>]]></description></item>\n"
        for n in range(first, first + count)
    )
    built = format_datetime(NOW - timedelta(hours=first))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        f"<title>A blog</title><link>https://blog.example/</link>"
        f"<lastBuildDate>{built}</lastBuildDate>\n{items}</channel></rss>\n"
    ).encode()


@pytest.fixture
def parsed_entries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many entries each document handed to feedparser holds (feeds are parsed in
    this process: fewer than ``feeds.POOL_THRESHOLD``)."""
    counts: list[int] = []
    real = feedparser.parse

    def counting(document: bytes, *args: object, **kwargs: object) -> object:
        counts.append(document.count(b"<item>"))
        return real(document, *args, **kwargs)

    monkeypatch.setattr(parse_module.feedparser, "parse", counting)
    return counts


# -- remembered per feed ------------------------------------------------------------------


def _remembers(url: str) -> None:
    engine = db.connect(url, auto_upgrade=True)
    source = FeedSource("https://blog.example/feed/")
    ok = Fetched(source, FetchStatus.OK, url=source.url, validators=Validators(body_hash="h"))
    try:
        with engine.begin() as conn:
            health.states(conn, [source.url])
            health.record_fetch(conn, ok, NOW, 5, prints=b"\x01" * 32)
        with engine.begin() as conn:
            assert health.states(conn, [source.url])[source.url].entry_prints == b"\x01" * 32
            health.record_fetch(conn, ok, NOW, 5, prints=None)  # nothing parsed: kept
            assert health.states(conn, [source.url])[source.url].entry_prints == b"\x01" * 32
            health.record_fetch(conn, ok, NOW, 5, parse_error="broken", prints=b"\x02" * 16)
            assert health.states(conn, [source.url])[source.url].entry_prints == b"\x01" * 32
            health.record_fetch(conn, ok, NOW, 5, prints=b"")  # a feed that cannot be split
            assert health.states(conn, [source.url])[source.url].entry_prints == b""
    finally:
        engine.dispose()


def test_prints_are_remembered_on_sqlite(tmp_path: Path) -> None:
    _remembers(f"sqlite:///{tmp_path / 'state.db'}")


@pytest.mark.postgres
def test_prints_are_remembered_on_postgres(fresh_postgres: str) -> None:
    _remembers(fresh_postgres)


# -- a daily run, for real ----------------------------------------------------------------


@pytest.fixture
def blog(tmp_path: Path) -> Iterator[tuple[Path, Callable[[Path], Project]]]:
    path = tmp_path / "blog.rss"
    path.write_bytes(feed(2, 30))
    made: list[Project] = []

    def project(folder: Path) -> Project:
        folder.mkdir(exist_ok=True)
        p = Project(folder)
        p.feed(path.as_uri())
        p.subscriber("reader@example.org")
        p.data["digest"]["first_run_window"] = "all"
        made.append(p)
        return p

    yield path, project
    for p in made:
        p.close()


def _entries(project: Project, edition_id: int) -> list[tuple[object, ...]]:
    e = schema.entries
    columns = [c for c in e.c if c.name not in ("id", "feed_id")]
    with project.engine().connect() as conn:
        rows = conn.execute(
            sa.select(*columns).where(e.c.edition_id == edition_id).order_by(e.c.identity)
        )
        return [tuple(r) for r in rows]


def test_a_daily_run_parses_the_new_entries_only_and_sends_what_a_whole_parse_would(
    blog: tuple[Path, Callable[[Path], Project]], tmp_path: Path, parsed_entries: list[int]
) -> None:
    path, project = blog
    ours = project(tmp_path / "ours")
    first = ours.run(NOW - timedelta(hours=1))
    assert first.editions[0].entries == 30 and parsed_entries == [30]
    twin = project(tmp_path / "twin")
    source, copy = (
        sqlite3.connect(ours.folder / "state.db"),
        sqlite3.connect(twin.folder / "state.db"),
    )
    with closing(source), closing(copy):
        source.backup(copy)  # the WAL's pages included
    with twin.engine().begin() as conn:  # the twin has no fingerprints: it parses whole
        conn.execute(sa.update(schema.feeds).values(entry_prints=None))

    path.write_bytes(feed(0, 30))  # two new posts on top, two old ones gone
    parsed_entries.clear()
    daily = ours.run(NOW)
    assert parsed_entries == [2]  # one document, holding the two new entries
    assert daily.editions[0].entries == 2
    assert daily.feeds[0].entries == 30 and daily.feeds[0].new == 2

    parsed_entries.clear()
    whole = twin.run(NOW)
    assert parsed_entries == [30]
    assert _entries(ours, daily.editions[0].id) == _entries(twin, whole.editions[0].id)
    assert len(_entries(ours, daily.editions[0].id)) == 2
    with ours.engine().connect() as conn, twin.engine().connect() as other:
        mine = conn.execute(sa.select(schema.feeds.c.entry_prints)).scalar_one()
        theirs = other.execute(sa.select(schema.feeds.c.entry_prints)).scalar_one()
    assert mine == theirs and len(mine) == 30 * 16  # both now remember today's 30

    parsed_entries.clear()
    path.write_bytes(feed(0, 30).replace(b"<title>A blog", b"<title>A blog, renamed"))
    again = ours.run(NOW + timedelta(hours=1))  # a changed envelope, no new entry
    assert parsed_entries == [0] and not again.editions


def test_a_run_with_nobody_to_send_to_remembers_no_fingerprint(
    blog: tuple[Path, Callable[[Path], Project]], tmp_path: Path, parsed_entries: list[int]
) -> None:
    """What is new stays new when nobody is subscribed: nothing of it is remembered."""
    _path, project = blog
    alone = project(tmp_path / "alone")
    alone.data["subscribers"] = []
    alone.run(NOW)
    with alone.engine().connect() as conn:
        assert not conn.execute(sa.select(schema.feeds.c.entry_prints)).scalar_one()


# -- the same bytes on the wire -----------------------------------------------------------


def _fetch(url: str, known: Validators | None = None) -> Fetched:
    source = FeedSource(url)
    return run_sync(fetch_all([source], {url: known} if known else {}, FetchSettings(timeout=5)))[0]


def test_the_same_gzipped_bytes_are_not_decompressed(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = feed(0, 30)
    httpserver.expect_request("/feed").respond_with_data(
        gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )
    inflated: list[int] = []
    real = fetch_module._decompressed

    def counting(raw: bytearray, *args: object) -> bytes:
        inflated.append(len(raw))
        return real(raw, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch_module, "_decompressed", counting)
    url = httpserver.url_for("/feed")
    first = _fetch(url)
    assert first.body == body and not first.unchanged and len(inflated) == 1
    second = _fetch(url, first.validators)
    assert second.unchanged and second.body == b"" and len(inflated) == 1
    assert second.validators.body_hash == first.validators.body_hash


def test_a_plain_body_keeps_the_hash_remembered_before(httpserver: HTTPServer) -> None:
    """Uncompressed bodies hash as they always did: a stored hash still matches."""
    body = feed(0, 3)
    httpserver.expect_request("/feed").respond_with_data(body)
    got = _fetch(httpserver.url_for("/feed"))
    assert got.validators.body_hash == hashlib.sha256(body).hexdigest()
    again = _fetch(httpserver.url_for("/feed"), got.validators)
    assert again.unchanged and again.body == b""


def test_a_gzip_bomb_is_still_refused_at_the_limit(httpserver: HTTPServer) -> None:
    bomb = gzip.compress(b" " * 5_000_000)
    httpserver.expect_request("/feed").respond_with_data(bomb, headers={"Content-Encoding": "gzip"})
    source = FeedSource(httpserver.url_for("/feed"))
    settings = FetchSettings(timeout=5, max_bytes=1_000_000)
    got = run_sync(fetch_all([source], {}, settings))[0]
    assert got.status is FetchStatus.FAILED and got.error is not None
    assert "fetch.max_bytes" in got.error.message


# -- bodies inflated by the parser (``ingest`` leaves them compressed) ------------------------


def _served(httpserver: HTTPServer, bodies: dict[str, bytes], coding: str) -> list[FeedSource]:
    for path, raw in bodies.items():
        sent = gzip.compress(raw) if coding == "gzip" else zlib.compress(raw)
        httpserver.expect_request(path).respond_with_data(
            sent, headers={"Content-Encoding": coding, "Content-Type": "application/rss+xml"}
        )
    return [FeedSource(httpserver.url_for(p)) for p in bodies]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_ingest_reads_compressed_bodies_as_fetch_all_inflates_them(
    httpserver: HTTPServer, workers: int, coding: str
) -> None:
    """``ingest`` hands bodies to the parser as sent (34 KB piped instead of 200 KB): the
    entries are those of the inflated body, and a bomb or a corrupt body fails its feed
    as it did while fetching: the same error, no validators kept."""
    bodies = {f"/feed{i}": feed(i, 3) for i in range(8)}
    sources = _served(httpserver, bodies, coding)
    httpserver.expect_request("/bomb").respond_with_data(
        gzip.compress(b" " * 5_000_000), headers={"Content-Encoding": "gzip"}
    )
    httpserver.expect_request("/corrupt").respond_with_data(
        b"\x1f\x8b\x08\x00not gzip at all", headers={"Content-Encoding": "gzip"}
    )
    sources += [FeedSource(httpserver.url_for("/bomb")), FeedSource(httpserver.url_for("/corrupt"))]
    settings = FetchSettings(timeout=5, max_bytes=1_000_000)
    got = ingest(sources, {}, settings, NOW, 300, workers=workers)
    inflated = run_sync(fetch_all(sources, {}, settings))
    for i, (ours, theirs) in enumerate(zip(got[:8], inflated[:8], strict=True)):
        assert ours.status is FetchStatus.OK, ours.error
        expected = digest_feed(theirs, NOW, 300)
        assert ours.entries == expected.entries and len(ours.entries) == 3, i
        assert ours.prints == expected.prints and ours.prints
        assert ours.fetched.validators == theirs.validators
    for ours, theirs in zip(got[8:], inflated[8:], strict=True):
        assert theirs.status is FetchStatus.FAILED and theirs.error is not None
        assert ours.status is FetchStatus.FAILED and ours.error is ours.fetched.error
        assert type(ours.error) is type(theirs.error)
        assert ours.error.message == theirs.error.message and ours.error.url == theirs.error.url
        assert ours.fetched.status is FetchStatus.FAILED
        assert ours.fetched.validators == theirs.validators == Validators()
        assert ours.fetched.url == theirs.url and ours.prints is None
    assert "fetch.max_bytes" in got[8].error.message  # type: ignore[union-attr]
    assert "corrupt" in got[9].error.message  # type: ignore[union-attr]


def test_a_body_left_compressed_is_inflated_only_by_the_parser(httpserver: HTTPServer) -> None:
    (source,) = _served(httpserver, {"/feed": feed(0, 3)}, "gzip")
    (sent,) = run_sync(fetch_all([source], {}, FetchSettings(timeout=5), decode=False))
    assert sent.headers["content-encoding"] == "gzip" and sent.body[:2] == b"\x1f\x8b"
    inflated = fetch_module.decoded(sent, 1_000_000)
    assert inflated.body == feed(0, 3) and "content-encoding" not in inflated.headers
    assert fetch_module.decoded(inflated, 1_000_000) is inflated
