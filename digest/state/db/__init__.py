"""The database: connecting, and keeping the schema at the version this code needs.

SQLite (the default) is upgraded in place at start-up. On any other database the
operator runs ``digest db upgrade`` on purpose, and digest refuses to run against a
schema that is behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ...errors import DatabaseFailed, StoreError
from .. import permissions
from . import schema

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"

__all__ = ["connect", "current_revision", "head_revision", "open_engine", "schema", "upgrade"]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _failed(context: sa.engine.ExceptionContext) -> BaseException | None:
    """SQLAlchemy's ``OperationalError`` (the database unreachable, the connection lost,
    locked, the disk full) as digest's own ``DatabaseFailed``; SQLAlchemy raises it
    ``from`` the driver's error. Others (an IntegrityError digest expects) pass."""
    if isinstance(context.sqlalchemy_exception, sa.exc.OperationalError):
        return DatabaseFailed(str(context.original_exception))
    return None


def open_engine(url: str) -> sa.Engine:
    """An engine for ``url``, schema unchecked. A new SQLite file is created owner-only
    (0600, in a 0700 folder when that is new too), whatever the umask: it holds every
    subscriber's address and, without ``DIGEST_SECRET``, the key that signs their links.
    SQLite gives its -wal and -shm files the same mode. The database's failures come out
    of it as ``DatabaseFailed``."""
    try:
        engine = sa.create_engine(url, future=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"storage.url: cannot use {url!r}: {exc}") from exc
    sa.event.listen(engine, "handle_error", _failed)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        database = permissions.sqlite_file(url)
        if database is not None:
            try:
                permissions.make_folder(database.parent)
                permissions.make_file(database)
            except OSError as exc:
                raise StoreError(
                    f"storage.url: cannot create {database}: {exc.strerror or exc}"
                ) from exc
    return engine


def connect(url: str, *, auto_upgrade: bool | None = None) -> sa.Engine:
    """An engine for ``url`` with the schema at head.

    ``auto_upgrade`` defaults to True for SQLite and False elsewhere.
    """
    engine = open_engine(url)
    if auto_upgrade is None:
        auto_upgrade = engine.dialect.name == "sqlite"
    try:
        if _at_head(engine):
            pass  # the usual start: nothing to do, and no need for alembic to say so
        elif auto_upgrade and _made_new(engine):
            pass  # a new SQLite database, made at the head without replaying history
        elif auto_upgrade:
            upgrade(engine)
        else:
            current, head = current_revision(engine), head_revision()
            if current != head:
                raise StoreError(
                    f"the database schema is at {current or 'nothing'}, this digest needs "
                    f"{head}: run `digest db upgrade` (back the database up first)"
                )
    except DatabaseFailed as exc:
        engine.dispose()
        raise StoreError(f"cannot open the database {engine.url!r}: {exc.reason}") from exc
    except BaseException:
        engine.dispose()
        raise
    return engine


def alembic_config(connection: sa.Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


_REVISION = re.compile(
    r"""^(down_revision|revision)\s*(?::[^=\n]*)?=\s*(None|"[^"\n]*")\s*$""", re.M
)


def _plain_head() -> str | None:
    """The head revision read from the migration files themselves, when they are a plain
    chain (each file one ``revision = "…"`` and one ``down_revision``, one head); None
    otherwise, and alembic decides. Reading them costs microseconds; importing alembic,
    about 0.3 s of every run."""
    files = list((MIGRATIONS / "versions").glob("*.py"))
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in files:
        found = _REVISION.findall(path.read_text(encoding="utf-8"))
        names = sorted(name for name, _ in found)
        if names != ["down_revision", "revision"]:
            return None
        for name, value in found:
            (revisions if name == "revision" else parents).add(value.strip('"'))
    heads = revisions - parents
    return heads.pop() if len(revisions) == len(files) and len(heads) == 1 else None


#: alembic's own table, as alembic makes it.
_VERSION = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _made_new(engine: sa.Engine) -> bool:
    """An empty SQLite database made at the head from the models, as alembic's own
    recipe does ("create_all", then stamp): 0.01 s where running every migration in
    turn takes 0.15 s and alembic's import. ``tests/test_db.py`` checks that both ways
    make the same schema. False (nothing done) for a database that holds any table, any
    other database, or migration files that are not a plain chain."""
    head = _plain_head()
    if engine.dialect.name != "sqlite" or head is None:
        return False
    with engine.begin() as connection:
        if sa.inspect(connection).get_table_names():
            return False
        schema.metadata.create_all(connection)
        _VERSION.create(connection)
        connection.execute(sa.insert(_VERSION).values(version_num=head))
    return True


def _at_head(engine: sa.Engine) -> bool:
    """The schema is at this code's head (read without alembic); False when unsure."""
    head = _plain_head()
    if head is None:
        return False
    try:
        with engine.connect() as connection:
            stored = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except (DatabaseFailed, sa.exc.DBAPIError):
        return False  # no table yet, or no database: alembic's way says which
    return [row[0] for row in stored] == [head]
