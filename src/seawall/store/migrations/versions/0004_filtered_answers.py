"""Answers filtered by output moderation, counted per tenant and model (filtered_answers).

Written by hand to match seawall.store.schema; tests compare the two.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "filtered_answers",
        sa.Column("id", _id, autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_filtered_answers"),
    )
    op.create_index("ix_filtered_answers_tenant_at", "filtered_answers", ["tenant", "at"])


def downgrade() -> None:
    op.drop_index("ix_filtered_answers_tenant_at", table_name="filtered_answers")
    op.drop_table("filtered_answers")
