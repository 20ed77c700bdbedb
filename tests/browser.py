"""Headless Chromium for browser tests: Debian's ``chromium``, driven by Playwright.

Playwright's own browser downloads are never used: the tests launch the system's
``/usr/bin/chromium`` (``.ci/run`` installs it with apt). Where it is absent the tests
skip with the reason. Screenshots go to ``test-artifacts/`` (or ``$DIGEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for name in (os.environ.get("DIGEST_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (found := shutil.which(name)):
            return found
    return None


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("DIGEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A Playwright Browser on the system Chromium; skips where there is none.

    Module-scoped: while Playwright's sync API is open it keeps an event loop running
    in this thread, which makes ``asyncio.run`` fail in every later test."""
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI") == "true":  # .ci/run installs it: a skip would hide a failure
            pytest.fail("Chromium is not installed, and CI=true: apt install chromium")
        pytest.skip("Chromium is not installed (Debian: apt install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            yield b
        finally:
            b.close()
