"""Human review and user reports: review items, their events, reports.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Written by hand to match seawall.store.schema; tests compare the two.
_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("completion_id", sa.String(200), nullable=True),
        sa.Column("safety_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("domain", sa.String(32), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("draft", sa.JSON(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("webhook", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        _time("claimed_at", nullable=True),
        _time("claim_expires_at", nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("edited_text", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        _time("created_at"),
        _time("decided_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_review_items"),
    )
    op.create_index("ix_review_items_status_created_at", "review_items", ["status", "created_at"])
    op.create_index(
        "ix_review_items_tenant_status_created_at", "review_items", ["tenant", "status", "created_at"]
    )
    op.create_index("ix_review_items_request_id", "review_items", ["request_id"])
    op.create_index("ix_review_items_completion_id", "review_items", ["completion_id"])

    op.create_table(
        "review_events",
        sa.Column("id", _id, autoincrement=True, nullable=False),
        sa.Column("subject_id", sa.String(40), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        _time("at"),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_review_events"),
    )
    op.create_index("ix_review_events_subject_id_at", "review_events", ["subject_id", "at"])

    op.create_table(
        "reports",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("response_id", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=True),
        sa.Column("review_id", sa.String(40), nullable=True),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("contact", sa.String(320), nullable=True),
        sa.Column("reporter", sa.String(200), nullable=True),
        sa.Column("notes", sa.JSON(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.Column("updated_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
    )
    op.create_index("ix_reports_status_created_at", "reports", ["status", "created_at"])
    op.create_index("ix_reports_tenant_status_created_at", "reports", ["tenant", "status", "created_at"])
    op.create_index("ix_reports_response_id", "reports", ["response_id"])


def downgrade() -> None:
    for table in ("reports", "review_events", "review_items"):
        op.drop_table(table)
