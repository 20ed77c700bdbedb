"""rss2email itself, measured in the same run as ours: the issue's reference peer.

rss2email 3.14 is installed from PyPI into a venv of its own, outside the repository
(``$XDG_CACHE_HOME/digest-benchmarks/rss2email-3.14``, made on first use: it needs the
network once). It reads the same local feeds as ``digest run`` and mails every new
entry, one message each, over SMTP to an aiosmtpd sink in this process — as the issue
measured it (54.7 s, 91 e-mails/s, for 100 feeds × 50 entries on its day's machine).
None of rss2email's code is in this repository.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

VERSION = "3.14"


def _cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "digest-benchmarks" / f"rss2email-{VERSION}"


def installed() -> Path | None:
    """The ``r2e`` command, installed on first use; None (and why, on stderr) if that
    cannot be done here."""
    home = _cache()
    r2e = home / "bin" / "r2e"
    if r2e.exists():
        return r2e
    print(f"  (installing rss2email {VERSION} into {home} for the in-run baseline)")
    try:
        venv.create(home, with_pip=True, clear=True)
        subprocess.run(
            [str(home / "bin" / "python"), "-m", "pip", "install", "-q", f"rss2email=={VERSION}"],
            check=True,
            timeout=300,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"  (cannot install rss2email {VERSION}: {exc}; skipped)", file=sys.stderr)
        return None
    return r2e if r2e.exists() else None


class _Sink:
    """Counts the messages it is given."""

    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages += 1
        return "250 OK"


@dataclass(frozen=True)
class Measured:
    seconds: float
    emails: int
    max_rss_mb: float
    second_seconds: float  # the unchanged second run


def _timed(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command``, its output to ``log``: (wall seconds, its peak RSS in MB)."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"rss2email failed: {log.read_text(errors='replace')[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def measure(r2e: Path, urls: list[str], folder: Path) -> Measured:
    """``r2e run`` over ``urls`` (all entries new), then again (nothing new)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = folder / "rss2email.cfg"
        lines = [
            "[DEFAULT]",
            "from = digest@example.org",
            "to = reader@example.org",
            "email-protocol = smtp",
            f"smtp-server = 127.0.0.1:{port}",
            "smtp-auth = False",
            "smtp-ssl = False",
            "",
        ]
        for i, url in enumerate(urls):
            lines += [f"[feed.f{i}]", f"url = {url}", ""]
        config.write_text("\n".join(lines))
        command = [str(r2e), "-c", str(config), "-d", str(folder / "rss2email.json"), "run"]
        seconds, rss = _timed(command, folder / "first.log")
        emails = sink.messages
        second, _ = _timed(command, folder / "second.log")
    finally:
        controller.stop()
    return Measured(seconds, emails, rss, second)
