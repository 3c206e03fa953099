"""Schema migrations (Alembic), run from Python: no ``alembic.ini``, no ``alembic`` command.

``upgrade`` holds a lock while it migrates (a PostgreSQL advisory lock, SQLite's write lock),
so replicas that start together migrate once and the others find the schema current.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from seawall.store.sql import make_engine, store_errors

#: Where env.py and versions/ live (shipped as package data).
MIGRATIONS = Path(__file__).with_name("migrations")
#: Key of the PostgreSQL advisory lock held while migrating (any constant shared by all replicas).
_LOCK_KEY = 0x5EA3A11


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The revision this version of seawall needs."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "seawall ships at least one migration"
    return head


def _engine(target: Engine | str) -> tuple[Engine, bool]:
    """``target`` as an engine, and whether we made it (and so dispose of it)."""
    if isinstance(target, Engine):
        return target, False
    return make_engine(target, pool_size=1), True


def current_revision(target: Engine | str) -> str | None:
    """The database's schema revision; None for a database seawall never migrated."""
    engine, owned = _engine(target)
    try:
        with store_errors(engine, "reading the schema revision"), engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if owned:
            engine.dispose()


def is_current(target: Engine | str) -> bool:
    """Whether the database is at :func:`head_revision`."""
    return current_revision(target) == head_revision()


def upgrade(target: Engine | str, revision: str = "head") -> str | None:
    """Apply pending migrations up to ``revision``; returns the revision the database is at."""
    engine, owned = _engine(target)
    config = _config()
    try:
        with store_errors(engine, "migrating the schema"), engine.connect() as connection:
            # On SQLite this transaction begins IMMEDIATE: the write lock is the migration lock.
            connection.execution_options(seawall_write=True)
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if owned:
            engine.dispose()


__all__ = ["MIGRATIONS", "current_revision", "head_revision", "is_current", "upgrade"]
