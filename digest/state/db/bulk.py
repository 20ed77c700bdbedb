"""Many rows at once, on any database: IN lists and inserts in chunks every database takes,
and inserts that skip the rows a unique constraint already holds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, TypeVar

import sqlalchemy as sa

#: Rows per statement, and values per IN list: within every database's limits.
CHUNK = 500

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def insert_new(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    returning: sa.Column[Any] | None = None,
) -> list[Any]:
    """Insert ``rows`` in chunks, skipping any that would break a unique constraint
    (``INSERT ... ON CONFLICT DO NOTHING``). Returns the ``returning`` column of the rows
    inserted, so a caller learns which were new (none asked for: an empty list)."""
    inserted: list[Any] = []
    for chunk in chunks(rows):
        if conn.dialect.name in ("postgresql", "sqlite"):
            statement = _on_conflict_do_nothing(conn, table)
            if returning is None:
                conn.execute(statement, list(chunk))
            else:
                result = conn.execute(statement.returning(returning), list(chunk))
                inserted.extend(r[0] for r in result)
        else:  # pragma: no cover - other databases: one at a time
            for row in chunk:
                try:
                    with conn.begin_nested():
                        conn.execute(sa.insert(table), [row])
                except sa.exc.IntegrityError:
                    continue
                if returning is not None:
                    inserted.append(row[returning.name])
    return inserted


def _on_conflict_do_nothing(conn: sa.Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


#: Rows handed to the database at a time by ``load``: memory stays flat, whatever the count.
LOAD_CHUNK = 5000
#: Rows per COPY statement on PostgreSQL.
COPY_CHUNK = 50_000


def load(conn: sa.Connection, table: sa.Table, rows: Iterable[Sequence[Any]]) -> int:
    """Insert ``rows`` (tuples in the order of ``table``'s columns) as fast as the database
    takes them: PostgreSQL's ``COPY``, elsewhere ``executemany`` of one prepared INSERT,
    both inside the caller's transaction. ``rows`` is consumed as it goes (a generator
    of a million rows never sits in memory). Returns how many."""
    names = [c.name for c in table.columns]
    if conn.dialect.name == "postgresql":
        return _copy(conn, table, names, rows)
    if conn.dialect.paramstyle != "qmark":  # pragma: no cover - only SQLite is not COPY
        raise NotImplementedError(f"bulk load on {conn.dialect.name}")
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    count = 0
    it = iter(rows)
    while chunk := list(islice(it, LOAD_CHUNK)):
        conn.exec_driver_sql(sql, chunk)
        count += len(chunk)
    return count


def _copy(conn: sa.Connection, table: sa.Table, names: list[str], rows: Iterable[Any]) -> int:
    """COPY in statements of ``COPY_CHUNK`` rows: each one is taken in by the server before
    the next is read, so the driver's buffer never holds more than one (libpq's would
    grow with all that the server has not taken yet)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    sql = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    count = 0
    it = iter(rows)
    with raw.cursor() as cursor:
        while chunk := list(islice(it, COPY_CHUNK)):
            with cursor.copy(sql) as copy:
                for row in chunk:
                    copy.write_row(row)
            count += len(chunk)
    return count
