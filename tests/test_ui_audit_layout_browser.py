"""The audit page's table fits a 1280 px window, in headless Chromium (Playwright, Debian's
browser) against a real seawall UI on loopback.

Safety identifiers are 64 hex characters and request ids 38; shown whole they wrapped to about
eight lines a row and pushed the table past the window. They are shown as one monospace line cut
with an ellipsis, the whole value in the title and the copy button, and the link searches by it.
Without Chromium this test skips (fails under CI).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from test_ui_support import (
    REVIEWER,
    UIServer,
    add_accounts,
    audit_record,
    browser_page,
    chromium,
    chromium_path,
    make_settings,
    open_ui_store,
    safety_id,
    seed,
    shoot,
    sign_in_page,
    ui_server,
    ui_settings,
)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")

WIDTH = 1280


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    chromium_path()  # skip (or fail under CI) before building anything
    tmp = tmp_path_factory.mktemp("ui-audit-layout")
    settings = make_settings(tmp)
    store = open_ui_store(settings)
    add_accounts(store)
    now = datetime.now(UTC)
    records = []
    for n in range(30):  # as the gateway writes them: swreq-<hex> ids, flagged categories, shadow
        record = audit_record(
            at=now - timedelta(minutes=n),
            user=safety_id(n),
            tenant="acme-production-eu",
            outcome="refused_input" if n % 3 == 0 else "ok",
            risk="high" if n % 3 == 0 else "low",
            categories=["violence", "harassment/threatening"] if n % 3 == 0 else [],
            request_id=f"swreq-{uuid.uuid4().hex}",
        )
        record["api"] = "chat.completions" if n % 2 else "responses"
        record["tier"] = "email_verified"
        records.append(record)
    seed(store, records)
    with ui_server(settings, ui_settings(tmp), store) as running:
        yield running
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with browser_page(browser) as opened:  # 1280 x 900
        yield opened


def test_the_audit_table_fits_a_1280_px_window(page: Any, server: UIServer, tmp_path: Path) -> None:
    sign_in_page(page, server.ui_root, REVIEWER)
    page.goto(f"{server.ui_root}/audit")
    page.wait_for_load_state("networkidle")
    assert page.evaluate("window.innerWidth") == WIDTH
    shoot(page, tmp_path, "audit-1280")
    sizes = page.evaluate(
        """() => {
        const wrap = document.querySelector('.table-wrap');
        const table = wrap.querySelector('table.audit');
        const rows = [...table.querySelectorAll('tbody tr')];
        const cell = getComputedStyle(table.querySelector('tbody td'));
        return {
            page: document.documentElement.scrollWidth,
            wrap: wrap.clientWidth,
            table: table.scrollWidth,
            right: table.getBoundingClientRect().right,
            tallest: Math.max(...rows.map(r => r.getBoundingClientRect().height)),
            line: parseFloat(cell.lineHeight),
            padding: parseFloat(cell.paddingTop) + parseFloat(cell.paddingBottom) + 1,  // and the border
        };
    }"""
    )
    assert sizes["page"] <= WIDTH, sizes  # no sideways scrolling of the page
    assert sizes["table"] <= sizes["wrap"] and sizes["right"] <= WIDTH, sizes  # nor inside the region
    assert sizes["tallest"] <= 3 * sizes["line"] + sizes["padding"] + 1, sizes  # no row over 3 lines

    first = page.locator("table.audit tbody tr").first
    shown = first.locator("td.safety-id .id")
    whole = shown.get_attribute("title")
    assert whole is not None and len(whole) == 64 and shown.inner_text() == whole  # all of it is there
    clipped = shown.evaluate("e => e.scrollWidth > e.clientWidth")
    assert clipped and shown.evaluate("e => getComputedStyle(e).textOverflow") == "ellipsis"
    request = first.locator("td.request a")
    assert request.get_attribute("title") == request.inner_text()
    assert request.inner_text().startswith("swreq-") and len(request.inner_text()) == 38

    # the copy button puts the whole identifier on the clipboard
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.root)
    first.get_by_role("button", name="Copy safety identifier").click()
    sync_api.expect(first.get_by_role("button", name="Copy safety identifier")).to_have_attribute(
        "data-copied", "true"
    )
    assert page.evaluate("navigator.clipboard.readText()") == whole

    # the identifier searches the audit log by it
    shown.click()
    page.wait_for_url("**/ui/audit?*")
    assert page.get_by_label("Safety identifier (or its start)").input_value() == whole
    assert page.locator("table.audit tbody tr").count() == 1
    assert page.errors == []
