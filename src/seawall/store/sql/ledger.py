"""The ledger role (:class:`seawall.store.base.LedgerStore`) on SQL: ``risk_events``,
``user_states`` (upserted) and ``filtered_answers``, and the users list and org roll-up over them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, case, func, insert, select, union

from seawall.store.base import (
    FilteredAnswer,
    OrgSummary,
    RiskEvent,
    RiskLevel,
    UserState,
    UserStatus,
    UserSummary,
)
from seawall.store.schema import filtered_answers, risk_events, user_states
from seawall.store.sql.database import SqlRole


def _state(row: Row[Any]) -> UserState:
    return UserState(
        tenant=row.tenant,
        safety_id=row.safety_id,
        status=row.status,
        until=row.until,
        reason=row.reason,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


#: A user's stored state (run on every gateway request with the risk ledger): built once.
_USER_STATE = select(user_states).where(
    user_states.c.tenant == bindparam("tenant"), user_states.c.safety_id == bindparam("safety_id")
)


class SqlLedger(SqlRole):
    """The risk ledger."""

    def record_event(self, event: RiskEvent) -> None:
        """Keep one medium- or high-risk request of a user."""
        with self.db.transaction("recording a risk event", write=True) as connection:
            connection.execute(
                insert(risk_events).values(
                    tenant=event.tenant,
                    safety_id=event.safety_id,
                    level=event.level,
                    at=event.at,
                    request_id=event.request_id,
                    categories=list(event.categories),
                )
            )

    def record_filtered_answer(self, answer: FilteredAnswer) -> None:
        """Count one answer that output moderation filtered (per tenant and model, not per user)."""
        with self.db.transaction("recording a filtered answer", write=True) as connection:
            connection.execute(
                insert(filtered_answers).values(
                    tenant=answer.tenant,
                    model=answer.model,
                    at=answer.at,
                    request_id=answer.request_id,
                    categories=list(answer.categories),
                )
            )

    def count_events(self, tenant: str, safety_id: str, level: RiskLevel, since: datetime) -> int:
        """How many events of ``level`` the user had at or after ``since``."""
        query = select(func.count()).where(
            risk_events.c.tenant == tenant,
            risk_events.c.safety_id == safety_id,
            risk_events.c.level == level,
            risk_events.c.at >= since,
        )
        with self.db.transaction("counting risk events") as connection:
            return int(connection.execute(query).scalar_one())

    def get_user(self, tenant: str, safety_id: str) -> UserState | None:
        """The user's stored state; None if it was never set."""
        with self.db.transaction("reading a user state") as connection:
            row = connection.execute(_USER_STATE, {"tenant": tenant, "safety_id": safety_id}).first()
        return None if row is None else _state(row)

    def set_user(self, state: UserState) -> None:
        """Insert or replace the user's state."""
        values = {
            "status": state.status,
            "until": state.until,
            "reason": state.reason,
            "updated_at": state.updated_at,
            "updated_by": state.updated_by,
        }
        statement = self.db.insert(user_states).values(
            tenant=state.tenant, safety_id=state.safety_id, **values
        )
        statement = statement.on_conflict_do_update(
            index_elements=[user_states.c.tenant, user_states.c.safety_id], set_=values
        )
        with self.db.transaction("writing a user state", write=True) as connection:
            connection.execute(statement)

    def list_users(
        self, tenant: str, *, since: datetime, status: UserStatus | None = None, limit: int = 100
    ) -> list[UserSummary]:
        """Users with a non-ok state or any event since ``since``, most high-risk events first
        (then most medium-risk events, then the latest event); ``status`` keeps only users in
        that state (``"ok"`` includes users with events and no stored state)."""
        events = risk_events.c
        in_window = and_(events.tenant == tenant, events.at >= since)
        counts = (
            select(
                events.safety_id,
                func.sum(case((events.level == "high", 1), else_=0)).label("high"),
                func.sum(case((events.level == "medium", 1), else_=0)).label("medium"),
                func.max(events.at).label("last_event_at"),
            )
            .where(in_window)
            .group_by(events.safety_id)
            .subquery("counts")
        )
        users = union(
            select(events.safety_id).where(in_window),
            select(user_states.c.safety_id).where(
                user_states.c.tenant == tenant, user_states.c.status != "ok"
            ),
        ).subquery("users")
        high = func.coalesce(counts.c.high, 0)
        medium = func.coalesce(counts.c.medium, 0)
        query = (
            select(
                users.c.safety_id,
                high.label("high"),
                medium.label("medium"),
                counts.c.last_event_at,
                user_states,
            )
            .select_from(
                users.outerjoin(counts, counts.c.safety_id == users.c.safety_id).outerjoin(
                    user_states,
                    and_(user_states.c.tenant == tenant, user_states.c.safety_id == users.c.safety_id),
                )
            )
            .order_by(
                high.desc(), medium.desc(), counts.c.last_event_at.desc().nulls_last(), users.c.safety_id
            )
            .limit(limit)
        )
        if status is not None:
            query = query.where(func.coalesce(user_states.c.status, "ok") == status)
        with self.db.transaction("listing users") as connection:
            rows = connection.execute(query).all()
        summaries: list[UserSummary] = []
        for row in rows:
            mapping = row._mapping
            state = None
            if mapping[user_states.c.status] is not None:
                state = UserState(
                    tenant=tenant,
                    safety_id=mapping[users.c.safety_id],
                    status=mapping[user_states.c.status],
                    until=mapping[user_states.c.until],
                    reason=mapping[user_states.c.reason],
                    updated_at=mapping[user_states.c.updated_at],
                    updated_by=mapping[user_states.c.updated_by],
                )
            summaries.append(
                UserSummary(
                    state=state,
                    tenant=tenant,
                    safety_id=mapping[users.c.safety_id],
                    high=int(mapping["high"]),
                    medium=int(mapping["medium"]),
                    last_event_at=mapping[counts.c.last_event_at],
                )
            )
        return summaries

    def org_summary(self, tenant: str, since: datetime) -> OrgSummary:
        """Events per risk level, users with a high-risk event and filtered answers per model
        since ``since``; users per non-ok status now. ``events`` always has ``medium`` and
        ``high`` (0 when none)."""
        events = risk_events.c
        in_window = and_(events.tenant == tenant, events.at >= since)
        with self.db.transaction("summarising the organisation") as connection:
            by_level = connection.execute(
                select(events.level, func.count()).where(in_window).group_by(events.level)
            ).all()
            users_with_high = connection.execute(
                select(func.count(events.safety_id.distinct())).where(in_window, events.level == "high")
            ).scalar_one()
            by_status = connection.execute(
                select(user_states.c.status, func.count())
                .where(user_states.c.tenant == tenant, user_states.c.status != "ok")
                .group_by(user_states.c.status)
            ).all()
            answers = filtered_answers.c
            by_model = connection.execute(
                select(answers.model, func.count())
                .where(answers.tenant == tenant, answers.at >= since)
                .group_by(answers.model)
            ).all()
        counts = {"medium": 0, "high": 0}
        counts.update({str(level): int(count) for level, count in by_level})
        return OrgSummary(
            tenant=tenant,
            since=since,
            events=counts,
            users_with_high=int(users_with_high),
            users_by_status={str(status): int(count) for status, count in by_status},
            filtered_answers={str(model): int(count) for model, count in by_model},
        )


__all__ = ["SqlLedger"]
