"""``subscribers import`` at scale: one set-based merge gives exactly what ``add`` row by
row gave (hypothesis, on SQLite and PostgreSQL), in a number of statements that does
not grow with the file, reading the file as a stream."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.errors import AddressError, UsageError
from digest.mail.addresses import ASCII_ONLY, Rules, normalize
from digest.model import SubscriberStatus
from digest.state import db
from digest.state import subscribers as subs
from digest.state.db import bulk, schema
from digest.state.spreadsheet import unescape

from .helpers import NOW

EARLIER = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def one_by_one(
    conn: sa.Connection, text: str, now: datetime, resubscribe: bool, rules: Rules
) -> subs.ImportReport:
    """The import as it was: ``add`` for each row, in order (the reference)."""
    report = subs.ImportReport()
    reader = csv.reader(io.StringIO(text))
    columns = [h.strip().lower() for h in next(reader)]
    at_email, at_name = columns.index("email"), columns.index("name") if "name" in columns else -1
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        email = unescape(row[at_email].strip()) if at_email < len(row) else ""
        name = unescape(row[at_name].strip()) if 0 <= at_name < len(row) else None
        if not email:
            report.rejected.append((line, "no e-mail address"))
            continue
        try:
            address = normalize(email, rules)
        except AddressError as exc:
            report.rejected.append((line, str(exc)))
            continue
        if address.lower() in seen:
            report.rejected.append((line, f"{address} appears twice in the file"))
            continue
        seen.add(address.lower())
        result = subs.add(conn, address, name, "import", now, resubscribe=resubscribe, rules=rules)
        if result.outcome == "refused":
            when = result.subscriber.unsubscribed_at
            report.refused.append(
                (
                    line,
                    f"{address} unsubscribed on {when:%Y-%m-%d}: not re-added "
                    "(use --resubscribe if they asked to come back)",
                )
            )
        else:
            setattr(report, result.outcome, getattr(report, result.outcome) + 1)
            if result.was is not None:
                what = subs.changes(result.was, result.subscriber)
                report.changed.append((line, f"{address}: {what}"))
    return report


def table(conn: sa.Connection) -> list[tuple[Any, ...]]:
    S = schema.subscribers
    columns = [c for c in S.columns if c.name != "id"]
    return [tuple(r) for r in conn.execute(sa.select(*columns).order_by(S.c.email_key))]


STATUSES = list(SubscriberStatus)
LOCALS = st.sampled_from(["ada", "Ada", "ADA", "grace", "linus", "zoë", "a..b", "", " bob "])
DOMAINS = st.sampled_from(["example.org", "Example.ORG", "bücher.example", "x", "localhost"])
NAMES = st.sampled_from(["", "Ada", "Ada L.", "'=1+2", "Evil\r\nBcc: x", "  ", "Hopper, Grace"])


@st.composite
def situations(draw: st.DrawFn) -> tuple[list[tuple[str, str, str]], str]:
    """Who is there already (email, name, status), and a file to import."""
    there = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["ada", "grace", "linus", "Ada"]).map(lambda s: s + "@example.org"),
                st.sampled_from(["", "Ada", "Grace"]),
                st.sampled_from(STATUSES),
            ),
            max_size=4,
            unique_by=lambda t: t[0].lower(),
        )
    )
    rows = draw(st.lists(st.tuples(LOCALS, DOMAINS, NAMES, st.booleans()), max_size=8))
    lines = ["email,name"]
    for local, domain, name, blank in rows:
        if blank:
            lines.append(draw(st.sampled_from(["", ",", " , "])))
        else:
            lines.append(f"{local}@{domain},{name}" if local else f",{name}")
    return there, "\n".join(lines) + "\n"


def seed(conn: sa.Connection, there: list[tuple[str, str, str]]) -> None:
    for email, name, status in there:
        s = subs.add(conn, email, name or None, "cli", EARLIER).subscriber
        if status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED):
            subs.unsubscribe(conn, s.id, EARLIER, "left", SubscriberStatus(status))
        elif status != SubscriberStatus.ACTIVE:
            conn.execute(
                sa.update(schema.subscribers)
                .where(schema.subscribers.c.id == s.id)
                .values(status=status)
            )


def both_ways(engine: sa.Engine, there: Any, text: str, resubscribe: bool, rules: Rules) -> None:
    outcomes = []
    for way in (one_by_one, None):
        with engine.connect() as conn, conn.begin() as tx:
            seed(conn, there)
            if way is None:
                report = subs.import_csv(
                    conn, io.StringIO(text), NOW, resubscribe=resubscribe, rules=rules
                )
            else:
                report = way(conn, text, NOW, resubscribe, rules)
            outcomes.append((report, table(conn)))
            tx.rollback()
    (theirs, before), (ours, after) = outcomes
    assert ours == theirs
    assert after == before


SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(situations(), st.booleans(), st.sampled_from([ASCII_ONLY, Rules(utf8=True)]))
def test_the_bulk_import_is_add_row_by_row(
    engine: sa.Engine, situation: Any, resubscribe: bool, rules: Rules
) -> None:
    both_ways(engine, *situation, resubscribe, rules)


@pytest.fixture
def postgres(fresh_postgres: str) -> Iterator[sa.Engine]:
    engine = db.connect(fresh_postgres)
    yield engine
    engine.dispose()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(situations(), st.booleans())
def test_the_bulk_import_is_add_row_by_row_on_postgresql(
    postgres: sa.Engine, situation: Any, resubscribe: bool
) -> None:
    both_ways(postgres, *situation, resubscribe, ASCII_ONLY)


def big_file(n: int, start: int = 0) -> str:
    lines = ["email,name"] + [f"reader{i}@example{i % 7}.org,Reader {i}" for i in range(start, n)]
    return "\n".join(lines) + "\n"


def statements(engine: sa.Engine, text: str, **kw: Any) -> tuple[int, subs.ImportReport]:
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as conn:
            report = subs.import_csv(conn, io.StringIO(text), NOW, **kw)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return len(seen), report


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_statements_do_not_grow_with_the_file(
    backend: str, engine: sa.Engine, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        engine = request.getfixturevalue("postgres")
    small, report = statements(engine, big_file(10))
    assert report.added == 10
    large, report = statements(engine, big_file(bulk.LOAD_CHUNK, 10))
    assert report.added == bulk.LOAD_CHUNK - 10 and not report.rejected
    assert large == small
    # again, with the rows there: all unchanged; then renamed and a few unsubscribed
    again, report = statements(engine, big_file(bulk.LOAD_CHUNK))
    assert (report.added, report.unchanged) == (0, bulk.LOAD_CHUNK) and again == small
    with engine.begin() as conn:
        for i in (3, 4000):
            s = subs.get(conn, f"reader{i}@example{i % 7}.org")
            assert s is not None
            subs.unsubscribe(conn, s.id, EARLIER, "one-click")
    text = big_file(bulk.LOAD_CHUNK).replace("Reader 1", "Reader One")
    n, report = statements(engine, text)
    renamed = sum(1 for i in range(bulk.LOAD_CHUNK) if str(i).startswith("1"))
    assert [line for line, _ in report.refused] == [5, 4002]
    assert report.updated == renamed and report.added == 0
    assert report.unchanged == bulk.LOAD_CHUNK - renamed - 2
    assert n == small


def test_the_file_is_read_as_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(
        b"\xef\xbb\xbfemail,name\n" + b"a@example.org,A\n" * 10_000 + b"b@example.org,\xff\n"
    )
    lines = subs.read_file(path)
    assert next(lines) == "email,name\n"  # the BOM is gone; nothing else read yet
    with pytest.raises(UsageError, match="not UTF-8"):
        list(lines)
    with pytest.raises(UsageError, match="is a folder"):
        subs.read_file(tmp_path)


def test_a_file_that_is_not_utf8_imports_nothing(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"email,name\n" + b"a@example.org,A\n" * 10_000 + b"b@example.org,\xff\n")
    with pytest.raises(UsageError, match="not UTF-8"), engine.begin() as conn:
        subs.import_csv(conn, subs.read_file(path), NOW)
    with engine.connect() as conn:
        assert subs.count(conn) == 0


def test_a_database_at_head_opens_without_alembic(tmp_path: Path) -> None:
    """``digest run`` on an up-to-date database never imports alembic (about 0.3 s of
    every start), nor on a new one (made from the models at the head); a database
    behind is still upgraded, by alembic."""
    import subprocess
    import sys

    assert db._plain_head() == db.head_revision()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    probe = (
        "import sys; from digest.state import db; "
        f"db.connect({url!r}).dispose(); print('alembic' in sys.modules)"
    )
    root = str(Path(__file__).resolve().parents[1])
    run = [sys.executable, "-c", probe]
    first = subprocess.run(run, capture_output=True, text=True, check=True, cwd=root)
    again = subprocess.run(run, capture_output=True, text=True, check=True, cwd=root)
    assert (first.stdout.strip(), again.stdout.strip()) == ("False", "False")
    behind = f"sqlite:///{tmp_path / 'behind.db'}"
    engine = db.open_engine(behind)
    db.upgrade(engine, "0004")  # behind: upgraded, by alembic, at the next start
    engine.dispose()
    probe = probe.replace(repr(url), repr(behind))
    upgraded = subprocess.run(
        [*run[:2], probe], capture_output=True, text=True, check=True, cwd=root
    )
    assert upgraded.stdout.strip() == "True"
    engine = db.connect(behind)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()
