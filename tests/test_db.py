"""The schema comes from migrations, and the migrations match the models."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from digest.errors import StoreError
from digest.state import db
from digest.state.db import bulk
from digest.state.db.schema import metadata

POSTGRES = os.environ.get("DIGEST_TEST_POSTGRES_URL")


def diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_sqlite_upgrade_head_matches_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = db.open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    db.upgrade(engine)  # every migration in turn, as an existing database gets them
    assert db.current_revision(engine) == db.head_revision()
    assert diff(engine) == []
    engine.dispose()


def _sqlite_schema(path: Path) -> dict[str, object]:
    """Everything SQLite knows of a database's tables: columns (type, NOT NULL, default,
    key), indexes (unique, partial, columns), foreign keys, and the version row."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out: dict[str, object] = {}
        for t in sorted(tables):
            indexes = {}
            for _seq, name, unique, origin, partial in conn.execute(f"PRAGMA index_list('{t}')"):
                columns = [r[2] for r in conn.execute(f"PRAGMA index_info('{name}')")]
                sql = conn.execute("SELECT sql FROM sqlite_master WHERE name=?", (name,)).fetchone()
                where = " ".join(sql[0].split(" WHERE ", 1)[1].split()) if partial else None
                key = name if origin == "c" else (origin, tuple(columns))
                indexes[str(key)] = (unique, columns, where)
            out[t] = (
                sorted(r[1:] for r in conn.execute(f"PRAGMA table_info('{t}')")),  # by name
                indexes,
                sorted(r[2:] for r in conn.execute(f"PRAGMA foreign_key_list('{t}')")),
            )
        out["version"] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return out


def test_a_new_sqlite_database_is_made_at_head_as_the_migrations_make_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    made = db.connect(f"sqlite:///{tmp_path / 'new.db'}")  # made from the models
    assert db.current_revision(made) == db.head_revision()
    assert diff(made) == []
    made.dispose()
    migrated = db.open_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    db.upgrade(migrated)
    migrated.dispose()
    assert _sqlite_schema(tmp_path / "new.db") == _sqlite_schema(tmp_path / "migrated.db")
    again = db.connect(f"sqlite:///{tmp_path / 'new.db'}")  # at head: nothing to do
    assert db.current_revision(again) == db.head_revision()
    again.dispose()


def test_a_database_with_tables_is_never_made_anew(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    engine = db.connect(f"sqlite:///{path}")  # alembic's way: the migrations, over it
    engine.dispose()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"notes", "editions", "alembic_version"} <= names


def test_connect_twice_is_idempotent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'x.db'}"
    db.connect(url).dispose()
    engine = db.connect(url)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()


def test_behind_schema_is_refused_without_auto_upgrade(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(StoreError, match="digest db upgrade"):
        db.connect(url, auto_upgrade=False)


def test_unknown_database_url() -> None:
    with pytest.raises(StoreError, match="storage.url"):
        db.connect("nosuchdb://x/y")


@pytest.mark.postgres
def test_postgres_upgrade_head_matches_models(postgres_url: str) -> None:
    with pytest.raises(StoreError, match="digest db upgrade"):
        db.connect(postgres_url)  # not SQLite: no silent upgrade
    engine = db.connect(postgres_url, auto_upgrade=True)
    assert diff(engine) == []
    engine.dispose()


def test_0006_forgets_only_the_moves_into_the_network(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    db.upgrade(engine, "0004")
    moves = {
        "https://a.example/feed": "https://b.example/feed",  # kept: a move elsewhere
        "https://c.example/feed": "http://169.254.169.254/latest/meta-data/",
        "https://d.example/feed": "http://localhost:8080/admin",
        "https://e.example/feed": "http://[::ffff:10.0.0.1]/",
        "http://127.0.0.1:8080/old": "http://127.0.0.1:8080/new",  # kept: its own host
    }
    with engine.begin() as conn:
        for url, moved_to in moves.items():
            conn.execute(
                sa.text(
                    "INSERT INTO feeds (url, moved_to, consecutive_failures) VALUES (:u, :m, 0)"
                ),
                {"u": url, "m": moved_to},
            )
    db.upgrade(engine)
    with engine.connect() as conn:
        left = dict(conn.execute(sa.text("SELECT url, moved_to FROM feeds")).all())
    engine.dispose()
    assert left == {
        "https://a.example/feed": "https://b.example/feed",
        "https://c.example/feed": None,
        "https://d.example/feed": None,
        "https://e.example/feed": None,
        "http://127.0.0.1:8080/old": "http://127.0.0.1:8080/new",
    }


def _insert_new_skips_what_is_there_and_says_what_is_new(url: str) -> None:
    """More rows than one statement takes, some already there, some twice in the list."""
    table = sa.Table(
        "things", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(20), unique=True, nullable=False),
    )  # fmt: skip
    engine = db.open_engine(url)
    try:
        with engine.begin() as conn:
            table.create(conn)
            conn.execute(sa.insert(table), [{"key": f"k{i}"} for i in range(0, 1200, 3)])
        rows = [{"key": f"k{i}"} for i in range(1200)] + [{"key": "k1"}]
        assert len(rows) > 2 * bulk.CHUNK
        with engine.begin() as conn:
            new = bulk.insert_new(conn, table, rows, returning=table.c.key)
            assert bulk.insert_new(conn, table, rows) == []  # nothing asked for
            stored = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        assert sorted(new) == sorted(f"k{i}" for i in range(1200) if i % 3)
        assert stored == 1200
    finally:
        engine.dispose()


def test_insert_new_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _insert_new_skips_what_is_there_and_says_what_is_new(f"sqlite:///{tmp_path / 'x.db'}")


@pytest.mark.postgres
def test_insert_new_on_postgres(postgres_url: str) -> None:
    _insert_new_skips_what_is_there_and_says_what_is_new(postgres_url)


def _0015_moves_the_stories_and_back(url: str) -> None:
    """An edition's stories leave its row for ``edition_stories`` and come back on a
    downgrade, with the foreign keys on and the edition referenced."""
    from alembic import command

    engine = db.open_engine(url)
    try:
        db.upgrade(engine, "0014")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO editions (id, created_at, status, subject, html, text, nonce,"
                    " item_count, more_count, recipients, delivered, failed, unknown,"
                    " compacted, weekly, stories) VALUES (:id, :at, 'done', 's', 'h', 't',"
                    " 'n', 1, 0, 1, 1, 0, 0, false, false, :stories)"
                ),
                [
                    {"id": 1, "at": "2026-12-01 07:00:00", "stories": '[{"title": "é"}]'},
                    {"id": 2, "at": "2026-12-02 07:00:00", "stories": None},
                ],
            )
            conn.execute(
                sa.text("INSERT INTO feeds (id, url, consecutive_failures) VALUES (1, 'u', 0)")
            )
            conn.execute(
                sa.text(
                    "INSERT INTO entries (feed_id, identity, title, published_at,"
                    " first_seen_at, edition_id) VALUES (1, 'i', 't', :at, :at, 1)"
                ),
                {"at": "2026-12-01 07:00:00"},
            )
        db.upgrade(engine)
        with engine.connect() as conn:
            moved = conn.execute(sa.text("SELECT edition_id, stories FROM edition_stories")).all()
        assert [tuple(r) for r in moved] == [(1, '[{"title": "é"}]')]
        assert diff(engine) == []
        with engine.begin() as conn:
            command.downgrade(db.alembic_config(conn), "0014")
        with engine.connect() as conn:
            back = conn.execute(sa.text("SELECT id, stories FROM editions ORDER BY id")).all()
        assert [tuple(r) for r in back] == [(1, '[{"title": "é"}]'), (2, None)]
    finally:
        engine.dispose()


def test_0015_moves_the_stories_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _0015_moves_the_stories_and_back(f"sqlite:///{tmp_path / 'x.db'}")


@pytest.mark.postgres
def test_0015_moves_the_stories_on_postgres(postgres_url: str) -> None:
    _0015_moves_the_stories_and_back(postgres_url)
