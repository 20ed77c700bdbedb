"""Editions made from a fixed snapshot of real feeds (``snapshot.json``, made by
``make_snapshot.py`` from ../shared/corpus/real; SOURCES.md says where each comes from).

Three volumes of the same feeds, as on a quiet, a normal and a heavy news day: about
10, 60 and 600 new entries. ``pick`` chooses what is shown, as in a run.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from digest.model import Entry, FeedEntries, FeedSource, Known, Selection
from digest.pick import pick

HERE = Path(__file__).resolve().parent
#: volume → (which feeds of the snapshot, by index; how many of each feed's newest)
VOLUMES: dict[str, tuple[slice | tuple[int, ...], int]] = {
    "real-10": ((0, 1, 7, 15, 2), 2),  # the Guardian, Urdu, heise, Chinese, Slovak
    "real-60": (slice(0, None, 2), 4),  # every other feed, 4 entries each
    "real-600": (slice(None), 1000),  # everything: 29 feeds, 614 entries
}


@cache
def snapshot() -> dict[str, Any]:
    return json.loads((HERE / "snapshot.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def feeds(volume: str) -> list[FeedEntries]:
    chosen, newest = VOLUMES[volume]
    every = snapshot()["feeds"]
    picked = every[chosen] if isinstance(chosen, slice) else [every[i] for i in chosen]
    taken = datetime.fromisoformat(snapshot()["taken"])
    out = []
    for feed in picked:
        source = FeedSource(feed["url"], feed["name"], feed.get("category"), None)
        entries = tuple(
            _entry(source, feed["name"], i, raw, taken)
            for i, raw in enumerate(feed["entries"][:newest])
        )
        out.append(FeedEntries(source, entries, first_run=False))
    return out


def _entry(source: FeedSource, name: str, i: int, raw: dict[str, Any], taken: datetime) -> Entry:
    published = raw.get("published")
    return Entry(
        source=source,
        source_title=name,
        identity=f"{i}",
        title=raw["title"],
        link=raw.get("link"),
        canonical_link=raw.get("link"),
        summary=raw.get("summary", ""),
        content_html="",
        published=datetime.fromisoformat(published) if published else taken,
        dated=published is not None,
        author=raw.get("author"),
        thumbnail=raw.get("thumbnail"),
        language=raw.get("language"),
    )


def selection(volume: str, now: datetime, max_items: int = 20, per_feed: int = 5) -> Selection:
    """What ``pick`` makes of the volume's entries: none known yet, all new."""
    return pick(feeds(volume), Known(), now, max_items, per_feed)
