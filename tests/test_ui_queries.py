"""The dashboard's aggregates and the audit search, on every store (memory, SQLite, PostgreSQL), against
figures counted by hand from records the gateway's own AuditRecord built."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from seawall.errors import ContentPolicyError
from seawall.gateway.audit import decision
from seawall.gateway.runner import shadow_entry
from seawall.store import Store
from seawall.store.base import AuditQuery
from seawall.ui import queries
from test_ui_support import audit_record, safety_id, seed

NOW = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def store(any_store: Store) -> Store:
    """Each store implementation: in memory, SQLite, PostgreSQL (tests/postgres_server.py)."""
    return any_store


def _seed_day(store: Store) -> None:
    current = NOW.replace(minute=0)  # the 12:00 bucket
    earlier = current - 2 * HOUR  # the 10:00 bucket
    records = [
        *(audit_record(at=current + timedelta(minutes=m), user=safety_id(1)) for m in (1, 2, 3)),
        audit_record(
            at=current + timedelta(minutes=4),
            user=safety_id(2),
            outcome="refused_input",
            risk="high",
            categories=["violence", "harassment"],
        ),
        audit_record(
            at=current + timedelta(minutes=5),
            user=safety_id(2),
            outcome="filtered_output",
            risk="high",
            categories=["sexual"],
            step="output_moderation",
        ),
        *(audit_record(at=earlier + timedelta(minutes=m), user=safety_id(3)) for m in (10, 20)),
        audit_record(
            at=earlier + timedelta(minutes=30),
            user=safety_id(3),
            risk="medium",
            categories=["prompt_injection"],
            step="untrusted_content",
        ),
        audit_record(
            at=earlier + timedelta(minutes=40), user=safety_id(2), outcome="user_blocked", risk=None
        ),
        audit_record(
            at=earlier + timedelta(minutes=50), user=safety_id(4), outcome="rate_limited", risk=None
        ),
        # Outside the 24 h range, and another tenant's record inside it.
        audit_record(
            at=NOW - 25 * HOUR,
            user=safety_id(1),
            outcome="refused_input",
            risk="high",
            categories=["violence"],
        ),
        audit_record(
            at=earlier + timedelta(minutes=5),
            tenant="other",
            user=safety_id(9),
            risk="high",
            categories=["hate"],
            outcome="refused_input",
        ),
    ]
    seed(store, records)


def test_dashboard_counts_requests_risk_blocks_and_flag_rates_per_bucket(store: Store) -> None:
    _seed_day(store)
    data = queries.dashboard(store, "24h", tenant="default", now=NOW)
    assert data.bucket_s == 3600 and len(data.buckets) == 24
    assert data.buckets[-1] == int(NOW.replace(minute=0).timestamp())
    last, earlier = 23, 21
    assert data.requests[last] == 5 and data.requests[earlier] == 5 and sum(data.requests) == 10
    assert data.risk["high"][last] == 2 and data.risk["low"][last] == 3
    assert data.risk["medium"][earlier] == 1 and data.risk["low"][earlier] == 2
    assert data.blocks["refused input"][last] == 1 and data.blocks["filtered output"][last] == 1
    assert data.blocks["user blocked"][earlier] == 1 and data.blocks["rate limited"][earlier] == 1
    assert data.flag_rate["violence"][last] == pytest.approx(0.2)
    assert data.flag_rate["sexual"][last] == pytest.approx(0.2)
    assert data.flag_rate["prompt_injection"][earlier] == pytest.approx(0.2)
    assert data.flag_rate["violence"][earlier] == 0.0
    assert data.flag_rate["violence"][0] is None  # no request in that hour: no rate
    assert data.flag_totals == {"harassment": 1, "prompt_injection": 1, "sexual": 1, "violence": 1}
    assert data.totals == {"requests": 10, "high": 2, "medium": 1, "blocked": 4, "flagged_categories": 4}


def test_dashboard_over_all_tenants_and_other_ranges(store: Store) -> None:
    _seed_day(store)
    everyone = queries.dashboard(store, "24h", now=NOW)
    assert sum(everyone.requests) == 11 and everyone.flag_totals["hate"] == 1
    week = queries.dashboard(store, "7d", tenant="default", now=NOW)
    assert week.bucket_s == 6 * 3600 and sum(week.requests) == 11  # the 25-hour-old record too
    assert week.flag_totals["violence"] == 2
    hour = queries.dashboard(store, "1h", tenant="default", now=NOW)
    assert hour.bucket_s == 120 and sum(hour.requests) == 5
    empty = queries.dashboard(store, "24h", tenant="nobody", now=NOW)
    assert sum(empty.requests) == 0 and empty.flag_rate == {}


def test_audit_search_pages_and_filters(store: Store) -> None:
    start = NOW - 5 * HOUR
    records = [
        audit_record(
            at=start + timedelta(minutes=i),
            user=safety_id(i % 3),
            request_id=f"req_{i:03d}",
            outcome="refused_input" if i % 10 == 0 else "ok",
        )
        for i in range(120)
    ]
    seed(store, records)
    first = store.audit_page(AuditQuery(page_size=50))
    assert (first.total, first.pages, len(first.rows)) == (120, 3, 50)
    assert [r["request_id"] for r in first.rows[:2]] == ["req_119", "req_118"]  # newest first
    third = store.audit_page(AuditQuery(page=3, page_size=50))
    assert len(third.rows) == 20 and third.rows[-1]["request_id"] == "req_000"

    refused = store.audit_page(AuditQuery(outcome="refused_input"))
    assert refused.total == 12 and {r["outcome"] for r in refused.rows} == {"refused_input"}
    user = safety_id(1)
    by_prefix = store.audit_page(AuditQuery(safety_id=user[:10]))
    assert by_prefix.total == 40 and {r["safety_identifier"] for r in by_prefix.rows} == {user}
    exact = store.audit_page(AuditQuery(safety_id=user))
    assert exact.total == 40
    window = AuditQuery(since=start + timedelta(minutes=10), until=start + timedelta(minutes=20))
    assert store.audit_page(window).total == 10  # [10, 20)
    both = AuditQuery(outcome="refused_input", safety_id=safety_id(0), until=start + HOUR)
    assert [r["request_id"] for r in store.audit_page(both).rows] == ["req_030", "req_000"]
    assert store.get_audit("req_007")["request_id"] == "req_007"  # type: ignore[index]
    assert store.get_audit("req_nope") is None
    assert store.audit_tenants() == ["default"]


def test_audit_search_finds_what_shadow_controls_would_have_done(store: Store) -> None:
    """``AuditQuery(shadow=True)``: only records with a ``shadow`` entry (gateway.modes)."""
    start = NOW - 5 * HOUR
    records = [audit_record(at=start + timedelta(minutes=i), request_id=f"req_{i:03d}") for i in range(6)]
    for index in (1, 4):
        would = [decision("input_moderation", "refuse", ["violence"], {"violence": 0.93})]
        entry = shadow_entry("input_moderation", would, error=ContentPolicyError("refused"))
        records[index]["shadow"] = [entry]
    seed(store, records)
    found = store.audit_page(AuditQuery(shadow=True))
    assert found.total == 2 and [r["request_id"] for r in found.rows] == ["req_004", "req_001"]
    assert found.rows[0]["shadow"][0]["would"] == "refuse"
    assert queries.shadow_decisions(found.rows[0]) == ["input_moderation: refuse"]
    narrowed = AuditQuery(shadow=True, since=start + timedelta(minutes=2))
    assert [r["request_id"] for r in store.audit_page(narrowed).rows] == ["req_004"]
    assert store.audit_page(AuditQuery()).total == 6


def test_tenants_are_listed_once_each_in_order_up_to_the_limit(store: Store) -> None:
    assert store.audit_tenants() == []
    names = ["zeta", "acme", "beta", "acme", "zeta", "mu"]
    records = [audit_record(at=NOW - timedelta(minutes=n), tenant=name) for n, name in enumerate(names)]
    records.append({**audit_record(at=NOW), "tenant": None})  # a request refused before its key was read
    seed(store, records)
    assert store.audit_tenants() == ["acme", "beta", "mu", "zeta"]
    assert store.audit_tenants(limit=2) == ["acme", "beta"]
    assert store.audit_tenants(limit=0) == []


def test_the_cache_reuses_settled_buckets_and_reads_new_records(store: Store) -> None:
    _seed_day(store)
    ticks = [0.0]
    cache = queries.DashboardCache(settle_s=600, ttl_s=3600, clock=lambda: ticks[0])
    first = queries.dashboard(store, "24h", tenant="default", now=NOW, cache=cache)
    plain = queries.dashboard(store, "24h", tenant="default", now=NOW)
    assert first.to_json() == plain.to_json()

    # A new record in the current (unsettled) hour shows at once; one written late into a
    # settled hour waits for the cache's time-to-live.
    current, settled = NOW.replace(minute=0), NOW.replace(minute=0) - 2 * HOUR
    seed(store, [audit_record(at=current + timedelta(minutes=20), user=safety_id(5))])
    seed(store, [audit_record(at=settled + timedelta(minutes=1), user=safety_id(5))])
    again = queries.dashboard(store, "24h", tenant="default", now=NOW, cache=cache)
    assert again.requests[23] == first.requests[23] + 1
    assert again.requests[21] == first.requests[21]
    ticks[0] = 3601.0
    later = queries.dashboard(store, "24h", tenant="default", now=NOW, cache=cache)
    assert later.requests[21] == first.requests[21] + 1
    assert later.to_json() == queries.dashboard(store, "24h", tenant="default", now=NOW).to_json()
