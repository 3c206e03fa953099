"""The review desk as people use it, in headless Chromium (Playwright, Debian's browser), against the
real seawall app (``create_app``: gateway, review, UI) on loopback with an upstream stand-in:

(a) an app's question in a high-risk domain is held; a reviewer signs in, opens the queue, claims
    the answer, edits it and approves; the app polling ``poll_url`` gets the edited answer.
(b) a chat page on another origin (a static HTML file served by a loopback server) embeds the
    widget; a user reports an answer through its dialog; an admin triages the report to resolved.
(c) the dashboard draws the review desk's charts.

Screenshots go to the test's tmp dir and, with $SEAWALL_TEST_ARTIFACTS set, to
``<artifacts>/screenshots/``. Without Chromium these tests skip (fail under CI).
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from backend_standins import Recorded, StandIn, json_reply, stand_in
from conftest import RunningServer, running_server, wait_for_audit
from seawall.settings import load_settings
from seawall.store import SqlStore, open_store
from seawall.ui.accounts import AccountStore
from test_ui_support import (
    ADMIN,
    REVIEWER,
    browser_page,
    chromium,
    chromium_path,
    shoot,
    sign_in_page,
)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")

MODEL = "gpt-test"
APP_KEY = "sw-desk-browser-app-key"
REVIEWER_TOKEN = "reviewer-token-desk-0123456789"
DRAFT = "Adults can usually take 200 to 400 mg of ibuprofen every 4 to 6 hours."
EDITED = "Adults can take 200 to 400 mg every 4 to 6 hours, at most 1200 mg a day without a doctor."
HEALTH = "How much ibuprofen can an adult take in a day?"
PLAIN = "What are your opening hours?"
DISCLOSURE = "You are chatting with an AI assistant."


async def _reply(request: Recorded) -> Response:
    if request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "t"}]})
    text = request.body["messages"][-1]["content"]
    content = "We are open from 9 to 17, Monday to Friday." if PLAIN in text else DRAFT
    return json_reply(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
        }
    )


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Desk:
    server: RunningServer
    upstream: StandIn
    store: SqlStore
    demo_root: str
    demo_dir: Path

    @property
    def ui(self) -> str:
        return f"{self.server.root}/ui"

    def app_http(self) -> httpx.Client:
        return self.server.http(headers={"authorization": f"Bearer {APP_KEY}"})

    def ask(self, question: str, review: dict[str, Any] | None = None) -> httpx.Response:
        body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": question}]}
        if review is not None:
            body["seawall"] = {"review": review}
        with self.app_http() as http:  # an app that polls: it asks for the 202 pending-review protocol
            return http.post("/v1/chat/completions", json=body, headers={"x-seawall-review": "accepted"})


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    chromium_path()  # skip (or fail under CI) before building anything
    tmp = tmp_path_factory.mktemp("ui-desk-browser")
    demo_dir = tmp / "demo"
    demo_dir.mkdir()
    handler = functools.partial(_Quiet, directory=str(demo_dir))
    demo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    demo_root = f"http://127.0.0.1:{demo.server_address[1]}"
    threading.Thread(target=demo.serve_forever, daemon=True).start()
    url = f"sqlite:///{tmp / 'seawall.db'}"
    try:
        with stand_in(_reply) as upstream:
            settings = load_settings(
                server={"api_keys": [APP_KEY]},
                gateway={
                    "enabled": True,
                    "upstream": {"base_url": f"{upstream.url}/v1", "max_retries": 0, "total_timeout_s": 20},
                    "secret_file": str(tmp / "secret"),
                    "risk": {"enabled": False},
                    "rate_limits": {"per_user": None},
                },
                store={"url": url},
                review={
                    "enabled": True,
                    "uncertain_low": None,
                    "detect_domains": False,  # only what the app declares is held
                    "reviewer_tokens": {"api-rita": REVIEWER_TOKEN},
                    "widget_origins": [demo_root],
                    "notices": {"disclosure": DISCLOSURE},
                },
                ui={"secret_file": str(tmp / "ui-secret"), "login_attempts": 1000},
            )
            store = open_store(settings.store)  # migrated: the UI's account tables too
            accounts = AccountStore(store)
            accounts.create(ADMIN[0], "admin", ADMIN[1])
            accounts.create(REVIEWER[0], "reviewer", REVIEWER[1])
            with running_server(settings) as server:
                yield Desk(server, upstream, store, demo_root, demo_dir)
            store.close()
    finally:
        demo.shutdown()
        demo.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with browser_page(browser) as opened:
        yield opened


def test_a_held_answer_is_claimed_edited_and_approved_and_the_client_gets_it(
    page: Any, desk: Desk, tmp_path: Path
) -> None:
    held = desk.ask(
        HEALTH,
        {
            "domain": "health",
            "sources": [{"title": "Ibuprofen leaflet", "text": "Do not take more than 1200 mg in 24 hours."}],
            "notes": "pharmacy chatbot, adult customers",
        },
    )
    assert held.status_code == 202, held.text
    pending = held.json()
    review_id, poll_url = pending["review_id"], pending["poll_url"]
    assert DRAFT not in held.text

    polled: list[dict[str, Any]] = []

    def poll() -> None:  # the app, waiting for the person
        with desk.app_http() as http:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                body = http.get(poll_url).json()
                polled.append(body)
                if body["status"] != "pending":
                    return
                time.sleep(0.2)

    poller = threading.Thread(target=poll)
    poller.start()

    sign_in_page(page, desk.ui, REVIEWER)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Review queue").click()
    row = page.locator(f'tr[data-review-id="{review_id}"]')
    sync_api.expect(row).to_be_visible()
    assert "health" in row.inner_text() and HEALTH in row.inner_text()
    shoot(page, tmp_path, "review-queue")
    row.get_by_role("link", name=HEALTH).click()  # the question is the link
    page.wait_for_url(f"**/ui/review/{review_id}")
    for text in (HEALTH, DRAFT, "Ibuprofen leaflet", "Do not take more than 1200 mg", "pharmacy chatbot"):
        sync_api.expect(page.get_by_text(text, exact=False).first).to_be_visible()
    assert page.get_by_role("button", name="Approve the draft").count() == 0  # claim first
    shoot(page, tmp_path, "review-item")
    page.get_by_role("button", name="Claim").click()
    sync_api.expect(page.get_by_role("status").filter(has_text="Done: claimed.")).to_be_visible()
    editor = page.get_by_label("Edited answer")
    assert editor.input_value() == DRAFT
    editor.fill(EDITED)
    shoot(page, tmp_path, "review-item-editing")
    page.get_by_role("button", name="Save the edit and approve").click()
    sync_api.expect(page.locator("#item-status")).to_have_text("edited")
    sync_api.expect(page.locator("#done")).to_contain_text("edited and approved")
    shoot(page, tmp_path, "review-item-decided")
    assert page.errors == []

    poller.join(timeout=130)
    assert polled and polled[0]["status"] == "pending"
    final = polled[-1]
    assert final["status"] == "edited"
    assert final["completion"]["choices"][0]["message"]["content"] == EDITED
    item = desk.store.get_review(review_id)
    assert item is not None and item.decided_by == REVIEWER[0]


DEMO_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Acme support chat</title></head>
<body>
<h1>Acme support</h1>
<div class="chat">
  <p class="user">{question}</p>
  <div class="answer" data-seawall-response-id="{response_id}">{answer}</div>
</div>
<script src="{seawall}/ui/widget.js" data-seawall="{seawall}" data-api-key="{key}"></script>
</body></html>
"""


def test_a_user_reports_an_answer_with_the_widget_and_an_admin_triages_it(
    browser: Any, page: Any, desk: Desk, tmp_path: Path
) -> None:
    answered = desk.ask(PLAIN)
    assert answered.status_code == 200, answered.text
    request_id = answered.headers["x-seawall-request-id"]
    # The report page links the request's audit record and shows its decisions, read from the
    # store, which the gateway's writer thread fills after the answer left.
    wait_for_audit(desk.store, request_id)
    answer = answered.json()["choices"][0]["message"]["content"]
    (desk.demo_dir / "chat.html").write_text(
        DEMO_PAGE.format(
            # the id the app has from the SDK (completion.id): seawall's own, so it finds the request
            question=PLAIN,
            response_id=answered.json()["id"],
            answer=answer,
            seawall=desk.server.root,
            key=APP_KEY,
        )
    )

    page.goto(f"{desk.demo_root}/chat.html")
    report_button = page.get_by_role("button", name="Report this answer")
    sync_api.expect(report_button).to_be_visible()
    notices = page.locator("details.seawall-notices")
    sync_api.expect(notices.locator("summary")).to_have_text(DISCLOSURE)
    notices.locator("summary").click()
    sync_api.expect(notices.get_by_text("Answers can be wrong")).to_be_visible()
    shoot(page, tmp_path, "widget-chat-page")
    report_button.click()
    dialog = page.get_by_role("dialog", name="Report this answer")
    sync_api.expect(dialog).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "seawall-category"
    dialog.get_by_label("What is wrong?").select_option("wrong")
    dialog.get_by_label("Comment (optional)").fill("We are open until 18 on Fridays.")
    dialog.get_by_label("How can we reach you? (optional)").fill("sam@example.org")
    shoot(page, tmp_path, "widget-dialog")
    dialog.get_by_role("button", name="Send report").click()
    sync_api.expect(dialog.get_by_role("status")).to_have_text("Thank you: your report was sent.")
    shoot(page, tmp_path, "widget-sent")
    dialog.get_by_role("button", name="Close").click()
    sync_api.expect(dialog).to_be_hidden()
    assert page.evaluate("document.activeElement.textContent") == "Reported"  # focus back on its button
    report_id = page.get_by_role("button", name="Reported").get_attribute("data-seawall-report")
    assert report_id and report_id.startswith("rpt_")
    assert page.errors == []

    stored = desk.store.get_report(report_id)
    assert stored is not None
    assert (stored.category, stored.contact, stored.request_id) == ("wrong", "sam@example.org", request_id)

    admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    try:
        sign_in_page(admin, desk.ui, ADMIN)
        admin.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
        row = admin.locator(f'tr[data-report-id="{report_id}"]')
        sync_api.expect(row).to_be_visible()
        assert "open until 18" in row.inner_text()
        shoot(admin, tmp_path, "reports-new")
        row.get_by_role("link").click()
        sync_api.expect(admin.locator("#contact")).to_have_text("sam@example.org")
        sync_api.expect(admin.locator("#audit-link").get_by_role("link", name=request_id)).to_be_visible()
        # what a reviewer judges by: the answer (or why it is not kept), the decisions, the history
        sync_api.expect(admin.locator("#reported-answer-missing")).to_contain_text(
            "gateway.audit_content is off"
        )
        sync_api.expect(admin.locator("#decisions")).to_contain_text("input_moderation")
        sync_api.expect(admin.locator("#reporter-history")).to_contain_text("first report from this reporter")
        shoot(admin, tmp_path, "report-page")
        admin.get_by_label("Status").select_option("investigating")
        admin.get_by_label("Add a note").fill("Checking the Friday hours with the shop.")
        admin.get_by_role("button", name="Save").click()
        sync_api.expect(admin.locator("#report-status")).to_have_text("investigating")
        admin.get_by_label("Status").select_option("resolved")
        admin.get_by_label("Add a note").fill("Knowledge base corrected: open until 18 on Fridays.")
        admin.get_by_role("button", name="Save").click()
        sync_api.expect(admin.locator("#report-status")).to_have_text("resolved")
        notes = admin.locator("ol.notes li")
        sync_api.expect(notes).to_have_count(2)
        assert "Checking the Friday hours" in notes.nth(0).inner_text()
        assert "Knowledge base corrected" in notes.nth(1).inner_text()
        shoot(admin, tmp_path, "report-resolved")
        admin.locator("#audit-link a").click()
        sync_api.expect(admin.get_by_role("heading", name="Record", exact=True)).to_be_visible()
    finally:
        admin.context.close()
    final = desk.store.get_report(report_id)
    assert final is not None and final.status == "resolved" and final.updated_by == ADMIN[0]


def _painted_pixels(page: Any, chart: str) -> int:
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


def test_the_dashboard_charts_the_review_desk(page: Any, desk: Desk, tmp_path: Path) -> None:
    # Its own data: two held answers (one decided through the reviewer API) and a report.
    ids = []
    for _ in range(2):
        held = desk.ask(HEALTH, {"domain": "health"})
        assert held.status_code == 202
        ids.append(held.json()["review_id"])
    with desk.server.http(headers={"authorization": f"Bearer {REVIEWER_TOKEN}"}) as reviewer:
        reviewer.post(f"/v1/seawall/reviews/{ids[0]}/claim").raise_for_status()
        reviewer.post(f"/v1/seawall/reviews/{ids[0]}/approve").raise_for_status()
    with desk.app_http() as http:
        sent = http.post("/v1/feedback", json={"response_id": ids[0], "category": "harmful", "user": "u9"})
        assert sent.status_code == 201

    sign_in_page(page, desk.ui, ADMIN)
    for chart in ("review_flow", "queue_depth", "decision_time", "reports"):
        element = page.locator(f'[data-chart="{chart}"]')
        sync_api.expect(element).to_have_attribute("data-rendered", "true")
        assert int(element.get_attribute("data-points")) > 0, chart
        assert _painted_pixels(page, chart) > 300, chart
    assert int(page.locator("#queue-depth").inner_text()) >= 1
    assert page.locator("#decision-p50").inner_text() != "—"
    assert page.locator('[data-chart="reports"]').get_attribute("data-series") == "4"
    legend = page.locator('[data-chart="review_flow"] .u-legend').inner_text()
    assert "held" in legend and "decided" in legend
    page.locator("#desk-title").scroll_into_view_if_needed()
    shoot(page, tmp_path, "dashboard-review-desk")
    assert page.errors == []
    figures = json.loads(page.locator("#dashboard-data").inner_text())
    assert sum(figures["review_flow"][0][1]) >= 2
