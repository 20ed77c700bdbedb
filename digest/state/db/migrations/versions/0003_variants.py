"""personalization: variants of an edition, and the variant of each batch and delivery

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "variants",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("dropped", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["edition_id"], ["editions.id"], name=op.f("fk_variants_edition_id_editions")
        ),
        sa.PrimaryKeyConstraint("edition_id", "number", name=op.f("pk_variants")),
    )
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("variant", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("variant", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("variant")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("variant")
    op.drop_table("variants")
