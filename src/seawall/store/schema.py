"""The store's tables (SQLAlchemy 2 Core), the one source the migrations are written against.

Times are ``UTCDateTime``: timezone-aware UTC in Python on every database (SQLite keeps
naive UTC text, PostgreSQL ``timestamptz``). Rate-limit windows are whole epoch seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)

from seawall.clock import as_utc

#: Constraint names that stay the same on every database, so migrations can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: An auto-incrementing 64-bit id; SQLite only auto-increments a column typed INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A ``DateTime(timezone=True)`` that always hands back timezone-aware UTC values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite stores text without an offset: keep it naive UTC so that text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return as_utc(value)


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("key_hash", String(128), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Column("scope", String(16), nullable=False, server_default="all"),
    UniqueConstraint("key_hash"),
    Index(None, "tenant", "created_at"),
)

rate_counters = Table(
    "rate_counters",
    metadata,
    Column("bucket", String(300), primary_key=True),
    Column("window_start", BigInteger(), primary_key=True),  # epoch seconds, a multiple of the window
    Column("count", Integer(), nullable=False),
    Column("expires_at", BigInteger(), nullable=False),  # epoch seconds after which no hit reads it
    Index(None, "expires_at"),
)

risk_events = Table(
    "risk_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("tenant", String(200), nullable=False),
    Column("safety_id", String(200), nullable=False),
    Column("level", String(16), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("request_id", String(100), nullable=False),
    Column("categories", JSON(), nullable=False),
    Index(None, "tenant", "safety_id", "level", "at"),
    Index(None, "tenant", "at"),
)

filtered_answers = Table(
    "filtered_answers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("tenant", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("request_id", String(100), nullable=False),
    Column("categories", JSON(), nullable=False),
    Index(None, "tenant", "at"),
)

user_states = Table(
    "user_states",
    metadata,
    Column("tenant", String(200), primary_key=True),
    Column("safety_id", String(200), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("until", UTCDateTime(), nullable=True),
    Column("reason", Text(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("updated_by", String(200), nullable=False),
    Index(None, "tenant", "status"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("request_id", String(100), nullable=False),
    Column("time", UTCDateTime(), nullable=False),
    Column("tenant", String(200), nullable=True),
    Column("safety_identifier", String(200), nullable=True),
    Column("outcome", String(50), nullable=True),
    Column("record", JSON(), nullable=False),
    # The hash chain (seawall.store.chain): the tenant's previous record's hash and this one's.
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    # A record replaced by a later one for the same request: kept (the chain goes through it),
    # its request_id column renamed, left out of searches.
    Column("superseded", Boolean(), nullable=False, server_default=false()),
    UniqueConstraint("request_id"),
    Index(None, "tenant", "id"),
    Index(None, "time"),
    Index(None, "tenant", "time"),
    Index(None, "safety_identifier", "time"),
    Index(None, "outcome", "time"),
)

review_items = Table(
    "review_items",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(200), nullable=False),
    Column("request_id", String(100), nullable=False),
    Column("completion_id", String(200), nullable=True),
    Column("safety_id", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("domain", String(32), nullable=True),
    Column("reasons", JSON(), nullable=False),
    Column("request", JSON(), nullable=False),
    Column("draft", JSON(), nullable=False),
    Column("scores", JSON(), nullable=False),
    Column("sources", JSON(), nullable=False),
    Column("notes", Text(), nullable=True),
    Column("webhook", Text(), nullable=True),
    Column("claimed_by", String(200), nullable=True),
    Column("claimed_at", UTCDateTime(), nullable=True),
    Column("claim_expires_at", UTCDateTime(), nullable=True),
    Column("decision", String(16), nullable=True),
    Column("edited_text", Text(), nullable=True),
    Column("reason", Text(), nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("decided_at", UTCDateTime(), nullable=True),
    Index(None, "status", "created_at"),
    Index(None, "tenant", "status", "created_at"),
    Index(None, "request_id"),
    Index(None, "completion_id"),
)

review_events = Table(
    "review_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subject_id", String(40), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("detail", JSON(), nullable=False),
    Index(None, "subject_id", "at"),
)

reports = Table(
    "reports",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(200), nullable=False),
    Column("response_id", String(200), nullable=False),
    Column("request_id", String(100), nullable=True),
    Column("review_id", String(40), nullable=True),
    Column("category", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("comment", Text(), nullable=False),
    Column("contact", String(320), nullable=True),
    Column("reporter", String(200), nullable=True),
    Column("notes", JSON(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("updated_by", String(200), nullable=True),
    Index(None, "status", "created_at"),
    Index(None, "tenant", "status", "created_at"),
    Index(None, "response_id"),
    Index(None, "reporter", "created_at"),
)

#: The web UI's accounts and sessions: tables of the store's database (created by migration
#: 0003), kept in a MetaData of their own, as the UI's (:mod:`seawall.ui.accounts` names them).
ui_metadata = MetaData(naming_convention=NAMING_CONVENTION)

ui_accounts = Table(
    "ui_accounts",
    ui_metadata,
    Column("name", String(100), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("disabled_at", UTCDateTime(), nullable=True),
    Column("last_login_at", UTCDateTime(), nullable=True),
)

ui_sessions = Table(
    "ui_sessions",
    ui_metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 hex of the cookie's token
    Column("subject", String(320), nullable=False),  # the account name, or the OIDC e-mail
    Column("source", String(16), nullable=False),  # "local" or "oidc"
    Column("role", String(16), nullable=False),  # the role at sign-in (OIDC); local re-reads it
    Column("display_name", String(200), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    UniqueConstraint("csrf_token"),
    Index(None, "subject"),
    Index(None, "expires_at"),
)

responses = Table(
    "responses",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("tenant", String(200), nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    # The conversation the response answered (Responses API items) and the Response object.
    Column("input_items", JSON(), nullable=False),
    Column("response", JSON(), nullable=False),
    Index(None, "expires_at"),
)


ui_tokens = Table(
    "ui_tokens",
    ui_metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False),  # SHA-256 hex of the token
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(320), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    UniqueConstraint("token_hash"),
)

__all__ = [
    "NAMING_CONVENTION",
    "UTCDateTime",
    "api_keys",
    "as_utc",
    "audit_events",
    "metadata",
    "rate_counters",
    "reports",
    "responses",
    "review_events",
    "review_items",
    "risk_events",
    "ui_accounts",
    "ui_metadata",
    "ui_sessions",
    "ui_tokens",
    "user_states",
]
