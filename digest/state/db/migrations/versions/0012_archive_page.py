"""Each edition's archive page, rendered with it

The e-mail lists at most ``email.headlines_per_group`` headlines a group and the size
budget may count more; the archive page is the same layout with every story of the
edition in it, rendered when the edition is made (``Renderer.page``) and kept here.
Editions made before have none: the archive shows their e-mail and lists the rest.

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-03 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.add_column(sa.Column("page", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("editions") as batch:
        batch.drop_column("page")
