"""The sample edition in a real browser (headless Chromium): phone and desktop widths,
light and dark. Screenshots go to test-artifacts/ (docs/screenshots/ holds copies)."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.mail.markers import personalize
from digest.render import sample
from digest.render.edition import Renderer, RenderSettings

from .helpers import NOW

pytestmark = pytest.mark.slow

VALUES = {
    "unsubscribe_url": "https://digest.example.org/unsubscribe/1.token",
    "preferences_url": "https://digest.example.org/preferences/1.token",
    "email": "reader@example.org",
    "name": "Reader",
}
COLOURS = {"crane.png": (38, 84, 124), "glacier.png": (84, 150, 170), "leaves.png": (160, 98, 40)}


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small gradient PNG, made here: the tests never touch the internet."""
    rows = []
    for y in range(height):
        shade = 0.75 + 0.5 * y / height
        pixel = bytes(min(255, int(c * shade)) for c in rgb)
        rows.append(b"\x00" + pixel * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def email_html() -> str:
    renderer = Renderer(
        RenderSettings(
            title="The Weekly Harbour",
            base_url="https://digest.example.org",
            postal_address="The Weekly Harbour, 1 Quay Street, Harbourtown HT1 2AB",
            timezone="Europe/London",
            locale="en_GB",
        )
    )
    return personalize(renderer.compose(12, sample.selection(NOW), NOW), VALUES)[0]


class Opened:
    def __init__(self, browser: Any, html: str, width: int, scheme: str) -> None:
        self.context = browser.new_context(
            viewport={"width": width, "height": 900}, color_scheme=scheme, device_scale_factor=1
        )
        self.page = self.context.new_page()
        self.requested: list[str] = []
        self.page.route("**/*", self._route)
        self.page.set_content(html, wait_until="load")

    def _route(self, route: Any) -> None:
        url = route.request.url
        self.requested.append(url)
        name = url.rsplit("/", 1)[-1]
        if url.startswith(sample.IMAGES) and name in COLOURS:
            route.fulfill(body=png(224, 160, COLOURS[name]), content_type="image/png")
        else:
            route.abort()


@pytest.fixture
def opened(browser: Any) -> Iterator[list[Opened]]:
    pages: list[Opened] = []
    yield pages
    for p in pages:
        p.context.close()


# WCAG contrast of every piece of visible text against the background it is drawn on.
CONTRAST = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(c => {
      c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); })
    .reduce((s, c, i) => s + c * [0.2126, 0.7152, 0.0722][i], 0);
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el.offsetWidth || el.closest('.preheader')) continue;
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    out.push([node.textContent.trim().slice(0, 40), Math.round(ratio * 100) / 100]);
  }
  return out;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 800])
def test_sample_edition_in_chromium(
    browser: Any, artifacts: Path, opened: list[Opened], email_html: str, width: int, scheme: str
) -> None:
    view = Opened(browser, email_html, width, scheme)
    opened.append(view)
    page = view.page
    page.screenshot(path=str(artifacts / f"email-{width}-{scheme}.png"), full_page=True)
    page.screenshot(path=str(artifacts / f"email-{width}-{scheme}-top.png"))

    # nothing loads but the items' own images, and those do
    assert set(view.requested) == {f"{sample.IMAGES}/{name}" for name in COLOURS}
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")

    # one column that fits the screen: no horizontal scroll
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"horizontal scroll: {scroll}px content in a {width}px window"
    card = page.locator("table.card").bounding_box()
    assert card is not None and card["width"] <= 600
    if width == 375:
        assert card["width"] == 375  # full width on a phone
    else:
        assert card["x"] > 0  # centred with a margin on a desktop

    # every item's title is there, visible and inside the window
    titles = page.locator(".item-title")  # the lead first, then by group
    lead = sample.selection(NOW).items[0].title
    assert titles.all_inner_texts() == [lead] + [
        t
        for g in ("Technology", "Science", "Gardening", "Other")
        for t in _titles_of(g)
        if t != lead
    ]
    for i in range(titles.count()):
        title = titles.nth(i)
        assert title.is_visible()
        box = title.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert box["height"] > 10

    # the colour scheme applied, and every text is readable on its background
    background = page.evaluate("getComputedStyle(document.querySelector('.card')).backgroundColor")
    assert background == ("rgb(27, 30, 36)" if scheme == "dark" else "rgb(255, 255, 255)")
    low = [(text, ratio) for text, ratio in page.evaluate(CONTRAST) if ratio < 4.5]
    assert low == [], f"text below WCAG AA contrast (4.5:1) in {scheme} mode"


def test_layout_fits_a_phone_even_without_the_style_block(
    browser: Any, opened: list[Opened], email_html: str
) -> None:
    """Clients that drop <style> (and with it every @media rule) still get one column
    that fits: the layout is fluid by its inline styles alone."""
    bare = re.sub(r"<style>.*?</style>", "", email_html, flags=re.DOTALL)
    assert "@media" not in bare
    view = Opened(browser, bare, 375, "light")
    opened.append(view)
    assert view.page.evaluate("document.documentElement.scrollWidth") <= 375
    for title in view.page.locator(".item-title").all():
        box = title.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 375


def _titles_of(category: str) -> list[str]:
    items = sample.selection(NOW).items
    return [e.title for e in items if (e.source.category or "Other") == category]


def test_phones_get_14px_text_big_footer_buttons_and_rtl_titles(
    browser: Any, opened: list[Opened]
) -> None:
    """Issue 11 items 6 and 8, as a phone's browser engine lays them out."""
    from dataclasses import replace

    chosen = sample.selection(NOW)
    urdu = replace(
        chosen.items[1],
        title="پاکستان میں بارش کا نیا ریکارڈ",
        summary="محکمہ موسمیات کے مطابق شہر میں ایک دن میں ریکارڈ بارش ہوئی۔",
        language="ur",
    )
    headline = replace(chosen.more[0], title="بارش کے بعد سیلاب کا خطرہ", language="ur")
    items = (chosen.items[0], urdu, *chosen.items[2:])
    chosen = replace(chosen, items=items, more=(headline, *chosen.more[1:]))
    renderer = Renderer(
        RenderSettings(
            title="The Weekly Harbour",
            base_url="https://digest.example.org",
            postal_address="The Weekly Harbour, 1 Quay Street, Harbourtown HT1 2AB",
        )
    )
    html = personalize(renderer.compose(12, chosen, NOW), VALUES)[0]
    view = Opened(browser, html, 375, "light")
    opened.append(view)
    page = view.page
    small = page.evaluate(
        """() => {
        const out = [];
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        for (let node; (node = walker.nextNode());) {
          const el = node.parentElement;
          if (!node.textContent.trim() || !el.offsetWidth || el.closest('.preheader')) continue;
          const size = parseFloat(getComputedStyle(el).fontSize);
          if (size < 14) out.push([node.textContent.trim().slice(0, 30), size]);
        }
        return out;
    }"""
    )
    assert small == []
    for name in ("Unsubscribe", "Preferences"):
        box = page.get_by_role("link", name=name, exact=True).bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 200, (name, box)
    direction = "el => getComputedStyle(el).direction"
    for where in (".item-title", ".toc-list a", ".summary"):
        found = page.locator(where, has_text=urdu.title if where != ".summary" else urdu.summary)
        assert found.evaluate(direction) == "rtl", where
    assert page.locator(".more-list a", has_text=headline.title).evaluate(direction) == "rtl"
    assert page.locator(".item-title", has_text=chosen.items[0].title).evaluate(direction) == "ltr"
    assert page.locator(".meta").nth(1).evaluate(direction) == "ltr"  # the digest's own words


# -- the heaviest news day: 600 entries of real feeds (issue 12) -----------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 800])
def test_the_600_entry_edition_of_real_feeds(
    browser: Any, artifacts: Path, opened: list[Opened], width: int, scheme: str
) -> None:
    """The golden real-600 edition: screenshots for docs/templates.md, one column that
    fits, text readable on its background, every group's "N more" link there."""
    from .test_golden import real_parts

    html = real_parts("real-600")["html"]
    context = browser.new_context(
        viewport={"width": width, "height": 1000}, color_scheme=scheme, device_scale_factor=1
    )
    page = context.new_page()
    requested: list[str] = []

    def thumbnail(route: Any) -> None:  # every image a made-up one: no network in tests
        requested.append(route.request.url)
        shade = zlib.crc32(route.request.url.encode())
        rgb = (60 + shade % 140, 60 + shade // 7 % 140, 60 + shade // 49 % 140)
        route.fulfill(body=png(224, 160, rgb), content_type="image/png")

    page.route("**/*", thumbnail)
    try:
        page.set_content(html, wait_until="load")
        page.screenshot(path=str(artifacts / f"edition-600-{width}-{scheme}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        low = [(text, ratio) for text, ratio in page.evaluate(CONTRAST) if ratio < 4.5]
        assert low == [], f"text below WCAG AA contrast (4.5:1) in {scheme} mode"
        assert page.locator(".item-title").count() == 20
        groups = page.locator(".more-group").all_inner_texts()
        links = page.locator(".more-link a").all_inner_texts()
        assert len(groups) == len(links) >= 5  # every group capped, its rest online
        assert all(" more from " in link for link in links)
        assert all(i.startswith("https://") for i in requested)
    finally:
        context.close()
