"""Rate limits hold across OS processes sharing one database (replicas), on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from seawall.settings import StoreSettings
from seawall.store import open_store

# A replica: opens its own engine, says it is ready, waits for "go", then hammers one bucket.
WORKER = """
import sys
from datetime import UTC, datetime
from seawall.store.sql import SqlStore, make_engine

url, bucket, limit, window, attempts, stamp = sys.argv[1:7]
store = SqlStore(make_engine(url, pool_size=2))
store.ping()
print("ready", flush=True)
sys.stdin.readline()
now = datetime.fromtimestamp(float(stamp), UTC)
allowed = sum(store.hit(bucket, int(limit), int(window), now).allowed for _ in range(int(attempts)))
store.close()
print(allowed, flush=True)
"""

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_processes_share_one_limit_exactly(store_url: str) -> None:
    limit, window, processes, attempts = 40, 60, 3, 25
    store = open_store(StoreSettings(url=store_url))
    try:
        # 20 hits in the previous window; halfway through this one they weigh 10, leaving room for 30.
        for _ in range(20):
            assert store.hit("shared", 100, window, T0 - timedelta(seconds=1)).allowed
        now = T0 + timedelta(seconds=window / 2)
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    store_url,
                    "shared",
                    str(limit),
                    str(window),
                    str(attempts),
                    str(now.timestamp()),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None and worker.stdout.readline().strip() == "ready", (
                    worker.stderr.read() if worker.stderr else ""
                )
            for worker in workers:  # start them together
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            outputs = [worker.communicate(timeout=60) for worker in workers]
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        for worker, (_, stderr) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, stderr
        allowed = [int(stdout.strip()) for stdout, _ in outputs]
        assert sum(allowed) == 30, allowed
        # The stored count agrees: refusals were not counted, by any process.
        after = store.hit("shared", limit, window, now)
        assert not after.allowed and after.count == pytest.approx(40)
    finally:
        store.close()
