"""The review role (:class:`seawall.store.base.ReviewStore`) on SQL: ``review_items``,
``review_events`` (the trail) and ``reports``, and the review desk's counts over them.

Claims and decisions are single conditional UPDATEs, so two reviewers racing for an item cannot
both win; every change writes its event in the same transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Table,
    Text,
    cast,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from seawall.errors import InvalidRequestError
from seawall.store.base import (
    REPORT_STATUSES,
    REVIEW_STATUSES,
    DeskCounts,
    Report,
    ReportCategory,
    ReportStatus,
    ReviewDecision,
    ReviewEvent,
    ReviewItem,
    ReviewStatus,
)
from seawall.store.schema import reports, review_events, review_items
from seawall.store.sql.audit import bind_time, bucket_of
from seawall.store.sql.database import SqlRole, to_json

#: The most decisions whose durations the desk's percentiles read.
DURATIONS_READ = 20_000


def _like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (escape character ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _held_for(reason: str) -> ColumnElement[bool]:
    """Items whose ``reasons`` (a JSON list of strings, written by :func:`to_json`) hold ``reason``
    whole, or, for a reason without a colon (a kind), one of that kind: :func:`has_reason` in SQL,
    on the list's text, so it works on SQLite and PostgreSQL alike. The quotes of each JSON string
    keep a reason from matching inside another."""
    listed = cast(review_items.c.reasons, Text)
    whole = listed.like(f"%{_like(to_json(reason))}%", escape="\\")
    if ":" in reason:
        return whole
    return or_(whole, listed.like(f"%{_like(to_json(reason + ':')[:-1])}%", escape="\\"))


def _unclaimed(now: datetime) -> Any:
    """Nobody holds a live claim on the item at ``now``."""
    columns = review_items.c
    return (
        columns.claimed_by.is_(None) | columns.claim_expires_at.is_(None) | (columns.claim_expires_at <= now)
    )


def _held_by(reviewer: str, now: datetime) -> Any:
    """``reviewer`` holds a live claim on the item at ``now``."""
    columns = review_items.c
    return (columns.claimed_by == reviewer) & (columns.claim_expires_at > now)


def _update_pending(
    connection: Connection, review_id: str, condition: Any, **values: Any
) -> ReviewItem | None:
    """Set ``values`` on the pending item if ``condition`` holds, in one conditional UPDATE; the
    item as updated, or None when nothing matched."""
    columns = review_items.c
    row = connection.execute(
        update(review_items)
        .where(columns.id == review_id, columns.status == "pending", condition)
        .values(**values)
        .returning(review_items)
    ).one_or_none()
    return None if row is None else _review(row)


def _status_counts(
    connection: Connection, table: Table, statuses: tuple[str, ...], tenant: str | None
) -> dict[str, int]:
    """Rows of ``table`` per status, every one of ``statuses`` present (0 when none)."""
    query = select(table.c.status, func.count()).group_by(table.c.status)
    if tenant is not None:
        query = query.where(table.c.tenant == tenant)
    counts = dict.fromkeys(statuses, 0)
    counts.update({str(status): int(count) for status, count in connection.execute(query)})
    return counts


def _review_values(item: ReviewItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "tenant": item.tenant,
        "request_id": item.request_id,
        "completion_id": item.completion_id,
        "safety_id": item.safety_id,
        "status": item.status,
        "domain": item.domain,
        "reasons": list(item.reasons),
        "request": item.request,
        "draft": item.draft,
        "scores": item.scores,
        "sources": [dict(source) for source in item.sources],
        "notes": item.notes,
        "webhook": item.webhook,
        "claimed_by": item.claimed_by,
        "claimed_at": item.claimed_at,
        "claim_expires_at": item.claim_expires_at,
        "decision": item.decision,
        "edited_text": item.edited_text,
        "reason": item.reason,
        "decided_by": item.decided_by,
        "created_at": item.created_at,
        "decided_at": item.decided_at,
    }


def _review(row: Row[Any]) -> ReviewItem:
    return ReviewItem(
        id=row.id,
        tenant=row.tenant,
        request_id=row.request_id,
        status=row.status,
        created_at=row.created_at,
        request=dict(row.request),
        draft=dict(row.draft),
        completion_id=row.completion_id,
        safety_id=row.safety_id,
        domain=row.domain,
        reasons=tuple(row.reasons or ()),
        scores={str(k): float(v) for k, v in (row.scores or {}).items()},
        sources=tuple(dict(source) for source in row.sources or ()),
        notes=row.notes,
        webhook=row.webhook,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        claim_expires_at=row.claim_expires_at,
        decision=row.decision,
        edited_text=row.edited_text,
        reason=row.reason,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
    )


def _report_values(report: Report) -> dict[str, Any]:
    return {
        "id": report.id,
        "tenant": report.tenant,
        "response_id": report.response_id,
        "request_id": report.request_id,
        "review_id": report.review_id,
        "category": report.category,
        "status": report.status,
        "comment": report.comment,
        "contact": report.contact,
        "reporter": report.reporter,
        "notes": [dict(note) for note in report.notes],
        "created_at": report.created_at,
        "updated_at": report.updated_at,
        "updated_by": report.updated_by,
    }


def _report(row: Row[Any]) -> Report:
    return Report(
        id=row.id,
        tenant=row.tenant,
        response_id=row.response_id,
        category=row.category,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        comment=row.comment,
        contact=row.contact,
        reporter=row.reporter,
        request_id=row.request_id,
        review_id=row.review_id,
        notes=tuple(dict(note) for note in row.notes or ()),
        updated_by=row.updated_by,
    )


def _add_event(connection: Connection, event: ReviewEvent) -> None:
    connection.execute(
        insert(review_events).values(
            subject_id=event.subject_id,
            action=event.action,
            actor=event.actor,
            at=event.at,
            detail=event.detail,
        )
    )


def _seconds_between(dialect: str, start: str, end: str) -> str:
    if dialect == "postgresql":
        return f"extract(epoch from ({end} - {start}))"
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


class SqlReview(SqlRole):
    """Held answers, their trail, user reports and the review desk's counts."""

    def create_review(self, item: ReviewItem) -> ReviewItem:
        """Store a new pending item and its ``held`` event in one transaction."""
        with self.db.transaction("holding an answer for review", write=True) as connection:
            try:
                connection.execute(insert(review_items).values(**_review_values(item)))
            except IntegrityError:
                raise InvalidRequestError(
                    f"a review item with id {item.id!r} exists already", code="duplicate_review"
                ) from None
            _add_event(
                connection,
                ReviewEvent(item.id, "held", "gateway", item.created_at, {"reasons": list(item.reasons)}),
            )
        return item

    def get_review(self, review_id: str) -> ReviewItem | None:
        with self.db.transaction("reading a review item") as connection:
            row = connection.execute(select(review_items).where(review_items.c.id == review_id)).first()
        return None if row is None else _review(row)

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
        """Items matching every filter, oldest first; ``claimable_at``: pending and no live claim;
        ``reason``: matched in the stored JSON list (:func:`_held_for`)."""
        columns = review_items.c
        query = select(review_items).order_by(columns.created_at, columns.id).limit(limit).offset(offset)
        if tenant is not None:
            query = query.where(columns.tenant == tenant)
        if status is not None:
            query = query.where(columns.status == status)
        if domain is not None:
            query = query.where(columns.domain == domain)
        if claimable_at is not None:
            query = query.where(columns.status == "pending", _unclaimed(claimable_at))
        if claimed_by is not None:
            query = query.where(columns.claimed_by == claimed_by)
        if safety_id is not None:
            query = query.where(columns.safety_id == safety_id)
        if reason is not None:
            query = query.where(_held_for(reason))
        with self.db.transaction("listing review items") as connection:
            return [_review(row) for row in connection.execute(query)]

    def claim_review(self, review_id: str, reviewer: str, now: datetime, ttl_s: int) -> ReviewItem | None:
        """Claim (or extend one's own claim on) a pending item: one conditional UPDATE, so two
        reviewers racing for it cannot both win; None when the claim was lost."""
        expires = now + timedelta(seconds=ttl_s)
        with self.db.transaction("claiming a review item", write=True) as connection:
            claimed = _update_pending(
                connection,
                review_id,
                _unclaimed(now) | (review_items.c.claimed_by == reviewer),
                claimed_by=reviewer,
                claimed_at=now,
                claim_expires_at=expires,
            )
            if claimed is not None:
                _add_event(
                    connection, ReviewEvent(review_id, "claimed", reviewer, now, {"expires_at": expires})
                )
        return claimed

    def release_review(
        self, review_id: str, reviewer: str, now: datetime, *, by: str | None = None
    ) -> ReviewItem | None:
        """Give up ``reviewer``'s live claim on a pending item; None if they held none. ``by``: an
        admin breaks the claim for them (event ``claim_broken`` by ``by``, naming the claimer)."""
        with self.db.transaction("releasing a review item", write=True) as connection:
            released = _update_pending(
                connection,
                review_id,
                _held_by(reviewer, now),
                claimed_by=None,
                claimed_at=None,
                claim_expires_at=None,
            )
            if released is not None:
                event = (
                    ReviewEvent(review_id, "released", reviewer, now)
                    if by is None
                    else ReviewEvent(review_id, "claim_broken", by, now, {"claimed_by": reviewer})
                )
                _add_event(connection, event)
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
        """Record a decision with its event in one transaction, if ``reviewer`` holds a live claim."""
        status = {"approve": "approved", "edit": "edited", "reject": "rejected"}[decision]
        with self.db.transaction("deciding a review item", write=True) as connection:
            decided = _update_pending(
                connection,
                review_id,
                _held_by(reviewer, now),
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
            event = ReviewEvent.decision(review_id, status, reviewer, now, edited_text, reason)
            _add_event(connection, event)
        return decided

    def review_counts(self, tenant: str | None = None) -> dict[str, int]:
        """Items per status (every status present)."""
        with self.db.transaction("counting review items") as connection:
            return _status_counts(connection, review_items, REVIEW_STATUSES, tenant)

    def list_review_events(self, subject_id: str) -> list[ReviewEvent]:
        """The trail of a review item or a report, oldest first."""
        columns = review_events.c
        query = select(review_events).where(columns.subject_id == subject_id).order_by(columns.at, columns.id)
        with self.db.transaction("reading review events") as connection:
            return [
                ReviewEvent(row.subject_id, row.action, row.actor, row.at, dict(row.detail), row.id)
                for row in connection.execute(query)
            ]

    # ------------------------------------------------------------------ user reports

    def create_report(self, report: Report) -> Report:
        """Store a new report and its ``reported`` event in one transaction."""
        with self.db.transaction("storing a user report", write=True) as connection:
            connection.execute(insert(reports).values(**_report_values(report)))
            _add_event(
                connection,
                ReviewEvent(report.id, "reported", "user", report.created_at, {"category": report.category}),
            )
        return report

    def get_report(self, report_id: str) -> Report | None:
        with self.db.transaction("reading a user report") as connection:
            row = connection.execute(select(reports).where(reports.c.id == report_id)).first()
        return None if row is None else _report(row)

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
        """Reports matching every filter, newest first."""
        columns = reports.c
        query = select(reports).order_by(columns.created_at.desc(), columns.id).limit(limit).offset(offset)
        if tenant is not None:
            query = query.where(columns.tenant == tenant)
        if status is not None:
            query = query.where(columns.status == status)
        if category is not None:
            query = query.where(columns.category == category)
        if reporter is not None:
            query = query.where(columns.reporter == reporter)
        with self.db.transaction("listing user reports") as connection:
            return [_report(row) for row in connection.execute(query)]

    def triage_report(
        self, report_id: str, actor: str, now: datetime, *, status: ReportStatus | None, note: str | None
    ) -> Report | None:
        """Move a report to ``status`` and/or add a note (row locked, so notes are never lost)."""
        columns = reports.c
        with self.db.transaction("triaging a user report", write=True) as connection:
            row = connection.execute(select(reports).where(columns.id == report_id).with_for_update()).first()
            if row is None:
                return None
            notes = list(row.notes or [])
            if note:
                notes.append(
                    {"at": now.isoformat(), "by": actor, "text": note, "status": status or row.status}
                )
            values: dict[str, Any] = {"notes": notes, "updated_at": now, "updated_by": actor}
            if status is not None:
                values["status"] = status
            updated = connection.execute(
                update(reports).where(columns.id == report_id).values(**values).returning(reports)
            ).one()
            detail: dict[str, Any] = {"from": row.status, "to": status or row.status}
            if note:
                detail["note"] = note
            _add_event(connection, ReviewEvent(report_id, "triaged", actor, now, detail))
        return _report(updated)

    def report_counts(self, tenant: str | None = None) -> dict[str, int]:
        """Reports per status (every status present)."""
        with self.db.transaction("counting user reports") as connection:
            return _status_counts(connection, reports, REPORT_STATUSES, tenant)

    # ------------------------------------------------------------------ the review desk's counts

    def desk_counts(
        self, since: datetime, until: datetime, bucket_s: int, now: datetime, tenant: str | None = None
    ) -> DeskCounts:
        """Held answers, decisions, the queue and reports over ``[since, until)``, per bucket."""
        dialect = self.db.dialect
        params: dict[str, Any] = {
            "since": bind_time(dialect, since),
            "until": bind_time(dialect, until),
            "now": bind_time(dialect, now),
        }
        tenant_sql = ""
        if tenant is not None:
            params["tenant"] = tenant
            tenant_sql = " AND tenant = :tenant"
        duration = _seconds_between(dialect, "created_at", "decided_at")
        held_sql = (
            f"SELECT {bucket_of(dialect, 'created_at', bucket_s)} AS b, count(*) FROM review_items "
            f"WHERE created_at >= :since AND created_at < :until{tenant_sql} GROUP BY 1"
        )
        decided_sql = (
            f"SELECT {bucket_of(dialect, 'decided_at', bucket_s)} AS b, count(*), sum({duration}) "
            f"FROM review_items WHERE decided_at >= :since AND decided_at < :until{tenant_sql} GROUP BY 1"
        )
        durations_sql = (
            f"SELECT {duration} FROM review_items WHERE decided_at >= :since AND decided_at < :until"
            f"{tenant_sql} ORDER BY decided_at DESC LIMIT {DURATIONS_READ}"
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
            f"SELECT {bucket_of(dialect, 'created_at', bucket_s)} AS b, status, count(*) FROM reports "
            f"WHERE created_at >= :since AND created_at < :until{tenant_sql} GROUP BY 1, 2"
        )
        totals_sql = f"SELECT status, count(*) FROM reports WHERE 1 = 1{tenant_sql} GROUP BY status"
        with self.db.transaction("reading the review desk's figures") as connection:
            held = {int(b): int(n) for b, n in connection.execute(text(held_sql), params).all()}
            decided = {
                int(b): (int(n), float(total or 0))
                for b, n, total in connection.execute(text(decided_sql), params).all()
            }
            durations = [float(v) for (v,) in connection.execute(text(durations_sql), params).all()]
            waiting = int(connection.execute(text(before_sql), params).scalar_one())
            pending, oldest, claimed = connection.execute(text(pending_sql), params).one()
            report_rows = [
                (int(b), str(status), int(n))
                for b, status, n in connection.execute(text(reports_sql), params).all()
            ]
            totals = {str(status): int(n) for status, n in connection.execute(text(totals_sql), params).all()}
        if isinstance(oldest, str):  # SQLite hands back text (naive UTC)
            oldest = datetime.fromisoformat(oldest)
        if isinstance(oldest, datetime) and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return DeskCounts(
            held=held,
            decided=decided,
            durations=durations,
            waiting_before=waiting,
            pending=int(pending or 0),
            claimed=int(claimed or 0),
            oldest_pending=oldest if isinstance(oldest, datetime) else None,
            reports=report_rows,
            report_totals=totals,
        )


__all__ = ["DURATIONS_READ", "SqlReview"]
