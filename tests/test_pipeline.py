"""Whole runs, in-process, on real SQLite, real files and a real local HTTP server."""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest import pipeline
from digest.model import EditionStatus, Entry, FeedSource, FetchStatus, Selection
from digest.state import health
from digest.state.db import schema

from .helpers import NOW, SAMPLES, Project, invoke


def run(project: Project, now: datetime = NOW) -> pipeline.RunReport:
    return project.run(now)


def messages(project: Project) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in project.outbox()
    ]


def text_of(msg: email.message.EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def rss(items: list[tuple[str, str, str]]) -> str:
    body = "".join(
        f"<item><title>{t}</title><link>https://x.example/{g}</link><guid>{g}</guid>"
        f"<pubDate>{d}</pubDate><description>About {t}</description></item>"
        for g, t, d in items
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>X</title>{body}</channel></rss>'
    )


@pytest.fixture
def sampled(project: Project, samples: Path) -> Project:
    for name in ("harbour-tech.rss", "field-notes.atom", "allotment-diary.rss"):
        project.feed(f"samples/{name}", first_run_window="all")
    project.subscriber("ada@example.org", "Ada")
    project.subscriber("grace@example.org")
    return project


def test_first_run_then_nothing_then_exactly_the_new_entry(sampled: Project, samples: Path) -> None:
    report = run(sampled)
    (edition,) = report.editions
    assert (edition.id, edition.entries, edition.recipients_delivered) == (1, 10, 2)
    assert edition.status is EditionStatus.DONE and report.ok and report.skipped is None
    assert [f.status for f in report.feeds] == [FetchStatus.OK] * 3
    ada = [m for m in messages(sampled) if "ada@" in m["To"]][0]
    assert "Why our build went from 9 minutes to 70 seconds" in text_of(ada)

    again = run(sampled, NOW + timedelta(hours=1))
    assert again.editions == () and again.skipped == "nothing new since the last edition"
    assert len(sampled.outbox()) == 2

    feed = samples / "harbour-tech.rss"
    feed.write_text(
        feed.read_text().replace(
            "<item>",
            """<item>
      <title>A brand new post</title><link>https://harbour-tech.example/new/</link>
      <guid isPermaLink="false">harbour-tech-new</guid>
      <pubDate>Sat, 28 Nov 2026 08:00:00 +0000</pubDate>
      <description>Fresh.</description></item><item>""",
            1,
        )
    )
    third = run(sampled, NOW + timedelta(hours=2))
    (edition,) = third.editions
    assert edition.id == 2 and edition.entries == 1
    new = [p for p in sampled.outbox() if p.name.startswith("00002-")]
    assert len(new) == 2
    body = text_of(email.message_from_bytes(new[0].read_bytes(), policy=email.policy.default))  # type: ignore[arg-type]
    assert "A brand new post" in body and "Why our build" not in body


def test_first_run_window_guards_new_feeds(project: Project, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        rss(
            [
                ("today", "Today's news", "Sat, 28 Nov 2026 05:00:00 +0000"),
                ("lastweek", "Old news", "Sat, 21 Nov 2026 05:00:00 +0000"),
            ]
        )
    )
    project.feed(httpserver.url_for("/feed"))
    project.subscriber("ada@example.org")
    (edition,) = run(project).editions
    assert edition.entries == 1
    assert "Today's news" in text_of(messages(project)[0])
    assert "Old news" not in text_of(messages(project)[0])
    # the old entry is remembered as back catalogue: never new later either
    assert run(project, NOW + timedelta(days=1)).skipped


def test_a_broken_feed_never_stops_the_digest(
    project: Project, httpserver: HTTPServer, samples: Path
) -> None:
    httpserver.expect_request("/500").respond_with_data("oops", status=500)
    httpserver.expect_request("/html").respond_with_data(
        "<!DOCTYPE html><html><body>Home page</body></html>", content_type="text/html"
    )
    project.feed(httpserver.url_for("/500"))
    project.feed(httpserver.url_for("/html"))
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.feed("samples/missing.rss")
    project.subscriber("ada@example.org")
    report = run(project)
    assert [f.status for f in report.feeds] == [
        FetchStatus.FAILED,
        FetchStatus.FAILED,
        FetchStatus.OK,
        FetchStatus.FAILED,
    ]
    errors = [f.error or "" for f in report.feeds]
    assert "HTTP 500" in errors[0]
    assert "HTML page" in errors[1]
    assert "no such file" in errors[3]
    assert report.editions[0].entries == 4 and report.ok


def test_dry_run_sends_and_records_nothing(sampled: Project) -> None:
    services = pipeline.build(
        sampled.config(), engine=sampled.engine(), clock=lambda: NOW, readonly=True
    )
    report = pipeline.dry_run(services)
    assert report.dry_run and report.editions[0].entries == 10
    assert report.editions[0].recipients == 2
    assert sampled.outbox() == []
    with services.engine.connect() as conn:
        for table in (
            schema.editions,
            schema.entries,
            schema.feeds,
            schema.subscribers,
            schema.meta,
        ):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    # and a real run afterwards still sees everything as new
    assert run(sampled).editions[0].entries == 10


def test_skip_if_empty_false_sends_a_nothing_new_edition(sampled: Project) -> None:
    run(sampled)
    sampled.data["digest"]["skip_if_empty"] = False
    report = run(sampled, NOW + timedelta(hours=1))
    assert report.editions[0].entries == 0 and report.skipped is None
    latest = [p for p in sampled.outbox() if p.name.startswith("00002-")]
    assert "Nothing new" in text_of(
        email.message_from_bytes(latest[0].read_bytes(), policy=email.policy.default)
    )  # type: ignore[arg-type]


def test_no_subscribers_sends_nothing_and_keeps_entries_new(project: Project) -> None:
    project.feed(str(SAMPLES / "harbour-tech.rss"), first_run_window="all")
    report = run(project)
    assert report.editions == () and report.skipped and "no active subscribers" in report.skipped
    project.subscriber("ada@example.org")
    assert run(project).editions[0].entries == 4


@pytest.mark.parametrize(
    ("empty", "skip_if_empty", "recipients", "why"),
    [
        (True, True, 5, pipeline.NOTHING_NEW),
        (True, True, 0, pipeline.NOTHING_NEW),  # nothing new is said first
        (True, False, 5, None),  # a "nothing new" edition, as asked
        (True, False, 0, pipeline.NOBODY),
        (False, True, 0, pipeline.NOBODY),
        (False, True, 1, None),
    ],
)
def test_why_a_run_sends_nothing_is_decided_once_for_runs_and_dry_runs(
    empty: bool, skip_if_empty: bool, recipients: int, why: str | None
) -> None:
    selection = Selection(items=(), more=(), baseline=())
    if not empty:
        selection = Selection(items=(entry_of("https://example.org/feed"),), more=(), baseline=())
    assert pipeline.nothing_to_send(selection, skip_if_empty, recipients) == why


def test_a_run_reads_its_settings_not_the_config(sampled: Project) -> None:
    """Everything a run takes of the config is in ``services.run``: changed there, the
    run follows, whatever the config says."""
    services = pipeline.build(sampled.config(), engine=sampled.engine(), clock=lambda: NOW)
    assert not hasattr(services, "config")
    assert len(services.run.sources) == 3 and len(services.run.listed) == 2
    one = replace(services.run, sources=services.run.sources[:1], listed=())
    report = pipeline.run(replace(services, run=one))
    assert [f.url for f in report.feeds] == [one.sources[0].url]
    assert report.skipped == pipeline.NOBODY  # the config's two subscribers were not listed


def test_links_in_messages_are_distinct_signed_and_under_base_url(sampled: Project) -> None:
    run(sampled)
    links = set()
    for msg in messages(sampled):
        link = msg["List-Unsubscribe"].strip().strip("<>")
        assert re.fullmatch(r"https://digest\.example\.org/unsubscribe/[0-9a-z]+\.[\w-]+", link)
        assert link in text_of(msg)
        assert "https://digest.example.org/archive/1" in text_of(msg)
        links.add(link)
    assert len(links) == 2


def test_a_move_is_adopted_only_once_it_has_held_for_a_day(
    project: Project, httpserver: HTTPServer
) -> None:
    target = {"path": "/new"}

    def old(request: Request) -> Response:
        if target["path"] is None:
            return Response(rss([("a", "A post", "Sat, 28 Nov 2026 05:00:00 +0000")]))
        return Response("", 308, {"Location": target["path"]})

    httpserver.expect_request("/old").respond_with_handler(old)
    for path in ("/new", "/other"):
        httpserver.expect_request(path).respond_with_data(
            rss([("a", "A post", "Sat, 28 Nov 2026 05:00:00 +0000")])
        )
    project.feed(httpserver.url_for("/old"))
    project.subscriber("ada@example.org")
    new = httpserver.url_for("/new")

    def pending(at: datetime) -> tuple[str | None, str | None]:
        report = run(project, at)
        assert report.feeds[0].status is not FetchStatus.FAILED
        with project.engine().connect() as conn:
            state = health.states(conn, [project.data["feeds"][0]["url"]], create=False)
        (s,) = state.values()
        return s.pending_move, s.validators.moved_to

    assert pending(NOW) == (new, None)
    assert pending(NOW + timedelta(hours=23, minutes=59)) == (new, None)  # not a day yet
    target["path"] = "/other"  # another answer: the clock starts again
    assert pending(NOW + timedelta(hours=24)) == (httpserver.url_for("/other"), None)
    target["path"] = None  # answered in place: not moving after all
    assert pending(NOW + timedelta(hours=30)) == (None, None)
    target["path"] = "/new"
    assert pending(NOW + timedelta(hours=40)) == (new, None)
    assert pending(NOW + timedelta(hours=64)) == (None, new)  # held 24 hours: adopted
    httpserver.clear_log()
    assert pending(NOW + timedelta(hours=65)) == (None, new)
    assert [r.path for r, _ in httpserver.log] == ["/new"]  # read in its new place


def test_feeds_shows_a_pending_move(
    project: Project, httpserver: HTTPServer, cli_env: dict[str, str]
) -> None:
    httpserver.expect_request("/old").respond_with_data("", 301, {"Location": "/new"})
    httpserver.expect_request("/new").respond_with_data(rss([]))
    project.feed(httpserver.url_for("/old"), name="Moving")
    project.subscriber("ada@example.org")
    project.write()
    run(project, datetime.now(UTC))
    base = ["--config", str(project.path), "feeds"]
    table = invoke(*base, env=cli_env)
    assert table.returncode == 0, table.stderr  # as check=True did
    assert f"Moving redirects permanently to {httpserver.url_for('/new')}" in table.stdout
    (row,) = json.loads(invoke(*base, "--json", env=cli_env).stdout)
    assert row["pending_move"] == httpserver.url_for("/new") and row["moved_to"] is None
    assert row["pending_move_since"]


@pytest.mark.parametrize(
    ("changes", "status", "held"),
    [
        ({"last_fetched_at": None}, "never read", None),
        ({}, "ok", None),
        ({"consecutive_failures": 2}, "failing", None),
        (
            {"consecutive_failures": 2, "retry_after": NOW + timedelta(hours=1)},
            "failing",
            "the server asked us to wait until 2026-11-28 08:00 UTC",
        ),
        ({"consecutive_failures": 2, "retry_after": NOW}, "failing", None),  # the time has come
        (
            {"paused_at": NOW, "pause_reason": "410 Gone", "consecutive_failures": 1},
            "paused",
            "paused: 410 Gone (`digest feeds --resume` to read it again)",
        ),
    ],
)
def test_a_feeds_status_and_whether_a_run_reads_it_are_the_states_to_say(
    changes: dict[str, object], status: str, held: str | None
) -> None:
    state = replace(feed_state("https://feeds.example/feed"), **changes)  # type: ignore[arg-type]
    assert (state.status, state.held(NOW)) == (status, held)


def feed_state(url: str) -> health.FeedState:
    return health.FeedState(
        id=1,
        url=url,
        validators=health.Validators(),
        title=None,
        first_read_at=NOW,
        last_fetched_at=NOW,
        last_success_at=NOW,
        last_error_at=None,
        last_error=None,
        consecutive_failures=0,
        paused_at=None,
        pause_reason=None,
        retry_after=None,
    )


def entry_of(url: str) -> Entry:
    return Entry(
        source=FeedSource(url),
        source_title=url,
        identity=f"{url}#1",
        title="One",
        link=f"{url}/1",
        canonical_link=f"{url}/1",
        summary="",
        content_html="",
        published=NOW,
        dated=True,
    )


def test_a_move_into_the_network_is_never_adopted() -> None:
    from digest.model import FeedSource, Fetched

    source = FeedSource("https://feeds.example/feed")
    state = health.FeedState(
        id=1,
        url=source.url,
        validators=health.Validators(),
        title=None,
        first_read_at=NOW,
        last_fetched_at=NOW,
        last_success_at=NOW,
        last_error_at=None,
        last_error=None,
        consecutive_failures=0,
        paused_at=None,
        pause_reason=None,
        retry_after=None,
    )
    for inside in ("http://127.0.0.1/feed", "http://localhost/x", "http://[fe80::1]/"):
        seen = Fetched(source, FetchStatus.OK, moved_to=inside)
        assert health.move(state, seen, NOW) == health.Move(None, None)
    outside = Fetched(source, FetchStatus.OK, moved_to="https://elsewhere.example/feed")
    assert health.move(state, outside, NOW) == health.Move(outside.moved_to, NOW)
    held = replace(state, pending_move=outside.moved_to, pending_since=NOW)
    later = NOW + health.ADOPT_AFTER
    assert health.move(held, outside, later).adopt == outside.moved_to
    failed = Fetched(source, FetchStatus.FAILED)  # no answer: neither for nor against
    assert health.move(held, failed, later) == health.Move(outside.moved_to, NOW)


def test_a_feeds_title_is_kept_as_plain_text(
    project: Project, httpserver: HTTPServer, cli_env: dict[str, str]
) -> None:
    """A feed's title is kept as plain text of bounded length, and shown as written: it
    is no console markup (rich would choke on "[/]")."""
    title = "<b>Bold</b> [red]markup[/] \x00" + "long " * 200
    state = {"up": True}

    def handler(request: Request) -> Response:
        if not state["up"]:
            return Response("down", 500)
        return Response(
            f'<?xml version="1.0"?><rss version="2.0"><channel><title><![CDATA[{title}]]>'
            "</title></channel></rss>"
        )

    httpserver.expect_request("/t").respond_with_handler(handler)
    project.feed(httpserver.url_for("/t"))
    project.subscriber("ada@example.org")
    name = run(project).feeds[0].name
    assert name.startswith("Bold [red]markup[/]") and len(name) <= 300 and "<b>" not in name
    project.write()
    state["up"] = False
    base = ["--config", str(project.path)]
    ran = invoke(*base, "run", env=cli_env)
    assert ran.returncode == 0 and "✗ Bold [red]markup[/]" in ran.stdout, ran.stderr
    table = invoke(*base, "feeds", env=cli_env)
    assert table.returncode == 0 and "[red]markup" in table.stdout, table.stderr


def test_gone_feed_is_paused(project: Project, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/gone").respond_with_data("", status=410)
    project.feed(httpserver.url_for("/gone"))
    project.subscriber("ada@example.org")
    assert "410" in (run(project).feeds[0].error or "")
    second = run(project, NOW + timedelta(hours=1))
    assert second.feeds[0].status is FetchStatus.SKIPPED
    assert "paused" in (second.feeds[0].error or "")
    assert len(httpserver.log) == 1


def test_feed_paused_after_repeated_failures(project: Project, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/bad").respond_with_data("", status=500)
    project.feed(httpserver.url_for("/bad"))
    project.data["fetch"] = {"pause_after": 2}
    project.subscriber("ada@example.org")
    run(project)
    run(project, NOW + timedelta(hours=1))
    assert run(project, NOW + timedelta(hours=2)).feeds[0].status is FetchStatus.SKIPPED
    assert len(httpserver.log) == 2


def test_copies_of_the_samples_work_from_anywhere(tmp_path: Path) -> None:
    shutil.copytree(SAMPLES, tmp_path / "s")
    project = Project(tmp_path)
    project.feed(str(tmp_path / "s" / "field-notes.atom"), first_run_window="all")
    project.subscriber("ada@example.org")
    assert run(project).editions[0].entries == 3


def test_fatal_delivery_error_stops_then_next_run_resumes(
    sampled: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .smtp_server import SmtpServer

    folder = tmp_path / "smtp"
    folder.mkdir()
    with SmtpServer(folder, security="starttls", user=("digest", "right")) as server:
        sampled.data["delivery"] = {
            "backend": "smtp",
            "retry_backoff": "1ms",
            "smtp": {
                "host": "127.0.0.1",
                "port": server.port,
                "security": "starttls",
                "username": "digest",
                "password_env": "TEST_SMTP_PW",
                "ca_file": str(server.cert),
            },
        }
        monkeypatch.setenv("TEST_SMTP_PW", "wrong")
        first = run(sampled)
        (edition,) = first.editions
        assert edition.status is EditionStatus.SENDING and not first.ok
        assert edition.recipients_failed == 2 and "refused the login" in edition.problems[0]
        second = run(sampled, NOW + timedelta(minutes=5))  # still wrong: no new edition piles up
        assert [e.id for e in second.editions] == [1] and "still unfinished" in (
            second.skipped or ""
        )
        monkeypatch.setenv("TEST_SMTP_PW", "right")
        third = run(sampled, NOW + timedelta(minutes=10))
        assert [(e.id, e.resumed, e.recipients_delivered) for e in third.editions] == [(1, True, 2)]
        assert len(server.received) == 2


def test_an_updated_entry_is_sent_again_only_where_the_feed_asks(
    project: Project, samples: Path
) -> None:
    """resend_updated: a changed entry goes out again, marked "Updated", once; the
    same change in a feed without the option is not news."""
    project.feed("samples/harbour-tech.rss", first_run_window="all", resend_updated=True)
    project.feed("samples/field-notes.atom", first_run_window="all")
    project.subscriber("ada@example.org")
    assert len(run(project).editions) == 1

    build = samples / "harbour-tech.rss"
    build.write_text(build.read_text().replace("two\n      afternoons", "three afternoons"))
    eel = samples / "field-notes.atom"
    eel.write_text(eel.read_text().replace("thirty years", "forty years"))
    second = run(project, NOW + timedelta(hours=1))
    (edition,) = second.editions
    assert edition.entries == 1
    (new,) = [p for p in project.outbox() if p.name.startswith("00002-")]
    text = text_of(email.message_from_bytes(new.read_bytes(), policy=email.policy.default))  # type: ignore[arg-type]
    assert "Why our build went from 9 minutes to 70 seconds" in text
    assert "Updated · Harbour Tech" in text and "European eel" not in text

    third = run(project, NOW + timedelta(hours=2))  # nothing changed since: nothing to send
    assert third.editions == () and third.skipped == "nothing new since the last edition"


def test_resend_updated_turned_on_later_sees_the_next_change(
    project: Project, samples: Path
) -> None:
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.subscriber("ada@example.org")
    assert len(run(project).editions) == 1
    project.data["feeds"][0]["resend_updated"] = True
    # the entries went out without fingerprints: this run records the current ones
    assert run(project, NOW + timedelta(hours=1)).editions == ()
    build = samples / "harbour-tech.rss"
    build.write_text(build.read_text().replace("two\n      afternoons", "three afternoons"))
    (edition,) = run(project, NOW + timedelta(hours=2)).editions
    assert edition.entries == 1
