"""How long rendering an edition takes, against one plain template render of it.

    python benchmarks/render.py [--sizes 10,30,200,1000] [--repeat 5]

For each edition size it times, in the same run:

- baseline: one Jinja2 render of the whole edition's HTML, no CSS inlining, no budget;
- compose: what a run does: the size budget's renders (each inlined), the text part,
  the subject;
- personalize: filling in one recipient's links (done once per recipient);
- page: the archive page, every story listed (rendered once per edition, with it).

It prints the ratios to the baseline (the machine is shared and noisy: compare ratios,
not milliseconds). Results: docs/performance.md, "Rendering an edition".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digest.mail.markers import personalize
from digest.model import Entry, FeedSource, Selection
from digest.render.edition import HTML_TEMPLATE, Renderer, RenderSettings

NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
VALUES = {
    "unsubscribe_url": "https://digest.example.org/unsubscribe/123456." + "x" * 43,
    "preferences_url": "https://digest.example.org/preferences/123456." + "x" * 43,
    "email": "someone@example.org",
    "name": "Someone",
}


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


class Counting(Renderer):
    """Counts the HTML renders the size budget asks for."""

    renders = 0

    def html(self, context: Mapping[str, Any]) -> str:
        self.renders += 1
        return super().html(context)


def best(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times) if repeat < 3 else statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,30,200,1000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    renderer = Counting(
        RenderSettings(title="Bench", base_url="https://digest.example.org", postal_address="1 St")
    )
    print(
        f"{'entries':>7} {'html KB':>8} {'renders':>7} {'baseline ms':>11} "
        f"{'compose ms':>10} {'compose/base':>12} {'personalize ms':>14} {'pers./base':>10} "
        f"{'page KB':>8} {'page ms':>8} {'page/base':>9}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        chosen = selection(n)
        context = renderer.context(1, chosen, NOW, "bench")
        template = renderer.html_env.get_template(HTML_TEMPLATE)
        template.render(context)  # warm up: compiled templates, Babel's locale data
        baseline = best(args.repeat, lambda: template.render(context))  # noqa: B023
        renderer.renders = 0
        composed = renderer.compose(1, chosen, NOW, "bench")
        tried = renderer.renders
        compose = best(args.repeat, lambda: renderer.compose(1, chosen, NOW, "bench"))  # noqa: B023
        person = best(args.repeat, lambda: personalize(composed, VALUES))  # noqa: B023
        size = len(personalize(composed, VALUES)[0].encode()) / 1000
        page = best(args.repeat, lambda: renderer.page(1, chosen, NOW, "bench"))  # noqa: B023
        page_size = len(renderer.page(1, chosen, NOW, "bench").encode()) / 1000
        print(
            f"{n:>7} {size:>8.1f} {tried:>7} {baseline * 1000:>11.2f} {compose * 1000:>10.2f} "
            f"{compose / baseline:>12.1f} {person * 1000:>14.3f} {person / baseline:>10.3f} "
            f"{page_size:>8.1f} {page * 1000:>8.1f} {page / baseline:>9.1f}"
        )


if __name__ == "__main__":
    main()
