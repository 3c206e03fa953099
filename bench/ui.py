"""The web UI's figures, in one run: the dashboard's page weight and its render time at scale.

Builds a temporary SQLite store with ``--rows`` (100,000) audit records spread over the last 24 h,
made by the gateway's own ``AuditRecord`` (realistic size and shape: about 12 % refused or filtered
with categories, 4 % medium risk, 2 % blocked users), plus one admin account; serves
``create_app`` + the UI (``add_ui_routes``) with uvicorn on loopback; then prints:

* page weight of the dashboard: bytes of its HTML and of every script and stylesheet it loads
  (as sent, and gzip -6 for comparison; seawall serves them uncompressed unless a proxy compresses);
* server time to render ``GET /ui/`` (24 h range: SQL aggregates over all rows + template), p50 and
  p95 of ``--runs`` requests, and the same for the 7-day range and an audit search page;
* with Chromium (``/usr/bin/chromium``) and Playwright: time from navigation to every chart drawn;
* the review desk: time from an answer being held (``ReviewService.hold``, what the gateway calls)
  to its row in the UI's queue page (``GET /ui/review``), with ``--backlog`` (100) answers already
  waiting; and the report widget's size (``GET /ui/widget.js``), as sent and gzipped.

The records go in with one multi-row INSERT per 5,000 (the columns ``Store.write_audit`` fills),
because 100,000 single-record transactions would make seeding the slowest part of the run.

Usage: python bench/ui.py [--rows 100000] [--runs 20] [--backlog 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import insert

from seawall.gateway.audit import AuditRecord
from seawall.review.service import HoldDecision, ReviewRequest, ReviewService
from seawall.review.settings import ReviewSettings
from seawall.server.app import create_app
from seawall.settings import load_settings
from seawall.store import SqlStore, open_store
from seawall.store.schema import audit_events
from seawall.ui import queries
from seawall.ui.accounts import AccountStore
from seawall.ui.accounts import metadata as ui_metadata
from seawall.ui.routes import add_ui_routes
from seawall.ui.settings import UISettings

CATEGORIES = ["violence", "harassment", "self-harm", "sexual", "hate", "illicit", "harassment/threatening"]
PASSWORD = "bench-password-123"


def make_record(rng: random.Random, at: datetime) -> dict[str, Any]:
    record = AuditRecord(
        request_id=f"req_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}",
        tenant="default",
        stream=rng.random() < 0.3,
        time=at.isoformat(timespec="milliseconds"),
        key_id="key_0123456789ab",
        safety_identifier=f"{rng.getrandbits(256):064x}"
        if rng.random() < 0.2
        else f"{rng.randrange(2000):064x}",
        user_source="safety_identifier",
        model="smollm2-135m-instruct",
    )
    scores = {name: round(rng.random() * 0.2, 4) for name in CATEGORIES}
    roll = rng.random()
    risk, outcome = "low", "ok"
    if roll < 0.08:
        flagged = rng.sample(CATEGORIES, rng.choice((1, 1, 2)))
        record.decide(
            "input_moderation", "refuse", flagged, {**scores, **dict.fromkeys(flagged, 0.91)}, images=0
        )
        risk, outcome = "high", "refused_input"
    elif roll < 0.12:
        record.decide("input_moderation", "allow", [], scores, images=0)
        flagged = [rng.choice(CATEGORIES)]
        record.decide(
            "output_moderation", "block", flagged, {**scores, **dict.fromkeys(flagged, 0.88)}, choice=0
        )
        risk, outcome = "high", "filtered_output"
    elif roll < 0.16:
        record.decide("input_moderation", "allow", [], scores, images=0)
        record.decide(
            "untrusted_content", "drop", ["prompt_injection"], {"prompt_injection": 0.97}, source="doc"
        )
        risk = "medium"
    elif roll < 0.18:
        risk, outcome = None, "user_blocked"  # type: ignore[assignment]
        record.error = {"status": 403, "code": "user_blocked"}
    else:
        record.decide("input_moderation", "allow", [], scores, images=0)
        record.decide("output_moderation", "allow", [], scores, choice=0)
        record.upstream = {"status": 200, "attempts": 1}
    record.risk = risk
    record.outcome = outcome
    record.latency_ms.update({"identity": 0.2, "input_moderation": 3.1, "upstream": 412.0})
    return record.to_dict()


def seed(store: SqlStore, rows: int) -> float:
    rng = random.Random(7)
    now = datetime.now(UTC)
    began = time.perf_counter()
    batch: list[dict[str, Any]] = []
    with store.engine.begin() as connection:
        for _ in range(rows):
            record = make_record(rng, now - timedelta(seconds=rng.uniform(0, 86_000)))
            batch.append(
                {
                    "request_id": record["request_id"],
                    "time": datetime.fromisoformat(record["time"]),
                    "tenant": record["tenant"],
                    "safety_identifier": record["safety_identifier"],
                    "outcome": record["outcome"],
                    "record": record,
                }
            )
            if len(batch) == 5000:
                connection.execute(insert(audit_events), batch)
                batch = []
        if batch:
            connection.execute(insert(audit_events), batch)
    return time.perf_counter() - began


def serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    # IPPROTO_TCP: asyncio turns Nagle off only for sockets that say they are TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def sign_in(http: httpx.Client) -> None:
    page = http.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = http.post(
        "/ui/login", data={"name": "bench", "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert response.status_code == 303, response.text


def timed(http: httpx.Client, path: str, runs: int) -> dict[str, float]:
    """The first request (cold: the dashboard cache is empty) and p50/p95 of the next ``runs``."""
    began = time.perf_counter()
    assert http.get(path).status_code == 200
    first = (time.perf_counter() - began) * 1000
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        response = http.get(path)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    samples.sort()
    return {
        "first_ms": first,
        "p50_ms": statistics.median(samples),
        "p95_ms": samples[max(0, int(len(samples) * 0.95) - 1)],
    }


def uncached_sql(store: SqlStore, range_name: str, runs: int) -> float:
    """p50 of the dashboard's SQL aggregates alone, without the cache (ms)."""
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        queries.dashboard(store, range_name)
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def page_weight(http: httpx.Client) -> dict[str, Any]:
    html = http.get("/ui/").content
    assets = re.findall(rb'<(?:script src|link rel="stylesheet" href)="([^"]+)"', html)
    parts = {"html": html}
    for url in assets:
        parts[url.decode().split("?")[0].rsplit("/", 1)[-1]] = http.get(url.decode()).content
    raw = {name: len(body) for name, body in parts.items()}
    zipped = {name: len(gzip.compress(body, 6)) for name, body in parts.items()}
    return {"bytes": raw, "total": sum(raw.values()), "gzip_total": sum(zipped.values())}


def browser_render(root: str, cookie: str, runs: int) -> dict[str, float] | None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK):
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    samples = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "seawall_ui", "value": cookie, "url": f"{root}/ui/"}])
        page = context.new_page()
        for _ in range(runs + 1):
            began = time.perf_counter()
            page.goto(f"{root}/ui/")
            page.wait_for_function(
                "document.querySelectorAll('[data-rendered=true]').length"
                " === document.querySelectorAll('[data-chart]').length"
            )
            samples.append((time.perf_counter() - began) * 1000)
        browser.close()
    samples = samples[1:]  # the first load also fills the browser's cache
    return {"p50_ms": statistics.median(samples), "max_ms": max(samples)}


def hold_one(service: ReviewService, n: int) -> str:
    """Hold an answer as the gateway's review hook does; its review id."""
    decision = HoldDecision(
        reasons=("declared:health",),
        domain="health",
        scores={"violence": 0.01},
        request=ReviewRequest(domain="health", sources=({"title": "leaflet", "text": "at most 1200 mg"},)),
    )
    body = {"model": "m", "messages": [{"role": "user", "content": f"How much ibuprofen? ({n})"}]}
    completion = {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "200-400 mg"}}],
    }
    pending = service.hold(decision, body, completion, request_id=f"swreq-bench-{n}", tenant="default")
    return str(pending["review_id"])


def held_to_queue(http: httpx.Client, service: ReviewService, backlog: int, runs: int) -> dict[str, float]:
    """Milliseconds from hold() to the first GET /ui/review whose page lists the new item."""
    for n in range(backlog):
        hold_one(service, n)
    samples = []
    for n in range(backlog, backlog + runs):
        began = time.perf_counter()
        review_id = hold_one(service, n)
        while review_id not in http.get("/ui/review").text:
            pass
        samples.append((time.perf_counter() - began) * 1000)
    page = http.get("/ui/review").content
    return {
        "p50_ms": statistics.median(samples),
        "p95_ms": statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else samples[0],
        "queue_page_bytes": len(page),
    }


def widget_size(http: httpx.Client) -> dict[str, int]:
    body = http.get("/ui/widget.js").content
    return {"bytes": len(body), "gzip_bytes": len(gzip.compress(body, 6))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=100, help="answers waiting before the timing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            store={"url": f"sqlite:///{tmp}/seawall.db"},
            gateway={"enabled": False, "secret_file": f"{tmp}/secret"},
        )
        store = open_store(settings.store)
        ui_metadata.create_all(store.engine)
        AccountStore(store).create("bench", "admin", PASSWORD)
        seconds = seed(store, args.rows)
        print(f"seeded {args.rows:,} audit records in {seconds:.1f} s", file=sys.stderr)
        app = create_app(settings)
        add_ui_routes(app, settings, store, ui=UISettings(secret_file=Path(tmp) / "ui-secret"))
        server, thread, root = serve(app)
        review = ReviewService(store, ReviewSettings(enabled=True))
        try:
            with httpx.Client(base_url=root, timeout=120) as http:
                sign_in(http)
                day = timed(http, "/ui/?range=24h", args.runs)  # first: the cache starts empty
                weight = page_weight(http)
                figures: dict[str, Any] = {
                    "rows": args.rows,
                    "page_weight": weight,
                    "dashboard_24h": day,
                    "dashboard_7d": timed(http, "/ui/?range=7d", args.runs),
                    "audit_search_page_10": timed(http, "/ui/audit?outcome=ok&page=10", args.runs),
                    "sql_uncached_24h_ms": uncached_sql(store, "24h", 5),
                    "sql_uncached_7d_ms": uncached_sql(store, "7d", 5),
                    "browser_dashboard": browser_render(root, http.cookies["seawall_ui"], min(args.runs, 10)),
                    "held_to_queue_page": held_to_queue(http, review, args.backlog, args.runs),
                    "widget": widget_size(http),
                }
        finally:
            review.close()
            server.should_exit = True
            thread.join(timeout=30)
            store.close()

    print(
        f"dashboard page weight: {weight['total']:,} bytes (HTML + JS + CSS), "
        f"{weight['gzip_total']:,} bytes gzipped"
    )
    for name, size in weight["bytes"].items():
        print(f"  {name:<20} {size:>8,} bytes")
    print(f"with {args.rows:,} audit rows (SQLite), server time of GET: first (cold); p50 / p95 after:")
    for key, label in [
        ("dashboard_24h", "dashboard, 24 h"),
        ("dashboard_7d", "dashboard, 7 days"),
        ("audit_search_page_10", "audit search, page 10"),
    ]:
        row = figures[key]
        print(f"  {label:<24} {row['first_ms']:8.1f};  {row['p50_ms']:8.1f} / {row['p95_ms']:8.1f} ms")
    print(
        f"  dashboard SQL without the cache, p50: 24 h {figures['sql_uncached_24h_ms']:.0f} ms, "
        f"7 days {figures['sql_uncached_7d_ms']:.0f} ms"
    )
    browser = figures["browser_dashboard"]
    if browser is None:
        print("  browser: skipped (no Chromium or Playwright)")
    else:
        print(
            f"  browser, navigation to all 8 charts drawn: p50 {browser['p50_ms']:.0f} ms, "
            f"max {browser['max_ms']:.0f} ms"
        )
    queue = figures["held_to_queue_page"]
    print(
        f"review desk: held answer to its row in the queue page ({args.backlog} already waiting): "
        f"p50 {queue['p50_ms']:.1f} ms, p95 {queue['p95_ms']:.1f} ms "
        f"(page {queue['queue_page_bytes']:,} bytes)"
    )
    widget = figures["widget"]
    print(f"report widget /ui/widget.js: {widget['bytes']:,} bytes, {widget['gzip_bytes']:,} bytes gzipped")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
