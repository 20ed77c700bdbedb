"""cluster is pure: the same story from several feeds, once. Table-driven rules, and the
precision and recall measured on the labelled set (tests/cluster_pairs.json, built by
benchmarks/cluster_labels.py from ../shared/corpus/real and our own pairs)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest import cluster
from digest.ingest.links import canonical
from digest.model import UNTITLED, Entry, FeedSource

from .helpers import NOW, Project
from .helpers import NOW as RUN_AT

PAIRS = Path(__file__).parent / "cluster_pairs.json"
TEXT = (
    "The central bank raised its main interest rate by a quarter point on Thursday, "
    "the third increase this year, citing persistent inflation in services."
)


def source(name: str, weight: float = 1.0) -> FeedSource:
    return FeedSource(f"https://{name.lower()}.example/feed", name, weight=weight)


A, B, C = source("A"), source("B"), source("C")


def entry(
    feed: FeedSource,
    title: str,
    summary: str = "",
    link: str | None = None,
    ident: str | None = None,
    dated: bool = True,
) -> Entry:
    return Entry(
        source=feed,
        source_title=feed.name or "",
        identity=ident or f"{feed.name}:{title}",
        title=title,
        link=link,
        canonical_link=canonical(link) if link else None,
        summary=summary,
        content_html="",
        published=NOW - timedelta(hours=1),
        dated=dated,
    )


# -- the pair rule, as a table ----------------------------------------------------------

RATES = "Central bank raises rates by a quarter point"
SAME_STORY = [
    # (a, b, same, why)
    (entry(A, "One", link="https://x.example/s?utm_source=a"),
     entry(B, "Two", link="https://X.example/s"), True, "the same canonical link"),
    (entry(A, RATES, TEXT), entry(B, RATES.upper(), TEXT[:90]), True,
     "case and a shorter cut of the summary"),
    (entry(A, RATES, TEXT), entry(B, RATES.replace("quarter point", "quarter-point"), TEXT),
     True, "punctuation"),
    (entry(A, RATES, TEXT), entry(B, RATES), True, "a long title, one summary missing"),
    (entry(A, "Open thread"), entry(B, "Open thread"), False,
     "a short title and nothing else to compare"),
    (entry(A, RATES, TEXT), entry(B, RATES, "A storm closed the coast road overnight; the "
     "ferries stay in port and schools are shut."), False, "the same title over another text"),
    (entry(A, "Rust 1.30 released", "Procedural macros arrive."),
     entry(B, "Rust 1.31 released", "The first Rust 2018 release."), False, "two versions"),
    (entry(A, UNTITLED, "Photo of the day."), entry(B, UNTITLED, "Photo of the day."), False,
     "untitled entries: by link only"),
    (entry(A, RATES, TEXT), entry(A, RATES, TEXT, ident="again"), False,
     "one feed: that is pick's dedup, not a cluster"),
    (entry(A, "Die Bahn streikt am Montag", "Die Gewerkschaft ruft zum Streik im Fern- und "
     "Regionalverkehr auf; Pendler sollen planen."),
     entry(B, "Die Bahn streikt am Montag!", "Die Gewerkschaft ruft zum Streik im Fern- "
     "und Regionalverkehr auf."), True, "German, punctuation, a shorter cut"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("a", "b", "same"), [row[:3] for row in SAME_STORY], ids=[row[3] for row in SAME_STORY]
)
def test_same_story(a: Entry, b: Entry, same: bool) -> None:
    assert cluster.same_story(a, b) is same
    assert cluster.same_story(b, a) is same


# -- stories: the best source, "also", order ----------------------------------------------


def titles(entries: tuple[Entry, ...]) -> list[str]:
    return [f"{e.source.name}:{e.title}" for e in entries]


def test_a_story_is_shown_once_under_its_first_source_with_the_others_as_also() -> None:
    stories = cluster.merge(
        [entry(A, RATES, TEXT), entry(A, "Other"), entry(B, RATES, TEXT), entry(C, RATES)]
    )
    assert titles(stories) == [f"A:{RATES}", "A:Other"]
    assert titles(stories[0].also) == [f"B:{RATES}", f"C:{RATES}"]
    assert stories[1].also == ()


def test_the_best_source_is_the_heaviest_feed_then_a_dated_entry() -> None:
    heavy = source("Heavy", weight=2)
    stories = cluster.merge([entry(A, RATES, TEXT), entry(heavy, RATES, TEXT)])
    assert titles(stories) == [f"Heavy:{RATES}"] and titles(stories[0].also) == [f"A:{RATES}"]
    stories = cluster.merge([entry(A, RATES, TEXT, dated=False), entry(B, RATES, TEXT)])
    assert titles(stories) == [f"B:{RATES}"]


def test_a_story_never_holds_two_entries_of_one_feed() -> None:
    """B's two copies both match A's; only the first joins: the second stays a story."""
    stories = cluster.merge(
        [entry(A, RATES, TEXT), entry(B, RATES, TEXT), entry(B, RATES, TEXT, ident="b2")]
    )
    assert [len(s.also) for s in stories] == [1, 0]
    assert stories[1].identity == "b2"


def test_sameness_joins_transitively() -> None:
    """A and C share a link, B and C a title and summary: one story of three feeds."""
    link = "https://news.example/story"
    stories = cluster.merge(
        [entry(A, "Short", link=link), entry(B, RATES, TEXT), entry(C, RATES, TEXT, link=link)]
    )
    assert len(stories) == 1 and len(stories[0].also) == 2


def test_also_entries_carry_no_also_of_their_own() -> None:
    (story,) = cluster.merge([entry(A, RATES, TEXT), entry(B, RATES, TEXT)])
    assert all(e.also == () for e in story.also)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([A, B, C]),
            st.sampled_from([RATES, RATES.upper(), "Open thread", UNTITLED, "Other news today"]),
            st.sampled_from(["", TEXT, "Something else entirely."]),
            st.sampled_from([None, "https://n.example/1", "https://n.example/2"]),
        ),
        max_size=12,
    )
)
def test_every_entry_is_in_exactly_one_story(
    rows: list[tuple[FeedSource, str, str, str | None]],
) -> None:
    entries = [entry(f, t, s, link, ident=str(i)) for i, (f, t, s, link) in enumerate(rows)]
    stories = cluster.merge(entries)
    members = [e.identity for s in stories for e in (s, *s.also)]
    assert sorted(members, key=int) == [e.identity for e in entries]
    for story in stories:
        feeds = Counter(e.source.url for e in (story, *story.also))
        assert max(feeds.values()) == 1  # never two of one feed


# -- the labelled set: precision and recall, measured ------------------------------------


def labelled(links: bool) -> Iterator[tuple[str, Entry, Entry, bool]]:
    data = json.loads(PAIRS.read_text(encoding="utf-8"))
    made: dict[str, Entry] = {}

    def of(key: str) -> Entry:
        if key not in made:
            e = data["entries"][key]
            link = e["link"] if links else None
            made[key] = entry(source(e["feed"]), e["title"], e["summary"], link, ident=key)
        return made[key]

    for whole in data["whole"]:
        same = {tuple(pair) for pair in whole["same"]}
        left = [k for k, e in data["entries"].items() if e["feed"] == whole["a"]]
        right = [k for k, e in data["entries"].items() if e["feed"] == whole["b"]]
        part = f"{whole['a']} × {whole['b']}"
        for a in left:
            for b in right:
                yield part, of(a), of(b), (a, b) in same
    for pair in data["pairs"]:
        part = "own pairs" if pair["a"].startswith("own/") else "corpus negatives"
        yield part, of(pair["a"]), of(pair["b"]), pair["same"]


def measure(links: bool) -> dict[str, Counter[str]]:
    parts: dict[str, Counter[str]] = {}
    for part, a, b, same in labelled(links):
        got = cluster.same_story(a, b)
        outcome = ("tp" if same else "fp") if got else ("fn" if same else "tn")
        parts.setdefault(part, Counter())[outcome] += 1
    return parts


def test_precision_and_recall_on_the_labelled_set() -> None:
    """The figures docs/performance.md states; a change to the rules that moves them
    must update the docs. Precision first: merging two stories hides one."""
    parts = measure(links=True)
    total = sum(parts.values(), Counter())
    assert total["tp"] + total["fp"] + total["fn"] + total["tn"] == 4723
    assert total["fp"] == 0  # precision 1.0
    assert (total["tp"], total["fn"]) == (54, 13)  # recall 54 / 67 = 0.81
    assert parts["df-atom × df-json"]["tp"] == 48  # the same posts: all found
    assert parts["golem × heise"]["tp"] == 0  # reworded reports: beyond "near-identical"


def test_precision_and_recall_by_text_alone() -> None:
    """Links dropped: what the title and summary rule finds by itself."""
    total = sum(measure(links=False).values(), Counter())
    assert total["fp"] == 0
    assert (total["tp"], total["fn"]) == (49, 18)  # recall 49 / 67 = 0.73


# -- in an edition: shown once, "Also in", remembered -----------------------------------------

STORM = "Harbour closes for a week of storm repairs"
STORM_TEXT = "The north quay shuts from Monday while the sea wall is rebuilt; ferries move."


def rss(path: Path, items: list[tuple[str, str, str, str]]) -> str:
    """A feed file of (guid, title, summary, date) items; links under the file's name."""
    body = "".join(
        f"<item><guid>{guid}</guid><title>{title}</title><description>{summary}</description>"
        f"<link>https://{path.stem}.example/{guid}</link><pubDate>{date}</pubDate></item>"
        for guid, title, summary, date in items
    )
    path.write_text(
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>{path.stem}</title>'
        f"{body}</channel></rss>",
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture
def two_feeds(project: Project) -> Project:
    """Two feeds carrying the same story under their own links; B weighs 2."""
    day = "Fri, 27 Nov 2026"
    a = rss(project.folder / "alpha.xml", [
        ("a1", STORM, STORM_TEXT, f"{day} 06:00:00 +0000"),
        ("a2", "A quiet day at the allotment", "Nothing happened.", f"{day} 05:00:00 +0000"),
    ])  # fmt: skip
    b = rss(project.folder / "beta.xml", [
        ("b1", STORM.upper(), STORM_TEXT, f"{day} 04:00:00 +0000"),
        ("b2", "Lighthouse keeper retires", "After forty years.", f"{day} 03:00:00 +0000"),
    ])  # fmt: skip
    project.feed(a, name="Alpha", first_run_window="all")
    project.feed(b, name="Beta", first_run_window="all", weight=2)
    project.subscriber("ada@example.org")
    project.write()
    return project


def test_an_edition_shows_the_story_once_under_its_best_source(two_feeds: Project) -> None:
    from email import message_from_bytes, policy

    report = two_feeds.run(RUN_AT)
    assert report.editions[0].entries == 3  # stories: the storm once, and two others
    (path,) = two_feeds.outbox()
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["Subject"] == f"Test Digest: {STORM.upper()} (+2 more)"  # the lead
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert text.count(STORM.upper()) == 1 and STORM not in text  # once, as Beta has it
    assert "Also in:\n    - Alpha: https://alpha.example/a1" in text
    assert 'Also in: <a href="https://alpha.example/a1">Alpha</a>' in html
    # Alpha's copy went out with the edition: remembered, never new again
    assert two_feeds.run(RUN_AT).editions == ()


def test_preview_explain_says_why_each_story_is_where_it_is(two_feeds: Project) -> None:
    from click.testing import CliRunner

    from digest.cli import main

    result = CliRunner().invoke(main, ["--config", str(two_feeds.path), "preview", "--explain"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(
        'Edition 1: 3 stories (3 in full, 0 headlines), 1 more entries shown as "Also in".'
    )
    lead = out.split("\n\n", 1)[1].splitlines()[:4]
    assert lead[0] == f"  1. LEAD     {STORM.upper()}"
    assert lead[1] == "     from Beta; also in Alpha"
    assert lead[2].startswith("     score ") and "2 sources × weight 2 × recency" in lead[2]
    assert lead[3] == "     why: the best story"
    assert "  2. FULL     " in out and "  3. FULL     " in out
    assert not (two_feeds.folder / "preview.html").exists()  # explained, not rendered


def test_a_reader_who_unticked_the_best_source_gets_the_story_under_the_next() -> None:
    from digest.model import Selection
    from digest.personal import plan, without

    (story,) = cluster.merge([entry(A, RATES, TEXT), entry(B, RATES, TEXT), entry(C, RATES)])
    other = entry(A, "Only in A")
    selection = Selection((story, other), (), ())
    assert titles(without(selection, frozenset({A.url})).items) == [f"B:{RATES}"]
    assert titles(without(selection, frozenset({A.url})).items[0].also) == [f"C:{RATES}"]
    assert without(selection, frozenset({A.url, B.url, C.url})).empty
    kept = without(selection, frozenset({B.url})).items[0]  # A still leads, C is "also"
    assert titles((kept, *kept.also)) == [f"A:{RATES}", f"C:{RATES}"]
    # a reader of none of the story's feeds is planned as one: "also" sources count
    variants = plan(selection, {7: {"skip_feeds": [A.url, B.url, C.url]}})
    assert variants.nothing == frozenset({7})


def test_a_feed_weight_outside_its_range_is_a_config_error(tmp_path: Path) -> None:
    from digest.config import parse_config
    from digest.errors import ConfigError

    from .helpers import base_config

    data = base_config(tmp_path)
    data["feeds"] = [{"url": "https://a.example/feed", "weight": 0}]
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path / "config.toml")
    assert "feeds[0].weight" in str(caught.value) or "feeds.0.weight" in str(caught.value)
