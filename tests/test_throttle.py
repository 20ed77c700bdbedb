"""Limits shared by every instance on one database (issue 15): the token bucket behind
``delivery.smtp.rate`` never grants more than ``rate × t + burst`` over any stretch of
an injected timeline; takers on two engines (PostgreSQL) never get the same tokens; two
senders on two engines share one rate; a 429's hold written by one instance is seen by
another (read at most once a second)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from digest import pipeline
from digest.deliver.dispatch import DispatchSettings, _Shared, dispatch
from digest.deliver.smtp import RATE_BUCKET, RateLimit, SharedRate, SmtpBackend, SmtpSettings
from digest.model import Batch, Composed, Recipient
from digest.state import db, throttle
from digest.state.db import schema

from .helpers import NOW, Clock, FakeTime, Project
from .sendgrid_server import Fault, SendGridServer
from .smtp_server import SmtpServer
from .test_deliver import composed
from .test_relays import HEAD, PERSONAL


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    engine = db.connect(f"sqlite:///{tmp_path_factory.mktemp('throttle') / 'state.db'}")
    yield engine
    engine.dispose()


# -- the bucket ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 10.0, 250.0]),
    burst=st.integers(1, 20),
    steps=st.lists(
        st.tuples(st.floats(0, 5, allow_nan=False), st.integers(1, 20)), min_size=1, max_size=30
    ),
)
def test_the_bucket_never_grants_more_than_rate_times_t_plus_burst(
    sqlite_engine: sa.Engine, rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    name = f"t-{uuid.uuid4().hex}"
    now = 1_000_000.0
    granted: list[tuple[float, int]] = []  # (when those tokens may go, how many)
    for gap, n in steps:
        now += gap
        n = min(n, burst)
        wait = throttle.take(sqlite_engine, name, n, rate, now, burst)
        assert wait >= 0
        granted.append((now + wait, n))
    granted.sort()
    for i, (start, _) in enumerate(granted):
        for j in range(i, len(granted)):
            end = granted[j][0]
            count = sum(n for at, n in granted[i : j + 1])
            assert count <= rate * (end - start) + burst + 1e-6


def test_a_full_bucket_lets_a_burst_through_then_queues_takers(sqlite_engine: sa.Engine) -> None:
    waits = [throttle.take(sqlite_engine, "q", 2, 4.0, 100.0, 4) for _ in range(4)]
    assert waits == [0.0, 0.0, 0.5, 1.0]  # 4 at once, then 2 more every half second
    assert throttle.take(sqlite_engine, "q", 2, 4.0, 110.0, 4) == 0.0  # full again


def test_a_clock_behind_the_rows_never_refills_backwards(sqlite_engine: sa.Engine) -> None:
    assert throttle.take(sqlite_engine, "skew", 1, 1.0, 500.0, 1) == 0.0
    assert throttle.take(sqlite_engine, "skew", 1, 1.0, 400.0, 1) == 1.0  # no token from the past


@pytest.mark.postgres
def test_takers_on_two_engines_never_get_the_same_tokens(fresh_postgres: str) -> None:
    engines = [db.connect(fresh_postgres), db.connect(fresh_postgres)]
    waits: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def taker(engine: sa.Engine) -> None:
        start.wait()
        for _ in range(50):
            wait = throttle.take(engine, "shared", 1, 10.0, 5000.0, 5)
            with lock:
                waits.append(wait)

    try:
        threads = [threading.Thread(target=taker, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # the clock stood still: the k-th token of 100 waits (k - 5) / 10 s, each once
        assert sorted(waits) == [0.0] * 5 + [k / 10 for k in range(1, 96)]
        with engines[0].connect() as conn:
            tokens = conn.execute(sa.select(schema.throttles.c.tokens)).scalar_one()
        assert tokens == 5 - 100
    finally:
        for e in engines:
            e.dispose()


# -- delivery.smtp.rate for the fleet ---------------------------------------------------------


def rated_backends(
    engines: list[sa.Engine], port: int, slept: list[list[float]]
) -> list[SmtpBackend]:
    """An SMTP backend per engine (an instance each), at 8 messages a second counted in
    the database, the clock standing still: the waits asked for are recorded in ``slept``."""
    backends = []
    for i, engine in enumerate(engines):
        limit = SharedRate(engine, 8.0, clock=lambda: 1000.0, sleep=slept[i].append)
        limit.local = RateLimit(8.0, clock=lambda: 0.0, sleep=lambda s: None)
        settings = SmtpSettings("127.0.0.1", port, security="none", rate=8.0)
        backends.append(SmtpBackend(settings, HEAD, PERSONAL, limit=limit))
    return backends


def in_two_threads(work: Callable[[int], object]) -> None:
    """``work(0)`` and ``work(1)`` at once, each in a thread of its own."""
    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.postgres
def test_two_senders_on_two_engines_share_one_rate(fresh_postgres: str, tmp_path: Path) -> None:
    """Two instances (each its own engine and backend) send 20 messages each in two
    threads, the clock standing still: the bucket counts all 40, so the last
    reservation waits for the other instance's tokens too."""
    engines = [db.connect(fresh_postgres), db.connect(fresh_postgres)]
    slept: list[list[float]] = [[], []]
    try:
        with SmtpServer(tmp_path) as server:
            backends = rated_backends(engines, server.port, slept)

            def send(i: int) -> None:
                sender = backends[i].open(composed())
                try:
                    for n in range(20):
                        r = Recipient(100 * i + n, f"r{i}-{n}@example.org", None)
                        sender.send(Batch(3, r.subscriber_id, (r,)))
                finally:
                    sender.close()

            in_two_threads(send)
            assert len(server.received) == 40
        chunk = 2  # a quarter second's worth of 8 a second
        with engines[0].connect() as conn:
            row = conn.execute(sa.select(schema.throttles)).one()
        assert row.name == RATE_BUCKET and row.tokens == chunk - 40
        waits = sorted(slept[0] + slept[1])
        # one bucket for both: reservations 2..20 of 20 wait 2/8 s more each
        assert waits == [k * chunk / 8.0 for k in range(1, 20)]
        assert max(slept[0] + slept[1]) == (40 - chunk) / 8.0  # one process alone: 2.25 s
    finally:
        for e in engines:
            e.dispose()


# -- a provider's hold for the fleet ------------------------------------------------------


def shared(engine: sa.Engine, time: FakeTime, clock: Clock) -> _Shared:
    settings = DispatchSettings(
        sleep=time.sleep,
        monotonic=time.monotonic,
        clock=clock,
        hold=throttle.Hold(engine, "sendgrid", monotonic=time.monotonic),
    )
    return _Shared(settings)


@pytest.mark.postgres
def test_a_429_met_by_one_instance_holds_another(fresh_postgres: str) -> None:
    engines = [db.connect(fresh_postgres), db.connect(fresh_postgres)]
    try:
        clock = Clock(NOW)
        one_time, two_time = FakeTime(), FakeTime()
        one, two = shared(engines[0], one_time, clock), shared(engines[1], two_time, clock)
        two.wait_gate()  # nothing held: no wait (and the hold is now read)
        assert two_time.sleeps == []
        one.hold(30.0, "429 Too Many Requests")
        two.wait_gate()  # read less than a second ago: not read again yet
        assert two_time.sleeps == []
        two_time.now += 1.0
        two.wait_gate()
        assert two_time.sleeps == [30.0]
        until, why = throttle.held_until(engines[1], "sendgrid")
        assert until == NOW.timestamp() + 30 and why == "429 Too Many Requests"
        one_time.now += 30.0  # the holder waits its own hold, as it always did
        clock.now = NOW.replace(second=31)
        two_time.now += 1.0
        two.wait_gate()  # the hold is over
        assert two_time.sleeps == [30.0]
    finally:
        for e in engines:
            e.dispose()


def test_without_the_database_the_hold_is_this_processes_own() -> None:
    time = FakeTime()
    alone = _Shared(DispatchSettings(sleep=time.sleep, monotonic=time.monotonic))
    alone.hold(12.0, "429")
    alone.wait_gate()
    assert time.sleeps == [12.0]


def test_the_services_share_the_rate_and_the_hold_through_the_database(
    project: Project,
) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["delivery"] = {"backend": "smtp", "smtp": {"host": "127.0.0.1", "rate": 20}}
    services = pipeline.build(project.config(), engine=project.engine())
    assert isinstance(services.backend, SmtpBackend)
    limit = services.backend.limit
    assert isinstance(limit, SharedRate) and limit.engine is services.engine
    assert limit.chunk == 5  # a quarter second's worth: one round trip per 5 messages
    hold = services.dispatch.hold
    assert hold is not None and (hold.engine, hold.name) == (services.engine, "smtp")


# -- two dispatchers on one PostgreSQL database --------------------------------------------


def two_editions(engine: sa.Engine, emails: list[str], batch_size: int) -> list[Composed]:
    """Two editions of the same list (as two instances would each be sending one)."""
    from .test_sendgrid import add_subscribers, edition

    add_subscribers(engine, emails)
    return [edition(engine, batch_size), edition(engine, batch_size)]


@pytest.mark.postgres
def test_two_dispatchers_on_two_engines_share_one_smtp_rate(
    fresh_postgres: str, tmp_path: Path
) -> None:
    engines = [db.connect(fresh_postgres), db.connect(fresh_postgres)]
    slept: list[list[float]] = [[], []]
    try:
        editions = two_editions(engines[0], [f"r{i}@example.org" for i in range(20)], 1)
        with SmtpServer(tmp_path) as server:
            backends = rated_backends(engines, server.port, slept)
            time = FakeTime()
            plain = DispatchSettings(sleep=time.sleep, monotonic=time.monotonic)
            in_two_threads(lambda i: dispatch(engines[i], backends[i], editions[i], plain))
            assert len(server.received) == 40
        with engines[0].connect() as conn:
            tokens = conn.execute(sa.select(schema.throttles.c.tokens)).scalar_one()
            sent = conn.execute(
                sa.select(sa.func.count()).where(schema.batches.c.status == "sent")
            ).scalar_one()
        assert sent == 40 and tokens == 2 - 40  # both editions' messages in one bucket
        assert sorted(slept[0] + slept[1]) == [k * 2 / 8.0 for k in range(1, 20)]
    finally:
        for e in engines:
            e.dispose()


@pytest.mark.postgres
def test_a_429_met_by_one_dispatcher_holds_the_other_instances_dispatcher(
    fresh_postgres: str, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_sendgrid import backend

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    engines = [db.connect(fresh_postgres), db.connect(fresh_postgres)]
    try:
        editions = two_editions(engines[0], [f"r{i}@example.org" for i in range(6)], 3)
        sendgrid_server.script(
            Fault(status=429, headers={"Retry-After": "30", "X-RateLimit-Reset": ""})
        )
        times = [FakeTime(), FakeTime()]
        for i in (0, 1):  # one after the other: the second starts after the 429
            wall = times[i]  # each instance's wall clock moves when it sleeps, from NOW

            def clock(wall: FakeTime = wall) -> datetime:
                return NOW + timedelta(seconds=wall.now - 1000.0)

            settings = DispatchSettings(
                sleep=wall.sleep,
                monotonic=wall.monotonic,
                clock=clock,
                hold=throttle.Hold(engines[i], "sendgrid", monotonic=times[i].monotonic),
            )
            dispatch(engines[i], backend(sendgrid_server), editions[i], settings)
        assert times[0].sleeps == [30.0]  # the one that met it waits, as ever
        assert times[1].sleeps == [30.0]  # the other instance, told by the database
        statuses = [r.status for r in sendgrid_server.requests]
        assert statuses == [429, 202, 202, 202, 202]
    finally:
        for e in engines:
            e.dispose()
