"""Zone and frequency in a real browser (headless Chromium): the sign-up form takes the
browser's zone by itself (a few lines of script, allowed by their hash in the CSP), the
preferences page changes both, and without script the zone is typed and searched."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from digest.state import subscribers

from .helpers import Project
from .live import free_port, serve_process
from .test_web_browser import PHONE, fits_the_phone, signup_mail

pytestmark = pytest.mark.slow


def cadence(project: Project, address: str) -> tuple[str | None, str | None, str | None]:
    engine = project.engine()
    with engine.connect() as conn:
        s = subscribers.get(conn, address)
    engine.dispose()
    assert s is not None
    return s.status, s.frequency, s.timezone


def test_zone_and_frequency_on_the_sign_up_form_and_the_preferences_page(
    browser: Any, artifacts: Path, project: Project, samples: Path, cli_env: dict[str, str]
) -> None:
    port = free_port()
    project.feed("samples/harbour-tech.rss", first_run_window="all", category="Technology")
    project.data["digest"]["base_url"] = f"http://127.0.0.1:{port}"
    project.data["web"] = {"port": port}
    project.data["schedule"] = {"timezone": "Europe/London", "weekly_day": "friday"}
    project.write()
    first = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(project.path), "db", "upgrade"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert first.returncode == 0, first.stderr

    with serve_process(project.path, port, cli_env) as served:
        kolkata = browser.new_context(timezone_id="Asia/Kolkata", viewport=PHONE)
        errors: list[str] = []
        page = kolkata.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{served.base}/subscribe")
        fits_the_phone(page)
        zone = page.get_by_label("Your time zone")
        preselected = zone.input_value()  # the browser's: Chromium (ICU) says the old name
        assert preselected in ("Asia/Kolkata", "Asia/Calcutta")
        assert page.get_by_label("Every day").is_checked()
        page.get_by_label("Your e-mail address").fill("reader@example.org")
        page.get_by_label(re.compile("Once a week, on Friday")).check()
        page.screenshot(path=str(artifacts / "cadence-1-subscribe.png"), full_page=True)
        page.get_by_role("button", name="Subscribe").click()
        page.wait_for_selector("text=Check your inbox")
        assert cadence(project, "reader@example.org") == ("pending", "weekly", preselected)
        assert not [e for e in errors if "Content Security Policy" in e], errors

        mail = signup_mail(project, "reader@example.org")
        body = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", body)
        assert link, body
        page.goto(link.group(0))
        page.get_by_role("button", name="Confirm my subscription").click()
        page.wait_for_selector("text=You are subscribed")
        page.get_by_role("link", name="Choose what you receive").click()
        page.wait_for_selector("text=Your preferences")
        fits_the_phone(page)
        zone = page.get_by_label("Your time zone")
        assert zone.input_value() == preselected  # theirs, as stored
        assert page.get_by_label(re.compile("Once a week")).is_checked()
        zone.fill("America/New_York")
        page.get_by_label("Every day").check()
        page.screenshot(path=str(artifacts / "cadence-2-preferences.png"), full_page=True)
        page.get_by_role("button", name="Save").last.click()
        page.wait_for_selector("text=Saved: your next edition comes as you chose")
        assert cadence(project, "reader@example.org") == ("active", "daily", "America/New_York")
        assert page.get_by_label("Your time zone").input_value() == "America/New_York"

        zone = page.get_by_label("Your time zone")
        zone.fill("Mars/Olympus_Mons")
        page.get_by_role("button", name="Save").last.click()
        page.wait_for_selector("text=That is not a time zone we know")
        assert cadence(project, "reader@example.org")[2] == "America/New_York"
        kolkata.close()

        # without script: nothing preselected; the zone is typed (the list searches)
        plain = browser.new_context(
            java_script_enabled=False, timezone_id="Pacific/Honolulu", viewport=PHONE
        )
        page = plain.new_page()
        page.goto(f"{served.base}/subscribe")
        zone = page.get_by_label("Your time zone")
        assert zone.input_value() == ""
        assert page.locator("#zones option[value='Pacific/Honolulu']").count() == 1
        page.get_by_label("Your e-mail address").fill("noscript@example.org")
        zone.fill("Nowhere/Special")
        page.get_by_role("button", name="Subscribe").click()
        page.wait_for_selector("text=is not an IANA time zone")  # said, and the form kept
        assert page.get_by_label("Your e-mail address").input_value() == "noscript@example.org"
        page.get_by_label("Your time zone").fill("Pacific/Honolulu")
        page.get_by_role("button", name="Subscribe").click()
        page.wait_for_selector("text=Check your inbox")
        assert cadence(project, "noscript@example.org") == ("pending", "daily", "Pacific/Honolulu")
        page.screenshot(path=str(artifacts / "cadence-3-no-script.png"), full_page=True)
        plain.close()
        assert served.stop() == 0
