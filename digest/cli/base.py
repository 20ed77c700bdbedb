"""The plumbing every ``digest`` command shares: the exit codes, ``State`` (the config,
read once, and one database engine), ``handled`` with ``fail`` and ``failure`` (digest's
own errors as one message and an exit code, and as the JSON failure object under
``--json``), and ``Group`` (a group's ``--help``, and click's usage errors as JSON).

The command modules import it; it imports none of them (``cli/__init__.py`` says what
the exit codes mean).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.markup import escape

from ..config import Config, load_config
from ..errors import ConfigError, DatabaseFailed, DigestError, LeaseError, UsageError
from . import console

if TYPE_CHECKING:  # the database layer is imported when a command first asks for it
    import sqlalchemy as sa

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_HELD = 0, 1, 2, 3, 4


class State:
    """What commands share: the config, read once, and one database engine."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._engine: sa.Engine | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def engine(self) -> sa.Engine:
        if self._engine is None:
            from ..state import db

            self._engine = db.connect(self.config.storage_url)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def handled(func: F) -> F:
    """Turn digest's own errors into a message and an exit code; with ``--json``, also
    into ``{"ok": false, "error": ...}`` on stdout, so a script always gets one object."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except (ConfigError, UsageError) as exc:
            fail(exc, EXIT_USAGE, as_json)
        except LeaseError as exc:
            fail(exc, EXIT_BUSY, as_json, label="[yellow]busy:[/yellow]")
        except DatabaseFailed as exc:  # locked, unreachable, disk full...
            logging.getLogger("digest").debug("database error", exc_info=True)
            fail(exc, EXIT_FAILED, as_json, hint=" (storage.url; -vv shows the traceback)")
        except DigestError as exc:
            fail(exc, EXIT_FAILED, as_json)

    return wrapper  # type: ignore[return-value]


def fail(
    exc: DigestError,
    code: int,
    as_json: bool,
    label: str = "[red]error:[/red]",
    hint: str = "",
) -> NoReturn:
    """Say what went wrong on stderr (and as the JSON failure object), and exit."""
    if as_json:
        console.print_json(failure(exc, code))
    console.err.print(f"{label} {escape(str(exc) + hint)}", markup=True)
    sys.exit(code)


def failure(exc: DigestError, code: int) -> dict[str, Any]:
    """The one JSON object a ``--json`` command prints when it fails (README)."""
    data: dict[str, Any] = {"ok": False, "error": str(exc), "exit_code": code}
    if isinstance(exc, ConfigError):
        data["file"] = exc.path
        data["problems"] = exc.problems
    return data


class Group(click.Group):
    """A command group whose ``--help`` lists each command with its whole first sentence
    (click cuts it to fit one line), wrapped to the terminal."""

    group_class = type  # subgroups are Groups too

    def invoke(self, ctx: click.Context) -> Any:
        """A command line click refuses (an unknown option, a missing argument) is a
        failure too: with ``--json`` in it, the failure object goes to stdout."""
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if ctx.parent is None and "--json" in words:
                console.print_json(
                    {"ok": False, "error": exc.format_message(), "exit_code": exc.exit_code}
                )
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, command.get_short_help_str(limit=1000))
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
