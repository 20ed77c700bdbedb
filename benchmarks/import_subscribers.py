"""Importing subscribers: ``digest subscribers import`` of a CSV of N rows, the whole
process, against the floor measured in the same run on the same file and database.

    python benchmarks/import_subscribers.py                 # 1,000,000 rows, SQLite
    python benchmarks/import_subscribers.py --postgres URL  # and on PostgreSQL too
    python benchmarks/import_subscribers.py -n 100000       # a quicker look

The file: ``email,name`` rows, 70% at 20 big mail providers, the rest at 50,000 other
domains; one row in a thousand is not an address and one in a thousand repeats an
earlier address in other capitals (both must be rejected by line). digest runs as an
operator runs it (``python -m digest subscribers import FILE`` in a fresh process: start,
config, every check, the merge, the report) into a database already holding 10% of the
addresses (a tenth of those unsubscribed: refused).

The floor: the same file read with ``csv.reader`` and its rows inserted into the same
table as they are, with no check at all (``executemany`` in one transaction on SQLite,
``COPY`` on PostgreSQL), into the same starting database. Peak memory: the peak RSS of
digest's process.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROVIDERS = [f"mail{i}.example.com" for i in range(20)]
NOW = "2026-11-28 07:00:00.000000"


def make_file(path: Path, n: int) -> None:
    rnd = random.Random(14)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["email", "name"])
        earlier = ""
        for i in range(n):
            if i % 1000 == 999:
                out.writerow([earlier.upper(), ""])  # the same address again
                continue
            if i % 1000 == 500:
                out.writerow([f"not an address {i}", "Nobody"])
                continue
            domain = PROVIDERS[i % 20] if rnd.random() < 0.7 else f"site{rnd.randrange(50_000)}.org"
            email = f"reader{i}@{domain}"
            earlier = email if i % 1000 == 400 else earlier
            out.writerow([email, f"Reader {i}, Esq." if i % 3 else ""])


def write_config(folder: Path, url: str) -> Path:
    path = folder / "config.toml"
    path.write_text(
        "\n".join(
            [
                "[digest]",
                'title = "Bench"',
                'from = "Bench <digest@example.org>"',
                'base_url = "https://digest.example.org"',
                'postal_address = "1 Bench Street"',
                "[storage]",
                f"url = {json.dumps(url)}",
                "[delivery]",
                'backend = "outbox"',
                "[[feeds]]",
                'url = "https://feeds.example.org/a.xml"',
            ]
        )
        + "\n"
    )
    return path


def fresh(url: str, folder: Path, name: str) -> str:
    """A new empty database at the schema's head: a SQLite file, or a PostgreSQL database."""
    import sqlalchemy as sa

    from digest.state import db

    if url.startswith("sqlite"):
        made = f"sqlite:///{folder / (name + '.db')}"
    else:
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        made = sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    db.connect(made, auto_upgrade=True).dispose()
    return made


def seed(url: str, source: Path, n: int) -> None:
    """A tenth of the file's addresses there already, a tenth of those unsubscribed."""
    import sqlalchemy as sa

    from digest.state import db

    engine = db.connect(url)
    rows = []
    with source.open(newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for i, (email, _name) in enumerate(reader):
            if i % 10 == 0 and "@" in email and i % 1000 != 999:
                status = "unsubscribed" if i % 100 == 0 else "active"
                rows.append({"email": email, "email_key": email.lower(), "status": status})
    S = sa.table(
        "subscribers",
        *(sa.column(c) for c in ("email", "email_key", "status", "source", "created_at")),
        sa.column("updated_at"),
    )
    with engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(
                sa.insert(S).values(source="cli", created_at=NOW, updated_at=NOW),
                rows[start : start + 10_000],
            )
    engine.dispose()


def floor(url: str, source: Path) -> float:
    """Seconds to read the file with csv.reader and bulk-insert it unchecked."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn, source.open(newline="") as f:
        reader = csv.reader(f)
        next(reader)
        seen: set[str] = set()
        rows = []
        for email, name in reader:
            key = email.lower()
            if key not in seen:  # the table's unique key would refuse it
                seen.add(key)
                rows.append((email, key, name or None))
        raw = conn.connection.driver_connection
        assert raw is not None
        if engine.dialect.name == "postgresql":
            cols = "email, email_key, name, status, source, created_at, updated_at"
            with raw.cursor() as cur:  # type: ignore[attr-defined]
                cur.execute("CREATE TEMP TABLE floor_rows (email text, email_key text, name text)")
                with cur.copy("COPY floor_rows FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    f"INSERT INTO subscribers ({cols}) SELECT email, email_key, name, 'active', "
                    f"'import', now(), now() FROM floor_rows ON CONFLICT DO NOTHING"
                )
        else:
            raw.executemany(  # type: ignore[attr-defined]
                "INSERT OR IGNORE INTO subscribers (email, email_key, name, status, source, "
                f"created_at, updated_at) VALUES (?, ?, ?, 'active', 'import', '{NOW}', '{NOW}')",
                rows,
            )
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def ours(config: Path, source: Path) -> tuple[float, float, float, str]:
    """``digest subscribers import`` in a fresh process: (seconds, peak RSS MB, CPU
    seconds, its summary line)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "digest", "--config", str(config), "subscribers", "import"]
    out_path, err_path = config.with_suffix(".out"), config.with_suffix(".err")
    usage_path = config.with_suffix(".usage")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        launcher = [sys.executable, "-c", LAUNCHER, str(usage_path), *command, str(source)]
        status = subprocess.run(launcher, stdout=out, stderr=err, env=env, check=False)
        seconds = time.perf_counter() - started
    errors = err_path.read_text(errors="replace").splitlines()
    if status.returncode not in (0, 1):
        raise SystemExit("the import failed:\n" + "\n".join(errors[-30:]))
    summary = out_path.read_text().strip().splitlines()[-1]
    rss, cpu = json.loads(usage_path.read_text())
    return seconds, rss, cpu, f"{summary} ({len(errors)} lines on stderr)"


#: Runs the command and writes its peak RSS (MB) and CPU seconds. A small process of its
#: own starts it: a child forked from this one would count this process's memory (which
#: the floor's million rows have grown) in its peak, as it was before ``exec``.
LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump([usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime], f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def bench(url: str, folder: Path, source: Path, n: int, label: str) -> None:
    db_ours = fresh(url, folder, "bench_import_ours")
    db_floor = fresh(url, folder, "bench_import_floor")
    seed(db_ours, source, n)
    seed(db_floor, source, n)
    config = write_config(folder, db_ours)
    seconds, rss, cpu, summary = ours(config, source)
    started = time.process_time()
    base = floor(db_floor, source)
    base_cpu = time.process_time() - started
    print(
        f"{label}, {n:,} rows:\n"
        f"  digest subscribers import (whole process): {seconds:.1f}s (CPU {cpu:.1f}s)  "
        f"{n / seconds:,.0f} rows/s  peak RSS {rss:.0f} MB\n    {summary}\n"
        f"  floor (csv.reader + unchecked bulk insert): {base:.1f}s (CPU here {base_cpu:.1f}s)  "
        f"{n / base:,.0f} rows/s\n"
        f"  ratio digest/floor: {seconds / base:.2f}x  (target: {n:,} rows under 60 s, "
        "peak RSS < 300 MB)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("-n", "--rows", type=int, default=1_000_000)
    p.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL server")
    p.add_argument("--no-sqlite", action="store_true")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="digest-import-bench-"))
    try:
        source = folder / "list.csv"
        make_file(source, args.rows)
        if not args.no_sqlite:
            bench("sqlite://", folder, source, args.rows, "SQLite")
        if args.postgres:
            bench(args.postgres, folder, source, args.rows, "PostgreSQL")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
