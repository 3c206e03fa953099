"""The store's contract: the same tests on every implementation of its roles.

Each test runs three times (the ``any_store`` fixture of tests/postgres_server.py): on the
in-memory store (``memory://``), on a SQLite file and on a real PostgreSQL server, so
:class:`~seawall.store.memory.MemoryStore` and :class:`~seawall.store.sql.SqlStore` answer alike
for keys, rate-limit counters, the risk ledger, the audit trail (and its hash chain), review items
and reports, and the web UI's accounts. What only SQL has (migrations, WAL, pool, processes) stays
in tests/test_store.py and its neighbours.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from seawall.clock import Clock as ClockType
from seawall.errors import InvalidRequestError, NotFoundError
from seawall.store import (
    AuditQuery,
    FilteredAnswer,
    MemoryStore,
    Report,
    ReviewItem,
    RiskEvent,
    SessionRow,
    SqlStore,
    Store,
    StoredResponse,
    UserState,
)
from seawall.store.base import Hit, HitsByStatus, OperatorToken
from seawall.store.chain import verify

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2025, 5, 1, 9, 0, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def with_clock(store: Store, clock: ClockType) -> Store:
    """A store of the same kind (on the same database, for SQL) whose clock is ``clock``."""
    if isinstance(store, SqlStore):
        return SqlStore(store.engine, clock=clock)
    assert isinstance(store, MemoryStore)
    return MemoryStore(clock=clock)


# ----------------------------------------------------------------------------- keys, counters, ledger, audit


def test_keys_create_list_find_revoke(store: Store) -> None:
    first = store.create_key("web", "acme", "hash-1", "sk-aaaaa")
    second = store.create_key("batch", "acme", "hash-2", "sk-bbbbb")
    other = store.create_key("web", "globex", "hash-3", "sk-ccccc")
    assert first.id.startswith("key_") and len(first.id) == 16 and first.active
    assert len({first.id, second.id, other.id}) == 3
    assert first.created_at.tzinfo is not None

    assert [key.id for key in store.list_keys("acme")] == [first.id, second.id]
    assert {key.id for key in store.list_keys()} == {first.id, second.id, other.id}

    found = store.find_key("hash-2")
    assert found is not None and found.id == second.id and found.tenant == "acme"
    assert store.find_key("no-such-hash") is None

    revoked = store.revoke_key(first.id)
    assert revoked.revoked_at is not None and not revoked.active
    again = store.revoke_key(first.id)  # idempotent: the first revocation time stays
    assert again.revoked_at == revoked.revoked_at
    assert [key.id for key in store.list_keys("acme")] == [second.id]
    assert [key.id for key in store.list_keys("acme", include_revoked=True)] == [first.id, second.id]
    found_revoked = store.find_key("hash-1")
    assert found_revoked is not None and found_revoked.revoked_at == revoked.revoked_at

    with pytest.raises(NotFoundError) as missing:
        store.revoke_key("key_000000000000")
    assert missing.value.status_code == 404
    with pytest.raises(InvalidRequestError):
        store.create_key("dup", "acme", "hash-2", "sk-ddddd")


def test_find_key_touches_last_used_at_at_most_once_a_minute(store: Store) -> None:
    clock = Clock(T0)
    clocked = with_clock(store, clock)
    key = clocked.create_key("web", "acme", "hash-t", "sk-ttttt")
    assert key.last_used_at is None

    def stored_last_used() -> datetime | None:
        return next(k for k in clocked.list_keys(include_revoked=True) if k.id == key.id).last_used_at

    found = clocked.find_key("hash-t")
    assert found is not None and found.last_used_at == T0
    assert stored_last_used() == T0
    clock.now = T0 + timedelta(seconds=30)
    found = clocked.find_key("hash-t")
    assert found is not None and found.last_used_at == T0  # within the minute: no write
    assert stored_last_used() == T0
    clock.now = T0 + timedelta(seconds=61)
    found = clocked.find_key("hash-t")
    assert found is not None and found.last_used_at == clock.now
    assert stored_last_used() == clock.now


# ----------------------------------------------------------------------------- rate limits


def test_hit_counts_up_to_the_limit_and_refused_hits_are_not_counted(store: Store) -> None:
    now = T0 + timedelta(seconds=15)  # a quarter into the 60 s window that starts at T0
    results = [store.hit("key:a", 3, 60, now) for _ in range(6)]
    assert [r.allowed for r in results] == [True, True, True, False, False, False]
    assert [r.count for r in results[:3]] == [1, 2, 3]
    assert all(r.count == 3 and r.retry_after_s > 0 for r in results[3:])
    assert all(r.reset_at == T0 + timedelta(seconds=60) and r.limit == 3 for r in results)
    assert results[0].retry_after_s == 0
    # Next window, halfway: the previous window weighs 3 * 0.5 = 1.5 (not 6: refusals were not counted).
    later = store.hit("key:a", 3, 60, T0 + timedelta(seconds=90))
    assert later.allowed and later.count == pytest.approx(2.5)
    assert not store.hit("key:a", 3, 60, T0 + timedelta(seconds=90)).allowed
    # Buckets are independent.
    assert store.hit("key:b", 3, 60, now).allowed


@pytest.mark.parametrize(
    ("seed_previous", "seed_current", "at_s"),
    [
        (0, 3, 15),  # this window is full: wait for the next one and the share to shrink
        (6, 0, 65),  # the previous window's share blocks: wait for it to shrink
        (2, 1, 70),  # both
    ],
)
def test_retry_after_is_when_a_hit_is_allowed_again(
    store: Store, seed_previous: int, seed_current: int, at_s: int
) -> None:
    limit, window = 3, 60
    bucket = f"retry:{seed_previous}:{seed_current}"
    start = T0 + timedelta(seconds=at_s // window * window)
    for _ in range(seed_previous):
        store.hit(bucket, 10, window, start - timedelta(seconds=1))
    for _ in range(seed_current):
        assert store.hit(bucket, limit, window, start).allowed
    now = T0 + timedelta(seconds=at_s)
    refused = store.hit(bucket, limit, window, now)
    assert not refused.allowed and refused.retry_after_s > 0
    retry = timedelta(seconds=refused.retry_after_s)
    too_soon = store.hit(bucket, limit, window, now + retry - timedelta(milliseconds=50))
    assert not too_soon.allowed
    assert store.hit(bucket, limit, window, now + retry).allowed


def test_hit_weights_the_previous_window(store: Store) -> None:
    for _ in range(4):
        assert store.hit("w", 4, 100, T0).allowed
    # 25 s into the next window the previous one weighs 4 * 0.75 = 3: one more hit fits.
    quarter = T0 + timedelta(seconds=125)
    assert store.hit("w", 4, 100, quarter).allowed
    assert not store.hit("w", 4, 100, quarter).allowed
    # At 75 %, it weighs 1: two more (current 1 + 2 + 1 = 4).
    three_quarters = T0 + timedelta(seconds=175)
    assert [store.hit("w", 4, 100, three_quarters).allowed for _ in range(3)] == [True, True, False]


def test_hit_rejects_a_nonsense_limit(store: Store) -> None:
    with pytest.raises(ValueError):
        store.hit("x", 0, 60, T0)
    with pytest.raises(ValueError):
        store.hit("x", 5, 0, T0)


def test_hit_is_atomic_across_threads(store: Store) -> None:
    allowed: list[bool] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(15):
                result = store.hit("threads", 40, 60, T0 + timedelta(seconds=10))
                with lock:
                    allowed.append(result.allowed)
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(allowed) == 90 and allowed.count(True) == 40


# ----------------------------------------------------------------------------- admission


def test_admit_reads_the_standing_and_counts_the_hits_it_names(store: Store) -> None:
    now = T0 + timedelta(seconds=15)
    # No standing in force: the user's limit; blocked (not in the table): nothing.
    hits = HitsByStatus(now, (Hit("user:acme:u1", 2, 60),), {})

    first = store.admit("acme", "u1", hits, now)
    assert first.state is None
    assert [(r.allowed, r.count) for r in first.results] == [(True, 1)]
    # A block written since (by any replica, the review desk or `seawall users`) is what the next
    # admission reads: no cache stands between them.
    blocked = UserState("acme", "u1", "blocked", T0 + timedelta(hours=1), "by hand", T0, "alice")
    store.set_user(blocked)
    second = store.admit("acme", "u1", hits, now)
    assert second.state == blocked and second.results == ()
    # Nothing was counted for the blocked request: the bucket still has one request in it.
    assert store.hit("user:acme:u1", 2, 60, now).count == 2
    cleared = UserState("acme", "u1", "ok", None, "cleared", T0 + timedelta(minutes=1), "alice")
    store.set_user(cleared)
    third = store.admit("acme", "u1", hits, now)
    assert third.state == cleared and [r.allowed for r in third.results] == [False]


def test_admit_stops_at_the_first_refused_hit(store: Store) -> None:
    now = T0 + timedelta(seconds=15)
    assert store.hit("full", 1, 60, now).allowed
    picked = HitsByStatus(now, (Hit("first", 5, 60), Hit("full", 1, 60), Hit("after", 5, 60)), {})
    admission = store.admit("acme", "u1", picked, now)
    assert [r.allowed for r in admission.results] == [True, False]
    assert admission.results[1].retry_after_s > 0 and admission.results[1].limit == 1
    # The refused hit and the one after it were not counted; the one before it was.
    assert store.hit("first", 5, 60, now).count == 2
    assert store.hit("after", 5, 60, now).count == 1
    assert store.admit("acme", "u2", HitsByStatus(now, (), {}), now).results == ()
    with pytest.raises(ValueError):
        store.admit("acme", "u1", HitsByStatus(now, (Hit("x", 0, 60),), {}), now)


def test_admit_is_atomic_across_threads(store: Store) -> None:
    allowed: list[bool] = []
    lock = threading.Lock()
    failures: list[BaseException] = []
    now = T0 + timedelta(seconds=10)
    picked = HitsByStatus(now, (Hit("admitted", 40, 60),), {})

    def worker() -> None:
        try:
            for _ in range(15):
                admission = store.admit("acme", "u1", picked, now)
                with lock:
                    allowed.extend(r.allowed for r in admission.results)
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(allowed) == 90 and allowed.count(True) == 40


def test_admit_by_status_counts_the_hits_of_the_standing_in_force(store: Store) -> None:
    """The table the risk ledger passes (HitsByStatus): a store may pick from it where the standing
    is kept (the Redis script). Each admission runs twice: on Redis the first after a change reads
    the database, the second is the script's own pick."""
    now = T0 + timedelta(seconds=15)
    user, throttle = Hit("user:acme:u1", 100, 60), Hit("throttle:acme:u1", 2, 60)
    table = HitsByStatus(now, (user,), {"warned": (user,), "throttled": (throttle, user)})

    def admitted() -> list[tuple[str, bool]]:
        """Which limits the admission counted (by their limit), and whether each allowed it."""
        results = store.admit("acme", "u1", table, now).results
        return [({2: "throttle", 100: "user"}[r.limit], r.allowed) for r in results]

    def standing(status: str, until: datetime | None) -> UserState:
        state = UserState("acme", "u1", status, until, "test", T0, "alice")  # type: ignore[arg-type]
        store.set_user(state)
        return state

    assert admitted() == admitted() == [("user", True)]  # no standing: the free hits
    later = now + timedelta(hours=1)
    warned = standing("warned", later)
    assert store.admit("acme", "u1", table, now).state == warned
    assert admitted() == [("user", True)]
    standing("throttled", later)  # counted against the throttle first, then the user's limit
    assert admitted() == admitted() == [("throttle", True), ("user", True)]
    assert admitted() == [("throttle", False)]  # refused by the throttle: the user's limit untouched
    for status in ("blocked", "review"):  # a blocked user uses none of their rate limit
        standing(status, later)
        assert admitted() == admitted() == []
        standing(status, None)
        assert admitted() == admitted() == []
    standing("blocked", now + timedelta(microseconds=1))  # in force to the microsecond
    assert admitted() == admitted() == []
    ended = standing("blocked", now)  # ended at `now`: no standing in force
    assert store.admit("acme", "u1", table, now).state == ended
    assert admitted() == [("user", True)]
    standing("ok", None)
    assert admitted() == [("user", True)]
    # The user's limit counted 9 requests (the throttle's refusal and the blocks counted none).
    assert store.hit("user:acme:u1", 100, 60, now).count == 10
    assert store.hit("throttle:acme:u1", 2, 60, now).count == 2  # full: refused, still 2


# ----------------------------------------------------------------------------- risk ledger


def _event(safety_id: str, level: str, minutes: int, tenant: str = "acme") -> RiskEvent:
    return RiskEvent(
        tenant=tenant,
        safety_id=safety_id,
        level=level,  # type: ignore[arg-type]
        at=T0 + timedelta(minutes=minutes),
        request_id=f"req-{safety_id}-{level}-{minutes}",
        categories=("violence",),
    )


def test_ledger_counts_events_in_a_time_window(store: Store) -> None:
    for minutes in (0, 10, 20, 30):
        store.record_event(_event("u1", "high", minutes))
    store.record_event(_event("u1", "medium", 25))
    store.record_event(_event("u1", "high", 25, tenant="globex"))
    store.record_event(_event("u2", "high", 25))
    assert store.count_events("acme", "u1", "high", T0) == 4
    assert store.count_events("acme", "u1", "high", T0 + timedelta(minutes=10)) == 3  # inclusive
    assert store.count_events("acme", "u1", "high", T0 + timedelta(minutes=11)) == 2
    assert store.count_events("acme", "u1", "medium", T0) == 1
    assert store.count_events("acme", "u1", "high", T0 + timedelta(hours=1)) == 0
    assert store.count_events("globex", "u1", "high", T0) == 1
    assert store.count_events("acme", "nobody", "high", T0) == 0


def test_user_state_set_get_replace(store: Store) -> None:
    assert store.get_user("acme", "u1") is None
    warned = UserState("acme", "u1", "warned", None, "2 high-risk requests", T0)
    store.set_user(warned)
    assert store.get_user("acme", "u1") == warned
    assert store.get_user("globex", "u1") is None
    blocked = UserState(
        "acme", "u1", "blocked", T0 + timedelta(hours=1), "5 high-risk", T0 + timedelta(minutes=5), "alice"
    )
    store.set_user(blocked)
    got = store.get_user("acme", "u1")
    assert got == blocked and got.until is not None and got.until.tzinfo is not None


def test_list_users_orders_by_risk_and_filters_by_status(store: Store) -> None:
    since = T0 + timedelta(minutes=5)
    store.record_event(_event("old", "high", 0))  # before ``since``: not listed
    for minutes in (10, 11, 12):
        store.record_event(_event("worst", "high", minutes))
    store.record_event(_event("mid", "high", 10))
    store.record_event(_event("mid", "medium", 40))
    store.record_event(_event("mild", "medium", 10))
    store.record_event(_event("other-tenant", "high", 10, tenant="globex"))
    store.set_user(UserState("acme", "worst", "blocked", None, "too many", T0))
    store.set_user(UserState("acme", "quiet-but-blocked", "review", None, "admin", T0))
    store.set_user(UserState("acme", "ok-user", "ok", None, "cleared", T0))  # ok, no events: not listed

    users = store.list_users("acme", since=since)
    assert [u.safety_id for u in users] == ["worst", "mid", "mild", "quiet-but-blocked"]
    worst = users[0]
    assert (worst.high, worst.medium, worst.tenant) == (3, 0, "acme")
    assert worst.last_event_at == T0 + timedelta(minutes=12)
    assert worst.state is not None and worst.state.status == "blocked"
    assert (users[1].high, users[1].medium, users[1].state) == (1, 1, None)
    assert users[1].last_event_at == T0 + timedelta(minutes=40)
    assert users[3].last_event_at is None and users[3].state is not None

    assert [u.safety_id for u in store.list_users("acme", since=since, status="review")] == [
        "quiet-but-blocked"
    ]
    assert [u.safety_id for u in store.list_users("acme", since=since, status="ok")] == ["mid", "mild"]
    assert [u.safety_id for u in store.list_users("acme", since=since, limit=2)] == ["worst", "mid"]
    assert store.list_users("nobody", since=since) == []


def test_org_summary(store: Store) -> None:
    since = T0 + timedelta(minutes=5)
    store.record_event(_event("a", "high", 0))  # before the window
    store.record_event(_event("a", "high", 10))
    store.record_event(_event("a", "high", 11))
    store.record_event(_event("b", "high", 10))
    store.record_event(_event("c", "medium", 10))
    store.record_event(_event("z", "high", 10, tenant="globex"))
    store.set_user(UserState("acme", "a", "blocked", None, "", T0))
    store.set_user(UserState("acme", "b", "warned", None, "", T0))
    store.set_user(UserState("acme", "c", "warned", None, "", T0))
    store.set_user(UserState("acme", "d", "ok", None, "", T0))
    summary = store.org_summary("acme", since)
    assert summary.tenant == "acme" and summary.since == since
    assert summary.events == {"high": 3, "medium": 1}
    assert summary.users_with_high == 2
    assert summary.users_by_status == {"blocked": 1, "warned": 2}
    empty = store.org_summary("nobody", since)
    assert (
        empty.events == {"high": 0, "medium": 0} and empty.users_with_high == 0 and not empty.users_by_status
    )


# ----------------------------------------------------------------------------- audit


def _record(request_id: str, minutes: int, **fields: object) -> dict[str, object]:
    record: dict[str, object] = {
        "time": (T0 + timedelta(minutes=minutes)).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "tenant": "acme",
        "safety_identifier": "u1",
        "outcome": "ok",
        "decisions": [{"step": "input_moderation", "action": "allow", "scores": {"violence": 0.01}}],
        "latency_ms": {"total": 12.5},
    }
    record.update(fields)
    return record


def _unlinked(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in record.items() if k not in ("prev_hash", "hash")} for record in records]


def test_audit_write_and_search(store: Store) -> None:
    store.write_audit(_record("r1", 1))
    store.write_audit(_record("r2", 3, outcome="refused_input"))
    store.write_audit(_record("r3", 2, safety_identifier="u2"))
    store.write_audit(_record("r4", 4, tenant="globex"))
    assert [r["request_id"] for r in store.search_audit()] == ["r4", "r2", "r3", "r1"]  # newest first
    assert [r["request_id"] for r in store.search_audit("acme")] == ["r2", "r3", "r1"]
    assert [r["request_id"] for r in store.search_audit("acme", safety_id="u1")] == ["r2", "r1"]
    assert [r["request_id"] for r in store.search_audit(outcome="refused_input")] == ["r2"]
    since = T0 + timedelta(minutes=2)
    assert [r["request_id"] for r in store.search_audit("acme", since=since)] == ["r2", "r3"]
    assert [r["request_id"] for r in store.search_audit(limit=2)] == ["r4", "r2"]
    # Stored records carry their hash-chain links (tests/test_audit_chain.py checks them).
    assert _unlinked(store.search_audit("acme", safety_id="u1", outcome="ok")) == [_record("r1", 1)]

    # A request_id stored already: the later record replaces it.
    store.write_audit(_record("r1", 5, outcome="filtered_output"))
    assert [r["request_id"] for r in store.search_audit("acme")] == ["r1", "r2", "r3"]
    assert _unlinked(store.search_audit(outcome="ok", tenant="acme")) == [
        _record("r3", 2, safety_identifier="u2")
    ]
    assert store.search_audit(outcome="filtered_output")[0]["time"] == _record("r1", 5)["time"]


def test_user_tiers_are_each_user_s_latest_tier(store: Store) -> None:
    store.write_audit(_record("t1", 1, tier="anonymous"))
    store.write_audit(_record("t2", 3, tier="email_verified"))
    store.write_audit(_record("t3", 2, tier="signed_in"))  # written later, but older
    store.write_audit(_record("t4", 4))  # no tiers in the policy then: does not hide the last tier
    store.write_audit(_record("t5", 1, safety_identifier="u2", tier="anonymous"))
    store.write_audit(_record("t6", 9, safety_identifier="u2", tier="id_verified", tenant="globex"))
    store.write_audit(_record("t5", 5, safety_identifier="u2", tier="signed_in"))  # replaces t5
    assert store.user_tiers("acme", ["u1", "u2", "u3"]) == {"u1": "email_verified", "u2": "signed_in"}
    assert store.user_tiers("globex", ["u1", "u2"]) == {"u2": "id_verified"}
    assert store.user_tiers("acme", []) == {}


def test_audit_record_needs_a_request_id(store: Store) -> None:
    with pytest.raises(ValueError):
        store.write_audit({"tenant": "acme"})


# ----------------------------------------------------------------------------- CLI


def test_prune_forgets_windows_no_hit_reads(store: Store) -> None:
    for offset in range(5):
        store.hit(f"p{offset}", 1, 10, T0 + timedelta(seconds=10 * offset))
    # At T0 + 50 s, windows that ended by T0 + 40 s are no one's previous window any more.
    assert store.prune(T0 + timedelta(seconds=50)) == 4
    assert store.prune(T0 + timedelta(seconds=50)) == 0
    # The window still read counts: p4's one hit fills its limit of 1.
    assert not store.hit("p4", 1, 10, T0 + timedelta(seconds=45)).allowed
    assert store.hit("p0", 1, 10, T0 + timedelta(seconds=45)).allowed


def test_filtered_answers_count_per_model_in_the_org_summary(store: Store) -> None:
    for minutes, model in ((1, "m1"), (2, "m1"), (3, "m2"), (-10, "m1")):
        store.record_filtered_answer(
            FilteredAnswer("acme", model, T0 + timedelta(minutes=minutes), f"r{minutes}", ("sexual",))
        )
    store.record_filtered_answer(FilteredAnswer("globex", "m1", T0, "g1"))
    assert store.org_summary("acme", T0).filtered_answers == {"m1": 2, "m2": 1}


def test_the_audit_chain_links_each_tenant_and_verifies(store: Store) -> None:
    for number in range(5):
        store.write_audit({"request_id": f"a{number}", "tenant": "acme", "outcome": "ok", "decisions": []})
        store.write_audit({"request_id": f"g{number}", "tenant": "globex", "latency_ms": {"total": 1.5}})
    store.write_audit({"request_id": "n0", "tenant": None, "outcome": "ok"})
    store.write_audit({"request_id": "a1", "tenant": "acme", "outcome": "filtered_output"})  # replaces a1
    chain = list(store.audit_chain())
    assert len(chain) == 12
    result = verify(chain)
    assert result.intact and result.records == 12 and result.tenants == 3
    acme = [record for _, record in chain if record["tenant"] == "acme"]
    assert acme[0]["prev_hash"] is None
    assert all(after["prev_hash"] == before["hash"] for before, after in itertools.pairwise(acme))
    assert verify(store.audit_chain("globex")).records == 5
    assert [r["request_id"] for r in store.search_audit("acme")].count("a1") == 1
    # An edited record breaks the chain at that record.
    edited = [(where, dict(record)) for where, record in chain]
    edited[3][1]["outcome"] = "ok-edited"
    broken = verify(edited).broken
    assert broken is not None and broken.number == 4


def test_audit_pages_filter_by_api_and_tier(store: Store) -> None:
    """``api`` (a record from before the field counts as chat completions) and ``tier``."""
    kinds = [("responses", "pro"), ("chat.completions", "pro"), (None, None), ("responses", "anonymous")]
    for n, (api, tier) in enumerate(kinds):
        record: dict[str, Any] = {"request_id": f"api_{n}", "tenant": "acme", "outcome": "ok"}
        record["time"] = (T0 + timedelta(minutes=n)).isoformat()
        record.update({"api": api} if api else {}, **({"tier": tier} if tier else {}))
        store.write_audit(record)

    def ids(query: AuditQuery) -> list[str]:
        return [r["request_id"] for r in store.audit_page(query).rows]

    assert ids(AuditQuery(api="responses")) == ["api_3", "api_0"]
    assert ids(AuditQuery(api="chat.completions")) == ["api_2", "api_1"]
    assert ids(AuditQuery(tier="pro")) == ["api_1", "api_0"]
    assert ids(AuditQuery(tier="pro", api="responses")) == ["api_0"]
    assert store.audit_page(AuditQuery(tier="nobody")).total == 0


def test_audit_pages_records_lookups_and_tenants(store: Store) -> None:
    users = ["ab12" + "0" * 60, "ab34" + "0" * 60, "cd56" + "0" * 60]
    for n in range(7):
        store.write_audit(
            {
                "request_id": f"req_{n}",
                "time": (T0 + timedelta(minutes=n)).isoformat(),
                "tenant": "zeta" if n == 6 else "acme",
                "safety_identifier": users[n % 3],
                "outcome": "refused_input" if n % 2 else "ok",
            }
        )
    first = store.audit_page(AuditQuery(page_size=3))
    assert (first.total, first.pages, first.page) == (7, 3, 1)
    assert [r["request_id"] for r in first.rows] == ["req_6", "req_5", "req_4"]
    last = store.audit_page(AuditQuery(page=3, page_size=3))
    assert [r["request_id"] for r in last.rows] == ["req_0"]
    assert store.audit_page(AuditQuery(outcome="refused_input")).total == 3
    assert store.audit_page(AuditQuery(safety_id="ab")).total == 5  # a hex prefix
    assert store.audit_page(AuditQuery(safety_id=users[1])).total == 2
    assert store.audit_page(AuditQuery(tenant="zeta")).total == 1
    window = AuditQuery(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
    assert [r["request_id"] for r in store.audit_page(window).rows] == ["req_3", "req_2"]
    got = store.get_audit("req_2")
    assert got is not None and got["request_id"] == "req_2" and got["hash"]
    assert store.get_audit("req_nope") is None
    assert store.audit_exists("req_2") and not store.audit_exists("req_nope")
    assert store.audit_tenants() == ["acme", "zeta"] and store.audit_tenants(limit=1) == ["acme"]


def test_audit_counts_per_bucket_outcome_risk_and_category(store: Store) -> None:
    def record(n: int, minutes: int, **fields: Any) -> dict[str, Any]:
        return {
            "request_id": f"c{n}",
            "time": (T0 + timedelta(minutes=minutes)).isoformat(),
            "tenant": "acme",
            "outcome": "ok",
            **fields,
        }

    flagged = [
        {"step": "input", "categories": ["violence", "hate"]},
        {"step": "out", "categories": ["violence"]},
    ]
    store.write_audit(record(1, 1, risk="low"))
    store.write_audit(record(2, 2, risk="high", outcome="refused_input", decisions=flagged))
    store.write_audit(record(3, 70, risk="high", decisions=[{"categories": ["sexual"]}]))
    store.write_audit(record(4, 75, tenant="globex", risk="medium"))
    store.write_audit(record(5, 200))  # outside the window
    start = int(T0.timestamp())
    outcomes, flags = store.audit_counts(T0, T0 + timedelta(hours=2), 3600, "acme")
    assert sorted(outcomes, key=str) == sorted(
        [(start, "ok", "low", 1), (start, "refused_input", "high", 1), (start + 3600, "ok", "high", 1)],
        key=str,
    )
    assert sorted(flags) == [(start, "hate", 1), (start, "violence", 1), (start + 3600, "sexual", 1)]
    everyone, _ = store.audit_counts(T0, T0 + timedelta(hours=2), 3600)
    assert sum(n for *_, n in everyone) == 4


# ----------------------------------------------------------------------------- review items and reports


def review_item(
    review_id: str = "rev_1", *, created: datetime = T1, domain: str | None = "health"
) -> ReviewItem:
    return ReviewItem(
        id=review_id,
        tenant="acme",
        request_id=f"swreq-{review_id}",
        status="pending",
        created_at=created,
        request={"model": "m", "messages": [{"role": "user", "content": "What dose of ibuprofen?"}]},
        draft={
            "id": "chatcmpl-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "200 mg"}}],
        },
        completion_id="chatcmpl-x",
        domain=domain,
        reasons=("domain:health",),
        scores={"self-harm": 0.31},
        sources=({"title": "leaflet", "text": "Adults: 200-400 mg"},),
        notes="pharmacy app",
        webhook="https://hooks.example.com/x",
    )


def test_create_get_and_list_the_queue_in_order(store: Store) -> None:
    store.create_review(review_item("rev_b", created=T1 + timedelta(seconds=5), domain="law"))
    store.create_review(review_item("rev_a"))
    got = store.get_review("rev_a")
    assert got == review_item("rev_a")  # every field round-trips, times stay UTC-aware
    assert store.get_review("rev_missing") is None
    assert [i.id for i in store.list_reviews(status="pending")] == ["rev_a", "rev_b"]
    assert [i.id for i in store.list_reviews(domain="law")] == ["rev_b"]
    assert [i.id for i in store.list_reviews(tenant="other")] == []
    assert store.review_counts() == {"pending": 2, "approved": 0, "edited": 0, "rejected": 0}
    [held] = store.list_review_events("rev_a")
    assert (held.action, held.actor, held.detail) == ("held", "gateway", {"reasons": ["domain:health"]})


def test_the_queue_filters_by_user_and_reason_in_the_store_before_its_limit(store: Store) -> None:
    # Thirty older items that match neither filter, then the ones that do: the limit counts matches
    # only, so no cap on what is read can hide them.
    for n in range(30):
        older = review_item(f"rev_o{n:02d}", created=T1 + timedelta(seconds=n))
        store.create_review(replace(older, safety_id="sid-bob", reasons=("domain:health",)))
    later = T1 + timedelta(minutes=5)
    held = {
        "rev_m1": ("sid-ann", ("uncertain:harassment",)),
        "rev_m2": ("sid-ann", ("declared", "uncertain:violence")),
        "rev_m3": ("sid-bob", ("uncertain:harassment", "domain:law")),
        "rev_m4": ("sid-cy", ('rule:50%_off \\ "quoted" é',)),
    }
    for n, (review_id, (safety_id, reasons)) in enumerate(held.items()):
        item = review_item(review_id, created=later + timedelta(seconds=n))
        store.create_review(replace(item, safety_id=safety_id, reasons=reasons))

    def ids(**filters: Any) -> list[str]:
        return [item.id for item in store.list_reviews(limit=5, **filters)]

    assert ids(safety_id="sid-ann") == ["rev_m1", "rev_m2"]
    assert ids(reason="uncertain") == ["rev_m1", "rev_m2", "rev_m3"]  # a kind
    assert ids(reason="uncertain:harassment") == ["rev_m1", "rev_m3"]  # a whole reason
    assert ids(reason="uncertain:harass") == [] and ids(reason="uncertain:") == []  # never a part
    assert ids(reason="declared", safety_id="sid-ann") == ["rev_m2"]
    assert ids(reason="domain:law", safety_id="sid-bob") == ["rev_m3"]
    assert ids(reason="domain") == ["rev_o00", "rev_o01", "rev_o02", "rev_o03", "rev_o04"]
    assert ids(reason="uncertain", status="approved") == []
    # LIKE's wildcards, backslashes, quotes and other letters are the reason's own characters
    assert ids(reason='rule:50%_off \\ "quoted" é') == ["rev_m4"]
    assert ids(reason="rule:50%") == [] and ids(reason="uncertain:_arassment") == []
    assert ids(reason="r%") == [] and ids(safety_id="sid-%") == []


def test_claim_is_exclusive_until_it_expires_then_the_item_is_claimable_again(store: Store) -> None:
    store.create_review(review_item())
    claimed = store.claim_review("rev_1", "ann", T1, ttl_s=60)
    assert claimed is not None and claimed.claimed_by == "ann"
    assert claimed.claim_expires_at == T1 + timedelta(seconds=60)
    assert store.claim_review("rev_1", "bob", T1 + timedelta(seconds=59), ttl_s=60) is None
    assert store.list_reviews(claimable_at=T1 + timedelta(seconds=59)) == []
    # ann extends her own claim
    assert store.claim_review("rev_1", "ann", T1 + timedelta(seconds=30), ttl_s=60) is not None
    assert store.claim_review("rev_1", "bob", T1 + timedelta(seconds=80), ttl_s=60) is None
    # expired: back in the queue, and bob takes it
    later = T1 + timedelta(seconds=91)
    assert [i.id for i in store.list_reviews(claimable_at=later)] == ["rev_1"]
    taken = store.claim_review("rev_1", "bob", later, ttl_s=60)
    assert taken is not None and taken.claimed_by == "bob"
    # ann's expired claim no longer lets her decide
    assert store.decide_review("rev_1", "ann", "approve", later) is None
    assert [e.action for e in store.list_review_events("rev_1")] == ["held", "claimed", "claimed", "claimed"]


def test_decide_only_by_the_claimer_once_and_audited(store: Store) -> None:
    store.create_review(review_item())
    assert store.decide_review("rev_1", "ann", "approve", T1) is None  # not claimed
    store.claim_review("rev_1", "ann", T1, ttl_s=60)
    assert store.decide_review("rev_1", "bob", "reject", T1, reason="no") is None
    decided = store.decide_review(
        "rev_1", "ann", "edit", T1 + timedelta(seconds=5), edited_text="Ask a pharmacist."
    )
    assert decided is not None
    assert (decided.status, decided.decision, decided.edited_text, decided.decided_by) == (
        "edited",
        "edit",
        "Ask a pharmacist.",
        "ann",
    )
    assert decided.decided_at == T1 + timedelta(seconds=5)
    assert store.decide_review("rev_1", "ann", "approve", T1 + timedelta(seconds=6)) is None  # decided once
    assert store.claim_review("rev_1", "ann", T1 + timedelta(seconds=7), ttl_s=60) is None
    trail = store.list_review_events("rev_1")
    assert [(e.action, e.actor) for e in trail] == [
        ("held", "gateway"),
        ("claimed", "ann"),
        ("edited", "ann"),
    ]
    assert trail[-1].detail == {"edited_chars": len("Ask a pharmacist.")}
    assert store.review_counts()["edited"] == 1 and store.review_counts()["pending"] == 0


def test_release_gives_the_item_back(store: Store) -> None:
    store.create_review(review_item())
    assert store.release_review("rev_1", "ann", T1) is None
    store.claim_review("rev_1", "ann", T1, ttl_s=60)
    released = store.release_review("rev_1", "ann", T1 + timedelta(seconds=1))
    assert released is not None and released.claimed_by is None
    assert store.claim_review("rev_1", "bob", T1 + timedelta(seconds=2), ttl_s=60) is not None


def test_many_threads_claiming_one_item_exactly_one_wins(store: Store) -> None:
    store.create_review(review_item())
    reviewers = [f"reviewer-{n}" for n in range(16)]
    barrier = threading.Barrier(len(reviewers))
    winners: list[str] = []
    errors: list[BaseException] = []

    def claim(name: str) -> None:
        try:
            barrier.wait()
            if store.claim_review("rev_1", name, T1, ttl_s=300) is not None:
                winners.append(name)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(name,)) for name in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(winners) == 1
    stored = store.get_review("rev_1")
    assert stored is not None and stored.claimed_by == winners[0]
    assert [e.actor for e in store.list_review_events("rev_1") if e.action == "claimed"] == winners


def user_report(report_id: str, *, created: datetime = T1, category: str = "wrong") -> Report:
    return Report(
        id=report_id,
        tenant="acme",
        response_id="swreq-abc",
        category=category,  # type: ignore[arg-type]
        status="new",
        created_at=created,
        updated_at=created,
        comment="The dose is wrong.",
        contact="user@example.com",
        reporter="hash1",
        request_id="swreq-abc",
    )


def test_reports_are_found_by_reporter(store: Store) -> None:
    store.create_report(user_report("rpt_a"))
    store.create_report(replace(user_report("rpt_b", created=T1 + timedelta(minutes=1)), reporter="hash2"))
    store.create_report(user_report("rpt_c", created=T1 + timedelta(minutes=2)))
    assert [r.id for r in store.list_reports(reporter="hash1")] == ["rpt_c", "rpt_a"]
    assert [r.id for r in store.list_reports(reporter="hash2")] == ["rpt_b"]
    assert store.list_reports(reporter="nobody") == []


def test_a_key_keeps_its_scope(store: Store) -> None:
    widget = store.create_key("widget", "acme", "hash-fb", "sw-fffff", scope="feedback")
    app = store.create_key("app", "acme", "hash-all", "sw-aaaaa")
    assert (widget.scope, app.scope) == ("feedback", "all")
    found = store.find_key("hash-fb")
    assert found is not None and found.scope == "feedback"
    assert {k.id: k.scope for k in store.list_keys("acme")} == {widget.id: "feedback", app.id: "all"}


def test_reports_triage_with_notes_and_trail(store: Store) -> None:
    store.create_report(user_report("rpt_1"))
    store.create_report(user_report("rpt_2", created=T1 + timedelta(minutes=1), category="harmful"))
    assert store.get_report("rpt_1") == user_report("rpt_1")
    assert [r.id for r in store.list_reports()] == ["rpt_2", "rpt_1"]  # newest first
    assert [r.id for r in store.list_reports(category="harmful")] == ["rpt_2"]
    moved = store.triage_report(
        "rpt_1", "ann", T1 + timedelta(hours=1), status="investigating", note="checking"
    )
    assert moved is not None and moved.status == "investigating" and moved.updated_by == "ann"
    noted = store.triage_report("rpt_1", "bob", T1 + timedelta(hours=2), status=None, note="asked the vendor")
    assert noted is not None and noted.status == "investigating"
    assert [(n["by"], n["text"], n["status"]) for n in noted.notes] == [
        ("ann", "checking", "investigating"),
        ("bob", "asked the vendor", "investigating"),
    ]
    assert store.triage_report("rpt_missing", "ann", T1, status="resolved", note=None) is None
    assert store.report_counts() == {"new": 1, "investigating": 1, "resolved": 0, "dismissed": 0}
    assert [r.id for r in store.list_reports(status="new")] == ["rpt_2"]
    trail = store.list_review_events("rpt_1")
    assert [(e.action, e.actor) for e in trail] == [
        ("reported", "user"),
        ("triaged", "ann"),
        ("triaged", "bob"),
    ]
    assert trail[1].detail == {"from": "new", "to": "investigating", "note": "checking"}


def test_concurrent_notes_are_all_kept(store: Store) -> None:
    store.create_report(user_report("rpt_1"))
    barrier = threading.Barrier(8)

    def note(n: int) -> None:
        barrier.wait()
        store.triage_report("rpt_1", f"r{n}", T1, status=None, note=f"note {n}")

    threads = [threading.Thread(target=note, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.get_report("rpt_1")
    assert final is not None
    assert sorted(n["text"] for n in final.notes) == sorted(f"note {n}" for n in range(8))


def test_desk_counts_held_decided_waiting_and_reports(store: Store) -> None:
    store.create_review(review_item("rev_old", created=T1 - timedelta(hours=2)))
    store.create_review(review_item("rev_a", created=T1 + timedelta(minutes=5)))
    store.create_review(review_item("rev_b", created=T1 + timedelta(minutes=10)))
    store.claim_review("rev_a", "ann", T1 + timedelta(minutes=6), ttl_s=600)
    store.decide_review("rev_a", "ann", "approve", T1 + timedelta(minutes=8))
    store.claim_review("rev_b", "bob", T1 + timedelta(minutes=11), ttl_s=600)
    store.create_report(user_report("rpt_1", created=T1 + timedelta(minutes=20)))
    store.create_report(user_report("rpt_2", created=T1 - timedelta(days=3)))
    now = T1 + timedelta(minutes=15)
    counts = store.desk_counts(T1, T1 + timedelta(hours=1), 3600, now)
    start = int(T1.timestamp())
    assert counts.held == {start: 2}
    assert set(counts.decided) == {start} and counts.decided[start][0] == 1
    assert counts.decided[start][1] == pytest.approx(180, abs=0.01)
    assert counts.durations == [pytest.approx(180, abs=0.01)]
    assert counts.waiting_before == 1
    assert (counts.pending, counts.claimed) == (2, 1)
    assert counts.oldest_pending == T1 - timedelta(hours=2)
    assert counts.reports == [(start, "new", 1)]
    assert counts.report_totals == {"new": 2}
    assert store.desk_counts(T1, T1 + timedelta(hours=1), 3600, now, tenant="other").held == {}


# ----------------------------------------------------------------------------- UI accounts


def test_ui_accounts_rows(store: Store) -> None:
    created = store.create_account("alice", "admin", "hash-a", T0)
    assert created.name == "alice" and created.disabled_at is None and created.created_at == T0
    with pytest.raises(InvalidRequestError):
        store.create_account("alice", "reviewer", "hash-b", T0)
    store.create_account("bob", "reviewer", "hash-b", T0)
    assert [a.name for a in store.list_accounts()] == ["alice", "bob"]
    later = T0 + timedelta(minutes=5)
    changed = store.update_account("bob", later, role="admin", password_hash="hash-c")
    assert (changed.role, changed.password_hash, changed.updated_at) == ("admin", "hash-c", later)
    assert store.update_account("bob", later, disabled=True).disabled_at == later
    assert store.update_account("bob", later, disabled=False).disabled_at is None
    with pytest.raises(NotFoundError):
        store.update_account("carol", later, role="admin")
    store.record_sign_in("alice", later)
    signed = store.get_account("alice")
    assert signed is not None and signed.last_login_at == later and signed.updated_at == T0
    assert store.get_account("carol") is None


def test_ui_sessions_rows(store: Store) -> None:
    store.create_account("alice", "reviewer", "hash-a", T0)

    def session(token: str, subject: str, source: str, at: datetime, hours: int = 1) -> SessionRow:
        return SessionRow(
            token, subject, source, "reviewer", subject, f"csrf-{token}", at, at + timedelta(hours=hours), at
        )

    store.start_session(session("t1", "alice", "local", T0))
    store.start_session(session("t2", "e@x.org", "oidc", T0))
    found = store.find_session("t1")
    assert found is not None and found[0].subject == "alice" and found[1] is not None
    assert found[1].name == "alice"
    oidc = store.find_session("t2")
    assert oidc is not None and oidc[1] is None
    store.touch_session("t1", T0 + timedelta(minutes=2))
    touched = store.find_session("t1")
    assert touched is not None and touched[0].last_seen_at == T0 + timedelta(minutes=2)
    # A new session forgets the ones that expired by its start.
    store.start_session(session("t3", "alice", "local", T0 + timedelta(hours=2)))
    assert store.find_session("t1") is None and store.find_session("t2") is None
    store.start_session(session("t4", "alice", "local", T0 + timedelta(hours=2)))
    assert store.end_sessions("alice", "local") == 2
    store.start_session(session("t5", "bob", "local", T0 + timedelta(hours=2)))
    found = store.find_session("t5")
    assert found is not None and found[1] is None  # no such account
    store.end_session("t5")
    assert store.find_session("t5") is None


def test_the_ui_account_rules_work_on_every_store(store: Store) -> None:
    from argon2 import PasswordHasher

    from seawall.ui.accounts import AccountStore

    accounts = AccountStore(store, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    accounts.create("alice", "admin", "alice-password-1")
    assert accounts.verify("alice", "alice-password-1") is not None
    assert accounts.verify("alice", "wrong") is None
    token, _ = accounts.start_session("alice", "local", "admin", "Alice", max_age_s=3600)
    assert accounts.session(token, idle_s=600) is not None
    accounts.disable("alice")
    assert accounts.session(token, idle_s=600) is None


# ----------------------------------------------------------------------------- Responses API responses


def _response(
    response_id: str, *, created: datetime, days: int = 30, key_id: str | None = "key_a"
) -> StoredResponse:
    return StoredResponse(
        id=response_id,
        tenant="acme",
        key_id=key_id,
        created_at=created,
        expires_at=created + timedelta(days=days),
        input_items=[{"role": "user", "content": [{"type": "input_text", "text": "Grüße, 世界"}]}],
        response={"id": response_id, "object": "response", "output": [{"type": "message", "n": 1.5}]},
    )


def test_responses_are_kept_read_back_replaced_and_deleted(store: Store) -> None:
    first = _response("resp_1", created=T0)
    store.save_response(first)
    store.save_response(_response("resp_2", created=T0, key_id=None))
    found = store.get_response("resp_1", T0 + timedelta(days=1))
    assert found == first
    assert found.created_at.tzinfo is not None and found.expires_at == T0 + timedelta(days=30)
    other = store.get_response("resp_2", T0)
    assert other is not None and other.key_id is None
    assert store.get_response("resp_missing", T0) is None

    # Saving an id again replaces it (the whole row).
    changed = StoredResponse(**{**first.__dict__, "response": {"id": "resp_1", "status": "completed"}})
    store.save_response(changed)
    again = store.get_response("resp_1", T0)
    assert again is not None and again.response == {"id": "resp_1", "status": "completed"}

    # What is read back is a copy: changing it changes nothing stored.
    again.input_items.append({"role": "user", "content": "more"})
    kept = store.get_response("resp_1", T0)
    assert kept is not None and len(kept.input_items) == 1

    assert store.delete_response("resp_1") is True
    assert store.delete_response("resp_1") is False
    assert store.get_response("resp_1", T0) is None
    assert store.get_response("resp_2", T0) is not None


def test_responses_expire_and_are_pruned(store: Store) -> None:
    store.save_response(_response("resp_short", created=T0, days=1))
    store.save_response(_response("resp_long", created=T0, days=60))
    # Expired: no longer read back, even before any prune.
    assert store.get_response("resp_short", T0 + timedelta(hours=23)) is not None
    assert store.get_response("resp_short", T0 + timedelta(days=1)) is None
    assert store.prune_responses(T0 + timedelta(days=2)) == 1
    assert store.prune_responses(T0 + timedelta(days=2)) == 0
    assert store.get_response("resp_long", T0 + timedelta(days=2)) is not None
    assert store.delete_response("resp_short") is False


# ----------------------------------------------------------------------------- selection and the CLI


def test_memory_urls_open_the_in_memory_store(tmp_path: Path) -> None:
    from seawall.cli import app as cli_app
    from seawall.settings import StoreSettings
    from seawall.store import open_store

    store = open_store(StoreSettings(url="memory://", migrate="check"))
    assert isinstance(store, MemoryStore)
    store.ping()
    config = tmp_path / "seawall.yaml"
    config.write_text("store:\n  url: memory://\n", encoding="utf-8")
    result = CliRunner().invoke(cli_app, ["audit", "verify", "store", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "memory://: intact (0 records" in result.output
    from seawall.store.cli import app as db_app

    for command in ("upgrade", "current"):
        done = CliRunner().invoke(db_app, [command, "--config", str(config)])
        assert done.exit_code == 0 and "no schema" in done.output, done.output


def test_an_admin_breaks_a_live_claim_and_the_trail_says_who(store: Store) -> None:
    store.create_review(review_item())
    store.claim_review("rev_1", "ann", T1, ttl_s=600)
    # only a live claim of the named claimer can be broken
    assert store.release_review("rev_1", "bob", T1 + timedelta(seconds=5), by="admin") is None
    broken = store.release_review("rev_1", "ann", T1 + timedelta(seconds=5), by="admin")
    assert broken is not None and broken.claimed_by is None and broken.status == "pending"
    last = store.list_review_events("rev_1")[-1]
    assert (last.action, last.actor, last.detail) == ("claim_broken", "admin", {"claimed_by": "ann"})
    assert [i.id for i in store.list_reviews(claimable_at=T1 + timedelta(seconds=6))] == ["rev_1"]


# ----------------------------------------------------------------------------- operator tokens


def test_operator_tokens_are_kept_hashed_listed_found_and_revoked(store: Store) -> None:
    first = OperatorToken("tok_000000000001", "prometheus", "admin", "h" * 64, "swop-abc", T0, "alice")
    second = OperatorToken(
        "tok_000000000002", "triage bot", "reviewer", "g" * 64, "swop-def", T0 + timedelta(seconds=1), "cli"
    )
    assert store.create_token(first) == first
    store.create_token(second)
    with pytest.raises(InvalidRequestError):
        store.create_token(OperatorToken("tok_000000000003", "dup", "admin", "h" * 64, "x", T0, "alice"))
    assert [t.id for t in store.list_tokens()] == [first.id, second.id]
    found = store.find_token("h" * 64, T1)
    assert found is not None and found.role == "admin" and found.last_used_at == T1
    assert store.find_token("n" * 64, T1) is None
    revoked = store.revoke_token(first.id, T1)
    assert revoked.revoked_at == T1 and not revoked.active
    assert store.revoke_token(first.id, T1 + timedelta(hours=1)).revoked_at == T1  # idempotent
    assert [t.id for t in store.list_tokens()] == [second.id]
    assert [t.id for t in store.list_tokens(include_revoked=True)] == [first.id, second.id]
    again = store.find_token("h" * 64, T1)
    assert again is not None and not again.active  # found, and the caller refuses it
    with pytest.raises(NotFoundError):
        store.revoke_token("tok_missing", T1)
