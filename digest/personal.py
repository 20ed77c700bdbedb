"""Which version of an edition each subscriber receives: their preferences, applied.

A subscriber who unticked categories or feeds on the preferences page (stored as
``skip_categories`` and ``skip_feeds``: ``Skips`` writes and reads that format)
receives the edition without those entries.
Decided here, apart from rendering and sending: per subscriber, the set of *this
edition's* feeds they leave out. Everyone who leaves out none of them (usually nearly
everyone) shares the edition itself, variant 0; each distinct set is rendered once, as
variant 1, 2, ...; a subscriber who leaves out every feed with news this time gets no
mail. Nothing here reads a clock or a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from .model import Entry, FeedSource, Selection, Variants

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
