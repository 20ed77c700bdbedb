"""Build tests/cluster_pairs.json: the labelled set the clustering is measured on.

Run from the repository root (needs ../shared/corpus/real):

    python benchmarks/cluster_labels.py

The set has three parts:

* **whole feed pairs** from ../shared/corpus/real, every cross pair judged by hand:
  golem.de × heise.de (miniflux's ``encoding_ISO-8859-1.xml`` and ``rdf_UTF8.xml``, the
  German news of one day of October 2018, 40 × 60 entries: 13 events both report, each
  in its own words), and Daring Fireball's Atom × JSON feed (48 × 48: the same 48
  posts, whose links differ for 42 of them: the Atom feed links to the story linked);
* **hard negatives** from the corpus: pairs of other feeds whose titles share words
  (``First``, ``Test post``, two Red Dead Redemption 2 articles...);
* **our own pairs**: syndicated copies (a wire story in two papers, cut at different
  lengths, re-punctuated), and different stories that look alike (release notes of two
  versions, weekly threads, the same headline a year apart with another text).

The labels are ours; the entries are the feeds' text, cleaned as digest cleans it.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digest.ingest.clean import clean
from digest.ingest.parse import parse
from digest.model import FeedSource

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "corpus" / "real"
OUT = ROOT / "tests" / "cluster_pairs.json"
NOW = datetime(2026, 12, 1, tzinfo=UTC)

FEEDS = {
    "golem": "miniflux__v2/encoding_ISO-8859-1.xml",
    "heise": "miniflux__v2/rdf_UTF8.xml",
    "df-atom": "Ranchero-Software__NetNewsWire/DaringFireball.atom",
    "df-json": "Ranchero-Software__NetNewsWire/DaringFireball.json",
    "rose": "Ranchero-Software__NetNewsWire/rose.json",
    "scripting": "Ranchero-Software__NetNewsWire/scriptingNews.rss",
    "items": "danmactough__node-feedparser/rss-with-item-scoped-html-base.xml",
    "heraldsun": "rbren__rss-parser/heraldsun.rss",
    "jsonfeed": "feedjira__feedjira/json_feed.json",
    "saxerror": "danmactough__node-feedparser/saxerror.xml",
    "giantbomb": "rbren__rss-parser/giantbomb-podcast.rss",
    "atp": "Ranchero-Software__NetNewsWire/atp.rss",
}
GOLEM_KEPT = 40  # the rest of that file is a French feed glued on

#: golem × heise: the events both report (golem index, heise index).
GOLEM_HEISE = [
    (2, 3), (3, 6), (4, 46), (5, 14), (7, 27), (11, 53), (12, 16), (14, 51), (15, 31),
    (17, 38), (20, 45), (29, 47), (39, 59),
]  # fmt: skip

#: Hard negatives from the corpus: (feed, title) × (feed, title), all different stories.
CORPUS_NEGATIVES = [
    (("items", "First"), ("heraldsun", "The First Item")),
    (("items", "Second"), ("heraldsun", "The Second Item")),
    (("saxerror", "Good Item"), ("heraldsun", "The First Item")),
    (("rose", "JSON Feed"), ("jsonfeed", "JSON Feed")),
    (("df-atom", "★ The 2017 iPad Pros"), ("rose", "My 10.5” iPad Pro (on the go) Homescreen")),
    (("atp", "263: Old Potato"), ("giantbomb", "Giant Bombcast 453: Big Beautiful Baked Potato")),
    (("golem", "Red Dead Redemption 2: Hinweise auf PC-Umsetzung in App von Rockstar Games"),
     ("heise", "Red Dead Redemption 2: Die Entschleunigung des Action-Adventures")),
]  # fmt: skip

WIRE = (
    "The central bank raised its main interest rate by a quarter point on Thursday, "
    "the third increase this year, citing persistent inflation in services and a tight "
    "labour market. Markets had expected the move."
)
OWN: list[tuple[dict[str, str], dict[str, str], bool, str]] = [
    (
        {"title": "Central bank raises rates by a quarter point", "summary": WIRE},
        {"title": "Central Bank Raises Rates by a Quarter-Point", "summary": WIRE[:120] + "…"},
        True,
        "a wire story in two papers: case, hyphen, a shorter cut",
    ),
    (
        {"title": "Central bank raises rates by a quarter point", "summary": WIRE},
        {"title": "Central bank raises rates by a quarter point", "summary": ""},
        True,
        "the same long title, one feed without a summary",
    ),
    (
        {"title": "Central bank raises rates by a quarter point", "summary": WIRE},
        {"title": "UPDATE 1-Central bank raises rates by a quarter point", "summary": WIRE},
        True,
        "a wire update prefix",
    ),
    (
        {"title": "Rust 1.30 released", "summary": "Rust 1.30 brings procedural macros."},
        {"title": "Rust 1.31 released", "summary": "Rust 1.31 is the first Rust 2018 release."},
        False,
        "two versions' release notes",
    ),
    (
        {"title": "Open thread", "summary": ""},
        {"title": "Open thread", "summary": ""},
        False,
        "weekly threads of two blogs, nothing to compare but two words",
    ),
    (
        {"title": "Weekly links", "summary": "Ten things we read this week about gardens."},
        {"title": "Weekly links", "summary": "Our favourite machine learning papers."},
        False,
        "the same short title, other texts",
    ),
    (
        {
            "title": "Apple announces new iPad Pro with faster chip",
            "summary": "The 2017 iPad Pro comes in 10.5 and 12.9 inch sizes with the A10X.",
        },
        {
            "title": "Apple announces new iPad Pro with faster chip",
            "summary": "The 2018 iPad Pro drops the home button and gets USB-C and the A12X.",
        },
        False,
        "the same headline a year apart, another text",
    ),
    (
        {"title": "Ceasefire agreed in talks overnight", "summary": WIRE},
        {"title": "Ceasefire agreed in talks overnight", "summary": WIRE},
        True,
        "identical copies",
    ),
    (
        {"title": "Mozilla ships Firefox 64 with tab management", "summary": ""},
        {"title": "Mozilla ships Firefox 64 with tab management", "summary": ""},
        True,
        "identical long titles, no summaries",
    ),
    (
        {"title": "(untitled)", "summary": "Photo of the day."},
        {"title": "(untitled)", "summary": "Photo of the day."},
        False,
        "untitled entries of two feeds are joined by link only",
    ),
    (
        {"title": "Storm closes schools across the region", "summary": WIRE},
        {"title": "Storm closes schools across the region", "summary": "A different storm, "
         "a different region: the coast road is flooded and the ferries stay in port."},
        False,
        "the same headline over another text",
    ),
    (
        {"title": "Die Bahn streikt am Montag", "summary": "Die Gewerkschaft ruft zum "
         "Streik im Fern- und Regionalverkehr auf; Pendler sollen Alternativen planen."},
        {"title": "Die Bahn streikt am Montag!", "summary": "Die Gewerkschaft ruft zum "
         "Streik im Fern- und Regionalverkehr auf."},
        True,
        "a German copy with punctuation and a shorter cut",
    ),
]  # fmt: skip


def entries_of(feed: str) -> list[dict[str, str | None]]:
    path = REAL / FEEDS[feed]
    parsed = parse(path.read_bytes(), "https://corpus.example/" + FEEDS[feed])
    source = FeedSource("https://corpus.example/" + FEEDS[feed], feed)
    cleaned = [clean(raw, source, feed, NOW) for raw in parsed.entries]
    return [{"title": e.title, "summary": e.summary, "link": e.link} for e in cleaned]


def main() -> None:
    feeds = {name: entries_of(name) for name in FEEDS}
    feeds["golem"] = feeds["golem"][:GOLEM_KEPT]
    entries: dict[str, dict[str, str | None]] = {}

    def add(feed: str, index: int) -> str:
        key = f"{feed}/{index}"
        entries[key] = {"feed": feed, **feeds[feed][index]}
        return key

    whole = []
    for a, b, same in (
        ("golem", "heise", set(GOLEM_HEISE)),
        ("df-atom", "df-json", _same_titles(feeds["df-atom"], feeds["df-json"])),
    ):
        for i in range(len(feeds[a])):
            add(a, i)
        for j in range(len(feeds[b])):
            add(b, j)
        whole.append({"a": a, "b": b, "same": [[f"{a}/{i}", f"{b}/{j}"] for i, j in sorted(same)]})
    pairs = []
    for (fa, ta), (fb, tb) in CORPUS_NEGATIVES:
        ka, kb = add(fa, _find(feeds[fa], ta)), add(fb, _find(feeds[fb], tb))
        pairs.append({"a": ka, "b": kb, "same": False, "why": "corpus: alike, not the same"})
    for n, (a, b, same, why) in enumerate(OWN):
        entries[f"own/{n}a"] = {"feed": "own-a", "link": None, **a}
        entries[f"own/{n}b"] = {"feed": "own-b", "link": None, **b}
        pairs.append({"a": f"own/{n}a", "b": f"own/{n}b", "same": same, "why": why})
    data = {"about": __doc__, "entries": entries, "whole": whole, "pairs": pairs}
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(entries)} entries, {len(whole)} feed pairs, {len(pairs)} pairs")


def _same_titles(
    a: list[dict[str, str | None]], b: list[dict[str, str | None]]
) -> set[tuple[int, int]]:
    """Daring Fireball's two feeds carry the same posts: a title is one post."""
    return {(i, j) for i, x in enumerate(a) for j, y in enumerate(b) if x["title"] == y["title"]}


def _find(entries: list[dict[str, str | None]], title: str) -> int:
    return next(i for i, e in enumerate(entries) if e["title"] == title)


if __name__ == "__main__":
    main()
