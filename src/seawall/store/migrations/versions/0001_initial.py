"""Initial schema: API keys, rate-limit counters, risk ledger, user states, audit events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Written by hand to match seawall.store.schema; tests compare the two.
_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        _time("created_at"),
        _time("revoked_at", nullable=True),
        _time("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_tenant_created_at", "api_keys", ["tenant", "created_at"])

    op.create_table(
        "rate_counters",
        sa.Column("bucket", sa.String(300), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "window_start", name="pk_rate_counters"),
    )
    op.create_index("ix_rate_counters_expires_at", "rate_counters", ["expires_at"])

    op.create_table(
        "risk_events",
        sa.Column("id", _id, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("safety_id", sa.String(200), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        _time("at"),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_risk_events"),
    )
    op.create_index(
        "ix_risk_events_tenant_safety_id_level_at", "risk_events", ["tenant", "safety_id", "level", "at"]
    )
    op.create_index("ix_risk_events_tenant_at", "risk_events", ["tenant", "at"])

    op.create_table(
        "user_states",
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("safety_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _time("until", nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        _time("updated_at"),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "safety_id", name="pk_user_states"),
    )
    op.create_index("ix_user_states_tenant_status", "user_states", ["tenant", "status"])

    op.create_table(
        "audit_events",
        sa.Column("id", _id, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        _time("time"),
        sa.Column("tenant", sa.String(200), nullable=True),
        sa.Column("safety_identifier", sa.String(200), nullable=True),
        sa.Column("outcome", sa.String(50), nullable=True),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        sa.UniqueConstraint("request_id", name="uq_audit_events_request_id"),
    )
    op.create_index("ix_audit_events_time", "audit_events", ["time"])
    op.create_index("ix_audit_events_tenant_time", "audit_events", ["tenant", "time"])
    op.create_index("ix_audit_events_safety_identifier_time", "audit_events", ["safety_identifier", "time"])
    op.create_index("ix_audit_events_outcome_time", "audit_events", ["outcome", "time"])


def downgrade() -> None:
    for table in ("audit_events", "user_states", "risk_events", "rate_counters", "api_keys"):
        op.drop_table(table)
