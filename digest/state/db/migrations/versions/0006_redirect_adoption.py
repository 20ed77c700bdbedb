"""Permanent redirects adopted only once stable; entries found by their fingerprint

A feed's permanent redirect used to be adopted the first time it was seen. Now it
waits in ``move_pending`` (first seen at ``move_seen_at``) until it has held for 24
hours (``health.move``), and a move inside the network is never adopted. Moves
adopted the old way to a host that names an internal address (127.0.0.1, 10.x,
169.254.169.254, localhost...) other than the feed's own are forgotten here; the
others stay (their old address may no longer redirect). The index on
``entries.fingerprint`` serves the duplicate check for feeds whose guids change on
every fetch (``record.known``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feeds") as batch:
        batch.add_column(sa.Column("move_pending", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("move_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_entries_fingerprint", "entries", ["fingerprint"])
    conn = op.get_bind()
    moved = conn.execute(sa.text("SELECT id, url, moved_to FROM feeds WHERE moved_to IS NOT NULL"))
    forget = sa.text("UPDATE feeds SET moved_to = NULL WHERE id = :id")
    for feed_id, url, moved_to in moved.fetchall():
        if _host(moved_to) != _host(url) and _internal(_host(moved_to)):
            conn.execute(forget, {"id": feed_id})


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return ""


def _internal(host: str) -> bool:
    """A host that names an internal address by itself (as of this migration; the
    rules that apply from now on are ``digest/egress.py``'s)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def downgrade() -> None:
    op.drop_index("ix_entries_fingerprint", table_name="entries")
    with op.batch_alter_table("feeds") as batch:
        batch.drop_column("move_seen_at")
        batch.drop_column("move_pending")
