"""Several instances share an edition's sending: batches are claimed in the database
(``record.claim``), what a gone instance leaves is swept (``record.sweep``), the edition
is settled once; and the proof: three ``digest serve`` processes on one PostgreSQL
database, one of them killed mid-edition."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from digest import pipeline, schedule
from digest.cli import main
from digest.model import BatchStatus, EditionStatus
from digest.scheduler import Outcome, Runner, Sending
from digest.services import Services
from digest.state import db, fleet, lease, record
from digest.state.db import schema

from .helpers import NOW, SAMPLES, Clock, Project
from .live import free_port
from .sendgrid_server import DEFAULT_API_KEY, SendGridServer
from .test_relays import Relays

B, E = schema.batches, schema.editions
KEY_ENV = "FLEET_TEST_SENDGRID_KEY"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """An engine on a new database with digest's schema: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres")
    engine = db.connect(url)
    yield engine
    engine.dispose()


def _edition(engine: sa.Engine, batches: dict[int, tuple[str, str | None]]) -> None:
    """Edition 1 with these batches: number → (status, claimed by), each of 10."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(E).values(
                id=1, created_at=NOW, status="sending", subject="s", html="", text="", nonce="n"
            )
        )
        conn.execute(
            sa.insert(B),
            [
                {
                    "edition_id": 1,
                    "number": n,
                    "size": 10,
                    "status": status,
                    "updated_at": NOW,
                    "claimed_by": holder,
                    "claim_expires": NOW + fleet.CLAIM_TTL if holder else None,
                }
                for n, (status, holder) in batches.items()
            ],
        )


def _batches(engine: sa.Engine) -> dict[int, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(B.c.number, B.c.status, B.c.claimed_by).order_by(B.c.number))
        return {int(n): (str(s), c) for n, s, c in rows}


def _gone_holder() -> str:
    """A holder name of this machine whose process has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return f"{socket.gethostname()}:{done.stdout.strip()}:0dead000"


ALIVE = f"{socket.gethostname()}:{os.getpid()}:a11ve000"
ELSEWHERE = "another-host:4242:e15e0000"  # on another machine: only its expiry tells


def test_claims_take_the_lowest_free_batches_and_never_one_held(any_engine: sa.Engine) -> None:
    _edition(any_engine, {n: ("pending", None) for n in range(6)} | {6: ("sent", None)})
    with any_engine.begin() as conn:
        assert record.claim(conn, 1, "a", 2, NOW) == [0, 1]
        assert record.claim(conn, 1, "b", 10, NOW) == [2, 3, 4, 5]
        assert record.claim(conn, 1, "c", 10, NOW) == []
        # a claim not renewed for CLAIM_TTL is free again
        later = NOW + fleet.CLAIM_TTL
        assert fleet.renew_claims(conn, "b", later - timedelta(seconds=1)) == 4
        assert record.claim(conn, 1, "c", 10, later) == [0, 1]
        # "a", whose claim lapsed, finds its batch taken: it must not send it
        assert not record.start(conn, 1, 0, "a", later)
        assert record.start(conn, 1, 0, "c", later)
        # a holder that stops gives back what it did not start
        assert record.give_back(conn, 1, "b") == 4
        assert record.claim(conn, 1, "c", 1, later) == [2]


def test_a_sweep_takes_only_what_a_gone_holder_left(any_engine: sa.Engine) -> None:
    gone = _gone_holder()
    _edition(
        any_engine,
        {
            0: ("sending", gone),  # its process is gone: unknown at once
            1: ("sending", ALIVE),  # in flight at a live instance: untouched
            2: ("sending", ELSEWHERE),  # another machine's, claim still fresh: untouched
            3: ("sending", None),  # caught sending before claims existed (0013)
            4: ("pending", gone),  # claimed, never started: free at once
            5: ("pending", ELSEWHERE),
        },
    )
    with any_engine.begin() as conn:
        assert record.sweep(conn, 1, NOW) == 20
    assert _batches(any_engine) == {
        0: ("unknown", gone),
        1: ("sending", ALIVE),
        2: ("sending", ELSEWHERE),
        3: ("unknown", None),
        4: ("pending", None),
        5: ("pending", ELSEWHERE),
    }
    later = NOW + fleet.CLAIM_TTL
    with any_engine.begin() as conn:  # the other machine stopped renewing: expired
        assert record.sweep(conn, 1, later, mine=ALIVE) == 10  # never the sweeper's own
        status = conn.execute(sa.select(B.c.status).where(B.c.number == 1)).scalar_one()
        assert status == "sending"
        assert record.sweep(conn, 1, later) == 10  # ALIVE's claim expired too
        assert record.claim(conn, 1, "me", 10, later) == [4, 5]
    statuses = {n: s for n, (s, _) in _batches(any_engine).items()}
    assert statuses == {0: "unknown", 1: "unknown", 2: "unknown", 3: "unknown", 4: "pending",
                        5: "pending"}  # fmt: skip
    with any_engine.connect() as conn:
        (detail,) = conn.execute(sa.select(B.c.detail).where(B.c.number == 2)).one()
    assert "may or may not have gone out" in detail


def test_settle_waits_for_every_batch_and_closes_once(any_engine: sa.Engine) -> None:
    _edition(any_engine, {0: ("sent", None), 1: ("sending", ALIVE)})
    with any_engine.begin() as conn:
        assert record.settle(conn, 1, NOW).status is EditionStatus.SENDING
        record.mark(conn, 1, 1, BatchStatus.SENT, NOW, holder=ALIVE)
        first = record.settle(conn, 1, NOW)
        again = record.settle(conn, 1, NOW + timedelta(hours=1))
        finished = conn.execute(sa.select(E.c.finished_at)).scalar_one()
    assert first.status is again.status is EditionStatus.DONE
    assert first.delivered == again.delivered == 20
    assert finished == NOW  # the second settle changed nothing
    with any_engine.connect() as conn:
        sent_by = conn.execute(sa.select(B.c.sent_by).where(B.c.number == 1)).scalar_one()
    assert sent_by == ALIVE


@pytest.mark.postgres
def test_workers_claiming_at_once_on_postgres_get_each_batch_once(fresh_postgres: str) -> None:
    engine = db.connect(fresh_postgres)
    try:
        _edition(engine, {n: ("pending", None) for n in range(300)})
        got: dict[str, list[int]] = {}
        start = threading.Barrier(6)

        def worker(name: str) -> None:
            start.wait()
            mine = got.setdefault(name, [])
            while True:
                with engine.begin() as conn:
                    numbers = record.claim(conn, 1, name, 7, NOW)
                if not numbers:
                    return
                mine.extend(numbers)

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = [n for numbers in got.values() for n in numbers]
        assert sorted(every) == list(range(300))  # each once, none left out
        assert sum(1 for numbers in got.values() if numbers) > 1  # they did share
    finally:
        engine.dispose()


def test_digest_work_refuses_sqlite(project: Project) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"))
    result = CliRunner().invoke(main, ["--config", str(project.write()), "work"])
    assert result.exit_code == 2
    assert "digest work shares the sending with other instances through PostgreSQL" in (
        result.output
    )
    assert "Traceback" not in result.output


# -- building once, sending everywhere ---------------------------------------------------------

SLOT = datetime(2027, 3, 15, 12, tzinfo=UTC)  # 07:00 in Chicago


@pytest.fixture
def builder(project: Project, samples: Path) -> Iterator[tuple[Runner, Sending, Clock]]:
    """A serve instance of a fleet: its scheduler only builds; its sending loop sends."""
    for name in ("harbour-tech.rss", "field-notes.atom"):
        project.feed(f"samples/{name}", first_run_window="all")
    for i in range(5):
        project.subscriber(f"reader{i}@example.org")
    project.data["schedule"] = {"cron": "0 7 * * *", "timezone": "America/Chicago"}
    clock = Clock(SLOT)
    services = pipeline.build(
        project.config(), engine=project.engine(), clock=clock, sleep=lambda s: None
    )
    sending = Sending(services, threading.Event())
    yield Runner(services, schedule.schedule_of(project.config()), sending=sending), sending, clock
    services.engine.dispose()


def _editions(engine: sa.Engine) -> list[tuple[int, str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(E.c.id, E.c.status, E.c.delivered))]  # type: ignore[misc]


def test_the_builder_builds_under_the_lease_and_the_sending_loop_sends(
    builder: tuple[Runner, Sending, Clock], project: Project
) -> None:
    runner, sending, _clock = builder
    assert runner.tick() is Outcome.RAN
    engine = runner.services.engine
    assert _editions(engine) == [(1, "sending", 0)] and project.outbox() == []
    assert sending._wake.is_set()  # the build wakes the loop at once
    with engine.connect() as conn:  # the lease is free again: others could build
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.leases)).scalar() == 0
    assert sending.once()  # claims and sends every batch, and settles the edition
    assert _editions(engine) == [(1, "done", 5)] and len(project.outbox()) == 5
    assert not sending.once()  # nothing left: it stands by
    with engine.connect() as conn:
        holders = set(conn.execute(sa.select(B.c.sent_by)).scalars())
    assert len(holders) == 1 and None not in holders


def test_a_round_with_nothing_to_claim_loads_no_content(
    builder: tuple[Runner, Sending, Clock], project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, sending, clock = builder
    assert runner.tick() is Outcome.RAN
    engine = runner.services.engine
    with engine.begin() as conn:  # another instance, alive elsewhere, holds every batch
        assert record.claim(conn, 1, "elsewhere:1:abc", 100, clock())
    loaded: list[int] = []
    load = record.load_composed
    monkeypatch.setattr(record, "load_composed", lambda c, e: loaded.append(e) or load(c, e))
    assert not sending.once() and loaded == [1]  # the first round takes the departed out
    assert not sending.once() and not sending.once() and loaded == [1]  # then: one probe
    assert _editions(engine) == [(1, "sending", 0)]
    clock.now += fleet.CLAIM_TTL  # the other instance went quiet: its claims lapse
    assert sending.once() and loaded == [1, 1]
    assert _editions(engine) == [(1, "done", 5)] and len(project.outbox()) == 5


def test_before_a_new_edition_the_builder_waits_for_the_fleet_to_finish_the_last(
    builder: tuple[Runner, Sending, Clock],
) -> None:
    runner, sending, _clock = builder
    assert runner.tick() is Outcome.RAN  # edition 1, not sent yet
    sleeps: list[float] = []

    def looking(others_send_after: int | None) -> Services:
        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == others_send_after:
                sending.once()  # the other instances, meanwhile

        return replace(runner.services, dispatch=replace(runner.services.dispatch, sleep=sleep))

    # nobody sends (a fatal error, say): it stops waiting when nothing moved for a while
    stuck = pipeline.sent_by_others(looking(None), 1)
    assert stuck.status is EditionStatus.SENDING and len(sleeps) == pipeline.FLEET_PATIENCE + 1
    sleeps.clear()
    done = pipeline.sent_by_others(looking(3), 1)  # the others send it: settled, reported
    assert (done.status, done.recipients_delivered, len(sleeps)) == (EditionStatus.DONE, 5, 3)


def test_a_lost_builder_is_replaced_within_the_lease_and_the_slot_is_built_once(
    builder: tuple[Runner, Sending, Clock],
) -> None:
    runner, sending, clock = builder
    engine = runner.services.engine
    # the instance that would build is on a host that was lost mid-build: its lease
    # stands until it expires, then another instance builds the slot
    assert lease.acquire(engine, "send", ELSEWHERE, lease.DEFAULT_TTL, SLOT) is None
    assert runner.tick() is Outcome.BUSY and _editions(engine) == []
    clock.now = SLOT + lease.DEFAULT_TTL  # the Scheduler's retries come every BUSY_RETRY
    assert runner.tick() is Outcome.RAN
    assert sending.once() and _editions(engine) == [(1, "done", 5)]
    # a builder of this machine that died holds its lease no longer than its process
    assert lease.acquire(engine, "send", _gone_holder(), lease.DEFAULT_TTL, clock()) is None
    clock.now += timedelta(minutes=5)
    assert runner.run_due() is None  # took the lease (no LeaseError); the slot was handled
    assert runner.tick() is Outcome.SKIPPED and _editions(engine) == [(1, "done", 5)]


@pytest.mark.postgres
def test_digest_work_sends_an_edition_built_elsewhere_and_stops_cleanly(
    fresh_postgres: str, project: Project, cli_env: dict[str, str]
) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all")
    for i in range(7):
        project.subscriber(f"reader{i}@example.org")
    project.data["storage"] = {"url": fresh_postgres}
    project.write()
    services = pipeline.build(project.config(), engine=project.engine())
    (built,) = pipeline.run(services, send=False).editions  # as a fleet's builder does
    assert (built.status, built.recipients_delivered, project.outbox()) == ("sending", 0, [])
    log = project.folder / "work.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(project.path), "work"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env,
        )
        try:
            for _ in range(600):
                if _editions(services.engine)[0][1] != "sending" or worker.poll() is not None:
                    break
                time.sleep(0.1)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0, log.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
    text = log.read_text()
    assert _editions(services.engine) == [(1, "done", 7)] and len(project.outbox()) == 7
    assert f"digest work: instance {socket.gethostname()}:{worker.pid}:" in text
    assert "edition finished: edition 1: 7/7 delivered, done" in text
    assert "SIGTERM: stopping after the batch in flight" in text and "Traceback" not in text
    with services.engine.connect() as conn:
        senders = set(conn.execute(sa.select(B.c.sent_by)).scalars())
        (row,) = fleet.seen(conn, datetime.now(UTC))
    assert {s.split(":")[1] for s in senders} == {str(worker.pid)}
    assert (row.role, row.state, row.sent) == ("work", "stopped", 7)


# -- the proof: three `digest serve`, one killed mid-edition -----------------------------------

SUBSCRIBERS = 20_000
BATCH = 100  # 200 batches


class Fleet:
    """``digest serve`` processes on one config, each on its own port, each its own log."""

    def __init__(self, project: Project, env: dict[str, str]) -> None:
        self.project = project
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        log = (self.project.folder / f"serve-{n}.log").open("wb")
        args = ["--config", str(self.project.path), "serve", "--port", str(free_port())]
        proc = subprocess.Popen([sys.executable, "-m", "digest", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=self.env)  # fmt: skip
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def text(self) -> str:
        return "\n".join(
            f"--- serve {n} (pid {p.pid}, exit {p.poll()}):\n"
            + (self.project.folder / f"serve-{n}.log").read_text(errors="replace")[-3000:]
            for n, p in enumerate(self.procs)
        )

    def stop(self) -> list[int | None]:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(60))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(None)
        for log in self.logs:
            log.close()
        return codes


def _fleet_project(tmp_path: Path, url: str, server: SendGridServer) -> Project:
    project = Project(tmp_path)
    project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all")
    project.data["storage"] = {"url": url}
    project.data["schedule"] = {"cron": "* * * * *", "timezone": "UTC"}  # due now
    project.data["delivery"] = {
        "backend": "sendgrid",
        "workers": 2,
        "retry_backoff": "1ms",
        "sendgrid": {"api_key_env": KEY_ENV, "api_url": server.url, "batch_size": BATCH},
    }
    project.write()
    _add_readers(project.engine(), SUBSCRIBERS)
    return project


def _add_readers(engine: sa.Engine, n: int) -> None:
    """``reader0@example.org`` … active subscribers, in one insert."""
    with engine.begin() as conn:
        rows = [
            {"email": f"reader{i}@example.org", "email_key": f"reader{i}@example.org",
             "status": "active", "source": "cli", "created_at": NOW, "updated_at": NOW}
            for i in range(n)
        ]  # fmt: skip
        conn.execute(sa.insert(schema.subscribers), rows)


def _in_unknown_batches(conn: sa.Connection) -> set[str]:
    """The addresses of the recipients in batches reported ``unknown``."""
    D = schema.deliveries
    joined = D.join(B, (D.c.edition_id == B.c.edition_id) & (D.c.batch == B.c.number))
    query = sa.select(D.c.email).select_from(joined).where(B.c.status == BatchStatus.UNKNOWN)
    return {str(a) for a in conn.execute(query).scalars()}


def _at_most_once(got: Counter[str], everyone: set[str], in_unknown: set[str]) -> None:
    """Nobody got the edition twice, and whoever did not get it is reported unknown."""
    assert not {a for a, n in got.items() if n > 1}, "someone got the edition twice"
    assert set(got) <= everyone and everyone - set(got) <= in_unknown  # nobody lost silently


def _senders(engine: sa.Engine) -> Counter[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(B.c.sent_by, sa.func.count())
            .where(B.c.status == BatchStatus.SENT)
            .group_by(B.c.sent_by)
        )
        return Counter({str(who): int(n) for who, n in rows})


def _until(what: Any, fleet_: Fleet, tries: int = 1200, pause: float = 0.1) -> Any:
    """Poll ``what()`` until it is true (bounded by a count of tries)."""
    for _ in range(tries):
        got = what()
        if got:
            return got
        time.sleep(pause)
    raise AssertionError(f"the fleet did not get there:\n{fleet_.text()}")


@pytest.mark.postgres
@pytest.mark.slow
def test_three_instances_share_an_edition_and_survive_one_killed(
    fresh_postgres: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    server = SendGridServer(validate="none", keep="meta", delay=0.25)
    project = _fleet_project(tmp_path, fresh_postgres, server)
    engine = project.engine()
    fleet_: Fleet | None = None
    try:
        fleet_ = Fleet(project, {**cli_env, KEY_ENV: DEFAULT_API_KEY, "NO_PROXY": "127.0.0.1"})
        procs = [fleet_.start() for _ in range(3)]
        ids = {p.pid: p for p in procs}

        def holders_of(senders: Counter[str]) -> set[int]:
            return {int(who.split(":")[1]) for who in senders} & set(ids)

        # all three have sent some batches, and much is still to send: kill one
        _until(lambda: len(holders_of(_senders(engine))) == 3, fleet_, pause=0.05)
        victim = procs[1]
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        with engine.connect() as conn:
            mine = (B.c.claimed_by.like(f"%:{victim.pid}:%")) & B.c.status.in_(
                [BatchStatus.PENDING, BatchStatus.SENDING]
            )
            left = {
                int(n): str(s)
                for n, s in conn.execute(sa.select(B.c.number, B.c.status).where(mine))
            }
            still = conn.execute(
                sa.select(sa.func.count()).where(B.c.status == BatchStatus.PENDING)
            ).scalar_one()
        assert still > 0, "the edition was over before the kill: nothing was proven"

        def settled() -> bool:
            with engine.connect() as conn:
                return conn.execute(sa.select(E.c.status)).scalar_one() != "sending"

        _until(settled, fleet_)
        codes = fleet_.stop()
        assert codes == [0, -9, 0], fleet_.text()
    finally:
        server.stop()
        if fleet_ is not None and any(p.poll() is None for p in fleet_.procs):
            fleet_.stop()

    with engine.connect() as conn:
        ((status, recipients, delivered, unknown),) = conn.execute(
            sa.select(E.c.status, E.c.recipients, E.c.delivered, E.c.unknown)
        ).all()  # exactly one edition
        batches = {
            int(n): (str(s), str(who))
            for n, s, who in conn.execute(sa.select(B.c.number, B.c.status, B.c.sent_by))
        }
        in_unknown = _in_unknown_batches(conn)
    everyone = {f"reader{i}@example.org" for i in range(SUBSCRIBERS)}
    got = Counter(server.recipients())
    _at_most_once(got, everyone, in_unknown)
    assert status == "done" and recipients == SUBSCRIBERS
    assert unknown == len(in_unknown) and delivered + unknown == SUBSCRIBERS
    assert delivered == len(set(got) - in_unknown)  # an unknown batch may have arrived
    assert {s for s, _ in batches.values()} <= {"sent", "unknown"}
    senders = {int(who.split(":")[1]) for s, who in batches.values() if s == "sent"}
    assert senders == set(ids)  # all three sent
    for number, was in left.items():  # what the killed one held: taken over, or reported
        now_status, by = batches[number]
        if was == "pending":
            assert now_status == "sent" and f":{victim.pid}:" not in by, (number, batches[number])
        else:
            assert now_status == "unknown" and f":{victim.pid}:" in by
    assert all(f":{victim.pid}:" in by for s, by in batches.values() if s == "unknown")
    project.close()


# -- the same with SMTP: three instances, three relays, one refusing halfway ------------------

SMTP_SUBSCRIBERS = 900


def _smtp_fleet_project(tmp_path: Path, url: str, relays: Relays) -> Project:
    project = Project(tmp_path)
    project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all")
    project.data["storage"] = {"url": url}
    project.data["schedule"] = {"cron": "* * * * *", "timezone": "UTC"}  # due now
    project.data["delivery"] = {
        "backend": "smtp",
        "workers": 2,
        "retry_backoff": "1ms",
        # A message cut off by the relay going away may have arrived: never retry it
        # blindly, so that "nobody twice" holds whatever the timing of the stop.
        "retry_unanswered": False,
        "smtp": {
            "timeout": "5s",
            "relays": [
                {"host": "127.0.0.1", "port": s.port, "security": "none"} for s in relays.servers
            ],
        },
    }
    project.write()
    _add_readers(project.engine(), SMTP_SUBSCRIBERS)
    return project


@pytest.mark.postgres
@pytest.mark.slow
def test_three_instances_over_three_relays_one_refusing_halfway(
    fresh_postgres: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    with Relays(tmp_path) as relays:
        project = _smtp_fleet_project(tmp_path, fresh_postgres, relays)
        engine = project.engine()
        fleet_ = Fleet(project, {**cli_env, "NO_PROXY": "127.0.0.1"})
        try:
            procs = [fleet_.start() for _ in range(3)]
            _until(lambda: sum(relays.counts().values()) >= SMTP_SUBSCRIBERS // 3, fleet_, 3000)
            relays.stop(1)  # from now on its port refuses connections
            at_stop = relays.counts()[relays.name(1)]
            total = sum(relays.counts().values())
            assert total < SMTP_SUBSCRIBERS - 100, "over before the stop: nothing was proven"

            def settled() -> bool:
                with engine.connect() as conn:
                    status = conn.execute(sa.select(E.c.status)).scalar()
                return status is not None and status != "sending"

            _until(settled, fleet_, 3000)
            assert fleet_.stop() == [0, 0, 0], fleet_.text()
        finally:
            if any(p.poll() is None for p in fleet_.procs):
                fleet_.stop()
        counts = relays.counts()
        got = Counter(relays.recipients())

    with engine.connect() as conn:
        ((status, delivered, unknown),) = conn.execute(
            sa.select(E.c.status, E.c.delivered, E.c.unknown)
        ).all()  # exactly one edition
        rows = conn.execute(sa.select(B.c.status, B.c.relay, B.c.sent_by)).all()
        in_unknown = _in_unknown_batches(conn)
    everyone = {f"reader{i}@example.org" for i in range(SMTP_SUBSCRIBERS)}
    _at_most_once(got, everyone, in_unknown)
    # at most the messages on the stopped relay's connections (3 instances × 2) are unknown
    assert status == "done" and unknown == len(in_unknown) <= 6
    assert delivered + unknown == SMTP_SUBSCRIBERS
    assert counts[relays.name(1)] == at_stop  # nothing reached it after it went away
    assert counts[relays.name(0)] > 0 and counts[relays.name(2)] > 0
    sent = [r for r in rows if r.status == BatchStatus.SENT]
    by_relay = Counter(r.relay for r in sent)  # one message a batch: one relay each
    assert by_relay[relays.name(0)] == counts[relays.name(0)]  # the ledger agrees with
    assert by_relay[relays.name(2)] == counts[relays.name(2)]  # the relays' own counts
    assert 0 <= counts[relays.name(1)] - by_relay[relays.name(1)] <= unknown  # cut off
    assert {r.sent_by.split(":")[1] for r in sent} == {str(p.pid) for p in procs}  # all three
    project.close()
