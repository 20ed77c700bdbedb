"""The size budget: every edition's HTML, as transmitted, fits its budget with room for
click tracking; what gives way first is what matters least; nothing new is dropped;
and the renders it costs are few whatever the number of entries."""

from __future__ import annotations

import email
import email.policy
import functools
import itertools
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.deliver.base import Letterhead
from digest.deliver.message import encode
from digest.errors import DigestError
from digest.ingest.clean import clean, finish
from digest.ingest.parse import parse
from digest.mail.encoding import transfer_size, worst_size
from digest.mail.markers import personalize, unused_markers
from digest.model import Composed, Entry, FeedSource, Recipient, Selection
from digest.render.budget import (
    LINK_ALLOWANCE,
    LOOKS,
    PERSONAL_RESERVE,
    PROBE,
    WHOLE,
    Plan,
    _search,
    fit,
    links,
)
from digest.render.budget import size as budget_size
from digest.render.edition import Renderer, RenderSettings
from digest.services import render_settings

from .helpers import NOW, Project
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


@dataclass(frozen=True)
class Model:
    """An edition's size, plan by plan: the base, each story in full by its look (full
    summary with thumbnail, shortened, shortened without thumbnail), each headline.
    Counts the sizes asked for, as the real renderer counts renders."""

    looks: tuple[int, int, int]
    headline: int | Sequence[int]  # one cost, or a cost per entry
    base: int
    tried: list[Plan] = field(default_factory=list)

    def __call__(self, plan: Plan) -> int:
        self.tried.append(plan)
        item = self.looks[2 if not plan.thumbnails else 1 if plan.short else 0]
        start, end = plan.full, plan.full + plan.listed
        costs = self.headline
        listed = (end - start) * costs if isinstance(costs, int) else sum(costs[start:end])
        return self.base + plan.full * item + listed


# (items, total, (item, short item, bare item), headline, base, limit) → plan, ok
@pytest.mark.parametrize(
    ("items", "total", "looks", "headline", "base", "limit", "expected", "ok"),
    [
        # everything fits as it is
        (20, 25, (1000, 500, 400), 100, 5000, 30_000, Plan(20, 5), True),
        # the limit itself still fits
        (20, 25, (1000, 500, 400), 100, 9500, 30_000, Plan(20, 5), True),
        # shortened summaries make it fit
        (20, 25, (2000, 1000, 800), 100, 5000, 30_000, Plan(20, 5, short=True), True),
        # shortened and without thumbnails
        (20, 25, (2000, 1300, 1000), 100, 5000, 30_000, Plan(20, 5, True, False), True),
        # the 661-entry day: the 20 stories stay in full, headlines are limited
        (20, 661, (2000, 1300, 1000), 100, 5000, 90_000, Plan(20, 641, True, False), True),
        (20, 661, (2000, 1300, 1000), 300, 5000, 90_000, Plan(20, 216, True, False), True),
        # headlines are given up before a story in full is
        (20, 600, (1000, 800, 600), 100, 5000, 17_099, Plan(20, 0, True, False), True),
        # not even the stories in full fit: 10 stay, the rest head 10 headlines
        (20, 600, (2000, 1500, 1400), 100, 5000, 20_000, Plan(10, 10, True, False), True),
        # no story fits in full: headlines only, 150 listed, 50 counted
        (5, 200, (30_000, 30_000, 30_000), 100, 5000, 20_000, Plan(0, 150, True, False), True),
        # no stories in full at all: headlines only, the look unchanged
        (0, 500, (1000, 800, 600), 100, 5000, 20_000, Plan(0, 150), True),
        # the bare edition is already over: it goes out anyway, flagged
        (5, 10, (100, 100, 100), 10, 50_000, 20_000, Plan(0, 0, True, False), False),
        (0, 10, (100, 100, 100), 10, 50_000, 20_000, Plan(0, 0), False),
        # an empty edition
        (0, 0, (100, 100, 100), 10, 5000, 20_000, Plan(0, 0), True),
    ],
)
def test_fit(
    items: int,
    total: int,
    looks: tuple[int, int, int],
    headline: int,
    base: int,
    limit: int,
    expected: Plan,
    ok: bool,
) -> None:
    plan, fitted = fit(items, total, Model(looks, headline, base), limit)
    assert (plan, fitted) == (expected, ok)
    assert plan.full + plan.listed + plan.hidden(total) == total


def best(items: int, total: int, size_of: Model, limit: int) -> tuple[Plan, bool]:
    """The plan ``fit`` must find, by trying every candidate in the documented order."""
    rest = total - items
    looks = [Plan(items, rest, s, t) for s, t in LOOKS] if items else [Plan(0, rest)]
    for look in looks:
        if size_of(look) <= limit:
            return look, True
    squeezed = looks[-1]
    fitting = [k for k in range(items + 1) if size_of(replace(squeezed, full=k, listed=0)) <= limit]
    if not fitting:
        return replace(squeezed, full=0, listed=0), False
    full = max(fitting)
    listed = max(
        m
        for m in range(total - full + 1)
        if size_of(replace(squeezed, full=full, listed=m)) <= limit
    )
    return replace(squeezed, full=full, listed=listed), True


@settings(max_examples=150, deadline=None)
@given(
    items=st.integers(0, 25),
    extra=st.integers(0, 300),
    looks=st.tuples(st.integers(1500, 4000), st.integers(700, 1500), st.integers(300, 700)),
    headlines=st.lists(st.integers(40, 900), min_size=325, max_size=325),
    base=st.integers(1000, 30_000),
    limit=st.integers(20_000, 100_000),
)
def test_fit_finds_the_best_plan_in_few_sizes(
    items: int,
    extra: int,
    looks: tuple[int, int, int],
    headlines: list[int],
    base: int,
    limit: int,
) -> None:
    """Whatever the costs (headlines of very different sizes too), ``fit`` finds the
    plan an exhaustive search finds, measuring few candidates, none far over."""
    total = items + extra
    model = Model(looks, headlines, base)
    found = fit(items, total, model, limit)
    assert found == best(items, total, Model(looks, headlines, base), limit)
    assert len(model.tried) <= 24
    plan = found[0]
    for tried in model.tried:  # nothing much beyond what fits (or the first probe)
        assert tried.listed <= max(8 * plan.listed + 8, WHOLE)


@pytest.mark.parametrize("total", [1_000, 5_000, 100_000])
@pytest.mark.parametrize("headline", [150, 400])
def test_the_work_does_not_grow_with_the_entries(total: int, headline: int) -> None:
    """Thousands of new entries: a handful of sizes, each of a candidate about the
    budget's size, however many entries there are."""
    model = Model((2000, 1300, 1000), headline, 10_000)
    plan, ok = fit(20, total, model, 90_000)
    assert ok and plan.full == 20 and plan.short and not plan.thumbnails
    assert len(model.tried) <= 6
    assert max(p.listed for p in model.tried) <= plan.listed + PROBE
    # before (galloping, then halving): 22 candidates for 5,000 entries


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.integers(1, 5000), min_size=1, max_size=400),
    limit=st.integers(0, 400_000),
    first=st.integers(0, 500),
)
def test_search_is_exact(costs: list[int], limit: int, first: int) -> None:
    sizes = [sum(costs[:n]) for n in range(len(costs) + 1)]
    asked: list[int] = []

    def size_of(n: int) -> int:
        asked.append(n)
        return sizes[n]

    high = len(costs)
    largest = max((n for n in range(high + 1) if sizes[n] <= limit), default=-1)
    assert _search(size_of, high, limit, first) == largest
    assert len(asked) <= 2 * math.ceil(math.log2(high + 1)) + 3


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.integers(-600, 5000), min_size=1, max_size=400),
    base=st.integers(0, 50_000),
    limit=st.integers(0, 400_000),
    first=st.integers(0, 500),
)
def test_search_never_returns_what_does_not_fit(
    costs: list[int], base: int, limit: int, first: int
) -> None:
    """Sizes need not grow with every headline: in the grouped layout the last headline
    of a group takes the place of its "1 more from X →" link, and the last of all that
    of the note that the edition is online, and either may be the larger. Whatever the
    sizes, what the search returns was measured to fit (-1 only when 0 does not)."""
    sizes = list(itertools.accumulate([base, *costs]))
    asked: list[int] = []

    def size_of(n: int) -> int:
        asked.append(n)
        return sizes[n]

    found = _search(size_of, len(costs), limit, first)
    assert found == -1 and sizes[0] > limit or found in asked and sizes[found] <= limit
    assert len(asked) <= 2 * math.ceil(math.log2(len(costs) + 1)) + 3


@pytest.mark.parametrize(
    ("costs", "limit", "expected"),
    [
        ([50_000] + [1] * 100_000, 90_000, 40_001),  # one huge headline, then tiny ones
        ([1] * 64 + [5_000] * 1000, 90_000, 81),  # cheap at first, then dear
        ([300] * 100_000, 90_000, 300),  # even
        ([300] * 100_000, 90_300, 301),  # the limit itself fits
    ],
)
def test_search_stays_logarithmic_when_costs_mislead(
    costs: list[int], limit: int, expected: int
) -> None:
    sizes = list(itertools.accumulate([0, *costs]))
    asked: list[int] = []

    def size_of(n: int) -> int:
        asked.append(n)
        return sizes[n]

    assert _search(size_of, len(costs), limit) == expected
    assert len(asked) <= 2 * math.ceil(math.log2(len(costs) + 1)) + 3


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
    settings.setdefault("headlines_per_group", 10_000)  # the size budget alone decides
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


def accounted(html: str, selection: Selection, cap: int | None = None) -> tuple[int, int, int]:
    """Entries shown in full, listed as headlines, and counted; asserts they add up,
    that the stories in full are the edition's first, and that the headlines listed
    are the first ``listed`` of those the layout can list (``cap`` a group, its feeds
    taking turns: with no cap, simply the entries after those in full)."""
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
    shown = {e.text for tag in ("a", "span") for e in soup.all(tag)}  # span: no link
    listable = capped(selection.entries[full:], cap)
    assert listed <= len(listable)
    for entry in [*selection.entries[:full], *listable[:listed]]:
        assert entry.title in shown
    if hidden:  # counted in a group's link, or in the one for the groups left without any
        assert re.search(r'href="https://digest\.example\.org/archive/77#(more-|headlines")', html)
    return full, listed, hidden


def capped(rest: Sequence[Entry], cap: int | None) -> list[Entry]:
    """Of the entries after those in full, in order, those the headlines can list: of
    each category's, the first ``cap`` when its feeds take turns (every feed's first,
    then every feed's second...)."""
    keep: list[int] = []
    for category in dict.fromkeys(e.source.category for e in rest):
        turns: Counter[str] = Counter()
        order = []
        for i, e in enumerate(rest):
            if e.source.category == category:
                order.append((turns[e.source.url], i))
                turns[e.source.url] += 1
        keep += [i for _turn, i in sorted(order)[:cap]]
    return [rest[i] for i in sorted(keep)]


def external_resources(html: str) -> set[str]:
    """URLs the HTML would load by itself (links a reader clicks are not loaded)."""
    soup = Html(html)
    urls = {e.attrs["src"] for e in soup.root.walk() if "src" in e.attrs}
    urls |= {e.attrs["href"] for e in soup.all("link")}
    urls |= set(re.findall(r"url\(([^)]*)\)", html))
    urls |= set(re.findall(r"@import\s+([^;]+)", html))
    urls |= {e.attrs["background"] for e in soup.root.walk() if "background" in e.attrs}
    return urls


def transmitted(html: str, esp: bool = False) -> int:
    """What the mail system counts for a personalized HTML part, with the allowance for
    click tracking: what must stay under the budget."""
    encoded = worst_size(html) if esp else transfer_size(html)
    return encoded + links(html) * LINK_ALLOWANCE


@pytest.mark.parametrize("n", [10, 30, 200])
def test_size_budget_holds_and_nothing_is_dropped(n: int) -> None:
    html, text, selection = edition(n)
    assert transmitted(html) <= BUDGET
    full, listed, hidden = accounted(html, selection)
    assert full == min(n, 20)  # the stories stay in full: headlines give way first
    assert hidden == 0 if n <= 30 else hidden > 0
    # HTML checks: only the items' images load, every image has alt text and a width
    images = {e.thumbnail for e in selection.items[:full] if e.thumbnail}
    assert external_resources(html) == (images if n <= 30 else set())
    for img in Html(html).all("img"):
        assert img.attrs.get("alt") == "" and img.attrs.get("width")  # decorative
    assert "<script" not in html.lower() and "javascript:" not in html.lower()
    # the footer survives whatever the size
    assert VALUES["unsubscribe_url"] in html and "1 Example Street" in html
    assert VALUES["unsubscribe_url"] in text and "1 Example Street" in text


def test_a_thousand_entries_capped_per_group_keep_every_story_in_full() -> None:
    """The headline groups' caps (10 each, 5 groups) keep the mail small enough that
    the size budget never has to demote a story: 20 in full, 50 headlines, 930 online."""
    html, _, selection = edition(1000, headlines_per_group=10)
    assert transmitted(html) <= BUDGET
    assert accounted(html, selection, cap=10) == (20, 50, 930)


def test_groups_left_without_a_headline_are_one_link() -> None:
    """Grouped by feed, 200 feeds with new entries: a heading and a "2 more from X →"
    link for every group the budget left without a headline came to 128 KB, over the
    budget even with no headline at all. Those groups are one link now, last; the
    stories stay in full and as many headlines as fit are listed in their groups."""
    every = [
        replace(
            e,
            source=FeedSource(f"https://feed{i % 200}.example.org/rss", None, None),
            source_title=f"Feed {i % 200} with a name",
        )
        for i, e in enumerate(entries(400))
    ]
    composed = composed_of(every, group_by="feed")
    html, text = personalize(composed, VALUES)
    assert transmitted(html) <= BUDGET
    soup = Html(html)
    full = len(soup.all("td", "item"))
    groups = soup.all("ul", "more-list")
    listed = sum(len([li for li in ul.parts if getattr(li, "tag", "") == "li"]) for ul in groups)
    assert full == 20 and 0 < listed < 380
    assert len(soup.all("h3", "more-group")) == len(groups)  # a heading only over headlines
    links = [a for p in soup.all("p", "more-link") for a in p.walk() if a.tag == "a"]
    rest = links[-1]
    assert rest.attrs["href"] == "https://digest.example.org/archive/77#headlines"
    counted = [int(m.group()) for a in links if (m := re.match(r"\d+", a.text))]
    assert rest.text == f"{counted[-1]} more new stories →"
    assert full + listed + sum(counted) == len(every)
    online = "https://digest.example.org/archive/77#headlines"
    assert f"{counted[-1]} more new stories: {online}" in text


def shortened(html: str) -> bool:
    return any(p.text.endswith("…") for p in Html(html).all("p", "summary"))


# (new entries, max_items, max_bytes) → in full, listed, counted; summaries shortened,
# thumbnails kept: what the budget gives up, in its order. With the edition's layout (a
# lead story, grouped headlines with a "N more from X →" link each) the 60-entry edition
# counts 92.6 KB whole, 87.0 KB with short summaries, 80.2 KB without thumbnails too,
# 71.2 KB with no headline: the limits fall between those, one step each.
@pytest.mark.parametrize(
    ("n", "max_items", "max_bytes", "expected", "short", "images"),
    [
        # everything fits as it is
        (30, 20, 90_000, (20, 10, 0), False, True),
        (60, 40, 95_000, (40, 20, 0), False, True),
        # the summaries are shortened, the thumbnails stay
        (60, 40, 90_000, (40, 20, 0), True, True),
        # then the thumbnails go
        (60, 40, 85_000, (40, 20, 0), True, False),
        # then the headlines are limited: every story stays in full
        (60, 40, 76_000, (40, 4, 16), True, False),
        (200, 20, 48_000, (20, 10, 170), True, False),
        (661, 20, 90_000, (20, 118, 523), True, False),
        # only when not one headline fits do stories in full give way
        (40, 40, 54_000, (28, 1, 11), True, False),
        (200, 20, 30_000, (12, 1, 187), True, False),
    ],
)
def test_what_the_budget_gives_up_in_order(
    n: int,
    max_items: int,
    max_bytes: int,
    expected: tuple[int, int, int],
    short: bool,
    images: bool,
) -> None:
    html, text, selection = edition(n, max_items=max_items, max_bytes=max_bytes)
    assert transmitted(html) <= max_bytes
    assert accounted(html, selection) == expected
    assert shortened(html) == short
    assert bool(Html(html).all("img")) == images
    full, listed, hidden = expected
    # the text part counts the same: each group's rest, linked to the group online
    link = r"^([\d,]+) more .*: https://digest\.example\.org/archive/77#(?:more-|headlines$)"
    more = re.findall(link, text, re.MULTILINE)
    assert sum(int(m.replace(",", "")) for m in more) == hidden
    if full < max_items and listed:  # demoted stories head the headlines
        first_headline = Html(html).first("ul", "more-list").text
        assert first_headline.startswith(selection.entries[full].title)


def test_each_step_is_taken_only_when_the_one_before_does_not_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the exact size of each look, that look is chosen; a byte less, the next step:
    the whole edition, short summaries, no thumbnails, fewer headlines, and stories
    demoted only below the size of every story in full with no headline at all."""
    every = entries(60)
    selection = Selection(tuple(every[:40]), tuple(every[40:]), ())
    nonce = "0123456789abcdef"  # as long as compose's: the same reserves

    def renderer(max_bytes: int) -> Renderer:
        return Renderer(
            RenderSettings(
                title="T",
                base_url="https://digest.example.org",
                postal_address="1 St",
                max_bytes=max_bytes,
                headlines_per_group=10_000,
            )
        )

    measure = renderer(BUDGET)

    def size(plan: Plan) -> int:
        html = measure.html(measure._context(77, selection.entries, plan, NOW, nonce))
        return measure.size(html, nonce)

    chosen: list[Plan] = []

    def recording(*args: Any) -> tuple[Plan, bool]:
        plan, ok = fit(*args)
        chosen.append(plan)
        return plan, ok

    monkeypatch.setattr("digest.render.edition.budget.fit", recording)

    def plan_at(limit: int) -> Plan:
        renderer(limit).compose(77, selection, NOW, nonce)
        return chosen[-1]

    whole, short, bare, none = (
        Plan(40, 20),
        Plan(40, 20, short=True),
        Plan(40, 20, True, False),
        Plan(40, 0, True, False),
    )
    assert size(whole) > size(short) > size(bare) > size(none)
    for look, after in ((whole, short), (short, bare)):
        assert plan_at(size(look)) == look
        assert plan_at(size(look) - 1) == after
    assert plan_at(size(bare)) == bare
    fewer = plan_at(size(bare) - 1)
    assert replace(fewer, listed=0) == none and fewer.listed < 20
    assert plan_at(size(none)) == none  # no headline left, every story still in full
    demoted = plan_at(size(none) - 1)
    assert demoted.full < 40 and demoted.short and not demoted.thumbnails


# -- what is transmitted: CJK and Urdu --------------------------------------------------------

HAN = "港口的新起重机时间表说明潮汐发电的数字冰川从轨道上计数"
URDU = "بندرگاہ کی نئی کرینوں کا نظام الاوقات اور سمندری بجلی کے اعداد"


def scripted(n: int, words: str) -> list[Entry]:
    """Entries in another script: three (Chinese) or two (Urdu) UTF-8 bytes a letter,
    nine or six in quoted-printable."""
    return [
        replace(e, title=f"{words[:24]} {i}", summary=(words + " ") * 4, source_title=words[:12])
        for i, e in enumerate(entries(n))
    ]


def composed_of(every: list[Entry], max_items: int = 20, **settings: object) -> Composed:
    selection = Selection(tuple(every[:max_items]), tuple(every[max_items:]), ())
    renderer = Renderer(
        RenderSettings(
            title="The Daily Example",
            base_url="https://digest.example.org",
            postal_address="1 Example Street, Exampleton EX1 2AB, United Kingdom",
            **settings,  # type: ignore[arg-type]
        )
    )
    return renderer.compose(77, selection, NOW)


def html_part(composed: Composed) -> tuple[str, int]:
    """The HTML part of the message digest sends: its transfer encoding and its size
    as transmitted (CRLF line ends)."""
    recipient = Recipient(1, VALUES["email"], VALUES["name"])
    built = encode(composed, recipient, VALUES, LETTERHEAD, "\r\n")
    message = email.message_from_bytes(built.data, policy=email.policy.default)
    (part,) = (p for p in message.walk() if p.get_content_type() == "text/html")
    return str(part["Content-Transfer-Encoding"]), len(part.get_payload().encode("ascii"))


@pytest.mark.parametrize("words", [HAN, URDU])
def test_an_edition_in_another_script_is_budgeted_as_transmitted(words: str) -> None:
    """An edition under the budget in decoded bytes but over it once encoded (what the
    budget counted before) is cut to what the message really carries."""
    every = scripted(40, words)
    whole = personalize(composed_of(every, max_bytes=100_000), VALUES)[0]
    assert accounted(whole, Selection(tuple(every[:20]), tuple(every[20:]), ())) == (20, 20, 0)
    limit = len(whole.encode()) + 1000  # the whole edition, decoded, is under it
    assert transmitted(whole) > limit  # as transmitted, it is over
    cut = composed_of(every, max_bytes=limit)
    html = personalize(cut, VALUES)[0]
    cte, size = html_part(cut)
    assert cte == "base64"  # the smaller: quoted-printable is two to three times larger
    assert size == transfer_size(html)
    assert size + links(html) * LINK_ALLOWANCE <= limit
    assert shortened(html) or not Html(html).all("img")  # something gave way


@pytest.mark.parametrize("words", [HAN, URDU])
def test_when_the_esp_encodes_the_larger_encoding_is_budgeted(words: str) -> None:
    """SendGrid takes the HTML as text and encodes it itself: the budget holds for
    quoted-printable too, so fewer entries fit than when digest encodes."""
    every = scripted(300, words)
    ours = composed_of(every)
    esp = composed_of(every, esp_encodes=True)
    html = personalize(esp, VALUES)[0]
    assert transmitted(html, esp=True) <= BUDGET
    assert len(html) < len(personalize(ours, VALUES)[0])


LETTERHEAD = Letterhead(
    "The Daily Example <digest@example.org>",
    "editor@example.org",
    "The Daily Example <daily.example.org>",
    "https://digest.example.org",
)
SCRIPTS = ["A long English headline, with words", HAN, URDU, "Ελληνικά νέα και ειδήσεις", "😀🎉📰"]


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(0, 400),
    max_items=st.integers(0, 30),
    mix=st.lists(st.sampled_from(SCRIPTS), min_size=1, max_size=5),
    max_bytes=st.integers(20_000, 100_000),
    esp=st.booleans(),
)
def test_the_transmitted_html_is_within_the_budget(
    n: int, max_items: int, mix: list[str], max_bytes: int, esp: bool
) -> None:
    """Generated editions in mixed scripts: the HTML part as the message carries it
    (or, when the ESP encodes, in the larger encoding), with the links' allowance,
    is at most the budget; and every entry is shown, listed or counted."""
    every = [
        replace(
            e, title=f"{mix[i % len(mix)][:30].strip()} {i}", summary=mix[(i + 1) % len(mix)] * 5
        )
        for i, e in enumerate(entries(n))
    ]
    composed = composed_of(every, max_items, max_bytes=max_bytes, esp_encodes=esp)
    html = personalize(composed, VALUES)[0]
    if esp:
        assert transmitted(html, esp=True) <= max_bytes
    else:
        cte, size = html_part(composed)
        assert size == transfer_size(html)
        assert size + links(html) * LINK_ALLOWANCE <= max_bytes
    selection = Selection(tuple(every[:max_items]), tuple(every[max_items:]), ())
    accounted(html, selection, cap=10)  # the default email.headlines_per_group


# -- renders, counted --------------------------------------------------------------------------


class Counting(Renderer):
    renders = 0

    def html(self, context: Mapping[str, Any]) -> str:
        self.renders += 1
        return super().html(context)


@pytest.mark.parametrize("n", [1000, 5000])
@pytest.mark.parametrize(("cap", "most"), [(10, 1), (10_000, 8)])
def test_a_huge_edition_costs_a_few_renders_of_the_budgets_size(
    n: int, cap: int, most: int
) -> None:
    """5,000 new entries: a handful of renders, none of much more than the budget's
    size (the galloping search before rendered 22 candidates of 8,800 entries). With
    the default cap of 10 headlines a group (5 groups) the e-mail can list 50, and the
    whole edition is one render: the budget searches only among the headlines the
    layout can list (searching all 4,980 entries, 9 renders of the same size learned
    that the cap had already made everything fit). Without a cap, the search: 5."""
    every = entries(n)
    selection = Selection(tuple(every[:20]), tuple(every[20:]), ())
    renderer = Counting(
        RenderSettings(
            title="T",
            base_url="https://digest.example.org",
            postal_address="1 St",
            headlines_per_group=cap,
        )
    )
    listed: list[int] = []
    context = renderer._context

    def spying(*args: Any) -> dict[str, Any]:
        made = context(*args)
        listed.append(len(made["edition"].more))
        return made

    renderer._context = spying  # type: ignore[method-assign]
    composed = renderer.compose(1, selection, NOW)
    assert renderer.renders <= most
    shown = max(listed[-1], 1)  # the plan's headlines (its context is made last)
    assert max(listed) <= 2 * shown + PROBE
    assert transmitted(personalize(composed, VALUES)[0]) <= BUDGET


# -- real feeds --------------------------------------------------------------------------------

REAL = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "real"
HEAVY = ("urdu_UTF8.xml", "kc0011.rss")  # Urdu, and Chinese


@functools.cache
def real_entries() -> tuple[Entry, ...]:
    """Every entry of the real feeds in ``../shared/corpus/real``, the Urdu and Chinese
    feeds' first, then the others' by feed."""
    files = sorted(
        (p for p in REAL.rglob("*") if p.is_file() and p.suffix not in (".txt", ".tsv", ".md")),
        key=lambda p: (p.name not in HEAVY, str(p)),
    )
    out: list[Entry] = []
    for path in files:
        try:
            parsed = parse(path.read_bytes(), path.as_uri())
        except DigestError:
            continue  # not a feed: the corpus tests judge those
        source = FeedSource(path.as_uri(), None, None)
        title = parsed.title or path.name
        out += [finish(clean(raw, source, title, NOW)) for raw in parsed.entries]
    return tuple(out)


@pytest.mark.parametrize("esp", [False, True])
def test_real_feeds_in_many_scripts_stay_within_the_budget(esp: bool) -> None:
    """Two thousand entries of 74 real feeds, the Urdu and Chinese ones in full: the
    HTML part as the message carries it (or, for SendGrid, in the larger encoding) is
    within the budget, and every entry is shown, listed or counted."""
    if not REAL.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the corpus is missing at {REAL}")
        pytest.skip(f"no corpus at {REAL}")
    every = list(real_entries())
    assert len(every) > 1000
    composed = composed_of(every, esp_encodes=esp)
    html = personalize(composed, VALUES)[0]
    assert transmitted(html, esp) <= BUDGET
    if not esp:
        cte, size = html_part(composed)
        assert cte == "base64" and size == transfer_size(html)
    selection = Selection(tuple(every[:20]), tuple(every[20:]), ())
    full, listed, hidden = accounted(html, selection, cap=10)  # the default per group
    assert full == 20 and listed and hidden


# -- what is counted ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "count"),
    [
        ('<a href="https://example.org/a">a</a>', 1),
        ("<A class=x HREF='https://example.org/a'>a</A> <a href=https://e.org/b>b</a>", 2),
        ('<a href="%%n.unsubscribe_url%%">Unsubscribe</a>', 1),  # rewritten too
        ('<a href="#item-3">3</a> <a href="mailto:ed@example.org">write</a>', 0),
        ('<link href="https://example.org/style.css"> <img src="https://e.org/i.png">', 0),
        ('<p>href="https://example.org" in the text</p>', 0),
    ],
)
def test_the_links_click_tracking_would_rewrite(html: str, count: int) -> None:
    assert links(html) == count


@pytest.mark.parametrize(
    ("html", "esp", "expected"),
    [
        # plain short ASCII lines go out as they are (7bit): bytes plus CRLFs
        ("<p>hello</p>", False, len("<p>hello</p>\r\n")),
        # one personal marker: its reserve; one link: its allowance
        (
            '<a href="%%n.unsubscribe_url%%">x</a>',
            False,
            len('<a href="%%n.unsubscribe_url%%">x</a>\r\n') + PERSONAL_RESERVE + LINK_ALLOWANCE,
        ),
        # Chinese: the smaller encoding (base64) when digest encodes, the larger when the
        # ESP does (quoted-printable: nine bytes a letter)
        (HAN * 10, False, transfer_size(HAN * 10)),
        (HAN * 10, True, worst_size(HAN * 10)),
    ],
)
def test_what_the_budget_counts(html: str, esp: bool, expected: int) -> None:
    assert budget_size(html, "n", esp) == expected
    assert worst_size(HAN * 10) > 2 * transfer_size(HAN * 10)


@pytest.mark.parametrize(
    ("backend", "esp"), [("outbox", False), ("smtp", False), ("sendgrid", True)]
)
def test_the_backend_says_who_encodes(project: Project, backend: str, esp: bool) -> None:
    """SendGrid's API takes the HTML as text and encodes it itself: only then does the
    budget count the larger encoding."""
    project.feed("https://example.org/feed.xml")
    project.data["delivery"] = {"backend": backend}
    assert render_settings(project.config()).esp_encodes == esp
