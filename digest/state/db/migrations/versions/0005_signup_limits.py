"""sign-up limits counted in the database (several processes, one limit)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signup_limits",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("hits", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_signup_limits")),
    )
    op.create_index(
        op.f("ix_signup_limits_updated_at"), "signup_limits", ["updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_signup_limits_updated_at"), table_name="signup_limits")
    op.drop_table("signup_limits")
