"""The counter store role (:class:`seawall.store.base.CounterStore`) on SQL: rate-limit windows
in ``rate_counters``, counted by one conditional upsert per hit (the arithmetic is
:mod:`seawall.store.windows`, shared with the in-memory store); and a request's admission
(:meth:`SqlCounters.admit`: the user's standing read and its hits counted in one transaction).
Both run on every gateway request, so their statements go straight to the driver's cursor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete

from seawall.store.base import Admission, Hit, HitsByStatus, RateLimitResult, UserState
from seawall.store.schema import as_utc, rate_counters, user_states
from seawall.store.sql.database import DriverCursor, SqlRole
from seawall.store.windows import PruneClock, result, room, windows

#: The statements of a hit, in the driver's SQL with ``?`` placeholders
#: (:meth:`~seawall.store.sql.database.SqlDatabase.driver_transaction`); the same on SQLite and
#: PostgreSQL. The conditional upsert counts the hit only while the window has room.
_COUNT_OF = "SELECT count FROM rate_counters WHERE bucket = ? AND window_start = ?"
_UPSERT = (
    "INSERT INTO rate_counters (bucket, window_start, count, expires_at) VALUES (?, ?, 1, ?) "
    "ON CONFLICT (bucket, window_start) DO UPDATE SET count = rate_counters.count + 1 "
    "WHERE rate_counters.count < ? RETURNING count"
)
#: Its columns in the table's order, which is :class:`~seawall.store.base.UserState`'s.
_USER_STATE = (
    f"SELECT {', '.join(column.name for column in user_states.columns)} FROM user_states "
    "WHERE tenant = ? AND safety_id = ?"
)


class SqlCounters(SqlRole):
    """Rate-limit counters, atomic across threads, processes and replicas."""

    def _setup(self) -> None:
        super()._setup()
        self._prunes = PruneClock()
        # The user_states columns' conversions (timestamps as aware UTC datetimes), as SQLAlchemy
        # applies them to its own results.
        dialect = self.db.engine.dialect
        self._state_columns = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in user_states.columns
        ]

    def hit(self, bucket: str, limit: int, window_s: int, now: datetime) -> RateLimitResult:
        """Count one request against ``bucket`` (sliding window over two fixed windows),
        atomically across threads, processes and replicas. A refused hit is not counted.

        The current window's row is incremented by one conditional upsert
        (``INSERT ... ON CONFLICT DO UPDATE ... WHERE count < room RETURNING count``), which
        the database applies under the row's lock; ``room`` is what the previous window's
        weighted count leaves of ``limit``.
        """
        hit = Hit(bucket, limit, window_s)
        windows(now, limit, window_s)  # a nonsense limit fails before the database is asked
        with self.db.driver_transaction("counting a rate-limit hit") as cursor:
            counted = self._count(cursor, hit, now)
        self._prune_if_due(now)
        return counted

    def admit(self, tenant: str, safety_id: str, hits: HitsByStatus, now: datetime) -> Admission:
        """The user's stored state and the hits ``hits`` names for it, in one write transaction
        (on SQLite the write lock is taken first, so nothing changes between the read and the
        counts); stops at the first refused hit."""
        results: list[RateLimitResult] = []
        with self.db.driver_transaction("admitting a request") as cursor:
            row = cursor.one(_USER_STATE, (tenant, safety_id))
            state = None if row is None else self._user_state(row)
            for hit in hits(state):
                results.append(self._count(cursor, hit, now))
                if not results[-1].allowed:
                    break
        if results:
            self._prune_if_due(now)
        return Admission(state, tuple(results))

    def _user_state(self, row: tuple[Any, ...]) -> UserState:
        values: list[Any] = [
            value if convert is None else convert(value)
            for convert, value in zip(self._state_columns, row, strict=True)
        ]
        return UserState(*values)

    def _count(self, cursor: DriverCursor, hit: Hit, now: datetime) -> RateLimitResult:
        """Count ``hit`` in the open transaction (see :meth:`hit`)."""
        bucket, limit, window_s = hit.bucket, hit.limit, hit.window_s
        _, start, weight = windows(now, limit, window_s)
        found = cursor.one(_COUNT_OF, (bucket, start - window_s))
        previous = int(found[0]) if found else 0
        most = room(limit, previous, weight)
        counted = None
        if most >= 1:
            counted = cursor.one(_UPSERT, (bucket, start, start + 2 * window_s, most))
        if counted is None:
            found = cursor.one(_COUNT_OF, (bucket, start))
            current = int(found[0]) if found else 0
        else:
            current = int(counted[0])
        return result(counted is not None, limit, current, previous, weight, start, window_s)

    def _prune_if_due(self, now: datetime) -> None:
        stamp = as_utc(now).timestamp()
        if self._prunes.due(stamp):
            self.prune(datetime.fromtimestamp(stamp, UTC))

    def prune(self, now: datetime) -> int:
        """Delete rate-limit windows that no hit at ``now`` or later reads; returns how many."""
        stamp = as_utc(now).timestamp()
        with self.db.transaction("pruning rate-limit windows", write=True) as connection:
            done = connection.execute(delete(rate_counters).where(rate_counters.c.expires_at <= stamp))
        self._prunes.pruned(stamp)
        return int(done.rowcount)


__all__ = ["SqlCounters"]
