"""A whole week with a controllable clock: each subscriber gets exactly their stories, at
their own hour in their own zone, once.

Subscribers in seven zones (UTC+14, UTC+9, UTC+5:30, UTC, New York across its change
to summer time, UTC-10), daily and weekly; one switches daily → weekly mid-week, one
weekly → daily, one moves from UTC-10 to UTC+14. A story is published every six hours.
The scheduler's minute check (``Runner.hour_due``, then ``tick``) runs every 15
minutes, each time in a fresh ``Runner`` on fresh services: every tick is a restart.

The expectation is written apart from the code's own model (spans of edition ids): in
time. Kiritimati is the furthest east, so each cycle D (07:00 on day D) is frozen at
07:00 in Kiritimati, ``D-1 17:00 UTC``; a subscriber frozen into it (by their frequency
and zone at that moment) gets, at 07:00 on day D in that zone, every story published
after the last freeze they were part of (a week back at most), or nothing if there are
none.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from digest import pipeline, schedule
from digest import scheduler as scheduling
from digest.state import subscribers

from .helpers import ROOT, Clock, Project

START = datetime(2027, 3, 6, 16, 45, tzinfo=UTC)  # Saturday, before Sunday's first hour
END = datetime(2027, 3, 15, 18, 0, tzinfo=UTC)  # Monday, after Honolulu's 07:00
STEP = timedelta(minutes=15)
SWITCH = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)  # Wednesday: the mid-week changes


@dataclass
class Person:
    email: str
    zone: str | None
    frequency: str | None
    then: dict[str, str] = field(default_factory=dict)  # what changes at SWITCH

    def at(self, when: datetime) -> tuple[str, str]:
        zone = self.then.get("timezone", self.zone) if when >= SWITCH else self.zone
        frequency = self.frequency
        if when >= SWITCH:
            frequency = self.then.get("frequency", frequency)
        return zone or "UTC", frequency or "daily"


PEOPLE = [
    Person("kiri@example.org", "Pacific/Kiritimati", None),  # UTC+14
    Person("tokyo@example.org", "Asia/Tokyo", "daily", {"frequency": "weekly"}),
    Person("kolkata@example.org", "Asia/Kolkata", "daily"),  # UTC+5:30
    Person("utc@example.org", None, None),  # the schedule's zone, daily by default
    Person("weekly@example.org", None, "weekly"),
    Person("back@example.org", "UTC", "weekly", {"frequency": "daily"}),
    Person("ny@example.org", "America/New_York", "daily"),  # summer time on the 14th
    Person("honolulu@example.org", "Pacific/Honolulu", "daily"),  # UTC-10
    Person("mover@example.org", "Pacific/Honolulu", "daily", {"timezone": "Pacific/Kiritimati"}),
]


def publish_times() -> list[datetime]:
    first = datetime(2027, 3, 6, 18, 0, tzinfo=UTC)
    return [
        first + timedelta(hours=6 * n) for n in range(40) if first + timedelta(hours=6 * n) < END
    ]


def write_feed(path: Path, now: datetime) -> None:
    items = "".join(
        f"<item><title>Story {n}</title><guid>story-{n}</guid>"
        f"<link>https://news.example/{n}</link>"
        f"<pubDate>{t:%a, %d %b %Y %H:%M:%S} +0000</pubDate>"
        f"<description>Story {n} of the week.</description></item>"
        for n, t in enumerate(publish_times())
        if t <= now
    )
    path.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>'
        f"<link>https://news.example/</link>{items}</channel></rss>",
        encoding="utf-8",
    )


def freeze_time(cycle: datetime) -> datetime:
    return schedule.release_at(cycle, "Pacific/Kiritimati")


def expected() -> dict[str, list[tuple[datetime, frozenset[int]]]]:
    """Per address: (when, which stories), in time."""
    times = publish_times()
    cycles = [datetime(2027, 3, 7, 7) + timedelta(days=d) for d in range(10)]
    out: dict[str, list[tuple[datetime, frozenset[int]]]] = {}
    for person in PEOPLE:
        got: list[tuple[datetime, frozenset[int]]] = []
        cursor: datetime | None = None
        for cycle in cycles:
            frozen = freeze_time(cycle)
            if frozen > END:
                break
            zone, frequency = person.at(frozen)
            if frequency == "weekly" and cycle.weekday() != 0:
                continue
            since = cursor
            if since is None:
                since = frozen - (timedelta(days=7) if frequency == "weekly" else timedelta(days=1))
            since = max(since, frozen - timedelta(days=7))
            stories = frozenset(n for n, t in enumerate(times) if since < t <= frozen)
            cursor = frozen
            when = schedule.release_at(cycle, zone)
            if stories and when <= END:
                got.append((when, stories))
        out[person.email] = got
    return out


@pytest.fixture
def week(project: Project) -> Iterator[Project]:
    project.feed("news.xml", first_run_window="all")
    project.data["schedule"] = {"cron": "0 7 * * *", "timezone": "UTC", "catch_up": "3h"}
    project.data["digest"]["max_items"] = 50
    yield project


def received(
    project: Project, now: datetime, log: list[tuple[datetime, str, frozenset[int]]]
) -> None:
    """Move the messages the outbox got into ``log`` (a message sent twice shows twice)."""
    seen = project.folder / "seen"
    seen.mkdir(exist_ok=True)
    for path in project.outbox():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        stories = frozenset(int(n) for n in re.findall(r"Story (\d+)", body.get_content()))
        log.append((now, str(message["To"]).strip("<>"), stories))
        path.rename(seen / f"{len(log):05d}-{path.name}")


def test_a_week_of_own_hours_and_frequencies(week: Project) -> None:
    feed = week.folder / "news.xml"
    write_feed(feed, START)
    config = week.config()
    engine = week.engine()
    with engine.begin() as conn:
        for person in PEOPLE:
            added = subscribers.add(conn, person.email, None, "cli", START)
            subscribers.set_cadence(
                conn,
                added.subscriber.id,
                START,
                frequency=person.frequency,
                timezone=person.zone,
            )
    log: list[tuple[datetime, str, frozenset[int]]] = []
    now = START
    switched = False
    while now <= END:
        write_feed(feed, now)
        if now >= SWITCH and not switched:
            switched = True
            with engine.begin() as conn:
                for person in PEOPLE:
                    if person.then:
                        found = subscribers.get(conn, person.email)
                        assert found is not None
                        subscribers.set_cadence(conn, found.id, now, **person.then)
        clock = Clock(now)
        services = pipeline.build(config, engine=engine, clock=clock, sleep=lambda s: None)
        runner = scheduling.Runner(services, schedule.schedule_of(config))  # a restart
        if runner.hour_due():
            runner.tick()
        received(week, now, log)
        now += STEP

    want = expected()
    assert all(want[p.email] for p in PEOPLE)  # everyone gets something
    wednesday = datetime(2027, 3, 10, 17, tzinfo=UTC)  # Honolulu's Wednesday, Kiritimati's Thursday
    assert [w for w, _ in want["mover@example.org"]].count(wednesday) == 2
    assert len(want["weekly@example.org"]) == 2  # the two Mondays
    back = want["back@example.org"]
    assert back[1][0] == datetime(2027, 3, 11, 7, tzinfo=UTC) and len(back[1][1]) == 12
    for person in PEOPLE:
        got = [(when, stories) for when, to, stories in log if to == person.email]
        assert got == want[person.email], person.email
        every = [n for _, stories in got for n in stories]
        assert len(every) == len(set(every)), f"{person.email} got a story twice"
    # the ones there all week got every story up to their last edition
    kolkata = [s for _, to, s in log if to == "kolkata@example.org"]
    assert set().union(*kolkata) == set(
        range(min(min(s) for s in kolkata), max(max(s) for s in kolkata) + 1)
    )
    # and each at their hour: 07:00 local
    for when, to, _ in log:
        person = next(p for p in PEOPLE if p.email == to)
        zones = {person.zone or "UTC", person.then.get("timezone", person.zone or "UTC")}
        assert any(when.astimezone(ZoneInfo(z)).strftime("%H:%M") == "07:00" for z in zones)


TICK = """
import sys
from datetime import datetime
from digest import pipeline, schedule, scheduler
from digest.config import load_config
config = load_config(sys.argv[1])
now = datetime.fromisoformat(sys.argv[2])
services = pipeline.build(config, clock=lambda: now, sleep=lambda s: None)
scheduler.Runner(services, schedule.schedule_of(config)).tick()  # as digest serve starts
"""


def tick(project: Project, now: datetime, fault: str | None = None) -> int:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "DIGEST_FAULT": fault or "", "PYTHONPATH": path}  # this checkout
    done = subprocess.run(
        [sys.executable, "-c", TICK, str(project.path), now.isoformat()],
        env=env,
        cwd=project.folder,
        capture_output=True,
        check=False,
    )
    return done.returncode


def test_a_restart_in_the_middle_of_the_releases_resends_nothing(project: Project) -> None:
    """Killed between two batches of Kolkata's release: the restart sends the rest of
    Kolkata's, then UTC's at its hour; nobody twice, nobody missing."""
    project.feed("news.xml", first_run_window="all")
    project.data["schedule"] = {"cron": "0 7 * * *", "timezone": "UTC"}
    write_feed(project.folder / "news.xml", datetime(2027, 3, 8, 0, 0, tzinfo=UTC))
    project.write()
    engine = project.engine()
    people = {f"k{n}@example.org": "Asia/Kolkata" for n in range(5)}
    people |= {f"u{n}@example.org": "UTC" for n in range(3)}
    with engine.begin() as conn:
        for address, zone in people.items():
            added = subscribers.add(conn, address, None, "cli", START)
            subscribers.set_cadence(conn, added.subscriber.id, START, timezone=zone)
    kolkata = datetime(2027, 3, 8, 1, 30, tzinfo=UTC)  # 07:00 in Kolkata
    assert tick(project, kolkata, "between-batches:2") == -9
    first = {p.name.split("-", 2)[2].removesuffix(".eml") for p in project.outbox()}
    assert 0 < len(first) < 5 and all(a.startswith("k") for a in first)
    assert tick(project, kolkata + timedelta(minutes=1)) == 0  # the restart
    log: list[tuple[datetime, str, frozenset[int]]] = []
    received(project, kolkata, log)
    assert sorted(to for _, to, _ in log) == sorted(a for a in people if a.startswith("k"))
    assert tick(project, kolkata + timedelta(hours=2)) == 0  # nothing due: nothing sent
    assert project.outbox() == []
    assert tick(project, datetime(2027, 3, 8, 7, 0, tzinfo=UTC)) == 0  # UTC's hour
    received(project, kolkata, log)
    assert sorted(to for _, to, _ in log) == sorted(people)  # everyone once
    assert len({stories for _, _, stories in log}) == 1  # the same edition
