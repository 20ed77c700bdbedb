"""``digest db upgrade | status``: the database schema (``state/db``'s migrations)."""

from __future__ import annotations

import click

from . import console
from .base import Group, State, handled


@click.group(name="db", cls=Group)
def db_group() -> None:
    """The database schema."""


@db_group.command("upgrade")
@click.pass_obj
@handled
def db_upgrade(state: State) -> None:
    """Bring the schema up to date (back the database up first)."""
    from ..state import db

    engine = db.connect(state.config.storage_url, auto_upgrade=True)
    try:
        console.out.print(f"schema at {db.current_revision(engine)}")
    finally:
        engine.dispose()


@db_group.command("status")
@click.pass_obj
@handled
def db_status(state: State) -> None:
    """Show the schema revision and what this version needs."""
    from ..state import db

    engine = db.open_engine(state.config.storage_url)
    try:
        console.out.print(
            f"database: {engine.url!r}\nschema: {db.current_revision(engine) or 'none'}"
            f"\nneeded: {db.head_revision()}"
        )
    finally:
        engine.dispose()
