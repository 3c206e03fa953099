"""Two seawall replicas — separate server processes — sharing one PostgreSQL store: rate limits
and the risk ledger hold across them, and an admin's CLI action reaches both.

Each replica is ``python -m seawall.cli serve --config ...`` in its own process, in front of one
loopback upstream stand-in, with the same safety-identifier secret (as replicas of one
deployment have)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from backend_standins import stand_in
from conftest import served_port, subprocess_env, wait_for
from test_gateway_pipeline import MODEL, QUESTION, THREAT, Behaviour, make_reply

USER_LIMIT = 10


def _clean_env() -> dict[str, str]:
    """The environment without SEAWALL_* but the session's data folder (conftest.subprocess_env)."""
    return subprocess_env()


class Replica:
    """``seawall serve`` in its own process on a port the OS picks (``--port 0 --port-file``):
    ``port`` and ``url`` once :meth:`wait_ready` has read it."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.port_file = log.with_suffix(".port")
        self.port_file.unlink(missing_ok=True)
        self._port: int | None = None
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "seawall.cli",
                "serve",
                "--config",
                str(config),
                "--port",
                "0",
                "--port-file",
                str(self.port_file),
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=_clean_env(),
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    @property
    def port(self) -> int:
        assert self._port is not None, "the replica's port is known once wait_ready() returned"
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 90) -> None:
        """Until the replica listens (its port file) and its store is ready (``/readyz``)."""
        deadline = time.monotonic() + timeout_s
        self._port = served_port(self.port_file, self.process, self.output, timeout_s)

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"replica exited: {self.output()}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, max(deadline - time.monotonic(), 1), f"replica {self.url} ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def replicas(tmp_path: Path, postgres_schema_url: str) -> Iterator[tuple[Replica, Replica, Path]]:
    with stand_in(make_reply(Behaviour())) as upstream:
        config = tmp_path / "seawall.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "gateway": {
                        "enabled": True,
                        "upstream": {"base_url": f"{upstream.url}/v1", "max_retries": 0},
                        "secret_file": str(tmp_path / "secret"),
                        "tenant": "acme",
                        "rate_limits": {"per_user": {"requests": USER_LIMIT, "window_s": 600}},
                        "risk": {"warn_at": None, "throttle_at": None, "block_at": 2, "review_at": None},
                    },
                    "store": {"url": postgres_schema_url},
                    "server": {"log_level": "warning"},
                }
            )
        )
        first = Replica(config, tmp_path / "replica-1.log")
        second = Replica(config, tmp_path / "replica-2.log")
        try:
            first.wait_ready()
            second.wait_ready()
            yield first, second, config
        finally:
            first.stop()
            second.stop()


def _ask(replica: Replica, user: str, text: str = QUESTION) -> int:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": text}], "user": user}
    return httpx.post(f"{replica.url}/v1/chat/completions", json=body, timeout=30).status_code


def test_a_per_user_rate_limit_holds_across_two_replicas(replicas: tuple[Replica, Replica, Path]) -> None:
    first, second, _ = replicas
    targets = [first, second] * 15  # 30 concurrent requests, half on each replica
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda replica: _ask(replica, "eve"), targets))
    assert statuses.count(200) == USER_LIMIT, statuses
    assert statuses.count(429) == len(targets) - USER_LIMIT
    assert _ask(second, "someone-else") == 200


def test_a_user_blocked_on_one_replica_is_blocked_on_the_other_until_an_admin_clears(
    replicas: tuple[Replica, Replica, Path],
) -> None:
    first, second, config = replicas
    assert _ask(first, "frank", THREAT) == 400
    assert _ask(second, "frank", THREAT) == 400  # the second high-risk request: blocked (block_at 2)
    assert _ask(first, "frank") == 403
    assert _ask(second, "frank") == 403
    cleared = subprocess.run(
        [sys.executable, "-m", "seawall.cli", "users", "clear", "frank", "--raw", "--config", str(config)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
    )
    assert cleared.returncode == 0, cleared.stderr
    assert ": ok" in cleared.stdout
    assert _ask(second, "frank") == 200
    assert _ask(first, "frank") == 200


def test_two_replicas_write_one_linear_audit_chain(replicas: tuple[Replica, Replica, Path]) -> None:
    """Both replicas store their audit records in one per-tenant hash chain (each write reads the
    last hash under a per-tenant advisory lock), so concurrent requests still verify."""
    first, second, config = replicas
    targets = [first, second] * 20
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda pair: _ask(pair[1], f"user-{pair[0]}"), enumerate(targets)))
    assert statuses.count(200) == len(targets), statuses
    first.stop()  # stopping drains each replica's audit queue into the store
    second.stop()
    verified = subprocess.run(
        [sys.executable, "-m", "seawall.cli", "audit", "verify", "store", "--config", str(config)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"intact ({len(targets)} records, 1 tenants)" in verified.stdout + verified.stderr
