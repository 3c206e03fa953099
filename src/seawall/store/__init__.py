"""seawall's store: API keys, rate limits, the risk ledger, audit records, review items, user
reports and the web UI's accounts, on SQLite, PostgreSQL or (for tests) in memory.

The store is a set of role protocols (:mod:`seawall.store.base`: :class:`KeyStore`,
:class:`CounterStore`, :class:`LedgerStore`, :class:`AuditStore`, :class:`ReviewStore`,
:class:`UIAccountStore`; :class:`Store` is all of them). :func:`open_store` opens the one the
settings name: :class:`~seawall.store.sql.SqlStore` for ``sqlite://`` and ``postgresql://`` URLs
(with ``cache_url``, :class:`~seawall.store.hot_state.HotStateSqlStore`: rate limits and standing
on Redis), :class:`~seawall.store.memory.MemoryStore` for ``memory://``. The protocols and dataclasses import
nothing heavy; SQLAlchemy and Alembic load on first use of :func:`open_store` or the SQL names
re-exported here, so modules that only type against a role stay cheap to import.

>>> from seawall.settings import StoreSettings
>>> store = open_store(StoreSettings(url="sqlite:///~/.local/share/seawall/seawall.db"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from seawall.errors import ConfigurationError, StoreError
from seawall.store.base import (
    AUDIT_OUTCOMES,
    REPORT_CATEGORIES,
    REPORT_STATUSES,
    REVIEW_STATUSES,
    RISK_LEVELS,
    AccountRow,
    ApiKey,
    AuditOutcome,
    AuditPage,
    AuditQuery,
    AuditSearch,
    AuditStore,
    AuditWriter,
    CounterStore,
    DeskCounts,
    FilteredAnswer,
    KeyStore,
    LedgerStore,
    OrgSummary,
    RateLimitResult,
    Report,
    ReportCategory,
    ReportStatus,
    ResponseStore,
    ReviewDecision,
    ReviewEvent,
    ReviewItem,
    ReviewStatus,
    ReviewStore,
    RiskEvent,
    RiskLevel,
    SessionRow,
    Store,
    StoredResponse,
    UIAccountStore,
    UserState,
    UserStatus,
    UserSummary,
)

if TYPE_CHECKING:
    from seawall.settings import StoreSettings
    from seawall.store.memory import MemoryStore
    from seawall.store.migrate import current_revision, head_revision, upgrade
    from seawall.store.sql import SqlStore, make_engine

#: The store URL scheme of :class:`~seawall.store.memory.MemoryStore`.
MEMORY_SCHEME = "memory"

#: Names re-exported lazily, and the module each comes from.
_LAZY = {
    "MemoryStore": "seawall.store.memory",
    "SqlStore": "seawall.store.sql",
    "make_engine": "seawall.store.sql",
    "current_revision": "seawall.store.migrate",
    "head_revision": "seawall.store.migrate",
    "upgrade": "seawall.store.migrate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def is_memory_url(url: str) -> bool:
    """Whether ``url`` names the in-memory store (``memory://``)."""
    return url.partition("://")[0].lower() == MEMORY_SCHEME and "://" in url


def describe_url(url: str) -> str:
    """``url`` as the CLI shows it: normalised, the password hidden."""
    if is_memory_url(url):
        return f"{MEMORY_SCHEME}://"
    from seawall.store.sql import normalise_url

    return normalise_url(url).render_as_string(hide_password=True)


def open_store(settings: StoreSettings) -> Store:
    """Open the store that ``settings`` name, ready to use.

    ``memory://`` is a new, empty :class:`~seawall.store.memory.MemoryStore` (this process only;
    ``migrate`` does not apply). SQL URLs give a :class:`~seawall.store.sql.SqlStore`: SQLite paths
    get ``~`` expanded and their folder created. With ``migrate="auto"`` pending migrations are
    applied; with ``"check"`` a schema that is not current raises :class:`StoreError` (run
    ``seawall db upgrade``). Unreachable databases raise StoreError too.
    """
    if is_memory_url(settings.url.get_secret_value()):
        if settings.cache_url is not None:
            raise ConfigurationError("store.cache_url (Redis) needs a SQL store, not memory://")
        from seawall.store.memory import MemoryStore

        return MemoryStore()
    return open_sql_store(settings)


def open_sql_store(settings: StoreSettings) -> SqlStore:
    """:func:`open_store` for a SQL URL (what the ``seawall db`` commands and SQL tests need)."""
    from seawall.store.migrate import current_revision, head_revision, upgrade
    from seawall.store.sql import SqlStore, create_folder, make_engine, normalise_url

    url = normalise_url(settings.url.get_secret_value())
    create_folder(url)
    engine = make_engine(url, pool_size=settings.pool_size)
    try:
        if settings.migrate == "auto":
            upgrade(engine)
        else:
            current, head = current_revision(engine), head_revision()
            if current != head:
                raise StoreError(
                    f"the store's schema is at revision {current or 'none (empty database)'} but this "
                    f"seawall needs {head}: run `seawall db upgrade` (or set store.migrate: auto)"
                )
        if settings.cache_url is None:
            return SqlStore(engine)
        from seawall.store.hot_state import HotStateSqlStore, RedisHotState

        hot = RedisHotState(
            settings.cache_url.get_secret_value(),
            timeout_s=settings.cache_timeout_s,
            ttl_s=settings.cache_ttl_s,
        )
        return HotStateSqlStore(engine, hot, retry_s=settings.cache_retry_s)
    except BaseException:
        engine.dispose()
        raise


__all__ = [
    "AUDIT_OUTCOMES",
    "MEMORY_SCHEME",
    "REPORT_CATEGORIES",
    "REPORT_STATUSES",
    "REVIEW_STATUSES",
    "RISK_LEVELS",
    "AccountRow",
    "ApiKey",
    "AuditOutcome",
    "AuditPage",
    "AuditQuery",
    "AuditSearch",
    "AuditStore",
    "AuditWriter",
    "CounterStore",
    "DeskCounts",
    "FilteredAnswer",
    "KeyStore",
    "LedgerStore",
    "MemoryStore",
    "OrgSummary",
    "RateLimitResult",
    "Report",
    "ReportCategory",
    "ReportStatus",
    "ResponseStore",
    "ReviewDecision",
    "ReviewEvent",
    "ReviewItem",
    "ReviewStatus",
    "ReviewStore",
    "RiskEvent",
    "RiskLevel",
    "SessionRow",
    "SqlStore",
    "Store",
    "StoredResponse",
    "UIAccountStore",
    "UserState",
    "UserStatus",
    "UserSummary",
    "current_revision",
    "describe_url",
    "head_revision",
    "is_memory_url",
    "make_engine",
    "open_sql_store",
    "open_store",
    "upgrade",
]
