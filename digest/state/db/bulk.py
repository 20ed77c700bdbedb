"""Many rows at once, on any database: IN lists and inserts in chunks every database takes,
and inserts that skip the rows a unique constraint already holds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
