"""rank is pure: which story leads, which are shown in full. Every factor as a small table,
then the places (lead, full, headline) and the reasons ``preview --explain`` prints."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest import rank
from digest.model import UNTITLED, Entry, FeedSource, Place, Placed

from .helpers import NOW


def source(name: str, weight: float = 1.0) -> FeedSource:
    return FeedSource(f"https://{name.lower()}.example/feed", name, weight=weight)


A, B, C = source("A"), source("B"), source("C")


def story(
    feed: FeedSource,
    title: str,
    hours_ago: float = 1,
    dated: bool = True,
    also: tuple[FeedSource, ...] = (),
) -> Entry:
    e = Entry(
        source=feed,
        source_title=feed.name or "",
        identity=title,
        title=title,
        link=None,
        canonical_link=None,
        summary="",
        content_html="",
        published=NOW - timedelta(hours=hours_ago),
        dated=dated,
    )
    return replace(e, also=tuple(replace(e, source=s, source_title=s.name or "") for s in also))


def order(*stories: Entry, max_items: int | None = None, per_feed: int | None = None) -> list[str]:
    return [p.entry.title for p in rank.order(stories, NOW, max_items, per_feed)]


# -- the score, factor by factor -----------------------------------------------------------

SCORES = [
    # (story, above, value, why)
    (story(A, "now", 0), 0, 1.0, "published now: every factor 1"),
    (story(A, "a day", 24), 0, 0.5, "one half-life old: half"),
    (story(A, "two days", 48), 0, 0.25, "two half-lives: a quarter"),
    (story(A, "undated", 0, dated=False), 0, 0.5, "undated, first seen now: half"),
    (story(A, "future", -5), 0, 1.0, "a date in the future counts as now"),
    (story(A, "three feeds", 0, also=(B, C)), 0, 3.0, "three feeds carry it"),
    (story(source("W", weight=2), "weighted", 0), 0, 2.0, "a feed of weight 2"),
    (story(A, "third of its feed", 0), 2, rank.FLOOD**2, "two of its feed above it"),
    (story(source("W", weight=0.5), "all", 24, also=(B,)), 1, 0.5 * 0.5 * 2 * rank.FLOOD,
     "all together"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "above", "value"), [r[:3] for r in SCORES], ids=[r[3] for r in SCORES]
)
def test_score(entry: Entry, above: int, value: float) -> None:
    got = rank.score(entry, NOW, above)
    assert got.value == pytest.approx(value)
    assert got.value == pytest.approx(got.sources * got.weight * got.recency * got.flood)


# -- the order ------------------------------------------------------------------------------

ORDERS = [
    # (stories, expected titles, why)
    ([story(A, "old", 30), story(B, "new", 1)], ["new", "old"], "newer first"),
    ([story(A, "new", 1), story(B, "covered", 20, also=(C,))], ["covered", "new"],
     "two feeds beat 19 hours of age"),
    ([story(A, "new", 1), story(B, "covered", 30, also=(C,))], ["new", "covered"],
     "but not 29"),
    ([story(A, "a", 2), story(source("W", weight=3), "weighted", 30)], ["weighted", "a"],
     "the operator's weight"),
    ([story(A, "undated", 0, dated=False), story(B, "dated", 12)], ["dated", "undated"],
     "an undated entry is never the newest by default"),
    ([story(A, "x2", 0, dated=False), story(A, "x1", 0, dated=False),
      story(B, "y", 0, dated=False)], ["x2", "y", "x1"],
     "undated, all first seen now: feed order, config order, the flood penalty"),
    ([story(A, "a1", 1), story(A, "a2", 1.1), story(A, "a3", 1.2), story(B, "b1", 10)],
     ["a1", "b1", "a2", "a3"], "a feed's second story goes below another feed's first"),
    ([story(A, "same1", 3), story(B, "same2", 3)], ["same1", "same2"],
     "a tie keeps the order they came in"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stories", "expected"), [r[:2] for r in ORDERS], ids=[r[2] for r in ORDERS]
)
def test_order(stories: list[Entry], expected: list[str]) -> None:
    assert order(*stories) == expected


def test_years_old_stories_still_rank_by_their_other_factors() -> None:
    """Eight years of age is 0.5 ** 2920: no float holds it, its log does."""
    years = 24 * 365 * 8
    stories = [story(A, "alone", years), story(B, "covered", years + 1, also=(C,))]
    assert order(*stories) == ["covered", "alone"]
    assert rank.score(stories[0], NOW).value == 0.0  # shown as e^... by --explain


def test_the_flood_penalty_never_reorders_one_feed() -> None:
    stories = [story(A, f"a{n}", n) for n in range(10)]
    assert order(*reversed(stories)) == [f"a{n}" for n in range(10)]


def test_an_untitled_story_never_leads() -> None:
    ranked = rank.order([story(A, UNTITLED, 0), story(B, "Titled", 5)], NOW)
    assert [p.entry.title for p in ranked] == ["Titled", UNTITLED]
    assert ranked[0].place is Place.LEAD
    assert ranked[0].reason == "the best story with a title (1 untitled ranked above)"


def test_only_untitled_stories_still_make_an_edition() -> None:
    ranked = rank.order([story(A, UNTITLED, 0)], NOW)
    assert [p.place for p in ranked] == [Place.LEAD]


# -- the places and the reasons --------------------------------------------------------------


def places(ranked: tuple[Placed, ...]) -> list[tuple[str, Place, str]]:
    return [(p.entry.title, p.place, p.reason) for p in ranked]


def test_places_and_reasons() -> None:
    stories = [story(A, "a1", 1), story(A, "a2", 2), story(A, "a3", 3), story(B, "b1", 30),
               story(C, "c1", 40)]  # fmt: skip
    ranked = rank.order(stories, NOW, max_items=3, max_items_per_feed=2)
    assert places(ranked) == [
        ("a1", Place.LEAD, "the best story"),
        ("a2", Place.FULL, "number 2 of the ranking"),
        ("a3", Place.HEADLINE, "max_items_per_feed: 2 of A are in full already"),
        ("b1", Place.FULL, "number 4 of the ranking"),
        ("c1", Place.HEADLINE, "max_items: 3 stories are in full already"),
    ]


def test_no_caps_shows_everything_in_full() -> None:
    ranked = rank.order([story(A, "a", 1), story(A, "b", 2)], NOW)
    assert [p.place for p in ranked] == [Place.LEAD, Place.FULL]


def test_nothing_to_rank() -> None:
    assert rank.order([], NOW, 20, 5) == ()


@given(
    st.lists(
        st.tuples(st.sampled_from([A, B, C]), st.floats(0, 500), st.booleans(), st.booleans()),
        max_size=30,
    ),
    st.integers(0, 10),
    st.integers(0, 5),
)
def test_every_story_is_placed_once_within_the_caps(
    rows: list[tuple[FeedSource, float, bool, bool]], max_items: int, per_feed: int
) -> None:
    stories = [
        story(f, UNTITLED if untitled else f"s{i}", hours, dated)
        for i, (f, hours, dated, untitled) in enumerate(rows)
    ]
    ranked = rank.order(stories, NOW, max_items, per_feed)
    assert sorted(id(p.entry) for p in ranked) == sorted(id(s) for s in stories)
    full = [p for p in ranked if p.place is not Place.HEADLINE]
    assert len(full) <= max_items
    for feed in (A, B, C):
        assert sum(p.entry.source is feed for p in full) <= per_feed
    assert [p.place for p in ranked].count(Place.LEAD) <= 1
    if full:
        assert ranked[0].place is Place.LEAD and full[0] is ranked[0]
        if any(s.titled for s in stories):
            assert ranked[0].entry.titled
    values = [p.score.log for p in ranked[1:]]
    assert values == sorted(values, reverse=True)  # best first, but for the lead


# -- through pick: the subject takes the lead -------------------------------------------------


def test_pick_leads_with_the_ranking_and_the_subject_names_the_lead() -> None:
    from digest.model import FeedEntries, Known
    from digest.pick import pick
    from digest.render.edition import Renderer, RenderSettings

    a = (story(A, UNTITLED, 0), story(A, "Undated", 0, dated=False))
    b = (story(B, "Flooding 1", 2), story(B, "Flooding 2", 2.5), story(B, "Flooding 3", 3))
    c = (story(C, "Carried twice", 30, also=(A,)),)
    feeds = [FeedEntries(A, a, False), FeedEntries(B, b, False), FeedEntries(C, c, False)]
    selection = pick(feeds, Known(), NOW, max_items=4, max_items_per_feed=2)
    assert [p.entry.title for p in selection.ranking] == [
        "Flooding 1",  # the best titled story leads (the untitled one scored higher)
        UNTITLED,
        "Carried twice",  # two feeds, 30 hours: above B's second story
        "Flooding 2",
        "Flooding 3",
        "Undated",  # first seen now, but undated and A's second
    ]
    assert [e.title for e in selection.items] == [
        "Flooding 1",
        UNTITLED,
        "Carried twice",
        "Flooding 2",
    ]
    assert [e.title for e in selection.more] == ["Flooding 3", "Undated"]
    renderer = Renderer(RenderSettings("Daily", "https://d.example", "1 Street"))
    assert renderer.subject(selection, NOW) == "Daily: Flooding 1 (+5 more)"
