"""The size budget: every edition fits under 90 KB of HTML, and nothing new is dropped."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from digest.mail.markers import personalize, unused_markers
from digest.model import Entry, FeedSource, Selection
from digest.render.budget import Plan, fit
from digest.render.edition import Renderer, RenderSettings

from .helpers import NOW
from .html_tree import Html

BUDGET = 90_000
# Real personal values are long: a signed token in each link.
VALUES = {
    "unsubscribe_url": "https://digest.example.org/unsubscribe/123456." + "x" * 43,
    "preferences_url": "https://digest.example.org/preferences/123456." + "x" * 43,
    "email": "someone.with.a.rather.long.address@subdomain.example.org",
    "name": "Someone With A Long Name",
}


# -- the plan, with a cost model standing in for rendering ----------------------------------


def model(item: int, short_item: int, headline: int, base: int, budget: int):  # type: ignore[no-untyped-def]
    def fits(plan: Plan) -> bool:
        cost = base + plan.full * (short_item if plan.short else item) + plan.listed * headline
        return cost <= budget

    return fits


@pytest.mark.parametrize(
    ("items", "total", "costs", "expected", "ok"),
    [
        # everything fits as it is
        (20, 25, (1000, 500, 100, 5000, 30_000), Plan(20, 5), True),
        # shortened summaries make it fit
        (20, 25, (2000, 1000, 100, 5000, 30_000), Plan(20, 5, short=True), True),
        # even shortened, only 16 items fit: the other 4 head the 9 headlines
        (20, 25, (5000, 1500, 100, 5000, 30_000), Plan(16, 9, short=True), True),
        # items become headlines so that nothing has to be counted
        (20, 60, (1000, 800, 300, 5000, 30_000), Plan(14, 46, short=True), True),
        # too many headlines even for 5 items: 5 stay, 100 listed, 95 counted
        (10, 200, (1000, 1000, 100, 5000, 20_000), Plan(5, 100, short=True), True),
        # items too large for any: nothing but headlines, 150 listed, 50 counted
        (5, 200, (30_000, 30_000, 100, 5000, 20_000), Plan(0, 150, short=True), True),
        # the bare edition is already over: it goes out anyway, flagged
        (5, 10, (100, 100, 10, 50_000, 20_000), Plan(0, 0, short=True), False),
        # an empty edition
        (0, 0, (100, 100, 10, 5000, 20_000), Plan(0, 0), True),
    ],
)
def test_fit(items: int, total: int, costs: tuple[int, ...], expected: Plan, ok: bool) -> None:
    plan, fitted = fit(items, total, model(*costs))
    assert (plan, fitted) == (expected, ok)
    assert plan.full + plan.listed + plan.hidden(total) == total


def test_fit_renders_few_candidates() -> None:
    tried: list[Plan] = []
    fits = model(1000, 600, 300, 10_000, 90_000)

    def counting(plan: Plan) -> bool:
        tried.append(plan)
        return fits(plan)

    fit(500, 5000, counting)
    assert len(tried) <= 2 + 10 + 4 + 14  # two tries, then at most three binary searches


# -- real editions --------------------------------------------------------------------------


def entries(n: int) -> list[Entry]:
    """Entries as large as real ones get: long titles, long links, full summaries."""
    out = []
    for i in range(n):
        source = FeedSource(
            f"https://feed{i % 12}.example.org/rss",
            None,
            ["World", "Technology", "Science", "Culture", None][i % 5],
        )
        out.append(
            Entry(
                source=source,
                source_title=f"The Feed Number {i % 12} With a Long Name",
                identity=f"id{i}",
                title=f"Story {i}: a long headline of the kind news sites write & <em> mean",
                link=f"https://www.news-site-{i % 12}.example.org/2026/11/28/section/"
                f"story-{i}-about-something-long?ref=rss&id={i}",
                canonical_link=None,
                summary=("A summary sentence with a good many words, repeated. " * 8)[:300],
                content_html="",
                published=NOW - timedelta(minutes=7 * i),
                dated=True,
                author="A. Writer" if i % 3 else None,
                thumbnail=f"https://cdn.example.org/img/{i}/thumb-large.jpg" if i % 2 else None,
            )
        )
    return out


def edition(n: int, max_items: int = 20, **settings: object) -> tuple[str, str, Selection]:
    every = entries(n)
    selection = Selection(tuple(every[:max_items]), tuple(every[max_items:]), ())
    renderer = Renderer(
        RenderSettings(
            title="The Daily Example",
            base_url="https://digest.example.org",
            postal_address="1 Example Street, Exampleton EX1 2AB, United Kingdom",
            **settings,  # type: ignore[arg-type]
        )
    )
    composed = renderer.compose(77, selection, NOW)
    html, text = personalize(composed, VALUES)
    assert not unused_markers([html, text], composed.nonce)
    return html, text, selection


def accounted(html: str, selection: Selection) -> tuple[int, int, int]:
    """Entries shown in full, listed as headlines, and counted; asserts they add up."""
    soup = Html(html)
    full = len(soup.all("td", "item"))
    listed = len(
        [
            li
            for ul in soup.all("ul", "more-list")
            for li in ul.parts
            if getattr(li, "tag", "") == "li"
        ]
    )
    counts = [re.match(r"[\d,]+", p.text) for p in soup.all("p", "more-link")]
    hidden = sum(int(m.group().replace(",", "")) for m in counts if m)
    assert full + listed + hidden == len(selection.entries)
    shown = {a.text for a in soup.all("a")}
    for entry in selection.entries[: full + listed]:
        assert entry.title in shown
    if hidden:
        assert 'href="https://digest.example.org/archive/77#more-' in html
    return full, listed, hidden


def external_resources(html: str) -> set[str]:
    """URLs the HTML would load by itself (links a reader clicks are not loaded)."""
    soup = Html(html)
    urls = {e.attrs["src"] for e in soup.root.walk() if "src" in e.attrs}
    urls |= {e.attrs["href"] for e in soup.all("link")}
    urls |= set(re.findall(r"url\(([^)]*)\)", html))
    urls |= set(re.findall(r"@import\s+([^;]+)", html))
    urls |= {e.attrs["background"] for e in soup.root.walk() if "background" in e.attrs}
    return urls


@pytest.mark.parametrize("n", [10, 30, 200])
def test_size_budget_holds_and_nothing_is_dropped(n: int) -> None:
    html, text, selection = edition(n, headlines_per_group=1000)  # the budget alone decides
    assert len(html.encode("utf-8")) <= BUDGET
    full, listed, hidden = accounted(html, selection)
    assert hidden == 0  # every entry is in the mail, in full or as a headline
    assert full == min(n, 20) if n <= 30 else 5 <= full <= 20
    # HTML checks: only the items' images load, every image has alt text and a width
    images = {e.thumbnail for e in selection.items[:full] if e.thumbnail}
    assert external_resources(html) == images
    for img in Html(html).all("img"):
        assert img.attrs.get("alt") == "" and img.attrs.get("width")  # decorative
    assert "<script" not in html.lower() and "javascript:" not in html.lower()
    # the footer survives whatever the size
    assert VALUES["unsubscribe_url"] in html and "1 Example Street" in html
    assert VALUES["unsubscribe_url"] in text and "1 Example Street" in text


def test_a_tight_budget_shortens_moves_and_counts() -> None:
    html, text, selection = edition(200, max_bytes=25_000, headlines_per_group=1000)
    assert len(html.encode("utf-8")) <= 25_000
    full, listed, hidden = accounted(html, selection)
    assert full == 5 and listed and hidden  # 5 items stay, then headlines, then a count
    assert "…" in Html(html).first("p", "summary").text  # summaries were shortened
    assert re.search(r"\d+ more from World: https://digest.example.org/archive/77#more-world", text)


def test_items_that_do_not_fit_head_the_more_list() -> None:
    html, _, selection = edition(40, max_items=40, max_bytes=30_000, headlines_per_group=1000)
    full, listed, hidden = accounted(html, selection)
    assert 5 <= full < 40 and listed == 40 - full and not hidden
    first_headline = Html(html).first("ul", "more-list").text
    assert first_headline.startswith(selection.entries[full].title)


def test_a_thousand_entries_still_fit() -> None:
    html, _, selection = edition(1000, headlines_per_group=1000)
    assert len(html.encode("utf-8")) <= BUDGET
    full, listed, hidden = accounted(html, selection)
    assert full == 5 and listed > 150 and hidden


def test_a_thousand_entries_capped_per_group_keep_every_story_in_full() -> None:
    """The headline groups' caps (10 each, 5 groups) keep the mail small enough that
    the size budget never has to demote a story: 20 in full, 50 headlines, 930 online."""
    html, _, selection = edition(1000)
    assert len(html.encode("utf-8")) <= BUDGET
    assert accounted(html, selection) == (20, 50, 930)


def test_fit_renders_little_for_a_huge_edition() -> None:
    """Thousands of new entries: what is rendered to find the plan (entries summed over
    the candidates tried) stays well under a few renders of the whole edition (a binary
    search from the top rendered 4.6 editions' worth here)."""
    tried: list[Plan] = []
    fits = model(1000, 600, 150, 10_000, 90_000)  # 5 items + ~500 headlines fit

    def counting(plan: Plan) -> bool:
        tried.append(plan)
        return fits(plan)

    plan, ok = fit(20, 5000, counting)
    assert ok and plan == Plan(5, 513, short=True)
    assert sum(p.full + p.listed for p in tried) < 2.5 * 5000
