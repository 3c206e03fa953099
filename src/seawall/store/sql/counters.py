"""The counter store role (:class:`seawall.store.base.CounterStore`) on SQL: rate-limit windows
in ``rate_counters``, counted by one conditional upsert per hit (the arithmetic is
:mod:`seawall.store.windows`, shared with the in-memory store); and a request's admission
(:meth:`SqlCounters.admit`: the user's standing read and its hits counted in one transaction)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, delete, select

from seawall.store.base import Admission, Hit, HitsFor, RateLimitResult
from seawall.store.schema import as_utc, rate_counters
from seawall.store.sql.database import SqlRole
from seawall.store.sql.ledger import USER_STATE, user_state
from seawall.store.windows import PruneClock, result, room, windows


class SqlCounters(SqlRole):
    """Rate-limit counters, atomic across threads, processes and replicas."""

    def _setup(self) -> None:
        super()._setup()
        self._prunes = PruneClock()
        # Built once, run with parameters: building them per hit cost SQLAlchemy more than the
        # database took to run them (every gateway request counts at least one hit).
        table = rate_counters
        self._count_of = select(table.c.count).where(
            table.c.bucket == bindparam("bucket"), table.c.window_start == bindparam("start")
        )
        self._upsert = (
            self.db.insert(table)
            .values(
                bucket=bindparam("bucket"),
                window_start=bindparam("start"),
                count=1,
                expires_at=bindparam("expires"),
            )
            .on_conflict_do_update(
                index_elements=[table.c.bucket, table.c.window_start],
                set_={"count": table.c.count + 1},
                where=table.c.count < bindparam("most"),
            )
            .returning(table.c.count)
        )

    def hit(self, bucket: str, limit: int, window_s: int, now: datetime) -> RateLimitResult:
        """Count one request against ``bucket`` (sliding window over two fixed windows),
        atomically across threads, processes and replicas. A refused hit is not counted.

        The current window's row is incremented by one conditional upsert
        (``INSERT ... ON CONFLICT DO UPDATE ... WHERE count < room RETURNING count``), which
        the database applies under the row's lock; ``room`` is what the previous window's
        weighted count leaves of ``limit``.
        """
        with self.db.transaction("counting a rate-limit hit", write=True) as connection:
            counted = self._count(connection, Hit(bucket, limit, window_s), now)
        self._prune_if_due(now)
        return counted

    def admit(self, tenant: str, safety_id: str, hits: HitsFor, now: datetime) -> Admission:
        """The user's stored state and the hits ``hits`` picks for it, in one write transaction
        (on SQLite the write lock is taken first, so nothing changes between the read and the
        counts); stops at the first refused hit."""
        results: list[RateLimitResult] = []
        with self.db.transaction("admitting a request", write=True) as connection:
            row = connection.execute(USER_STATE, {"tenant": tenant, "safety_id": safety_id}).first()
            state = None if row is None else user_state(row)
            for hit in hits(state):
                results.append(self._count(connection, hit, now))
                if not results[-1].allowed:
                    break
        if results:
            self._prune_if_due(now)
        return Admission(state, tuple(results))

    def _count(self, connection: Connection, hit: Hit, now: datetime) -> RateLimitResult:
        """Count ``hit`` in the open transaction (see :meth:`hit`)."""
        bucket, limit, window_s = hit.bucket, hit.limit, hit.window_s
        _, start, weight = windows(now, limit, window_s)
        previous = int(
            connection.execute(self._count_of, {"bucket": bucket, "start": start - window_s}).scalar() or 0
        )
        most = room(limit, previous, weight)
        counted: int | None = None
        if most >= 1:
            parameters = {"bucket": bucket, "start": start, "expires": start + 2 * window_s, "most": most}
            counted = connection.execute(self._upsert, parameters).scalar()
        if counted is None:
            current = int(
                connection.execute(self._count_of, {"bucket": bucket, "start": start}).scalar() or 0
            )
        else:
            current = int(counted)
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
