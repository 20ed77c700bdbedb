"""How much of an edition fits in one e-mail: the size budget, decided apart from rendering.

Gmail clips an HTML part over about 102 KB, hiding the footer with the unsubscribe link
and the postal address. An edition is kept under its budget (90 KB by default, after
CSS inlining) by giving up, in this order, what matters least:

1. full summaries: every summary is shortened;
2. items in full: the last items become headlines, at the top of "more stories", as
   long as every entry then has its headline (and at least ``FLOOR`` items stay);
3. headlines: when even that does not fit, ``FLOOR`` items stay in full, as many
   headlines as fit follow, and the rest is counted, with a link to the edition in
   the archive.

Nothing new is dropped silently: every entry is shown, listed or counted. The sizes
come from really rendering each candidate (``fits``), so an operator's own template is
budgeted as exactly as the default one. Rendering costs what it shows, so the searches
start small: a listing of thousands of headlines is only rendered when a shorter one
fitted, and the largest count that fits is found by galloping up from below, then
halving (a few small renders, not a binary search from the top).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Summaries are shortened to this many characters when the full ones do not fit.
SHORT_SUMMARY = 160
#: Items kept in full before any headline is given up for a count.
FLOOR = 5
#: The first shorter listing tried before rendering every headline (then 4×, 16×...).
PROBE = 256
#: Galloping starts with steps of this fraction of the range searched.
FIRST_STEP = 1 / 64


@dataclass(frozen=True, slots=True)
class Plan:
    """Of an edition's entries in order, the first ``full`` are shown in full, the next
    ``listed`` as headlines, and the rest counted."""

    full: int
    listed: int
    short: bool = False  # summaries shortened to SHORT_SUMMARY characters

    def hidden(self, total: int) -> int:
        return total - self.full - self.listed


def fit(items: int, total: int, fits: Callable[[Plan], bool]) -> tuple[Plan, bool]:
    """The best plan for ``items`` full items among ``total`` entries, and whether it
    fits. When even the bare edition (nothing shown, everything counted) is over the
    budget, that bare plan is returned with False: an oversized mail beats none."""

    def all_listed(full: int, short: bool) -> bool:
        """Whether ``full`` items and every other entry as a headline fit; refused
        early, from a cheaper render, where fewer headlines are already too many."""
        probe = PROBE
        while probe < total - full:
            if not fits(Plan(full, probe, short)):
                return False
            probe *= 4
        return fits(Plan(full, total - full, short))

    plan = Plan(items, total - items)
    ok = all_listed(items, False)
    if ok or not total:
        return plan, ok
    if items and all_listed(items, True):
        return Plan(items, total - items, short=True), True
    floor = min(items, FLOOR)
    full = _largest(floor, items, lambda k: all_listed(k, True))
    if full >= floor:  # every entry keeps at least its headline
        return Plan(full, total - full, short=True), True
    full = _largest(0, floor, lambda k: fits(Plan(k, 0, short=True)))
    if full < 0:
        return Plan(0, 0, short=True), False
    listed = _largest(0, total - full, lambda m: fits(Plan(full, m, short=True)))
    return Plan(full, listed, short=True), True


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The largest n in [low, high] with ok(n), for ok true up to some n and false after
    it; ``low - 1`` when ok(low) is false. Galloping up from ``low`` first (low + s,
    low + 3s, low + 7s...), so large n are tried only once smaller ones passed."""
    if not ok(low):
        return low - 1
    step = max(1, int((high - low) * FIRST_STEP))
    while low < high:
        probe = min(low + step, high)
        if not ok(probe):
            high = probe - 1
            break
        low, step = probe, step * 2
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low
