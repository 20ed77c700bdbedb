"""an edition's stories apart from its row

``editions.stories`` (0009) holds an edition's new entries as JSON for the weekly and
catch-up variants: 20 MB for 5,000 entries with their bodies. SQLite rewrites a whole
row on every UPDATE, so each change of the edition's status (counting its recipients,
settling it) wrote those megabytes again, and every ``SELECT`` of the edition read
them. They move to a table of their own, written once. SQLite older than 3.35 cannot
drop a column: there the old column stays, emptied, and nothing reads it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 12:00:00
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _can_drop_columns() -> bool:
    bind = op.get_bind()
    return bind.dialect.name != "sqlite" or sqlite3.sqlite_version_info >= (3, 35)


def upgrade() -> None:
    op.create_table(
        "edition_stories",
        sa.Column(
            "edition_id",
            sa.Integer(),
            sa.ForeignKey("editions.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("stories", sa.Text(), nullable=False),
    )
    op.execute(
        "INSERT INTO edition_stories (edition_id, stories) "
        "SELECT id, stories FROM editions WHERE stories IS NOT NULL"
    )
    if _can_drop_columns():
        op.drop_column("editions", "stories")  # not in a batch: SQLite drops it in place
    else:
        op.execute("UPDATE editions SET stories = NULL")


def downgrade() -> None:
    if _can_drop_columns():
        with op.batch_alter_table("editions") as batch:
            batch.add_column(sa.Column("stories", sa.Text(), nullable=True))
    op.execute(
        "UPDATE editions SET stories = (SELECT s.stories FROM edition_stories AS s "
        "WHERE s.edition_id = editions.id)"
    )
    op.drop_table("edition_stories")
