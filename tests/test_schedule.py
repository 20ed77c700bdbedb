"""The schedule: fire times across 2027's clock changes, the pure decision, and scheduled
runs on a real database with a controllable clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from digest import pipeline, schedule
from digest import scheduler as scheduling
from digest.errors import LeaseError
from digest.model import Batch, BatchStatus, Composed, EditionStatus
from digest.schedule import Action, Schedule, decide, fire_times
from digest.scheduler import Outcome
from digest.state import lease, record
from digest.state.db import schema

from .helpers import Clock, Project, add_post

CHICAGO, BERLIN = ZoneInfo("America/Chicago"), ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)  # type: ignore[misc]


# -- fire times across the 2027 changes ---------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "before", "after"),
    [
        # America/Chicago: CST (UTC-6) → CDT (UTC-5) on 14 March, back on 7 November 2027.
        ("America/Chicago", utc(2027, 3, 13, 13), utc(2027, 3, 14, 12)),
        ("America/Chicago", utc(2027, 11, 6, 12), utc(2027, 11, 7, 13)),
        # Europe/Berlin: CET (UTC+1) → CEST (UTC+2) on 28 March, back on 31 October 2027.
        ("Europe/Berlin", utc(2027, 3, 27, 6), utc(2027, 3, 28, 5)),
        ("Europe/Berlin", utc(2027, 10, 30, 5), utc(2027, 10, 31, 6)),
    ],
)
def test_seven_oclock_stays_seven_oclock_across_the_change(
    zone: str, before: datetime, after: datetime
) -> None:
    plan = Schedule("0 7 * * *", zone)
    times = fire_times(plan, before - timedelta(minutes=1), 2)
    assert times == [before, after]
    for t in times:
        assert t.tzinfo is UTC
        assert t.astimezone(ZoneInfo(zone)).hour == 7
    assert after - before != timedelta(days=1)  # 23 or 25 hours apart in real time


def test_a_local_time_that_does_not_exist_runs_when_the_clock_has_jumped() -> None:
    # 02:30 does not exist in Chicago on 14 March 2027 (02:00 CST → 03:00 CDT).
    plan = Schedule("30 2 * * *", "America/Chicago")
    times = fire_times(plan, utc(2027, 3, 13, 0), 3)
    assert times == [utc(2027, 3, 13, 8, 30), utc(2027, 3, 14, 8, 30), utc(2027, 3, 15, 7, 30)]
    jumped = times[1].astimezone(CHICAGO)
    assert (jumped.hour, jumped.minute, jumped.tzname()) == (3, 30, "CDT")


def test_a_local_time_that_happens_twice_is_one_slot() -> None:
    # 01:30 happens twice in Chicago on 7 November 2027 (CDT, then CST): one edition.
    plan = Schedule("30 1 * * *", "America/Chicago")
    times = fire_times(plan, utc(2027, 11, 6, 0), 3)
    assert times == [utc(2027, 11, 6, 6, 30), utc(2027, 11, 7, 6, 30), utc(2027, 11, 8, 7, 30)]
    # APScheduler itself fires at both 01:30s; the second finds the slot handled.
    trigger = plan.trigger()
    second = trigger.get_next_fire_time(None, utc(2027, 11, 7, 6, 31)).astimezone(UTC)
    assert second == utc(2027, 11, 7, 7, 30)
    d = decide(plan, second + timedelta(seconds=1), last_sent=utc(2027, 11, 7, 6, 30, 2))
    assert d.action is Action.SKIP and d.slot == utc(2027, 11, 7, 6, 30)


def test_berlin_doubled_hour_and_weekly_schedules() -> None:
    plan = Schedule("30 2 * * *", "Europe/Berlin")  # 02:30 happens twice on 31 Oct 2027
    assert fire_times(plan, utc(2027, 10, 30, 12), 2) == [
        utc(2027, 10, 31, 0, 30),
        utc(2027, 11, 1, 1, 30),
    ]
    weekly = Schedule("0 9 * * 1", "Europe/Berlin")  # Mondays 09:00
    mondays = fire_times(weekly, utc(2027, 3, 20), 2)
    assert [m.astimezone(BERLIN).strftime("%a %H:%M %Z") for m in mondays] == [
        "Mon 09:00 CET",
        "Mon 09:00 CEST",
    ]


# -- the decision -------------------------------------------------------------------------

DAILY = Schedule("0 7 * * *", "America/Chicago", catch_up=timedelta(hours=3))
SLOT = utc(2027, 3, 15, 12)  # 07:00 CDT


def test_on_time_runs_for_the_slot() -> None:
    d = decide(DAILY, SLOT + timedelta(seconds=2), last_sent=SLOT - timedelta(days=1))
    assert (d.action, d.slot) == (Action.RUN, SLOT)
    assert "scheduled for Mon 2027-03-15 07:00 CDT" in d.reason


def test_already_sent_skips() -> None:
    d = decide(DAILY, SLOT + timedelta(hours=1), last_sent=SLOT + timedelta(seconds=3))
    assert d.action is Action.SKIP and "done" in d.reason


def test_catch_up_within_the_window_runs_once_for_the_latest_slot() -> None:
    # down since three days ago; back 2 hours after today's slot: one edition, today's
    d = decide(DAILY, SLOT + timedelta(hours=2), last_sent=SLOT - timedelta(days=3))
    assert (d.action, d.slot) == (Action.RUN, SLOT)
    assert "catching up" in d.reason and "2h late" in d.reason


def test_past_the_window_it_skips_and_says_why() -> None:
    d = decide(DAILY, SLOT + timedelta(hours=4), last_sent=SLOT - timedelta(days=1))
    assert (d.action, d.slot) == (Action.SKIP, SLOT)
    assert "missed Mon 2027-03-15 07:00 CDT by 4h" in d.reason
    assert "schedule.catch_up (3h)" in d.reason


MS = timedelta(milliseconds=1)
US = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("catch_up", "late", "action", "said"),
    [
        # "0s": every edition on time, none caught up. APScheduler fires a moment after the
        # instant (milliseconds; seconds under load): that is on time, up to ON_TIME.
        ("0s", timedelta(0), Action.RUN, "scheduled for"),
        ("0s", 3 * MS, Action.RUN, "scheduled for"),
        ("0s", timedelta(seconds=1), Action.RUN, "scheduled for"),
        ("0s", timedelta(seconds=30), Action.RUN, "scheduled for"),
        ("0s", schedule.ON_TIME, Action.RUN, "scheduled for"),
        ("0s", schedule.ON_TIME + US, Action.SKIP, "schedule.catch_up (0s)"),
        ("0s", timedelta(hours=2), Action.SKIP, "missed Fri 2027-01-01 07:00 UTC by 2h"),
        # a window shorter than ON_TIME is ON_TIME
        ("30s", schedule.ON_TIME, Action.RUN, "scheduled for"),
        ("30s", schedule.ON_TIME + US, Action.SKIP, "schedule.catch_up (30s)"),
        # a longer one: on time, then catching up, then skipped
        ("3h", schedule.ON_TIME, Action.RUN, "scheduled for"),
        ("3h", schedule.ON_TIME + US, Action.RUN, "catching up"),
        ("3h", timedelta(hours=3), Action.RUN, "catching up"),
        ("3h", timedelta(hours=3) + US, Action.SKIP, "schedule.catch_up (3h)"),
    ],
)
def test_on_time_and_catch_up_at_the_boundary(
    catch_up: str, late: timedelta, action: Action, said: str
) -> None:
    from digest.durations import parse_duration

    plan = Schedule("0 7 * * *", "UTC", catch_up=parse_duration(catch_up))
    slot = utc(2027, 1, 1, 7)
    d = decide(plan, slot + late, last_sent=slot - timedelta(days=1))
    assert (d.action, d.slot) == (action, slot)
    assert said in d.reason
    # already sent: nothing to do, whatever the lateness
    assert decide(plan, slot + late, last_sent=slot).action is Action.SKIP


def test_an_unfinished_edition_is_resumed_even_when_nothing_is_due() -> None:
    d = decide(DAILY, SLOT + timedelta(hours=1), last_sent=SLOT, unfinished=True)
    assert d.action is Action.RESUME and d.slot is None
    # and a due slot resumes first, then makes its edition
    d = decide(DAILY, SLOT, last_sent=SLOT - timedelta(days=1), unfinished=True)
    assert (d.action, d.slot) == (Action.RUN, SLOT)


# -- scheduled runs on a real database ----------------------------------------------------


@pytest.fixture
def sampled(project: Project, samples: Path) -> Project:
    for name in ("harbour-tech.rss", "field-notes.atom", "allotment-diary.rss"):
        project.feed(f"samples/{name}", first_run_window="all")
    project.subscriber("ada@example.org")
    project.subscriber("grace@example.org")
    project.data["schedule"] = {"cron": "0 7 * * *", "timezone": "America/Chicago"}
    return project


@pytest.fixture
def runner(sampled: Project) -> Iterator[tuple[scheduling.Runner, Clock]]:
    clock = Clock(SLOT)
    services = pipeline.build(
        sampled.config(), engine=sampled.engine(), clock=clock, sleep=lambda s: None
    )
    yield scheduling.Runner(services, schedule.schedule_of(sampled.config())), clock
    services.engine.dispose()


def editions(engine: sa.Engine) -> list[tuple[int, datetime | None, str]]:
    E = schema.editions
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(E.c.id, E.c.slot, E.c.status))]  # type: ignore[misc]


def test_catch_up_after_downtime_sends_once_and_survives_restarts(
    runner: tuple[scheduling.Runner, Clock], sampled: Project
) -> None:
    r, clock = runner
    clock.now = SLOT + timedelta(hours=2)  # started two hours late
    assert r.tick() is Outcome.RAN
    assert editions(r.services.engine) == [(1, SLOT, EditionStatus.DONE)]
    assert len(sampled.outbox()) == 2
    clock.now += timedelta(minutes=5)  # started again (a restart): the database knows
    assert r.tick() is Outcome.SKIPPED
    restarted = scheduling.Runner(r.services, r.schedule, clock)
    assert restarted.tick() is Outcome.SKIPPED
    assert len(editions(r.services.engine)) == 1 and len(sampled.outbox()) == 2


def test_past_the_grace_period_nothing_is_sent(
    runner: tuple[scheduling.Runner, Clock], sampled: Project
) -> None:
    r, clock = runner
    clock.now = SLOT + timedelta(hours=3, minutes=1)
    assert r.tick() is Outcome.SKIPPED
    assert editions(r.services.engine) == [] and sampled.outbox() == []
    clock.now = SLOT + timedelta(days=1)  # the next slot goes out as usual
    assert r.tick() is Outcome.RAN
    assert editions(r.services.engine) == [(1, SLOT + timedelta(days=1), EditionStatus.DONE)]


def test_a_slot_with_nothing_new_is_handled_too(
    runner: tuple[scheduling.Runner, Clock], sampled: Project, samples: Path
) -> None:
    r, clock = runner
    assert r.tick() is Outcome.RAN  # edition 1 at the slot
    clock.now = SLOT + timedelta(days=1, hours=1)
    assert r.tick() is Outcome.RAN  # nothing new: no edition, but the slot is handled
    with r.services.engine.connect() as conn:
        assert scheduling.last_sent(conn) == SLOT + timedelta(days=1)
    add_post(samples, "late-news")  # new content after the slot: waits for the next
    clock.now += timedelta(minutes=30)
    assert r.tick() is Outcome.SKIPPED
    clock.now = SLOT + timedelta(days=2)
    assert r.tick() is Outcome.RAN
    assert [e[0] for e in editions(r.services.engine)] == [1, 2]


def test_two_overlapping_runs_send_once(
    runner: tuple[scheduling.Runner, Clock], sampled: Project
) -> None:
    r, clock = runner
    second = scheduling.Runner(r.services, r.schedule, clock)  # a second process, same slot
    entered, release = threading.Event(), threading.Event()
    original = r.services.backend.open

    def slow_open(composed: Composed) -> object:
        entered.set()
        assert release.wait(10)
        return original(composed)

    object.__setattr__(r.services.backend, "open", slow_open)
    first = threading.Thread(target=lambda: outcomes.append(r.tick()))
    outcomes: list[Outcome] = []
    first.start()
    assert entered.wait(10)
    assert second.tick() is Outcome.BUSY  # the lease is held: nothing sent
    with pytest.raises(LeaseError, match="another digest run is sending"):
        pipeline.run(r.services)  # a manual `digest run` during it: exit 3 in the CLI
    release.set()
    first.join(10)
    assert outcomes == [Outcome.RAN]
    assert second.tick() is Outcome.SKIPPED  # its retry: the slot went out meanwhile
    assert len(editions(r.services.engine)) == 1 and len(sampled.outbox()) == 2


def test_the_slot_is_unique_even_past_the_lease(
    runner: tuple[scheduling.Runner, Clock], sampled: Project, samples: Path
) -> None:
    r, clock = runner
    assert r.tick() is Outcome.RAN
    add_post(samples, "sneaky")
    # a run that somehow got past both checks, for the same slot: refused by the database
    with pytest.raises(sa.exc.IntegrityError):
        pipeline.run(r.services, slot=SLOT)
    assert len(editions(r.services.engine)) == 1


def test_stop_finishes_the_batch_in_flight_and_leaves_the_rest(
    sampled: Project,
) -> None:
    stop = threading.Event()
    clock = Clock(SLOT)
    services = pipeline.build(
        sampled.config(), clock=clock, sleep=lambda s: None, should_stop=stop.is_set
    )
    sent: list[int] = []
    real_open = services.backend.open

    class Stopping:
        def __init__(self, composed: Composed) -> None:
            self.inner = real_open(composed)

        def prepare(self, batch: Batch) -> object:
            return batch, self.inner.prepare(batch)

        def deliver(self, prepared: tuple[Batch, object]) -> object:
            batch, inner = prepared
            stop.set()  # SIGTERM arrives while the first batch is being sent
            result = self.inner.deliver(inner)
            sent.append(batch.number)
            return result

        def close(self) -> None:
            self.inner.close()

    object.__setattr__(services.backend, "open", Stopping)
    r = scheduling.Runner(services, schedule.schedule_of(sampled.config()))
    assert r.tick() is Outcome.RAN
    assert sent == [0]
    with services.engine.connect() as conn:
        statuses = [
            s
            for (s,) in conn.execute(
                sa.select(schema.batches.c.status).order_by(schema.batches.c.number)
            )
        ]
        assert record.unfinished(conn) == [1]
    assert statuses == [BatchStatus.SENT, BatchStatus.PENDING]
    # still stopping: nothing more is sent, no feed is read, no edition is made
    clock.now += timedelta(minutes=1)
    assert r.tick() is Outcome.RAN
    assert len(sampled.outbox()) == 1 and len(editions(services.engine)) == 1
    # the next start resumes the rest at once, before anything else
    stop.clear()
    clock.now += timedelta(minutes=10)
    assert r.tick() is Outcome.RAN
    assert len(sampled.outbox()) == 2
    assert editions(services.engine) == [(1, SLOT, EditionStatus.DONE)]
    services.engine.dispose()


def test_the_scheduler_fires_with_coalesce_and_grace_set_explicitly(
    runner: tuple[scheduling.Runner, Clock], sampled: Project
) -> None:
    r, _clock = runner  # the clock says SLOT: the start-up tick sends that edition
    scheduler = scheduling.Scheduler(r)
    scheduler.start()
    try:
        job = scheduler._aps.get_job("edition")
        assert job.coalesce is True and job.max_instances == 1
        assert job.misfire_grace_time == 3 * 3600  # schedule.catch_up, not APScheduler's 1s
        expected = fire_times(r.schedule, datetime.now(UTC), 1)[0]
        assert scheduler.next_run() == expected
    finally:
        scheduler.shutdown()  # waits for the start-up run
    assert scheduler.last_outcome is Outcome.RAN
    assert editions(r.services.engine) == [(1, SLOT, EditionStatus.DONE)]


def test_with_zero_catch_up_the_scheduler_sends_the_edition_it_fires_a_moment_late(
    sampled: Project,
) -> None:
    sampled.data["schedule"]["catch_up"] = "0s"
    clock = Clock(SLOT + timedelta(milliseconds=250))  # APScheduler fires just after the instant
    services = pipeline.build(
        sampled.config(), engine=sampled.engine(), clock=clock, sleep=lambda s: None
    )
    r = scheduling.Runner(services, schedule.schedule_of(sampled.config()))
    ticked = threading.Event()
    tick = r.tick

    def counted() -> Outcome:
        try:
            return tick()
        finally:
            ticked.set()

    r.tick = counted  # type: ignore[method-assign]
    scheduler = scheduling.Scheduler(r)
    scheduler.start()
    try:
        job = scheduler._aps.get_job("edition")
        # APScheduler runs a fire time up to a minute late, and the decision agrees
        assert job.misfire_grace_time == schedule.ON_TIME.total_seconds() == 60
        assert ticked.wait(60)  # the start-up tick (a deadline for a hang, not a measurement)
    finally:
        scheduler.shutdown()
    assert scheduler.last_outcome is Outcome.RAN
    assert editions(services.engine) == [(1, SLOT, EditionStatus.DONE)]
    assert len(sampled.outbox()) == 2
    clock.now = SLOT + timedelta(days=1, minutes=2)  # tomorrow's, two minutes late: not sent
    assert r.tick() is Outcome.SKIPPED
    assert len(editions(services.engine)) == 1


def test_a_held_lease_outside_the_scheduler_is_busy(
    runner: tuple[scheduling.Runner, Clock],
) -> None:
    r, clock = runner
    with lease.held(r.services.engine, clock=clock):  # e.g. a manual `digest run`
        assert r.tick() is Outcome.BUSY
    assert r.tick() is Outcome.RAN


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("1", "mon"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("5-7", "fri,sat,sun"),
        ("mon-fri", "mon-fri"),
        ("*", "*"),
    ],
)
def test_weekday_numbers_mean_what_cron_means(field: str, days: str) -> None:
    from digest.crontab import weekdays

    assert weekdays(field) == days


def test_sunday_is_zero_and_seven() -> None:
    for cron in ("0 9 * * 0", "0 9 * * 7", "0 9 * * sun"):
        (when,) = fire_times(Schedule(cron, "UTC"), utc(2027, 3, 17), 1)  # a Wednesday
        assert when == utc(2027, 3, 21, 9), cron


@pytest.mark.postgres
def test_on_postgresql_a_slot_goes_out_once(
    sampled: Project, samples: Path, fresh_postgres: str
) -> None:
    sampled.data["storage"] = {"url": fresh_postgres}
    clock = Clock(SLOT + timedelta(hours=1))
    services = pipeline.build(
        sampled.config(), engine=sampled.engine(), clock=clock, sleep=lambda s: None
    )
    first = scheduling.Runner(services, schedule.schedule_of(sampled.config()))
    second = scheduling.Runner(services, first.schedule)
    with lease.held(services.engine, clock=clock):
        assert first.tick() is Outcome.BUSY
    assert first.tick() is Outcome.RAN
    assert second.tick() is Outcome.SKIPPED
    with services.engine.connect() as conn:
        assert scheduling.last_sent(conn) == SLOT + timedelta(hours=1)
    assert editions(services.engine) == [(1, SLOT, EditionStatus.DONE)]
    clock.now = SLOT + timedelta(days=1)
    assert second.tick() is Outcome.RAN  # nothing new: handled, recorded
    with services.engine.connect() as conn:
        assert scheduling.last_sent(conn) == SLOT + timedelta(days=1)
    add_post(samples, "sneaky")
    try:
        with pytest.raises(sa.exc.IntegrityError):
            pipeline.run(services, slot=SLOT)  # made it past everything: refused
    finally:
        services.engine.dispose()


def test_sign_ups_never_confirmed_are_forgotten_after_30_days(
    runner: tuple[scheduling.Runner, Clock],
) -> None:
    from digest.state import subscribers

    r, clock = runner
    engine = r.services.engine
    with engine.begin() as conn:
        for address, days in (("old@example.org", 31), ("new@example.org", 29)):
            subscribers.add(
                conn, address, None, "web", SLOT - timedelta(days=days), status="pending"
            )
        conn.execute(
            sa.insert(schema.signups).values(
                email_key="old@example.org",
                subscriber_id=subscribers.get(conn, "old@example.org").id,  # type: ignore[union-attr]
                requested_at=SLOT - timedelta(days=31),
                mailed=True,
            )
        )
    clock.now = SLOT + timedelta(hours=5)
    r.tick()
    with engine.connect() as conn:
        assert subscribers.get(conn, "old@example.org") is None
        assert subscribers.get(conn, "new@example.org") is not None
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.signups)).scalar() == 0
