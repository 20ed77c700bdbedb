"""Edits to the operator's ``config.toml`` that keep its comments and layout.

``feeds add``, ``feeds remove`` and ``feeds import`` change the file through tomlkit
(a style-preserving TOML library, never string surgery). Each edit is validated as a
whole config before it is written; the file is replaced atomically, with its mode
kept, and only if nobody changed it since it was read.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Comment, Table, Whitespace

from ..config import Config, feed_url, parse_config, read_toml
from ..errors import UsageError


@dataclass
class ConfigFile:
    """The file as read, and its TOML document to edit."""

    path: Path
    text: str
    doc: tomlkit.TOMLDocument

    @classmethod
    def read(cls, path: Path) -> ConfigFile:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise UsageError(
                f"{path}: no config file here: write one with `digest init`, or pass --config"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot read the file: {exc}") from exc
        read_toml(text, str(path))  # digest's own words for a TOML mistake
        return cls(path, text, tomlkit.parse(text))

    def undo(self) -> None:
        """Forget the edits: the document as the file was read."""
        self.doc = tomlkit.parse(self.text)

    def config(self) -> Config:
        """The edited document, validated as digest would read it."""
        raw = read_toml(tomlkit.dumps(self.doc), str(self.path))
        return parse_config(raw, self.path.resolve(), shown=str(self.path))

    def feeds(self) -> list[dict[str, Any]]:
        found = self.doc.get("feeds")
        return [dict(t) for t in found] if isinstance(found, AoT) else []

    def index_of(self, url: str) -> int | None:
        """Which ``[[feeds]]`` reads ``url`` (as digest resolves it), if any."""
        base = self.path.resolve().parent
        wanted = feed_url(url, base)
        for i, feed in enumerate(self.feeds()):
            if isinstance(feed.get("url"), str) and feed_url(feed["url"], base) == wanted:
                return i
        return None

    def add_feed(self, url: str, name: str | None, category: str | None) -> None:
        table = tomlkit.table()
        table["url"] = url
        if name:
            table["name"] = name
        if category:
            table["category"] = category
        found = self.doc.get("feeds")
        if not isinstance(found, AoT) or not len(found):
            self.doc.append("feeds", tomlkit.aot())
            found = self.doc["feeds"]
            assert isinstance(found, AoT)
        else:
            _move_trailing_comments(found[-1], table)
        found.append(table)

    def remove_feed(self, index: int) -> None:
        found = self.doc["feeds"]
        assert isinstance(found, AoT)
        if index == len(found) - 1 and index > 0:
            _move_trailing_comments(found[index], found[index - 1])
        del found[index]

    def save(self) -> Config:
        """Validate the edit, then write it in place of the file, unless the file changed
        since it was read."""
        config = self.config()
        text = tomlkit.dumps(self.doc)
        try:
            now = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{self.path}: cannot read it again before writing: {exc}") from exc
        if _digest(now) != _digest(self.text):
            raise UsageError(
                f"{self.path} changed while digest was editing it (another editor or "
                "command?): nothing was written; run the command again"
            )
        _replace(self.path, text)
        self.text = text
        return config


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _move_trailing_comments(source: Table, target: Table) -> None:
    """The comment lines after a table's last key belong to what follows it (the next
    section's introduction): they move with the end of the array of tables."""
    body = source.value.body
    trailing: list[tuple[Any, Any]] = []
    while body and body[-1][0] is None and isinstance(body[-1][1], Comment | Whitespace):
        trailing.insert(0, body.pop())
    if not any(isinstance(item, Comment) for _key, item in trailing):
        body.extend(trailing)
        return
    # keep the blank line that ended the table, hand over the comments after it
    while trailing and isinstance(trailing[0][1], Whitespace):
        body.append(trailing.pop(0))
    if not (target.value.body and isinstance(target.value.body[-1][1], Whitespace)):
        target.value.body.append((None, Whitespace("\n")))
    target.value.body.extend(trailing)


def _replace(path: Path, text: str) -> None:
    """Write ``text`` as ``path`` atomically, with the file's mode kept."""
    mode = path.stat().st_mode & 0o7777
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
