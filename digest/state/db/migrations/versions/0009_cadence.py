"""cadence: each subscriber's frequency and time zone; editions by cycle, released by zone

Subscribers get ``frequency`` (daily | weekly), ``timezone`` (IANA) and the ledger's
cursor ``covered_through``; editions their ``cycle`` (local wall-clock time), whether it
is the weekly readers' one, and its ``stories``; batches their ``zone`` group and
``release_at``; variants the ``span`` of editions they rank; deliveries the cursor
``since`` they replace. All additive: rows from before read as daily, in the schedule's
zone, released at once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("frequency", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("covered_through", sa.Integer(), nullable=True))
    with op.batch_alter_table("editions") as batch:
        batch.add_column(sa.Column("cycle", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("weekly", sa.Boolean(), server_default="0", nullable=False))
        batch.add_column(sa.Column("stories", sa.Text(), nullable=True))
        batch.create_index(op.f("ix_editions_cycle"), ["cycle"], unique=False)
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("zone", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("release_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("variants") as batch:
        batch.add_column(sa.Column("span", sa.Text(), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("since", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("since")
    with op.batch_alter_table("variants") as batch:
        batch.drop_column("span")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("release_at")
        batch.drop_column("zone")
    with op.batch_alter_table("editions") as batch:
        batch.drop_index(op.f("ix_editions_cycle"))
        batch.drop_column("stories")
        batch.drop_column("weekly")
        batch.drop_column("cycle")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("covered_through")
        batch.drop_column("timezone")
        batch.drop_column("frequency")
