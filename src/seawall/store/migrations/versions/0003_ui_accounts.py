"""Web UI accounts and sessions (ui_accounts, ui_sessions).

Written by hand to match ``ui_accounts`` and ``ui_sessions`` in :mod:`seawall.store.schema`
(tests/test_ui_accounts.py compares the two).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 04:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "ui_accounts",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("disabled_at", nullable=True),
        _time("last_login_at", nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_ui_accounts"),
    )
    op.create_table(
        "ui_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(320), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        _time("created_at"),
        _time("expires_at"),
        _time("last_seen_at"),
        sa.PrimaryKeyConstraint("token_hash", name="pk_ui_sessions"),
        sa.UniqueConstraint("csrf_token", name="uq_ui_sessions_csrf_token"),
    )
    op.create_index("ix_ui_sessions_subject", "ui_sessions", ["subject"])
    op.create_index("ix_ui_sessions_expires_at", "ui_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_ui_sessions_expires_at", table_name="ui_sessions")
    op.drop_index("ix_ui_sessions_subject", table_name="ui_sessions")
    op.drop_table("ui_sessions")
    op.drop_table("ui_accounts")
