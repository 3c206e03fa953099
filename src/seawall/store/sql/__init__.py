"""The store on SQLAlchemy 2: SQLite for one process, PostgreSQL (psycopg 3) for several replicas.

One module per role of :mod:`seawall.store.base`, all over one database helper
(:mod:`seawall.store.sql.database`: engine, transactions, dialect upserts, error mapping):

* :mod:`~seawall.store.sql.keys`: :class:`SqlKeys` (``api_keys``);
* :mod:`~seawall.store.sql.counters`: :class:`SqlCounters` (``rate_counters``);
* :mod:`~seawall.store.sql.ledger`: :class:`SqlLedger` (``risk_events``, ``user_states``,
  ``filtered_answers``);
* :mod:`~seawall.store.sql.audit`: :class:`SqlAudit` (``audit_events``: writes, searches, the
  chain, the dashboard's counts);
* :mod:`~seawall.store.sql.review`: :class:`SqlReview` (``review_items``, ``review_events``,
  ``reports``, the review desk's counts);
* :mod:`~seawall.store.sql.accounts`: :class:`SqlUIAccounts` (``ui_accounts``, ``ui_sessions``);
* :mod:`~seawall.store.sql.responses`: :class:`SqlResponses` (``responses``: Responses API
  responses kept for ``previous_response_id``).

:class:`SqlStore` is all of them on one shared :class:`SqlDatabase`. Every method runs one short
transaction on a connection from the engine's pool, so one store serves many threads. SQLite
runs in WAL mode with a busy timeout, and write transactions begin ``IMMEDIATE`` (they take the
write lock first, so two processes never deadlock upgrading a read lock). Database failures
become :class:`StoreError` with the URL's password hidden.
"""

from __future__ import annotations

from sqlalchemy import Engine

from seawall.clock import Clock
from seawall.store.sql.accounts import SqlUIAccounts
from seawall.store.sql.audit import SqlAudit
from seawall.store.sql.counters import SqlCounters
from seawall.store.sql.database import (
    SqlDatabase,
    create_folder,
    is_memory,
    make_engine,
    normalise_url,
    store_errors,
)
from seawall.store.sql.keys import TOUCH_EVERY, SqlKeys
from seawall.store.sql.ledger import SqlLedger
from seawall.store.sql.responses import SqlResponses
from seawall.store.sql.review import SqlReview
from seawall.store.windows import PRUNE_EVERY_S


class SqlStore(SqlKeys, SqlCounters, SqlLedger, SqlAudit, SqlReview, SqlUIAccounts, SqlResponses):
    """:class:`seawall.store.base.Store` on SQLAlchemy: every role on one engine.
    Build it with :func:`seawall.store.open_store` (which migrates the schema first)."""

    def __init__(self, engine: Engine, *, clock: Clock | None = None) -> None:
        super().__init__(SqlDatabase(engine, clock=clock))

    @property
    def engine(self) -> Engine:
        """The engine every role runs on (tests and migrations; the roles never hand it out)."""
        return self.db.engine

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers (for health checks)."""
        self.db.ping()

    def close(self) -> None:
        """Close every pooled connection."""
        self.db.close()


__all__ = [
    "PRUNE_EVERY_S",
    "TOUCH_EVERY",
    "SqlAudit",
    "SqlCounters",
    "SqlDatabase",
    "SqlKeys",
    "SqlLedger",
    "SqlResponses",
    "SqlReview",
    "SqlStore",
    "SqlUIAccounts",
    "create_folder",
    "is_memory",
    "make_engine",
    "normalise_url",
    "store_errors",
]
