"""What the size budget costs, before (galloping search, decoded bytes) and now, in one run.

    python benchmarks/budget.py [--sizes 200,1000,5000] [--repeat 5] [--headlines-per-group 10]

For each edition size (20 stories in full, the rest new entries for the headlines; the
same entries as ``benchmarks/render.py``) it times ``Renderer.compose`` twice in the
same process:

- before: the search as it was until this change (``galloping_fit`` below, a copy),
  measuring decoded UTF-8 bytes: try every entry as a headline with fewer and fewer
  stories in full, then gallop up and halve over the headline count;
- now: ``digest/render/budget.py``: summaries, thumbnails, headlines, then stories
  given up, each count found by interpolation from the sizes measured, each size what
  is transmitted (encoded, with the links' allowance);

and, as the floor any budget pays, ``compose`` told the chosen plan: one HTML render,
the text part and the subject. With ``email.headlines_per_group`` (10 by default, 4
groups here) the e-mail lists at most 40 headlines; ``--headlines-per-group 100000``
leaves the size budget alone to decide. It prints
renders, the entries those renders held in all, the times and the ratios (the machine is
shared and noisy: compare ratios). Results: docs/performance.md, "The size budget".
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digest.model import Entry, FeedSource, Selection
from digest.render import budget, edition
from digest.render.budget import Plan
from digest.render.edition import Renderer, RenderSettings

NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)


def selection(n: int, max_items: int = 20) -> Selection:
    entries = []
    for i in range(n):
        source = FeedSource(f"https://feed{i % 12}.example.org/rss", None, f"Topic {i % 4}")
        entries.append(
            Entry(
                source=source,
                source_title=f"The Feed Number {i % 12}",
                identity=f"id{i}",
                title=f"Story {i}: a long headline of the kind news sites like to write",
                link=f"https://news-{i % 12}.example.org/2026/11/28/story-{i}?ref=rss",
                canonical_link=None,
                summary=("A summary sentence with a good many words, repeated. " * 8)[:300],
                content_html="",
                published=NOW - timedelta(minutes=7 * i),
                dated=True,
                thumbnail=f"https://cdn.example.org/img/{i}.jpg" if i % 2 else None,
            )
        )
    return Selection(tuple(entries[:max_items]), tuple(entries[max_items:]), ())


# -- before: the galloping search over decoded bytes (digest/render/budget.py until then) --

FLOOR, PROBE, FIRST_STEP = 5, 256, 1 / 64


def galloping_fit(items: int, total: int, fits: Callable[[Plan], bool]) -> tuple[Plan, bool]:
    def all_listed(full: int, short: bool) -> bool:
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
    if full >= floor:
        return Plan(full, total - full, short=True), True
    full = _largest(0, floor, lambda k: fits(Plan(k, 0, short=True)))
    if full < 0:
        return Plan(0, 0, short=True), False
    listed = _largest(0, total - full, lambda m: fits(Plan(full, m, short=True)))
    return Plan(full, listed, short=True), True


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int:
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


class Before(Renderer):
    """The renderer with the search and the measure it had before."""

    def size(self, html_part: str, nonce: str) -> int:
        return len(html_part.encode("utf-8")) + html_part.count(f"%%{nonce}.") * 200


def before_fit(
    items: int, total: int, size_of: Callable[[Plan], int], limit: int, *_listable: object
) -> tuple[Plan, bool]:
    return galloping_fit(items, total, lambda plan: size_of(plan) <= limit)


# -- measuring -------------------------------------------------------------------------------


class Counted:
    """Counts the HTML renders and the entries they held (stories plus headlines)."""

    def __init__(self, renderer: Renderer) -> None:
        self.renders = self.entries = 0
        html = renderer.html

        def counting_html(made: Mapping[str, Any]) -> str:
            self.renders += 1
            view = made["edition"]
            self.entries += len(view.items) + len(view.more)
            return html(made)

        renderer.html = counting_html  # type: ignore[method-assign]


def best(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)  # the least disturbed run: the machine is shared


def measure(renderer: Renderer, chosen: Selection, repeat: int) -> tuple[float, int, int, Plan]:
    counted = Counted(renderer)
    plans: list[Plan] = []
    fit = edition.budget.fit

    def recording(*args: Any) -> tuple[Plan, bool]:
        plan, ok = fit(*args)
        plans.append(plan)
        return plan, ok

    edition.budget.fit = recording  # type: ignore[assignment]
    try:
        renderer.compose(1, chosen, NOW, "bench")
    finally:
        edition.budget.fit = fit  # type: ignore[assignment]
    renders, entries = counted.renders, counted.entries
    seconds = best(repeat, lambda: renderer.compose(1, chosen, NOW, "bench"))
    return seconds, renders, entries, plans[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,1000,5000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--headlines-per-group",
        type=int,
        default=10,
        help="email.headlines_per_group (10, the default; 100000: no cap, the budget decides)",
    )
    args = parser.parse_args()
    settings = RenderSettings(
        title="Bench",
        base_url="https://digest.example.org",
        postal_address="1 St",
        headlines_per_group=args.headlines_per_group,
    )
    print(
        f"{'entries':>7} | {'before: renders':>15} {'entries':>7} {'ms':>7} | "
        f"{'now: renders':>12} {'entries':>7} {'ms':>7} | {'floor ms':>8} | "
        f"{'before/now':>10} {'now/floor':>9} | plan now"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        chosen = selection(n)
        now = Renderer(settings)
        now.compose(1, selection(30), NOW, "warm")  # compiled templates, Babel's data
        after, renders, entries, plan = measure(now, chosen, args.repeat)
        old = Before(settings)
        real_fit = budget.fit
        edition.budget.fit = before_fit  # type: ignore[assignment]
        try:
            then, old_renders, old_entries, _ = measure(old, chosen, args.repeat)
        finally:
            edition.budget.fit = real_fit  # type: ignore[assignment]
        edition.budget.fit = lambda *_: (plan, True)  # type: ignore[assignment]  # noqa: B023
        try:  # the floor: compose told the plan (one HTML render, the text part, the subject)
            floor = best(args.repeat, lambda: now.compose(1, chosen, NOW, "bench"))  # noqa: B023
        finally:
            edition.budget.fit = real_fit  # type: ignore[assignment]
        print(
            f"{n:>7} | {old_renders:>15} {old_entries:>7} {then * 1000:>7.1f} | "
            f"{renders:>12} {entries:>7} {after * 1000:>7.1f} | {floor * 1000:>8.1f} | "
            f"{then / after:>10.1f} {after / floor:>9.1f} | "
            f"{plan.full} full, {plan.listed} listed, short={plan.short}, "
            f"thumbnails={plan.thumbnails}"
        )


if __name__ == "__main__":
    main()
