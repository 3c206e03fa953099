"""The UI's accounts and sessions on real databases (SQLite file, PostgreSQL), its hand-written
migration, and the ``seawall accounts`` commands."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine, inspect, select
from typer.testing import CliRunner

from seawall.errors import InvalidRequestError, NotFoundError, StoreError
from seawall.settings import StoreSettings
from seawall.store import SqlStore, make_engine, open_store
from seawall.store.migrate import MIGRATIONS as _MIGRATIONS_DIR
from seawall.store.migrate import upgrade
from seawall.ui.accounts import AccountStore, metadata, ui_accounts, ui_sessions
from seawall.ui.cli import accounts_app

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'seawall.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    opened = open_store(StoreSettings(url=store_url))
    metadata.create_all(opened.engine)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(store: SqlStore, clock: Clock) -> AccountStore:
    return AccountStore(store, clock=clock)


# ---------------------------------------------------------------------------------- accounts


def test_passwords_are_stored_as_argon2_hashes_and_verified(accounts: AccountStore, store: SqlStore) -> None:
    created = accounts.create("alice", "admin", "correct horse battery")
    assert (created.name, created.role, created.active) == ("alice", "admin", True)
    with store.engine.connect() as connection:
        stored = connection.execute(select(ui_accounts.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored

    assert accounts.verify("alice", "correct horse battery") is not None
    assert accounts.verify("alice", "correct horse batterY") is None
    assert accounts.verify("nobody", "correct horse battery") is None
    assert accounts.get("alice").last_login_at == T0  # type: ignore[union-attr]


def test_names_roles_and_duplicates_are_checked(accounts: AccountStore) -> None:
    accounts.create("rob.reviewer@example.org", "reviewer", "pw-long-enough-1")
    with pytest.raises(InvalidRequestError, match="exists already"):
        accounts.create("rob.reviewer@example.org", "admin", "another-password")
    with pytest.raises(InvalidRequestError, match="account name"):
        accounts.create("rob smith", "reviewer", "pw-long-enough-1")
    with pytest.raises(InvalidRequestError, match="unknown role"):
        accounts.create("carol", "superuser", "pw-long-enough-1")
    with pytest.raises(InvalidRequestError, match="unknown role"):
        accounts.set_role("rob.reviewer@example.org", "root")
    with pytest.raises(NotFoundError):
        accounts.set_role("nobody", "admin")
    assert [a.name for a in accounts.list_accounts()] == ["rob.reviewer@example.org"]


def test_a_disabled_account_cannot_sign_in_and_loses_its_sessions(accounts: AccountStore) -> None:
    accounts.create("alice", "admin", "correct horse battery")
    token, _ = accounts.start_session("alice", "local", "admin", "alice", max_age_s=3600)
    assert accounts.session(token, idle_s=3600) is not None

    accounts.disable("alice")
    assert accounts.verify("alice", "correct horse battery") is None
    assert accounts.session(token, idle_s=3600) is None

    accounts.enable("alice")
    assert accounts.verify("alice", "correct horse battery") is not None
    assert accounts.session(token, idle_s=3600) is None  # ended, not suspended


def test_sessions_expire_go_idle_and_follow_role_changes(accounts: AccountStore, clock: Clock) -> None:
    accounts.create("alice", "admin", "correct horse battery")
    token, started = accounts.start_session("alice", "local", "admin", "Alice", max_age_s=3600)
    assert len(started.csrf_token) >= 32

    clock.now = T0 + timedelta(minutes=20)
    session = accounts.session(token, idle_s=1800)
    assert session is not None and session.role == "admin" and session.display_name == "Alice"

    accounts.set_role("alice", "reviewer")  # takes effect on the open session at once
    session = accounts.session(token, idle_s=1800)
    assert session is not None and session.role == "reviewer" and not session.is_admin

    clock.now = T0 + timedelta(minutes=51)  # seen at 0:20; idle for 31 minutes > 30
    assert accounts.session(token, idle_s=1800) is None

    token, _ = accounts.start_session("alice", "local", "reviewer", "Alice", max_age_s=3600)
    for minutes in range(10, 61, 10):  # never idle, but the session's lifetime ends
        clock.now = T0 + timedelta(minutes=51 + minutes)
        alive = accounts.session(token, idle_s=1800)
        assert (alive is not None) is (minutes < 60), minutes


def test_session_tokens_are_stored_hashed_and_can_be_ended(accounts: AccountStore, store: SqlStore) -> None:
    token, _ = accounts.start_session("ops@example.org", "oidc", "reviewer", "Ops", max_age_s=3600)
    with store.engine.connect() as connection:
        stored = connection.execute(select(ui_sessions.c.token_hash)).scalar_one()
    assert token not in stored and len(stored) == 64
    assert accounts.session(token, idle_s=600) is not None  # no account row needed for OIDC
    assert accounts.session(token + "x", idle_s=600) is None
    accounts.end_session(token)
    assert accounts.session(token, idle_s=600) is None


def test_a_new_password_ends_the_sessions(accounts: AccountStore) -> None:
    accounts.create("alice", "admin", "correct horse battery")
    token, _ = accounts.start_session("alice", "local", "admin", "alice", max_age_s=3600)
    accounts.set_password("alice", "a brand new password")
    assert accounts.session(token, idle_s=3600) is None
    assert accounts.verify("alice", "correct horse battery") is None
    assert accounts.verify("alice", "a brand new password") is not None


def test_missing_tables_say_how_to_fix_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    upgrade(url, "0002")  # a store from before the UI's migration
    engine = make_engine(url)
    try:
        with pytest.raises(StoreError, match="seawall db upgrade"):
            AccountStore(SqlStore(engine)).get("alice")
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------- migration


def _ui_migration(file: str = "0003_ui_accounts.py") -> Any:
    """One of the store's migrations of the UI tables (0003: accounts and sessions; 0008: operator
    tokens), loaded from its file."""
    path = _MIGRATIONS_DIR / "versions" / file
    spec = importlib.util.spec_from_file_location(f"seawall_migration_{file[:4]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_builds_exactly_the_tables_of_the_code_and_drops_them(store_url: str) -> None:
    migrations = [_ui_migration(), _ui_migration("0008_operator_tokens.py")]
    engine = create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as connection, Operations.context(MigrationContext.configure(connection)):
            for migration in migrations:
                migration.upgrade()
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), metadata) == []
        with engine.begin() as connection, Operations.context(MigrationContext.configure(connection)):
            for migration in reversed(migrations):
                migration.downgrade()
        assert not {"ui_accounts", "ui_sessions", "ui_tokens"} & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------- CLI


@pytest.fixture
def config(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'seawall.db'}"
    store = open_store(StoreSettings(url=url))
    metadata.create_all(store.engine)
    store.close()
    path = tmp_path / "seawall.yaml"
    path.write_text(f"store:\n  url: {url}\n", encoding="utf-8")
    return path


def _accounts_of(config: Path) -> AccountStore:
    url = config.read_text(encoding="utf-8").split("url: ", 1)[1].strip()
    return AccountStore(SqlStore(create_engine(url)))


def test_cli_creates_lists_changes_and_disables_accounts(config: Path) -> None:
    runner = CliRunner()
    c = ["--config", str(config)]
    done = runner.invoke(
        accounts_app,
        ["create", "alice", "--role", "admin", "--password-stdin", *c],
        input="alice-password-1\n",
    )
    assert done.exit_code == 0, done.output
    # Prompted twice (hidden), as an operator would type it.
    done = runner.invoke(
        accounts_app,
        ["create", "rob", "--role", "reviewer", *c],
        input="rob-password-123\nrob-password-123\n",
    )
    assert done.exit_code == 0, done.output
    store = _accounts_of(config)
    assert store.verify("alice", "alice-password-1") is not None
    assert store.verify("rob", "rob-password-123") is not None

    listed = runner.invoke(accounts_app, ["list", *c])
    assert listed.exit_code == 0
    lines = [line.split("\t") for line in listed.stdout.strip().splitlines()]
    assert lines[0][:3] == ["name", "role", "state"]
    assert [row[:3] for row in lines[1:]] == [["alice", "admin", "enabled"], ["rob", "reviewer", "enabled"]]

    assert runner.invoke(accounts_app, ["set-role", "rob", "admin", *c]).exit_code == 0
    assert store.get("rob").role == "admin"  # type: ignore[union-attr]
    assert runner.invoke(accounts_app, ["disable", "rob", *c]).exit_code == 0
    assert store.verify("rob", "rob-password-123") is None
    assert runner.invoke(accounts_app, ["enable", "rob", *c]).exit_code == 0
    changed = runner.invoke(
        accounts_app, ["set-password", "rob", "--password-stdin", *c], input="a-new-password-9\n"
    )
    assert changed.exit_code == 0, changed.output
    assert store.verify("rob", "a-new-password-9") is not None
    store.records.close()


def test_cli_refuses_short_passwords_unknown_roles_and_taken_names(config: Path) -> None:
    runner = CliRunner()
    c = ["--config", str(config)]
    short = runner.invoke(
        accounts_app, ["create", "alice", "--role", "admin", "--password-stdin", *c], input="short\n"
    )
    assert short.exit_code == 2 and "at least 12" in short.output
    role = runner.invoke(
        accounts_app,
        ["create", "alice", "--role", "root", "--password-stdin", *c],
        input="alice-password-1\n",
    )
    assert role.exit_code == 2 and "unknown role" in role.output
    assert (
        runner.invoke(
            accounts_app,
            ["create", "alice", "--role", "admin", "--password-stdin", *c],
            input="alice-password-1\n",
        ).exit_code
        == 0
    )
    taken = runner.invoke(
        accounts_app,
        ["create", "alice", "--role", "admin", "--password-stdin", *c],
        input="alice-password-2\n",
    )
    assert taken.exit_code == 2 and "exists already" in taken.output
    unknown = runner.invoke(accounts_app, ["disable", "nobody", *c])
    assert unknown.exit_code == 2 and "no account" in unknown.output
    store = _accounts_of(config)
    assert [a.name for a in store.list_accounts()] == ["alice"]
    assert store.verify("alice", "alice-password-1") is not None
    store.records.close()


def test_cli_without_the_ui_tables_says_to_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "seawall.yaml"
    upgrade(f"sqlite:///{tmp_path / 'bare.db'}", "0002")  # a store from before the UI's migration
    path.write_text(f"store:\n  url: sqlite:///{tmp_path / 'bare.db'}\n  migrate: check\n", encoding="utf-8")
    done = CliRunner().invoke(accounts_app, ["list", "--config", str(path)])
    assert done.exit_code == 2 and "run `seawall db upgrade`" in " ".join(done.output.split())
