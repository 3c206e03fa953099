"""App API keys get a scope (``all`` or ``feedback``); reports are found by reporter.

Written by hand to match seawall.store.schema; tests compare the two. Keys stored before this
revision keep doing everything (``all``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("scope", sa.String(16), nullable=False, server_default="all"))
    op.create_index("ix_reports_reporter_created_at", "reports", ["reporter", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_reports_reporter_created_at", table_name="reports")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scope")
