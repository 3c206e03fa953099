"""The store in plain Python: every role of :mod:`seawall.store.base` on dicts and lists.

For unit tests, demos and one-process trials (``store.url: memory://``): nothing is kept when the
process ends, and two processes never share it. It behaves as the SQL store does, which
tests/test_store_contract.py checks by running the same tests on it, SQLite and PostgreSQL: the
same orders and filters, the same errors, JSON values stored as JSON (a datetime in a review
event's detail comes back as text), audit records hash-chained per tenant so
``seawall audit verify`` and :func:`seawall.store.chain.verify` work on it too.

One lock serialises every call (:class:`MemoryData`), so each call is atomic across threads,
as a transaction is on SQL. The role classes work alone on a :class:`MemoryData` too; like the
SQL ones, :class:`MemoryStore` inherits them all over one shared instance.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from seawall.clock import Clock, as_utc, utc_now
from seawall.errors import InvalidRequestError, NotFoundError, StoreError
from seawall.store.base import (
    DEFAULT_AUDIT_API,
    REPORT_STATUSES,
    REVIEW_STATUSES,
    AccountRow,
    Admission,
    ApiKey,
    AuditPage,
    AuditQuery,
    DeskCounts,
    FilteredAnswer,
    FlagRow,
    Hit,
    HitsByStatus,
    KeyScope,
    OperatorToken,
    OrgSummary,
    OutcomeRow,
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
    SessionRow,
    StoredResponse,
    UserState,
    UserStatus,
    UserSummary,
    has_reason,
)
from seawall.store.chain import link
from seawall.store.windows import PruneClock, result, room, windows

#: ``find_key`` writes last_used_at only when the stored value is older than this (as on SQL).
TOUCH_EVERY = timedelta(minutes=1)
#: The most decisions whose durations the desk's percentiles read (as on SQL).
DURATIONS_READ = 20_000
#: The URL that names this store in the settings (``store.url``).
MEMORY_URL = "memory://"


def _json(value: Any) -> Any:
    """``value`` as a JSON column gives it back: through the SQL store's JSON encoding."""
    return json.loads(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def _bucket(moment: datetime, bucket_s: int) -> int:
    return math.floor(moment.timestamp() / bucket_s) * bucket_s


def _release_event(review_id: str, reviewer: str, now: datetime, by: str | None) -> ReviewEvent:
    if by is None:
        return ReviewEvent(review_id, "released", reviewer, now)
    return ReviewEvent(review_id, "claim_broken", by, now, {"claimed_by": reviewer})


@dataclass
class _AuditRow:
    id: int
    request_id: str
    time: datetime
    tenant: str | None
    safety_identifier: str | None
    outcome: str | None
    record: dict[str, Any]
    prev_hash: str | None
    hash: str | None
    superseded: bool = False


class MemoryData:
    """The tables of one in-memory store, and the lock every call holds."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or utc_now
        self.lock = threading.RLock()
        self.keys: dict[str, ApiKey] = {}  # id -> key
        self.counters: dict[tuple[str, int], tuple[int, int]] = {}  # (bucket, start) -> (count, expires)
        self.risk_events: list[RiskEvent] = []
        self.filtered_answers: list[FilteredAnswer] = []
        self.user_states: dict[tuple[str, str], UserState] = {}
        self.audit: list[_AuditRow] = []
        self.reviews: dict[str, ReviewItem] = {}
        self.review_events: list[ReviewEvent] = []
        self.reports: dict[str, Report] = {}
        self.accounts: dict[str, AccountRow] = {}
        self.sessions: dict[str, SessionRow] = {}
        self.responses: dict[str, StoredResponse] = {}
        self.tokens: dict[str, OperatorToken] = {}  # id -> operator token


class MemoryRole:
    """Base of the in-memory role classes: they keep their :class:`MemoryData` as ``data``."""

    def __init__(self, data: MemoryData) -> None:
        self.data = data
        self._setup()

    def _setup(self) -> None:
        """Set up the role's own state (none here)."""


# ---------------------------------------------------------------------------------- keys


class MemoryKeys(MemoryRole):
    """App API keys, stored hashed."""

    def create_key(
        self, name: str, tenant: str, key_hash: str, prefix: str, *, scope: KeyScope = "all"
    ) -> ApiKey:
        key = ApiKey(
            id=f"key_{secrets.token_hex(6)}",
            name=name,
            tenant=tenant,
            key_hash=key_hash,
            prefix=prefix,
            created_at=as_utc(self.data.clock()),
            scope=scope,
        )
        with self.data.lock:
            if any(stored.key_hash == key_hash for stored in self.data.keys.values()):
                raise InvalidRequestError("an API key with this hash exists already", code="duplicate_key")
            self.data.keys[key.id] = key
        return key

    def list_keys(self, tenant: str | None = None, *, include_revoked: bool = False) -> list[ApiKey]:
        with self.data.lock:
            keys = list(self.data.keys.values())
        return sorted(
            (
                key
                for key in keys
                if (tenant is None or key.tenant == tenant) and (include_revoked or key.revoked_at is None)
            ),
            key=lambda key: (key.created_at, key.id),
        )

    def revoke_key(self, key_id: str) -> ApiKey:
        with self.data.lock:
            key = self.data.keys.get(key_id)
            if key is None:
                raise NotFoundError(f"no API key with id {key_id!r}", param="key_id")
            if key.revoked_at is None:
                key = self.data.keys[key_id] = replace(key, revoked_at=as_utc(self.data.clock()))
        return key

    def find_key(self, key_hash: str) -> ApiKey | None:
        with self.data.lock:
            key = next((k for k in self.data.keys.values() if k.key_hash == key_hash), None)
            if key is None:
                return None
            now = as_utc(self.data.clock())
            if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
                key = self.data.keys[key.id] = replace(key, last_used_at=now)
        return key


# ---------------------------------------------------------------------------------- counters


class MemoryCounters(MemoryRole):
    """Rate-limit counters (the sliding-window arithmetic of :mod:`seawall.store.windows`)."""

    def _setup(self) -> None:
        super()._setup()
        self._prunes = PruneClock()

    def hit(self, bucket: str, limit: int, window_s: int, now: datetime) -> RateLimitResult:
        with self.data.lock:
            counted = self._count(Hit(bucket, limit, window_s), now)
        self._prune_if_due(now)
        return counted

    def admit(self, tenant: str, safety_id: str, hits: HitsByStatus, now: datetime) -> Admission:
        results: list[RateLimitResult] = []
        with self.data.lock:
            state = self.data.user_states.get((tenant, safety_id))
            for hit in hits(state):
                results.append(self._count(hit, now))
                if not results[-1].allowed:
                    break
        if results:
            self._prune_if_due(now)
        return Admission(state, tuple(results))

    def _count(self, hit: Hit, now: datetime) -> RateLimitResult:
        """Count ``hit`` (the caller holds the lock)."""
        bucket, limit, window_s = hit.bucket, hit.limit, hit.window_s
        _, start, weight = windows(now, limit, window_s)
        counters = self.data.counters
        previous = counters.get((bucket, start - window_s), (0, 0))[0]
        current = counters.get((bucket, start), (0, 0))[0]
        most = room(limit, previous, weight)
        allowed = most >= 1 and ((bucket, start) not in counters or current < most)
        if allowed:
            current += 1
            counters[(bucket, start)] = (current, start + 2 * window_s)
        return result(allowed, limit, current, previous, weight, start, window_s)

    def _prune_if_due(self, now: datetime) -> None:
        stamp = as_utc(now).timestamp()
        if self._prunes.due(stamp):
            self.prune(datetime.fromtimestamp(stamp, UTC))

    def prune(self, now: datetime) -> int:
        stamp = as_utc(now).timestamp()
        with self.data.lock:
            expired = [key for key, (_, expires) in self.data.counters.items() if expires <= stamp]
            for key in expired:
                del self.data.counters[key]
        self._prunes.pruned(stamp)
        return len(expired)


# ---------------------------------------------------------------------------------- ledger


class MemoryLedger(MemoryRole):
    """The risk ledger."""

    def record_event(self, event: RiskEvent) -> None:
        stored = replace(event, at=as_utc(event.at), categories=tuple(_json(list(event.categories))))
        with self.data.lock:
            self.data.risk_events.append(stored)

    def record_filtered_answer(self, answer: FilteredAnswer) -> None:
        stored = replace(answer, at=as_utc(answer.at), categories=tuple(_json(list(answer.categories))))
        with self.data.lock:
            self.data.filtered_answers.append(stored)

    def _events(self, tenant: str, since: datetime) -> list[RiskEvent]:
        with self.data.lock:
            return [e for e in self.data.risk_events if e.tenant == tenant and e.at >= since]

    def count_events(self, tenant: str, safety_id: str, level: RiskLevel, since: datetime) -> int:
        return sum(1 for e in self._events(tenant, since) if e.safety_id == safety_id and e.level == level)

    def get_user(self, tenant: str, safety_id: str) -> UserState | None:
        with self.data.lock:
            return self.data.user_states.get((tenant, safety_id))

    def set_user(self, state: UserState) -> None:
        stored = replace(
            state,
            until=None if state.until is None else as_utc(state.until),
            updated_at=as_utc(state.updated_at),
        )
        with self.data.lock:
            self.data.user_states[(state.tenant, state.safety_id)] = stored

    def list_users(
        self, tenant: str, *, since: datetime, status: UserStatus | None = None, limit: int = 100
    ) -> list[UserSummary]:
        events = self._events(tenant, since)
        with self.data.lock:
            states = {sid: s for (t, sid), s in self.data.user_states.items() if t == tenant}
        users = {e.safety_id for e in events} | {sid for sid, s in states.items() if s.status != "ok"}
        summaries: list[UserSummary] = []
        for safety_id in users:
            state = states.get(safety_id)
            if status is not None and (state.status if state is not None else "ok") != status:
                continue
            own = [e for e in events if e.safety_id == safety_id]
            summaries.append(
                UserSummary(
                    state=state,
                    tenant=tenant,
                    safety_id=safety_id,
                    high=sum(1 for e in own if e.level == "high"),
                    medium=sum(1 for e in own if e.level == "medium"),
                    last_event_at=max((e.at for e in own), default=None),
                )
            )

        def order(summary: UserSummary) -> tuple[int, int, int, float, str]:
            last = summary.last_event_at
            return (
                -summary.high,
                -summary.medium,
                last is None,
                -(last.timestamp() if last is not None else 0.0),
                summary.safety_id,
            )

        return sorted(summaries, key=order)[: max(0, limit)]

    def org_summary(self, tenant: str, since: datetime) -> OrgSummary:
        events = self._events(tenant, since)
        with self.data.lock:
            states = [s for (t, _), s in self.data.user_states.items() if t == tenant and s.status != "ok"]
            answers = [a for a in self.data.filtered_answers if a.tenant == tenant and a.at >= since]
        counts = {"medium": 0, "high": 0}
        by_status: dict[str, int] = {}
        by_model: dict[str, int] = {}
        for event in events:
            counts[event.level] = counts.get(event.level, 0) + 1
        for state in states:
            by_status[state.status] = by_status.get(state.status, 0) + 1
        for answer in answers:
            by_model[answer.model] = by_model.get(answer.model, 0) + 1
        return OrgSummary(
            tenant=tenant,
            since=since,
            events=counts,
            users_with_high=len({e.safety_id for e in events if e.level == "high"}),
            users_by_status=by_status,
            filtered_answers=by_model,
        )


# ---------------------------------------------------------------------------------- audit


def _matches_safety(value: str, wanted: str) -> bool:
    """The audit search's safety filter: a prefix for short hex, else equality (as on SQL)."""
    if len(wanted) < 64 and all(c in "0123456789abcdef" for c in wanted):
        return wanted <= value < wanted + "g"
    return value == wanted


class MemoryAudit(MemoryRole):
    """Audit records: written into per-tenant hash chains, searched, paged and counted."""

    def _setup(self) -> None:
        super()._setup()
        self._next_id = 1

    def write_audit(self, record: dict[str, Any]) -> None:
        request_id = record.get("request_id")
        if not request_id:
            raise ValueError("an audit record needs a request_id")
        raw_time = record.get("time")
        if isinstance(raw_time, datetime):
            time = as_utc(raw_time)
        elif isinstance(raw_time, str):
            time = as_utc(datetime.fromisoformat(raw_time))
        else:
            time = as_utc(self.data.clock())
        tenant = record.get("tenant")
        tenant = None if tenant is None else str(tenant)
        record = {key: value for key, value in record.items() if key not in ("prev_hash", "hash")}
        with self.data.lock:
            rows = self.data.audit
            previous = next((row.hash for row in reversed(rows) if row.tenant == tenant), None)
            digest = link(record, previous)
            for row in rows:
                if row.request_id == str(request_id):
                    row.request_id = f"{str(request_id)[:60]}~superseded~{row.id}"
                    row.superseded = True
            safety = record.get("safety_identifier")
            outcome = record.get("outcome")
            rows.append(
                _AuditRow(
                    id=self._next_id,
                    request_id=str(request_id),
                    time=time,
                    tenant=tenant,
                    safety_identifier=None if safety is None else str(safety),
                    outcome=None if outcome is None else str(outcome),
                    record=_json(record),
                    prev_hash=previous,
                    hash=digest,
                )
            )
            self._next_id += 1

    def audit_chain(self, tenant: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        with self.data.lock:
            rows = [row for row in self.data.audit if tenant is None or row.tenant == tenant]
        for row in rows:
            record = _json(row.record)
            if row.hash is not None or "hash" in record:
                record["prev_hash"] = row.prev_hash
                record["hash"] = row.hash
            yield f"id {row.id}", record

    def _current(self) -> list[_AuditRow]:
        """Records not superseded, newest first."""
        with self.data.lock:
            rows = [row for row in self.data.audit if not row.superseded]
        return sorted(rows, key=lambda row: (row.time, row.id), reverse=True)

    def search_audit(
        self,
        tenant: str | None = None,
        *,
        safety_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        rows = [
            row
            for row in self._current()
            if (tenant is None or row.tenant == tenant)
            and (safety_id is None or row.safety_identifier == safety_id)
            and (outcome is None or row.outcome == outcome)
            and (since is None or row.time >= since)
        ]
        return [_json(row.record) for row in rows[: max(0, limit)]]

    def audit_page(self, query: AuditQuery) -> AuditPage:
        rows = [
            row
            for row in self._current()
            if (not query.outcome or row.outcome == query.outcome)
            and (
                not query.safety_id
                or (
                    row.safety_identifier is not None
                    and _matches_safety(row.safety_identifier, query.safety_id)
                )
            )
            and (not query.tenant or row.tenant == query.tenant)
            and (query.since is None or row.time >= query.since)
            and (query.until is None or row.time < query.until)
            and (not query.shadow or bool(row.record.get("shadow")))
            and (not query.api or row.record.get("api", DEFAULT_AUDIT_API) == query.api)
            and (not query.tier or row.record.get("tier") == query.tier)
        ]
        page = max(1, query.page)
        first = (page - 1) * query.page_size
        records = [_json(row.record) for row in rows[first : first + query.page_size]]
        return AuditPage(rows=records, total=len(rows), page=page, page_size=query.page_size)

    def get_audit(self, request_id: str) -> dict[str, Any] | None:
        with self.data.lock:
            row = next((row for row in self.data.audit if row.request_id == request_id), None)
        return None if row is None else _json(row.record)

    def audit_exists(self, request_id: str) -> bool:
        with self.data.lock:
            return any(row.request_id == request_id for row in self.data.audit)

    def audit_tenants(self, limit: int = 100) -> list[str]:
        with self.data.lock:
            tenants = {row.tenant for row in self.data.audit if row.tenant is not None}
        return sorted(tenants)[: max(0, limit)]

    def user_tiers(self, tenant: str, safety_ids: Sequence[str]) -> dict[str, str]:
        wanted = set(safety_ids)
        tiers: dict[str, str] = {}
        for row in self._current():  # newest first: the first tier seen per user is the latest
            tier = row.record.get("tier")
            sid = row.safety_identifier
            if row.tenant == tenant and sid in wanted and sid not in tiers and isinstance(tier, str):
                tiers[sid] = tier
        return tiers

    def audit_counts(
        self, since: datetime, until: datetime, bucket_s: int, tenant: str | None = None
    ) -> tuple[list[OutcomeRow], list[FlagRow]]:
        by_outcome: dict[tuple[int, str | None, str | None], int] = {}
        flagged: dict[tuple[int, str], int] = {}
        for row in self._current():
            if not since <= row.time < until or (tenant is not None and row.tenant != tenant):
                continue
            bucket = _bucket(row.time, bucket_s)
            risk = row.record.get("risk")
            if risk is not None and not isinstance(risk, str):
                risk = json.dumps(risk)
            key = (bucket, row.outcome, risk)
            by_outcome[key] = by_outcome.get(key, 0) + 1
            categories: set[str] = set()
            decisions = row.record.get("decisions")
            for decision in decisions if isinstance(decisions, list) else ():
                named = decision.get("categories") if isinstance(decision, dict) else None
                if isinstance(named, list):
                    categories.update(c if isinstance(c, str) else json.dumps(c) for c in named)
            for category in categories:
                flagged[(bucket, category)] = flagged.get((bucket, category), 0) + 1
        return (
            [(b, outcome, risk, n) for (b, outcome, risk), n in by_outcome.items()],
            [(b, category, n) for (b, category), n in flagged.items()],
        )


# ---------------------------------------------------------------------------------- review


def _stored_item(item: ReviewItem) -> ReviewItem:
    """``item`` as the SQL store keeps it: JSON fields through JSON, times in UTC."""

    def utc(value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)

    return replace(
        item,
        created_at=as_utc(item.created_at),
        request=dict(_json(item.request)),
        draft=dict(_json(item.draft)),
        reasons=tuple(_json(list(item.reasons))),
        scores={str(k): float(v) for k, v in _json(item.scores).items()},
        sources=tuple(dict(source) for source in _json([dict(s) for s in item.sources])),
        claimed_at=utc(item.claimed_at),
        claim_expires_at=utc(item.claim_expires_at),
        decided_at=utc(item.decided_at),
    )


def _stored_report(report: Report) -> Report:
    return replace(
        report,
        created_at=as_utc(report.created_at),
        updated_at=as_utc(report.updated_at),
        notes=tuple(dict(note) for note in _json([dict(note) for note in report.notes])),
    )


def _unclaimed(item: ReviewItem, now: datetime) -> bool:
    return item.claimed_by is None or item.claim_expires_at is None or item.claim_expires_at <= now


def _held_by(item: ReviewItem, reviewer: str, now: datetime) -> bool:
    return item.claimed_by == reviewer and item.claim_expires_at is not None and item.claim_expires_at > now


def _counts(statuses: tuple[str, ...], found: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(statuses, 0)
    for status in found:
        counts[status] = counts.get(status, 0) + 1
    return counts


class MemoryReview(MemoryRole):
    """Held answers, their trail, user reports and the review desk's counts."""

    def _setup(self) -> None:
        super()._setup()
        self._next_event = 1

    def _add_event(self, event: ReviewEvent) -> None:
        """Keep one trail entry (the caller holds the lock)."""
        self.data.review_events.append(
            replace(event, at=as_utc(event.at), detail=dict(_json(event.detail)), id=self._next_event)
        )
        self._next_event += 1

    def create_review(self, item: ReviewItem) -> ReviewItem:
        with self.data.lock:
            if item.id in self.data.reviews:
                raise InvalidRequestError(
                    f"a review item with id {item.id!r} exists already", code="duplicate_review"
                )
            self.data.reviews[item.id] = _stored_item(item)
            self._add_event(
                ReviewEvent(item.id, "held", "gateway", item.created_at, {"reasons": list(item.reasons)})
            )
        return item

    def get_review(self, review_id: str) -> ReviewItem | None:
        with self.data.lock:
            return self.data.reviews.get(review_id)

    def list_reviews(
        self,
        *,
        tenant: str | None = None,
        status: ReviewStatus | None = None,
        domain: str | None = None,
        claimable_at: datetime | None = None,
        claimed_by: str | None = None,
        safety_id: str | None = None,
        reason: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ReviewItem]:
        with self.data.lock:
            items = list(self.data.reviews.values())
        chosen = sorted(
            (
                item
                for item in items
                if (tenant is None or item.tenant == tenant)
                and (status is None or item.status == status)
                and (domain is None or item.domain == domain)
                and (claimable_at is None or (item.status == "pending" and _unclaimed(item, claimable_at)))
                and (claimed_by is None or item.claimed_by == claimed_by)
                and (safety_id is None or item.safety_id == safety_id)
                and (reason is None or has_reason(item.reasons, reason))
            ),
            key=lambda item: (item.created_at, item.id),
        )
        return chosen[offset : offset + max(0, limit)]

    def _update_pending(self, review_id: str, allowed: bool, **values: Any) -> ReviewItem | None:
        """Set ``values`` on the pending item if ``allowed`` (the caller holds the lock)."""
        item = self.data.reviews.get(review_id)
        if item is None or item.status != "pending" or not allowed:
            return None
        updated = self.data.reviews[review_id] = _stored_item(replace(item, **values))
        return updated

    def claim_review(self, review_id: str, reviewer: str, now: datetime, ttl_s: int) -> ReviewItem | None:
        expires = now + timedelta(seconds=ttl_s)
        with self.data.lock:
            item = self.data.reviews.get(review_id)
            allowed = item is not None and (_unclaimed(item, now) or item.claimed_by == reviewer)
            claimed = self._update_pending(
                review_id, allowed, claimed_by=reviewer, claimed_at=now, claim_expires_at=expires
            )
            if claimed is not None:
                self._add_event(ReviewEvent(review_id, "claimed", reviewer, now, {"expires_at": expires}))
        return claimed

    def release_review(
        self, review_id: str, reviewer: str, now: datetime, *, by: str | None = None
    ) -> ReviewItem | None:
        with self.data.lock:
            item = self.data.reviews.get(review_id)
            allowed = item is not None and _held_by(item, reviewer, now)
            released = self._update_pending(
                review_id, allowed, claimed_by=None, claimed_at=None, claim_expires_at=None
            )
            if released is not None:
                self._add_event(_release_event(review_id, reviewer, now, by))
        return released

    def decide_review(
        self,
        review_id: str,
        reviewer: str,
        decision: ReviewDecision,
        now: datetime,
        *,
        edited_text: str | None = None,
        reason: str | None = None,
    ) -> ReviewItem | None:
        status = {"approve": "approved", "edit": "edited", "reject": "rejected"}[decision]
        with self.data.lock:
            item = self.data.reviews.get(review_id)
            allowed = item is not None and _held_by(item, reviewer, now)
            decided = self._update_pending(
                review_id,
                allowed,
                status=status,
                decision=decision,
                edited_text=edited_text,
                reason=reason,
                decided_by=reviewer,
                decided_at=now,
                claim_expires_at=None,
            )
            if decided is None:
                return None
            self._add_event(ReviewEvent.decision(review_id, status, reviewer, now, edited_text, reason))
        return decided

    def review_counts(self, tenant: str | None = None) -> dict[str, int]:
        with self.data.lock:
            found = [i.status for i in self.data.reviews.values() if tenant is None or i.tenant == tenant]
        return _counts(REVIEW_STATUSES, found)

    def list_review_events(self, subject_id: str) -> list[ReviewEvent]:
        with self.data.lock:
            events = [e for e in self.data.review_events if e.subject_id == subject_id]
        return sorted(events, key=lambda e: (e.at, e.id or 0))

    # ------------------------------------------------------------------ user reports

    def create_report(self, report: Report) -> Report:
        with self.data.lock:
            if report.id in self.data.reports:
                raise StoreError(f"store failed while storing a user report: {report.id!r} exists already")
            self.data.reports[report.id] = _stored_report(report)
            self._add_event(
                ReviewEvent(report.id, "reported", "user", report.created_at, {"category": report.category})
            )
        return report

    def get_report(self, report_id: str) -> Report | None:
        with self.data.lock:
            return self.data.reports.get(report_id)

    def list_reports(
        self,
        *,
        tenant: str | None = None,
        status: ReportStatus | None = None,
        category: ReportCategory | None = None,
        reporter: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Report]:
        with self.data.lock:
            found = [
                r
                for r in self.data.reports.values()
                if (tenant is None or r.tenant == tenant)
                and (status is None or r.status == status)
                and (category is None or r.category == category)
                and (reporter is None or r.reporter == reporter)
            ]
        # Newest first, ties by id (as SQL's ORDER BY created_at DESC, id).
        found.sort(key=lambda r: r.id)
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[offset : offset + max(0, limit)]

    def triage_report(
        self, report_id: str, actor: str, now: datetime, *, status: ReportStatus | None, note: str | None
    ) -> Report | None:
        with self.data.lock:
            report = self.data.reports.get(report_id)
            if report is None:
                return None
            notes = list(report.notes)
            if note:
                notes.append(
                    {"at": now.isoformat(), "by": actor, "text": note, "status": status or report.status}
                )
            updated = replace(
                report,
                notes=tuple(notes),
                updated_at=now,
                updated_by=actor,
                status=status if status is not None else report.status,
            )
            updated = self.data.reports[report_id] = _stored_report(updated)
            detail: dict[str, Any] = {"from": report.status, "to": status or report.status}
            if note:
                detail["note"] = note
            self._add_event(ReviewEvent(report_id, "triaged", actor, now, detail))
        return updated

    def report_counts(self, tenant: str | None = None) -> dict[str, int]:
        with self.data.lock:
            found = [r.status for r in self.data.reports.values() if tenant is None or r.tenant == tenant]
        return _counts(REPORT_STATUSES, found)

    def desk_counts(
        self, since: datetime, until: datetime, bucket_s: int, now: datetime, tenant: str | None = None
    ) -> DeskCounts:
        with self.data.lock:
            items = [i for i in self.data.reviews.values() if tenant is None or i.tenant == tenant]
            reports = [r for r in self.data.reports.values() if tenant is None or r.tenant == tenant]
        held: dict[int, int] = {}
        decided: dict[int, tuple[int, float]] = {}
        timed: list[tuple[datetime, float]] = []
        for item in items:
            if since <= item.created_at < until:
                bucket = _bucket(item.created_at, bucket_s)
                held[bucket] = held.get(bucket, 0) + 1
            if item.decided_at is not None and since <= item.decided_at < until:
                bucket = _bucket(item.decided_at, bucket_s)
                seconds = (item.decided_at - item.created_at).total_seconds()
                n, total = decided.get(bucket, (0, 0.0))
                decided[bucket] = (n + 1, total + seconds)
                timed.append((item.decided_at, seconds))
        timed.sort(key=lambda pair: pair[0], reverse=True)
        pending = [i for i in items if i.status == "pending"]
        by_report: dict[tuple[int, str], int] = {}
        for report in reports:
            if since <= report.created_at < until:
                key = (_bucket(report.created_at, bucket_s), report.status)
                by_report[key] = by_report.get(key, 0) + 1
        totals: dict[str, int] = {}
        for report in reports:
            totals[report.status] = totals.get(report.status, 0) + 1
        return DeskCounts(
            held=held,
            decided=decided,
            durations=[seconds for _, seconds in timed[:DURATIONS_READ]],
            waiting_before=sum(
                1 for i in items if i.created_at < since and (i.decided_at is None or i.decided_at >= since)
            ),
            pending=len(pending),
            claimed=sum(
                1
                for i in pending
                if i.claimed_by is not None and i.claim_expires_at is not None and i.claim_expires_at > now
            ),
            oldest_pending=min((i.created_at for i in pending), default=None),
            reports=[(b, status, n) for (b, status), n in by_report.items()],
            report_totals=totals,
        )


# ---------------------------------------------------------------------------------- UI accounts


class MemoryUIAccounts(MemoryRole):
    """The web UI's local accounts and sessions."""

    def create_account(self, name: str, role: str, password_hash: str, now: datetime) -> AccountRow:
        now = as_utc(now)
        with self.data.lock:
            if name in self.data.accounts:
                raise InvalidRequestError(f"an account named {name!r} exists already", param="name")
            row = self.data.accounts[name] = AccountRow(name, role, password_hash, now, now)
        return row

    def get_account(self, name: str) -> AccountRow | None:
        with self.data.lock:
            return self.data.accounts.get(name)

    def list_accounts(self) -> list[AccountRow]:
        with self.data.lock:
            return sorted(self.data.accounts.values(), key=lambda row: row.name)

    def update_account(
        self,
        name: str,
        now: datetime,
        *,
        role: str | None = None,
        password_hash: str | None = None,
        disabled: bool | None = None,
    ) -> AccountRow:
        now = as_utc(now)
        with self.data.lock:
            row = self.data.accounts.get(name)
            if row is None:
                raise NotFoundError(f"no account named {name!r}")
            row = replace(
                row,
                updated_at=now,
                role=role if role is not None else row.role,
                password_hash=password_hash if password_hash is not None else row.password_hash,
                disabled_at=row.disabled_at if disabled is None else (now if disabled else None),
            )
            self.data.accounts[name] = row
        return row

    def record_sign_in(self, name: str, now: datetime, password_hash: str | None = None) -> None:
        with self.data.lock:
            row = self.data.accounts.get(name)
            if row is not None:
                self.data.accounts[name] = replace(
                    row,
                    last_login_at=as_utc(now),
                    password_hash=password_hash if password_hash is not None else row.password_hash,
                )

    def start_session(self, session: SessionRow) -> None:
        with self.data.lock:
            sessions = self.data.sessions
            for token_hash in [k for k, s in sessions.items() if s.expires_at <= session.created_at]:
                del sessions[token_hash]
            sessions[session.token_hash] = session

    def find_session(self, token_hash: str) -> tuple[SessionRow, AccountRow | None] | None:
        with self.data.lock:
            session = self.data.sessions.get(token_hash)
            if session is None:
                return None
            account = self.data.accounts.get(session.subject) if session.source == "local" else None
        return session, account

    def touch_session(self, token_hash: str, now: datetime) -> None:
        with self.data.lock:
            session = self.data.sessions.get(token_hash)
            if session is not None:
                self.data.sessions[token_hash] = replace(session, last_seen_at=as_utc(now))

    def end_session(self, token_hash: str) -> None:
        with self.data.lock:
            self.data.sessions.pop(token_hash, None)

    def end_sessions(self, subject: str, source: str) -> int:
        with self.data.lock:
            ended = [k for k, s in self.data.sessions.items() if s.subject == subject and s.source == source]
            for token_hash in ended:
                del self.data.sessions[token_hash]
        return len(ended)

    def create_token(self, token: OperatorToken) -> OperatorToken:
        stored = replace(token, created_at=as_utc(token.created_at))
        with self.data.lock:
            if any(t.token_hash == token.token_hash for t in self.data.tokens.values()):
                raise InvalidRequestError("an operator token with this hash exists already")
            self.data.tokens[stored.id] = stored
        return stored

    def list_tokens(self, *, include_revoked: bool = False) -> list[OperatorToken]:
        with self.data.lock:
            tokens = [t for t in self.data.tokens.values() if include_revoked or t.revoked_at is None]
        return sorted(tokens, key=lambda t: (t.created_at, t.id))

    def revoke_token(self, token_id: str, now: datetime) -> OperatorToken:
        with self.data.lock:
            token = self.data.tokens.get(token_id)
            if token is None:
                raise NotFoundError(f"no operator token with id {token_id!r}")
            if token.revoked_at is None:
                token = self.data.tokens[token_id] = replace(token, revoked_at=as_utc(now))
        return token

    def find_token(self, token_hash: str, now: datetime) -> OperatorToken | None:
        now = as_utc(now)
        with self.data.lock:
            token = next((t for t in self.data.tokens.values() if t.token_hash == token_hash), None)
            if token is None:
                return None
            if token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY:
                token = self.data.tokens[token.id] = replace(token, last_used_at=now)
        return token


# ---------------------------------------------------------------------------------- the store


# ---------------------------------------------------------------------------------- responses


class MemoryResponses(MemoryRole):
    """Responses API responses kept for ``previous_response_id``, until they expire."""

    def _setup(self) -> None:
        super()._setup()
        self._response_prunes = PruneClock()

    def save_response(self, stored: StoredResponse) -> None:
        kept = replace(
            stored,
            created_at=as_utc(stored.created_at),
            expires_at=as_utc(stored.expires_at),
            input_items=_json(stored.input_items),
            response=_json(stored.response),
        )
        with self.data.lock:
            self.data.responses[stored.id] = kept
        now = as_utc(stored.created_at)  # the saver's now: prune what expired by then
        if self._response_prunes.due(now.timestamp()):
            self.prune_responses(now)

    def get_response(self, response_id: str, now: datetime) -> StoredResponse | None:
        with self.data.lock:
            found = self.data.responses.get(response_id)
        if found is None or found.expires_at <= as_utc(now):
            return None
        return replace(found, input_items=_json(found.input_items), response=_json(found.response))

    def delete_response(self, response_id: str) -> bool:
        with self.data.lock:
            return self.data.responses.pop(response_id, None) is not None

    def prune_responses(self, now: datetime) -> int:
        moment = as_utc(now)
        with self.data.lock:
            expired = [key for key, kept in self.data.responses.items() if kept.expires_at <= moment]
            for key in expired:
                del self.data.responses[key]
        self._response_prunes.pruned(moment.timestamp())
        return len(expired)


class MemoryStore(
    MemoryKeys, MemoryCounters, MemoryLedger, MemoryAudit, MemoryReview, MemoryUIAccounts, MemoryResponses
):
    """:class:`seawall.store.base.Store` in one process's memory (``store.url: memory://``)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(MemoryData(clock=clock))

    def ping(self) -> None:
        """Always answers: the store is this process."""

    def close(self) -> None:
        """Nothing to release (the data stays until the object is dropped)."""


__all__ = [
    "MEMORY_URL",
    "MemoryAudit",
    "MemoryCounters",
    "MemoryData",
    "MemoryKeys",
    "MemoryLedger",
    "MemoryResponses",
    "MemoryReview",
    "MemoryRole",
    "MemoryStore",
    "MemoryUIAccounts",
]
