"""pick is pure: every rule of what counts as new, as small tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from digest.ingest.links import canonical
from digest.model import Entry, FeedEntries, FeedSource, Known
from digest.pick import pick

from .helpers import NOW

A = FeedSource("https://a.example/feed", "A", first_run_window=timedelta(hours=24))
B = FeedSource("https://b.example/feed", "B", first_run_window=timedelta(hours=24))


def entry(
    source: FeedSource,
    ident: str,
    hours_ago: float = 1,
    link: str | None = None,
    dated: bool = True,
) -> Entry:
    link = link or f"{source.url}/{ident}"
    return Entry(
        source=source,
        source_title=source.name or "",
        identity=ident,
        title=f"{ident} title",
        link=link,
        canonical_link=canonical(link),
        summary="",
        content_html="",
        published=NOW - timedelta(hours=hours_ago),
        dated=dated,
    )


def feed(
    source: FeedSource,
    *entries: Entry,
    first_run: bool = False,
    first_read: datetime | None = NOW - timedelta(days=30),
) -> FeedEntries:
    return FeedEntries(
        source, entries, first_run=first_run, first_read=None if first_run else first_read
    )


def ids(entries: tuple[Entry, ...]) -> list[str]:
    return [e.identity for e in entries]


def test_new_entries_newest_first() -> None:
    sel = pick([feed(A, entry(A, "old", 5), entry(A, "new", 1))], Known(), NOW, 20, 5)
    assert ids(sel.items) == ["new", "old"]
    assert sel.more == () and sel.baseline == ()


def test_known_identities_are_not_new() -> None:
    known = Known(identities=frozenset({(A.url, "seen")}))
    sel = pick([feed(A, entry(A, "seen"), entry(A, "fresh"))], known, NOW, 20, 5)
    assert ids(sel.items) == ["fresh"]


def test_same_identity_in_another_feed_is_another_entry() -> None:
    known = Known(identities=frozenset({(A.url, "x")}))
    sel = pick([feed(B, entry(B, "x", link="https://b.example/other"))], known, NOW, 20, 5)
    assert ids(sel.items) == ["x"]


def test_first_run_window() -> None:
    f = feed(
        A,
        entry(A, "today", 2),
        entry(A, "last-week", 24 * 7),
        entry(A, "undated", 0, dated=False),
        first_run=True,
    )
    sel = pick([f], Known(), NOW, 20, 5)
    assert ids(sel.items) == ["today"]
    assert sorted(ids(sel.baseline)) == ["last-week", "undated"]


def test_first_run_window_all() -> None:
    source = FeedSource("https://a.example/feed", "A", first_run_window=None)
    f = feed(source, entry(source, "ancient", 24 * 365), first_run=True)
    assert ids(pick([f], Known(), NOW, 20, 5).items) == ["ancient"]


def test_later_runs_take_entries_from_an_outage_but_not_old_archive() -> None:
    first_read = NOW - timedelta(days=10)
    f = feed(
        A, entry(A, "during-outage", 24 * 3), entry(A, "archive", 24 * 40), first_read=first_read
    )
    sel = pick([f], Known(), NOW, 20, 5)
    assert ids(sel.items) == ["during-outage"]
    assert ids(sel.baseline) == ["archive"]


def test_same_guid_twice_in_one_feed_counts_once() -> None:
    sel = pick([feed(A, entry(A, "dup", 1), entry(A, "dup", 2))], Known(), NOW, 20, 5)
    assert ids(sel.items) == ["dup"]


def test_same_story_in_two_feeds_appears_once() -> None:
    story = "https://news.example/story?utm_source=a"
    same = "https://NEWS.example/story/?fbclid=123#top"
    sel = pick(
        [feed(A, entry(A, "a1", link=story)), feed(B, entry(B, "b1", link=same))],
        Known(),
        NOW,
        20,
        5,
    )
    assert ids(sel.items) == ["a1"]
    assert ids(sel.items[0].also) == ["b1"]  # shown once, "Also in: B"
    assert ids(sel.recorded) == ["a1", "b1"]  # both remembered with the edition
    assert sel.duplicates == 0 and sel.baseline == ()


def test_story_sent_before_under_another_guid_is_not_new() -> None:
    known = Known(canonical_links=frozenset({canonical("https://a.example/feed/post")}))
    sel = pick(
        [feed(A, entry(A, "new-guid", link="https://a.example/feed/post"))], known, NOW, 20, 5
    )
    assert sel.empty and sel.duplicates == 1


def test_caps_move_overflow_to_more_never_dropped() -> None:
    many_a = [entry(A, f"a{i}", i + 1) for i in range(6)]
    many_b = [entry(B, f"b{i}", i + 1.5) for i in range(3)]
    sel = pick(
        [feed(A, *many_a), feed(B, *many_b)], Known(), NOW, max_items=4, max_items_per_feed=3
    )
    assert ids(sel.items) == ["a0", "b0", "a1", "b1"]
    assert sorted(ids(sel.more)) == sorted(["a2", "b2", "a3", "a4", "a5"])
    assert len(sel.entries) == 9


def test_nothing_new() -> None:
    known = Known(identities=frozenset({(A.url, "x")}))
    assert pick([feed(A, entry(A, "x"))], known, NOW, 20, 5).empty


def test_an_update_is_news_only_where_the_feed_asks_for_it() -> None:
    """resend_updated: an entry sent before with another fingerprint is new again,
    marked updated; the same fingerprint, an entry never sent (no fingerprint on
    record) or a feed without the option is not."""
    from dataclasses import replace

    watched = replace(A, resend_updated=True)
    changed = replace(entry(watched, "changed", 30), fingerprint="v2")
    same = replace(entry(watched, "same", 30), fingerprint="v1")
    never_sent = replace(entry(watched, "baseline", 30), fingerprint="v2")
    plain = replace(entry(B, "plain", 30), fingerprint="v2")  # B does not watch for updates
    known = Known(
        identities=frozenset(
            {(A.url, "changed"), (A.url, "same"), (A.url, "baseline"), (B.url, "plain")}
        ),
        # the link of a story sent before does not make its update a duplicate
        canonical_links=frozenset({changed.canonical_link or ""}),
        fingerprints={(A.url, "changed"): "v1", (A.url, "same"): "v1", (B.url, "plain"): "v1"},
    )
    sel = pick([feed(watched, changed, same, never_sent), feed(B, plain)], known, NOW, 20, 5)
    assert ids(sel.items) == ["changed"] and sel.items[0].updated
    assert sel.baseline == () and sel.duplicates == 0


# -- the same story under a new guid ------------------------------------------------------


def churned(source: FeedSource, guid: str, title: str, link: str | None = None) -> Entry:
    """An entry as a feed that makes up a guid on every fetch gives it: the fingerprint
    (title and content) is what stays the same."""
    return Entry(
        source=source,
        source_title="",
        identity=guid,
        title=title,
        link=link,
        canonical_link=canonical(link),
        summary="",
        content_html="",
        published=NOW,
        dated=False,
        fingerprint=f"fp-{title}",
    )


def test_same_feed_title_and_content_under_a_new_guid_is_a_duplicate() -> None:
    known = Known(recent_content={(A.url, "fp-Story"): True})
    sel = pick([feed(A, churned(A, "guid-2", "Story"))], known, NOW, 20, 5)
    assert sel.empty and ids(sel.baseline) == ["guid-2"] and sel.duplicates == 1
    # another feed with the same words is another feed's story
    assert ids(pick([feed(B, churned(B, "g", "Story"))], known, NOW, 20, 5).items) == ["g"]


def test_the_same_story_twice_in_one_fetch_is_kept_once() -> None:
    twice = feed(A, churned(A, "g1", "Story"), churned(A, "g2", "Story"))
    sel = pick([twice], Known(), NOW, 20, 5)
    assert len(sel.items) == 1 and sel.duplicates == 1


def test_two_posts_at_two_addresses_are_two_posts() -> None:
    """A weekly "Open thread" with no body: same title and content, different links."""
    known = Known(recent_content={(A.url, "fp-Open thread"): False})  # had a link
    week2 = churned(A, "g2", "Open thread", "https://a.example/open-thread-2")
    assert ids(pick([feed(A, week2)], known, NOW, 20, 5).items) == ["g2"]
    # ...but without a link, nothing tells it from the one before
    bare = churned(A, "g3", "Open thread")
    assert pick([feed(A, bare)], known, NOW, 20, 5).empty
    # and a linked copy of a story first seen without a link is the same story
    linkless = Known(recent_content={(A.url, "fp-Open thread"): True})
    assert pick([feed(A, week2)], linkless, NOW, 20, 5).empty


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=12),
    st.dictionaries(st.sampled_from("abc"), st.booleans()),
)
def test_no_story_goes_out_twice_whatever_its_guids(
    stories: list[tuple[str, bool]], recent: dict[str, bool]
) -> None:
    """Each entry a fresh guid; a story is its title and content. Whatever the mix of
    links, a story already recorded (or already chosen) is only chosen again when both
    it and the earlier one have links (different ones)."""
    known = Known(recent_content={(A.url, f"fp-{t}"): linkless for t, linkless in recent.items()})
    entries = [
        churned(A, f"g{i}", title, f"https://a.example/{title}/{i}" if linked else None)
        for i, (title, linked) in enumerate(stories)
    ]
    sel = pick([feed(A, *entries)], known, NOW, 100, 100)
    chosen = sel.items + sel.more
    for title in "abc":
        linked_out = [e for e in chosen if e.title == title and e.link]
        bare_out = [e for e in chosen if e.title == title and not e.link]
        assert len(bare_out) <= (0 if title in recent else 1)
        if bare_out or recent.get(title):
            assert len(linked_out) + len(bare_out) <= (0 if title in recent else 1)
    assert len(chosen) + len(sel.baseline) == len(entries)


# -- issue 12: what is one story and what is two


def test_links_that_differ_by_fragment_are_distinct_stories() -> None:
    """A comment feed, a changelog's anchors: one page, many stories (guids differ)."""
    page = "https://a.example/changelog"
    sel = pick(
        [feed(A, entry(A, "v1", link=page + "#v1"), entry(A, "v2", link=page + "#v2"))],
        Known(),
        NOW,
        20,
        5,
    )
    assert ids(sel.items) == ["v1", "v2"] and sel.duplicates == 0


def test_a_fragment_link_sent_before_does_not_hide_its_siblings() -> None:
    known = Known(canonical_links=frozenset({canonical("https://a.example/post#comment-1")}))
    f = feed(
        A,
        entry(A, "c2", link="https://a.example/post#comment-2"),
        entry(A, "c1-again", link="https://a.example/post#comment-1"),  # a new guid: same story
    )
    sel = pick([f], known, NOW, 20, 5)
    assert ids(sel.items) == ["c2"] and ids(sel.baseline) == ["c1-again"]


def test_the_same_link_under_a_new_guid_stays_one_story() -> None:
    link = "https://a.example/post?utm_source=rss"
    sel = pick(
        [feed(A, entry(A, "guid-1", link=link), entry(A, "guid-2", 2, link=link + "&fbclid=1"))],
        Known(),
        NOW,
        20,
        5,
    )
    assert ids(sel.items) == ["guid-1"] and sel.duplicates == 1


def told(source: FeedSource, ident: str, title: str, summary: str, hours: float = 1) -> Entry:
    return replace(entry(source, ident, hours), title=title, summary=summary)


def test_same_title_and_summary_in_one_feed_appear_once() -> None:
    """One post under two addresses; but an empty summary says nothing (an "Open thread"
    each week), another feed is another source (shown as "Also in": ``cluster``), another
    summary another post."""
    f = feed(
        A,
        told(A, "x1", "Big news", "It happened."),
        told(A, "x2", "Big  NEWS", "It  happened.", 2),
        told(A, "t1", "Open thread", ""),
        told(A, "t2", "Open thread", "", 2),
        told(A, "y", "Big news", "Another story.", 3),
    )
    g = feed(B, told(B, "b", "Big news", "It happened."))
    sel = pick([f, g], Known(), NOW, 20, 10)
    assert ids(sel.items) == ["x1", "t1", "t2", "y"]
    assert ids(sel.items[0].also) == ["b"]
    assert ids(sel.baseline) == ["x2"] and sel.duplicates == 1


def test_undated_entries_keep_the_feeds_order_not_the_alphabet() -> None:
    f = feed(
        A,
        replace(entry(A, "zebra", 0, dated=False), title="Zebra"),
        replace(entry(A, "apple", 0, dated=False), title="Apple"),
        replace(entry(A, "mango", 0, dated=False), title="Mango"),
    )
    assert ids(pick([f], Known(), NOW, 20, 5).items) == ["zebra", "apple", "mango"]


TITLES = st.sampled_from(["Big news", "big  NEWS", "Other", "(untitled)"])
SUMMARIES = st.sampled_from(["", "It happened.", "It  happened.", "Else."])


@given(st.lists(st.tuples(TITLES, SUMMARIES, st.booleans()), max_size=12))
def test_one_feed_never_shows_a_title_and_summary_twice(rows: list[tuple[str, str, bool]]) -> None:
    """Whatever the mix: each new entry is shown, listed, shown as "Also in" under another
    feed's copy, or counted as a duplicate, and no two of one feed have the same title
    and the same (non-empty) summary."""
    entries = [
        told(source, f"e{i}", title, summary, i + 1)
        for i, (title, summary, second) in enumerate(rows)
        for source in [B if second else A]
    ]
    by_feed = [feed(s, *(e for e in entries if e.source == s)) for s in (A, B)]
    sel = pick(by_feed, Known(), NOW, 20, 20)
    every = [*sel.entries, *(other for e in sel.entries for other in e.also)]
    assert len(every) + sel.duplicates == len(entries)
    seen = set()
    for e in every:
        if e.summary and e.title != "(untitled)":
            key = (e.source.url, " ".join(e.title.casefold().split()), " ".join(e.summary.split()))
            assert key not in seen
            seen.add(key)
