"""Files with personal data and secrets are their owner's only.

The SQLite database holds every subscriber's address and, without ``DIGEST_SECRET``,
the key that signs their links (whoever reads it can unsubscribe anyone); the outbox
holds every message, named after its recipient; an export is the whole list. digest
creates them owner-only (files 0600, folders 0700) whatever the umask; SQLite gives its
``-wal``, ``-shm`` and ``-journal`` files the database file's mode. ``open_to_all`` is
for ``digest check`` (``config.warnings_for``, and ``digest serve`` at start): the
config, the database, the outbox or the DKIM key readable by every local user.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TextIO

FILE_MODE = 0o600
FOLDER_MODE = 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def make_folder(path: Path) -> None:
    """``path`` and its missing parents; the folder itself is owner-only when new."""
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)


def make_file(path: Path) -> None:
    """An empty owner-only file at ``path``, unless there is one already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def open_private(path: Path) -> TextIO:
    """``path`` opened for writing text (truncated); created owner-only when new."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None: not SQLite, or in memory)."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def open_to_all(path: Path) -> str | None:
    """``mode 0644`` when every local user can read ``path`` (list it, for a folder)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & stat.S_IROTH:
        return f"mode {stat.S_IMODE(mode):04o}"
    return None
