"""Alembic's environment for seawall's store, used programmatically by seawall.store.migrate.

The caller hands over an open connection (``config.attributes["connection"]``), already in
the transaction that holds the migration lock; offline (``--sql``) mode is not supported.
"""

from __future__ import annotations

from alembic import context

from seawall.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("seawall's migrations run through seawall.store.migrate with an open connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
