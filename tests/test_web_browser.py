"""The subscriber's path in a real browser (headless Chromium): sign up through the form,
confirm from the delivered mail, leave through the unsubscribe page's button.
Screenshots go to test-artifacts/ (phone-sized viewport)."""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from digest.state import subscribers

from .helpers import Project
from .live import free_port, serve_process

pytestmark = pytest.mark.slow
PHONE = {"width": 390, "height": 844}


def signup_mail(project: Project, address: str) -> EmailMessage:
    """The sign-up mail to ``address`` (it goes out just after the answer: waits a while)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for path in project.outbox():
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if msg["X-Digest-Edition"] == "0" and address in str(msg["To"]):
                return msg  # type: ignore[return-value]
        time.sleep(0.1)
    raise AssertionError(f"no sign-up mail to {address}")


def status(project: Project, address: str) -> str | None:
    engine = project.engine()
    with engine.connect() as conn:
        s = subscribers.get(conn, address)
    engine.dispose()
    return s.status if s else None


def fits_the_phone(page: Any) -> None:
    """No sideways scrolling, and every visible field has a label."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), select')]
           .filter(e => e.offsetParent !== null && !(e.labels && e.labels.length))
           .map(e => e.name)"""
    )
    assert unlabelled == []


def test_subscribe_confirm_and_unsubscribe_in_a_browser(
    browser: Any, artifacts: Path, project: Project, samples: Path, cli_env: dict[str, str]
) -> None:
    port = free_port()
    project.feed("samples/harbour-tech.rss", first_run_window="all", category="Technology")
    project.feed("samples/field-notes.atom", first_run_window="all", category="Science")
    project.subscriber("ada@example.org")
    project.data["digest"]["base_url"] = f"http://127.0.0.1:{port}"
    project.data["web"] = {"port": port}
    project.write()
    first = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(project.path), "run"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert first.returncode == 0, first.stderr

    with serve_process(project.path, port, cli_env) as served:
        page = browser.new_page(viewport=PHONE)
        page.goto(f"{served.base}/subscribe")
        fits_the_phone(page)
        page.get_by_label("Your e-mail address").fill("reader@example.org")
        page.get_by_label("Your name").fill("Reader")
        page.screenshot(path=str(artifacts / "web-1-subscribe.png"), full_page=True)
        page.get_by_role("button", name="Subscribe").click()
        page.wait_for_selector("text=Check your inbox")  # the Origin check let it through
        page.screenshot(path=str(artifacts / "web-2-check-inbox.png"), full_page=True)
        mail = signup_mail(project, "reader@example.org")
        assert status(project, "reader@example.org") == "pending"

        body = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", body)
        assert link, body
        page.goto(link.group(0))
        page.screenshot(path=str(artifacts / "web-3-confirm.png"), full_page=True)
        assert status(project, "reader@example.org") == "pending"  # opening is not confirming
        page.get_by_role("button", name="Confirm my subscription").click()
        page.wait_for_selector("text=You are subscribed")
        page.screenshot(path=str(artifacts / "web-4-subscribed.png"), full_page=True)
        assert status(project, "reader@example.org") == "active"

        page.get_by_role("link", name="Choose what you receive").click()
        page.wait_for_selector("text=Your preferences")
        fits_the_phone(page)
        page.screenshot(path=str(artifacts / "web-5-preferences.png"), full_page=True)

        unsubscribe = str(mail["List-Unsubscribe"]).strip().strip("<>")
        page.goto(unsubscribe)
        page.screenshot(path=str(artifacts / "web-6-unsubscribe.png"), full_page=True)
        assert status(project, "reader@example.org") == "active"  # a GET never unsubscribes
        page.get_by_role("button", name="Unsubscribe").click()
        page.wait_for_selector("text=You are unsubscribed")
        page.screenshot(path=str(artifacts / "web-7-unsubscribed.png"), full_page=True)
        assert status(project, "reader@example.org") == "unsubscribed"

        page.goto(f"{served.base}/archive")
        fits_the_phone(page)
        page.screenshot(path=str(artifacts / "web-8-archive.png"), full_page=True)
        page.get_by_role("link", name=re.compile("^Test Digest: ")).click()
        page.wait_for_load_state()
        assert "/archive/1" in page.url and "Counting glaciers from orbit" in page.content()
        assert "reader@example.org" not in page.content()
        page.screenshot(path=str(artifacts / "web-9-archived-edition.png"), full_page=True)
        page.close()
        assert served.stop() == 0
    for n in range(1, 10):
        assert any(p.stat().st_size > 1000 for p in artifacts.glob(f"web-{n}-*.png"))
