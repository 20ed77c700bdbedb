"""A zone group's release, as cron drives it (``Runner.run_due``, ``digest run --due``):
it reads no feed, sends only the group whose hour has come, leaves out whoever left
since the edition was made; and the zone groups are read from the index alike on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from digest import pipeline, schedule
from digest import scheduler as scheduling
from digest.state import db, subscribers

from .helpers import Clock, Project
from .test_cadence_week import START, write_feed

CYCLE_DAY = datetime(2027, 3, 8, 0, 0, tzinfo=UTC)
KOLKATA = datetime(2027, 3, 8, 1, 30, tzinfo=UTC)  # 07:00 in Kolkata: the edition is made
UTC_HOUR = datetime(2027, 3, 8, 7, 0, tzinfo=UTC)  # 07:00 in the schedule's zone


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> sa.Engine:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('zones') / 'test.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres")
    engine = db.connect(url)
    request.addfinalizer(engine.dispose)
    return engine


def test_the_zone_groups_of_active_subscribers(any_engine: sa.Engine) -> None:
    people = {
        "plain@example.org": None,  # no zone: the schedule's
        "utc@example.org": "UTC",
        "k1@example.org": "Asia/Kolkata",
        "k2@example.org": "Asia/Kolkata",
        "hono@example.org": "Pacific/Honolulu",
        "left@example.org": "Europe/Paris",  # unsubscribes: not a group any more
        "paused@example.org": "Asia/Tokyo",  # paused: neither
    }
    with any_engine.begin() as conn:
        assert subscribers.zones_of_active(conn, "UTC") == set()
        for address, zone in people.items():
            added = subscribers.add(conn, address, None, "cli", START)
            subscribers.set_cadence(conn, added.subscriber.id, START, timezone=zone)
        left = subscribers.get(conn, "left@example.org")
        paused = subscribers.get(conn, "paused@example.org")
        assert left is not None and paused is not None
        subscribers.unsubscribe(conn, left.id, START, "one-click")
        subscribers.pause(conn, paused.id, None, START)
        want = {"UTC", "Asia/Kolkata", "Pacific/Honolulu"}
        assert subscribers.zones_of_active(conn, "UTC") == want
        assert set(subscribers.zone_groups(conn, "UTC")) == want
        # the zoneless are in the default zone, whichever it is
        paris = subscribers.zones_of_active(conn, "Europe/Paris")
        assert paris == {"Europe/Paris", "UTC", "Asia/Kolkata", "Pacific/Honolulu"}
        assert paris == set(subscribers.zone_groups(conn, "Europe/Paris"))


def at(project: Project, now: datetime) -> scheduling.Runner:
    """A fresh runner with the clock at ``now``, as a cron run starts."""
    config = project.config()
    services = pipeline.build(config, engine=project.engine(), clock=Clock(now))
    return scheduling.Runner(services, schedule.schedule_of(config))


def sent_to(project: Project) -> list[str]:
    out = []
    for path in project.outbox():
        out.append(path.name.split("-", 2)[2].removesuffix(".eml"))
        path.unlink()
    return sorted(out)


def test_a_release_reads_no_feed_and_leaves_out_who_left(project: Project) -> None:
    project.feed("news.xml", first_run_window="all")
    project.data["schedule"] = {"cron": "0 7 * * *", "timezone": "UTC"}
    write_feed(project.folder / "news.xml", CYCLE_DAY)
    project.write()
    people = {f"k{n}@example.org": "Asia/Kolkata" for n in range(2)}
    people |= {f"u{n}@example.org": "UTC" for n in range(5)}
    engine = project.engine()
    with engine.begin() as conn:
        for address, zone in people.items():
            added = subscribers.add(conn, address, None, "cli", START)
            subscribers.set_cadence(conn, added.subscriber.id, START, timezone=zone)

    made = at(project, KOLKATA).run_due()
    assert made is not None and len(made.feeds) == 1  # the feed read once, for the cycle
    (edition,) = made.editions
    assert edition.zones_released == ("Asia/Kolkata",) and edition.zones_pending == ("UTC",)
    assert sent_to(project) == ["k0@example.org", "k1@example.org"]

    later = KOLKATA + timedelta(hours=2)
    assert at(project, later).run_due() is None  # nobody's hour: nothing runs
    assert sent_to(project) == []
    with engine.begin() as conn:  # after the edition was made, before UTC's hour
        u0 = subscribers.get(conn, "u0@example.org")
        u1 = subscribers.get(conn, "u1@example.org")
        assert u0 is not None and u1 is not None
        subscribers.unsubscribe(conn, u0.id, later, "one-click")
        subscribers.pause(conn, u1.id, None, later)
        assert subscribers.remove(conn, "u4@example.org", later, forget=True)  # erased
    (project.folder / "news.xml").unlink()  # a release that read the feeds would fail it

    released = at(project, UTC_HOUR).run_due()
    assert released is not None and released.feeds == ()  # no feed read
    (edition,) = released.editions
    assert edition.resumed and edition.zones_released == ("Asia/Kolkata", "UTC")
    assert edition.zones_pending == () and edition.status == "done"
    assert sent_to(project) == ["u2@example.org", "u3@example.org"]
    assert edition.recipients_delivered == 4 and edition.recipients_failed == 3  # u0, u1, u4
    assert any("u0@example.org: unsubscribed" in p for p in edition.problems)
    assert any("u1@example.org: unsubscribed" in p for p in edition.problems)
