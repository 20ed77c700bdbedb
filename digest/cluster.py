"""Decider · cluster: the same story from several feeds, shown once. Pure: no I/O, no clock.

Two entries of **different feeds** are the same story when

* their canonical links are equal (the link cleaned of tracking, ``ingest.links``), or
* their titles are near-identical (rapidfuzz's normalized Indel similarity of the
  titles, case-folded and without punctuation, at least ``TITLE_SIMILAR``) and their
  summaries agree: at least ``SUMMARY_SHARED`` of the words of the shorter summary are
  in the other (one feed may cut its summary shorter). Where either summary is empty,
  the title alone must be long enough to tell stories apart (``MIN_TITLE_WORDS``):
  "Open thread" or "Release notes" from two feeds are two stories.

Sameness joins transitively (A like B, B like C: one story), but a story never holds two
entries of one feed: within a feed, what is the same is ``pick``'s dedup. Untitled
entries are joined only by link. The story is shown under its **best source**: the
feed with the highest ``weight``, then a dated entry before an undated one, then the
feed listed first in the config (then the entry first in its feed); the others are
its ``also`` ("Also in: B, C"), in the order they came.

docs/design.md says why this method, and docs/performance.md what it measured: its
precision and recall on the labelled pairs of ``tests/cluster_pairs.json``, and its
cost per 1,000 entries (``benchmarks/rank_cluster.py``).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from rapidfuzz import fuzz

from .model import Entry

#: Titles at least this similar (0-100) may be one story.
TITLE_SIMILAR = 90.0
#: The share of the shorter summary's words the other must have.
SUMMARY_SHARED = 0.6
#: A title alone (no summary to compare) tells a story apart from this many words up.
MIN_TITLE_WORDS = 5
#: Titles are compared when one holds one of the other's this many rarest words.
KEY_WORDS = 2
#: A word in more titles than this is too common to find titles alike by.
MAX_KEY_TITLES = 20
#: The words of a summary compared (the start: feeds cut summaries at different lengths).
SUMMARY_WORDS = 60

_WORD = re.compile(r"\w+")


def merge(entries: Sequence[Entry]) -> tuple[Entry, ...]:
    """The stories among ``entries`` (in the config's feed order, each feed's in its
    own order): one entry per story, its best source, with the others as its ``also``.
    A story takes the place of its first entry."""
    return tuple(_story([entries[i] for i in group]) for group in groups(entries))


def groups(entries: Sequence[Entry]) -> list[list[int]]:
    """The indices of ``entries`` that are one story, each group in order, the groups
    in order of their first entry."""
    join = _Joiner(entries)
    first_with_link: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if entry.canonical_link is not None:
            join(first_with_link.setdefault(entry.canonical_link, i), i)
    words: dict[int, frozenset[str]] = {}
    for i, j in _pairs_alike(entries):
        for k in (i, j):
            if k not in words:
                words[k] = summary(entries[k])
        if _summaries_agree(words[i], words[j], entries[i].title):
            join(i, j)
    return join.groups()


def _pairs_alike(entries: Sequence[Entry]) -> list[tuple[int, int]]:
    """The pairs (i < j) of entries of different feeds whose titles are near-identical,
    in order. Each distinct title is compared once with the titles that hold one of its
    ``KEY_WORDS`` rarest words (or whose rarest words it holds): near-identical titles
    share nearly all their words, so this loses none of the labelled set, and spares
    comparing every title with every other (docs/performance.md)."""
    alike: dict[str, list[int]] = {}  # a title, compared → the entries with it
    for i, entry in enumerate(entries):
        if entry.titled and (title := _words(entry.title)):
            alike.setdefault(title, []).append(i)
    titles = list(alike)
    pairs: set[tuple[int, int]] = set()
    for a, b in _candidates(titles):
        if a == b or fuzz.ratio(titles[a], titles[b], score_cutoff=TITLE_SIMILAR):
            pairs.update(
                (min(i, j), max(i, j))
                for i in alike[titles[a]]
                for j in alike[titles[b]]
                if entries[i].source.url != entries[j].source.url
            )
    return sorted(pairs)


def _candidates(titles: Sequence[str]) -> set[tuple[int, int]]:
    """Pairs (a <= b) of ``titles`` where one holds one of the other's rarest words,
    and each title with itself. A title whose rarest words are common (in more than
    ``MAX_KEY_TITLES`` titles: "Giant Bombcast 01-01-2013") is only compared with
    itself: the cost stays near linear, whatever the titles."""
    split = [t.split() for t in titles]
    frequency = Counter(w for ws in split for w in set(ws))
    holding: dict[str, list[int]] = {}
    for a, ws in enumerate(split):
        for w in set(ws):
            holding.setdefault(w, []).append(a)
    pairs = {(a, a) for a in range(len(titles))}
    for a, ws in enumerate(split):
        for key in sorted(set(ws), key=lambda w: (frequency[w], w))[:KEY_WORDS]:
            if frequency[key] <= MAX_KEY_TITLES:
                pairs.update((min(a, b), max(a, b)) for b in holding[key])
    return pairs


def summary(entry: Entry) -> frozenset[str]:
    """The words of the start of ``entry``'s summary, compared."""
    return frozenset(_words(entry.summary).split()[:SUMMARY_WORDS])


def same_story(a: Entry, b: Entry) -> bool:
    """Whether ``a`` and ``b`` (of different feeds) are one story, by the rules above."""
    return len(groups([a, b])) == 1


def _summaries_agree(a: frozenset[str], b: frozenset[str], title: str) -> bool:
    if not a or not b:
        return len(_words(title).split()) >= MIN_TITLE_WORDS
    return len(a & b) >= SUMMARY_SHARED * min(len(a), len(b))


def _words(text: str) -> str:
    """``text`` compared: NFKC, case-folded, words only, one space between them."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def _story(members: list[Entry]) -> Entry:
    if len(members) == 1:
        return members[0]
    best = min(
        range(len(members)),
        key=lambda i: (-members[i].source.weight, not members[i].dated, i),
    )
    others = tuple(replace(m, also=()) for i, m in enumerate(members) if i != best)
    return replace(members[best], also=others)


class _Joiner:
    """Union-find over entry indices; a group never holds two entries of one feed."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.parent = list(range(len(entries)))
        self.feeds = [{e.source.url} for e in entries]

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def __call__(self, i: int, j: int) -> None:
        a, b = self.root(i), self.root(j)
        if a == b or self.feeds[a] & self.feeds[b]:
            return
        a, b = min(a, b), max(a, b)  # the root is the group's first entry
        self.parent[b] = a
        self.feeds[a] |= self.feeds[b]

    def groups(self) -> list[list[int]]:
        found: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            found.setdefault(self.root(i), []).append(i)
        return list(found.values())
