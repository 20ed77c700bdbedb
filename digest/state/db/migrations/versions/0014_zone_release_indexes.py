"""indexes for the zone groups' releases: none of a release's queries scans a list

A cycle over 24 zone groups is 24 runs. Each asks which zone groups active subscribers
are in (``ix_subscribers_zone``: one index seek per zone group, not a scan of the
list), makes the config's ``[[subscribers]]`` true (``ix_subscribers_source``), and
tallies its edition, whose recipients who failed alone are the only deliveries with an
``error`` (``ix_deliveries_error``, partial: it holds those few rows only). Additive.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

FAILED_ALONE = sa.text("error IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.create_index("ix_subscribers_zone", ["timezone", "status"], unique=False)
        batch.create_index("ix_subscribers_source", ["source", "status"], unique=False)
    op.create_index(
        "ix_deliveries_error",
        "deliveries",
        ["edition_id"],
        unique=False,
        sqlite_where=FAILED_ALONE,
        postgresql_where=FAILED_ALONE,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_error", table_name="deliveries")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_index("ix_subscribers_source")
        batch.drop_index("ix_subscribers_zone")
