"""What making every answered request's audit record durable costs the request.

Before a gateway request's answer leaves, :meth:`seawall.gateway.audit.AuditLog.commit` puts its
audit record in the audit buffer (``store.audit_buffer_path``) and, with ``store.audit_sync:
fsync``, waits for the disk flush, which concurrent requests share (group commit); a background
thread writes the buffer through to the store. This bench times ``commit`` itself, the part of a
request's latency the audit trail adds, in this process, against a real SQLite store in a
temporary folder (``--dir``, on the disk the buffer would be on, so the store's own disk writes
compete with the buffer's flushes; ``--store memory`` leaves them out, as a store on another
machine would), for:

* ``queue``: no buffer (what the gateway did before: the store written from an in-memory queue
  after the answer; a killed process loses what the queue held);
* ``write``: the buffer, handed to the OS (survives a killed process, not a power loss);
* ``fsync``: the buffer, flushed to disk (the default).

Each mode runs ``--records`` commits at concurrency 1 (one request at a time: the full flush per
request) and at ``--concurrency`` (requests in flight together share a flush), each record the
shape of a real one (decisions, scores, latencies; about 1 KB). It prints p50/p99 per commit in
milliseconds, commits/s, how many flushes the run needed, and checks that every record reached
the store. Also a bare ``fsync`` of one appended line on the same disk, for scale.

Usage: python bench/audit_durability.py [--records 300] [--concurrency 16] [--dir /tmp]
       [--store sqlite|memory] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from seawall.gateway import audit_buffer  # noqa: E402
from seawall.gateway.audit import AuditLog, AuditRecord  # noqa: E402
from seawall.settings import StoreSettings  # noqa: E402
from seawall.store import open_store  # noqa: E402

MODES = ("queue", "write", "fsync")


def record(number: int) -> AuditRecord:
    """An audit record of the size and shape a plain chat request leaves."""
    audit = AuditRecord(f"swreq-bench-{number:07d}", "acme", stream=False)
    audit.key_id = "key_0123456789"
    audit.safety_identifier = "sid_" + "ab" * 16
    audit.user_source = "header"
    audit.model = "smollm2-135m-instruct"
    scores = {"harassment": 0.0123, "violence": 0.0042, "hate": 0.0011, "self-harm": 0.0007}
    audit.decide("standing", "allow")
    audit.decide("rate_limits", "allow")
    audit.decide("input_moderation", "allow", [], scores)
    audit.decide("untrusted_content", "allow")
    audit.decide("output_moderation", "allow", [], scores)
    audit.risk = "low"
    audit.upstream = {"status": 200, "id": "chatcmpl-0123456789", "finish_reason": "stop"}
    audit.latency_ms = {"identity": 0.2, "input_moderation": 4.1, "upstream": 52.3, "output_moderation": 3.9}
    audit.outcome = "answered"
    return audit


def flush_probe(folder: Path, count: int = 100) -> list[float]:
    """Milliseconds for one append of a ~1 KB line plus ``fsync``, ``count`` times."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    took = []
    try:
        for _ in range(count):
            began = time.perf_counter()
            os.write(fd, b"x" * 1000 + b"\n")
            os.fsync(fd)
            took.append((time.perf_counter() - began) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return took


class Counting:
    """Counts the buffer's appends (each is one flush in fsync mode) while installed."""

    def __init__(self) -> None:
        self.appends = 0
        self._original = audit_buffer.AuditBuffer.append

    def __enter__(self) -> Counting:
        counter = self
        original = self._original

        def append(buffer: Any, records: list[dict[str, Any]], *, sync: bool = True) -> None:
            counter.appends += 1
            original(buffer, records, sync=sync)

        audit_buffer.AuditBuffer.append = append  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        audit_buffer.AuditBuffer.append = self._original  # type: ignore[method-assign]


async def timed_commits(log: AuditLog, start: int, count: int, concurrency: int) -> list[float]:
    took: list[float] = []
    numbers = iter(range(start, start + count))

    async def client() -> None:
        for number in numbers:
            audit = record(number)
            began = time.perf_counter()
            await log.commit(audit)
            took.append((time.perf_counter() - began) * 1000)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return took


def run_mode(mode: str, folder: Path, records: int, concurrency: int, kind: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"audit-{mode}-", dir=folder))
    url = f"sqlite:///{work / 'seawall.db'}" if kind == "sqlite" else "memory://"
    store = open_store(StoreSettings(url=url))
    log = AuditLog(
        None,
        store,
        buffer_path=None if mode == "queue" else work / "audit-buffer.jsonl",
        retry_s=5.0,
        sync=mode == "fsync",
    )
    result: dict[str, Any] = {"mode": mode}
    try:
        asyncio.run(timed_commits(log, 0, 20, 1))  # warm-up: threads, the store's first writes
        log.flush(30)
        number = 20
        for level in (1, concurrency):
            with Counting() as counting:
                began = time.perf_counter()
                took = asyncio.run(timed_commits(log, number, records, level))
                seconds = time.perf_counter() - began
            number += records
            took.sort()
            result[f"c{level}"] = {
                "p50_ms": round(statistics.median(took), 3),
                "p99_ms": round(took[min(len(took) - 1, int(len(took) * 0.99))], 3),
                "commits_per_s": round(records / seconds, 1),
                "buffer_appends": counting.appends,
            }
            log.flush(60)
    finally:
        log.close()
    stored = {str(r["request_id"]) for _, r in store.audit_chain()}
    store.close()
    result["stored"] = len(stored)
    result["expected"] = 20 + 2 * records
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300, help="commits per mode and concurrency level")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight in the second run")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the files go")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite", help="the store written")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.records < 1 or args.concurrency < 1:
        parser.error("--records and --concurrency must be at least 1")
    args.dir.mkdir(parents=True, exist_ok=True)

    probe = sorted(flush_probe(args.dir))
    load = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()}; load average {load:.1f}; files in {args.dir}; store {args.store}")
    print(f"bare append + fsync of 1 KB: p50 {statistics.median(probe):.2f} ms, p99 {probe[98]:.2f} ms")
    results = []
    for mode in args.modes:
        print(f"{mode}: {args.records} commits at concurrency 1 and {args.concurrency} ...", flush=True)
        results.append(run_mode(mode, args.dir, args.records, args.concurrency, args.store))
    print()
    print(f"{'mode':<7} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'commits/s':>10} {'appends':>8}  stored")
    for result in results:
        for level in (1, args.concurrency):
            figures = result[f"c{level}"]
            print(
                f"{result['mode']:<7} {level:>4} {figures['p50_ms']:>8.3f} {figures['p99_ms']:>8.3f} "
                f"{figures['commits_per_s']:>10.1f} {figures['buffer_appends']:>8}  "
                f"{result['stored']}/{result['expected']}"
            )
    base = next((r for r in results if r["mode"] == "queue"), None)
    if base is not None:
        for result in results:
            if result is base:
                continue
            for level in (1, args.concurrency):
                added = result[f"c{level}"]["p50_ms"] - base[f"c{level}"]["p50_ms"]
                print(f"added by {result['mode']} at concurrency {level}: {added:+.3f} ms p50 per request")
    missing = [r["mode"] for r in results if r["stored"] != r["expected"]]
    if args.json:
        args.json.write_text(json.dumps({"fsync_probe_p50_ms": statistics.median(probe), "results": results}))
    if missing:
        raise SystemExit(f"records missing from the store in: {', '.join(missing)}")


if __name__ == "__main__":
    main()
