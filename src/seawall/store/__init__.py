"""seawall's store: API keys, rate limits, the risk ledger, audit records, review items and user
reports, on SQLite or PostgreSQL.

The protocol and its dataclasses (:mod:`seawall.store.base`) import nothing heavy; SQLAlchemy and
Alembic load on first use of :func:`open_store` or the SQL names re-exported here, so modules that
only type against :class:`Store` stay cheap to import.

>>> from seawall.settings import StoreSettings
>>> store = open_store(StoreSettings(url="sqlite:///~/.local/share/seawall/seawall.db"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from seawall.errors import StoreError
from seawall.store.base import (
    AUDIT_OUTCOMES,
    REPORT_CATEGORIES,
    REPORT_STATUSES,
    REVIEW_STATUSES,
    RISK_LEVELS,
    ApiKey,
    AuditOutcome,
    FilteredAnswer,
    OrgSummary,
    RateLimitResult,
    Report,
    ReportCategory,
    ReportStatus,
    ReviewDecision,
    ReviewEvent,
    ReviewItem,
    ReviewStatus,
    RiskEvent,
    RiskLevel,
    Store,
    UserState,
    UserStatus,
    UserSummary,
)

if TYPE_CHECKING:
    from seawall.settings import StoreSettings
    from seawall.store.migrate import current_revision, head_revision, upgrade
    from seawall.store.sql import SqlStore, make_engine

#: Names re-exported lazily, and the module each comes from.
_LAZY = {
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


def open_store(settings: StoreSettings) -> SqlStore:
    """Open the store that ``settings`` name, ready to use.

    SQLite paths get ``~`` expanded and their folder created. With ``migrate="auto"`` pending
    migrations are applied; with ``"check"`` a schema that is not current raises
    :class:`StoreError` (run ``seawall db upgrade``). Unreachable databases raise StoreError too.
    """
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
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(engine)


__all__ = [
    "AUDIT_OUTCOMES",
    "REPORT_CATEGORIES",
    "REPORT_STATUSES",
    "REVIEW_STATUSES",
    "RISK_LEVELS",
    "ApiKey",
    "AuditOutcome",
    "FilteredAnswer",
    "OrgSummary",
    "RateLimitResult",
    "Report",
    "ReportCategory",
    "ReportStatus",
    "ReviewDecision",
    "ReviewEvent",
    "ReviewItem",
    "ReviewStatus",
    "RiskEvent",
    "RiskLevel",
    "SqlStore",
    "Store",
    "UserState",
    "UserStatus",
    "UserSummary",
    "current_revision",
    "head_revision",
    "make_engine",
    "open_store",
    "upgrade",
]
