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
from collections.abc import Sequence
from dataclasses import replace

from rapidfuzz import fuzz, process

from .model import Entry

#: Titles at least this similar (0-100) may be one story.
TITLE_SIMILAR = 90.0
#: The share of the shorter summary's words the other must have.
SUMMARY_SHARED = 0.6
#: A title alone (no summary to compare) tells a story apart from this many words up.
MIN_TITLE_WORDS = 5
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
    titles = [_words(e.title) if e.titled else "" for e in entries]
    words = [frozenset(_words(e.summary).split()[:SUMMARY_WORDS]) for e in entries]
    for i, title in enumerate(titles):
        if not title:
            continue
        later = titles[i + 1 :]
        for _, _, k in process.extract(
            title, later, scorer=fuzz.ratio, score_cutoff=TITLE_SIMILAR, limit=None
        ):
            j = i + 1 + k
            if _summaries_agree(words[i], words[j], title):
                join(i, j)
    return join.groups()


def same_story(a: Entry, b: Entry) -> bool:
    """Whether ``a`` and ``b`` (of different feeds) are one story, by the rules above."""
    return len(groups([a, b])) == 1


def _summaries_agree(a: frozenset[str], b: frozenset[str], title: str) -> bool:
    if not a or not b:
        return len(title.split()) >= MIN_TITLE_WORDS
    return len(a & b) >= SUMMARY_SHARED * min(len(a), len(b))


def _words(text: str) -> str:
    """``text`` compared: NFKC, case-folded, words only, one space between them."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def _story(members: list[Entry]) -> Entry:
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
