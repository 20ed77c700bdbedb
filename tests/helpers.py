"""What tests share that is not a fixture: paths, the fixed clock, test configs written to
temporary folders (``Project``), hand-set clocks. Fixtures are in ``conftest.py``."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from digest.config import Config, parse_config
from digest.model import RunReport
from digest.state import db

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "digest" / "samples"
SHARED = Path(os.environ.get("DIGEST_SHARED") or ROOT.parent / "shared")
PYTHON = sys.executable
#: The tests' "now": every fixed clock starts here, unless a test says otherwise.
NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
#: Just after the sample feeds' newest post (March 2027): "now" for tests that need
#: the samples' posts to be recent.
SAMPLES_NOW = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML writing for test configs: tables, arrays of tables, scalars."""
    lines: list[str] = []

    def table(prefix: str, body: dict[str, Any]) -> None:
        scalars = {
            k: v
            for k, v in body.items()
            if not isinstance(v, dict | list)
            or (isinstance(v, list) and not (v and isinstance(v[0], dict)))
        }
        for k, v in scalars.items():
            lines.append(f"{k} = {toml_value(v)}")
        for k, v in body.items():
            if isinstance(v, dict):
                lines.append(f"\n[{prefix}{k}]")
                table(f"{prefix}{k}.", v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"\n[[{prefix}{k}]]")
                    table(f"{prefix}{k}.", item)

    table("", data)
    return "\n".join(lines) + "\n"


def base_config(tmp: Path) -> dict[str, Any]:
    return {
        "digest": {
            "title": "Test Digest",
            "from": "Test Digest <digest@example.org>",
            "base_url": "https://digest.example.org",
            "postal_address": "1 Test Street, Testville",
        },
        "storage": {"url": "sqlite:///state.db"},
        "delivery": {"backend": "outbox", "outbox": {"dir": "outbox"}, "retry_backoff": "1ms"},
        "feeds": [],
        "subscribers": [],
    }


class Project:
    """A config file and its folder, for tests that run digest for real."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = base_config(folder)
        self.engines: list[sa.Engine] = []

    @property
    def path(self) -> Path:
        return self.folder / "config.toml"

    def write(self) -> Path:
        self.path.write_text(to_toml(self.data), encoding="utf-8")
        return self.path

    def config(self) -> Config:
        return parse_config(self.data, self.path)

    def feed(self, url: str, **extra: Any) -> None:
        self.data["feeds"].append({"url": url, **extra})

    def subscriber(self, email: str, name: str | None = None) -> None:
        entry = {"email": email}
        if name:
            entry["name"] = name
        self.data["subscribers"].append(entry)

    def engine(self) -> sa.Engine:
        """An engine on the project's database, disposed when the test ends."""
        e = db.connect(self.config().storage_url)
        self.engines.append(e)
        return e

    def run(self, now: datetime) -> RunReport:
        """One ``digest run`` in this process, at ``now``, on the project's database."""
        from digest import pipeline

        services = pipeline.build(
            self.config(), engine=self.engine(), clock=lambda: now, sleep=lambda s: None
        )
        return pipeline.run(services)

    def close(self) -> None:
        for e in self.engines:
            e.dispose()
        self.engines.clear()

    def outbox(self) -> list[Path]:
        folder = self.folder / "outbox"
        return sorted(folder.glob("*.eml")) if folder.exists() else []


class FakeTime:
    """A monotonic clock that only moves when someone sleeps: retries take no time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def monotonic(self) -> float:
        return self.now


class Clock:
    """A clock a test sets by hand: ``clock.now = ...``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


def add_post(samples: Path, guid: str, published: str = "Mon, 15 Mar 2027 08:00:00 +0000") -> None:
    """Put a new post at the top of the sample feed harbour-tech.rss."""
    feed = samples / "harbour-tech.rss"
    feed.write_text(
        feed.read_text().replace(
            "<item>",
            f"<item><title>Post {guid}</title><link>https://harbour-tech.example/{guid}/</link>"
            f'<guid isPermaLink="false">{guid}</guid>'
            f"<pubDate>{published}</pubDate></item><item>",
            1,
        )
    )


@dataclass(frozen=True)
class Ran:
    """What ``python -m digest`` would have printed and exited with (as
    ``subprocess.CompletedProcess``: ``returncode``, ``stdout``, ``stderr``)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def invoke(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    umask: int = -1,
    stdin: str | None = None,
) -> Ran:
    """``digest *args`` in this process with click's ``CliRunner``: a second or more
    quicker than a subprocess, and the same exit code, stdout and stderr. ``env`` is the
    whole environment, as for a subprocess (variables it lacks are unset meanwhile).

    What the command sets up for the process is undone afterwards: the root logger's
    handlers and level (``main`` calls ``logging.basicConfig`` on the runner's stderr),
    the working folder and the umask. An exception digest lets escape is a traceback on
    stderr and exit 1, as Python would print it."""
    from click.testing import CliRunner

    from digest.cli import main

    changes: dict[str, str | None] = {}
    if env is not None:
        changes = {k: None for k in os.environ if k not in env}
        changes.update(env)
    root, client = logging.getLogger(), logging.getLogger("python_http_client")
    handlers, level, client_level = root.handlers[:], root.level, client.level
    root.handlers = []  # else basicConfig adds nothing, and -v/-vv would go nowhere
    old_umask = os.umask(umask) if umask >= 0 else None
    try:
        with contextlib.chdir(cwd or os.getcwd()):
            result = CliRunner(env=changes).invoke(
                main, list(args), input=stdin, prog_name="digest", catch_exceptions=True
            )
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = handlers, level
        client.setLevel(client_level)
        if old_umask is not None:
            os.umask(old_umask)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return Ran(list(args), result.exit_code, result.stdout, stderr)
