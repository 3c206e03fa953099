"""The review queue and the held answer's page as a reviewer and an admin work them, in headless
Chromium (Playwright, Debian's browser), against the real seawall app (gateway, review, UI) on
loopback with an upstream stand-in. Answers are held by the hold rules the fixture configures, from
two tenants' API keys and two end users; one draft stops at ``max_tokens``.

Covered: the queue sorted by risk (highest first), filtered by tenant, user, domain and reason; the
question as the link; bulk reject and bulk release with a reason; the item page's rules (why each
fired), its scores split into the request's and the draft's and marked by the hold band, the
"cut off at max_tokens" note; an admin breaking a reviewer's claim (a reviewer cannot).

Screenshots go to the test's tmp dir and, with $SEAWALL_TEST_ARTIFACTS set, to
``<artifacts>/screenshots/``. Without Chromium these tests skip (fail under CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import Response

from backend_standins import Recorded, json_reply, stand_in
from conftest import RunningServer, running_server
from seawall.clock import utc_now
from seawall.gateway.identity import hash_api_key
from seawall.settings import load_settings
from seawall.store import SqlStore, open_store
from seawall.ui.accounts import AccountStore
from test_ui_support import ADMIN, REVIEWER, browser_page, chromium, chromium_path, shoot, sign_in_page

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")

MODEL = "gpt-test"
KEYS = {"acme": "sw-queue-acme-key-0123456789", "globex": "sw-queue-globex-key-012345678"}
LONG = "How should I taper off prednisone after a two-week course? Explain every step."
CUT = "Tapering depends on the dose. Typically you reduce the daily dose by"
QUESTIONS = {
    # (tenant, user, domain declared by the app, question)
    "health": ("acme", "ann", "health", "Is it normal for a sprained ankle to swell for a week?"),
    "law": ("acme", "ann", "law", "How long does my landlord have to return my deposit?"),
    "finance": ("globex", "bob", "finance", "Should I move my pension into an index fund?"),
    "law2": ("globex", "bob", "law", "What notice period does an employment contract usually need?"),
    "long": ("acme", "cy", "health", LONG),
}
RULES = [
    {"name": "declared high-risk domain", "domains": ["health", "finance", "law"]},
    {
        "name": "any harassment score on legal questions",
        "domains": ["law"],
        "band": [0.0, None],
        "categories": ["harassment"],
        "scores": "request",
    },
]


async def _reply(request: Recorded) -> Response:
    if request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "t"}]})
    text = request.body["messages"][-1]["content"]
    cut = LONG in text
    content = CUT if cut else f"A careful draft answer to: {text}"
    return json_reply(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "length" if cut else "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 16 if cut else 9, "total_tokens": 26},
        }
    )


@dataclass
class Queue:
    server: RunningServer
    store: SqlStore
    held: dict[str, str]  # QUESTIONS key -> review id

    @property
    def ui(self) -> str:
        return f"{self.server.root}/ui"


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    chromium_path()  # skip (or fail under CI) before building anything
    with stand_in(_reply) as upstream:
        yield upstream.url


@pytest.fixture
def queue(tmp_path: Path, upstream_url: str) -> Iterator[Queue]:
    """A queue of each test's own: its own store and server, the five answers held and nothing
    decided or claimed, whichever tests ran before (they claim, reject and release)."""
    url = f"sqlite:///{tmp_path / 'seawall.db'}"
    settings = load_settings(
        gateway={
            "enabled": True,
            "upstream": {"base_url": f"{upstream_url}/v1", "max_retries": 0, "total_timeout_s": 20},
            "secret_file": str(tmp_path / "secret"),
            "risk": {"enabled": False},
            "rate_limits": {"per_user": None},
            "stream_guard": {"check_timeout_s": 120},
        },
        store={"url": url},
        review={"enabled": True, "detect_domains": False, "rules": RULES},
        ui={"secret_file": str(tmp_path / "ui-secret"), "login_attempts": 1000},
    )
    store = open_store(settings.store)
    try:
        accounts = AccountStore(store)
        accounts.create(ADMIN[0], "admin", ADMIN[1])
        accounts.create(REVIEWER[0], "reviewer", REVIEWER[1])
        for tenant, key in KEYS.items():
            store.create_key(f"{tenant} app", tenant, hash_api_key(key), key[:8])
        with running_server(settings) as server:
            held: dict[str, str] = {}
            for name, (tenant, user, domain, question) in QUESTIONS.items():
                body: dict[str, Any] = {
                    "model": MODEL,
                    "user": user,
                    "messages": [{"role": "user", "content": question}],
                    "seawall": {"review": {"domain": domain}},
                }
                if name == "long":
                    body["max_tokens"] = 16
                with server.http(headers={"authorization": f"Bearer {KEYS[tenant]}"}) as app:
                    answer = app.post("/v1/chat/completions", json=body)
                assert answer.status_code == 200, (name, answer.text)
                held[name] = answer.json()["seawall"]["review"]["id"]
            yield Queue(server, store, held)
    finally:
        store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with browser_page(browser) as opened:
        yield opened


def _rows(page: Any) -> list[str]:
    return [row.get_attribute("data-review-id") for row in page.locator("tr[data-review-id]").all()]


def test_the_queue_sorts_by_risk_filters_and_links_the_question(
    page: Any, queue: Queue, tmp_path: Path
) -> None:
    sign_in_page(page, queue.ui, REVIEWER)
    page.goto(f"{queue.ui}/review")
    rows = _rows(page)
    assert set(rows) == set(queue.held.values())
    risks = [float(page.locator(f'tr[data-review-id="{rid}"]').get_attribute("data-risk")) for rid in rows]
    assert risks == sorted(risks, reverse=True), "highest risk first"
    # the question is the link to the item
    question = QUESTIONS["finance"][3]
    link = page.get_by_role("link", name=question)
    assert link.get_attribute("href").endswith(f"/review/{queue.held['finance']}")
    shoot(page, tmp_path, "queue-by-risk")
    # tenant
    page.get_by_label("Tenant").select_option("globex")
    page.get_by_role("button", name="Show").click()
    assert set(_rows(page)) == {queue.held["finance"], queue.held["law2"]}
    # reason (kind): only the legal questions got the harassment band rule
    page.get_by_label("Tenant").select_option("")
    page.get_by_label("Reason", exact=True).select_option("uncertain")
    page.get_by_role("button", name="Show").click()
    assert set(_rows(page)) == {queue.held["law"], queue.held["law2"]}
    # domain and order by age
    page.get_by_label("Reason", exact=True).select_option("")
    page.get_by_label("Domain").select_option("health")
    page.get_by_label("Order").select_option("age")
    page.get_by_role("button", name="Show").click()
    assert _rows(page) == [queue.held["health"], queue.held["long"]]
    # user: the link in the User column filters to that user's answers
    page.get_by_label("Domain").select_option("")
    page.get_by_role("button", name="Show").click()
    page.locator(f'tr[data-review-id="{queue.held["finance"]}"] td a').first.click()
    assert set(_rows(page)) == {queue.held["finance"], queue.held["law2"]}  # bob's
    assert "user=" in page.url
    shoot(page, tmp_path, "queue-filtered-by-user")
    assert page.errors == []
    # a bad filter is a clear 400, not a crash
    assert page.goto(f"{queue.ui}/review?sort=size").status == 400


def test_the_item_page_explains_the_hold_and_marks_the_scores(
    page: Any, queue: Queue, tmp_path: Path
) -> None:
    sign_in_page(page, queue.ui, REVIEWER)
    page.goto(f"{queue.ui}/review/{queue.held['law']}")
    fired = page.locator("#fired")
    sync_api.expect(fired).to_contain_text("declared high-risk domain")
    sync_api.expect(fired).to_contain_text("declared by the app: law")
    sync_api.expect(fired).to_contain_text("any harassment score on legal questions")
    sync_api.expect(fired).to_contain_text("request harassment")
    request_scores = page.locator("#scores-request")
    draft_scores = page.locator("#scores-draft")
    sync_api.expect(request_scores.locator("caption")).to_contain_text("The user's request")
    sync_api.expect(draft_scores.locator("caption")).to_contain_text("The model's draft")
    harassment = request_scores.locator('tr[data-category="harassment"]')
    sync_api.expect(harassment).to_have_class("score-band")
    sync_api.expect(harassment).to_contain_text("in the hold band")
    # marked by colour too: the band's background differs from a score below it
    band = harassment.locator("td").first.evaluate("e => getComputedStyle(e).backgroundColor")
    below = page.locator("tr.score-below td").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert band != below
    assert page.locator("#cut-off").count() == 0
    shoot(page, tmp_path, "item-why-held")
    # the draft that stopped at max_tokens says so
    page.goto(f"{queue.ui}/review/{queue.held['long']}")
    sync_api.expect(page.locator("#cut-off")).to_contain_text("max_tokens 16")
    sync_api.expect(page.locator("#draft")).to_have_text(CUT)
    shoot(page, tmp_path, "item-cut-off")
    assert page.errors == []


def test_an_admin_breaks_a_stale_claim(browser: Any, page: Any, queue: Queue, tmp_path: Path) -> None:
    review_id = queue.held["health"]
    sign_in_page(page, queue.ui, REVIEWER)
    page.goto(f"{queue.ui}/review/{review_id}")
    page.get_by_role("button", name="Claim").click()
    sync_api.expect(page.get_by_role("status").filter(has_text="Done: claimed.")).to_be_visible()
    with browser_page(browser) as admin:
        sign_in_page(admin, queue.ui, ADMIN)
        admin.goto(f"{queue.ui}/review/{review_id}")
        breaker = admin.get_by_role("button", name=f"Break {REVIEWER[0]}'s claim")
        sync_api.expect(breaker).to_be_visible()
        shoot(admin, tmp_path, "item-break-claim")
        breaker.click()
        sync_api.expect(admin.locator("#done")).to_contain_text("claim broken")
        sync_api.expect(admin.locator("#claim")).to_have_text("nobody holds it")
        sync_api.expect(admin.locator(".trail")).to_contain_text(f"claim_broken by {ADMIN[0]}")
        assert admin.errors == []
    item = queue.store.get_review(review_id)
    assert item is not None and item.claimed_by is None and item.status == "pending"
    # a reviewer sees no such button on someone else's claim, and the route refuses them
    with browser_page(browser) as admin:
        sign_in_page(admin, queue.ui, ADMIN)
        admin.goto(f"{queue.ui}/review/{review_id}")
        admin.get_by_role("button", name="Claim").click()
    page.goto(f"{queue.ui}/review/{review_id}")
    assert page.get_by_role("button", name=f"Break {ADMIN[0]}'s claim").count() == 0
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    refused = page.request.post(f"{queue.ui}/review/{review_id}/break", form={"csrf_token": csrf})
    assert refused.status == 403


def test_bulk_reject_and_release_with_a_reason(page: Any, queue: Queue, tmp_path: Path) -> None:
    sign_in_page(page, queue.ui, REVIEWER)
    page.goto(f"{queue.ui}/review?tenant=globex")
    for name in ("finance", "law2"):
        page.locator(f'tr[data-review-id="{queue.held[name]}"] input[type="checkbox"]').check()
    page.get_by_label("Decision").select_option("reject")
    page.get_by_label("Reason (kept").fill("generic advice only; we do not answer personal finance or law")
    shoot(page, tmp_path, "queue-bulk-reject")
    page.get_by_role("button", name="Decide the ticked answers").click()
    sync_api.expect(page.locator("#bulk-done")).to_have_text("2 answers rejected.")
    for name in ("finance", "law2"):
        item = queue.store.get_review(queue.held[name])
        assert item is not None and item.status == "rejected" and item.decided_by == REVIEWER[0]
        assert item.reason == "generic advice only; we do not answer personal finance or law"
    # release: the draft goes to the user
    page.goto(f"{queue.ui}/review?tenant=acme&domain=law")
    page.locator(f'tr[data-review-id="{queue.held["law"]}"] input[type="checkbox"]').check()
    page.get_by_label("Decision").select_option("release")
    page.get_by_label("Reason (kept").fill("checked: general information")
    page.get_by_role("button", name="Decide the ticked answers").click()
    sync_api.expect(page.locator("#bulk-done")).to_have_text("1 answer released.")
    released = queue.store.get_review(queue.held["law"])
    assert released is not None and released.status == "approved"
    trail = [event.action for event in queue.store.list_review_events(released.id)]
    assert trail[-2:] == ["claimed", "approved"]
    assert page.errors == []


def test_bulk_skips_and_counts_the_answers_someone_else_claimed_meanwhile(
    page: Any, queue: Queue, tmp_path: Path
) -> None:
    taken, free = queue.held["health"], queue.held["long"]
    sign_in_page(page, queue.ui, REVIEWER)
    page.goto(f"{queue.ui}/review?domain=health")
    for review_id in (taken, free):
        page.locator(f'tr[data-review-id="{review_id}"] input[type="checkbox"]').check()
    # While the reviewer writes the reason, the admin claims one of the ticked answers elsewhere.
    assert queue.store.claim_review(taken, ADMIN[0], utc_now(), 900) is not None
    page.get_by_label("Decision").select_option("reject")
    page.get_by_label("Reason (kept").fill("no personal medical advice")
    page.get_by_role("button", name="Decide the ticked answers").click()
    sync_api.expect(page.locator("#bulk-done")).to_have_text(
        "1 answer rejected; 1 skipped (claimed by someone else or decided already)."
    )
    shoot(page, tmp_path, "queue-bulk-skipped")
    skipped = queue.store.get_review(taken)
    assert skipped is not None and skipped.status == "pending" and skipped.claimed_by == ADMIN[0]
    assert "rejected" not in [event.action for event in queue.store.list_review_events(taken)]
    rejected = queue.store.get_review(free)
    assert rejected is not None and rejected.status == "rejected" and rejected.decided_by == REVIEWER[0]
    # Ticking it again (decided now) is skipped and counted too; the admin's claim is untouched.
    page.goto(f"{queue.ui}/review?domain=health&status=all")
    assert page.locator(f'tr[data-review-id="{free}"]').count() == 1
    assert page.locator(f'tr[data-review-id="{free}"] input[type="checkbox"]').count() == 0  # decided
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    again = page.request.post(
        f"{queue.ui}/review",
        form={"csrf_token": csrf, "bulk_action": "release", "reason": "again", "review_id": free},
    )
    assert again.ok and "0 answers released; 1 skipped" in again.text()
    assert page.errors == []
