"""A fixed sample edition: what ``digest check`` renders the templates against, what
``digest preview --sample`` shows, and what the golden files and screenshots are made of.

It exercises every path of a template: groups, a feed without a category, thumbnails,
an entry with no link, one with no date, markup-like characters in a title, a long
title, a long summary, a story other feeds carry too ("Also in"), and headlines
under "more stories".
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from ..model import Entry, FeedSource, Selection

IMAGES = "https://images.example.org/digest-sample"
_ALSO_LINK = "https://letters.example.org/2026/crane-schedule"

_TECH = FeedSource("https://harbour.example.org/feed.rss", "Harbour Tech Notes", "Technology")
_SCIENCE = FeedSource("https://fieldnotes.example.org/atom.xml", None, "Science")
_GARDEN = FeedSource("https://allotment.example.org/rss", None, "Gardening")
_LOOSE = FeedSource("https://letters.example.org/feed.json")

_ENTRIES: list[tuple[FeedSource, str, str, str | None, str, float, str | None, bool]] = [
    # source, feed title, title, link, summary, hours ago, thumbnail, dated
    (
        _TECH,
        "Harbour Tech Notes",
        "The new crane schedule, explained",
        "https://harbour.example.org/2026/crane-schedule",
        "From Monday the two container cranes on the north quay work in alternating "
        "shifts. Here is what changes for the ferries, why the night shift gets longer, "
        "and how the harbour office will tell you when a berth is late.",
        1.5,
        f"{IMAGES}/crane.png",
        True,
    ),
    (
        _SCIENCE,
        "Field Notes",
        "Counting glaciers from orbit: what ten years of images show",
        "https://fieldnotes.example.org/posts/glaciers",
        "A decade of satellite photographs, one glacier per pixel row. The surprising "
        "part is not how much ice was lost but where: the small glaciers of the coast "
        "went first, and the big ones inland have barely moved.",
        3,
        f"{IMAGES}/glacier.png",
        True,
    ),
    (
        _TECH,
        "Harbour Tech Notes",
        "Tides & <tidal> power: the numbers behind the barrage",
        "https://harbour.example.org/2026/barrage?utm=none&page=2",
        "Two turbines, one sluice and a lot of arithmetic. We ran the figures the "
        "council published and found that the barrage would light 4,000 homes on an "
        "average day and 11,000 at a spring tide.",
        5,
        None,
        True,
    ),
    (
        _GARDEN,
        "Allotment Diary",
        "Leaf mould: the slowest, best compost there is",
        "https://allotment.example.org/leaf-mould",
        "Bag the autumn leaves, poke a few holes, and forget them for two years.",
        7,
        f"{IMAGES}/leaves.png",
        True,
    ),
    (
        _SCIENCE,
        "Field Notes",
        "Why the starlings gather over the pier at dusk, and why this year's murmuration "
        "was the largest anyone on the committee can remember",
        "https://fieldnotes.example.org/posts/starlings",
        "Safety in numbers, warmth in numbers, and a good deal of gossip.",
        9,
        None,
        True,
    ),
    (
        _LOOSE,
        "Letters to the Editor",
        "A reader writes about the lighthouse",
        None,
        "The lamp has been dark three nights this month. Who do we write to?",
        11,
        None,
        False,
    ),
    (
        _GARDEN,
        "Allotment Diary",
        "Garlic goes in now",
        "https://allotment.example.org/garlic",
        "Plant the cloves pointed end up, a hand apart, before the first frost.",
        20,
        None,
        True,
    ),
    # headlines: "more stories"
    (
        _TECH,
        "Harbour Tech Notes",
        "Ferry timetable API: version 2",
        "https://harbour.example.org/2026/api-v2",
        "",
        26,
        None,
        True,
    ),
    (
        _SCIENCE,
        "Field Notes",
        "Seal pups on the sandbank",
        "https://fieldnotes.example.org/posts/seals",
        "",
        30,
        None,
        True,
    ),
    (
        _GARDEN,
        "Allotment Diary",
        "Mending a water butt",
        "https://allotment.example.org/water-butt",
        "",
        40,
        None,
        True,
    ),
]

#: Entries of the sample shown in full (the rest are headlines).
SHOWN = 7


def entries(now: datetime) -> list[Entry]:
    out = []
    for i, (source, feed, title, link, summary, hours, thumb, dated) in enumerate(_ENTRIES):
        out.append(
            Entry(
                source=source,
                source_title=feed,
                identity=f"sample-{i}",
                title=title,
                link=link,
                canonical_link=link,
                summary=summary,
                content_html=f"<p>{summary}</p>",
                published=now - timedelta(hours=hours),
                dated=dated,
                author="M. Quayle" if i == 0 else None,
                thumbnail=thumb,
            )
        )
    return out


def selection(now: datetime) -> Selection:
    """The sample edition as ``pick`` would hand it over: its lead is carried by two more
    feeds, shown as "Also in" (one of them without a link)."""
    every = entries(now)
    lead = every[0]
    also = (
        replace(lead, source=_LOOSE, source_title="Harbour Letters", link=_ALSO_LINK),
        replace(lead, source=_SCIENCE, source_title="Field Notes", link=None),
    )
    every[0] = replace(lead, also=tuple(replace(e, canonical_link=e.link) for e in also))
    return Selection(tuple(every[:SHOWN]), tuple(every[SHOWN:]), ())
