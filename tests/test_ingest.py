"""Ingestion as a whole: the pool, known entries, Retry-After across runs, what a person sees."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest import pipeline
from digest.ingest import feeds as ingest_module
from digest.ingest.clean import identity
from digest.ingest.feeds import digest_apart, digest_feed, ingest
from digest.ingest.fetch import FetchSettings, run_sync
from digest.ingest.parse import Fresh, ParseLimits, parse
from digest.model import FeedSource, Fetched, FetchStatus

from .helpers import NOW, SAMPLES, Project

RSS = (SAMPLES / "harbour-tech.rss").read_bytes()


def fetched(body: bytes, url: str = "https://h.example/feed") -> Fetched:
    return Fetched(FeedSource(url), FetchStatus.OK, url=url, body=body)


def run(project: Project, now: datetime = NOW) -> pipeline.RunReport:
    return project.run(now)


# -- known entries are recognised, not cleaned ----------------------------------------------


def local_feeds(
    folder: Path, odd: Mapping[int, bytes] | None = None, count: int = 9
) -> list[FeedSource]:
    """``count`` feeds on disk (nine: enough for the parser pool), RSS unless ``odd``
    says otherwise."""
    sources = []
    for i in range(count):
        path = folder / f"feed{i}.rss"
        path.write_bytes((odd or {}).get(i, RSS))
        sources.append(FeedSource(path.as_uri()))
    return sources


def count_cleaned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The titles of the entries ``clean`` is called for, from now on."""
    cleaned: list[str] = []
    real = ingest_module.clean

    def counting(*args: object, **kw: object) -> object:
        cleaned.append(args[0].title)  # type: ignore[attr-defined]
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_module, "clean", counting)
    return cleaned


def test_known_entries_are_not_cleaned(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = parse(RSS, "https://h.example/feed").entries
    known = {identity(r) for r in raw[1:]}
    cleaned = count_cleaned(monkeypatch)
    got = digest_feed(fetched(RSS), NOW, 300, known)
    assert cleaned == [raw[0].title]
    assert [e.identity for e in got.entries] == [identity(raw[0])]
    assert got.total == len(raw) == 4


def test_identity_needs_no_cleaning() -> None:
    for raw in parse(RSS, "https://h.example/feed").entries:
        entry = digest_feed(fetched(RSS), NOW, 300).entries
        assert identity(raw) in {e.identity for e in entry}


def test_a_run_cleans_only_what_is_new_and_reports_every_entry(
    project: Project, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.subscriber("ada@example.org")
    assert run(project).editions[0].entries == 4
    feed = samples / "harbour-tech.rss"
    feed.write_text(
        feed.read_text().replace(
            "<item>",
            "<item><title>Fresh</title><guid>fresh-1</guid>"
            "<pubDate>Sat, 28 Nov 2026 08:00:00 +0000</pubDate></item><item>",
            1,
        )
    )
    cleaned = count_cleaned(monkeypatch)
    report = run(project, NOW + timedelta(hours=2))
    assert cleaned == ["Fresh"]
    assert report.editions[0].entries == 1
    assert report.feeds[0].entries == 5 and report.feeds[0].new == 1


# -- the process pool -----------------------------------------------------------------------


@pytest.fixture
def threaded() -> Iterator[HTTPServer]:
    s = HTTPServer(host="127.0.0.1", threaded=True)
    s.start()
    yield s
    s.clear()
    s.stop()


def test_parsing_overlaps_fetching(
    threaded: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feeds that arrived are parsed (in the pool) while a slow one is still coming: the
    slow one answers once the eight others are parsed (or after 10 s, and the test
    fails), so none of them may wait for the fetching to end."""
    marks = tmp_path / "marks"
    marks.mkdir()
    real = ingest_module.parse_new

    def noting(body: bytes, url: str, *rest: object) -> Fresh:
        result = real(body, url, *rest)  # type: ignore[arg-type]
        (marks / f"parsed-{os.getpid()}-{time.monotonic_ns()}").write_text(url)
        return result

    monkeypatch.setattr(ingest_module, "START_METHOD", "fork")
    monkeypatch.setattr(ingest_module, "parse_new", noting)  # inherited by the forked workers

    def slow(request: Request) -> Response:
        for _ in range(1000):
            if len(list(marks.glob("parsed-*"))) >= 8:
                break
            time.sleep(0.01)
        (marks / f"slow-{time.monotonic_ns()}").write_text("")
        return Response(RSS)

    threaded.expect_request("/slow").respond_with_handler(slow)
    for i in range(8):
        threaded.expect_request(f"/fast{i}").respond_with_data(RSS)
    sources = [FeedSource(threaded.url_for("/slow"))] + [
        FeedSource(threaded.url_for(f"/fast{i}")) for i in range(8)
    ]
    results = ingest(sources, {}, FetchSettings(timeout=10), NOW, 300, workers=2)
    assert all(r.status is FetchStatus.OK and len(r.entries) == 4 for r in results)
    names = sorted(marks.iterdir(), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    pids = {p.name.split("-")[1] for p in names if p.name.startswith("parsed")}
    assert str(os.getpid()) not in pids  # parsed in the pool, not here
    slow_at = [p.name for p in names].index(next(p.name for p in names if p.name[:4] == "slow"))
    assert slow_at >= 8  # all eight fast feeds were parsed before the slow one arrived


def test_the_pool_sends_results_back_without_the_body(tmp_path: Path) -> None:
    """A worker's result leaves the feed's bytes out (the caller has them: piping them
    back cost as much as parsing two entries); the caller's results carry them again."""
    apart = digest_apart(fetched(RSS), NOW, 300)
    assert apart.fetched.body == b""
    assert apart.entries == digest_feed(fetched(RSS), NOW, 300).entries
    results = ingest(local_feeds(tmp_path, {}), {}, FetchSettings(), NOW, 300, workers=2)
    assert all(r.status is FetchStatus.OK and len(r.entries) == 4 for r in results)
    assert all(r.fetched.body == RSS for r in results)


def test_a_dying_parser_process_fails_only_its_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest_module.parse_new

    def fragile(body: bytes, url: str, *rest: object) -> Fresh:
        if b"KILL" in body:
            os._exit(1)  # what the kernel's OOM killer or a crashing C library looks like
        return real(body, url, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_module, "START_METHOD", "fork")
    monkeypatch.setattr(ingest_module, "parse_new", fragile)  # inherited by the forked workers
    sources = local_feeds(tmp_path, {4: RSS.replace(b"<channel>", b"<channel><!-- KILL -->")})
    results = ingest(sources, {}, FetchSettings(), NOW, 300, workers=2)
    assert [r.status for r in results].count(FetchStatus.OK) == 8
    bad = results[4]
    assert bad.status is FetchStatus.FAILED and bad.error
    assert "the parser process died reading this feed" in bad.error.message


#: Where the workers' gate and marks are (``gated_batch``); set before they fork.
GATE: list[Path] = []
REAL_BATCH = ingest_module.digest_batch
REAL_APART = ingest_module.digest_apart


def gated_batch(jobs: list[object], *args: object) -> object:
    """``digest_batch`` once the gate opens (every feed fetched): the pool is behind from
    the first feed on, whatever the machine's speed. Marks how many feeds each task held."""
    gate = GATE[0]
    for _ in range(2000):
        if gate.exists():
            break
        time.sleep(0.005)
    (gate.parent / f"batch-{os.getpid()}-{time.monotonic_ns()}-{len(jobs)}").touch()
    return REAL_BATCH(jobs, *args)  # type: ignore[arg-type]


def poisoning_apart(fetched: Fetched, *args: object) -> object:
    """``digest_apart``, but a feed saying POISON gets a result that cannot be pickled."""
    if b"POISON" in fetched.body:
        error = ingest_module.ParseError(fetched.source.url, "poisoned")
        error.hook = lambda: None  # type: ignore[attr-defined]
        return ingest_module.Digested(fetched, error=error)
    return REAL_APART(fetched, *args)  # type: ignore[arg-type]


def gated_ingest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: list[FeedSource]
) -> tuple[list[ingest_module.Digested], list[int]]:
    """``ingest`` with two workers held at the gate until every feed is fetched; the
    results, and the size of each task the pool ran."""
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(ingest_module, "START_METHOD", "fork")
    monkeypatch.setattr(ingest_module, "digest_batch", gated_batch)
    monkeypatch.setattr(sys.modules[__name__], "GATE", [marks / "gate"])
    seen = []

    def fetched_one(result: Fetched) -> None:
        seen.append(result)
        if len(seen) == len(sources):
            (marks / "gate").touch()

    results = ingest(sources, {}, FetchSettings(), NOW, 300, workers=2, on_fetched=fetched_one)
    sizes = [int(m.name.rsplit("-", 1)[1]) for m in marks.glob("batch-*")]
    return results, sizes


def test_feeds_wait_for_a_busy_pool_and_go_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the workers are behind, fetched feeds gather and go as one task (a task
    costs the same in both processes whatever it holds); each feed parsed once."""
    sources = local_feeds(tmp_path, count=40)
    results, sizes = gated_ingest(tmp_path, monkeypatch, sources)
    assert all(r.status is FetchStatus.OK and len(r.entries) == 4 for r in results)
    assert [r.source for r in results] == sources
    assert sum(sizes) == 40
    assert len(sizes) <= 40 // 3
    assert max(sizes) <= ingest_module.MAX_BATCH


def test_feeds_that_wait_for_busy_workers_go_when_one_is_free(
    threaded: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feeds that arrived while both workers were busy go to the pool as soon as a task
    ends, not when the fetching does: the last feed here answers only once the eight
    others are in a worker's hands (or after 10 s: then the test fails)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(ingest_module, "START_METHOD", "fork")
    monkeypatch.setattr(ingest_module, "digest_batch", gated_batch)
    monkeypatch.setattr(sys.modules[__name__], "GATE", [marks / "gate"])
    answered = []

    def handed() -> int:
        return sum(int(m.name.rsplit("-", 1)[1]) for m in marks.glob("batch-*"))

    def last(request: Request) -> Response:
        for _ in range(1000):
            if handed() >= 8:
                break
            time.sleep(0.01)
        answered.append(handed())
        return Response(RSS)

    threaded.expect_request("/last").respond_with_handler(last)
    for i in range(8):
        threaded.expect_request(f"/fast{i}").respond_with_data(RSS)
    sources = [FeedSource(threaded.url_for(f"/fast{i}")) for i in range(8)]
    sources.append(FeedSource(threaded.url_for("/last")))
    fast = []

    def fetched_one(result: Fetched) -> None:  # the workers start once all 8 are here
        fast.append(result)
        if len(fast) == 8:
            (marks / "gate").touch()

    results = ingest(
        sources, {}, FetchSettings(timeout=30), NOW, 300, workers=2, on_fetched=fetched_one
    )
    assert all(r.status is FetchStatus.OK and len(r.entries) == 4 for r in results)
    assert answered == [8]


def test_big_bodies_make_small_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is one pickle: it holds at most ``MAX_BATCH_BYTES`` of bodies (or one)."""
    monkeypatch.setattr(ingest_module, "MAX_BATCH_BYTES", 2 * len(RSS))
    sources = local_feeds(tmp_path, count=40)
    results, sizes = gated_ingest(tmp_path, monkeypatch, sources)
    assert all(r.status is FetchStatus.OK and len(r.entries) == 4 for r in results)
    assert sum(sizes) == 40
    assert max(sizes) == 2


def test_a_dying_parser_process_in_a_batch_fails_only_its_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest_module.parse_new

    def fragile(body: bytes, url: str, *rest: object) -> Fresh:
        if b"KILL" in body:
            os._exit(1)
        return real(body, url, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_module, "parse_new", fragile)
    kill = RSS.replace(b"<channel>", b"<channel><!-- KILL -->")
    sources = local_feeds(tmp_path, {12: kill}, count=24)
    results, sizes = gated_ingest(tmp_path, monkeypatch, sources)
    assert max(sizes) > 1  # it died in a batch
    assert [r.status for r in results].count(FetchStatus.OK) == 23
    assert results[12].error and "parser process died" in results[12].error.message


def test_a_result_that_cannot_come_back_fails_only_its_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One result in a batch that cannot be pickled fails the batch's task as a whole:
    its feeds are read again one by one, and only the one that did it fails."""
    monkeypatch.setattr(ingest_module, "digest_apart", poisoning_apart)
    poison = RSS.replace(b"<channel>", b"<channel><!-- POISON -->")
    sources = local_feeds(tmp_path, {12: poison}, count=24)
    results, sizes = gated_ingest(tmp_path, monkeypatch, sources)
    assert max(sizes) > 1
    assert [r.status for r in results].count(FetchStatus.OK) == 23
    assert all(len(r.entries) == 4 for i, r in enumerate(results) if i != 12)
    assert results[12].error and "unexpected error while parsing" in results[12].error.message


def test_ingest_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    """A caller that is itself asynchronous (a web app, a scheduler) can still ingest."""
    path = tmp_path / "feed.rss"
    path.write_bytes(RSS)

    async def caller() -> int:
        results = ingest([FeedSource(path.as_uri())], {}, FetchSettings(), NOW, 300)
        return len(results[0].entries)

    assert run_sync(caller()) == 4  # (run_sync: this thread may hold a loop already)


# -- across runs ----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["3600", "date"])
def test_retry_after_is_honoured_across_runs(
    project: Project, httpserver: HTTPServer, header: str
) -> None:
    value = header if header != "date" else format_datetime(NOW + timedelta(hours=1), usegmt=True)
    calls: list[int] = []

    def handler(request: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            return Response(status=429, headers={"Retry-After": value})
        return Response(RSS)

    httpserver.expect_request("/feed").respond_with_handler(handler)
    project.feed(httpserver.url_for("/feed"), first_run_window="all")
    project.subscriber("ada@example.org")
    first = run(project).feeds[0]
    assert first.status is FetchStatus.FAILED and "come back later" in (first.error or "")
    assert "not asked again before 2026-11-28 08:00 UTC" in (first.error or "")
    later = run(project, NOW + timedelta(minutes=59)).feeds[0]
    assert later.status is FetchStatus.SKIPPED and "asked us to wait until" in (later.error or "")
    assert len(calls) == 1
    after = run(project, NOW + timedelta(hours=1, minutes=1))
    assert after.feeds[0].status is FetchStatus.OK and len(calls) == 2
    assert after.editions[0].entries == 4


def rss(items: list[tuple[str | None, str | None, str]]) -> str:
    """Items of (guid, link, title), all undated."""
    body = "".join(
        "<item>"
        + (f"<guid>{g}</guid>" if g else "")
        + (f"<link>{link}</link>" if link else "")
        + f"<title>{t}</title><description>About {t}</description></item>"
        for g, link, t in items
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>X</title>{body}</channel></rss>'
    )


def test_entries_without_guid_are_never_sent_twice(
    project: Project, httpserver: HTTPServer
) -> None:
    """No guids (links only, or nothing at all), a reorder and days of outage: still once."""
    state = {"items": [(None, "https://x.example/a", "A"), (None, None, "No link, no guid")]}

    def handler(request: Request) -> Response:
        if state.get("down"):
            return Response("down", status=503)
        return Response(rss(state["items"]))  # type: ignore[arg-type]

    httpserver.expect_request("/feed").respond_with_handler(handler)
    project.feed(httpserver.url_for("/feed"), first_run_window="all")
    project.subscriber("ada@example.org")
    assert run(project).editions[0].entries == 2
    state["down"] = True
    for day in range(1, 4):
        outage = run(project, NOW + timedelta(days=day))
        assert outage.feeds[0].status is FetchStatus.FAILED and outage.editions == ()
    state["down"] = False
    state["items"] = [
        (None, None, "No link, no guid"),
        (None, "https://x.example/b", "B"),
        (None, "https://x.example/a?utm_source=rss", "A"),
    ]
    back = run(project, NOW + timedelta(days=4))
    assert back.editions[0].entries == 1  # only B
    mail = sorted(project.outbox())[-1].read_text(encoding="utf-8")
    assert "B" in mail and "About A" not in mail and "No link" not in mail


def test_guids_that_change_on_every_fetch_do_not_resend_the_stories(
    project: Project, httpserver: HTTPServer
) -> None:
    """The issue's feed: no links, a new guid for every item on every fetch."""
    fetches: list[int] = []

    def handler(request: Request) -> Response:
        fetches.append(1)
        n = len(fetches)
        titles = ["Storm warning", "Ferry times"] + (["Harbour fete"] if n >= 3 else [])
        return Response(rss([(f"urn:uuid:{n}-{i}", None, t) for i, t in enumerate(titles)]))

    httpserver.expect_request("/feed").respond_with_handler(handler)
    project.feed(httpserver.url_for("/feed"), first_run_window="all")
    project.subscriber("ada@example.org")
    assert run(project).editions[0].entries == 2
    again = run(project, NOW + timedelta(days=1))
    assert again.editions == () and again.feeds[0].status is FetchStatus.OK
    third = run(project, NOW + timedelta(days=29))  # still within 30 days of the last sight
    assert third.editions[0].entries == 1
    assert "Harbour fete" in sorted(project.outbox())[-1].read_text(encoding="utf-8")
    # each sight is recorded: 45 days after the first, the last sight was 16 days ago
    assert run(project, NOW + timedelta(days=45)).editions == ()


# -- what a person sees -----------------------------------------------------------------------


def in_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe); returns code, stdout, stderr."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**env, "COLUMNS": "100", "TERM": "xterm"},
        cwd=cwd,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_only_on_a_terminal_and_never_with_json(
    project: Project, httpserver: HTTPServer, cli_env: dict[str, str]
) -> None:
    for i in range(3):
        httpserver.expect_request(f"/f{i}").respond_with_data(RSS)
        project.feed(httpserver.url_for(f"/f{i}"), first_run_window="all")
    project.subscriber("ada@example.org")
    project.data["digest"]["skip_if_empty"] = False
    project.write()
    args = ["--config", str(project.path), "run", "--dry-run"]
    code, _, tty_err = in_a_terminal(args, cli_env, project.folder)
    assert code == 0 and "Fetching feeds" in tty_err
    code, out, tty_json_err = in_a_terminal([*args, "--json"], cli_env, project.folder)
    assert code == 0 and "Fetching feeds" not in tty_json_err
    assert json.loads(out)["dry_run"] is True
    piped = subprocess.run(
        [sys.executable, "-m", "digest", *args],
        capture_output=True,
        text=True,
        env=cli_env,
        check=False,
    )
    assert piped.returncode == 0 and "Fetching feeds" not in piped.stderr


def test_only_the_entries_an_edition_shows_get_their_bodies_sanitized(
    project: Project, samples: Path
) -> None:
    for name in ("harbour-tech.rss", "field-notes.atom", "allotment-diary.rss"):
        project.feed(f"samples/{name}", first_run_window="all")
    project.data["digest"]["max_items"] = 3
    services = pipeline.build(
        project.config(), engine=project.engine(), clock=lambda: NOW, readonly=True
    )
    try:
        selection = pipeline.gather(services, pipeline.NoProgress(), dry_run=True).selection
    finally:
        services.engine.dispose()
    assert len(selection.items) == 3 and len(selection.more) == 7
    for e in selection.items:
        assert e.content_html and not e.body_source
        assert "<script" not in e.content_html and "onerror" not in e.content_html
    assert all(not e.content_html for e in selection.more)


@pytest.mark.slow
def test_feeds_shows_every_feeds_facts_however_narrow(
    project: Project, httpserver: HTTPServer, cli_env: dict[str, str]
) -> None:
    long = "/a-feed-whose-address-goes-on-and-on-" + "x" * 80
    httpserver.expect_request(long).respond_with_data(
        "", status=429, headers={"Retry-After": "7200"}
    )
    httpserver.expect_request("/ok").respond_with_data(RSS)
    project.feed(httpserver.url_for(long), name="A feed with a rather long name indeed, yes")
    project.feed(httpserver.url_for("/ok"))
    project.subscriber("ada@example.org")
    project.write()
    env = {**cli_env, "COLUMNS": "50"}
    base = [sys.executable, "-m", "digest", "--config", str(project.path)]
    subprocess.run([*base, "run"], env=env, capture_output=True, check=False)
    table = subprocess.run([*base, "feeds"], env=env, capture_output=True, text=True, check=False)
    # too narrow for columns: each feed stacked over a few lines, nothing cut (issue 16)
    out = table.stdout
    assert "A feed with a rather long name indeed, yes" in out and "…" not in out
    assert "status: failing" in out and "status: ok" in out and "HTTP 429" in out
    assert out.count("last success:") == 2 and out.count("failures:") == 2
    rows = json.loads(
        subprocess.run(
            [*base, "feeds", "--json"], env=env, capture_output=True, text=True, check=False
        ).stdout
    )
    assert rows[0]["status"] == "failing" and rows[0]["retry_after"]
    assert "HTTP 429" in rows[0]["last_error"] and rows[1]["status"] == "ok"


def test_an_updated_entry_is_not_sent_again(project: Project, httpserver: HTTPServer) -> None:
    state = {"title": "First version"}

    def handler(request: Request) -> Response:
        return Response(rss([("post-1", "https://x.example/1", state["title"])]))

    httpserver.expect_request("/feed").respond_with_handler(handler)
    project.feed(httpserver.url_for("/feed"), first_run_window="all")
    project.subscriber("ada@example.org")
    assert run(project).editions[0].entries == 1
    state["title"] = "Second version, with a correction"
    again = run(project, NOW + timedelta(hours=1))
    assert again.editions == () and again.feeds[0].status is FetchStatus.OK


def test_the_run_that_pauses_a_feed_says_so(project: Project, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/bad").respond_with_data("", status=500)
    project.feed(httpserver.url_for("/bad"))
    project.data["fetch"] = {"pause_after": 2}
    project.subscriber("ada@example.org")
    first = run(project).feeds[0].error or ""
    assert "HTTP 500" in first and "paused" not in first
    second = run(project, NOW + timedelta(hours=1)).feeds[0].error or ""
    assert "2 failures in a row: paused" in second and "digest feeds --resume" in second


def test_a_feed_that_makes_the_parser_crawl_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest_module.parse_new

    def crawling(body: bytes, url: str, *rest: object) -> Fresh:
        if b"CRAWL" in body:
            while True:  # what a pathological document does to a parser, forever
                sum(range(1000))
        return real(body, url, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_module, "START_METHOD", "fork")
    monkeypatch.setattr(ingest_module, "parse_new", crawling)  # inherited by the forked workers
    slow = RSS.replace(b"<channel>", b"<channel><!-- CRAWL -->")
    alone = digest_feed(fetched(slow), NOW, 300, limits=ParseLimits(max_seconds=0.2))
    assert alone.error and "more than 0.2s of CPU time (fetch.parse_timeout)" in alone.error.message
    sources = local_feeds(tmp_path, {2: slow})
    results = ingest(sources, {}, FetchSettings(parse_timeout=0.3), NOW, 300, workers=2)
    assert [r.status for r in results].count(FetchStatus.OK) == 8
    assert results[2].error and "fetch.parse_timeout" in results[2].error.message


def die() -> None:
    os._exit(1)


def test_without_parser_processes_feeds_are_parsed_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "START_METHOD", "fork")
    monkeypatch.setattr(ingest_module, "_ready", die)  # the workers die as they start
    sources = local_feeds(tmp_path)
    results = ingest(sources, {}, FetchSettings(), NOW, 300, workers=2)
    assert all(r.status is FetchStatus.OK and len(r.entries) == 4 for r in results)


def test_with_other_threads_running_workers_come_from_a_fork_server(tmp_path: Path) -> None:
    """``digest serve`` has threads (scheduler, web app): its parser processes must not
    be forked from it. They come from a fork server, and parse as well."""
    script = (
        "import sqlalchemy as sa\n"
        "from digest.state import lease\n"
        "from digest.state.db import schema\n"
        "from digest.ingest.feeds import start_method\n"
        "print(start_method())\n"
        f"engine = sa.create_engine('sqlite:///{tmp_path / 'lease.db'}')\n"
        "schema.metadata.create_all(engine)\n"
        "with lease.held(engine):\n"
        "    print(start_method())\n"  # the lease keeper counts, unless named quiet:
        "    print(start_method([lease.THREAD_NAME]))\n"  # as the pipeline does
    )
    alone = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    # `digest run`: one thread, then the lease keeper beside it: fork is safe and fast
    assert alone.stdout.split() == ["fork", "forkserver", "fork"]
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert ingest_module.start_method() == "forkserver"
        sources = local_feeds(tmp_path)
        results = ingest(sources, {}, FetchSettings(), NOW, 300, workers=2)
    finally:
        stop.set()
        other.join()
    assert all(r.status is FetchStatus.OK and len(r.entries) == 4 for r in results)
