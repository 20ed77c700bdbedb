"""One feed never stops a run: whatever a server sends is bounded before use, whatever is
kept fits where it is kept, and an unexpected failure in any per-feed stage (fetch, parse,
clean, choosing, finishing) is that feed's failure alone."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.errors import FetchError
from digest.ingest.fetch import MAX_RETRY_AFTER, FetchSettings, _retry_after, fetch_all, run_sync
from digest.model import FeedSource, Fetched, FetchStatus, Validators
from digest.state import db, health

from .helpers import NOW, SAMPLES, Project
from .raw_http import RawServer, raw_server, response

RSS = (SAMPLES / "harbour-tech.rss").read_bytes()
LATEST = NOW + MAX_RETRY_AFTER


async def no_sleep(seconds: float) -> None:
    assert 0 <= seconds <= 10  # only short waits are waited (fetch.max_retry_wait)


def fetch(url: str, **kw: object) -> Fetched:
    kw = {"timeout": 5.0, "clock": lambda: NOW, "sleep": no_sleep, **kw}
    return run_sync(fetch_all([FeedSource(url)], {}, FetchSettings(**kw)))[0]  # type: ignore[arg-type]


# -- Retry-After, as the issue found it and in general ------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("999999999999999999999", MAX_RETRY_AFTER.total_seconds()),
        ("9" * 5000, MAX_RETRY_AFTER.total_seconds()),
        ("3600", 3600.0),
        ("0", 0.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER.total_seconds()),
        ("Mon, 01 Jan 0001 00:00:00 +2359", 0.0),  # the past, at the edge of datetime
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),  # in the past: no wait
        ("Sat, 28 Nov 2026 08:00:00 GMT", 3600.0),
        ("\u0661\u0662", None),  # digits, but not ASCII ones
        ("\u00b2", None),
        ("-5", None),
        ("1e400", None),
        ("soon", None),
    ],
)
def test_retry_after_is_bounded(value: str, seconds: float | None) -> None:
    assert _retry_after(value, NOW) == seconds


def test_the_issues_503_fails_the_feed_and_not_the_run(project: Project) -> None:
    with raw_server() as server:
        server.serve(response(503, [(b"Retry-After", b"999999999999999999999")]))
        project.feed(server.url + "/feed")
        project.feed(str(SAMPLES / "harbour-tech.rss"), first_run_window="all")
        project.subscriber("ada@example.org")
        report = project.run(NOW)
    bad, good = report.feeds
    assert bad.status is FetchStatus.FAILED
    assert "not asked again before 2026-12-05 07:00 UTC" in (bad.error or "")
    assert good.status is FetchStatus.OK and report.editions[0].entries == 4
    with project.engine().connect() as conn:
        state = health.states(conn, [bad.url], create=False)[bad.url]
    assert state.retry_after == LATEST and state.consecutive_failures == 1


DATE = b"Wed, 25 Nov 2026 10:00:00 GMT"


@pytest.mark.parametrize(
    ("etag", "last_modified", "kept"),
    [
        (b'"v1"', DATE, ('"v1"', DATE.decode())),
        (b'"' + b"e" * 499 + b'"', DATE, (None, DATE.decode())),  # 501 characters
        (b'"v\x01"', DATE + b"\x7f", (None, None)),  # control characters
        (b'"\xc3\xa9t\xc3\xa9"', DATE, (None, DATE.decode())),  # not ASCII
        (b'"v1"', b"x" * 201, ('"v1"', None)),  # too long
    ],
)
def test_validators_are_kept_only_when_they_fit(
    etag: bytes, last_modified: bytes, kept: tuple[str | None, str | None]
) -> None:
    """A validator that cannot be stored whole is not kept at all (a cut one never matches):
    the next fetch is a full one."""
    with raw_server() as server:
        headers = [(b"ETag", etag), (b"Last-Modified", last_modified)]
        server.serve(response(200, [*headers, (b"Content-Length", b"%d" % len(RSS))], RSS))
        got = fetch(server.url + "/feed")
    assert got.status is FetchStatus.OK
    assert (got.validators.etag, got.validators.last_modified) == kept


# -- any header a server sends ---------------------------------------------------------------

NAMES = st.sampled_from(
    [
        b"Retry-After",
        b"Content-Length",
        b"ETag",
        b"Last-Modified",
        b"Location",
        b"Content-Encoding",
        b"Content-Type",
        b"Content-Location",
        b"Transfer-Encoding",
        b"Date",
        b"Expires",
        b"Cache-Control",
    ]
)
ODD = st.sampled_from(
    [
        b"999999999999999999999",
        b"-1",
        b"1e400",
        b"NaN",
        b"0x10",
        b"\xd9\xa1\xd9\xa2",
        b"\xc2\xb2",
        b"  42  ",
        b"",
        b"gzip",
        b"chunked",
        b"http://169.254.169.254/latest/meta-data/",
        b"http://10.0.0.1/",
        b"http://[::ffff:127.0.0.1]:1/",
        b"http://[::1",
        b"javascript:alert(1)",
        b"/again",
        b'W/"\x00\x01"',
    ]
)
DATES = st.builds(
    lambda year, zone: f"Mon, 01 Jan {year} 00:00:00 {zone}".encode(),
    st.integers(-5, 10**12),
    st.sampled_from(["GMT", "+2359", "-2359", "XYZ", ""]),
)
VALUES = st.one_of(
    st.integers(0, 10**30).map(lambda n: str(n).encode()),
    ODD,
    DATES,
    st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.integers(1, 9000).map(lambda n: b"x" * n),
)
STATUSES = st.sampled_from([200, 203, 301, 302, 303, 304, 307, 308, 404, 410, 429, 500, 503, 999])
BODIES = st.sampled_from([RSS, b"", b"not a feed", gzip.compress(RSS), b"\x1f\x8b broken"])


@pytest.fixture(scope="module")
def server() -> Iterator[RawServer]:
    with raw_server() as s:
        yield s


@pytest.fixture(scope="module")
def feeds_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    engine = db.connect(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'state.db'}")
    yield engine
    engine.dispose()


@settings(max_examples=150, deadline=None)
@given(status=STATUSES, headers=st.lists(st.tuples(NAMES, VALUES), max_size=6), body=BODIES)
def test_any_headers_give_a_bounded_outcome_that_can_be_kept(
    server: RawServer,
    feeds_db: sa.Engine,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    server.serve(response(status, headers, body))
    got = fetch(server.url + "/feed", max_redirects=2)
    assert got.status in (FetchStatus.OK, FetchStatus.NOT_MODIFIED, FetchStatus.FAILED)
    assert got.retry_after is None or NOW < got.retry_after <= LATEST
    for value, limit in ((got.validators.etag, 500), (got.validators.last_modified, 200)):
        assert value is None or (len(value) <= limit and value.isascii() and value.isprintable())
    assert got.moved_to is None or len(got.moved_to) <= 2048
    assert got.error is None or isinstance(got.error, FetchError)
    with feeds_db.begin() as conn:
        health.states(conn, [got.source.url])
        health.record_fetch(conn, got, NOW, pause_after=10**6, title="x")


# -- what is kept fits where it is kept, on both databases -----------------------------------

TEXTS = st.one_of(st.text(max_size=3000), st.text(alphabet="\x00\x01\x7f\u2028x", max_size=50))


@pytest.mark.postgres
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    title=TEXTS,
    error=TEXTS,
    moved=st.integers(0, 3000),
    etag=st.one_of(st.none(), st.text(max_size=600)),
    gone=st.booleans(),
)
def test_feed_state_keeps_any_value_on_postgresql(
    postgres_url: str, title: str, error: str, moved: int, etag: str | None, gone: bool
) -> None:
    """PostgreSQL refuses NUL and over-long strings (SQLite takes anything): a feed's
    title, error or move must never make the run's one transaction fail."""
    engine = db.connect(postgres_url, auto_upgrade=True)
    source = FeedSource("https://h.example/feed")
    moved_to = "https://h.example/" + "m" * moved
    try:
        for fetched in (
            Fetched(
                source,
                FetchStatus.FAILED,
                gone=gone,
                moved_to=moved_to,
                error=FetchError(source.url, error),
            ),
            Fetched(source, FetchStatus.OK, validators=Validators(etag=etag), moved_to=moved_to),
        ):
            with engine.begin() as conn:
                health.states(conn, [source.url])
                health.record_fetch(conn, fetched, NOW, 3, title=title)
    finally:
        engine.dispose()


# -- an unexpected failure in each per-feed stage ------------------------------------------


@pytest.fixture
def nine_feeds(project: Project, tmp_path: Path) -> Project:
    """Nine copies of a sample feed (enough for the parser processes), each its own feed,
    with its own summaries: nine feeds with the same titles and summaries would carry the
    same four stories (digest/cluster.py), shown once each."""
    text = (SAMPLES / "harbour-tech.rss").read_text(encoding="utf-8")
    for i in range(9):
        copy = tmp_path / f"feed{i}.rss"
        own = " ".join(f"copy{i}word{k}" for k in range(12))
        body = re.sub(r"<description>.*?</description>", f"<description>{own}</description>",
                      text, flags=re.S)  # fmt: skip
        copy.write_text(body.replace("harbour-tech.example/", f"harbour-tech.example/{i}/"))
        project.feed(str(copy), name=f"Feed {i}", first_run_window="all")
    project.subscriber("ada@example.org")
    project.write()
    return project


def digest_run(
    project: Project, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(project.path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "words"),
    [
        ("fetch", "unexpected error while fetching: InjectedFault"),
        ("parse", "unexpected error while parsing: InjectedFault"),
        ("clean", "unexpected error while cleaning: InjectedFault"),
        ("pick", "unexpected error while choosing from: InjectedFault"),
    ],
)
def test_a_failure_in_any_stage_fails_that_feed_alone(
    nine_feeds: Project, cli_env: dict[str, str], stage: str, words: str
) -> None:
    """In parser processes too (nine feeds: parsing runs in a pool)."""
    env = {**cli_env, "DIGEST_FAULT": f"{stage}@feed4.rss"}
    result = digest_run(nine_feeds, env, "run", "--now", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    failed = [f for f in report["feeds"] if f["status"] == "failed"]
    assert [f["name"] for f in failed] == ["Feed 4"] and words in failed[0]["error"]
    assert report["editions"][0]["entries"] == 8 * 4  # everyone else's entries went out
    assert "Traceback" in result.stderr  # logged for whoever fixes it
    rows = json.loads(digest_run(nine_feeds, cli_env, "feeds", "--json").stdout)
    assert [r["status"] for r in rows].count("failing") == 1
    assert words in rows[4]["last_error"]
    # its entries were not recorded: once the fault is gone, they go out
    again = json.loads(digest_run(nine_feeds, cli_env, "run", "--now", "--json").stdout)
    assert again["editions"][0]["entries"] == 4


def test_a_body_that_cannot_be_cleaned_goes_out_without_it(
    nine_feeds: Project, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "DIGEST_FAULT": "finish@feed4.rss"}
    result = digest_run(nine_feeds, env, "run", "--now", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(f["status"] == "ok" for f in report["feeds"])
    assert report["editions"][0]["entries"] == 9 * 4
    assert "cleaning the body of" in result.stderr


def test_faults_only_fire_where_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from digest import faults

    monkeypatch.setenv("DIGEST_FAULT", "parse@feed4")
    faults.fail("parse", "file:///x/feed3.rss")
    faults.fail("clean", "file:///x/feed4.rss")
    with pytest.raises(faults.InjectedFault):
        faults.fail("parse", "file:///x/feed4.rss")


# -- dates in feeds ----------------------------------------------------------------------------


def test_absurd_dates_cost_only_the_date(project: Project, tmp_path: Path) -> None:
    items = [
        {"id": "1", "title": "Year one", "date_published": "0001-01-01T00:00:00+05:00"},
        {"id": "2", "title": "Year 9999", "date_published": "9999-12-31T23:59:59-10:00"},
        {"id": "3", "title": "Epoch", "date_published": "1970-01-01T00:00:00Z"},
        {"id": "4", "title": "Big", "date_published": "1" * 5000},
    ]
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": items}
    path = tmp_path / "feed.json"
    path.write_text(json.dumps(feed))
    rss = tmp_path / "feed.rss"
    rss.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>R</title>'
        "<item><guid>r1</guid><title>Year one in RSS</title>"
        "<pubDate>Mon, 01 Jan 0001 00:00:00 GMT</pubDate></item></channel></rss>"
    )
    project.feed(str(path), first_run_window="all")
    project.feed(str(rss), first_run_window="all")
    project.subscriber("ada@example.org")
    project.data["email"] = {"timezone": "America/New_York"}  # year 1, minus 5 hours
    report = project.run(NOW)
    assert [f.status for f in report.feeds] == [FetchStatus.OK] * 2
    assert report.editions[0].entries == 5


# -- lone surrogates: a character lost, never the feed --------------------------------------

SURROGATES = st.integers(min_value=0xD800, max_value=0xDFFF)


@settings(max_examples=60, deadline=None)
@given(SURROGATES, st.sampled_from(["x", "X", "d"]), st.booleans())
def test_a_reference_to_a_surrogate_costs_a_character_not_the_feed(
    code: int, form: str, in_title: bool
) -> None:
    """XML forbids ``&#xD800;``; feedparser decodes it anyway and then failed on the whole
    document. JSON can escape one too ("\\ud800"). Either way the entry goes out, the
    surrogate shown as U+FFFD, in the title and in (escaped) HTML content alike."""
    from digest.ingest.clean import clean, finish
    from digest.ingest.jsonfeed import parse as parse_json
    from digest.ingest.parse import parse

    ref = f"&#{code}" if form == "d" else f"&#{form}{code:X}"
    title, body = (f"A {ref}; B", "fine") if in_title else ("A B", f"x &amp;{ref[1:]}; y")
    rss = (
        f'<rss version="2.0"><channel><title>t</title><item><title>{title}</title>'
        f"<link>https://a.example/1</link><description>{body}</description></item>"
        "</channel></rss>"
    ).encode()
    escaped = f"\\u{code:04x}"
    json_feed = (
        '{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": [{"id": "1",'
        f' "url": "https://a.example/1", "title": "A {escaped} B", "content_html":'
        f' "<p>x {escaped} y</p>", "tags": [["{escaped}"]]}}]}}'
    ).encode()
    source = FeedSource("https://a.example/feed", "A")
    for parsed in (parse(rss, source.url), parse_json(json_feed, source.url)):
        (raw,) = parsed.entries
        entry = finish(clean(raw, source, "A", NOW))
        for text in (entry.title, entry.summary or "", entry.content_html or ""):
            text.encode("utf-8")  # no surrogate left: every later step can encode it
        assert "\ufffd" in entry.title + (entry.summary or "") + (entry.content_html or "")
