"""Each feed remembers its last document's entries' fingerprints

``feeds.entry_prints`` holds the fingerprints (16 bytes each) of the entries of the
last document read from the feed, stored in the same transaction as the entries
themselves: on the next run, an entry with the same bytes is not parsed again
(``digest/ingest/scan.py``). Empty for every feed after the upgrade: the first run
then parses each changed feed whole, as before, and remembers them.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-03 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.add_column(sa.Column("entry_prints", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.drop_column("entry_prints")
