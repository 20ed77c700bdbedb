"""Which version of an edition each subscriber receives: their preferences, applied.

A subscriber who unticked categories or feeds on the preferences page (stored as
``skip_categories`` and ``skip_feeds``: ``Skips`` writes and reads that format)
receives the edition without those entries.
Decided here, apart from rendering and sending: per subscriber, the set of *this
edition's* feeds they leave out. Everyone who leaves out none of them (usually nearly
everyone) shares the edition itself, variant 0; each distinct set is rendered once, as
variant 1, 2, ...; a subscriber who leaves out every feed with news this time gets no
mail. Nothing here reads a clock or a database.

Each subscriber's frequency and the ledger's cursor decide the rest (``plan_cycle``):
which editions' stories this one brings them (``span``: a daily reader this cycle's,
a weekly reader the week's, someone who switched or whose hour was missed everything
since their cursor, within a week) and what an edition of several cycles contains
(``span_selection``: the stories ranked across them, capped). Each distinct span and
set of left-out feeds is one variant, rendered once, whatever the zones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from . import rank
from .model import Entry, FeedSource, Selection, Variants
from .schedule import DAILY, WEEK, WEEKLY

#: The version of the stored preferences' format.
PREFERENCES_VERSION = 1


@dataclass(frozen=True, slots=True)
class Skips:
    """What one subscriber chose not to receive."""

    categories: frozenset[str] = frozenset()
    feeds: frozenset[str] = frozenset()

    @classmethod
    def of(cls, preferences: Mapping[str, object]) -> Skips:
        """From the stored preferences (unknown or malformed values are ignored)."""
        return cls(
            frozenset(_strings(preferences.get("skip_categories"))),
            frozenset(_strings(preferences.get("skip_feeds"))),
        )

    def stored(self, preferences: Mapping[str, object]) -> dict[str, object]:
        """``preferences`` with these choices written in, as ``of`` reads them back (any
        other key kept)."""
        return {
            **preferences,
            "version": PREFERENCES_VERSION,
            "skip_categories": sorted(self.categories),
            "skip_feeds": sorted(self.feeds),
        }

    def leaves_out(self, source: FeedSource) -> bool:
        return source.url in self.feeds or (
            source.category is not None and source.category in self.categories
        )


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def plan(selection: Selection, preferences: Mapping[int, Mapping[str, object]]) -> Variants:
    """The variants of an edition of ``selection``, for subscribers' ``preferences``
    (subscriber id → stored preferences; those without any need not be listed)."""
    sources = {e.source.url: e.source for e in selection.recorded}
    every = frozenset(sources)
    groups: dict[frozenset[str], list[int]] = {}
    nothing: set[int] = set()
    for subscriber_id, stored in preferences.items():
        skips = Skips.of(stored)
        dropped = frozenset(url for url, source in sources.items() if skips.leaves_out(source))
        if not dropped:
            continue
        if dropped == every:
            nothing.add(subscriber_id)
        else:
            groups.setdefault(dropped, []).append(subscriber_id)
    numbered = sorted(groups, key=sorted)  # the same preferences: the same numbers
    return Variants(
        dropped={n: key for n, key in enumerate(numbered, 1)},
        assigned={s: n for n, key in enumerate(numbered, 1) for s in groups[key]},
        nothing=frozenset(nothing),
    )


def without(selection: Selection, feeds: frozenset[str]) -> Selection:
    """``selection`` minus the entries of ``feeds``; a story left out under its best
    source stays under the next of its "Also in" sources that is kept; headlines move up
    into the places of the items left out, so a variant shows as many in full as the
    edition."""
    kept = [k for e in selection.entries if (k := _kept(e, feeds)) is not None]
    shown = len(selection.items)
    return Selection(
        items=tuple(kept[:shown]),
        more=tuple(kept[shown:]),
        baseline=(),
        duplicates=selection.duplicates,
    )


def _kept(story: Entry, feeds: frozenset[str]) -> Entry | None:
    """``story`` for a reader of all but ``feeds``: under its first source they read."""
    sources = [e for e in (story, *story.also) if e.source.url not in feeds]
    if not sources:
        return None
    return replace(sources[0], also=tuple(replace(e, also=()) for e in sources[1:]))


# -- frequency, spans, weekly editions ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cycle:
    """An edition made for a cycle: its id and its wall-clock time."""

    id: int
    at: datetime


def span(
    frequency: str, cursor: int | None, this: Cycle, earlier: Iterable[Cycle], weekly: bool
) -> frozenset[int] | None:
    """The editions whose stories ``this`` one brings a subscriber (None: it is not
    theirs, a weekly reader's on another day). ``cursor``: the last edition whose
    stories they were given (None: a new subscriber, who starts with this cycle, or
    as a weekly reader with this week's). Never further back than a week."""
    if frequency == WEEKLY and not weekly:
        return None
    if cursor is None and frequency == DAILY:
        return frozenset({this.id})
    floor = -1 if cursor is None else cursor
    back = {c.id for c in earlier if floor < c.id < this.id and c.at > this.at - WEEK}
    return frozenset(back | {this.id})


def rank_for_edition(entries: Iterable[Entry]) -> list[Entry]:
    """How an edition of several cycles orders their stories, best first: ``rank.order``,
    as every edition is ranked. Its order depends only on the stories' ages relative to
    one another, so "now" is the newest story's time (the same order as at any later
    moment)."""
    stories = list(entries)
    if not stories:
        return []
    now = max(e.published for e in stories)
    return [placed.entry for placed in rank.order(stories, now)]


def span_selection(
    stories: Mapping[int, Sequence[Entry]], editions: frozenset[int], max_items: int, cap: int
) -> Selection:
    """What an edition spanning ``editions`` contains: their stories (an update in a
    later one replaces the earlier), ranked, the best ``cap``: ``max_items`` in full,
    the rest as headlines."""
    latest: dict[tuple[str, str], Entry] = {}
    for edition in sorted(editions):
        for entry in stories.get(edition, ()):
            latest[(entry.source.url, entry.identity)] = entry
    ranked = rank_for_edition(latest.values())[:cap]
    return Selection(items=tuple(ranked[:max_items]), more=tuple(ranked[max_items:]), baseline=())


@dataclass(frozen=True, slots=True)
class Reader:
    """One active subscriber as ``plan_cycle`` sees them."""

    span: frozenset[int] | None  # ``span``'s answer; None: not this edition
    skips: Skips = Skips()


@dataclass(frozen=True, slots=True)
class Plan:
    variants: Variants
    selections: Mapping[int, Selection]  # variant number → its content (0: the edition)


def plan_cycle(
    this: int,
    selection: Selection,
    stories: Mapping[int, Sequence[Entry]],
    readers: Mapping[int, Reader],
    max_items: int,
    cap: int,
) -> Plan:
    """The variants of edition ``this`` (content ``selection``) for its ``readers``:
    one per distinct span and set of left-out feeds, numbered in a stable order."""
    own = frozenset({this})
    stories = {**stories, this: selection.entries}
    alike: dict[Reader, list[int]] = {}  # decided once per distinct choice, not per reader
    for subscriber_id, reader in readers.items():
        alike.setdefault(reader, []).append(subscriber_id)
    contents: dict[frozenset[int], Selection] = {own: selection}
    groups: dict[tuple[frozenset[int], frozenset[str]], list[int]] = {}
    nothing: list[int] = []
    later: list[int] = []
    for reader, members in alike.items():
        if reader.span is None:
            later.extend(members)
            continue
        content = contents.get(reader.span)
        if content is None:
            content = span_selection(stories, reader.span, max_items, cap)
            contents[reader.span] = content
        sources = {e.source.url: e.source for e in content.entries}
        dropped = frozenset(url for url, src in sources.items() if reader.skips.leaves_out(src))
        if (dropped and dropped == frozenset(sources)) or (reader.span != own and not sources):
            nothing.extend(members)
        elif (reader.span, dropped) != (own, frozenset()):
            groups.setdefault((reader.span, dropped), []).extend(members)
    numbered = sorted(groups, key=lambda k: (sorted(k[0]), sorted(k[1])))
    selections = {0: selection}
    for n, (editions, dropped) in enumerate(numbered, 1):
        content = contents[editions]
        selections[n] = without(content, dropped) if dropped else content
    variants = Variants(
        dropped={n: key[1] for n, key in enumerate(numbered, 1)},
        assigned={s: n for n, key in enumerate(numbered, 1) for s in groups[key]},
        nothing=frozenset(nothing),
        spans={n: key[0] for n, key in enumerate(numbered, 1) if key[0] != own},
        later=frozenset(later),
    )
    return Plan(variants, selections)
