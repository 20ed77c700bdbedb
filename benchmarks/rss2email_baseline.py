"""rss2email itself, measured in the same run as ours: the issue's reference peer.

    python benchmarks/rss2email_baseline.py               # 100 feeds × 50 new entries
    python benchmarks/rss2email_baseline.py --latency 0   # the feeds answer at once

Run as a command, it is issue 14's head to head, whole process against whole process:
``python -m digest run --now`` (a fresh process: start, imports, config, fetch, parse, the
ledger, the edition within its size budget, the outbox; SQLite, one subscriber; digest's
modules byte-compiled first, as ``pip install`` leaves them) over
100 local WordPress-like feeds of 50 new entries each (~3 KB bodies, ``feedgen``),
against ``r2e run`` over the same feeds in the same run, and both again with nothing
new. It prints each one's wall time, CPU seconds and peak RSS, and the ratio.

rss2email 3.14 is installed from PyPI into a venv of its own, outside the repository
(``$XDG_CACHE_HOME/digest-benchmarks/rss2email-3.14``, made on first use: it needs the
network once). It reads the same local feeds as ``digest run`` and mails every new
entry, one message each, over SMTP to an aiosmtpd sink in this process — as the issue
measured it (54.7 s, 91 e-mails/s, for 100 feeds × 50 entries on its day's machine).
None of rss2email's code is in this repository.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import socket
import subprocess
import sys
import tempfile
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
    cpu: float = 0.0  # CPU seconds of the first run


def _timed(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """Run ``command``, its output to ``log``: (wall seconds, its peak RSS in MB, its CPU
    seconds)."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{command[0]} failed: {log.read_text(errors='replace')[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


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
        seconds, rss, cpu = _timed(command, folder / "first.log")
        emails = sink.messages
        second, _, _ = _timed(command, folder / "second.log")
    finally:
        controller.stop()
    return Measured(seconds, emails, rss, second, cpu)


# -- the head to head ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ours:
    seconds: float
    cpu: float
    max_rss_mb: float
    entries: int
    second_seconds: float


def digest_run(urls: list[str], folder: Path) -> Ours:
    """``python -m digest run --now`` over ``urls`` (all new: one digest to one subscriber,
    written to the outbox), then again (nothing new); each in a fresh process."""
    root = Path(__file__).resolve().parents[1]
    lines = [
        "[digest]",
        'title = "Benchmark"',
        'from = "Digest <digest@example.org>"',
        'base_url = "https://digest.example.org"',
        'postal_address = "1 Bench Street"',
        'first_run_window = "all"',
        "[storage]",
        f"url = {json.dumps('sqlite:///' + str(folder / 'state.db'))}",
        "[delivery]",
        'backend = "outbox"',
        "[delivery.outbox]",
        f"dir = {json.dumps(str(folder / 'outbox'))}",
        "[[subscribers]]",
        'email = "reader@example.org"',
    ]
    for url in urls:
        lines += ["[[feeds]]", f"url = {json.dumps(url)}"]
    config = folder / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(root), "NO_PROXY": "*"}
    # As installed: pip byte-compiles a package it installs (rss2email's venv has its
    # .pyc files); a checkout run with PYTHONDONTWRITEBYTECODE=1 would otherwise compile
    # digest's modules from source in every process (0.2 s of each start).
    compileall.compile_dir(root / "digest", quiet=1)
    command = [sys.executable, "-m", "digest", "--config", str(config), "run", "--now"]
    seconds, rss, cpu = _timed(command, folder / "digest-first.log", env)
    second, _, _ = _timed(command, folder / "digest-second.log", env)
    made = sorted((folder / "outbox").rglob("*.eml"))
    entries = _entries(folder / "state.db")
    if len(made) != 1:
        raise RuntimeError(f"digest run made {len(made)} messages, not one")
    return Ours(seconds, cpu, rss, entries, second)


def _entries(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT item_count + more_count FROM editions").fetchone()[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--feeds", type=int, default=100)
    p.add_argument("--entries", type=int, default=50)
    p.add_argument("--latency", type=float, default=0.1, help="seconds before each answer")
    p.add_argument("--no-rss2email", action="store_true", help="only digest")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from feedgen import feed_xml
    from feedserver import prepare, serving

    bodies = {f"/shaped/{i}": feed_xml(10_000 + i, args.entries) for i in range(args.feeds)}
    size = sum(len(b) for b in bodies.values()) / (args.feeds * args.entries)
    r2e = None if args.no_rss2email else installed()
    with serving(prepare(bodies, set(bodies)), args.latency) as server:
        urls = [server.url(f"/shaped/{i}", i) for i in range(args.feeds)]
        with tempfile.TemporaryDirectory() as tmp:
            ours = digest_run(urls, Path(tmp))
        peer = None
        if r2e is not None:
            with tempfile.TemporaryDirectory() as tmp:
                peer = measure(r2e, urls, Path(tmp))
    print(
        f"{args.feeds} feeds × {args.entries} new entries ({size / 1000:.1f} KB per entry), "
        f"{args.latency * 1000:.0f} ms latency, load average {os.getloadavg()[0]:.1f}:\n"
        f"  digest run (whole process): {ours.seconds:.2f}s (CPU {ours.cpu:.2f}s, peak RSS "
        f"{ours.max_rss_mb:.0f} MB), {ours.entries} entries in one digest; "
        f"nothing new: {ours.second_seconds:.2f}s"
    )
    if peer is not None:
        print(
            f"  rss2email {VERSION} (whole process): {peer.seconds:.2f}s (CPU {peer.cpu:.2f}s, "
            f"peak RSS {peer.max_rss_mb:.0f} MB), {peer.emails} e-mails; nothing new: "
            f"{peer.second_seconds:.2f}s\n"
            f"  rss2email / digest: {peer.seconds / ours.seconds:.1f}x wall (target >= 10x), "
            f"{peer.cpu / ours.cpu:.1f}x CPU"
        )


if __name__ == "__main__":
    main()
