"""The one database helper every SQL role shares: engine, transactions, upserts, error mapping.

:func:`make_engine` configures SQLAlchemy 2 for the store (SQLite in WAL mode with a busy timeout,
``BEGIN IMMEDIATE`` for write transactions; PostgreSQL with a pre-pinged pool).
:class:`SqlDatabase` is what the role modules (:mod:`seawall.store.sql.keys` and its siblings)
run on: one short transaction per call from the engine's pool (:meth:`SqlDatabase.transaction`),
the dialect's ``INSERT ... ON CONFLICT`` (:meth:`SqlDatabase.insert`), the store's clock, and
:func:`store_errors`, which turns database failures into :class:`StoreError` with the URL's
password hidden.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, Table, create_engine, event, literal, make_url, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from seawall.clock import Clock, utc_now
from seawall.errors import StoreError

log = logging.getLogger("seawall.store")

#: SQLite waits this long for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str | URL) -> URL:
    """``url`` with ``~`` expanded in SQLite paths and a psycopg 3 driver for bare ``postgresql``."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            parsed = parsed.set(database=str(Path(database).expanduser()))
    elif backend == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # Only psycopg 3 is a dependency; plain postgresql:// would otherwise ask for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "postgresql":
        raise StoreError(
            f"unsupported store URL scheme {parsed.drivername!r}: use sqlite, postgresql or memory"
        )
    return parsed


def is_memory(url: URL) -> bool:
    """Whether ``url`` is an in-memory SQLite database (one connection, shared by all threads)."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_folder(url: URL) -> None:
    """Create the folder of a SQLite database file (``url`` as :func:`normalise_url` returns it)."""
    if url.get_backend_name() == "sqlite" and not is_memory(url) and url.database:
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store's folder for {url.database}: {exc}") from None


def to_json(value: Any) -> str:
    """The store's JSON: compact, UTF-8 kept, anything else (datetimes) as ``str``."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def make_engine(url: str | URL, *, pool_size: int = 5) -> Engine:
    """A sync engine configured for the store: WAL/busy timeout/foreign keys on SQLite,
    a pre-pinged pool of ``pool_size`` connections on PostgreSQL. Statement parameters (message
    text, report contacts) are kept out of SQLAlchemy's logs and error messages."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            json_serializer=to_json,
            hide_parameters=True,
            connect_args={"connect_timeout": 10, "application_name": "seawall"},
        )
    memory = is_memory(parsed)
    engine = create_engine(
        parsed,
        json_serializer=to_json,
        hide_parameters=True,
        connect_args={"check_same_thread": False},
        **({"poolclass": StaticPool} if memory else {"pool_size": pool_size, "max_overflow": pool_size}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the sqlite3 module, decides when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("seawall_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _reason(exc: SQLAlchemyError) -> str:
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(original).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


@contextmanager
def store_errors(engine: Engine, doing: str) -> Iterator[None]:
    """Turn SQLAlchemy and driver errors into :class:`StoreError`, with the password hidden."""
    try:
        yield
    except SQLAlchemyError as exc:
        where = engine.url.render_as_string(hide_password=True)
        message = f"store failed while {doing} ({where}): {_reason(exc)}"
        password = engine.url.password
        if password:
            message = message.replace(str(password), "***")
        # The driver's exception stays out of the chain (its text can echo connection details);
        # the log keeps it for debugging.
        log.debug("store error while %s", doing, exc_info=True)
        raise StoreError(message) from None


@contextmanager
def _committed(connection: Any, postgres: bool) -> Iterator[DriverCursor]:
    """A driver cursor on ``connection`` in one transaction (SQLite's write lock taken first,
    ``BEGIN IMMEDIATE``), committed when the block ends and rolled back when it raises."""
    cursor = connection.cursor()
    try:
        if not postgres:
            cursor.execute("BEGIN IMMEDIATE")
        yield DriverCursor(cursor, postgres)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        cursor.close()


class _Kept:
    """A thread's kept SQLite connection (:meth:`SqlDatabase.driver_transaction`); when the thread
    ends, this goes with its local storage, and the connection with it (closed when collected)."""

    __slots__ = ("__weakref__", "connection", "generation")

    def __init__(self, connection: Any, generation: int) -> None:
        self.connection = connection
        self.generation = generation


class SqlDatabase:
    """One engine and what every role needs on it; thread-safe, shared by the roles of one store."""

    def __init__(self, engine: Engine, *, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock: Clock = clock or utc_now
        self.dialect = engine.dialect.name
        self.postgres = self.dialect == "postgresql"
        # An in-memory SQLite database is one shared connection: one transaction at a time.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if is_memory(engine.url) else nullcontext()
        )
        #: A SQLite file's connection per thread for :meth:`driver_transaction`, taken from the pool
        #: once and detached from it: the pool's check-out and check-in (with its reset) cost more
        #: than the statements of a request's admission. PostgreSQL keeps the pool (its pre-ping and
        #: recycling); an in-memory database is the pool's one connection.
        self._kept: threading.local | None = (
            None if self.postgres or is_memory(engine.url) else threading.local()
        )
        #: Every kept connection, for :meth:`close` (weakly: a thread that ends takes its own along),
        #: and the generation they belong to (one kept by a thread across :meth:`close` is replaced).
        self._kept_all: weakref.WeakSet[_Kept] = weakref.WeakSet()
        self._kept_lock = threading.Lock()
        self._generation = 0

    @contextmanager
    def transaction(self, doing: str, *, write: bool = False) -> Iterator[Connection]:
        """One transaction on a pooled connection, committed at the end; ``write`` takes SQLite's
        write lock first (``BEGIN IMMEDIATE``). Failures become :class:`StoreError` naming ``doing``."""
        with self._serial, store_errors(self.engine, doing), self.engine.connect() as connection:
            if write:
                connection.execution_options(seawall_write=True)
            with connection.begin():
                yield connection

    @contextmanager
    def driver_transaction(self, doing: str) -> Iterator[DriverCursor]:
        """One write transaction on a driver (sqlite3 or psycopg) cursor, committed at the end,
        for the few statements every gateway request runs: SQLAlchemy's machinery around each
        statement cost several times what the database took to run them. SQL goes in with ``?``
        placeholders (:class:`DriverCursor`). The connection is a pooled one (PostgreSQL: the
        pool's pre-ping), or for a SQLite file the one this thread keeps (see ``_kept``), opened
        with the engine's settings; SQLite's write lock is taken first (``BEGIN IMMEDIATE``);
        failures become :class:`StoreError` naming ``doing``."""
        dialect = self.engine.dialect
        dbapi = dialect.loaded_dbapi
        if self._kept is not None:
            with store_errors(self.engine, doing), self._kept_transaction(dbapi) as kept:
                yield kept
            return
        with self._serial, store_errors(self.engine, doing):
            try:  # the pool hands the driver's own errors through (a database that is down)
                connection = self.engine.raw_connection()
            except dbapi.Error as exc:
                raise DBAPIError.instance(None, None, exc, dbapi.Error) from None
            try:
                with _committed(connection, self.postgres) as cursor:
                    yield cursor
            except dbapi.Error as exc:
                if dialect.is_disconnect(exc, connection.dbapi_connection, None):
                    connection.invalidate(exc)  # as SQLAlchemy does: never back into the pool
                raise DBAPIError.instance(None, None, exc, dbapi.Error) from None
            finally:
                connection.close()  # back to the pool (an invalidated one is discarded)

    @contextmanager
    def _kept_transaction(self, dbapi: Any) -> Iterator[DriverCursor]:
        """:meth:`driver_transaction` on this thread's kept SQLite connection; after a driver error
        the connection is closed and the next transaction opens another."""
        try:
            connection = self._kept_connection()
        except dbapi.Error as exc:
            raise DBAPIError.instance(None, None, exc, dbapi.Error) from None
        try:
            with _committed(connection, postgres=False) as cursor:
                yield cursor
        except dbapi.Error as exc:
            self._drop_kept(connection)
            raise DBAPIError.instance(None, None, exc, dbapi.Error) from None

    def _kept_connection(self) -> Any:
        """This thread's kept driver connection (opened by the pool, so the engine's connection
        settings apply, then detached from it)."""
        assert self._kept is not None
        kept: _Kept | None = getattr(self._kept, "kept", None)
        if kept is not None and kept.generation == self._generation:
            return kept.connection
        pooled = self.engine.raw_connection()
        kept = _Kept(pooled.dbapi_connection, self._generation)
        pooled.detach()  # this thread's now: it no longer counts against the pool
        with self._kept_lock:
            self._kept_all.add(kept)
        self._kept.kept = kept
        return kept.connection

    def _drop_kept(self, connection: Any) -> None:
        assert self._kept is not None
        self._kept.kept = None
        try:
            connection.close()
        except Exception:  # already broken: nothing more to release
            log.debug("closing a kept SQLite connection failed", exc_info=True)

    def insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """The dialect's INSERT, which has ``on_conflict_do_update`` (an upsert) on both."""
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers (for health checks)."""
        with self.transaction("checking the connection") as connection:
            connection.execute(select(literal(1)))

    def close(self) -> None:
        """Close every pooled and kept connection (the next transaction opens new ones)."""
        with self._kept_lock:
            kept, self._kept_all = list(self._kept_all), weakref.WeakSet()
            self._generation += 1
        for each in kept:
            try:
                each.connection.close()
            except Exception:  # closing what another thread may be using: it fails there, not here
                log.debug("closing a kept SQLite connection failed", exc_info=True)
        self.engine.dispose()


class DriverCursor:
    """A driver's cursor taking SQL with ``?`` placeholders on either database (psycopg's are
    ``%s``); :meth:`SqlDatabase.driver_transaction` hands it out."""

    def __init__(self, cursor: Any, postgres: bool) -> None:
        self.cursor = cursor
        self.postgres = postgres

    def one(self, sql: str, parameters: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Run ``sql`` and return its first row (None when it has none)."""
        self.cursor.execute(sql.replace("?", "%s") if self.postgres else sql, parameters)
        row: tuple[Any, ...] | None = self.cursor.fetchone()
        return row


class SqlRole:
    """Base of the role classes: they keep their :class:`SqlDatabase` as ``db``.

    :class:`seawall.store.sql.SqlStore` inherits every role and calls this ``__init__`` once, so
    all roles share one database; a role class also works alone (``SqlKeys(SqlDatabase(engine))``).
    A role with state of its own sets it up in ``_setup`` (calling ``super()._setup()``).
    """

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db
        self._setup()

    def _setup(self) -> None:
        """Set up the role's own state (none here)."""


__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "DriverCursor",
    "SqlDatabase",
    "SqlRole",
    "create_folder",
    "is_memory",
    "make_engine",
    "normalise_url",
    "store_errors",
    "to_json",
]
