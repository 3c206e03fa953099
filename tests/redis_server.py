"""A real Redis server for the tests of the hot state on Redis (a pytest plugin, loaded by conftest.py).

``redis_url`` (session): ``$SEAWALL_TEST_REDIS_URL`` if set, else a private ``redis-server`` on a
free loopback port (no persistence, its files in a temporary folder), stopped at the end. Without
``redis-server`` the tests that need it are skipped with the reason, except under CI (``$CI``
set), where that is a failure. ``fresh_redis_url`` (function): the same server, emptied first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ADDRESS_IN_USE, start_on_free_port

_GIVEN_URL = os.environ.get("SEAWALL_TEST_REDIS_URL")


class RedisServer:
    """One private ``redis-server`` process: the first :meth:`start` on a free port, after a
    :meth:`stop` again on the same port (the one the tests' settings name)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "the Redis server's port is known once it was started"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.port is None:
            self.port = start_on_free_port(self._start_on, "redis-server")
        elif not self._start_on(self.port):
            raise RuntimeError(f"another process took port {self.port} while redis-server was stopped")

    def _start_on(self, port: int) -> bool:
        """Start on ``port`` and wait until it answers: True; False when the port was taken."""
        binary = shutil.which("redis-server")
        assert binary is not None
        command = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        command += ["--dir", str(self.folder)]
        log = self.folder / "redis.log"
        before = log.stat().st_size if log.exists() else 0
        self.process = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=1)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.ping()
                    answered = True
                except redis.RedisError:
                    answered = False
                if self.process.poll() is None:
                    if answered:
                        return True
                elif ADDRESS_IN_USE.encode() in log.read_bytes()[before:]:
                    self.process = None
                    return False  # it could not bind the port (what answered is another server)
                else:
                    raise RuntimeError(f"redis-server exited: {log.read_text(errors='replace')}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {log.read_text(errors='replace')}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


def _require_redis() -> None:
    reason = "redis-server not found (Debian: apt-get install redis-server)"
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI the Redis tests must run")
        pytest.skip(reason)
    try:
        import redis  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the redis package is missing (the dev extra pins it)")
        pytest.skip("the redis package is missing (pip install 'seawall[redis]')")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | None]:
    """The session's private Redis server (None when ``$SEAWALL_TEST_REDIS_URL`` names one)."""
    if _GIVEN_URL:
        yield None
        return
    _require_redis()
    with tempfile.TemporaryDirectory(prefix="seawall-redis-") as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    return _GIVEN_URL or (redis_server.url if redis_server else "")


@pytest.fixture
def fresh_redis_url(redis_url: str) -> str:
    """The Redis server, emptied (each test starts with no counters and no cached standing)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url
