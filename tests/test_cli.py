"""The digest command, as operators and scripts use it."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from digest.cli import main
from digest.config import load_config
from digest.state import db, lease

from .helpers import ROOT, Project, Ran
from .helpers import invoke as in_process
from .smtp_server import SmtpServer


def digest(
    *args: str, env: dict[str, str], cwd: Path | None = None, process: bool = False
) -> subprocess.CompletedProcess[str] | Ran:
    """``digest *args`` in this process, or in a real one with ``process`` or when a
    ``DIGEST_FAULT`` point is to kill it."""
    fault = env.get("DIGEST_FAULT", "")
    if not process and not (fault and "@" not in fault):
        return in_process(*args, env=env, cwd=cwd)
    return subprocess.run(
        [sys.executable, "-m", "digest", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=120,
    )


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """The shipped config.toml and sample feeds, copied to a fresh folder."""
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    shutil.copytree(ROOT / "digest" / "samples", tmp_path / "digest" / "samples")
    return tmp_path


def test_shipped_config_end_to_end(
    shipped: Path, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Quickstart, as a user runs it: ``python -m digest`` in a process of its own.
    The first run in the database makes an edition at once; the next follow the schedule."""
    result = digest("run", "--json", env=cli_env, cwd=shipped, process=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "first_run" and report["nothing_to_do"] is False
    assert report["next_edition"]["local"].endswith("T07:00:00+00:00")  # London in winter
    assert set(report) >= {"editions", "feeds", "skipped", "reason", "seconds", "ok"}
    (edition,) = report["editions"]
    assert set(edition) >= {"id", "recipients_delivered", "recipients_failed", "entries"}
    assert (edition["id"], edition["recipients_delivered"], edition["recipients_failed"]) == (
        1,
        2,
        0,
    )
    assert [f["status"] for f in report["feeds"]] == ["ok", "ok", "ok"]
    assert all({"url", "status", "error"} <= set(f) for f in report["feeds"])
    assert report["skipped"] is False
    files = sorted((shipped / "outbox").glob("*.eml"))
    assert len(files) == 2
    for path in files:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        for title in (
            "Why our build went from 9 minutes to 70 seconds",
            "The quiet return of the European eel",
            "Leaf mould",
        ):
            assert title in text and title in html
        assert "mayor’s allotment week – a report" in text  # mojibake repaired
        assert "<script" not in html and "alert(" not in html

    engine = db.connect(load_config(shipped / "config.toml").storage_url)
    with engine.connect() as conn:  # the runs below happen at the instant it was made
        made = conn.execute(sa.text("SELECT created_at FROM editions")).scalar_one()
    engine.dispose()
    monkeypatch.setattr(
        "digest.cli._now", lambda: datetime.fromisoformat(str(made)).replace(tzinfo=UTC)
    )
    again = digest("run", "--json", env=cli_env, cwd=shipped)
    assert again.returncode == 0
    second = json.loads(again.stdout)
    assert second["editions"] == [] and second["skipped"] is True
    assert second["mode"] == "schedule" and second["nothing_to_do"] is True
    assert "is done" in second["reason"]
    human = digest("run", env=cli_env, cwd=shipped)
    assert human.returncode == 0
    assert "nothing to do: the edition for " in human.stdout
    assert "The next edition is due " in human.stdout
    now = digest("run", "--now", env=cli_env, cwd=shipped)
    assert "Nothing sent: nothing new since the last edition." in now.stdout


def test_config_from_environment_and_readable_summary(
    shipped: Path, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "DIGEST_CONFIG": str(shipped / "config.toml")}
    result = digest("run", env=env, cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr
    assert "Edition 1: 10 entries to 2 recipients" in result.stdout
    assert "outbox" in result.stdout and "digest preview" in result.stdout


def test_json_stdout_is_one_object_logs_on_stderr(shipped: Path, cli_env: dict[str, str]) -> None:
    result = digest("-vv", "run", "--json", env=cli_env, cwd=shipped)
    json.loads(result.stdout)  # nothing else on stdout
    assert "edition 1" in result.stderr


def test_broken_config_exits_2_without_traceback(tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "config.toml").write_text("[digest]\ntitle = 'x'\n")
    for command in (["run"], ["run", "--json"], ["check"], ["preview"]):
        result = digest(*command, env=cli_env, cwd=tmp_path)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert "config.toml" in result.stderr and "digest.from" in result.stderr


def test_a_run_holding_the_lease_blocks_another(shipped: Path, cli_env: dict[str, str]) -> None:
    project = Project(shipped)

    engine = db.connect(load_config(shipped / "config.toml").storage_url)
    with lease.held(engine):
        result = digest("run", env=cli_env, cwd=shipped)
    assert result.returncode == 3
    assert "another digest run is sending" in result.stderr
    assert not (shipped / "outbox").exists()
    del project


def test_crash_after_freezing_recipients_resumes_once(
    shipped: Path, cli_env: dict[str, str]
) -> None:
    crashed = digest("run", env={**cli_env, "DIGEST_FAULT": "recipients-frozen"}, cwd=shipped)
    assert crashed.returncode == -9
    assert not list((shipped / "outbox").glob("*.eml"))
    resumed = digest("run", "--json", env=cli_env, cwd=shipped)
    report = json.loads(resumed.stdout)
    (edition,) = report["editions"]
    assert edition["resumed"] and edition["recipients_delivered"] == 2
    assert report["skipped"] is True  # and nothing new beyond the resumed edition
    assert len(list((shipped / "outbox").glob("*.eml"))) == 2


def test_crash_mid_batch_is_reported_unknown_not_resent(
    shipped: Path, cli_env: dict[str, str]
) -> None:
    crashed = digest("run", env={**cli_env, "DIGEST_FAULT": "batch-marked-sending:2"}, cwd=shipped)
    assert crashed.returncode == -9
    assert len(list((shipped / "outbox").glob("*.eml"))) == 1
    resumed = digest("run", "--json", env=cli_env, cwd=shipped)
    assert resumed.returncode == 1  # a recipient's fate is unknown: say so
    (edition,) = json.loads(resumed.stdout)["editions"]
    assert (edition["recipients_delivered"], edition["recipients_unknown"]) == (1, 1)
    assert any("may or may not have gone out" in p for p in edition["problems"])
    assert len(list((shipped / "outbox").glob("*.eml"))) == 1


def test_dry_run(shipped: Path, cli_env: dict[str, str]) -> None:
    result = digest("run", "--dry-run", "--json", env=cli_env, cwd=shipped)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] and report["editions"][0]["entries"] == 10
    assert not (shipped / "outbox").exists()


def test_preview(shipped: Path, cli_env: dict[str, str]) -> None:
    out = shipped / "p.html"
    result = digest("preview", "--out", str(out), env=cli_env, cwd=shipped)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "<html" in html and "Counting glaciers" in html and "%%" not in html
    assert str(out) in result.stdout
    text = digest("preview", "--text", env=cli_env, cwd=shipped)
    assert text.stdout.startswith("Subject: The Weekly Harbour: ")
    assert "Leaf mould" in text.stdout
    assert not (shipped / "outbox").exists()
    default = digest("preview", env=cli_env, cwd=shipped)
    assert default.returncode == 0 and (shipped / "preview.html").exists()


def test_check(shipped: Path, cli_env: dict[str, str]) -> None:
    result = digest("check", env=cli_env, cwd=shipped)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "not https" in result.stderr
    online = digest("check", "--online", env=cli_env, cwd=shipped)
    assert online.returncode == 0 and "✓" in online.stdout
    assert "delivery (outbox): the outbox folder" in online.stdout


def invoke(project: Project, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(project.path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_subscriber_commands(project: Project, tmp_path: Path) -> None:
    project.feed("https://example.org/feed.xml")
    project.write()
    assert invoke(project, "subscribers", "add", "Ada@example.org", "--name", "Ada")[0] == 0
    code, _, err = invoke(project, "subscribers", "add", "not-an-address")
    assert code == 2 and "not a valid e-mail address" in err
    csv = tmp_path / "list.csv"
    csv.write_text("email,name\ngrace@example.org,Grace\nbad@,Bad\n")
    code, out, err = invoke(project, "subscribers", "import", str(csv))
    assert code == 1 and "list.csv:3: rejected" in err and "1 added" in out
    code, out, _ = invoke(project, "subscribers", "list", "--json")
    listed = json.loads(out)
    assert [s["email"] for s in listed] == ["Ada@example.org", "grace@example.org"]
    assert invoke(project, "subscribers", "remove", "grace@example.org")[0] == 0
    code, out, _ = invoke(project, "subscribers", "export")
    assert "grace@example.org,Grace,removed" in out
    assert invoke(project, "subscribers", "remove", "nobody@example.org")[0] == 2


def test_unsubscribed_address_needs_resubscribe(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.write()
    invoke(project, "subscribers", "add", "ada@example.org")
    from digest.state import subscribers
    from digest.state.db import connect

    engine = connect(project.config().storage_url)
    with engine.begin() as conn:
        s = subscribers.get(conn, "ada@example.org")
        assert s is not None
        subscribers.unsubscribe(conn, s.id, s.created_at + timedelta(days=1), "one-click")
    code, _, err = invoke(project, "subscribers", "add", "ada@example.org")
    assert code == 2 and "--resubscribe" in err
    assert invoke(project, "subscribers", "add", "ada@example.org", "--resubscribe")[0] == 0


def test_feeds_command(shipped: Path, cli_env: dict[str, str]) -> None:
    digest("run", env=cli_env, cwd=shipped)
    result = digest("feeds", "--json", env=cli_env, cwd=shipped)
    rows = json.loads(result.stdout)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    assert rows[0]["last_success_at"] and rows[0]["consecutive_failures"] == 0
    table = digest("feeds", env=cli_env, cwd=shipped)
    assert "Harbour Tech Notes" in table.stdout


def test_smtp_end_to_end(project: Project, tmp_path: Path, cli_env: dict[str, str]) -> None:
    project.feed(str(ROOT / "digest" / "samples" / "field-notes.atom"), first_run_window="all")
    project.subscriber("ada@example.org", "Ada")
    project.subscriber("grace@example.org", "Grace")
    project.subscriber("linus@example.org")
    with SmtpServer(tmp_path, security="starttls", user=("digest", "pw")) as server:
        project.data["delivery"] = {
            "backend": "smtp",
            "smtp": {
                "host": "127.0.0.1",
                "port": server.port,
                "security": "starttls",
                "username": "digest",
                "password_env": "TEST_SMTP_PASSWORD",
                "ca_file": str(server.cert),
            },
        }
        project.write()
        missing = digest("--config", str(project.path), "run", env=cli_env)
        assert missing.returncode == 2 and "TEST_SMTP_PASSWORD" in missing.stderr
        result = digest(
            "--config",
            str(project.path),
            "run",
            "--json",
            env={**cli_env, "TEST_SMTP_PASSWORD": "pw"},
        )
        assert result.returncode == 0, result.stderr
        assert len(server.received) == 3 and server.connections == 1
        assert sorted(r.rcpt_tos[0] for r in server.received) == [
            "ada@example.org",
            "grace@example.org",
            "linus@example.org",
        ]
        msg = server.received[0].message
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "Counting glaciers" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_version_and_help(cli_env: dict[str, str]) -> None:
    assert digest("--version", env=cli_env).stdout.startswith("digest, version")
    assert "run" in digest("--help", env=cli_env).stdout
    assert os.environ.get("DIGEST_FAULT") is None


def test_unusable_database_is_a_clear_error(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    (project.folder / "blocker").write_text("a file, not a folder")
    project.data["storage"] = {"url": f"sqlite:///{project.folder / 'blocker' / 'x.db'}"}
    project.write()
    code, _, err = invoke(project, "subscribers", "list")
    assert code == 1 and "storage.url" in err and "Traceback" not in err


def test_check_online_tries_the_delivery_credentials(
    project: Project, tmp_path: Path, sendgrid_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.feed(str(ROOT / "digest" / "samples" / "field-notes.atom"))
    project.data["delivery"] = {
        "backend": "sendgrid",
        "sendgrid": {"api_key_env": "TEST_SG_KEY", "api_url": sendgrid_server.url},
    }
    project.write()
    monkeypatch.setenv("TEST_SG_KEY", sendgrid_server.api_key)
    code, out, _ = invoke(project, "check", "--online")
    assert code == 0, out
    assert "delivery (sendgrid): SendGrid" in out and "nothing was sent" in out
    (request,) = sendgrid_server.requests
    assert request.sandbox and request.valid and not sendgrid_server.accepted
    monkeypatch.setenv("TEST_SG_KEY", "SG.wrong")
    code, out, _ = invoke(project, "check", "--online")
    assert code == 1 and "401" in out and "api_key_env" in out


def test_check_online_smtp_login(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.feed(str(ROOT / "digest" / "samples" / "field-notes.atom"))
    folder = tmp_path / "smtp"
    folder.mkdir()
    with SmtpServer(folder, security="starttls", user=("digest", "right")) as server:
        project.data["delivery"] = {
            "backend": "smtp",
            "smtp": {
                "host": "127.0.0.1",
                "port": server.port,
                "username": "digest",
                "password_env": "TEST_SMTP_PW",
                "ca_file": str(server.cert),
            },
        }
        project.write()
        monkeypatch.setenv("TEST_SMTP_PW", "right")
        code, out, _ = invoke(project, "check", "--online")
        assert code == 0 and "logged in as 'digest'" in out
        monkeypatch.setenv("TEST_SMTP_PW", "wrong")
        code, out, _ = invoke(project, "check", "--online")
        assert code == 1 and "refused the login" in out
        assert server.received == []
