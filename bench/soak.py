"""Soak: a fixed request rate against one seawall server for minutes, watching latency and memory.

Starts, on loopback, each as its own process:

* the upstream stand-in of ``bench/gateway.py`` (answers every chat request after 50 ms; streams
  9 chunks, 5 ms apart);
* the seawall server (uvicorn on ``seawall.server.app:create_app``, as ``seawall serve`` runs it)
  with the gateway on and its defaults (input and output moderation by the embedded model, risk
  ledger, per-user rate limit, audit file and a temporary SQLite store);

then sends ``--rate`` requests per second, open loop (each at its scheduled time, whether or not
earlier ones finished), rotating over three kinds: ``POST /v1/moderations`` (one short text), the
gateway's ``POST /v1/chat/completions`` plain, and streamed (read to ``[DONE]``). Requests name
1,000 end users in turn, so the per-user rate limit is not what is measured.

Every ``--window`` seconds (60: per minute) it prints requests, errors (any status but 200, a
stream without ``[DONE]`` or with an error event, a connection error), p50 and p99 latency per kind
and the server's RSS. At the end: RSS growth after the warm-up (the first window), and whether p99
stayed flat (the last window's p99 within ``--flat-ratio`` of the first after the warm-up, per kind).
Exit 1 when a request failed.

Usage: python bench/soak.py [--minutes 10 | --seconds 30] [--rate 20] [--window 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway import (  # the sibling benchmark (this script runs as a file, from bench/ on sys.path)
    MODEL,
    UPSTREAM_DELAY_S,
    Processes,
    _run,
    cpu_seconds,
    gateway_config,
    plan_cpus,
    terminate_as_interrupt,
    wait_ready,
)
from moderation_api import free_port, rss_mb

KINDS = ("moderations", "chat", "chat-stream")
USERS = 1000
QUESTION = "How do I make a sourdough starter at home?"
MODERATED = "Thanks, that recipe worked and the bread came out great."
#: Requests in flight beyond which new ones are counted as errors instead of sent (the server
#: is not keeping up; an open-loop client would otherwise pile up without bound).
MAX_IN_FLIGHT = 1000


@dataclass
class Window:
    began: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: list[str] = field(default_factory=list)
    rss_mb: float = float("nan")
    cpu_s: float = 0.0

    def error(self, kind: str, why: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 3:
            self.examples.append(f"{kind}: {why}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bodies(kind: str) -> Any:
    if kind == "moderations":
        one = json.dumps({"model": "omni-moderation-latest", "input": MODERATED}).encode()
        return itertools.repeat(one)
    stream = kind == "chat-stream"
    return itertools.cycle(
        [
            json.dumps(
                {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": QUESTION}],
                    "max_tokens": 256,
                    "user": f"soak-user-{index:04d}",
                    **({"stream": True} if stream else {}),
                }
            ).encode()
            for index in range(USERS)
        ]
    )


async def one(client: httpx.AsyncClient, base: str, kind: str, body: bytes, window: Window) -> None:
    path = "/v1/moderations" if kind == "moderations" else "/v1/chat/completions"
    began = time.perf_counter()
    try:
        if kind == "chat-stream":
            async with client.stream("POST", base + path, content=body) as response:
                text = (await response.aread()).decode(errors="replace")
            if response.status_code != 200:
                window.error(kind, f"{response.status_code} {text[:200]}")
                return
            if "data: [DONE]" not in text or '"error"' in text:
                window.error(kind, f"stream ended without [DONE] or with an error: {text[-200:]!r}")
                return
        else:
            response = await client.post(base + path, content=body)
            if response.status_code != 200:
                window.error(kind, f"{response.status_code} {response.text[:200]}")
                return
    except httpx.HTTPError as exc:
        window.error(kind, f"{type(exc).__name__}: {exc}")
        return
    window.latencies[kind].append((time.perf_counter() - began) * 1000)


async def soak(base: str, pid: int, seconds: float, rate: float, window_s: float) -> list[Window]:
    """Send ``rate`` requests/s for ``seconds``; the windows, each closed at its end."""
    sources = {kind: bodies(kind) for kind in KINDS}
    kinds = itertools.cycle(KINDS)
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=200)
    windows: list[Window] = []
    pending: set[asyncio.Task[None]] = set()
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers, trust_env=False) as client:
        start = time.perf_counter()
        cpu_before = cpu_seconds(pid)
        window = Window(began=0.0)
        windows.append(window)
        sent = 0
        while True:
            due = start + sent / rate
            now = time.perf_counter()
            if due - start >= seconds:
                break
            if due > now:
                await asyncio.sleep(due - now)
            elapsed = time.perf_counter() - start
            if elapsed >= window.began + window_s:  # close the window, open the next
                window.rss_mb = rss_mb(pid)
                cpu_now = cpu_seconds(pid)
                window.cpu_s, cpu_before = cpu_now - cpu_before, cpu_now
                report(window, len(windows), window_s)
                window = Window(began=window.began + window_s)
                windows.append(window)
            kind = next(kinds)
            if len(pending) >= MAX_IN_FLIGHT:
                window.error(kind, f"not sent: {MAX_IN_FLIGHT} requests in flight")
            else:
                task = asyncio.create_task(one(client, base, kind, next(sources[kind]), window))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            await asyncio.wait(pending)
        window.rss_mb = rss_mb(pid)
        window.cpu_s = cpu_seconds(pid) - cpu_before
        report(window, len(windows), window_s)
    return windows


def report(window: Window, number: int, window_s: float) -> None:
    done = sum(len(values) for values in window.latencies.values())
    errors = sum(window.errors.values())
    parts = [
        f"{kind} p50 {percentile(values, 0.5):6.1f} p99 {percentile(values, 0.99):6.1f}"
        for kind, values in window.latencies.items()
    ]
    label = f"{window.began:5.0f}-{window.began + window_s:.0f}s"
    print(
        f"window {number:2d} ({label}): {done:5d} ok, {errors} errors | {' | '.join(parts)} ms | "
        f"RSS {window.rss_mb:6.1f} MB | server CPU {window.cpu_s:5.1f} s",
        flush=True,
    )
    for example in window.examples:
        print(f"    error: {example}", flush=True)


def summary(windows: list[Window], flat_ratio: float) -> dict[str, Any]:
    """RSS growth after the warm-up window and whether p99 stayed flat, per kind."""
    measured = windows[1:] if len(windows) > 2 else windows
    first, last = measured[0], measured[-1]
    flat: dict[str, Any] = {}
    for kind in KINDS:
        before, after = percentile(first.latencies[kind], 0.99), percentile(last.latencies[kind], 0.99)
        flat[kind] = {
            "p99_first_ms": round(before, 1),
            "p99_last_ms": round(after, 1),
            "flat": bool(after <= before * flat_ratio) if before == before and after == after else None,
        }
    all_latencies = {kind: [v for w in measured for v in w.latencies[kind]] for kind in KINDS}
    return {
        "windows": len(windows),
        "requests_ok": sum(len(v) for w in windows for v in w.latencies.values()),
        "errors": sum(sum(w.errors.values()) for w in windows),
        "rss_after_warmup_mb": round(windows[0].rss_mb, 1),
        "rss_end_mb": round(windows[-1].rss_mb, 1),
        "rss_growth_after_warmup_mb": round(windows[-1].rss_mb - windows[0].rss_mb, 1),
        "p50_ms": {kind: round(percentile(v, 0.5), 1) for kind, v in all_latencies.items()},
        "p99_ms": {kind: round(percentile(v, 0.99), 1) for kind, v in all_latencies.items()},
        "p99_flat": flat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    length.add_argument("--seconds", type=float, help="how long to run, in seconds (e.g. 30 in CI)")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="requests per second, all kinds (default 20)"
    )
    parser.add_argument("--window", type=float, default=None, help="seconds per printed window (default 60)")
    parser.add_argument(
        "--flat-ratio", type=float, default=1.5, help="p99 counts as flat up to this ratio (default 1.5)"
    )
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    # Short runs still get a warm-up window and at least two measured ones.
    window_s = args.window or (60.0 if seconds >= 180 else seconds / 3)
    gateway_cpus, stand_in_cpus, client_cpus, pinning = plan_cpus()
    with tempfile.TemporaryDirectory(prefix="seawall-bench-soak-") as tmp, terminate_as_interrupt():
        folder = Path(tmp)
        processes = Processes(folder)
        try:
            if client_cpus:
                os.sched_setaffinity(0, client_cpus)
            stand_in_port = free_port()
            here = Path(__file__).resolve().parent
            stand_in = processes.start(
                "stand-in",
                [
                    sys.executable,
                    str(here / "gateway.py"),
                    "--stand-in",
                    str(stand_in_port),
                    "--chunk-gap-ms",
                    "5",
                ],
                stand_in_cpus,
            )
            upstream = f"http://127.0.0.1:{stand_in_port}/v1"
            wait_ready(f"{upstream}/models", processes, "stand-in", stand_in)
            port = free_port()
            config = gateway_config(folder, "soak", port, upstream, guards=True)
            command = [sys.executable, "-m", "uvicorn", "seawall.server.app:create_app", "--factory"]
            command += [
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
            server = processes.start("seawall", command, gateway_cpus, {"SEAWALL_CONFIG": str(config)})
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz", processes, "seawall", server)
            print(f"cores: {os.cpu_count()} ({pinning})")
            print(
                f"seawall pid {server.pid}: gateway with moderation on (defaults), SQLite store, audit file; "
                f"RSS after start {rss_mb(server.pid):.1f} MB"
            )
            print(
                f"load: {args.rate:g} requests/s open loop for {seconds:g} s, rotating {', '.join(KINDS)}; "
                f"stand-in upstream answers after {UPSTREAM_DELAY_S * 1000:.0f} ms; "
                f"windows of {window_s:g} s (the first is the warm-up); latencies in ms"
            )
            windows = _run(soak(base, server.pid, seconds, args.rate, window_s))
            result = summary(windows, args.flat_ratio)
            if server.poll() is not None:
                raise SystemExit(f"seawall exited during the soak:\n{processes.log_tail('seawall')}")
        finally:
            processes.stop_all()
    print()
    print(
        f"requests ok: {result['requests_ok']}, errors: {result['errors']}; "
        f"p50 / p99 after warm-up: "
        + ", ".join(f"{kind} {result['p50_ms'][kind]} / {result['p99_ms'][kind]} ms" for kind in KINDS)
    )
    print(
        f"RSS: {result['rss_after_warmup_mb']} MB after warm-up, {result['rss_end_mb']} MB at the end "
        f"({result['rss_growth_after_warmup_mb']:+.1f} MB)"
    )
    for kind, verdict in result["p99_flat"].items():
        state = {True: "flat", False: "ROSE", None: "unknown"}[verdict["flat"]]
        print(
            f"p99 {kind}: {verdict['p99_first_ms']} ms first window after warm-up, "
            f"{verdict['p99_last_ms']} ms last: {state} (ratio limit {args.flat_ratio:g})"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if result["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
