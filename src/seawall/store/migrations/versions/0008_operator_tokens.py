"""Operator tokens (bearer tokens for the API and /metrics, made in the UI or the CLI), hashed.

Written by hand to match seawall.store.schema; tests compare the two.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "ui_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        _time("created_at"),
        sa.Column("created_by", sa.String(320), nullable=False),
        _time("revoked_at", nullable=True),
        _time("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ui_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_ui_tokens_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("ui_tokens")
