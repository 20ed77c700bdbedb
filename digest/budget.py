"""How much of an edition fits in one e-mail: the size budget, decided apart from rendering.

Gmail clips an HTML part over about 102 KB, hiding the footer with the unsubscribe link
and the postal address. An edition is kept under its budget (90 KB by default, after
CSS inlining) in this order of importance:

1. the items ``pick`` chose, in full (summaries as cleaned);
2. the same with every summary shortened;
3. fewer items in full: the ones that do not fit become headlines in "more stories",
   ahead of the headlines already there;
4. fewer headlines: the rest is counted, with a link to the edition in the archive.

Nothing new is dropped silently: every entry is shown, listed or counted. The sizes
come from really rendering each candidate (``fits``), so an operator's own template is
budgeted as exactly as the default one; a binary search keeps that to a few renders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Summaries are shortened to this many characters when the full ones do not fit.
SHORT_SUMMARY = 160


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
    plan = Plan(items, total - items)
    if fits(plan):
        return plan, True
    plan = Plan(items, total - items, short=True)
    if items and fits(plan):
        return plan, True
    full = _largest(0, items, lambda k: fits(Plan(k, 0, short=True)))
    if full < 0:
        return Plan(0, 0, short=True), False
    rest = total - full
    listed = _largest(0, rest, lambda m: fits(Plan(full, m, short=True)))
    return Plan(full, max(listed, 0), short=True), True


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The largest n in [low, high] with ok(n), for ok true up to some n and false after
    it; ``low - 1`` when ok(low) is false."""
    if not ok(low):
        return low - 1
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low
