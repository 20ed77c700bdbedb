"""Previews for operators: preview --serve, send-test, and check on a sample edition."""

from __future__ import annotations

import email
import email.policy
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from digest import pipeline
from digest.cli import main, previews
from digest.state.db import schema

from .helpers import NOW, SAMPLES, Project
from .smtp_server import SmtpServer


@pytest.fixture
def sampled(project: Project) -> Project:
    project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all", category="Science")
    project.feed(str(SAMPLES / "allotment-diary.rss"), first_run_window="all")
    project.subscriber("ada@example.org", "Ada")
    project.data["email"] = {"templates": "mine", "locale": "en_GB"}
    (project.folder / "mine").mkdir()
    project.write()
    return project


def invoke(project: Project, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(project.path), *args])
    return result.exit_code, result.stdout, result.stderr


def editions(project: Project) -> int:
    with project.engine().connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(schema.editions)).scalar())


# -- preview --serve ------------------------------------------------------------------------


def test_served_preview_renders_again_on_every_reload(sampled: Project) -> None:
    services = pipeline.build(
        sampled.config(), engine=sampled.engine(), readonly=True, clock=lambda: NOW
    )
    upcoming = previews.next_edition(services)
    assert len(upcoming.selection.entries) == 6 and upcoming.edition_id == 1
    httpd = previews.server(previews.live(sampled.path, upcoming, lambda: NOW), port=0)
    previews.serve_in_thread(httpd)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        first = httpx.get(base + "/")
        assert first.status_code == 200 and "text/html" in first.headers["content-type"]
        assert "Counting glaciers" in first.text and "Unsubscribe" in first.text
        assert "%%" not in first.text
        # the operator edits a template, and the next reload shows it
        footer = sampled.folder / "mine" / "_footer.html.j2"
        footer.write_text(
            "<p>Bye from {{ edition.title }}. <a href='{{ recipient.unsubscribe_url }}'>"
            "Leave</a> {{ postal_address }}</p>\n"
        )
        assert "Bye from Test Digest." in httpx.get(base + "/").text
        # ...and the config: the next reload speaks German
        sampled.data["email"]["locale"] = "de"
        sampled.write()
        assert "In dieser Ausgabe" in httpx.get(base + "/").text
        # a mistake shows its file and line instead of the page
        footer.write_text("<p>\n{{ recipient.adress }}</p>\n")
        broken = httpx.get(base + "/")
        assert broken.status_code == 500
        assert "_footer.html.j2:2" in broken.text and "adress" in broken.text
        text = httpx.get(base + "/text")
        assert text.status_code == 500 and "_footer.html.j2:2" in text.text
        footer.unlink()
        text = httpx.get(base + "/text")
        assert text.text.startswith("Subject: Test Digest: ") and "Counting glaciers" in text.text
        assert httpx.get(base + "/nope").status_code == 404
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert editions(sampled) == 0 and sampled.outbox() == []


def test_preview_serve_command(sampled: Project, cli_env: dict[str, str]) -> None:
    with subprocess.Popen(  # its pipes closed on the way out
        [sys.executable, "-m", "digest", "--config", str(sampled.path), "preview", "--serve"]
        + ["--port", "0", "--sample"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "preview --serve printed nothing"
            line = proc.stdout.readline()
            assert line.startswith("Serving the next edition at http://127.0.0.1:"), line
            url = line.split(" at ", 1)[1].split(" ", 1)[0]
            for _ in range(50):
                try:
                    page = httpx.get(url)
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            assert page.status_code == 200 and "The new crane schedule, explained" in page.text
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_preview_out_text_and_sample(sampled: Project, tmp_path: Path) -> None:
    out = tmp_path / "p.html"
    code, stdout, _ = invoke(sampled, "preview", "--out", str(out))
    assert code == 0 and "Counting glaciers" in out.read_text() and str(out) in stdout
    code, stdout, _ = invoke(sampled, "preview", "--text", "--sample")
    assert code == 0 and stdout.startswith("Subject: Test Digest: The new crane schedule")
    assert "Leaf mould: the slowest, best compost there is" in stdout
    assert editions(sampled) == 0


def test_serving_on_a_taken_port_is_a_clear_error(sampled: Project) -> None:
    taken = previews.server(lambda: previews.Rendered("", "", ""), port=0)
    try:
        code, _, stderr = invoke(
            sampled, "preview", "--serve", "--sample", "--port", str(taken.server_address[1])
        )
        assert code == 2 and "cannot listen on 127.0.0.1:" in stderr and "--port" in stderr
    finally:
        taken.server_close()


# -- send-test ------------------------------------------------------------------------------


def test_send_test_through_the_outbox_records_nothing(sampled: Project) -> None:
    code, stdout, stderr = invoke(sampled, "send-test", "Me@Example.org")
    assert code == 0, stderr
    assert "sent to Me@example.org via outbox" in stdout and "nothing was recorded" in stdout
    (path,) = sampled.outbox()
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["Subject"].startswith("[TEST] Test Digest: ")
    assert msg["To"] == "Me@example.org" and msg["Message-ID"].startswith("<digest.test.")
    assert "Counting glaciers" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert editions(sampled) == 0
    # the real run afterwards sends everything, to the real subscribers only
    code, _, _ = invoke(sampled, "run")
    assert code == 0 and editions(sampled) == 1
    assert len(sampled.outbox()) == 2
    # with nothing new, the test says so (and --sample is there for that)
    code, stdout, _ = invoke(sampled, "send-test", "me@example.org")
    assert code == 0 and "nothing new in the feeds: --sample sends the sample edition" in stdout
    assert editions(sampled) == 1


def test_send_test_through_smtp(sampled: Project, tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as server:
        sampled.data["delivery"] = {
            "backend": "smtp",
            "smtp": {"host": "127.0.0.1", "port": server.port, "security": "none"},
        }
        sampled.write()
        code, stdout, stderr = invoke(sampled, "send-test", "me@example.org", "--sample")
        assert code == 0, stderr
        (received,) = server.received
        assert received.rcpt_tos == ["me@example.org"]
        assert received.message["Subject"].startswith("[TEST] Test Digest: The new crane")
    assert "the sample edition" in stdout and editions(sampled) == 0


def test_send_test_refuses_a_bad_address_and_reports_a_failed_send(
    sampled: Project, tmp_path: Path
) -> None:
    code, _, stderr = invoke(sampled, "send-test", "not-an-address")
    assert code == 2 and "'not-an-address' is not a valid e-mail address" in stderr
    sampled.data["delivery"] = {
        "backend": "smtp",
        "smtp": {"host": "127.0.0.1", "port": 9, "security": "none", "timeout": "2s"},
    }
    sampled.write()
    code, _, stderr = invoke(sampled, "send-test", "me@example.org", "--sample")
    assert code == 1 and "cannot connect to 127.0.0.1:9" in stderr


# -- check ----------------------------------------------------------------------------------


def test_check_catches_a_broken_template_with_file_and_line(sampled: Project) -> None:
    assert invoke(sampled, "check")[0] == 0
    (sampled.folder / "mine" / "_item.html.j2").write_text(
        "<tr><td>\n{{ item.title }}\n{{ item.sumary }}\n</td></tr>\n"
    )
    code, _, stderr = invoke(sampled, "check")
    assert code == 2
    assert "templates:" in stderr and "_item.html.j2:3" in stderr and "sumary" in stderr


def test_check_fails_without_an_unsubscribe_link(sampled: Project) -> None:
    (sampled.folder / "mine" / "digest.txt.j2").write_text("{{ edition.title }}\n")
    code, _, stderr = invoke(sampled, "check")
    assert code == 2 and "the text part has no unsubscribe link" in stderr
    assert "the text part has no postal address" in stderr


def test_email_config_errors_name_the_key(sampled: Project) -> None:
    sampled.data["email"] = {"templates": "missing"}
    sampled.write()
    code, _, stderr = invoke(sampled, "check")
    assert code == 2 and "email.templates:" in stderr and "is not a folder" in stderr
    sampled.data["email"] = {"locale": "klingon", "group_by": "mood", "max_bytes": 500_000}
    sampled.write()
    code, _, stderr = invoke(sampled, "check")
    assert code == 2
    assert "email.locale: 'klingon' is not a locale" in stderr
    assert "email.group_by:" in stderr and "email.max_bytes:" in stderr


# -- after a run: the last edition, not an empty one (issue 12 item 7) -----------------------


def test_preview_after_a_run_shows_the_last_edition_as_sent(
    sampled: Project, tmp_path: Path
) -> None:
    sampled.run(NOW)
    assert editions(sampled) == 1
    out = tmp_path / "p.html"
    code, stdout, stderr = invoke(sampled, "preview", "--out", str(out))
    assert code == 0, stderr
    assert "Nothing new since edition 1" in stderr and "as it was sent" in stderr
    assert "--next" in stderr and "Edition 1, as sent" in stdout
    page = out.read_text()
    assert "Counting glaciers" in page and "Nothing new since the last edition" not in page
    assert "reader@example.org" in page and "ada@example.org" not in page  # a stand-in reader
    assert "%%" not in page  # every personal marker filled
    with sampled.engine().connect() as conn:
        sent = conn.execute(sa.select(schema.editions.c.subject)).scalar_one()
    code, stdout, stderr = invoke(sampled, "preview", "--text")
    assert code == 0 and stdout.startswith(f"Subject: {sent}\n\n") and "Nothing new" in stderr
    # --next: the next edition, empty, and no word about the last one
    code, stdout, stderr = invoke(sampled, "preview", "--text", "--next")
    assert code == 0 and "Nothing new since the last edition." in stdout
    assert "as it was sent" not in stderr
    assert editions(sampled) == 1


def test_preview_before_any_edition_shows_the_next_one(sampled: Project) -> None:
    code, stdout, stderr = invoke(sampled, "preview", "--text")
    assert code == 0 and "Counting glaciers" in stdout and "as it was sent" not in stderr
