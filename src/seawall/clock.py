"""The time source of everything that counts in windows (rate limits, the risk ledger, review
claims): timezone-aware UTC, replaceable in tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: Returns "now"; the default is :func:`utc_now`.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = ["Clock", "utc_now"]
