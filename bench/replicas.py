"""Many replicas: throughput and latency of one replica on SQLite, on PostgreSQL, on PostgreSQL with
the hot state on Redis (``store.cache_url``), and three replicas behind nginx, plus the per-request
cost of the hot path (standing and rate limit) with and without Redis.

Starts, on loopback, real servers only: the 50 ms model-server stand-in of ``bench/gateway.py``, a
private PostgreSQL cluster and a private ``redis-server`` (as the tests start them), ``seawall
serve`` replicas (uvicorn on ``create_app``), and nginx with ``examples/deploy/nginx.conf``.
Each setup gets ``--concurrency`` clients sending plain chat requests back to back for
``--seconds`` (1,000 end users in turn, each under its per-user rate limit), with the gateway's
guards off by default so the store's share is not hidden behind moderation (``--guards`` turns
input and output moderation on). Every child process is stopped on exit.

The hot path alone, in this process against each store, ``--hot-path-calls`` times, the mean per
request: the admission the gateway makes (``RiskLedger.admit_counting`` with the per-user count of
``RateLimiter.counts``: one store call, one transaction; on Redis one script call), and beside it
the same work as two calls (``RiskLedger.standing``, then ``RateLimiter.check``), as before the
admission was one call.

Usage: python bench/replicas.py [--seconds 10] [--concurrency 32] [--guards] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import Processes, Target, _run, under_load, wait_ready  # the sibling benchmark
from moderation_api import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' private PostgreSQL and Redis servers

from postgres_server import private_cluster  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from seawall.gateway.ratelimit import RateLimiter  # noqa: E402
from seawall.gateway.risk import RiskLedger  # noqa: E402
from seawall.settings import RateLimitSettings, RiskSettings, StoreSettings  # noqa: E402
from seawall.store import open_store  # noqa: E402


def replica_config(folder: Path, name: str, upstream: str, store: dict[str, Any], guards: bool) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "log_level": "warning"},
        "store": store,
        "gateway": {
            "enabled": True,
            "upstream": {"base_url": upstream},
            "secret_file": str(folder / "secret"),
            "audit_file": str(folder / f"{name}.audit.jsonl"),
            "input_moderation": guards,
            "output_moderation": guards,
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def start_replica(processes: Processes, name: str, config: Path) -> Target:
    port = free_port()
    command = [sys.executable, "-m", "seawall.cli", "serve", "--config", str(config), "--port", str(port)]
    process = processes.start(name, command, None, {"SEAWALL_CONFIG": str(config)})
    wait_ready(f"http://127.0.0.1:{port}/readyz", processes, name, process)
    return Target(name, f"http://127.0.0.1:{port}/v1", process.pid)


def start_nginx(processes: Processes, folder: Path, replicas: list[Target]) -> Target:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    servers = "\n        ".join(
        f"server {t.base.removeprefix('http://').removesuffix('/v1')} max_fails=1 fail_timeout=5s;"
        for t in replicas
    )
    conf = (ROOT / "examples" / "deploy" / "nginx.conf").read_text()
    conf = conf.replace("@PREFIX@", str(folder)).replace("@LISTEN@", f"127.0.0.1:{port}")
    path = folder / "nginx.conf"
    path.write_text(conf.replace("@REPLICAS@", servers))
    process = processes.start("nginx", [nginx, "-c", str(path), "-g", "daemon off;"], None)
    wait_ready(f"http://127.0.0.1:{port}/healthz", processes, "nginx", process)
    return Target("three replicas behind nginx", f"http://127.0.0.1:{port}/v1", process.pid)


#: End users of the hot-path measurement, each seen once before it (their standing is cached).
USERS = 200


def hot_path(settings: StoreSettings, calls: int) -> tuple[float, float]:
    """Mean ms per request, users seen before: the gateway's admission (the standing read and the
    per-user count in one store call), and the standing check and the count as two calls."""
    store = open_store(settings)
    try:
        ledger = RiskLedger(store, RiskSettings())
        limiter = RateLimiter(store, RateLimitSettings(per_user={"requests": 10**9, "window_s": 60}))
        for index in range(USERS):  # warm: connections open, scripts loaded, standing cached
            user = f"user-{index}"
            ledger.admit_counting("acme", user, limiter.counts(None, "acme", user))
        began = time.perf_counter()
        for index in range(calls):
            user = f"user-{index % USERS}"
            state, refused = ledger.admit_counting("acme", user, limiter.counts(None, "acme", user))
            assert state is None and refused is None, "the benchmark's users are never refused"
        admission = (time.perf_counter() - began) * 1000 / calls
        began = time.perf_counter()
        for index in range(calls):
            user = f"user-{index % USERS}"
            ledger.standing("acme", user)
            limiter.check(None, "acme", user)
        return admission, (time.perf_counter() - began) * 1000 / calls
    finally:
        store.close()


def measure(target: Target, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """One setup under load: requests/s, p50 and p99, printed and kept in ``figures``."""
    row = _run(under_load(target, args.concurrency, args.seconds))
    figures["load"][target.name] = row
    print(f"  {target.name:34}{row['requests_per_s']:8.0f}{row['p50_ms']:9.2f}{row['p99_ms']:9.2f}")


@contextmanager
def servers(folder: Path) -> Iterator[tuple[str, str]]:
    """A private PostgreSQL cluster and Redis server: their URLs."""
    with private_cluster() as postgres:
        redis = RedisServer(folder)
        redis.start()
        try:
            yield postgres, redis.url
        finally:
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="load per setup")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument("--guards", action="store_true", help="input and output moderation on")
    parser.add_argument("--hot-path-calls", type=int, default=2000, help="calls per store for the hot path")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--hot-path-only", action="store_true", help="skip the load runs")
    args = parser.parse_args()

    figures: dict[str, Any] = {
        "cores": os.cpu_count(),
        "guards": args.guards,
        "load": {},
        "hot_path_ms": {},
        "hot_path_two_calls_ms": {},
    }
    with tempfile.TemporaryDirectory(prefix="seawall-bench-replicas-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        postgres, redis = stack.enter_context(servers(folder))
        processes = Processes(folder)
        stack.callback(processes.stop_all)
        stand_in_port = free_port()
        gateway_bench = str(Path(__file__).with_name("gateway.py"))
        stand_in = processes.start(
            "stand-in", [sys.executable, gateway_bench, "--stand-in", str(stand_in_port)], None
        )
        upstream = f"http://127.0.0.1:{stand_in_port}/v1"
        wait_ready(f"{upstream}/models", processes, "stand-in", stand_in)
        print(f"cores: {os.cpu_count()}; guards {'on' if args.guards else 'off'}; nothing pinned")

        stores = {
            "one replica, SQLite": {"url": f"sqlite:///{folder / 'seawall.db'}"},
            "one replica, PostgreSQL": {"url": postgres},
            "one replica, PostgreSQL + Redis": {"url": postgres, "cache_url": redis},
        }
        if not args.hot_path_only:
            print(f"\n{args.concurrency} concurrent clients, plain requests, {args.seconds:g} s each")
            print(f"  {'':34}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}")

            for index, (name, store) in enumerate(stores.items()):
                config = replica_config(folder, f"single-{index}", upstream, store, args.guards)
                target = start_replica(processes, name, config)
                measure(target, args, figures)
                os.kill(target.pid, 15)
            config = replica_config(
                folder, "replica", upstream, stores["one replica, PostgreSQL + Redis"], args.guards
            )
            replicas = [start_replica(processes, f"replica-{n}", config) for n in (1, 2, 3)]
            measure(start_nginx(processes, folder, replicas), args, figures)

        print(
            f"\nhot path in-process (standing + one per-user rate-limit hit), mean ms of "
            f"{args.hot_path_calls} calls"
        )
        print(f"  {'':34}{'admit':>8}{'2 calls':>9}")
        for name, store in stores.items():
            settings = StoreSettings(**store)
            admission, two_calls = hot_path(settings, args.hot_path_calls)
            figures["hot_path_ms"][name] = admission
            figures["hot_path_two_calls_ms"][name] = two_calls
            print(f"  {name.removeprefix('one replica, '):34}{admission:8.3f}{two_calls:9.3f}")
    figures["measured_at"] = datetime.now(UTC).isoformat()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
