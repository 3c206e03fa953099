"""The rate limits' sliding-window arithmetic, shared by every counter store so all count alike.

A bucket's count is the current fixed window's hits plus the previous window's, weighted by how
much of the previous window the sliding window still covers. Plain Python: the SQL store runs it
around one conditional upsert (:mod:`seawall.store.sql.counters`), the in-memory store under a lock.
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime

from seawall.clock import as_utc
from seawall.store.base import RateLimitResult

#: Expired rate-limit windows are deleted at most this often (seconds of the callers' clock).
PRUNE_EVERY_S = 60.0
#: Tolerance for float noise in the sliding-window arithmetic.
_EPSILON = 1e-9


def windows(now: datetime, limit: int, window_s: int) -> tuple[float, int, float]:
    """``now`` in epoch seconds, the current fixed window's start and the previous window's
    weight now (1 at the window's start, 0 at its end); ValueError for a nonsense limit."""
    if limit < 1 or window_s < 1:
        raise ValueError(f"a rate limit needs limit >= 1 and window_s >= 1 (got {limit}, {window_s})")
    stamp = as_utc(now).timestamp()
    start = math.floor(stamp / window_s) * window_s
    return stamp, start, 1.0 - (stamp - start) / window_s


def room(limit: int, previous: int, weight: float) -> int:
    """The most hits the current window may hold with one more counted."""
    return math.floor(limit - previous * weight + _EPSILON)


def retry_after(limit: int, current: int, previous: int, weight: float, window_s: int) -> float:
    """Seconds until one more hit fits, if nothing else is counted meanwhile (rounded up to 1 ms).

    ``weight`` is the previous window's share now (1 at the window's start, 0 at its end).
    """
    elapsed = (1.0 - weight) * window_s
    if current + 1 <= limit and previous > 0:
        # Room comes back in this window as the previous window's share shrinks.
        fits_at = window_s * (1.0 - (limit - 1 - current) / previous)
        wait = fits_at - elapsed
    else:
        # This window is full: wait for the next, where this window's count is the shrinking share.
        share = max(0.0, 1.0 - (limit - 1) / current) if current > 0 else 0.0
        wait = (window_s - elapsed) + window_s * share
    return max(0.001, math.ceil(wait * 1000 - _EPSILON) / 1000)


def result(
    allowed: bool, limit: int, current: int, previous: int, weight: float, start: int, window_s: int
) -> RateLimitResult:
    """What :meth:`hit` answers, from the windows' counts after the hit (or at refusal)."""
    reset_at = datetime.fromtimestamp(start + window_s, UTC)
    count = current + previous * weight
    if allowed:
        return RateLimitResult(True, count, limit, reset_at, 0.0)
    return RateLimitResult(
        False, count, limit, reset_at, retry_after(limit, current, previous, weight, window_s)
    )


class PruneClock:
    """When expired windows were last deleted, so ``hit`` prunes at most every PRUNE_EVERY_S."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pruned_at = -math.inf

    def pruned(self, stamp: float) -> None:
        with self._lock:
            self._pruned_at = max(self._pruned_at, stamp)

    def due(self, stamp: float) -> bool:
        """Whether a prune is due at ``stamp`` (and, if so, note it as done)."""
        with self._lock:
            if stamp - self._pruned_at < PRUNE_EVERY_S:
                return False
            self._pruned_at = stamp
            return True


__all__ = ["PRUNE_EVERY_S", "PruneClock", "result", "retry_after", "room", "windows"]
