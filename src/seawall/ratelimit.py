"""Counting a request against a rate limit kept in the store, and refusing it (429) when full.

The gateway's per-key and per-user limits (:class:`seawall.gateway.ratelimit.RateLimiter`) and the
review's limit on user reports count the same way, through :func:`enforce`.
"""

from __future__ import annotations

import math
from datetime import datetime

from seawall.errors import RateLimitError
from seawall.store.base import CounterStore, RateLimitResult


def enforce(
    store: CounterStore,
    bucket: str,
    requests: int,
    window_s: int,
    now: datetime,
    refusal: str,
    *,
    code: str | None = None,
) -> None:
    """Count one request in ``bucket`` (at most ``requests`` per ``window_s``); when it is full,
    429 with ``refusal`` and the time to wait (also the Retry-After header)."""
    error = refused(store.hit(bucket, requests, window_s, now), refusal, code=code)
    if error is not None:
        raise error


def refused(result: RateLimitResult, refusal: str, *, code: str | None = None) -> RateLimitError | None:
    """The 429 for a hit its bucket refused (``refusal`` and the time to wait); None if it was counted."""
    if result.allowed:
        return None
    wait = math.ceil(result.retry_after_s)
    return RateLimitError(f"{refusal} Retry in {wait} s.", retry_after=result.retry_after_s, code=code)


__all__ = ["enforce", "refused"]
