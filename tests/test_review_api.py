"""Human review, user reports, notices and metrics over HTTP: real uvicorn servers on loopback,
a real SQLite store, a real loopback webhook receiver and a real SMTP server (aiosmtpd).

The review routes are mounted on a small FastAPI app with the app-key check the server uses
(:class:`KeyAuthenticator`); answers are held through :class:`ReviewHook` as the gateway holds
them (the gateway's own path is in tests/test_review_gateway.py).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.responses import Response

from backend_standins import Recorded, StandIn, json_reply, serving, stand_in
from conftest import assert_openai_error, start_on_free_port, wait_for
from seawall.gateway.access import KeyAuthenticator
from seawall.review import ReviewHook, ReviewService, ReviewSettings, add_review_routes
from seawall.review.metrics import ReviewMetrics
from seawall.review.notify import SIGNATURE_HEADER
from seawall.settings import StoreSettings
from seawall.store import SqlStore, open_store

APP_KEY = "app-key-0123456789"
OTHER_TENANT_KEY = "app-key-other-tenant"
ANN = "ann-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcd"
SIGNING = "whsec-test-secret"
QUESTION = "What dose of ibuprofen can I give my 6 year old?"
DRAFT = "Children aged 6 can usually take 150 mg every 6-8 hours."


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Mailbox:
    """An aiosmtpd handler that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        self.arrived.set()
        return "250 OK"


@dataclass
class Env:
    root: str
    service: ReviewService
    hook: ReviewHook
    store: SqlStore
    clock: Clock
    hooks: StandIn
    mailbox: Mailbox
    hook_status: list[int]
    #: Cleared, the webhook receiver holds every reply until it is set again (a slow receiver).
    hook_open: threading.Event
    #: How many replies the webhook receiver has sent.
    hook_answered: list[int]

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.root, headers=headers, timeout=30)

    def hold(
        self, question: str = QUESTION, *, webhook: str | None = None, tenant: str = "acme"
    ) -> dict[str, Any]:
        extension: dict[str, Any] = {
            "domain": "health",
            "sources": [{"title": "Leaflet", "text": "Children 6-9 years: 150 mg up to 3 times a day."}],
            "notes": "pharmacy chatbot",
        }
        if webhook:
            extension["webhook"] = webhook
        body = {
            "model": "gpt-test",
            "messages": [{"role": "user", "content": question}],
            "seawall": {"review": extension},
        }
        decisions = [
            {"step": "input_moderation", "action": "allow", "categories": [], "scores": {"violence": 0.01}}
        ]

        async def run() -> dict[str, Any]:
            decision = await self.hook.check(body, decisions)
            assert decision is not None
            completion = {
                "id": "chatcmpl-upstream-1",
                "object": "chat.completion",
                "created": 1700000000,
                "model": "gpt-test",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": DRAFT}, "finish_reason": "stop"}
                ],
            }
            return await self.hook.hold(
                decision,
                body,
                completion,
                request_id=f"swreq-{time.monotonic_ns()}",
                tenant=tenant,
                safety_id="sid",
            )

        return asyncio.run(run())


def start_smtp(mailbox: Mailbox) -> Controller:
    """aiosmtpd's SMTP server on loopback, listening (it needs its port before it binds)."""
    started: list[Controller] = []

    def start(port: int) -> bool:
        smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
        try:
            smtp.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False  # another process bound the port first
            raise
        started.append(smtp)
        return True

    start_on_free_port(start, "the SMTP server")
    return started[0]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("review")
    mailbox = Mailbox()
    smtp = start_smtp(mailbox)
    hook_status = [200]
    hook_open = threading.Event()
    hook_open.set()
    hook_answered = [0]

    async def receive(request: Recorded) -> Response:
        await asyncio.to_thread(hook_open.wait, 60)
        hook_answered[0] += 1
        return json_reply({"ok": True}, hook_status.pop(0) if len(hook_status) > 1 else hook_status[0])

    try:
        with stand_in(receive) as hooks:
            settings = ReviewSettings(
                enabled=True,
                reviewer_tokens={"ann": SecretStr(ANN), "bob": SecretStr(BOB)},
                admin_tokens={"root": SecretStr(ADMIN)},
                claim_ttl_s=60,
                feedback_limit={"requests": 3, "window_s": 3600},
                notify={
                    "webhook_url": f"{hooks.url}/operator",
                    "smtp": {
                        "host": "127.0.0.1",
                        "port": smtp.port,
                        "security": "none",
                        "sender": "seawall@test.invalid",
                        "recipients": ["safety@test.invalid"],
                    },
                    "allowed_webhook_hosts": ["127.0.0.1"],
                    "allow_http_webhooks": True,
                    "allow_private_webhooks": True,  # the receiver is on loopback
                    "signing_secret": SIGNING,
                    "retries": 3,
                    "backoff_s": 0.05,
                },
            )
            store = open_store(StoreSettings(url=f"sqlite:///{tmp / 'seawall.db'}"))
            clock = Clock()
            service = ReviewService(store, settings, clock=clock)
            app = FastAPI()
            app.state.access = KeyAuthenticator(
                [SecretStr(APP_KEY)], None, default_tenant="acme", require=True
            )
            add_review_routes(app, settings, service=service)
            with serving(app) as server:
                yield Env(
                    server.url,
                    service,
                    ReviewHook(service),
                    store,
                    clock,
                    hooks,
                    mailbox,
                    hook_status,
                    hook_open,
                    hook_answered,
                )
            service.close()
            store.close()
    finally:
        smtp.stop()


@pytest.fixture
def e(env: Env) -> Env:
    env.clock.now = datetime.now(UTC)
    env.service.notifier.flush(10)
    env.hooks.requests.clear()
    env.mailbox.messages.clear()
    env.mailbox.arrived.clear()
    env.hook_status[:] = [200]
    env.hook_open.set()
    return env


def deliveries(env: Env, path: str) -> list[dict[str, Any]]:
    assert env.service.notifier.flush(10)
    return [json.loads(r.raw) for r in env.hooks.requests if r.path == path]


# ----------------------------------------------------------------- notices and access


def test_notices_are_public(e: Env) -> None:
    with e.http() as http:
        response = http.get("/v1/seawall/notices")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "seawall.notices"
    assert body["disclosure"].startswith("You are talking to an AI")
    assert [n["id"] for n in body["limitations"]] == ["hallucination", "bias", "not_professional_advice"]
    assert e.hook.headers()["x-seawall-disclosure"] == body["disclosure"]
    assert e.hook.headers()["x-seawall-limitations"] == "hallucination, bias, not_professional_advice"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/seawall/reviews"),
        ("GET", "/v1/seawall/reviews/rev_x/events"),
        ("POST", "/v1/seawall/reviews/rev_x/claim"),
        ("POST", "/v1/seawall/reviews/rev_x/approve"),
        ("GET", "/v1/seawall/reports"),
        ("GET", "/v1/seawall/reports/rpt_x"),
        ("POST", "/v1/seawall/reports/rpt_x"),
        ("GET", "/metrics"),
    ],
)
@pytest.mark.parametrize("token", [None, APP_KEY, "ann-token-0123456789abcdeX"])
def test_staff_routes_refuse_callers_without_a_staff_token(
    e: Env, method: str, path: str, token: str | None
) -> None:
    with e.http(token) as http:
        response = http.request(method, path, json={})
    assert_openai_error(response, 401, "invalid_reviewer_token")


def test_metrics_are_for_admins_only(e: Env) -> None:
    with e.http(ANN) as http:
        assert_openai_error(http.get("/metrics"), 403, "admin_required")
    with e.http(ADMIN) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    assert 'seawall_review_items{status="pending"}' in response.text


def test_polling_needs_the_app_key_and_sees_only_its_tenant(e: Env) -> None:
    pending = e.hold()
    with e.http() as http:
        assert_openai_error(http.get(pending["poll_url"]), 401)
    with e.http(OTHER_TENANT_KEY) as http:
        assert_openai_error(http.get(pending["poll_url"]), 401)
    other = e.hold(tenant="globex")
    with e.http(APP_KEY) as http:
        assert http.get(pending["poll_url"]).json()["status"] == "pending"
        assert_openai_error(http.get(other["poll_url"]), 404, "not_found")  # another tenant's item
        assert_openai_error(http.get("/v1/seawall/reviews/rev_unknown"), 404, "not_found")


# ----------------------------------------------------------------- the review flow


def test_held_answer_edited_by_its_claimer_reaches_the_poller_and_the_webhook(e: Env) -> None:
    pending = e.hold(webhook=f"{e.hooks.url}/client-hook")
    assert pending["object"] == "chat.completion.pending" and pending["status"] == "pending_review"
    assert pending["choices"] == [] and pending["review_id"].startswith("rev_")
    assert pending["poll_url"] == f"/v1/seawall/reviews/{pending['review_id']}"
    review_id = pending["review_id"]

    with e.http(APP_KEY) as client:
        polled = client.get(pending["poll_url"]).json()
    assert polled["status"] == "pending" and polled["completion"] is None

    with e.http(ANN) as ann, e.http(BOB) as bob:
        queue = ann.get("/v1/seawall/reviews", params={"claimable": "true", "domain": "health"}).json()[
            "data"
        ]
        mine = next(item for item in queue if item["id"] == review_id)
        # the reviewer sees the request, the sources, the notes, the draft and why it was held
        assert mine["request"]["messages"][0]["content"] == QUESTION
        assert mine["sources"] == [
            {"title": "Leaflet", "text": "Children 6-9 years: 150 mg up to 3 times a day."}
        ]
        assert mine["notes"] == "pharmacy chatbot"
        assert mine["draft_text"] == DRAFT
        assert mine["reasons"] == ["declared:health"] and mine["domain"] == "health"

        assert_openai_error(ann.post(f"/v1/seawall/reviews/{review_id}/approve"), 409, "review_not_claimed")
        claimed = ann.post(f"/v1/seawall/reviews/{review_id}/claim")
        assert claimed.status_code == 200 and claimed.json()["claimed_by"] == "ann"
        assert_openai_error(bob.post(f"/v1/seawall/reviews/{review_id}/claim"), 409, "review_claimed")
        assert_openai_error(
            bob.post(f"/v1/seawall/reviews/{review_id}/edit", json={"text": "Bob's text"}),
            409,
            "review_not_claimed",
        )
        assert review_id not in [
            i["id"] for i in bob.get("/v1/seawall/reviews?claimable=true").json()["data"]
        ]
        assert_openai_error(ann.post(f"/v1/seawall/reviews/{review_id}/edit", json={}), 400)
        too_long = ann.post(f"/v1/seawall/reviews/{review_id}/edit", json={"text": "x" * 20_001})
        assert_openai_error(too_long, 413)
        edited = ann.post(
            f"/v1/seawall/reviews/{review_id}/edit", json={"text": "Please ask your pharmacist for the dose."}
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["status"] == "edited" and edited.json()["decided_by"] == "ann"
        assert_openai_error(ann.post(f"/v1/seawall/reviews/{review_id}/approve"), 409, "review_decided")
        trail = ann.get(f"/v1/seawall/reviews/{review_id}/events").json()["data"]
    assert [(t["action"], t["actor"]) for t in trail] == [
        ("held", "gateway"),
        ("claimed", "ann"),
        ("edited", "ann"),
    ]

    with e.http(APP_KEY) as client:
        final = client.get(pending["poll_url"]).json()
    assert final["status"] == "edited" and final["reason"] is None
    completion = final["completion"]
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Please ask your pharmacist for the dose.",
    }
    assert completion["choices"][0]["finish_reason"] == "stop"

    [delivered] = [r for r in (e.service.notifier.flush(10) and e.hooks.requests) if r.path == "/client-hook"]
    envelope = json.loads(delivered.raw)
    assert envelope["type"] == "review.decided" and envelope["data"]["id"] == review_id
    assert envelope["data"]["completion"]["choices"][0]["message"]["content"].startswith("Please ask")
    expected = hmac.new(SIGNING.encode(), delivered.raw, hashlib.sha256).hexdigest()
    assert delivered.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    # the operator hears about held answers, not (by default) about decisions
    operator = deliveries(e, "/operator")
    assert [d["type"] for d in operator] == ["review.held"]
    assert e.mailbox.arrived.wait(30)
    assert any(review_id in str(m["Subject"]) for m in e.mailbox.messages)


def test_rejection_and_approval_as_the_poller_sees_them(e: Env) -> None:
    rejected, approved = e.hold(), e.hold()
    with e.http(BOB) as bob:
        bob.post(f"/v1/seawall/reviews/{rejected['review_id']}/claim").raise_for_status()
        assert_openai_error(bob.post(f"/v1/seawall/reviews/{rejected['review_id']}/reject", json={}), 400)
        bob.post(
            f"/v1/seawall/reviews/{rejected['review_id']}/reject",
            json={"reason": "dosing advice for a child"},
        ).raise_for_status()
        bob.post(f"/v1/seawall/reviews/{approved['review_id']}/claim").raise_for_status()
        bob.post(f"/v1/seawall/reviews/{approved['review_id']}/approve").raise_for_status()
    with e.http(APP_KEY) as client:
        no = client.get(rejected["poll_url"]).json()
        yes = client.get(approved["poll_url"]).json()
    assert (no["status"], no["completion"], no["reason"]) == ("rejected", None, "dosing advice for a child")
    assert yes["status"] == "approved" and yes["completion"]["choices"][0]["message"]["content"] == DRAFT


def test_an_expired_claim_returns_the_item_to_the_queue(e: Env) -> None:
    pending = e.hold()
    review_id = pending["review_id"]
    with e.http(ANN) as ann, e.http(BOB) as bob:
        ann.post(f"/v1/seawall/reviews/{review_id}/claim").raise_for_status()
        e.clock.now += timedelta(seconds=61)  # past claim_ttl_s
        assert review_id in [i["id"] for i in bob.get("/v1/seawall/reviews?claimable=true").json()["data"]]
        assert_openai_error(ann.post(f"/v1/seawall/reviews/{review_id}/approve"), 409, "review_not_claimed")
        assert bob.post(f"/v1/seawall/reviews/{review_id}/claim").json()["claimed_by"] == "bob"
        bob.post(f"/v1/seawall/reviews/{review_id}/release").raise_for_status()
        assert ann.post(f"/v1/seawall/reviews/{review_id}/claim").json()["claimed_by"] == "ann"


def test_many_reviewers_claiming_over_http_exactly_one_wins(e: Env) -> None:
    review_id = e.hold()["review_id"]
    tokens = [ANN, BOB, ADMIN] * 4
    barrier = threading.Barrier(len(tokens))
    statuses: list[int] = []

    def claim(token: str) -> None:
        with e.http(token) as http:
            barrier.wait()
            statuses.append(http.post(f"/v1/seawall/reviews/{review_id}/claim").status_code)

    threads = [threading.Thread(target=claim, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One reviewer wins; their own later claims extend it (200), everyone else gets 409.
    claimers = {ev.actor for ev in e.store.list_review_events(review_id) if ev.action == "claimed"}
    assert len(claimers) == 1
    assert sorted(statuses) == [200] * 4 + [409] * 8


def test_held_answer_is_in_the_queue_as_soon_as_the_client_has_its_pending_body(e: Env) -> None:
    with e.http(ANN) as ann:
        ann.get("/v1/seawall/reviews")  # warm the connection
        timings = []
        for _ in range(5):
            began = time.perf_counter()
            review_id = e.hold()["review_id"]
            held = time.perf_counter()
            listed = ann.get("/v1/seawall/reviews", params={"limit": 200}).json()["data"]
            seen = time.perf_counter()
            assert review_id in [item["id"] for item in listed]  # visible on the first look
            timings.append((held - began, seen - held))
    hold_ms = sorted(t[0] for t in timings)[2] * 1000
    visible_ms = sorted(t[1] for t in timings)[2] * 1000
    print(
        f"\nhold (store write + notify queue): median {hold_ms:.1f} ms; "
        f"queue listing that shows it: {visible_ms:.1f} ms"
    )


# ----------------------------------------------------------------- reports


def test_feedback_is_stored_rate_limited_per_source_notified_and_triaged(e: Env) -> None:
    user = f"user-{time.monotonic_ns()}"
    with e.http(APP_KEY) as client:
        assert_openai_error(
            client.post("/v1/feedback", json={"response_id": "swreq-1", "category": "rude"}), 400
        )
        assert_openai_error(client.post("/v1/feedback", json={"category": "wrong"}), 400)
        created = client.post(
            "/v1/feedback",
            json={
                "response_id": "swreq-abc",
                "category": "wrong",
                "comment": "The dose is for adults.",
                "contact": "me@example.com",
                "user": user,
            },
        )
        assert created.status_code == 201, created.text
        report_id = created.json()["id"]
        for _ in range(2):
            assert (
                client.post(
                    "/v1/feedback", json={"response_id": "x", "category": "other", "user": user}
                ).status_code
                == 201
            )
        limited = client.post("/v1/feedback", json={"response_id": "x", "category": "other", "user": user})
        assert_openai_error(limited, 429, "rate_limit_exceeded")
        assert int(limited.headers["retry-after"]) >= 1
        # The limit counts what the client cannot choose (its key and address): a new ``user``
        # or session id does not get around it.
        for dodge in ({"user": user + "2"}, {"user": f"user-{time.monotonic_ns()}"}):
            again = client.post("/v1/feedback", json={"response_id": "x", "category": "biased", **dodge})
            assert_openai_error(again, 429, "rate_limit_exceeded")
        session = client.post(
            "/v1/feedback",
            json={"response_id": "x", "category": "biased"},
            headers={"x-seawall-session": f"s-{time.monotonic_ns()}"},
        )
        assert_openai_error(session, 429, "rate_limit_exceeded")
    with e.http() as anonymous:
        assert_openai_error(
            anonymous.post("/v1/feedback", json={"response_id": "x", "category": "other"}), 401
        )

    operator = deliveries(e, "/operator")
    assert report_id in [d["data"]["id"] for d in operator if d["type"] == "report.created"]
    assert e.mailbox.arrived.wait(30)
    wait_for(lambda: any(report_id in str(m["Subject"]) for m in e.mailbox.messages), 30, "the report's mail")
    [mail] = [m for m in e.mailbox.messages if report_id in str(m["Subject"])]
    assert mail["To"] == "safety@test.invalid" and "new user report (wrong)" in mail["Subject"]
    assert "The dose is for adults." in mail.get_payload()

    with e.http(ANN) as ann:
        queue = ann.get("/v1/seawall/reports", params={"status": "new", "category": "wrong"}).json()["data"]
        mine = next(r for r in queue if r["id"] == report_id)
        assert (mine["request_id"], mine["contact"], mine["comment"]) == (
            "swreq-abc",
            "me@example.com",
            "The dose is for adults.",
        )
        assert_openai_error(ann.post(f"/v1/seawall/reports/{report_id}", json={"status": "closed"}), 400)
        moved = ann.post(
            f"/v1/seawall/reports/{report_id}", json={"status": "investigating", "note": "checking"}
        )
        assert moved.json()["status"] == "investigating"
        # closing (or reopening) is for admins, on the API as on the desk
        closing = ann.post(f"/v1/seawall/reports/{report_id}", json={"status": "resolved"})
        assert_openai_error(closing, 403, "admin_required")
        huge = ann.post(f"/v1/seawall/reports/{report_id}", json={"note": "x" * 20_001})
        assert_openai_error(huge, 413)
    with e.http(ADMIN) as admin:
        closed = {"status": "resolved", "note": "fixed the prompt"}
        assert admin.post(f"/v1/seawall/reports/{report_id}", json=closed).status_code == 200
        detail = admin.get(f"/v1/seawall/reports/{report_id}").json()
    assert detail["status"] == "resolved"
    assert [n["text"] for n in detail["notes"]] == ["checking", "fixed the prompt"]
    assert [(ev["action"], ev["actor"]) for ev in detail["events"]] == [
        ("reported", "user"),
        ("triaged", "ann"),
        ("triaged", "root"),
    ]


# ----------------------------------------------------------------- notifications and metrics


def test_a_failing_webhook_is_retried_and_never_blocks_the_request(e: Env) -> None:
    e.hook_status[:] = [500, 503, 200]
    answered = e.hook_answered[0]
    e.hook_open.clear()  # the receiver answers nothing until the hold has returned
    try:
        e.hold()
        assert e.hook_answered[0] == answered  # the hold did not wait for a delivery
    finally:
        e.hook_open.set()
    operator = [r for r in (e.service.notifier.flush(10) and e.hooks.requests) if r.path == "/operator"]
    assert len(operator) == 3  # two failures, then the delivery
    assert len({r.raw for r in operator}) == 1  # the same event each time


def test_a_webhook_that_keeps_failing_is_given_up_and_logged(
    e: Env, caplog: pytest.LogCaptureFixture
) -> None:
    e.hook_status[:] = [500]
    before = len(e.service.notifier.failures)
    e.hold()
    assert e.service.notifier.flush(10)
    attempts = [r for r in e.hooks.requests if r.path == "/operator"]
    assert len(attempts) == 4  # the first try and three retries
    assert len(e.service.notifier.failures) == before + 1
    assert "failed for good" in caplog.text


def test_request_webhooks_must_name_an_allowed_host(e: Env) -> None:
    hook = e.hook
    for url, code in [
        ("https://evil.example.net/x", "webhook_not_allowed"),
        ("ftp://127.0.0.1/x", "webhook_not_allowed"),
        ("http://user:pw@127.0.0.1/x", "webhook_not_allowed"),
    ]:
        with pytest.raises(Exception) as refused:
            hook.validate({"messages": [], "seawall": {"review": {"webhook": url}}})
        assert getattr(refused.value, "code", None) == code, url
        assert refused.value.status_code == 400  # type: ignore[attr-defined]
    hook.validate({"messages": [], "seawall": {"review": {"webhook": "http://127.0.0.1:9/x"}}})


def test_metrics_count_reviews_decisions_and_reports(e: Env) -> None:
    review_id = e.hold()["review_id"]
    e.hook.observe(
        {
            "outcome": "refused_input",
            "risk": "high",
            "decisions": [
                {"step": "input_moderation", "action": "refuse", "categories": ["violence"], "scores": {}}
            ],
        }
    )
    with e.http(ANN) as ann:
        ann.post(f"/v1/seawall/reviews/{review_id}/claim").raise_for_status()
        e.clock.now += timedelta(seconds=42)
        ann.post(f"/v1/seawall/reviews/{review_id}/approve").raise_for_status()
    with e.http(ADMIN) as admin:
        text = admin.get("/metrics").text
    counts = e.store.review_counts()
    assert f'seawall_review_items{{status="pending"}} {float(counts["pending"])}' in text
    assert f'seawall_review_items{{status="approved"}} {float(counts["approved"])}' in text
    assert 'seawall_gateway_requests_total{outcome="refused_input"}' in text
    assert 'seawall_gateway_blocks_total{reason="refused_input"}' in text
    assert 'seawall_gateway_flags_total{category="violence",step="input_moderation"}' in text
    assert 'seawall_gateway_risk_total{level="high"}' in text
    assert 'seawall_review_decisions_total{decision="approve"}' in text
    assert 'seawall_review_time_to_decision_seconds_bucket{le="60.0"}' in text
    assert 'seawall_reports{status="new"}' in text


def test_metrics_have_step_latency_upstream_errors_guard_failures_and_process_figures(e: Env) -> None:
    e.hook.observe(
        {
            "outcome": "upstream_error",
            "error": {"status": 504, "code": "upstream_timeout"},
            "decisions": [
                {"step": "input_moderation", "action": "failed_open", "categories": [], "scores": {}},
            ],
            "latency_ms": {"input_moderation": 12.5, "upstream": 30000.0, "total": 30013.0},
        }
    )
    with e.http(ADMIN) as admin:
        text = admin.get("/metrics").text
    assert 'seawall_gateway_step_seconds_bucket{le="0.025",step="input_moderation"}' in text
    assert 'seawall_gateway_step_seconds_count{step="upstream"}' in text
    assert 'seawall_gateway_upstream_errors_total{code="upstream_timeout",status="504"} 1.0' in text
    assert 'seawall_gateway_guard_failures_total{action="failed_open",step="input_moderation"}' in text
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text


def test_figures_read_from_the_store_are_right_after_a_restart(e: Env) -> None:
    """A new process (a fresh ReviewMetrics on the same store) reports the queue, the reports and
    the last day's requests at once, before it has counted anything itself."""
    e.hold()
    e.store.write_audit(
        {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": f"swreq-restart-{time.monotonic_ns()}",
            "tenant": "acme",
            "stream": False,
            "outcome": "filtered_output",
            "risk": "medium",
            "decisions": [],
            "latency_ms": {"total": 5.0},
        }
    )
    fresh = ReviewMetrics(e.store).exposition().decode()
    counts = e.store.review_counts()
    assert f'seawall_review_items{{status="pending"}} {float(counts["pending"])}' in fresh
    assert 'seawall_reports{status="new"}' in fresh
    assert re.search(r'seawall_gateway_requests_24h\{outcome="filtered_output"\} [1-9]', fresh), fresh
    assert "seawall_gateway_requests_total{" not in fresh  # the process's own counters start empty
