"""Decider · rank: which story leads, which are shown in full, in what order. Pure: no
I/O, no clock, no config.

A story (an entry, with the same story from other feeds as its ``also``: ``cluster``)
scores the product of four factors (``Score``)::

    value = sources × weight × recency × flood

* **sources**: how many feeds carry the story (1 + ``len(entry.also)``): a story three
  feeds report is worth three of one;
* **weight**: the operator's weight of the feed it is shown under (``feeds[].weight``,
  default 1);
* **recency**: halves every ``HALF_LIFE_HOURS`` of age since published. An undated
  entry counts from when digest first saw it (``Entry.published`` holds that time;
  ``dated`` is False), at ``UNDATED`` of that: a date a feed does not give never makes
  its entry the newest;
* **flood**: a feed's best story has 1, its next ``FLOOD``, then ``FLOOD²``...: one
  feed posting forty stories does not fill the edition.

Stories go best first; equal values keep the order they came in (the config's feed
order, then each feed's own order), so undated entries keep their feed's order. The
**lead** is the best story with a title (an untitled one never names the edition in
the subject); the next go in full while ``max_items`` and ``max_items_per_feed`` allow,
the rest are headlines. ``order`` returns every story with its score, its place and
the reason in words: ``digest preview --explain`` prints them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from .model import Entry, Place, Placed, Score

#: Recency halves with every this many hours of age.
HALF_LIFE_HOURS = 24.0
#: An undated entry counts this share of the recency of when it was first seen.
UNDATED = 0.5
#: Each further story of one feed counts this much less than the one above it.
FLOOD = 0.7
_LOG_UNDATED, _LOG_FLOOD = math.log(UNDATED), math.log(FLOOD)


def order(
    stories: Sequence[Entry],
    now: datetime,
    max_items: int | None = None,
    max_items_per_feed: int | None = None,
) -> tuple[Placed, ...]:
    """Every story of ``stories``, best first, placed: the lead, then the stories in
    full (at most ``max_items`` in all and ``max_items_per_feed`` of one feed; None:
    no cap), then the headlines. Weekly editions and any other caller rank with this."""
    scores = _scores(stories, now)
    ranked = sorted(range(len(stories)), key=lambda i: (-scores[i].log, i))
    lead = next((n for n, i in enumerate(ranked) if stories[i].titled), 0)
    if ranked:
        ranked.insert(0, ranked.pop(lead))
    placed: list[Placed] = []
    shown: dict[str, int] = {}
    for i in ranked:
        entry = stories[i]
        place, reason = _place(entry, len(placed), lead, shown, max_items, max_items_per_feed)
        if place is not Place.HEADLINE:
            shown[entry.source.url] = shown.get(entry.source.url, 0) + 1
        placed.append(Placed(entry, scores[i], place, reason))
    return tuple(placed)


def score(entry: Entry, now: datetime, above: int = 0) -> Score:
    """The score of one story, with ``above`` stories of its feed ranked above it."""
    age = max(0.0, (now - entry.published).total_seconds() / 3600)
    log_recency = -age / HALF_LIFE_HOURS * math.log(2) + (0.0 if entry.dated else _LOG_UNDATED)
    sources = 1 + len(entry.also)
    weight = entry.source.weight
    log = math.log(sources) + math.log(weight) + log_recency + above * _LOG_FLOOD
    recency, flood = math.exp(log_recency), FLOOD**above
    return Score(sources, weight, round(age, 2), recency, flood, math.exp(log), log)


def _scores(stories: Sequence[Entry], now: datetime) -> list[Score]:
    """Each story's score: within a feed, its stories ranked by the rest of the score
    take the flood penalty in that order (so the penalty never reorders a feed)."""
    alone = [score(e, now) for e in stories]
    by_feed: dict[str, list[int]] = {}
    for i, entry in enumerate(stories):
        by_feed.setdefault(entry.source.url, []).append(i)
    scores = list(alone)
    for members in by_feed.values():
        members.sort(key=lambda i: (-alone[i].log, i))
        for above, i in enumerate(members):
            scores[i] = score(stories[i], now, above)
    return scores


def _place(
    entry: Entry,
    rank: int,
    lead: int,
    shown: dict[str, int],
    max_items: int | None,
    max_items_per_feed: int | None,
) -> tuple[Place, str]:
    total = sum(shown.values())
    if max_items is not None and total >= max_items:
        return Place.HEADLINE, f"max_items: {max_items} stories are in full already"
    of_feed = shown.get(entry.source.url, 0)
    if max_items_per_feed is not None and of_feed >= max_items_per_feed:
        return (
            Place.HEADLINE,
            f"max_items_per_feed: {of_feed} of {entry.source_title} are in full already",
        )
    if rank == 0:
        if lead:
            return Place.LEAD, f"the best story with a title ({lead} untitled ranked above)"
        return Place.LEAD, "the best story"
    return Place.FULL, f"number {rank + 1} of the ranking"
