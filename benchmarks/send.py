"""Sending benchmark: a whole edition to N subscribers through the real code path, against
a local SendGrid-compatible server, with the floor measured in the same run.

    python benchmarks/send.py                 # 1,000,000 subscribers
    python benchmarks/send.py --quick         # 100,000
    python benchmarks/send.py --delay 0.05    # the server answers after 50 ms, like the API
    python benchmarks/send.py --zones 24 --variants 8   # subscribers' own zones and choices

What is timed for digest: ``digest run`` as an operator runs it, in a fresh process
(``python -m digest run --now``: the start and imports, the config, the feed, the recipient
freeze, one signed token per recipient, one request body per 1,000, the requests from
``delivery.workers`` threads through the official client, the ledger written per
batch, the edition settled), on a fresh database holding N active subscribers. The
floor, as issue 14 defines it: the same 1,000-recipient bodies (same fields, same
sizes) built from plain tuples with ``json.dumps`` and posted one after another on one
keep-alive connection; no database, no signing.

Also: SMTP (``--smtp-messages``, default 10,000; 2,000 with ``--quick``) through the real
code path against an aiosmtpd sink in another process, against a floor of one prebuilt
message sent over one smtplib connection; and tokens per second against plain HMAC.
Peak memory is the peak RSS of the process that ran the edition (a fresh child process).

With ``--zones Z --variants V`` it times, in the same run, two editions of the same four
feeds (categories A-D) to the same N subscribers: the baseline, everyone in the
schedule's zone with no choices (one variant, one zone group), and the spread, the
subscribers round-robin over Z real zones (UTC+14 to UTC-10) and V variants (V-1 sets
of unticked categories, and none). Both are driven as cron drives ``digest run``
(``Runner.run_due``, what ``digest serve``'s scheduler runs at a tick) with the clock at
each zone group's hour: the baseline is one run; the spread's time is the sum of its
runs, the one that makes the edition at the first zone group's hour, then one per later
zone group's hour (each releases its group and sends it). Every recipient must be
delivered once in both.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER = ROOT / "tests" / "sendgrid_server.py"
FEED = ROOT / "digest" / "samples" / "field-notes.atom"
KEY = "SG.digest-test.local-mock-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sendgrid(delay: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, str(SERVER), "--port", "0", "--validate", "none", "--delay", str(delay)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise SystemExit("the SendGrid test server did not start")
    return proc, url


ZONES = [
    "Pacific/Kiritimati",
    "Pacific/Tongatapu",
    "Asia/Kamchatka",
    "Australia/Sydney",
    "Asia/Tokyo",
    "Asia/Shanghai",
    "Asia/Bangkok",
    "Asia/Dhaka",
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "Asia/Karachi",
    "Asia/Dubai",
    "Europe/Moscow",
    "Africa/Cairo",
    "Europe/Paris",
    "UTC",
    "Atlantic/Azores",
    "America/Noronha",
    "America/Sao_Paulo",
    "America/Halifax",
    "America/New_York",
    "America/Denver",
    "America/Los_Angeles",
    "Pacific/Honolulu",
]
SKIPS = [["A"], ["B"], ["C"], ["D"], ["A", "B"], ["C", "D"], ["A", "C"], ["B", "D"]]
CYCLE = "2027-03-08T07:00"  # the zoned editions' cycle: 07:00 on a Monday, in each zone


def four_feeds(folder: Path) -> list[tuple[str, str]]:
    """The three sample feeds and a fourth, with the categories A to D."""
    items = "".join(
        f"<item><title>Fourth feed story {n}</title><guid>fourth-{n}</guid>"
        f"<link>https://fourth.example/{n}</link><pubDate>Mon, 0{n % 7 + 1} Mar 2027 "
        f"06:00:00 +0000</pubDate><description>{'Words of the story. ' * 20}</description></item>"
        for n in range(10)
    )
    fourth = folder / "fourth.rss"
    fourth.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Fourth</title>'
        f"<link>https://fourth.example/</link>{items}</channel></rss>"
    )
    samples = ROOT / "digest" / "samples"
    names = ["harbour-tech.rss", "field-notes.atom", "allotment-diary.rss"]
    return [(str(samples / n), c) for n, c in zip(names, "ABC", strict=True)] + [(str(fourth), "D")]


def write_config(
    folder: Path, backend: dict[str, Any], feeds: list[tuple[str, str]] | None = None
) -> Path:
    import tomlkit

    config: dict[str, Any] = {
        "digest": {
            "title": "Bench",
            "from": "Bench <digest@example.org>",
            "base_url": "https://digest.example.org",
            "postal_address": "1 Bench Street",
        },
        "storage": {"url": "sqlite:///bench.db"},
        "delivery": backend,
        "feeds": [
            {"url": url, "first_run_window": "all", **({"category": category} if category else {})}
            for url, category in feeds or [(str(FEED), "")]
        ],
    }
    path = folder / "config.toml"
    path.write_text(tomlkit.dumps(config))
    return path


def populate(config_path: Path, n: int, zones: int = 1, variants: int = 1) -> None:
    """N active subscribers, inserted in chunks (not timed); with ``zones``/``variants``,
    subscriber i in zone i % zones and variant (i // zones) % variants."""
    import sqlalchemy as sa

    from digest.config import load_config
    from digest.state import db
    from digest.state.db import schema

    engine = db.connect(load_config(config_path).storage_url)
    now = "2026-11-28 07:00:00.000000"
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        chunk = 50_000
        for start in range(0, n, chunk):
            rows = [
                (
                    f"reader{i}@example{i % 97}.org",
                    f"reader{i}@example{i % 97}.org",
                    f"Reader {i}",
                    None if ZONES[i % zones] == "UTC" or zones == 1 else ZONES[i % zones],
                    _skips((i // zones) % variants),
                )
                for i in range(start, min(n, start + chunk))
            ]
            raw.executemany(
                "INSERT INTO subscribers (email, email_key, name, status, source, created_at,"
                f" updated_at, timezone, preferences) VALUES (?, ?, ?, 'active', 'cli', '{now}',"
                f" '{now}', ?, ?)",
                rows,
            )
        count = conn.execute(sa.select(sa.func.count()).select_from(schema.subscribers))
        assert count.scalar_one() == n
    engine.dispose()


def _skips(variant: int) -> str | None:
    if variant == 0:
        return None
    return json.dumps({"version": 1, "skip_categories": SKIPS[variant - 1], "skip_feeds": []})


def edition_child(config_path: str, zoned: bool = False) -> None:
    """Run in a fresh process: one whole edition, as ``digest run`` from cron
    makes and sends it (``Runner.run_due``, the scheduler's code); print the figures as
    JSON. ``zoned``: at the cycle's first zone group's hour (the edition is made and
    that group sent), then at each later zone group's hour (that group released)."""
    from digest import pipeline, schedule, scheduler
    from digest.config import load_config
    from digest.state import subscribers

    os.environ.setdefault("BENCH_SENDGRID_KEY", KEY)
    config = load_config(config_path)
    cycle = schedule.parse_cycle(CYCLE)
    now = [schedule.release_at(cycle, "UTC")]  # the schedule's zone, everyone's
    services = pipeline.build(config, clock=lambda: now[0])
    hours = now[:]
    if zoned:  # each zone group the subscribers are in (--zones of the ZONES)
        with services.engine.connect() as conn:
            zones = subscribers.zones_of_active(conn, "UTC")
        hours = sorted({schedule.release_at(cycle, z) for z in zones})
        now[0] = hours[0]
    runner = scheduler.Runner(services, schedule.schedule_of(config))
    started, cpu = time.perf_counter(), time.process_time()
    reports, walls = [], []
    for hour in hours:
        now[0] = hour
        report = runner.run_due()
        assert report is not None, f"nothing due at {hour}"
        reports.append(report)
        walls.append(time.perf_counter() - started - sum(walls))
    (edition,) = reports[-1].editions
    runs = len(reports)
    assert not edition.zones_pending, edition
    assert reports[0].editions[0].id == edition.id and not reports[0].editions[0].resumed
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    import sqlalchemy as sa

    from digest.state.db import schema

    with services.engine.connect() as conn:
        requests = conn.execute(sa.select(sa.func.count()).select_from(schema.batches)).scalar_one()
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "first": walls[0],
                "delivered": edition.recipients_delivered,
                "once": once(services, edition.id),
                "failed": edition.recipients_failed,
                "requests": requests,
                "runs": runs,
                "variants": 1 + len(report_variants(services)),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def once(services: Any, edition_id: int) -> int:
    """How many subscribers the ledger says got the edition exactly once: one row each
    (the ledger's key is edition and subscriber), in a batch that went out, not failed
    alone; and every batch sent in one request. Not timed."""
    import sqlalchemy as sa

    from digest.state.db import schema

    S, D, B = schema.subscribers, schema.deliveries, schema.batches
    sent = (B.c.edition_id == D.c.edition_id) & (B.c.number == D.c.batch)
    with services.engine.connect() as conn:
        resent = conn.execute(
            sa.select(sa.func.count()).where((B.c.edition_id == edition_id) & (B.c.attempts != 1))
        ).scalar_one()
        assert resent == 0, f"{resent} batches were not sent in exactly one request"
        got = conn.execute(
            sa.select(sa.func.count(sa.distinct(D.c.subscriber_id)), sa.func.count())
            .select_from(D.join(B, sent).join(S, S.c.id == D.c.subscriber_id))
            .where((D.c.edition_id == edition_id) & (B.c.status == "sent") & D.c.error.is_(None))
        ).one()
    assert got[0] == got[1], got
    return int(got[0])


def report_variants(services: Any) -> list[int]:
    import sqlalchemy as sa

    from digest.state.db import schema

    with services.engine.connect() as conn:
        return [int(r[0]) for r in conn.execute(sa.select(schema.variants.c.number))]


def run_cycle(config_path: Path, zoned: bool = False) -> dict[str, Any]:
    """One cycle's edition, in a fresh process (``edition_child``): with ``zoned``, its
    first run and one at each later zone group's hour."""
    env = {**os.environ, "BENCH_SENDGRID_KEY": KEY, "NO_PROXY": "127.0.0.1,localhost"}
    zone_flag = ["--zoned"] if zoned else []
    out = child("the edition", env, "--edition-child", str(config_path), *zone_flag)
    return dict(json.loads(out.strip().splitlines()[-1]))


def child(what: str, env: dict[str, str], *args: str) -> str:
    """Run this script again with ``args`` in a fresh process; its standard output, or
    stop the benchmark with the end of its errors."""
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def run_edition(config_path: Path) -> dict[str, Any]:
    """``digest run`` as an operator runs it, in a fresh process (start, config, the
    feed, the freeze, the sending, the report): its wall time and peak RSS, and what the
    ledger says it did."""
    import sqlalchemy as sa

    from digest.config import load_config
    from digest.state import db
    from digest.state.db import schema

    env = {
        **os.environ,
        "BENCH_SENDGRID_KEY": KEY,
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
    }
    log = config_path.with_suffix(".log")
    command = [sys.executable, "-m", "digest", "--config", str(config_path), "run", "--now"]
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the edition failed:\n{log.read_text(errors='replace')[-3000:]}")
    engine = db.connect(load_config(config_path).storage_url)
    B = schema.batches
    with engine.connect() as conn:
        sizes = dict(
            conn.execute(sa.select(B.c.status, sa.func.sum(B.c.size)).group_by(B.c.status)).all()
        )
        requests = conn.execute(sa.select(sa.func.count()).select_from(B)).scalar_one()
    engine.dispose()
    return {
        "wall": wall,
        "delivered": int(sizes.get("sent", 0)),
        "failed": sum(int(v) for k, v in sizes.items() if k != "sent"),
        "requests": requests,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu": usage.ru_utime + usage.ru_stime,
    }


def edition_parts(config_path: Path) -> tuple[dict[str, Any], list[Any]]:
    """The edition's fixed request fields and which personal markers it uses (h, t), as
    digest's sender computed them once for the edition: the floor posts the same bodies."""
    from digest.config import load_config
    from digest.deliver.base import Letterhead, Personalizer
    from digest.deliver.sendgrid import SendgridBackend, SendgridSettings
    from digest.state import db, record
    from digest.state.tokens import Signer

    engine = db.connect(load_config(config_path).storage_url)
    with engine.connect() as conn:
        composed = record.load_composed(conn, 1)
    engine.dispose()
    head = Letterhead("Bench <digest@example.org>", None, "Bench <bench.example.org>", "")
    backend = SendgridBackend(
        SendgridSettings(api_key=KEY),
        head,
        Personalizer(Signer(b"k" * 32), "https://digest.example.org"),
    )
    sender = backend.open(composed)
    return sender.fields, sender.markers


def floor_sendgrid(
    url: str, n: int, batch: int, fields: dict[str, Any], markers: list[Any]
) -> float:
    """Seconds to build the same bodies with json.dumps and post them one after another
    on one keep-alive connection (``http.client``): the same fixed fields, the same
    personalization keys and value sizes, from plain tuples; no database, no signing."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    started, cpu = time.perf_counter(), time.process_time()
    connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=60)
    for start in range(0, n, batch):
        pers = []
        for i in range(start, min(n, start + batch)):
            token = f"{i:x}.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab"
            email = f"reader{i}@example{i % 97}.org"
            values = {
                "unsubscribe_url": f"https://digest.example.org/unsubscribe/{token}",
                "preferences_url": f"https://digest.example.org/preferences/{token}",
                "email": email,
                "name": f"Reader {i}",
            }
            subs = {}
            for key, h, t in markers:
                if h:
                    subs[h] = values[key]
                if t:
                    subs[t] = values[key]
            pers.append(
                {
                    "to": [{"email": email, "name": f"Reader {i}"}],
                    "headers": {
                        "List-Unsubscribe": f"<{values['unsubscribe_url']}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                    },
                    "substitutions": subs,
                }
            )
        body = json.dumps({**fields, "personalizations": pers}).encode()
        connection.request("POST", "/v3/mail/send", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 202, response.status
    connection.close()
    return time.perf_counter() - started, time.process_time() - cpu


def bench_tokens(count: int) -> tuple[float, float]:
    """Tokens per second: digest's Signer against one bare HMAC-SHA256 per id."""
    from digest.state.tokens import Signer

    signer = Signer(b"k" * 32)
    started = time.perf_counter()
    for i in range(count):
        signer.token(i, "reader@example.org")
    ours = count / (time.perf_counter() - started)
    key = b"k" * 32
    started = time.perf_counter()
    for i in range(count):
        hmac.new(key, f"manage\x1f{i}\x1freader@example.org".encode(), hashlib.sha256).digest()
    floor = count / (time.perf_counter() - started)
    return ours, floor


def bench_smtp(folder: Path, messages: int, workers: list[int]) -> tuple[list[float], float]:
    """Messages per second through digest's SMTP backend (one figure per workers
    setting, each a whole edition on a fresh database), and the smtplib floor."""
    port = free_port()
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Sink",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        ours = []
        for count in workers:
            smtp_dir = folder / f"smtp{count}"
            smtp_dir.mkdir()
            config = write_config(
                smtp_dir,
                {
                    "backend": "smtp",
                    "workers": count,
                    "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
                },
            )
            populate(config, messages)
            figures = run_edition(config)
            assert figures["delivered"] == messages, figures
            ours.append(messages / figures["wall"])
        # the floor: one prebuilt message, one connection, sendmail in a loop
        from email.message import EmailMessage

        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "digest@example.org", "r@example.org", "Bench"
        msg.set_content("Digest text, a line of it.\n" * 200)
        msg.add_alternative("<p>Digest html</p>\n" * 600, subtype="html")
        data = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port) as conn:
            for i in range(messages):
                conn.sendmail("digest@example.org", [f"reader{i}@example.org"], data)
        floor = messages / (time.perf_counter() - started)
        return ours, floor
    finally:
        sink.terminate()
        sink.wait(10)


def bench_dkim(count: int = 300) -> float:
    """Messages per second digest's DKIM signer signs (RSA 2048); benchmarks/dkim_sign.py
    measures it against the floor and dkimpy."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from digest.deliver.dkim import DkimKey

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = DkimKey("digest", "example.org", key)
    message = (
        b"From: Bench <digest@example.org>\r\nTo: r@example.org\r\nSubject: Bench\r\n"
        b"List-Unsubscribe: <https://digest.example.org/unsubscribe/x>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n" + b"Digest text\r\n" * 2000
    )
    started = time.perf_counter()
    for _ in range(count):
        signer.sign(message)
    return count / (time.perf_counter() - started)


def bench_zones(args: argparse.Namespace) -> None:
    """The spread over zones and variants against one zone, one variant, same run."""
    n = args.subscribers or (100_000 if args.quick else 1_000_000)
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-zones-"))
    server, url = start_sendgrid(args.delay)
    results = {}
    try:
        feeds = four_feeds(folder)
        for name, zones, variants in [
            ("one zone, one variant", 1, 1),
            (f"{args.zones} zones, {args.variants} variants", args.zones, args.variants),
        ]:
            sub = folder / f"z{zones}v{variants}"
            sub.mkdir()
            backend = {
                "backend": "sendgrid",
                "workers": args.workers,
                "sendgrid": {
                    "api_key_env": "BENCH_SENDGRID_KEY",
                    "api_url": url,
                    "batch_size": args.batch_size,
                },
            }
            config = write_config(sub, backend, feeds)
            populate(config, n, zones, variants)
            figures = run_cycle(config, zoned=zones > 1)
            assert figures["delivered"] == figures["once"] == n, figures
            assert figures["failed"] == 0, figures
            results[name] = figures
            print(
                f"  {name}: {figures['wall']:.2f}s ({n / figures['wall']:,.0f} recipients/s; "
                f"CPU {figures['cpu']:.2f}s), {figures['runs']} run(s) (the first "
                f"{figures['first']:.2f}s), {figures['variants']} variant(s) rendered, "
                f"{figures['requests']} requests, peak RSS {figures['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    base, spread = results.values()
    print(
        f"SendGrid, {n:,} recipients, {args.workers} workers: {args.zones} zones x "
        f"{args.variants} variants / one zone, one variant = "
        f"{spread['wall'] / base['wall']:.2f}x (target <= 1.3x; CPU "
        f"{spread['cpu'] / base['cpu']:.2f}x)"
    )


# -- a fleet: one edition sent by 1 instance, then by 3 (--instances 1,3) -----------------------


def smtp_sink_child(port: int, delay: float) -> None:
    """Run in its own process: an aiosmtpd sink on 127.0.0.1:PORT that answers each
    message after ``delay`` seconds (a real relay's latency; other sessions go on
    meanwhile), counting what it took into a file beside nothing else."""
    import asyncio

    from aiosmtpd.controller import Controller

    class Slow:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            await asyncio.sleep(delay)
            return "250 OK"

    controller = Controller(Slow(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def start_relays(count: int, delay: float) -> tuple[list[subprocess.Popen[str]], list[int]]:
    procs, ports = [], []
    for _ in range(count):
        port = free_port()
        cmd = [sys.executable, __file__, "--sink-child", str(port), "--delay", str(delay)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ports.append(port)
    for port in ports:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
    return procs, ports


def smtp_delivery(relays: list[int], workers: int) -> dict[str, Any]:
    """The fleet's SMTP delivery settings: every relay in ``relays``, as
    ``[[delivery.smtp.relays]]`` of equal weight (each instance spreads its connections
    over them)."""
    return {
        "backend": "smtp",
        "workers": workers,
        "smtp": {
            "relays": [{"host": "127.0.0.1", "port": port, "security": "none"} for port in relays]
        },
    }


def sendgrid_delivery(url: str, workers: int, batch_size: int) -> dict[str, Any]:
    return {
        "backend": "sendgrid",
        "workers": workers,
        "sendgrid": {"api_key_env": "BENCH_SENDGRID_KEY", "api_url": url, "batch_size": batch_size},
    }


def fresh_postgres(admin_url: str) -> str:
    import uuid

    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"digest_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin.url.set(database=name).render_as_string(hide_password=False)


def drop_postgres(admin_url: str, url: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = sa.engine.make_url(url).database
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def populate_postgres(url: str, n: int) -> None:
    """N active subscribers with COPY (not timed)."""
    from digest.state import db

    engine = db.connect(url, auto_upgrade=True)
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        now = "2026-11-28 07:00:00+00"
        columns = "email, email_key, name, status, source, created_at, updated_at"
        with raw.cursor().copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
            for i in range(n):
                email = f"reader{i}@example{i % 97}.org"
                copy.write_row((email, email, f"Reader {i}", "active", "cli", now, now))
    engine.dispose()


def build_child(config_path: str) -> None:
    """Run in a fresh process: build the edition as a fleet's builder does (under the
    lease, nothing sent)."""
    from digest import pipeline
    from digest.config import load_config

    services = pipeline.build(load_config(config_path))
    report = pipeline.run(services, send=False)
    (edition,) = report.editions
    services.engine.dispose()
    print(json.dumps({"edition": edition.id, "recipients": edition.recipients}))


def fleet_edition(config_path: Path, url: str, instances: int) -> dict[str, Any]:
    """Build the edition (not timed), then time ``instances`` ``digest work`` processes,
    started together, until the edition is settled; what the ledger says each sent."""
    import sqlalchemy as sa

    from digest.state import db
    from digest.state.db import schema

    env = {
        **os.environ,
        "BENCH_SENDGRID_KEY": KEY,
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
    }
    child("the build", env, "--build-child", str(config_path))
    engine = db.connect(url)
    E, B = schema.editions, schema.batches
    logs = [config_path.with_name(f"work-{instances}-{i}.log").open("wb") for i in range(instances)]
    command = [sys.executable, "-m", "digest", "--config", str(config_path), "work"]
    started = time.perf_counter()
    workers = [
        subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env) for log in logs
    ]
    try:
        while True:
            with engine.connect() as conn:
                status = conn.execute(sa.select(E.c.status)).scalar_one()
            if status != "sending":
                break
            if any(w.poll() is not None for w in workers):
                raise SystemExit(f"a worker exited: see {logs[0].name}")
            time.sleep(0.05)
        wall = time.perf_counter() - started
    finally:
        for w in workers:
            w.send_signal(2)  # Ctrl-C: they stop cleanly
        for w in workers:
            w.wait(60)
        for log in logs:
            log.close()
    with engine.connect() as conn:
        sizes = dict(
            conn.execute(sa.select(B.c.status, sa.func.sum(B.c.size)).group_by(B.c.status)).all()
        )
        by = dict(
            conn.execute(sa.select(B.c.sent_by, sa.func.sum(B.c.size)).group_by(B.c.sent_by)).all()
        )
        first, last = conn.execute(
            sa.select(sa.func.min(B.c.updated_at), sa.func.max(B.c.updated_at))
        ).one()
    engine.dispose()
    return {
        "wall": wall,
        # the ledger's own clock: first batch recorded sent to the last (no start-up)
        "span": (last - first).total_seconds(),
        "delivered": int(sizes.get("sent", 0)),
        "shares": sorted((int(v) for v in by.values()), reverse=True),
    }


def bench_fleet(args: argparse.Namespace) -> None:
    """The same edition sent by 1 instance and by 3 (the ratio in the same run)."""
    admin = (
        args.postgres
        or os.environ.get("DIGEST_BENCH_POSTGRES_URL")
        or os.environ.get("DIGEST_TEST_POSTGRES_URL")
    )
    if not admin:
        raise SystemExit(
            "--instances needs PostgreSQL: --postgres URL (a role that may create "
            "databases), or DIGEST_BENCH_POSTGRES_URL"
        )
    counts = [int(c) for c in args.instances.split(",")]
    smtp = args.backend == "smtp"
    n = args.subscribers or (2_000 if smtp else 100_000)
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-fleet-"))
    if smtp:
        servers, relays = start_relays(3, args.relay_delay)
        delivery = smtp_delivery(relays, args.workers or 1)
        what = (
            f"SMTP, {n:,} messages, relay latency {args.relay_delay * 1000:.0f} ms per "
            f"message, {delivery['workers']} worker(s) per instance"
        )
    else:
        server, url = start_sendgrid(args.delay)
        servers = [server]
        delivery = sendgrid_delivery(url, args.workers or 4, args.batch_size)
        what = (
            f"SendGrid, {n:,} recipients, server delay {args.delay * 1000:.0f} ms, "
            f"{delivery['workers']} workers per instance"
        )
    results: dict[int, dict[str, Any]] = {}
    try:
        for count in counts:
            url_db = fresh_postgres(admin)
            try:
                sub = folder / f"i{count}"
                sub.mkdir()
                config = write_config(sub, delivery)
                text = config.read_text().replace(
                    'url = "sqlite:///bench.db"', f"url = {json.dumps(url_db)}"
                )
                config.write_text(text)
                populate_postgres(url_db, n)
                figures = fleet_edition(config, url_db, count)
                assert figures["delivered"] == n, figures
                results[count] = figures
                print(
                    f"  {count} instance(s): {figures['wall']:.2f}s from the workers' start, "
                    f"{figures['span']:.2f}s from the first batch recorded to the last "
                    f"({n / figures['span']:,.0f}/s), "
                    f"recipients per instance {figures['shares']}",
                    flush=True,
                )
            finally:
                drop_postgres(admin, url_db)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    first = results[counts[0]]
    ratios = ", ".join(
        f"{c} instances: {first['span'] / r['span']:.2f}x sending "
        f"({first['wall'] / r['wall']:.2f}x with the start)"
        for c, r in results.items()
    )
    print(f"{what}: throughput against {counts[0]} instance(s): {ratios}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="100,000 subscribers, 2,000 SMTP")
    p.add_argument("-n", "--subscribers", type=int, default=None)
    p.add_argument("--delay", type=float, default=0.0, help="server answer delay, seconds")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="delivery.workers (default 4; with --instances and SMTP: 1)",
    )
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--smtp-messages", type=int, default=None)
    p.add_argument("--no-smtp", action="store_true")
    p.add_argument("--zones", type=int, default=1, help="spread over this many zones (<= 24)")
    p.add_argument("--variants", type=int, default=1, help="and this many variants (<= 9)")
    p.add_argument("--instances", help="a fleet on PostgreSQL: e.g. 1,3 instances")
    p.add_argument(
        "--backend", choices=["sendgrid", "smtp"], default="smtp", help="with --instances"
    )
    p.add_argument(
        "--relay-delay",
        type=float,
        default=0.02,
        help="with --backend smtp: each relay's answer to a message, seconds",
    )
    p.add_argument("--postgres", help="with --instances: an admin URL (creates databases)")
    p.add_argument("--edition-child", metavar="CONFIG", help=argparse.SUPPRESS)
    p.add_argument("--build-child", metavar="CONFIG", help=argparse.SUPPRESS)
    p.add_argument("--sink-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--zoned", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.edition_child:
        edition_child(args.edition_child, args.zoned)
        return
    if args.build_child:
        build_child(args.build_child)
        return
    if args.sink_child:
        smtp_sink_child(args.sink_child, args.delay)
        return
    if args.instances:
        bench_fleet(args)
        return
    if args.zones > 1 or args.variants > 1:
        args.workers = args.workers or 4
        bench_zones(args)
        return
    args.workers = args.workers or 4
    n = args.subscribers or (100_000 if args.quick else 1_000_000)
    smtp_messages = args.smtp_messages or (2_000 if args.quick else 10_000)
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    server, url = start_sendgrid(args.delay)
    try:
        config = write_config(
            folder,
            {
                "backend": "sendgrid",
                "workers": args.workers,
                "sendgrid": {
                    "api_key_env": "BENCH_SENDGRID_KEY",
                    "api_url": url,
                    "batch_size": args.batch_size,
                },
            },
        )
        t0 = time.perf_counter()
        populate(config, n)
        print(f"{n:,} subscribers created in {time.perf_counter() - t0:.1f}s (not timed)")
        figures = run_edition(config)
        assert figures["delivered"] == n and figures["failed"] == 0, figures
        fields, markers = edition_parts(config)
        floor, floor_cpu = floor_sendgrid(url, n, args.batch_size, fields, markers)
        wall = figures["wall"]
        print(
            f"SendGrid, {n:,} recipients, {args.workers} workers, server delay "
            f"{args.delay * 1000:.0f} ms:\n"
            f"  digest run (whole process): {wall:.2f}s (CPU {figures['cpu']:.2f}s)  "
            f"{n / wall:,.0f} recipients/s  {figures['requests']} requests  "
            f"peak RSS {figures['peak_rss_mb']:.0f} MB\n"
            f"  floor (json.dumps + POST on one connection): {floor:.2f}s (CPU {floor_cpu:.2f}s)  "
            f"{n / floor:,.0f} recipients/s\n"
            f"  ratio digest/floor: {wall / floor:.2f}x (target <= 2x; peak RSS target < 300 MB)"
        )
    finally:
        server.terminate()
        server.wait(10)
    ours, floor_rate = bench_tokens(min(n, 1_000_000))
    print(
        f"Tokens: {ours:,.0f}/s (floor, one bare HMAC-SHA256: {floor_rate:,.0f}/s; "
        f"ratio {floor_rate / ours:.2f}x)"
    )
    if not args.no_smtp:
        rates, smtp_floor = bench_smtp(folder, smtp_messages, [1, 4])
        print(
            f"SMTP, {smtp_messages:,} messages (whole edition) to an aiosmtpd sink in another "
            f"process: {rates[0]:,.0f} messages/s with 1 worker (the default), "
            f"{rates[1]:,.0f}/s with 4\n"
            f"  floor (one prebuilt message, one smtplib connection): {smtp_floor:,.0f}/s; "
            f"ratio {smtp_floor / rates[0]:.2f}x with 1 worker, {smtp_floor / rates[1]:.2f}x "
            "with 4"
        )
        print(f"DKIM signing (RSA 2048): {bench_dkim():,.0f} messages/s per core")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
