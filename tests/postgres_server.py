"""A real PostgreSQL server for the store's tests (a pytest plugin, loaded by conftest.py).

``postgres_url`` (session): ``$SEAWALL_TEST_POSTGRES_URL`` if set, else a private throwaway
cluster (initdb + pg_ctl in a temporary folder, on a free loopback port, its unix socket in
that folder too), run as the ``postgres`` OS user when the tests run as root, stopped at
the end. Without PostgreSQL binaries the tests that need it are skipped with the reason,
except under CI (``$CI`` set), where that is a failure.

``postgres_schema_url`` (function): the same server with a fresh, empty schema of its own
(``search_path`` set through the URL), dropped after the test.

``store_url`` (function, run once per database): an empty SQLite file, then such a PostgreSQL
schema; ``store``: the store opened (and migrated) on it, closed after the test.

``any_store_settings``, ``any_store_url`` and ``any_store``: the same, run once per store
implementation: ``memory://`` (:class:`~seawall.store.memory.MemoryStore`), then SQLite, then
PostgreSQL, then PostgreSQL with the hot state on Redis. The contract tests
(tests/test_store_contract.py) use them, so every implementation passes the same tests.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from conftest import ADDRESS_IN_USE, start_on_free_port
from seawall.settings import StoreSettings
from seawall.store import SqlStore, Store, open_store
from seawall.store.sql import normalise_url

#: Read at import: conftest's autouse fixture clears SEAWALL_* variables before any test runs.
_GIVEN_URL = os.environ.get("SEAWALL_TEST_POSTGRES_URL")


def _bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian layout first, then $PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(Path(path).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user when we are root."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *command]
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *command]


def _run(command: list[str], log: Path | None = None) -> None:
    result = subprocess.run(_as_postgres(command), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        raise RuntimeError(
            f"{command[0]} failed ({result.returncode}): {result.stderr}{result.stdout}{detail}"
        )


def pg_ctl_start(bin_dir: Path, data: Path, log: Path, options: str) -> bool:
    """``pg_ctl start`` with the server ``options`` (``-p PORT`` among them), waiting until it
    accepts connections: True; False when its port was taken (it could not bind it and stopped)."""
    before = log.stat().st_size if log.exists() else 0
    command = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60"]
    try:
        _run([*command, "start"], log)
    except RuntimeError:
        with log.open("rb") as written:
            written.seek(before)
            if ADDRESS_IN_USE in written.read().decode(errors="replace"):
                return False
        raise
    return True


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL (postgresql+psycopg) of a database on a real PostgreSQL server."""
    given = _GIVEN_URL
    if given:
        yield normalise_url(given).render_as_string(hide_password=False)
        return
    if _bin_dir() is None:
        reason = "PostgreSQL is not installed (no initdb/pg_ctl); set SEAWALL_TEST_POSTGRES_URL or install it"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL for the store tests: {reason}")
        pytest.skip(reason)
    with private_cluster() as url:
        yield url


@contextmanager
def private_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl, fsync off) on a free loopback port, with an
    empty database ``seawall_test``: its URL while the block runs (the benchmarks use it too)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (no initdb/pg_ctl)")
    # Not under pytest's tmp_path: its folders are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="seawall-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
    data, log = root / "data", root / "server.log"
    started = False
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        options = (
            "-c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        port = start_on_free_port(
            lambda port: pg_ctl_start(bin_dir, data, log, f"-p {port} -k {root} {options}"), "PostgreSQL"
        )
        started = True
        admin = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE seawall_test"))
        admin.dispose()
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/seawall_test"
    finally:
        if started:
            subprocess.run(
                _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """``postgres_url`` with a fresh empty schema first on the search path; dropped afterwards."""
    schema = f"seawall_test_{secrets.token_hex(4)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh schema on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'seawall.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    """The store on ``store_url``, migrated to head; closed after the test."""
    opened = open_store(StoreSettings(url=store_url))
    yield opened
    opened.close()


@pytest.fixture(params=["memory", "sqlite", "postgresql", "postgresql+redis"])
def any_store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSettings:
    """Store settings for each implementation: the in-memory store, a SQLite file, a PostgreSQL
    schema, and that schema with the hot state on Redis (tests/redis_server.py)."""
    if request.param == "memory":
        return StoreSettings(url="memory://")
    if request.param == "sqlite":
        return StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}")
    url = str(request.getfixturevalue("postgres_schema_url"))
    if request.param == "postgresql":
        return StoreSettings(url=url)
    return StoreSettings(url=url, cache_url=request.getfixturevalue("fresh_redis_url"))


@pytest.fixture
def any_store_url(any_store_settings: StoreSettings) -> str:
    return any_store_settings.url.get_secret_value()


@pytest.fixture
def any_store(any_store_settings: StoreSettings) -> Iterator[Store]:
    """The store on ``any_store_settings``, ready (migrated); closed after the test."""
    opened = open_store(any_store_settings)
    yield opened
    opened.close()
