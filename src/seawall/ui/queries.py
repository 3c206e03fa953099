"""The UI's figures: the dashboard's charts and the review desk's, laid out on time buckets.

The counting happens in the store (:meth:`~seawall.store.base.AuditSearch.audit_counts` and
:meth:`~seawall.store.base.ReviewStore.desk_counts`: GROUP BY time bucket on SQL, so a render reads
a few hundred rows whatever the number of audit records); this module picks the buckets of a
range, keeps settled buckets in a :class:`DashboardCache`, and turns the counts into series.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from seawall.store.base import (
    REPORT_STATUSES,
    RISK_LEVELS,
    AuditOutcome,
    AuditSearch,
    FlagRow,
    OutcomeRow,
    ReviewStore,
)

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


def _bucket_starts(range_name: str, now: datetime) -> tuple[int, list[int]]:
    """The bucket length and the bucket starts (epoch seconds) of a range ending at ``now``: whole
    buckets, the last one holding now, the first starting at or after now - length."""
    length, bucket = RANGES[range_name]
    bucket_s = int(bucket.total_seconds())
    last = math.floor(now.timestamp() / bucket_s) * bucket_s
    count = int(length.total_seconds() // bucket_s)
    return bucket_s, [last - bucket_s * (count - 1 - i) for i in range(count)]


Rows = list[Any]


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
        # (store, tenant, bucket_s) -> bucket start -> (stored at, outcome rows, flag rows)
        self._buckets: dict[tuple[int, str | None, int], dict[int, tuple[float, Rows, Rows]]] = {}

    def rows(
        self, audit: AuditSearch, starts: list[int], bucket_s: int, tenant: str | None, now: datetime
    ) -> tuple[list[OutcomeRow], list[FlagRow]]:
        key = (id(audit), tenant, bucket_s)
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
            queried = audit.audit_counts(since, until, bucket_s, tenant)
            per_bucket: dict[int, tuple[Rows, Rows]] = {b: ([], []) for b in starts if b >= missing[0]}
            for row in queried[0]:
                per_bucket.setdefault(row[0], ([], []))[0].append(row)
            for flag in queried[1]:
                per_bucket.setdefault(flag[0], ([], []))[1].append(flag)
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
    audit: AuditSearch,
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
        outcome_rows, flag_rows = cache.rows(audit, starts, bucket_s, tenant, now)
    else:
        outcome_rows, flag_rows = audit.audit_counts(since, until, bucket_s, tenant)

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


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def desk_figures(
    review: ReviewStore, range_name: str = "24h", *, tenant: str | None = None, now: datetime | None = None
) -> DeskFigures:
    """Held answers, decisions, queue depth, time to decision and reports over ``range_name``
    (the dashboard's buckets), from the store's review desk counts."""
    now = now or datetime.now(UTC)
    bucket_s, starts = _bucket_starts(range_name, now)
    count = len(starts)
    index = {start: i for i, start in enumerate(starts)}
    since = datetime.fromtimestamp(starts[0], UTC)
    until = datetime.fromtimestamp(starts[-1] + bucket_s, UTC)
    counts = review.desk_counts(since, until, bucket_s, now, tenant)

    held = [0] * count
    decided = [0] * count
    waited = [0.0] * count
    reports: dict[str, list[int]] = {status: [0] * count for status in REPORT_STATUSES}
    for b, n in counts.held.items():
        if (i := index.get(b)) is not None:
            held[i] += n
    for b, (n, total) in counts.decided.items():
        if (i := index.get(b)) is not None:
            decided[i] += n
            waited[i] += total
    for b, status, n in counts.reports:
        if (i := index.get(b)) is not None and status in reports:
            reports[status][i] += n
    depth = counts.waiting_before
    queue_depth = []
    for i in range(count):
        depth += held[i] - decided[i]
        queue_depth.append(max(0, depth))
    return DeskFigures(
        buckets=starts,
        held=held,
        decided=decided,
        queue_depth=queue_depth,
        decision_minutes=[round(w / n / 60, 2) if n else None for w, n in zip(waited, decided, strict=True)],
        reports=reports,
        pending_now=counts.pending,
        claimed_now=counts.claimed,
        oldest_pending=counts.oldest_pending,
        decision_p50_s=_percentile(counts.durations, 0.5),
        decision_p95_s=_percentile(counts.durations, 0.95),
        decisions_in_range=len(counts.durations),
        report_totals={status: counts.report_totals.get(status, 0) for status in REPORT_STATUSES},
    )


def flagged_categories(record: dict[str, Any]) -> list[str]:
    """The categories any decision of an audit record named, in order, once each."""
    seen: dict[str, None] = {}
    for decision in record.get("decisions") or ():
        if isinstance(decision, dict):
            for category in decision.get("categories") or ():
                seen.setdefault(str(category), None)
    return list(seen)


def shadow_decisions(record: dict[str, Any]) -> list[str]:
    """What controls in shadow mode would have done to a request, as ``step: would`` (the audit
    record's ``shadow`` list)."""
    return [
        f"{entry.get('step')}: {entry.get('would')}"
        for entry in record.get("shadow") or ()
        if isinstance(entry, dict)
    ]


__all__ = [
    "BLOCK_GROUPS",
    "RANGES",
    "Dashboard",
    "DashboardCache",
    "DeskFigures",
    "dashboard",
    "desk_figures",
    "flagged_categories",
    "shadow_decisions",
]
