"""Each subscriber's hour and frequency: the pure deciders, table-tested with given clocks.

Which zone groups are due (``schedule.releases``), when a cycle's edition is made
(``schedule.due_cycle``), which editions' stories an edition brings a subscriber
(``personal.span``) and what an edition of several cycles contains
(``personal.span_selection``, ``personal.plan_cycle``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from digest.model import Entry, FeedSource, Selection
from digest.personal import Cycle, Reader, Skips, plan_cycle, span, span_selection
from digest.schedule import (
    Cadence,
    Release,
    Schedule,
    decide,
    next_edition,
    next_releases,
    release_at,
    releases,
)

DAILY_7 = Schedule("0 7 * * *", "UTC", catch_up=timedelta(hours=3))
MON_7 = datetime(2027, 3, 8, 7, 0)  # a Monday, wall clock
ZONES = ["Pacific/Kiritimati", "Asia/Kolkata", "UTC", "America/New_York", "Pacific/Honolulu"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cycle", "zone", "expected"),
    [
        (MON_7, "UTC", utc(2027, 3, 8, 7)),
        (MON_7, "Pacific/Kiritimati", utc(2027, 3, 7, 17)),  # UTC+14: the day before
        (MON_7, "Asia/Kolkata", utc(2027, 3, 8, 1, 30)),  # UTC+5:30
        (MON_7, "Pacific/Honolulu", utc(2027, 3, 8, 17)),  # UTC-10
        (MON_7, "America/New_York", utc(2027, 3, 8, 12)),  # EST, before the change
        (datetime(2027, 3, 15, 7), "America/New_York", utc(2027, 3, 15, 11)),  # EDT
        # 02:30 on the day clocks spring forward does not exist: it comes as 03:30 EDT
        (datetime(2027, 3, 14, 2, 30), "America/New_York", utc(2027, 3, 14, 7, 30)),
        # 01:30 when clocks fall back happens twice: the first
        (datetime(2027, 11, 7, 1, 30), "America/New_York", utc(2027, 11, 7, 5, 30)),
    ],
)
def test_release_at_is_the_cycle_in_the_zone(
    cycle: datetime, zone: str, expected: datetime
) -> None:
    assert release_at(cycle, zone) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (
            utc(2027, 3, 7, 17),
            {"Pacific/Kiritimati": "due", "Asia/Kolkata": "later", "UTC": "later"},
        ),
        (utc(2027, 3, 8, 1, 30), {"Pacific/Kiritimati": "missed", "Asia/Kolkata": "due"}),
        (utc(2027, 3, 8, 7), {"Pacific/Kiritimati": "missed", "Asia/Kolkata": "missed"}),
        (utc(2027, 3, 8, 4, 30), {"Asia/Kolkata": "due", "UTC": "later"}),  # 3h late: due
        (utc(2027, 3, 8, 4, 31), {"Asia/Kolkata": "missed"}),  # later than catch_up
        (utc(2027, 3, 8, 16, 59), {"Pacific/Honolulu": "later"}),
    ],
)
def test_which_zone_groups_are_due(now: datetime, expected: dict[str, str]) -> None:
    got = releases(MON_7, ZONES, now, DAILY_7.grace)
    assert {z: str(got[z]) for z in expected} == expected


def test_without_grace_nothing_is_missed() -> None:
    got = releases(MON_7, ZONES, utc(2027, 3, 9), None)
    assert set(got.values()) == {Release.DUE}


SUN = utc(2027, 3, 7, 7)  # the day before's edition went out then


@pytest.mark.parametrize(
    ("zones", "now", "last", "action", "cycle"),
    [
        # the first slot is the furthest east zone group's: 07:00 in Kiritimati (UTC+14)
        (ZONES, utc(2027, 3, 7, 16, 59), SUN, "skip", None),
        (ZONES, utc(2027, 3, 7, 17), SUN, "run", MON_7),
        (ZONES, utc(2027, 3, 8, 16), utc(2027, 3, 7, 17), "skip", None),  # made already
        (["UTC"], utc(2027, 3, 8, 6, 59), SUN, "skip", None),
        (["UTC"], utc(2027, 3, 8, 7, 0), SUN, "run", MON_7),
        (["UTC"], utc(2027, 3, 8, 10, 0), SUN, "run", MON_7),  # catching up
        (["UTC"], utc(2027, 3, 8, 10, 2), SUN, "skip", None),  # missed
        # missed in the east, but Honolulu's hour is still to come: made
        (ZONES, utc(2027, 3, 8, 10, 2), SUN, "run", MON_7),
        (ZONES, utc(2027, 3, 8, 10, 2), None, "run", MON_7),
        (["Pacific/Honolulu"], utc(2027, 3, 8, 10, 2), SUN, "run", MON_7),  # UTC missed
    ],
)
def test_when_a_cycle_is_made(
    zones: list[str], now: datetime, last: datetime | None, action: str, cycle: datetime | None
) -> None:
    d = decide(DAILY_7, now, last, zones=zones)
    assert str(d.action) == action
    if cycle is not None:
        assert d.cycle == cycle
        assert d.slot == min(release_at(cycle, z) for z in [*zones, "UTC"])


def test_next_release_per_zone_group() -> None:
    got = next_releases(DAILY_7, ["Pacific/Kiritimati", "Pacific/Honolulu"], utc(2027, 3, 8, 12))
    assert got == {
        "Pacific/Kiritimati": utc(2027, 3, 8, 17),
        "Pacific/Honolulu": utc(2027, 3, 8, 17),
    }
    got = next_releases(DAILY_7, ["Asia/Kolkata"], utc(2027, 3, 8, 1, 30))
    assert got == {"Asia/Kolkata": utc(2027, 3, 9, 1, 30)}


@pytest.mark.parametrize(
    ("zones", "now", "expected"),
    [
        (["UTC"], utc(2027, 3, 8, 6, 0), utc(2027, 3, 8, 7)),
        (["UTC"], utc(2027, 3, 8, 7, 0), utc(2027, 3, 9, 7)),  # strictly after now
        (["UTC"], utc(2027, 3, 8, 7, 1), utc(2027, 3, 9, 7)),
        # with zone groups, a cycle's edition is due at its first delivery hour: the east's
        (ZONES, utc(2027, 3, 7, 16, 59), utc(2027, 3, 7, 17)),
        (ZONES, utc(2027, 3, 8, 12), utc(2027, 3, 8, 17)),  # Tuesday's, Honolulu waits
        (["Asia/Kolkata"], utc(2027, 3, 8, 1, 0), utc(2027, 3, 8, 1, 30)),
        (["Pacific/Honolulu"], utc(2027, 3, 8, 8), utc(2027, 3, 9, 7)),  # UTC's first
    ],
)
def test_when_the_next_edition_is_due(zones: list[str], now: datetime, expected: datetime) -> None:
    assert next_edition(DAILY_7, zones, now) == expected


@pytest.mark.parametrize(
    ("chosen", "offered", "expected"),
    [
        (None, ("daily", "weekly"), "daily"),
        ("weekly", ("daily", "weekly"), "weekly"),
        ("weekly", ("daily",), "daily"),  # no longer offered
        (None, ("weekly",), "weekly"),
        ("bogus", ("daily", "weekly"), "daily"),
    ],
)
def test_a_subscribers_frequency(
    chosen: str | None, offered: tuple[str, ...], expected: str
) -> None:
    assert Cadence("UTC", "monday", offered).frequency(chosen) == expected


def test_the_weekly_cycle_is_the_weekly_days_first() -> None:
    cadence = Cadence("UTC", "monday")
    assert cadence.weekly(MON_7, datetime(2027, 3, 7, 7))
    assert not cadence.weekly(MON_7.replace(hour=19), MON_7)
    assert not cadence.weekly(datetime(2027, 3, 9, 7), MON_7)
    assert Cadence("UTC", "tuesday").weekly(datetime(2027, 3, 9, 7), MON_7)


WEEK = [Cycle(i, datetime(2027, 3, 1 + i, 7)) for i in range(1, 15)]  # 1: Tue 2 March


def cyc(n: int) -> Cycle:
    return WEEK[n - 1]


@pytest.mark.parametrize(
    ("frequency", "cursor", "this", "weekly", "expected"),
    [
        ("daily", None, 7, False, {7}),  # new: starts with this cycle
        ("daily", 6, 7, False, {7}),
        ("daily", 4, 7, False, {5, 6, 7}),  # switched from weekly, or missed hours
        ("daily", 6, 7, True, {7}),  # the weekly cycle is a daily reader's day too
        ("weekly", 6, 7, False, None),  # not their day
        ("weekly", 0, 7, True, {1, 2, 3, 4, 5, 6, 7}),
        ("weekly", None, 13, True, {7, 8, 9, 10, 11, 12, 13}),  # the week, no further
        ("weekly", 9, 13, True, {10, 11, 12, 13}),  # switched from daily mid-week
        ("daily", 1, 13, False, {7, 8, 9, 10, 11, 12, 13}),  # paused long: a week at most
    ],
)
def test_which_stories_an_edition_brings(
    frequency: str, cursor: int | None, this: int, weekly: bool, expected: set[int] | None
) -> None:
    got = span(frequency, cursor, cyc(this), WEEK[: this - 1], weekly)
    assert got == (None if expected is None else frozenset(expected))


TECH = FeedSource("https://tech.example/feed", category="Tech")
ART = FeedSource("https://art.example/feed", category="Art")


def story(source: FeedSource, n: int, hours: int) -> Entry:
    return Entry(
        source=source,
        source_title="x",
        identity=f"{n}",
        title=f"{source.category} {n}",
        link=f"{source.url}/{n}",
        canonical_link=f"{source.url}/{n}",
        summary="",
        content_html="",
        published=utc(2027, 3, 1) + timedelta(hours=hours),
        dated=True,
    )


STORIES = {
    1: [story(TECH, 1, 1), story(ART, 2, 2)],
    2: [story(TECH, 3, 30)],
    3: [story(ART, 4, 50), story(TECH, 5, 49)],
}


def test_a_weekly_edition_ranks_the_span_and_is_capped() -> None:
    got = span_selection(STORIES, frozenset({1, 2, 3}), max_items=2, cap=4)
    assert [e.title for e in got.items] == ["Art 4", "Tech 5"]
    assert [e.title for e in got.more] == ["Tech 3", "Art 2"]
    got = span_selection(STORIES, frozenset({2, 3}), max_items=10, cap=50)
    assert [e.title for e in got.entries] == ["Art 4", "Tech 5", "Tech 3"]


def test_a_later_update_replaces_the_earlier() -> None:
    updated = story(TECH, 1, 60)
    got = span_selection({**STORIES, 3: [updated]}, frozenset({1, 3}), 10, 50)
    assert [e.title for e in got.entries] == ["Tech 1", "Art 2"]
    assert got.entries[0].published == updated.published


def test_variants_are_spans_times_left_out_feeds_not_zones() -> None:
    this = Selection(items=tuple(STORIES[3]), more=(), baseline=())
    skip_art = Skips.of({"skip_categories": ["Art"]})
    readers = {
        1: Reader(frozenset({3})),
        2: Reader(frozenset({3})),  # another zone: same variant
        3: Reader(frozenset({1, 2, 3})),  # weekly
        4: Reader(frozenset({1, 2, 3}), skip_art),  # weekly, no art
        5: Reader(frozenset({3}), skip_art),  # daily, no art
        6: Reader(None),  # weekly reader on another day
        7: Reader(frozenset({3}), Skips.of({"skip_categories": ["Art", "Tech"]})),
        8: Reader(frozenset({1, 2, 3})),
    }
    got = plan_cycle(3, this, STORIES, readers, max_items=10, cap=50)
    v = got.variants
    assert v.later == {6} and v.nothing == {7}
    assert set(v.assigned) == {3, 4, 5, 8}
    assert v.assigned[3] == v.assigned[8] != v.assigned[4]
    assert len(got.selections) == 4  # the edition, daily without art, weekly, weekly without art
    weekly = got.selections[v.assigned[3]]
    assert [e.title for e in weekly.entries] == ["Art 4", "Tech 5", "Tech 3", "Art 2", "Tech 1"]
    assert [e.title for e in got.selections[v.assigned[4]].entries] == [
        "Tech 5",
        "Tech 3",
        "Tech 1",
    ]
    assert v.spans[v.assigned[3]] == {1, 2, 3} and v.assigned[5] not in v.spans
