"""Risk levels and the per-user escalation ladder.

Every gateway request gets a risk level (:func:`risk_level`). Medium- and high-risk
requests go into the user's ledger in the store; :class:`RiskLedger` turns the ledger
into a place on the ladder ``ok -> warned -> throttled -> blocked -> review`` and
enforces it before the next request (:meth:`RiskLedger.admit`). Points decay as events
leave the window; blocks and throttles end after their duration; ``review`` waits for
an admin (:meth:`RiskLedger.clear`). A cleared user starts from zero points.

Several replicas can share one ledger (PostgreSQL): two replicas escalating the same
user at once write the same state, so no lock is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from seawall.clock import Clock, utc_now
from seawall.errors import PermissionDeniedError, RateLimitError
from seawall.gateway.ratelimit import Count
from seawall.ratelimit import refused
from seawall.settings import RateLimit, RiskSettings
from seawall.store.base import AdmissionStore, Hit, HitsByStatus, RiskEvent, RiskLevel, UserState, UserStatus

#: The ladder, lowest first.
LADDER: tuple[UserStatus, ...] = ("ok", "warned", "throttled", "blocked", "review")
#: Who the gateway writes as ``updated_by``.
GATEWAY = "gateway"


def risk_level(
    *, flagged: bool, scores: Iterable[float] = (), injection: bool = False, medium_score: float
) -> RiskLevel:
    """``high`` if moderation flagged anything, ``medium`` if a score reached ``medium_score``
    or untrusted content was flagged as an injection, else ``low``."""
    if flagged:
        return "high"
    if injection or any(score >= medium_score for score in scores):
        return "medium"
    return "low"


def _in_force(state: UserState | None, now: datetime) -> UserState | None:
    """``state`` unless it is ok or has run out (:meth:`~seawall.store.base.UserState.in_force_at`)."""
    return state if state is not None and state.in_force_at(now) else None


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "an admin clears it"


def _span(seconds: int) -> str:
    if seconds % 86_400 == 0 and seconds > 172_800:
        return f"{seconds // 86_400} days"
    if seconds % 3_600 == 0:
        return f"{seconds // 3_600} h"
    return f"{seconds} s"


def _rungs(settings: RiskSettings) -> list[tuple[UserStatus, float]]:
    """The ladder's rungs that are set, with the points each starts at."""
    rungs: tuple[tuple[UserStatus, float | None], ...] = (
        ("warned", settings.warn_at),
        ("throttled", settings.throttle_at),
        ("blocked", settings.block_at),
        ("review", settings.review_at),
    )
    return [(status, at) for status, at in rungs if at is not None]


class RiskStore(AdmissionStore, Protocol):
    """The roles the escalation ladder needs: the ledger, counters for throttled users, and a
    request's admission in one call."""


class RiskLedger:
    """Reads and moves users along the escalation ladder; all methods are synchronous (store calls)."""

    def __init__(self, store: RiskStore, settings: RiskSettings, *, clock: Clock = utc_now) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._rungs = _rungs(settings)

    # ------------------------------------------------------------------ before a request

    def standing(self, tenant: str, safety_id: str) -> UserState | None:
        """The user's state if it is still in force (an expired block or throttle is None)."""
        return _in_force(self.store.get_user(tenant, safety_id), self.clock())

    def admit(self, tenant: str, safety_id: str, *, throttle: RateLimit | None = None) -> UserState | None:
        """Raise 403 for a blocked user or one under review, 429 for a throttled one over its
        rate (``throttle``: the user's trust tier's, else ``risk.throttle``); otherwise return the
        state in force (e.g. ``warned``) or None."""
        state, _ = self.admit_counting(tenant, safety_id, throttle=throttle)
        return state

    def admit_counting(
        self,
        tenant: str,
        safety_id: str,
        counts: Sequence[Count] = (),
        *,
        throttle: RateLimit | None = None,
    ) -> tuple[UserState | None, RateLimitError | None]:
        """:meth:`admit`, and the request counted against ``counts`` (the rate limits) if the user's
        standing lets it on, all in one store call (:meth:`~seawall.store.base.AdmissionStore.admit`:
        one transaction, the standing read fresh, never cached). Raises what :meth:`admit` raises
        (then nothing is counted against ``counts``); returns the state in force and the first
        count's refusal (429), or None, for the caller to raise where it reports rate limits."""
        now = self.clock()
        limit = throttle if throttle is not None else self.settings.throttle
        throttled = Hit(f"throttle:{tenant}:{safety_id}", limit.requests, limit.window_s)
        limits = tuple(count.hit for count in counts)
        # Blocked or under review: no hits (refused below, nothing counted). A table, not code, so
        # a store can pick from it where the standing is kept (Redis: one round trip).
        hits_for = HitsByStatus(now, limits, {"warned": limits, "throttled": (throttled, *limits)})
        admission = self.store.admit(tenant, safety_id, hits_for, now)
        state = _in_force(admission.state, now)
        results = admission.results
        if state is None:
            pass
        elif state.status == "review":
            raise PermissionDeniedError(
                f"This user is blocked until an administrator reviews the account: {state.reason}.",
                code="user_under_review",
            )
        elif state.status == "blocked":
            raise PermissionDeniedError(
                f"This user is blocked until {_when(state.until)}: {state.reason}.", code="user_blocked"
            )
        elif state.status == "throttled":
            refusal = (
                f"This user is throttled to {limit.requests} requests per {_span(limit.window_s)} "
                f"until {_when(state.until)}: {state.reason}."
            )
            error = refused(results[0], refusal, code="user_throttled")
            if error is not None:
                raise error
            results = results[1:]
        for count, result in zip(counts, results, strict=False):
            if (error := count.refused(result)) is not None:
                return state, error
        return state, None

    # ------------------------------------------------------------------ after a request

    def points(self, tenant: str, safety_id: str) -> tuple[float, int, int]:
        """(points, high events, medium events) in the window, counted since an admin's last clear."""
        return self._points(tenant, safety_id, self.store.get_user(tenant, safety_id), self.clock())

    def _points(
        self, tenant: str, safety_id: str, state: UserState | None, now: datetime
    ) -> tuple[float, int, int]:
        since = now - timedelta(seconds=self.settings.window_s)
        if state is not None and state.status == "ok" and state.updated_at > since:
            since = state.updated_at
        high = self.store.count_events(tenant, safety_id, "high", since)
        medium = self.store.count_events(tenant, safety_id, "medium", since)
        return high + medium / self.settings.medium_per_high, high, medium

    def record(
        self,
        tenant: str,
        safety_id: str,
        level: RiskLevel,
        request_id: str,
        categories: Iterable[str] = (),
        *,
        thresholds: RiskSettings | None = None,
    ) -> UserState | None:
        """Log a medium/high event and escalate if the user reached a higher rung; the new state or None.

        ``thresholds``: the user's trust tier's rungs (warn_at ... review_at), instead of the settings'."""
        if level == "low":
            return None
        rungs = self._rungs if thresholds is None else _rungs(thresholds)
        now = self.clock()
        event = RiskEvent(tenant, safety_id, level, now, request_id, tuple(sorted(categories)))
        self.store.record_event(event)
        state = self.store.get_user(tenant, safety_id)  # read once: for the points and the rung
        points, high, medium = self._points(tenant, safety_id, state, now)
        reached = [status for status, at in rungs if points >= at]
        if not reached:
            return None
        target = reached[-1]
        current = _in_force(state, now)
        if current is not None and LADDER.index(current.status) >= LADDER.index(target):
            return None
        durations = {
            "warned": self.settings.window_s,
            "throttled": self.settings.throttle_s,
            "blocked": self.settings.block_s,
        }
        until = now + timedelta(seconds=durations[target]) if target in durations else None
        reason = (
            f"{points:g} risk points in the last {_span(self.settings.window_s)} "
            f"({high} high-risk and {medium} medium-risk requests)"
        )
        state = UserState(tenant, safety_id, target, until, reason, now, GATEWAY)
        self.store.set_user(state)
        return state

    # ------------------------------------------------------------------ admin

    def clear(self, tenant: str, safety_id: str, by: str, reason: str = "cleared by an admin") -> UserState:
        """Back to ``ok`` with zero points (earlier events no longer count)."""
        state = UserState(tenant, safety_id, "ok", None, reason, self.clock(), by)
        self.store.set_user(state)
        return state

    def block(
        self, tenant: str, safety_id: str, by: str, reason: str, duration_s: int | None = None
    ) -> UserState:
        """Block a user by hand, for ``duration_s`` or (None) until cleared."""
        now = self.clock()
        if duration_s is None:
            state = UserState(tenant, safety_id, "review", None, reason, now, by)
        else:
            until = now + timedelta(seconds=duration_s)
            state = UserState(tenant, safety_id, "blocked", until, reason, now, by)
        self.store.set_user(state)
        return state


__all__ = ["GATEWAY", "LADDER", "RiskLedger", "risk_level"]
