"""The UI's read queries on the store's audit records: dashboard aggregates and the audit search.

Aggregation happens in the database (GROUP BY time bucket), so the dashboard reads a few
hundred rows whatever the number of audit records. Two dialects, one result: SQLite
(``json_extract``/``json_each``, times as naive UTC text) and PostgreSQL (``->>``,
``json_array_elements``, ``timestamptz``).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, false, func, select, text
from sqlalchemy.sql.expression import literal_column

from seawall.store.base import REPORT_STATUSES, RISK_LEVELS, AuditOutcome
from seawall.store.schema import audit_events
from seawall.store.sql import store_errors

#: The dashboard's time ranges: name -> (length, bucket), about 24-60 buckets each.
RANGES: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=2)),
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
#: Outcomes that count as a request seawall stopped, grouped for the "blocks" chart.
BLOCK_GROUPS: dict[str, tuple[AuditOutcome, ...]] = {
    "refused input": ("refused_input",),
    "filtered output": ("filtered_output", "blocked_stream"),
    "user blocked": ("user_blocked",),
    "rate limited": ("rate_limited",),
}
_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")


@dataclass
class Dashboard:
    """Everything the dashboard shows, for one time range; series are aligned on ``buckets``."""

    range: str
    since: datetime
    until: datetime
    bucket_s: int
    buckets: list[int]  # bucket starts, epoch seconds
    requests: list[int]
    risk: dict[str, list[int]]  # level -> requests per bucket
    blocks: dict[str, list[int]]  # BLOCK_GROUPS name -> requests per bucket
    flag_rate: dict[str, list[float | None]]  # category -> share of the bucket's requests flagged
    flag_totals: dict[str, int]  # category -> flagged requests in the range
    totals: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What the page's charts read (embedded as JSON)."""
        # Series as [label, values] pairs: their order survives JSON (Jinja's tojson sorts keys).
        return {
            "range": self.range,
            "bucket_s": self.bucket_s,
            "x": self.buckets,
            "requests": [["requests", self.requests]],
            "risk": [[level, values] for level, values in self.risk.items()],
            "blocks": [[group, values] for group, values in self.blocks.items()],
            "flag_rate": [[category, values] for category, values in self.flag_rate.items()],
        }


def _bucket_of(dialect: str, column: str, bucket_s: int) -> str:
    """The start of the time bucket of ``column`` (a timestamp), in epoch seconds, as SQL."""
    if dialect == "postgresql":
        return f"(floor(extract(epoch from {column}) / {bucket_s}) * {bucket_s})"
    return f"((CAST(strftime('%s', {column}) AS INTEGER) / {bucket_s}) * {bucket_s})"


def _bucket_starts(range_name: str, now: datetime) -> tuple[int, list[int]]:
    """The bucket length and the bucket starts (epoch seconds) of a range ending at ``now``: whole
    buckets, the last one holding now, the first starting at or after now - length."""
    length, bucket = RANGES[range_name]
    bucket_s = int(bucket.total_seconds())
    last = math.floor(now.timestamp() / bucket_s) * bucket_s
    count = int(length.total_seconds() // bucket_s)
    return bucket_s, [last - bucket_s * (count - 1 - i) for i in range(count)]


def _window(since: datetime, until: datetime, tenant: str | None) -> list[ColumnElement[bool]]:
    where = [audit_events.c.time >= since, audit_events.c.time < until, audit_events.c.superseded == false()]
    if tenant is not None:
        where.append(audit_events.c.tenant == tenant)
    return where


def _flags_sql(dialect: str, bucket_s: int, tenant: str | None) -> str:
    """Flagged requests per (bucket, category): categories named by any decision of a record."""
    tenant_sql = " AND a.tenant = :tenant" if tenant is not None else ""
    bucket = _bucket_of(dialect, "a.time", bucket_s)
    if dialect == "postgresql":
        return (
            f"SELECT {bucket} AS bucket, c.category, "
            "count(DISTINCT a.id) AS n FROM audit_events a "
            "CROSS JOIN LATERAL json_array_elements(a.record -> 'decisions') AS d(decision) "
            "CROSS JOIN LATERAL json_array_elements_text(d.decision -> 'categories') AS c(category) "
            f"WHERE a.time >= :since AND a.time < :until AND NOT a.superseded{tenant_sql} GROUP BY 1, 2"
        )
    # The LIKE skips, without parsing its JSON, every record that names no category at all.
    return (
        f"SELECT {bucket} AS bucket, c.value AS category, count(DISTINCT a.id) AS n FROM audit_events a, "
        "json_each(a.record, '$.decisions') d, json_each(d.value, '$.categories') c "
        f"WHERE a.time >= :since AND a.time < :until AND NOT a.superseded{tenant_sql} "
        'AND a.record LIKE \'%"categories":["%\' GROUP BY 1, 2'
    )


def _bind_time(dialect: str, moment: datetime) -> Any:
    # text() bypasses UTCDateTime: SQLite compares naive UTC text, PostgreSQL aware datetimes.
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else moment


Rows = list[tuple[Any, ...]]


def _aggregate(
    engine: Engine, since: datetime, until: datetime, bucket_s: int, tenant: str | None
) -> tuple[Rows, Rows]:
    """(bucket, outcome, risk, n) and (bucket, category, n) rows for records in [since, until)."""
    dialect = engine.dialect.name
    bucket: ColumnElement[Any] = literal_column(_bucket_of(dialect, "audit_events.time", bucket_s))
    risk_col = audit_events.c.record["risk"].as_string().label("risk")
    by_outcome: Select[Any] = (
        select(bucket.label("bucket"), audit_events.c.outcome, risk_col, func.count().label("n"))
        .where(and_(*_window(since, until, tenant)))
        .group_by(literal_column("1"), audit_events.c.outcome, literal_column("3"))
    )
    flags = text(_flags_sql(dialect, bucket_s, tenant))
    params: dict[str, Any] = {"since": _bind_time(dialect, since), "until": _bind_time(dialect, until)}
    if tenant is not None:
        params["tenant"] = tenant
    with store_errors(engine, "reading the dashboard's figures"), engine.connect() as connection:
        outcome_rows = [(int(b), o, r, int(n)) for b, o, r, n in connection.execute(by_outcome).all()]
        flag_rows = [(int(b), str(c), int(n)) for b, c, n in connection.execute(flags, params).all()]
    return outcome_rows, flag_rows


class DashboardCache:
    """Keeps the aggregates of settled buckets, so a dashboard render reads only recent records.

    A bucket is settled once it ended ``settle_s`` ago (the gateway writes a record when the
    request ends, time-stamped when it began); settled buckets are recomputed after ``ttl_s``
    anyway, which bounds how long a very late record can be missing. Per process; thread-safe.
    """

    def __init__(self, *, settle_s: int = 600, ttl_s: int = 3600, clock: Any = time.monotonic) -> None:
        self.settle_s = settle_s
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        # (engine url, tenant, bucket_s) -> bucket start -> (stored at, outcome rows, flag rows)
        self._buckets: dict[tuple[str, str | None, int], dict[int, tuple[float, Rows, Rows]]] = {}

    def rows(
        self, engine: Engine, starts: list[int], bucket_s: int, tenant: str | None, now: datetime
    ) -> tuple[Rows, Rows]:
        key = (str(engine.url), tenant, bucket_s)
        settled_before = now.timestamp() - self.settle_s
        stamp = self.clock()
        with self._lock:
            known = dict(self._buckets.get(key, {}))
        fresh = {b: v for b, v in known.items() if stamp - v[0] < self.ttl_s}
        missing = [b for b in starts if b not in fresh]
        outcome_rows: Rows = []
        flag_rows: Rows = []
        if missing:
            since = datetime.fromtimestamp(missing[0], UTC)
            until = datetime.fromtimestamp(starts[-1] + bucket_s, UTC)
            queried = _aggregate(engine, since, until, bucket_s, tenant)
            per_bucket: dict[int, tuple[Rows, Rows]] = {b: ([], []) for b in starts if b >= missing[0]}
            for row in queried[0]:
                per_bucket.setdefault(row[0], ([], []))[0].append(row)
            for row in queried[1]:
                per_bucket.setdefault(row[0], ([], []))[1].append(row)
            for start, (outs, flags) in per_bucket.items():
                fresh[start] = (stamp, outs, flags)
            settled = {b: v for b, v in fresh.items() if b + bucket_s <= settled_before and b >= starts[0]}
            with self._lock:
                self._buckets[key] = settled
        for start in starts:
            entry = fresh.get(start)
            if entry is not None:
                outcome_rows.extend(entry[1])
                flag_rows.extend(entry[2])
        return outcome_rows, flag_rows


def dashboard(
    engine: Engine,
    range_name: str = "24h",
    *,
    tenant: str | None = None,
    now: datetime | None = None,
    cache: DashboardCache | None = None,
) -> Dashboard:
    """The dashboard's aggregates over ``range_name`` (a key of :data:`RANGES`) ending now;
    with ``cache``, settled buckets come from it and only recent records are read."""
    now = now or datetime.now(UTC)
    bucket_s, starts = _bucket_starts(range_name, now)
    count = len(starts)
    since = datetime.fromtimestamp(starts[0], UTC)
    until = datetime.fromtimestamp(starts[-1] + bucket_s, UTC)
    index = {start: i for i, start in enumerate(starts)}
    if cache is not None:
        outcome_rows, flag_rows = cache.rows(engine, starts, bucket_s, tenant, now)
    else:
        outcome_rows, flag_rows = _aggregate(engine, since, until, bucket_s, tenant)

    requests = [0] * count
    risk: dict[str, list[int]] = {level: [0] * count for level in RISK_LEVELS}
    blocks = {group: [0] * count for group in BLOCK_GROUPS}
    group_of: dict[str, str] = {
        outcome: group for group, outcomes in BLOCK_GROUPS.items() for outcome in outcomes
    }
    outcomes: dict[str, int] = defaultdict(int)
    for start, outcome, level, n in outcome_rows:
        i = index.get(int(start))
        if i is None:
            continue
        requests[i] += n
        outcomes[outcome or "unknown"] += n
        if level in risk:
            risk[level][i] += n
        group = group_of.get(outcome or "")
        if group is not None:
            blocks[group][i] += n
    flagged: dict[str, list[int]] = defaultdict(lambda: [0] * count)
    for start, category, n in flag_rows:
        i = index.get(int(start))
        if i is not None:
            flagged[str(category)][i] += n
    flag_totals = {category: sum(values) for category, values in flagged.items()}
    ordered = sorted(flagged, key=lambda category: (-flag_totals[category], category))
    flag_rate = {
        category: [
            round(n / total, 4) if total else None
            for n, total in zip(flagged[category], requests, strict=True)
        ]
        for category in ordered
    }
    total = sum(requests)
    totals = {
        "requests": total,
        "high": sum(risk["high"]),
        "medium": sum(risk["medium"]),
        "blocked": sum(sum(values) for values in blocks.values()),
        "flagged_categories": len(ordered),
    }
    return Dashboard(
        range=range_name,
        since=since,
        until=until,
        bucket_s=bucket_s,
        buckets=starts,
        requests=requests,
        risk=risk,
        blocks=blocks,
        flag_rate=flag_rate,
        flag_totals={category: flag_totals[category] for category in ordered},
        totals=totals,
    )


# ---------------------------------------------------------------------------------- the review desk


@dataclass
class DeskFigures:
    """The review desk's figures over one dashboard range; series aligned on ``buckets``."""

    buckets: list[int]
    held: list[int]  # answers held per bucket
    decided: list[int]  # decisions per bucket
    queue_depth: list[int]  # items waiting at the end of each bucket
    decision_minutes: list[float | None]  # mean time to decision of the bucket's decisions
    reports: dict[str, list[int]]  # current status -> reports created per bucket
    pending_now: int = 0
    claimed_now: int = 0
    oldest_pending: datetime | None = None
    decision_p50_s: float | None = None
    decision_p95_s: float | None = None
    decisions_in_range: int = 0
    report_totals: dict[str, int] = field(default_factory=dict)  # status -> reports (all time)

    def to_json(self) -> dict[str, Any]:
        return {
            "review_flow": [["held", self.held], ["decided", self.decided]],
            "queue_depth": [["waiting", self.queue_depth]],
            "decision_time": [["mean minutes", self.decision_minutes]],
            "reports": [[status, values] for status, values in self.reports.items()],
        }


def _seconds_between(dialect: str, start: str, end: str) -> str:
    if dialect == "postgresql":
        return f"extract(epoch from ({end} - {start}))"
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def desk_figures(
    engine: Engine, range_name: str = "24h", *, tenant: str | None = None, now: datetime | None = None
) -> DeskFigures:
    """Held answers, decisions, queue depth, time to decision and reports over ``range_name``
    (the dashboard's buckets), from the ``review_items`` and ``reports`` tables."""
    now = now or datetime.now(UTC)
    bucket_s, starts = _bucket_starts(range_name, now)
    count = len(starts)
    index = {start: i for i, start in enumerate(starts)}
    dialect = engine.dialect.name
    since = datetime.fromtimestamp(starts[0], UTC)
    until = datetime.fromtimestamp(starts[-1] + bucket_s, UTC)
    params: dict[str, Any] = {
        "since": _bind_time(dialect, since),
        "until": _bind_time(dialect, until),
        "now": _bind_time(dialect, now),
    }
    tenant_sql = ""
    if tenant is not None:
        params["tenant"] = tenant
        tenant_sql = " AND tenant = :tenant"
    duration = _seconds_between(dialect, "created_at", "decided_at")
    held_sql = (
        f"SELECT {_bucket_of(dialect, 'created_at', bucket_s)} AS b, count(*) FROM review_items "
        f"WHERE created_at >= :since AND created_at < :until{tenant_sql} GROUP BY 1"
    )
    decided_sql = (
        f"SELECT {_bucket_of(dialect, 'decided_at', bucket_s)} AS b, count(*), sum({duration}) "
        f"FROM review_items WHERE decided_at >= :since AND decided_at < :until{tenant_sql} GROUP BY 1"
    )
    durations_sql = (
        f"SELECT {duration} FROM review_items WHERE decided_at >= :since AND decided_at < :until"
        f"{tenant_sql} ORDER BY decided_at DESC LIMIT 20000"
    )
    before_sql = (
        "SELECT count(*) FROM review_items WHERE created_at < :since "
        f"AND (decided_at IS NULL OR decided_at >= :since){tenant_sql}"
    )
    pending_sql = (
        "SELECT count(*), min(created_at), "
        "sum(CASE WHEN claimed_by IS NOT NULL AND claim_expires_at > :now THEN 1 ELSE 0 END) "
        f"FROM review_items WHERE status = 'pending'{tenant_sql}"
    )
    reports_sql = (
        f"SELECT {_bucket_of(dialect, 'created_at', bucket_s)} AS b, status, count(*) FROM reports "
        f"WHERE created_at >= :since AND created_at < :until{tenant_sql} GROUP BY 1, 2"
    )
    totals_sql = f"SELECT status, count(*) FROM reports WHERE 1 = 1{tenant_sql} GROUP BY status"

    held = [0] * count
    decided = [0] * count
    waited = [0.0] * count
    reports: dict[str, list[int]] = {status: [0] * count for status in REPORT_STATUSES}
    with store_errors(engine, "reading the review desk's figures"), engine.connect() as connection:
        for b, n in connection.execute(text(held_sql), params).all():
            if (i := index.get(int(b))) is not None:
                held[i] += int(n)
        for b, n, total in connection.execute(text(decided_sql), params).all():
            if (i := index.get(int(b))) is not None:
                decided[i] += int(n)
                waited[i] += float(total or 0)
        durations = [float(v) for (v,) in connection.execute(text(durations_sql), params).all()]
        depth = int(connection.execute(text(before_sql), params).scalar_one())
        pending, oldest, claimed = connection.execute(text(pending_sql), params).one()
        for b, status, n in connection.execute(text(reports_sql), params).all():
            if (i := index.get(int(b))) is not None and status in reports:
                reports[status][i] += int(n)
        totals = {str(status): int(n) for status, n in connection.execute(text(totals_sql), params).all()}
    queue_depth = []
    for i in range(count):
        depth += held[i] - decided[i]
        queue_depth.append(max(0, depth))
    if isinstance(oldest, str):  # SQLite hands back text (naive UTC)
        oldest = datetime.fromisoformat(oldest)
    if isinstance(oldest, datetime) and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return DeskFigures(
        buckets=starts,
        held=held,
        decided=decided,
        queue_depth=queue_depth,
        decision_minutes=[round(w / n / 60, 2) if n else None for w, n in zip(waited, decided, strict=True)],
        reports=reports,
        pending_now=int(pending or 0),
        claimed_now=int(claimed or 0),
        oldest_pending=oldest if isinstance(oldest, datetime) else None,
        decision_p50_s=_percentile(durations, 0.5),
        decision_p95_s=_percentile(durations, 0.95),
        decisions_in_range=len(durations),
        report_totals={status: totals.get(status, 0) for status in REPORT_STATUSES},
    )


def audit_exists(engine: Engine, request_id: str) -> bool:
    """Whether the store holds an audit record of ``request_id``."""
    query = select(audit_events.c.id).where(audit_events.c.request_id == request_id).limit(1)
    with store_errors(engine, "looking up an audit record"), engine.connect() as connection:
        return connection.execute(query).first() is not None


# ---------------------------------------------------------------------------------- audit search


@dataclass(frozen=True)
class AuditQuery:
    """The audit search's filters (all optional) and page."""

    outcome: str | None = None
    safety_id: str | None = None  # a safety identifier, or its first hex characters
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    page: int = 1
    page_size: int = 50


@dataclass(frozen=True)
class AuditPage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


def _safety_filter(value: str) -> ColumnElement[bool]:
    column = audit_events.c.safety_identifier
    if len(value) < 64 and _HEX_PREFIX.fullmatch(value):
        # A prefix of a hex identifier: an index range scan ('g' sorts after every hex digit).
        return and_(column >= value, column < value + "g")
    return column == value


def search_audit(engine: Engine, query: AuditQuery) -> AuditPage:
    """One page of audit records matching every filter, newest first, and how many match."""
    columns = audit_events.c
    where: list[ColumnElement[bool]] = [columns.superseded == false()]
    if query.outcome:
        where.append(columns.outcome == query.outcome)
    if query.safety_id:
        where.append(_safety_filter(query.safety_id))
    if query.tenant:
        where.append(columns.tenant == query.tenant)
    if query.since is not None:
        where.append(columns.time >= query.since)
    if query.until is not None:
        where.append(columns.time < query.until)
    page = max(1, query.page)
    rows_query = (
        select(columns.record)
        .where(*where)
        .order_by(columns.time.desc(), columns.id.desc())
        .limit(query.page_size)
        .offset((page - 1) * query.page_size)
    )
    count_query = select(func.count()).select_from(audit_events).where(*where)
    with store_errors(engine, "searching audit records"), engine.connect() as connection:
        total = int(connection.execute(count_query).scalar_one())
        records = [dict(record) for record in connection.execute(rows_query).scalars()]
    return AuditPage(rows=records, total=total, page=page, page_size=query.page_size)


def audit_record(engine: Engine, request_id: str) -> dict[str, Any] | None:
    """One audit record by request id."""
    query = select(audit_events.c.record).where(audit_events.c.request_id == request_id)
    with store_errors(engine, "reading an audit record"), engine.connect() as connection:
        record = connection.execute(query).scalar_one_or_none()
    return dict(record) if record is not None else None


#: Distinct tenants by a loose index scan of (tenant, time): one index probe per tenant, where a
#: GROUP BY would read every record's index entry on each dashboard render.
_TENANTS_SQL = (
    "WITH RECURSIVE t(tenant, n) AS (SELECT min(tenant), 1 FROM audit_events UNION ALL "
    "SELECT (SELECT min(tenant) FROM audit_events WHERE tenant > t.tenant), n + 1 FROM t "
    "WHERE t.tenant IS NOT NULL AND n < :limit) "
    "SELECT tenant FROM t WHERE tenant IS NOT NULL AND n <= :limit ORDER BY tenant"
)


def tenants(engine: Engine, limit: int = 100) -> list[str]:
    """Tenants that have audit records, in order, at most ``limit`` (for the filters' choices)."""
    with store_errors(engine, "listing tenants"), engine.connect() as connection:
        return [str(value) for value in connection.execute(text(_TENANTS_SQL), {"limit": limit}).scalars()]


def flagged_categories(record: dict[str, Any]) -> list[str]:
    """The categories any decision of an audit record named, in order, once each."""
    seen: dict[str, None] = {}
    for decision in record.get("decisions") or ():
        if isinstance(decision, dict):
            for category in decision.get("categories") or ():
                seen.setdefault(str(category), None)
    return list(seen)


__all__ = [
    "BLOCK_GROUPS",
    "RANGES",
    "AuditPage",
    "AuditQuery",
    "Dashboard",
    "DashboardCache",
    "DeskFigures",
    "audit_exists",
    "audit_record",
    "dashboard",
    "desk_figures",
    "flagged_categories",
    "search_audit",
    "tenants",
]
