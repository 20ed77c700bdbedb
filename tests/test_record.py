"""The delivery ledger and the dispatcher, on a real SQLite database."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from digest.deliver.base import Sent
from digest.deliver.dispatch import DispatchSettings, dispatch
from digest.errors import LeaseError, PermanentDeliveryError, TransientDeliveryError
from digest.ingest.links import canonical
from digest.model import (
    Batch,
    BatchStatus,
    Composed,
    EditionStatus,
    Entry,
    FeedEntries,
    FeedSource,
)
from digest.pick import pick
from digest.state import lease, record
from digest.state.db import schema

from .helpers import NOW, FakeTime


def populate(engine: sa.Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(schema.subscribers),
            [
                {
                    "email": f"u{i}@example.org",
                    "email_key": f"u{i}@example.org",
                    "status": "active",
                    "source": "cli",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for i in range(n)
            ],
        )
        conn.execute(
            sa.insert(schema.subscribers).values(
                email="gone@example.org",
                email_key="gone@example.org",
                status="unsubscribed",
                source="cli",
                created_at=NOW,
                updated_at=NOW,
            )
        )


def new_edition(engine: sa.Engine, batch_size: int) -> Composed:
    with engine.begin() as conn:
        edition_id = record.begin_edition(conn, NOW, "n")
        composed = Composed(edition_id, "Subject", "<p>x</p>", "x", NOW, "n")
        record.save_content(conn, composed, 1, 0)
        record.freeze_recipients(conn, edition_id, batch_size, NOW)
    return composed


def test_freeze_makes_batches_of_the_active_list(engine: sa.Engine) -> None:
    populate(engine, 2345)
    composed = new_edition(engine, 1000)
    with engine.connect() as conn:
        assert record.pending_batches(conn, composed.edition_id) == [0, 1, 2]
        batches = [record.load_batch(conn, composed.edition_id, n) for n in (0, 1, 2)]
        t = record.tally(conn, composed.edition_id)
    assert [len(b.recipients) for b in batches] == [1000, 1000, 345]
    emails = [r.email for b in batches for r in b.recipients]
    assert len(set(emails)) == 2345 and "gone@example.org" not in emails
    assert t.recipients == 2345 and t.pending == 2345


class ScriptedBackend:
    """A backend whose sends follow a script: for testing the dispatcher's decisions."""

    name = "scripted"
    batch_size = 1

    def __init__(self, script: Callable[[Batch, int], Sent]) -> None:
        self.script = script
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def open(self, composed: Composed) -> ScriptedBackend:
        return self

    def prepare(self, batch: Batch) -> Batch:
        return batch

    def deliver(self, batch: Batch) -> Sent:
        with self.lock:
            self.calls.append(batch.number)
            attempt = self.calls.count(batch.number)
        return self.script(batch, attempt)

    def close(self) -> None:
        pass


def settings(time: FakeTime | None = None, **kw: object) -> DispatchSettings:
    time = time or FakeTime()
    return DispatchSettings(
        retries=2,
        backoff=1.0,
        sleep=time.sleep,
        monotonic=time.monotonic,
        clock=lambda: NOW,
        **kw,  # type: ignore[arg-type]
    )


def test_all_sent(engine: sa.Engine) -> None:
    populate(engine, 5)
    composed = new_edition(engine, 1)
    backend = ScriptedBackend(lambda b, a: Sent(f"id-{b.number}"))
    assert dispatch(engine, backend, composed, settings(workers=3)).batches == 5
    with engine.begin() as conn:
        t = record.settle(conn, composed.edition_id, NOW)
    assert (t.delivered, t.failed, t.unknown, t.status) == (5, 0, 0, EditionStatus.DONE)
    assert sorted(backend.calls) == [0, 1, 2, 3, 4]


def test_transient_errors_are_retried_then_given_up(engine: sa.Engine) -> None:
    populate(engine, 3)
    composed = new_edition(engine, 1)

    def script(batch: Batch, attempt: int) -> Sent:
        if batch.number == 0 and attempt == 1:
            raise TransientDeliveryError("503", retry_after=7.0)
        if batch.number == 1:
            raise TransientDeliveryError("timed out")
        return Sent("ok")

    time = FakeTime()
    sleeps = time.sleeps
    dispatch(engine, ScriptedBackend(script), composed, settings(time))
    with engine.begin() as conn:
        t = record.settle(conn, composed.edition_id, NOW)
        problems = record.problems(conn, composed.edition_id)
    assert (t.delivered, t.failed) == (2, 1)
    assert 7.0 in sleeps  # Retry-After wins over the backoff
    assert len(sleeps) == 3  # one for batch 0, two for batch 1
    assert "gave up after 3 attempts" in problems[0]


def test_fatal_error_stops_the_edition_and_leaves_the_rest_pending(engine: sa.Engine) -> None:
    populate(engine, 4)
    composed = new_edition(engine, 1)

    def script(batch: Batch, attempt: int) -> Sent:
        if batch.number == 1:
            raise PermanentDeliveryError("401 bad key", fatal=True)
        return Sent("ok")

    outcome = dispatch(engine, ScriptedBackend(script), composed, settings())
    assert outcome.stopped and "401" in outcome.stopped
    with engine.begin() as conn:
        t = record.settle(conn, composed.edition_id, NOW)
        assert record.pending_batches(conn, composed.edition_id) == [1, 2, 3]
    assert t.status == EditionStatus.SENDING and t.delivered == 1 and t.pending == 3


def test_permanent_failure_of_one_and_rejected_recipients(engine: sa.Engine) -> None:
    populate(engine, 4)
    composed = new_edition(engine, 2)

    def script(batch: Batch, attempt: int) -> Sent:
        if batch.number == 0:
            return Sent("ok", rejected={batch.recipients[0].subscriber_id: "550 no such user"})
        raise PermanentDeliveryError("400 bad request")

    dispatch(engine, ScriptedBackend(script), composed, settings())
    with engine.begin() as conn:
        t = record.settle(conn, composed.edition_id, NOW)
    assert (t.delivered, t.failed, t.status) == (1, 3, EditionStatus.DONE)


def test_crash_recovery_marks_sending_unknown_and_never_resends(engine: sa.Engine) -> None:
    populate(engine, 3)
    composed = new_edition(engine, 1)
    with engine.begin() as conn:
        record.mark(conn, composed.edition_id, 0, BatchStatus.SENT, NOW)
        record.mark(conn, composed.edition_id, 1, BatchStatus.SENDING, NOW)  # then: crash
    with engine.begin() as conn:
        assert record.unfinished(conn) == [composed.edition_id]
        assert record.recover(conn, composed.edition_id, NOW) == 1
    backend = ScriptedBackend(lambda b, a: Sent("ok"))
    dispatch(engine, backend, composed, settings())
    assert backend.calls == [2]
    with engine.begin() as conn:
        t = record.settle(conn, composed.edition_id, NOW)
        assert record.unfinished(conn) == []
    assert (t.delivered, t.unknown, t.status) == (2, 1, EditionStatus.DONE)


def test_abandoned_edition_gives_its_entries_back(engine: sa.Engine) -> None:
    populate(engine, 1)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(schema.feeds).values(
                url="https://a.example/f", etag="x", consecutive_failures=0
            )
        )
    source = FeedSource("https://a.example/f")
    entry = Entry(
        source=source,
        source_title="A",
        identity="e1",
        title="T",
        link="https://a.example/1",
        canonical_link="https://a.example/1",
        summary="",
        content_html="",
        published=NOW,
        dated=True,
    )
    composed = new_edition(engine, 1)
    with engine.begin() as conn:
        record.remember(conn, [entry], {source.url: 1}, composed.edition_id, NOW)
        assert record.known(conn, [entry], {source.url: 1}).identities
    dispatch(
        engine,
        ScriptedBackend(lambda b, a: (_ for _ in ()).throw(PermanentDeliveryError("550 no"))),
        composed,
        settings(),
    )
    with engine.begin() as conn:
        t = record.settle(conn, composed.edition_id, NOW)
        assert t.status == EditionStatus.ABANDONED
        assert not record.known(conn, [entry], {source.url: 1}).identities
        assert conn.execute(sa.select(schema.feeds.c.etag)).scalar_one() is None


def test_requeue_failed(engine: sa.Engine) -> None:
    populate(engine, 2)
    composed = new_edition(engine, 1)
    dispatch(
        engine,
        ScriptedBackend(lambda b, a: (_ for _ in ()).throw(TransientDeliveryError("down"))),
        composed,
        settings(),
    )
    with engine.begin() as conn:
        record.settle(conn, composed.edition_id, NOW)
        assert record.requeue_failed(conn, composed.edition_id, NOW) == 2
        assert record.unfinished(conn) == [composed.edition_id]


def test_lease_excludes_a_second_run_and_expires(engine: sa.Engine) -> None:
    ttl = timedelta(minutes=2)
    assert lease.acquire(engine, "send", "first", ttl, NOW) is None
    assert lease.acquire(engine, "send", "second", ttl, NOW + timedelta(seconds=30)) is not None
    assert lease.renew(engine, "send", "first", ttl, NOW + timedelta(minutes=1))
    assert lease.acquire(engine, "send", "second", ttl, NOW + timedelta(minutes=2)) is not None
    # the first holder was killed: its lease runs out
    assert lease.acquire(engine, "send", "second", ttl, NOW + timedelta(minutes=4)) is None
    assert not lease.renew(engine, "send", "first", ttl, NOW + timedelta(minutes=4))


def test_the_lease_outlives_a_database_that_fails_a_beat(engine: sa.Engine) -> None:
    """A renewal the database refuses (locked: digest's DatabaseFailed) is tried again
    at the next beat; the heartbeat does not die with it."""
    renewals: list[str] = []
    enough = threading.Event()

    def locked_once(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("UPDATE leases"):
            renewals.append(statement)
            if len(renewals) == 1:
                raise sqlite3.OperationalError("database is locked")
            if len(renewals) >= 3:
                enough.set()

    sa.event.listen(engine, "before_cursor_execute", locked_once)
    try:
        with lease.held(engine, ttl=timedelta(seconds=0.3)):
            assert enough.wait(60), f"{len(renewals)} renewal(s): the heartbeat stopped"
    finally:
        sa.event.remove(engine, "before_cursor_execute", locked_once)


def test_lease_context(engine: sa.Engine) -> None:
    with lease.held(engine):
        try:
            with lease.held(engine):
                raise AssertionError("two holders at once")
        except LeaseError as exc:
            assert "another digest run" in str(exc)
    with lease.held(engine):
        pass  # released on exit


def test_the_ledger_tells_a_pages_anchors_apart(engine: sa.Engine) -> None:
    """Against earlier editions: a comment of a page sent before does not hide the
    page's other comments (other guids), while the same link under a new guid (tracking
    parameters or not) is the story sent before."""
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.feeds).values(url="https://a.example/f"))
    source = FeedSource("https://a.example/f", first_run_window=None)

    def story(ident: str, link: str) -> Entry:
        return Entry(
            source=source,
            source_title="A",
            identity=ident,
            title=f"Comment {ident}",
            link=link,
            canonical_link=canonical(link),
            summary=f"Text {ident}",
            content_html="",
            published=NOW,
            dated=True,
        )

    page = "https://a.example/post"
    composed = new_edition(engine, 1)
    with engine.begin() as conn:
        sent = [story("c1", page + "#comment-1")]
        record.remember(conn, sent, {source.url: 1}, composed.edition_id, NOW)
    later = [
        story("c2", page + "#comment-2"),
        story("c1-new-guid", page + "?utm_source=rss#comment-1"),
        story("c3", page + "#comment-3"),
    ]
    with engine.begin() as conn:
        known = record.known(conn, later, {source.url: 1})
    assert known.canonical_links == {canonical(page + "#comment-1")}
    selection = pick([FeedEntries(source, tuple(later), first_run=False)], known, NOW, 10, 10)
    assert [e.identity for e in selection.items] == ["c2", "c3"]
    assert [e.identity for e in selection.baseline] == ["c1-new-guid"]
