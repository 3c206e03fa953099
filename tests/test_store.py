"""The store on real databases: a SQLite file and a real PostgreSQL server (the ``store_url`` and
``store`` fixtures of tests/postgres_server.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, select
from typer.testing import CliRunner

from conftest import free_port
from seawall.errors import InvalidRequestError, NotFoundError, StoreError
from seawall.settings import StoreSettings
from seawall.store import (
    RiskEvent,
    SqlStore,
    UserState,
    current_revision,
    head_revision,
    make_engine,
    open_store,
    upgrade,
)
from seawall.store.cli import app as db_app
from seawall.store.schema import metadata, rate_counters
from seawall.ui.accounts import metadata as ui_metadata

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TABLES = {"api_keys", "rate_counters", "risk_events", "user_states", "audit_events"}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# ----------------------------------------------------------------------------- migrations


def test_migrations_take_an_empty_database_to_head_matching_the_schema(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        assert current_revision(engine) is None
        assert not TABLES & set(inspect(engine).get_table_names())
        assert upgrade(engine) == head_revision()
        assert current_revision(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) >= TABLES
        # The hand-written migrations create exactly what schema.py (and the UI's accounts) declare.
        declared = MetaData()
        for table in [*metadata.tables.values(), *ui_metadata.tables.values()]:
            table.to_metadata(declared)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, declared) == []
        # A second upgrade is a no-op.
        assert upgrade(engine) == head_revision()
    finally:
        engine.dispose()


def test_check_mode_refuses_an_unmigrated_database_then_accepts_it(store_url: str) -> None:
    with pytest.raises(StoreError) as refused:
        open_store(StoreSettings(url=store_url, migrate="check"))
    assert "seawall db upgrade" in refused.value.message
    assert refused.value.status_code == 503
    assert upgrade(store_url) == head_revision()
    store = open_store(StoreSettings(url=store_url, migrate="check"))
    try:
        store.ping()
    finally:
        store.close()


def test_sqlite_path_expands_home_and_creates_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    store = open_store(StoreSettings(url="sqlite:///~/deep/er/seawall.db"))
    try:
        assert (tmp_path / "deep" / "er" / "seawall.db").is_file()
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    finally:
        store.close()


def test_in_memory_sqlite_works_across_threads() -> None:
    store = open_store(StoreSettings(url="sqlite://"))
    try:
        results: list[bool] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(10):
                allowed = store.hit("mem", 25, 60, T0).allowed
                with lock:
                    results.append(allowed)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results.count(True) == 25
    finally:
        store.close()


def test_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    port = free_port()
    url = f"postgresql+psycopg://seawall:Very-Secret-Pw9@127.0.0.1:{port}/seawall"
    with pytest.raises(StoreError) as failed:
        open_store(StoreSettings(url=url))
    message = failed.value.message
    assert "Very-Secret-Pw9" not in message and "Very-Secret-Pw9" not in str(failed.value)
    assert f"127.0.0.1:{port}" in message and "***" in message
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


def test_unsupported_url_scheme_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store(StoreSettings(url="mysql://u:p@localhost/db"))


# ----------------------------------------------------------------------------- keys


def test_keys_create_list_find_revoke(store: SqlStore) -> None:
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


def test_find_key_touches_last_used_at_at_most_once_a_minute(store: SqlStore) -> None:
    clock = Clock(T0)
    clocked = SqlStore(store.engine, clock=clock)
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


def test_hit_counts_up_to_the_limit_and_refused_hits_are_not_counted(store: SqlStore) -> None:
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
    store: SqlStore, seed_previous: int, seed_current: int, at_s: int
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


def test_hit_weights_the_previous_window(store: SqlStore) -> None:
    for _ in range(4):
        assert store.hit("w", 4, 100, T0).allowed
    # 25 s into the next window the previous one weighs 4 * 0.75 = 3: one more hit fits.
    quarter = T0 + timedelta(seconds=125)
    assert store.hit("w", 4, 100, quarter).allowed
    assert not store.hit("w", 4, 100, quarter).allowed
    # At 75 %, it weighs 1: two more (current 1 + 2 + 1 = 4).
    three_quarters = T0 + timedelta(seconds=175)
    assert [store.hit("w", 4, 100, three_quarters).allowed for _ in range(3)] == [True, True, False]


def test_hit_rejects_a_nonsense_limit(store: SqlStore) -> None:
    with pytest.raises(ValueError):
        store.hit("x", 0, 60, T0)
    with pytest.raises(ValueError):
        store.hit("x", 5, 0, T0)


def test_old_windows_are_pruned(store: SqlStore) -> None:
    # 10 s windows starting 10 s apart, all within one prune interval of the first hit.
    for offset in range(5):
        store.hit(f"p{offset}", 5, 10, T0 + timedelta(seconds=10 * offset))

    def buckets() -> list[str]:
        with store.engine.connect() as connection:
            return sorted(connection.execute(select(rate_counters.c.bucket)).scalars())

    assert buckets() == ["p0", "p1", "p2", "p3", "p4"]
    # At T0 + 50 s, windows that ended by T0 + 40 s are no one's previous window any more.
    assert store.prune(T0 + timedelta(seconds=50)) == 4
    assert buckets() == ["p4"]
    # hit() prunes by itself now and then: a hit an hour later clears the rest.
    store.hit("fresh", 5, 10, T0 + timedelta(hours=1))
    assert buckets() == ["fresh"]


def test_hit_is_atomic_across_threads(store: SqlStore) -> None:
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


def test_ledger_counts_events_in_a_time_window(store: SqlStore) -> None:
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


def test_user_state_set_get_replace(store: SqlStore) -> None:
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


def test_list_users_orders_by_risk_and_filters_by_status(store: SqlStore) -> None:
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


def test_org_summary(store: SqlStore) -> None:
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


def test_audit_write_and_search(store: SqlStore) -> None:
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


def test_audit_record_needs_a_request_id(store: SqlStore) -> None:
    with pytest.raises(ValueError):
        store.write_audit({"tenant": "acme"})


# ----------------------------------------------------------------------------- CLI


def test_db_cli_upgrade_and_current(tmp_path: Path) -> None:
    database = tmp_path / "cli" / "seawall.db"
    config = tmp_path / "seawall.yaml"
    config.write_text(f"store:\n  url: sqlite:///{database}\n", encoding="utf-8")
    runner = CliRunner()

    before = runner.invoke(db_app, ["current", "--config", str(config)])
    assert before.exit_code == 1, before.output
    assert "none" in before.output and head_revision() in before.output

    upgraded = runner.invoke(db_app, ["upgrade", "--config", str(config)])
    assert upgraded.exit_code == 0, upgraded.output
    assert head_revision() in upgraded.output
    assert current_revision(f"sqlite:///{database}") == head_revision()

    after = runner.invoke(db_app, ["current", "-c", str(config)])
    assert after.exit_code == 0, after.output
    assert "up to date" in after.output


def test_db_cli_reports_an_unreachable_database(tmp_path: Path) -> None:
    config = tmp_path / "seawall.yaml"
    config.write_text(
        "store:\n  url: postgresql+psycopg://u:Hidden-Pw-77@127.0.0.1:1/seawall\n", encoding="utf-8"
    )
    result = CliRunner().invoke(db_app, ["upgrade", "--config", str(config)])
    assert result.exit_code == 2
    assert "Hidden-Pw-77" not in result.output and "store failed" in result.output
