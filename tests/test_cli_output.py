"""What the digest command shows (issue 16): every column at any terminal width, one JSON
object even when a ``--json`` command fails, whole help lines, text that looks like
console markup printed as it is, feeds named by name and address."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from datetime import timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from digest.cli import main
from digest.config import warnings_for

from .helpers import ROOT, SAMPLES_NOW, Project

NOW = SAMPLES_NOW - timedelta(hours=3)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
WIDTHS = [80, 120, 200]


def on_terminal(args: list[str], columns: int, env: dict[str, str], cwd: Path) -> str:
    """Run ``digest`` on a pseudo-terminal ``columns`` wide; what it showed, as text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return ANSI.sub("", b"".join(chunks).decode("utf-8", errors="replace")).replace("\r\n", "\n")


def piped(args: list[str], env: dict[str, str], cwd: Path) -> str:
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    result = subprocess.run(
        [sys.executable, "-m", "digest", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=120,
    )
    return result.stdout + result.stderr


def shown_everywhere(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, str]:
    outputs = {f"{w} columns": on_terminal(args, w, env, cwd) for w in WIDTHS}
    outputs["piped"] = piped(args, env, cwd)
    return outputs


@pytest.fixture
def troubled(project: Project, tmp_path: Path) -> Project:
    """Three feeds with long names and errors: one read, one missing file, one refused."""
    samples = ROOT / "digest" / "samples"
    project.feed(
        str(samples / "harbour-tech.rss"),
        name="Harbour Tech Notes, the long-running engineering journal of the harbour",
        first_run_window="all",
    )
    project.feed(str(tmp_path / "a-folder-with-a-long-name" / "missing-feed-file.xml"))
    project.feed("http://127.0.0.1:9/a/feed/address/that/nobody/answers/at/all.xml")
    project.data["fetch"] = {"allow_private": True, "connect_timeout": "2s"}
    project.subscriber("ada@example.org", "Ada Lovelace, Countess of Lovelace [and mathematician]")
    project.subscriber("grace.brewster.murray.hopper@navy.example.org", "Grace Hopper")
    project.write()
    project.run(NOW)
    project.close()
    return project


def test_feeds_shows_every_column_at_every_width(
    troubled: Project, cli_env: dict[str, str]
) -> None:
    args = ["--config", str(troubled.path), "feeds"]
    rows = json.loads(piped([*args, "--json"], cli_env, troubled.folder))
    assert [r["status"] for r in rows] == ["ok", "failing", "failing"]
    for where, text in shown_everywhere(args, cli_env, troubled.folder).items():
        flat = " ".join(text.split())
        for header in ("status", "last success", "failures", "last error"):
            assert header in text, (where, header, text)
        for r in rows:
            values = [
                r["name"],
                r["status"],
                (r["last_success_at"] or "never")[:16].replace("T", " "),
                str(r["consecutive_failures"]),
                r["last_error"] or "",
            ]
            for value in values:
                assert " ".join(value.split()) in flat, (where, value, text)
            assert "…" not in text, (where, text)


def test_subscribers_list_shows_every_column_at_every_width(
    troubled: Project, cli_env: dict[str, str]
) -> None:
    args = ["--config", str(troubled.path), "subscribers", "list"]
    rows = json.loads(piped([*args, "--json"], cli_env, troubled.folder))
    assert len(rows) == 2
    for where, text in shown_everywhere(args, cli_env, troubled.folder).items():
        for r in rows:
            for value in (r["email"], r["name"], r["status"]):
                assert value in text, (where, value, text)
        assert "2 subscribers" in text


def test_subscribers_list_is_aligned(troubled: Project, cli_env: dict[str, str]) -> None:
    text = on_terminal(
        ["--config", str(troubled.path), "subscribers", "list"], 200, cli_env, troubled.folder
    )
    lines = [line for line in text.splitlines() if "@" in line or line.startswith("email")]
    assert len(lines) == 3
    columns = {line.index("active") for line in lines[1:]}
    assert len(columns) == 1 and lines[0].index("status") in columns


def test_check_says_everything_at_every_width(troubled: Project, cli_env: dict[str, str]) -> None:
    warnings = warnings_for(troubled.config())
    assert warnings  # a missing feed file at least
    args = ["--config", str(troubled.path), "check", "--online"]
    for where, text in shown_everywhere(args, cli_env, troubled.folder).items():
        flat = " ".join(text.split())
        for warning in warnings:
            assert " ".join(warning.split()) in flat, (where, warning)
        for source in troubled.config().sources():
            assert source.url in flat, (where, source.url)
        assert "the harbour (file://" in flat and "): unchanged since the last run" in flat
        assert "delivery (outbox)" in flat


# -- --json failures ----------------------------------------------------------------------

JSON_COMMANDS = [
    ["run", "--json"],
    ["run", "--dry-run", "--json"],
    ["feeds", "--json"],
    ["subscribers", "list", "--json"],
    ["schedule", "--json"],
    ["release", "--json"],
    ["resend", "--edition", "1", "--failed", "--json"],
    ["check", "--deliverability", "--json"],
    ["status", "--json"],
]


def test_every_json_command_lists_here() -> None:
    """A new ``--json`` command joins JSON_COMMANDS."""

    def walk(group: click.Group, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
        found = set()
        for name, command in group.commands.items():
            if any(p.name == "as_json" for p in command.params):
                found.add((*prefix, name))
            if isinstance(command, click.Group):
                found |= walk(command, (*prefix, name))
        return found

    listed = {tuple(w for w in args if not w.startswith("-") and not w.isdigit())
              for args in JSON_COMMANDS}  # fmt: skip
    assert walk(main, ()) <= listed


@pytest.mark.parametrize("args", JSON_COMMANDS, ids=" ".join)
def test_a_json_command_that_fails_prints_one_json_object(
    project: Project, args: list[str]
) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["schedule"] = {"timezone": "Mars/Olympus", "cron": "every day"}
    project.write()
    result = CliRunner().invoke(main, ["--config", str(project.path), *args])
    assert result.exit_code == 2
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and answer["exit_code"] == 2
    assert answer["file"] == str(project.path)
    assert [p.split(":")[0] for p in answer["problems"]] == ["schedule.cron", "schedule.timezone"]
    assert "schedule.cron" in answer["error"]
    assert "schedule.timezone" in result.stderr  # people still read stderr


def test_run_json_with_an_invalid_config_in_a_subprocess(
    project: Project, cli_env: dict[str, str]
) -> None:
    project.data["feeds"] = {"url": "https://example.org/feed.xml"}
    project.write()
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(project.path), "run", "--json"],
        capture_output=True,
        text=True,
        env=cli_env,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and "[[feeds]]" in answer["problems"][0]


# -- help, markup, names ------------------------------------------------------------------


def test_top_level_help_keeps_whole_descriptions() -> None:
    result = CliRunner().invoke(main, ["--help"], terminal_width=100)
    flat = " ".join(result.output.split())
    for name, command in main.commands.items():
        first = " ".join((command.help or "").split("\n\n")[0].split())
        assert f"{name} {first}" in flat, (name, first)


def test_text_that_looks_like_markup_is_printed_as_it_is(
    project: Project, tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/missing.xml").respond_with_data("no", status=404)
    project.feed(str(ROOT / "digest" / "samples" / "harbour-tech.rss"), name="[bold]Loud[/bold]")
    project.feed(httpserver.url_for("/missing.xml"), name="[[feeds]] [/red]")
    project.data["fetch"] = {"allow_private": True}
    project.write()
    runner = CliRunner()
    added = ["--config", str(project.path), "subscribers", "add", "ada@example.org"]
    assert runner.invoke(main, [*added, "--name", "[red]Ada[/red]"]).exit_code == 0
    online = runner.invoke(main, ["--config", str(project.path), "check", "--online"])
    assert "[bold]Loud[/bold]" in online.stdout
    assert f"[[feeds]] [/red] ({httpserver.url_for('/missing.xml')}): HTTP 404" in online.stdout
    listed = runner.invoke(main, ["--config", str(project.path), "subscribers", "list"])
    assert "[red]Ada[/red]" in listed.stdout
    project.data["feeds"] = []
    project.write()
    broken = runner.invoke(main, ["--config", str(project.path), "check"])
    assert broken.exit_code == 2 and "[[feeds]]" in broken.stderr


def test_check_online_names_feeds_by_address_and_counts_in_words(
    project: Project, httpserver: HTTPServer
) -> None:
    one = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><link>https://e.org/</link>'
        b"<item><title>Only</title><link>https://e.org/1</link><guid>1</guid></item>"
        b"</channel></rss>"
    )
    httpserver.expect_request("/one.xml").respond_with_data(one, content_type="application/xml")
    httpserver.expect_request("/gone.xml").respond_with_data("no", status=404)
    project.feed(httpserver.url_for("/one.xml"))
    project.feed(httpserver.url_for("/gone.xml"))
    project.data["fetch"] = {"allow_private": True}
    project.write()
    result = CliRunner().invoke(main, ["--config", str(project.path), "check", "--online"])
    assert result.exit_code == 1
    assert f"✓ {httpserver.url_for('/one.xml')}: 1 entry\n" in result.stdout
    assert f"✗ {httpserver.url_for('/gone.xml')}: " in result.stdout
    assert "✗ 127.0.0.1:" not in result.stdout


def test_import_says_which_rows_changed_what(project: Project, tmp_path: Path) -> None:
    project.feed("https://example.org/feed.xml")
    project.write()
    runner = CliRunner()
    config = ["--config", str(project.path)]
    runner.invoke(main, [*config, "subscribers", "add", "ada@example.org", "--name", "Ada"])
    runner.invoke(main, [*config, "subscribers", "add", "bob@example.org", "--name", "Bob"])
    csv = tmp_path / "list.csv"
    csv.write_text("email,name\nbob@example.org,Bob\nada@example.org,Ada Lovelace\n")
    result = runner.invoke(main, [*config, "subscribers", "import", str(csv)])
    assert result.exit_code == 0
    assert f"{csv}:3: updated ada@example.org: name 'Ada' → 'Ada Lovelace'" in result.stdout
    assert "bob@example.org" not in result.stdout
    assert "0 added, 1 updated, 1 already there" in result.stdout


def test_a_command_line_click_refuses_is_a_json_failure_too(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.write()
    for args in (["run", "--json", "--bogus"], ["resend", "--json"]):
        result = CliRunner().invoke(main, ["--config", str(project.path), *args])
        assert result.exit_code == 2
        answer = json.loads(result.stdout)
        assert answer["ok"] is False and answer["exit_code"] == 2 and answer["error"]
    plain = CliRunner().invoke(main, ["--config", str(project.path), "run", "--bogus"])
    assert plain.exit_code == 2 and plain.stdout == ""


def test_check_json_with_a_broken_template_is_one_object(project: Project) -> None:
    (project.folder / "mine").mkdir()
    (project.folder / "mine" / "digest.txt.j2").write_text("{{ edition.title }}\n")
    project.feed(str(ROOT / "digest" / "samples" / "harbour-tech.rss"))
    project.data["email"] = {"templates": "mine"}
    project.write()
    args = ["--config", str(project.path), "check", "--deliverability", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and "no unsubscribe link" in answer["error"]


def test_shell_completion_completes_commands(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "_DIGEST_COMPLETE": "bash_complete", "COMP_WORDS": "digest feeds "}
    env["COMP_CWORD"] = "2"
    result = subprocess.run(
        [sys.executable, "-m", "digest"], capture_output=True, text=True, env=env, check=False
    )
    assert {"plain,add", "plain,remove", "plain,import", "plain,export"} <= set(
        result.stdout.split()
    ), result.stdout + result.stderr
