"""The browser the page tests rely on: Debian's Chromium, headless, via Playwright."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def test_chromium_renders_a_page(browser: Any, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 375, "height": 600})
    page.set_content("<!DOCTYPE html><h1>digest</h1>")
    assert page.inner_text("h1") == "digest"
    page.screenshot(path=str(artifacts / "smoke.png"))
    assert (artifacts / "smoke.png").stat().st_size > 0
    page.close()
