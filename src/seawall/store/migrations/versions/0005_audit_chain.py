"""The audit trail's hash chain: prev_hash, hash and superseded on audit_events.

Written by hand to match seawall.store.schema; tests compare the two. Records stored before
this revision have no hash: ``seawall audit verify`` reports the first of them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("audit_events", sa.Column("hash", sa.String(64), nullable=True))
    op.add_column(
        "audit_events", sa.Column("superseded", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_index("ix_audit_events_tenant_id", "audit_events", ["tenant", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_tenant_id", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("superseded")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
