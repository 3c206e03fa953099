"""Helpers of the web UI tests (tests/test_ui_*.py); this module holds no tests itself.

A UI server is the real seawall app (``create_app``) with the UI mounted the way app.py will
mount it (``add_ui_routes``), served by uvicorn on a loopback port, over a real SQLite (or
PostgreSQL) store whose UI tables are made with ``metadata.create_all`` until the UI's
migration joins the store's. Audit records are built with the gateway's own
:class:`~seawall.gateway.audit.AuditRecord` and stored through the store API.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from seawall.gateway.audit import AuditRecord
from seawall.server.app import create_app
from seawall.settings import Settings, load_settings
from seawall.store import SqlStore, open_store
from seawall.store.base import AuditOutcome
from seawall.ui.accounts import AccountStore
from seawall.ui.accounts import metadata as ui_metadata
from seawall.ui.routes import add_ui_routes
from seawall.ui.settings import UISettings

#: Read at import: conftest's autouse fixture clears SEAWALL_* variables before any test runs.
#: "1" (or "true"): the repository's test-artifacts/; any other value: that folder.
_ARTIFACTS = os.environ.get("SEAWALL_TEST_ARTIFACTS", "")
ARTIFACTS: Path | None = (
    None
    if not _ARTIFACTS
    else Path(__file__).resolve().parent.parent / "test-artifacts"
    if _ARTIFACTS.lower() in ("1", "true", "yes")
    else Path(_ARTIFACTS).resolve()
)

#: Passwords of the test accounts (long enough for the default policy).
ADMIN = ("alice", "alice-password-1")
REVIEWER = ("rob", "rob-password-12")


def missing(what: str) -> None:
    """Fail under CI (``$CI`` set), else skip with the reason: what a test needs is not here."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (required under CI)")
    pytest.skip(what)


def chromium_path() -> str:
    """Debian's Chromium, for Playwright (never a downloaded browser)."""
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium") or "",
        shutil.which("chromium-browser") or "",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    missing("Chromium is not installed (apt-get install chromium)")
    raise AssertionError("unreachable")


def ui_settings(tmp_path: Path, **overrides: Any) -> UISettings:
    return UISettings(secret_file=tmp_path / "ui-secret", **overrides)


def make_settings(tmp_path: Path, url: str | None = None) -> Settings:
    return load_settings(
        store={"url": url or f"sqlite:///{tmp_path / 'seawall.db'}"},
        gateway={"enabled": False, "tenant": "default", "secret_file": str(tmp_path / "secret")},
    )


def open_ui_store(settings: Settings) -> SqlStore:
    """The store of ``settings`` (migrated) plus the UI's tables."""
    store = open_store(settings.store)
    ui_metadata.create_all(store.engine)
    return store


def add_accounts(store: SqlStore) -> AccountStore:
    accounts = AccountStore(store)
    accounts.create(ADMIN[0], "admin", ADMIN[1])
    accounts.create(REVIEWER[0], "reviewer", REVIEWER[1])
    return accounts


def safety_id(n: int) -> str:
    """A stable, realistic safety identifier (64 hex characters)."""
    return hashlib.sha256(f"user-{n}".encode()).hexdigest()


def audit_record(
    *,
    at: datetime,
    tenant: str = "default",
    user: str | None = None,
    outcome: AuditOutcome = "ok",
    risk: str | None = "low",
    categories: Iterable[str] = (),
    step: str = "input_moderation",
    request_id: str | None = None,
) -> dict[str, Any]:
    """An audit record as the gateway writes it (its own AuditRecord class)."""
    record = AuditRecord(
        request_id=request_id or f"req_{uuid.uuid4().hex[:20]}",
        tenant=tenant,
        stream=False,
        time=at.isoformat(timespec="milliseconds"),
        key_id="key_0123456789ab",
        safety_identifier=user,
        user_source="safety_identifier",
        model="smollm2-135m-instruct",
    )
    flagged = list(categories)
    scores = {"violence": 0.02, "harassment": 0.01, **{name: 0.93 for name in flagged}}
    action = "refuse" if outcome == "refused_input" else ("flag" if flagged else "allow")
    record.decide(step, action, flagged, scores, images=0)
    record.risk = risk
    record.outcome = outcome
    record.latency_ms["input_moderation"] = 3.2
    if outcome == "ok":
        record.upstream = {"status": 200, "attempts": 1}
    return record.to_dict()


def seed(store: SqlStore, records: Iterable[dict[str, Any]]) -> int:
    count = 0
    for record in records:
        store.write_audit(record)
        count += 1
    return count


@dataclass
class UIServer:
    root: str
    settings: Settings
    ui: UISettings
    store: SqlStore

    @property
    def ui_root(self) -> str:
        return f"{self.root}/ui"

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.root, timeout=30, **kwargs)


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def ui_server(
    settings: Settings, ui: UISettings, store: SqlStore, sock: socket.socket | None = None
) -> Iterator[UIServer]:
    """``create_app(settings)`` plus ``add_ui_routes``, served by uvicorn on loopback."""
    app = create_app(settings)
    add_ui_routes(app, settings, store, ui=ui)
    sock = sock or bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 60 s")
            time.sleep(0.02)
        yield UIServer(root=f"http://127.0.0.1:{port}", settings=settings, ui=ui, store=store)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "no CSRF token in the page"
    return html.unescape(found.group(1))


def sign_in(client: httpx.Client, name: str, password: str, next_url: str | None = None) -> httpx.Response:
    """Sign in through the form (GET for its CSRF token, then POST); the POST's response."""
    page = client.get("/ui/login")
    assert page.status_code == 200, page.text
    form = {"name": name, "password": password, "csrf_token": csrf_from(page.text)}
    if next_url is not None:
        form["next"] = next_url
    return client.post("/ui/login", data=form)


# ---------------------------------------------------------------------------------- the browser tests


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (skips, or fails under CI, without it)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root without it
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=args)
        yield launched
        launched.close()


@contextmanager
def browser_page(browser: Any) -> Iterator[Any]:
    """A page in a fresh context (1280 x 900) whose ``errors`` collects console errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.errors = errors
    yield opened
    context.close()


def sign_in_page(page: Any, ui_root: str, who: tuple[str, str]) -> None:
    """Open the UI, get sent to its sign-in page, sign in as ``who`` and land on the dashboard."""
    page.goto(f"{ui_root}/")
    assert page.url.startswith(f"{ui_root}/login")  # sent to sign in first
    page.get_by_label("Account name").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{ui_root}/")


def screenshot_dir(tmp_path: Path) -> Path:
    """Where a test's screenshots go; copied to $SEAWALL_TEST_ARTIFACTS/screenshots by ``keep``."""
    folder = tmp_path / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


def keep(shot: Path) -> None:
    """Copy a screenshot to ``<artifacts>/screenshots/`` when $SEAWALL_TEST_ARTIFACTS is set."""
    if ARTIFACTS is not None:
        folder = ARTIFACTS / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, folder / shot.name)


def shoot(page: Any, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    """A screenshot of ``page`` in the test's screenshot folder (and kept, see :func:`keep`)."""
    path = screenshot_dir(tmp_path) / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 5_000  # a real picture, not an empty one
    keep(path)
    return path
