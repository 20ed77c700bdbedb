"""Alembic environment: digest hands in the connection; nothing is read from alembic.ini."""

from __future__ import annotations

from alembic import context

from digest.state.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "digest migrations run through digest.state.db.upgrade(), not the alembic CLI"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
