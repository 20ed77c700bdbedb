"""fleet: instances, batch claims, the relay that took a batch, shared throttles

Several instances on one PostgreSQL database share an edition's sending: a batch is
claimed (``claimed_by``, ``claim_expires``) before it is sent, and records who sent it
(``sent_by``) and through which SMTP relay (``relay``). ``instances`` is what each
running process says about itself (for ``digest status`` and ``/healthz``);
``throttles`` holds the limits the whole fleet shares (``delivery.smtp.rate``'s tokens,
a provider's "wait until"). All additive: an unclaimed batch is anyone's.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("claim_expires", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sent_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("relay", sa.String(length=300), nullable=True))
        batch.create_index("ix_batches_status", ["edition_id", "status", "number"], unique=False)
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("instances") as batch:
        batch.create_index(op.f("ix_instances_seen_at"), ["seen_at"], unique=False)
    op.create_table(
        "throttles",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.Column("hold_until", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("throttles")
    with op.batch_alter_table("instances") as batch:
        batch.drop_index(op.f("ix_instances_seen_at"))
    op.drop_table("instances")
    with op.batch_alter_table("batches") as batch:
        batch.drop_index("ix_batches_status")
        batch.drop_column("relay")
        batch.drop_column("sent_by")
        batch.drop_column("claim_expires")
        batch.drop_column("claimed_by")
