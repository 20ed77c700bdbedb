"""``digest serve`` as a real process: one-click unsubscribe from a delivered message's
``List-Unsubscribe`` header, and a clean stop on SIGTERM."""

from __future__ import annotations

import email
import email.policy
import json
import re
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from digest import pipeline
from digest.cli import main
from digest.state import subscribers

from .helpers import SAMPLES_NOW as NOW
from .helpers import Project, invoke
from .live import free_port, serve_process


def mails(project: Project, edition: int) -> list[EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in project.outbox()
        if p.name.startswith(f"{edition:05d}-")
    ]


def run(project: Project, now: datetime) -> pipeline.RunReport:
    return project.run(now)


@pytest.fixture
def configured(project: Project, samples: Path) -> tuple[Project, int]:
    port = free_port()
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.subscriber("ada@example.org", "Ada")
    project.subscriber("grace@example.org", "Grace")
    project.data["digest"]["base_url"] = f"http://127.0.0.1:{port}"
    project.data["web"] = {"port": port}
    project.data["schedule"] = {"cron": "0 7 1 1 *", "timezone": "Europe/Berlin"}
    project.write()
    return project, port


@pytest.mark.slow
def test_one_click_unsubscribe_from_the_header_of_a_delivered_message(
    configured: tuple[Project, int], cli_env: dict[str, str], samples: Path
) -> None:
    project, port = configured
    (first,) = run(project, NOW).editions
    assert first.recipients_delivered == 2
    by_address = {str(m["To"]).split("<")[-1].rstrip(">"): m for m in mails(project, 1)}
    ada_url = by_address["ada@example.org"]["List-Unsubscribe"].strip().strip("<>")
    grace_url = by_address["grace@example.org"]["List-Unsubscribe"].strip().strip("<>")
    assert by_address["ada@example.org"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert ada_url.startswith(f"http://127.0.0.1:{port}/unsubscribe/")

    with serve_process(project.path, port, cli_env) as served:
        # a mail program's one-click POST (RFC 8058): 200, no redirect
        r = httpx.post(
            ada_url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            follow_redirects=False,
        )
        assert r.status_code == 200, r.text
        # a link scanner's GET: a page with a button, nothing done
        page = httpx.get(grace_url)
        assert page.status_code == 200 and "<button" in page.text
        # a forged token: a 400 page, not a traceback
        token = grace_url.rsplit("/", 1)[1]
        forged = (
            grace_url[: -len(token)] + token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")
        )
        bad = httpx.post(forged, content=b"List-Unsubscribe=One-Click")
        assert bad.status_code == 400 and "Traceback" not in bad.text
        health = httpx.get(f"{served.base}/healthz").json()
        assert health["ok"] and health["scheduler"] == "running"
        assert health["next_edition"].endswith("-01-01T06:00:00+00:00")  # 07:00 in Berlin
        me = health["instance"]
        assert (me["role"], me["state"], me["edition"], me["heartbeat"]) == (
            "serve",
            "standby",
            None,
            "ok",
        )
        assert (health["doing"], health["ready"], health["live"]) == ("standby", True, True)
        # digest status, from the database, sees the same instance, standing by
        fleet = invoke("--config", str(project.path), "status", "--json", env=cli_env)
        assert fleet.returncode == 0, fleet.stdout + fleet.stderr
        [seen] = json.loads(fleet.stdout)["instances"]
        assert (seen["id"], seen["role"], seen["state"]) == (me["id"], "serve", "standby")
        code = served.stop()
        log = served.log()
    assert code == 0, log
    stopped = invoke("--config", str(project.path), "status", "--json", env=cli_env)
    assert [i["state"] for i in json.loads(stopped.stdout)["instances"]] == ["stopped"]
    assert "SIGTERM: stopping after the batch in flight" in log
    assert "digest serve stopped" in log and "Traceback" not in log
    assert ada_url.rsplit("/", 1)[1] not in log  # tokens stay out of the logs

    engine = project.engine()
    with engine.connect() as conn:
        ada = subscribers.get(conn, "ada@example.org")
        grace = subscribers.get(conn, "grace@example.org")
    engine.dispose()
    assert ada is not None and ada.status == "unsubscribed"
    assert grace is not None and grace.status == "active"

    feed = samples / "harbour-tech.rss"
    feed.write_text(
        feed.read_text().replace(
            "<item>",
            "<item><title>Fresh</title><link>https://harbour-tech.example/fresh/</link>"
            "<guid>fresh</guid><pubDate>Tue, 16 Mar 2027 08:00:00 +0000</pubDate></item><item>",
            1,
        )
    )
    (second,) = run(project, NOW + timedelta(days=1)).editions
    assert second.recipients == 1
    assert [str(m["To"]) for m in mails(project, 2)] == ["Grace <grace@example.org>"]


def test_schedule_command_shows_zone_utc_and_the_last_edition(
    configured: tuple[Project, int],
) -> None:
    project, _port = configured
    project.data["schedule"] = {"cron": "0 7 * * *", "timezone": "America/Chicago"}
    project.write()
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(project.path), "schedule", "-n", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "0 7 * * *" in lines[0] and "America/Chicago" in lines[0] and "3h" in lines[0]
    times = [line for line in lines if line.startswith("  ")]
    assert len(times) == 3
    assert all(re.search(r"07:00 C[SD]T .* (12|13):00 UTC", line) for line in times)
    assert "Last edition: none yet." in result.output

    run(project, NOW)
    result = runner.invoke(main, ["--config", str(project.path), "schedule", "--json"])
    data = __import__("json").loads(result.output)
    assert data["last_edition"]["id"] == 1 and data["last_edition"]["delivered"] == 2
    assert len(data["next"]) == 5 and data["now"]["action"] in ("skip", "run")


def test_a_busy_port_is_a_clear_error_and_sends_nothing(
    configured: tuple[Project, int], cli_env: dict[str, str]
) -> None:
    import socket
    import subprocess
    import sys

    project, port = configured
    project.data["schedule"] = {"cron": "* * * * *", "timezone": "UTC"}  # due right now
    project.write()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(project.path), "serve"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert project.outbox() == []
