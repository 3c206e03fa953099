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

from conftest import refusing_port
from seawall.errors import StoreError
from seawall.settings import StoreSettings
from seawall.store import (
    SqlStore,
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
    with refusing_port() as port, pytest.raises(StoreError) as failed:
        open_store(
            StoreSettings(url=f"postgresql+psycopg://seawall:Very-Secret-Pw9@127.0.0.1:{port}/seawall")
        )
    message = failed.value.message
    assert "Very-Secret-Pw9" not in message and "Very-Secret-Pw9" not in str(failed.value)
    assert f"127.0.0.1:{port}" in message and "***" in message
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


def test_unsupported_url_scheme_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store(StoreSettings(url="mysql://u:p@localhost/db"))


# ----------------------------------------------------------------------------- keys


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
