"""The web UI in headless Chromium (Playwright, Debian's browser) against a real seawall server on
loopback: sign-in, dashboard charts drawn from seeded audit records, audit search, unblocking a
user as admin, a reviewer refused an admin page, keyboard and small-screen use.

Screenshots of each page go to the test's tmp dir and, with $SEAWALL_TEST_ARTIFACTS set, to
``<artifacts>/screenshots/``. Without Chromium these tests skip (fail under CI).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from seawall.gateway.risk import RiskLedger
from test_ui_support import (
    ADMIN,
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

CATEGORIES = ["violence", "harassment", "self-harm", "sexual", "hate", "illicit"]
BLOCKED_USER = safety_id(1001)


def _seed(server_store: Any) -> int:
    """A day of traffic: 600 requests from 40 users, about 12 % refused or filtered."""
    rng = random.Random(5)
    now = datetime.now(UTC)
    records = []
    for _ in range(600):
        at = now - timedelta(seconds=rng.uniform(0, 23 * 3600))
        user = safety_id(rng.randrange(40))
        roll = rng.random()
        if roll < 0.08:
            records.append(
                audit_record(
                    at=at,
                    user=user,
                    outcome="refused_input",
                    risk="high",
                    categories=rng.sample(CATEGORIES, rng.choice((1, 2))),
                )
            )
        elif roll < 0.12:
            records.append(
                audit_record(
                    at=at,
                    user=user,
                    outcome="filtered_output",
                    risk="high",
                    categories=[rng.choice(CATEGORIES)],
                    step="output_moderation",
                )
            )
        elif roll < 0.16:
            records.append(
                audit_record(
                    at=at, user=user, risk="medium", categories=["prompt_injection"], step="untrusted_content"
                )
            )
        elif roll < 0.18:
            records.append(audit_record(at=at, user=user, outcome="user_blocked", risk=None))
        else:
            records.append(audit_record(at=at, user=user))
    records.append(
        audit_record(
            at=now - timedelta(minutes=1),
            user=BLOCKED_USER,
            outcome="refused_input",
            risk="high",
            categories=["violence"],
            request_id="req_blocked_user",
        )
    )
    return seed(server_store, records)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    chromium_path()  # skip (or fail under CI) before building anything
    tmp = tmp_path_factory.mktemp("ui-browser")
    settings = make_settings(tmp)
    store = open_ui_store(settings)
    add_accounts(store)
    _seed(store)
    ledger = RiskLedger(store, settings.gateway.risk)
    for n in range(6):  # a few users with risk events on the ladder
        for event in range(n + 1):
            ledger.record("default", safety_id(n), "high" if event % 2 else "medium", f"req_r{n}_{event}")
    ledger.block("default", BLOCKED_USER, "gateway", "10 risk points", None)
    with ui_server(settings, ui_settings(tmp), store) as running:
        yield running
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with browser_page(browser) as opened:
        yield opened


def _painted_pixels(page: Any, chart: str) -> int:
    """Non-transparent pixels of a chart's canvas: proof that uPlot drew something."""
    return int(
        page.evaluate(
            """(name) => {
            const canvas = document.querySelector(`[data-chart="${name}"] canvas`);
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) n++;
            return n;
        }""",
            chart,
        )
    )


def test_sign_in_and_the_dashboard_charts_render_with_data(
    page: Any, server: UIServer, tmp_path: Path
) -> None:
    page.goto(f"{server.ui_root}/login")
    shoot(page, tmp_path, "login")
    sign_in_page(page, server.ui_root, ADMIN)
    for chart in ("requests", "risk", "blocks", "flag_rate"):
        element = page.locator(f'[data-chart="{chart}"]')
        sync_api.expect(element).to_have_attribute("data-rendered", "true")
        assert int(element.get_attribute("data-points")) > 0, chart
        assert element.locator("canvas").count() == 1
        assert _painted_pixels(page, chart) > 500, chart
    assert page.locator('[data-chart="risk"]').get_attribute("data-series") == "3"
    assert page.locator("#total-requests").inner_text() == "601"
    legend = page.locator('[data-chart="flag_rate"] .u-legend').inner_text()
    assert "violence" in legend and "prompt_injection" in legend
    assert (
        page.get_by_role("navigation", name="Main")
        .get_by_role("link", name="Dashboard")
        .get_attribute("aria-current")
        == "page"
    )
    shoot(page, tmp_path, "dashboard")
    assert page.errors == []  # no script error, no CSP violation


def test_audit_search(page: Any, server: UIServer, tmp_path: Path) -> None:
    sign_in_page(page, server.ui_root, REVIEWER)
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Outcome").select_option("refused_input")
    page.get_by_label("Safety identifier (or its start)").fill(BLOCKED_USER[:12])
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/ui/audit?*")
    rows = page.locator("table.audit tbody tr")
    assert rows.count() == 1
    assert "req_blocked_user" in rows.first.inner_text() and "violence" in rows.first.inner_text()
    shoot(page, tmp_path, "audit-search")

    page.get_by_label("Safety identifier (or its start)").fill("")
    page.get_by_role("button", name="Search").click()
    page.wait_for_load_state()
    caption = page.locator("#audit-caption").inner_text()
    assert "page 1 of" in caption
    page.get_by_role("link", name="Older →").click()
    assert "page 2 of" in page.locator("#audit-caption").inner_text()
    page.locator("table.audit tbody tr td.request a").first.click()  # the record, not the id search
    assert page.get_by_role("heading", name="Record", exact=True).is_visible()
    shoot(page, tmp_path, "audit-record")
    assert page.errors == []


def test_admin_unblocks_a_user(page: Any, server: UIServer, tmp_path: Path) -> None:
    sign_in_page(page, server.ui_root, ADMIN)
    page.get_by_role("link", name="Users").click()
    row = page.locator(f'tr[id="user-{BLOCKED_USER}"]')
    assert row.get_attribute("data-status") == "review"
    shoot(page, tmp_path, "users")
    row.get_by_role("button", name="Unblock").click()
    # htmx swaps the row in place: same page, new state.
    sync_api.expect(page.locator(f'tr[id="user-{BLOCKED_USER}"]')).to_have_attribute("data-status", "ok")
    assert page.url.endswith("/ui/users")
    state = server.store.get_user("default", BLOCKED_USER)
    assert state is not None and state.status == "ok" and state.updated_by == ADMIN[0]
    shoot(page, tmp_path, "users-after-unblock")

    # And blocks someone again, with the keyboard only.
    other = page.locator(f'tr[id="user-{BLOCKED_USER}"]')
    other.locator("summary").focus()
    page.keyboard.press("Enter")
    other.get_by_label("Reason").focus()
    page.keyboard.type("abuse report 17")
    page.keyboard.press("Tab")
    page.keyboard.type("24")
    page.keyboard.press("Enter")
    sync_api.expect(page.locator(f'tr[id="user-{BLOCKED_USER}"]')).to_have_attribute("data-status", "blocked")
    state = server.store.get_user("default", BLOCKED_USER)
    assert state is not None and state.status == "blocked" and state.reason == "abuse report 17"
    assert page.errors == []


def test_reviewer_is_denied_an_admin_page(page: Any, server: UIServer, tmp_path: Path) -> None:
    sign_in_page(page, server.ui_root, REVIEWER)
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Accounts").count() == 0
    response = page.goto(f"{server.ui_root}/accounts")
    assert response.status == 403
    assert page.get_by_role("heading", name="Not allowed").is_visible()
    shoot(page, tmp_path, "reviewer-denied")
    page.goto(f"{server.ui_root}/users")
    assert page.get_by_role("button", name="Unblock").count() == 0


def test_admin_makes_and_revokes_an_operator_token(page: Any, server: UIServer, tmp_path: Path) -> None:
    sign_in_page(page, server.ui_root, ADMIN)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Accounts").click()
    page.get_by_label("What the token is for").fill("prometheus scraper")
    page.get_by_label("Rights").select_option("admin")
    page.get_by_role("button", name="Make a token").click()
    shown = page.locator("#new-token-value")
    sync_api.expect(shown).to_be_visible()
    token = shown.inner_text()
    assert token.startswith("swop-") and len(token) > 40
    row = page.locator("#tokens tbody tr", has_text="prometheus scraper")
    sync_api.expect(row).to_contain_text("admin")
    assert token not in row.inner_text()  # only its first characters are listed
    shoot(page, tmp_path, "token-made")
    row.get_by_role("button", name="Revoke").click()
    sync_api.expect(page.locator("#done")).to_have_text("Token revoked.")
    sync_api.expect(page.locator("#tokens tbody tr", has_text="prometheus scraper")).to_contain_text(
        "revoked"
    )
    assert page.locator("#new-token-value").count() == 0  # never shown again
    shoot(page, tmp_path, "token-revoked")
    assert page.errors == []


def test_keyboard_landmarks_labels_and_a_small_screen(browser: Any, server: UIServer, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        sign_in_page(page, server.ui_root, ADMIN)
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        for path in ("/", "/users", "/audit", "/accounts"):
            page.goto(f"{server.ui_root}{path}")
            page.wait_for_load_state("networkidle")
            assert (
                page.locator("main").count() == 1 and page.locator("header nav[aria-label=Main]").count() == 1
            )
            unlabeled = page.evaluate(
                """() => [...document.querySelectorAll('input:not([type=hidden]), select')]
                    .filter(e => !(e.labels && e.labels.length)).map(e => e.name)"""
            )
            assert unlabeled == [], (path, unlabeled)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, (path, overflow)  # wide tables scroll inside their region
            name = "mobile-" + (path.strip("/") or "dashboard")
            shoot(page, tmp_path, name)
    finally:
        context.close()
