"""``digest run`` from cron: it follows ``[schedule]``, whatever the cron line's rhythm.

Every run here is the real command (in this process), at a time the test sets: the
CLI's clocks (``digest.cli._now``, and ``digest.cli.subscribers._now`` for the
subscriber commands) are replaced, and the feed is a local file rewritten before each
run with the posts published by then (one an hour), so something is new at every run
and only the schedule decides whether an edition goes out.
"""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from digest.state.db import schema

from .helpers import Clock, Project, Ran, invoke

#: A Monday; the schedule is 07:00 in UTC unless a test says otherwise.
DAY = datetime(2027, 3, 8, tzinfo=UTC)
#: The first run in the database: the day before, at noon.
FIRST = DAY - timedelta(hours=12)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


class Cron:
    """The project's ``digest run`` as cron would start it, at the times a test says."""

    def __init__(self, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        self.project = project
        self.clock = Clock(FIRST)
        monkeypatch.setattr("digest.cli._now", self.clock)
        monkeypatch.setattr("digest.cli.subscribers._now", self.clock)
        project.feed("news.xml", first_run_window="all")
        project.data["schedule"] = {"cron": "0 7 * * *", "timezone": "UTC"}
        project.subscriber("ada@example.org")

    def write(self) -> None:
        self.project.write()
        self.feed(self.clock.now)

    def feed(self, now: datetime) -> None:
        """One post an hour from ``FIRST - 1h`` up to ``now``."""
        first, hours = FIRST - timedelta(hours=1), []
        while first + timedelta(hours=len(hours)) <= now:
            hours.append(first + timedelta(hours=len(hours)))
        items = "".join(
            f"<item><title>Post {t:%d %H:%M}</title><guid>post-{t:%Y%m%d%H%M}</guid>"
            f"<link>https://news.example/{t:%Y%m%d%H%M}</link>"
            f"<pubDate>{t:%a, %d %b %Y %H:%M:%S} +0000</pubDate></item>"
            for t in hours
        )
        (self.project.folder / "news.xml").write_text(
            '<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>'
            f"<link>https://news.example/</link>{items}</channel></rss>",
            encoding="utf-8",
        )

    def run(self, when: datetime, *args: str) -> Ran:
        self.clock.now = when
        self.feed(when)
        return invoke("--config", str(self.project.path), "run", *args)

    def json(self, when: datetime, *args: str) -> dict[str, Any]:
        ran = self.run(when, "--json", *args)
        assert ran.returncode == 0, ran.stderr
        data: dict[str, Any] = json.loads(ran.stdout)
        return data

    def editions(self) -> list[tuple[int, datetime]]:
        """Each edition's id and when it was made."""
        with self.project.engine().connect() as conn:
            rows = conn.execute(sa.select(schema.editions.c.id, schema.editions.c.created_at))
            return [(i, made.replace(tzinfo=UTC)) for i, made in rows.all()]


@pytest.fixture
def cron(project: Project, monkeypatch: pytest.MonkeyPatch) -> Cron:
    c = Cron(project, monkeypatch)
    c.write()
    return c


def started(cron: Cron) -> None:
    """The database's first run, the day before at noon: an edition at once."""
    first = cron.json(FIRST)
    assert first["mode"] == "first_run" and len(first["editions"]) == 1
    assert cron.editions() == [(1, FIRST)]


def test_an_hourly_cron_makes_one_edition_at_the_schedules_hour(cron: Cron) -> None:
    """06:00, 07:00, 08:00 … 23:00 with a 07:00 schedule and a new post every hour:
    exactly one edition, made by the 07:00 run; every other run has nothing to do."""
    started(cron)
    made_by = {}
    for hour in range(0, 24):
        report = cron.json(at(hour))
        assert report["mode"] == "schedule" and report["ok"] is True
        if report["editions"]:
            made_by[hour] = [e["id"] for e in report["editions"]]
            assert report["nothing_to_do"] is False and report["feeds"]
        else:
            assert report["nothing_to_do"] is True and report["feeds"] == []
        due = at(7) if hour < 7 else at(31)
        assert report["next_edition"] == {"local": due.isoformat(), "utc": due.isoformat()}
    assert made_by == {7: [2]}
    assert cron.editions() == [(1, FIRST), (2, at(7))]
    assert len(cron.project.outbox()) == 2  # one a day for ada


def test_a_run_every_15_minutes_makes_it_once_and_a_late_one_catches_up(cron: Cron) -> None:
    started(cron)
    times = [at(6, 30), at(6, 45), at(7), at(7, 15), at(7, 30)]
    assert [bool(cron.json(t)["editions"]) for t in times] == [False, False, True, False, False]
    # the next day's 07:00 run did not happen (a reboot): 08:15 is within catch_up (3h)
    assert [bool(cron.json(t)["editions"]) for t in (at(32, 15), at(32, 30))] == [True, False]
    # the day after, digest was down until 10:15: too late, the edition waits a day
    missed = cron.json(at(58, 15))
    assert missed["nothing_to_do"] is True and missed["editions"] == []
    assert missed["reason"].startswith(
        "missed Wed 2027-03-10 07:00 UTC by 3h15m, more than schedule.catch_up (3h)"
    )
    assert missed["next_edition"]["utc"] == at(79).isoformat()
    assert [i for i, _ in cron.editions()] == [1, 2, 3]


def test_nothing_to_do_says_why_and_when_the_next_edition_is_due(cron: Cron) -> None:
    started(cron)
    ran = cron.run(at(5))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        "nothing to do: the edition for Sun 2027-03-07 07:00 UTC is done (last sent Sun "
        "2027-03-07 12:00 UTC).",
        "The next edition is due Mon 2027-03-08 07:00 UTC (2027-03-08 07:00 UTC).",
    ]
    report = cron.json(at(5, 30))
    assert report == {
        "ok": True,
        "dry_run": False,
        "editions": [],
        "feeds": [],  # no feed was read
        "skipped": True,
        "reason": "the edition for Sun 2027-03-07 07:00 UTC is done (last sent Sun "
        "2027-03-07 12:00 UTC)",
        "held": False,
        "seconds": 0.0,
        "mode": "schedule",
        "nothing_to_do": True,
        "next_edition": {"local": at(7).isoformat(), "utc": at(7).isoformat()},
        "next_release": None,
    }
    assert cron.editions() == [(1, FIRST)] and len(cron.project.outbox()) == 1


def test_a_scheduled_run_says_what_it_sent_and_when_the_next_is_due(cron: Cron) -> None:
    started(cron)
    ran = cron.run(at(7))
    assert ran.returncode == 0, ran.stderr
    assert "Edition 2: 19 entries to 1 recipients — 1 delivered" in ran.stdout
    assert ran.stdout.rstrip().endswith(
        "The next edition is due Tue 2027-03-09 07:00 UTC (2027-03-09 07:00 UTC)."
    )
    assert "first run" not in ran.stdout


def test_the_first_run_ever_sends_at_once_then_the_schedule_rules(cron: Cron) -> None:
    ran = cron.run(at(12))  # a fresh database, long after the 07:00 edition time
    assert ran.returncode == 0, ran.stderr
    assert "Edition 1: " in ran.stdout and "1 delivered" in ran.stdout
    assert (
        "This first run in this database did not wait for the schedule; from now on "
        "`digest run` follows it ('0 7 * * *' in UTC; `digest run --now` sends at once)."
    ) in ran.stdout
    assert "The next edition is due Tue 2027-03-09 07:00 UTC" in ran.stdout
    assert cron.editions() == [(1, at(12))]
    report = cron.json(at(13))  # a new post since, but the schedule says tomorrow
    assert report["mode"] == "schedule" and report["nothing_to_do"] is True
    assert cron.json(at(31))["editions"][0]["id"] == 2


@pytest.mark.parametrize("hour", [6, 7, 8])
def test_the_first_run_is_the_same_at_any_hour(cron: Cron, hour: int) -> None:
    """Before, at and after the schedule's 07:00: one edition at once, then none until
    the next edition time."""
    first = cron.json(at(hour))
    assert first["mode"] == "first_run" and len(first["editions"]) == 1
    due = at(7) if hour < 7 else at(31)
    assert first["next_edition"]["utc"] == due.isoformat()
    later = cron.json(at(hour, 30))
    assert later["nothing_to_do"] is True
    assert cron.editions() == [(1, at(hour))]


def test_a_first_run_with_nothing_to_send_still_hands_over_to_the_schedule(
    cron: Cron,
) -> None:
    """No subscriber yet: the first run sends nothing, but it was the first run; the
    subscriber added later gets the next edition at the schedule's hour, not at once."""
    cron.project.data["subscribers"] = []
    cron.write()
    first = cron.json(at(12))
    assert first["mode"] == "first_run" and first["editions"] == []
    assert first["next_edition"]["utc"] == at(31).isoformat()
    assert invoke("--config", str(cron.project.path), "subscribers", "add", "b@example.org")
    later = cron.json(at(13))
    assert later["mode"] == "schedule" and later["nothing_to_do"] is True
    made = cron.json(at(31))
    assert [e["recipients_delivered"] for e in made["editions"]] == [1]


def test_now_sends_now_whatever_the_schedule_says(cron: Cron) -> None:
    started(cron)
    report = cron.json(at(13), "--now")  # long after 07:00's edition would have gone
    assert report["mode"] == "now" and report["nothing_to_do"] is False
    (edition,) = report["editions"]
    assert (edition["id"], edition["recipients_delivered"]) == (2, 1)
    assert report["next_edition"]["utc"] == at(31).isoformat()
    again = cron.run(at(13), "--now")  # nothing new at the same instant
    assert again.returncode == 0
    assert "Nothing sent: nothing new since the last edition." in again.stdout
    assert "next edition" not in again.stdout  # --now says nothing of the schedule
    assert cron.editions() == [(1, FIRST), (2, at(13))]


def test_dry_run_shows_what_now_would_send(cron: Cron) -> None:
    started(cron)
    report = cron.json(at(5), "--dry-run")  # nothing is due at 05:00; --now would send
    assert report["dry_run"] is True and report["mode"] == "now"
    assert [e["entries"] for e in report["editions"]] == [17]
    assert cron.editions() == [(1, FIRST)] and len(cron.project.outbox()) == 1


def test_due_is_a_deprecated_alias_of_the_default(cron: Cron) -> None:
    started(cron)
    ran = cron.run(at(5), "--due")
    assert ran.returncode == 0
    assert ran.stdout.startswith("nothing to do: the edition for Sun 2027-03-07 07:00 UTC")
    assert "--due is deprecated" in ran.stderr and "[schedule]" in ran.stderr
    report = cron.json(at(7), "--due")
    assert report["mode"] == "schedule" and [e["id"] for e in report["editions"]] == [2]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--now", "--due"], "--now and --due do not go together"),
        (["--due", "--dry-run"], "--due and --dry-run do not go together"),
    ],
)
def test_now_or_dry_run_with_due_is_a_usage_error(cron: Cron, args: list[str], words: str) -> None:
    ran = cron.run(at(7), *args)
    assert ran.returncode == 2 and words in ran.stderr and "Traceback" not in ran.stderr
    as_json = cron.run(at(7), *args, "--json")
    failure = json.loads(as_json.stdout)
    assert failure["ok"] is False and failure["exit_code"] == 2 and words in failure["error"]
    assert cron.editions() == [] and not cron.project.outbox()


def mailed(cron: Cron) -> set[tuple[str, str]]:
    """Each mail in the outbox: its file name and whom it is to."""
    return {
        (p.name, str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"]))
        for p in cron.project.outbox()
    }


def test_an_hourly_cron_releases_each_zone_group_at_its_own_hour(cron: Cron) -> None:
    """07:00 in Kolkata (01:30 UTC), in UTC, in New York (12:00 UTC, EST): the hourly
    run at 02:00 makes the edition and releases Kolkata, 07:00 UTC, 12:00 New York; each
    subscriber gets it once, and the ones whose hour has not come wait."""
    started(cron)
    base = ["--config", str(cron.project.path), "subscribers"]
    for address, zone in [("k@example.org", "Asia/Kolkata"), ("n@example.org", "America/New_York")]:
        assert invoke(*base, "add", address).returncode == 0
        assert invoke(*base, "set", address, "--timezone", zone).returncode == 0
    released: dict[int, list[str]] = {}
    got: dict[int, list[str]] = {}
    seen = mailed(cron)
    for hour in range(0, 14):
        report = cron.json(at(hour))
        for edition in report["editions"]:
            released[hour] = sorted(edition["zones_released"])
            if hour < 12:
                assert "America/New_York" in edition["zones_pending"]
        if 2 <= hour < 12:
            assert report["next_release"] is not None
        if new := mailed(cron) - seen:
            got[hour] = sorted(to for _, to in new)
            seen |= new
    assert released == {
        2: ["Asia/Kolkata"],
        7: ["Asia/Kolkata", "UTC"],
        12: ["America/New_York", "Asia/Kolkata", "UTC"],
    }
    assert got == {2: ["k@example.org"], 7: ["ada@example.org"], 12: ["n@example.org"]}
    assert cron.editions() == [(1, FIRST), (2, at(2))]  # one edition, made at 02:00
