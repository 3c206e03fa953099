"""Human review through the gateway, end to end: the OpenAI SDK -> seawall on loopback -> a loopback
upstream stand-in; reviewers over HTTP; a loopback webhook receiver.

These tests ask for the 202 pending-review protocol (``x-seawall-review: accepted``) where they test
its body; the default hold response (a placeholder completion) and the wait mode are in
tests/test_review_sdk.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.responses import Response

from backend_standins import Recorded, StandIn, json_reply, stand_in
from conftest import RunningServer, assert_openai_error, running_server, wait_for
from seawall.settings import load_settings

MODEL = "gpt-test"
TENANT = "acme"
APP_KEY = "sw-review-gateway-app-key"
REVIEWER = "reviewer-token-0123456789"
ADMIN = "admin-token-0123456789abc"
DRAFT = "Adults can usually take 200 to 400 mg of ibuprofen every 4 to 6 hours."
HEALTH = "What is the maximum daily dose of ibuprofen for an adult?"
PLAIN = "What is the capital of France?"
DISCLOSURE = "You are chatting with an AI model."
#: The request header that asks for the 202 pending-review protocol.
ACCEPTED = {"x-seawall-review": "accepted"}


@dataclass
class Setup:
    server: RunningServer
    upstream: StandIn

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.upstream.requests if r.path == "/v1/chat/completions"]

    def hooks(self) -> list[Recorded]:
        return [r for r in self.upstream.requests if r.path == "/hook"]

    def http(self, token: str) -> httpx.Client:
        return self.server.http(headers={"authorization": f"Bearer {token}"})


def _completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": DRAFT}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
    }


async def _reply(request: Recorded) -> Response:
    if request.path == "/hook":
        return json_reply({"ok": True})
    if request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "t"}]})
    if request.body.get("stream"):
        return Response(b"streams are not expected for held requests", status_code=500)
    answer = _completion()
    text = request.body["messages"][-1]["content"]
    if PLAIN in text:
        answer["choices"][0]["message"]["content"] = "Paris."
    return json_reply(answer)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("review-gateway")
    with stand_in(_reply) as upstream:
        settings = load_settings(
            server={"api_keys": [APP_KEY]},
            gateway={
                "enabled": True,
                "upstream": {"base_url": f"{upstream.url}/v1", "max_retries": 0, "total_timeout_s": 20},
                "secret_file": str(tmp / "secret"),
                "tenant": TENANT,
                "risk": {"enabled": False},
                "rate_limits": {"per_user": None},
            },
            store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
            review={
                "enabled": True,
                "uncertain_low": None,  # these tests hold on domains; the band has its own tests
                "reviewer_tokens": {"rita": REVIEWER},
                "admin_tokens": {"root": ADMIN},
                "notify": {
                    "allowed_webhook_hosts": ["127.0.0.1"],
                    "allow_http_webhooks": True,
                    "allow_private_webhooks": True,  # the receiver is on loopback
                },
                "notices": {"disclosure": DISCLOSURE},
            },
        )
        with running_server(settings) as server:
            yield Setup(server, upstream)


@pytest.fixture
def gw(setup: Setup) -> Setup:
    setup.upstream.requests.clear()
    return setup


def test_a_plain_question_is_answered_with_the_disclosure_headers(gw: Setup) -> None:
    with gw.server.client(APP_KEY) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": PLAIN}]
        )
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == "Paris."
    assert raw.headers["x-seawall-disclosure"] == DISCLOSURE
    assert raw.headers["x-seawall-limitations"] == "hallucination, bias, not_professional_advice"
    assert "x-seawall-review-id" not in raw.headers


def test_a_health_answer_is_held_polled_approved_and_delivered(gw: Setup) -> None:
    with gw.server.client(APP_KEY) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": HEALTH}],
            extra_body={
                "seawall": {
                    "review": {
                        "sources": [{"title": "Leaflet", "text": "Max 1200 mg a day without a doctor."}],
                        "webhook": f"{gw.upstream.url}/hook",
                    }
                }
            },
            extra_headers=ACCEPTED,
        )
    received = time.perf_counter()
    assert raw.status_code == 202
    body = json.loads(raw.text)
    assert body["object"] == "chat.completion.pending" and body["status"] == "pending_review"
    assert body["choices"] == [] and body["poll_url"] == f"/v1/seawall/reviews/{body['review_id']}"
    assert raw.headers["x-seawall-review-id"] == body["review_id"]
    assert raw.headers["x-seawall-disclosure"] == DISCLOSURE
    assert DRAFT not in raw.text  # the draft is held back
    [sent] = gw.chat_requests()  # the model was asked
    assert "seawall" not in sent.body

    with gw.http(REVIEWER) as reviewer:
        queue = reviewer.get("/v1/seawall/reviews").json()["data"]
        visible = time.perf_counter()
        [item] = [i for i in queue if i["id"] == body["review_id"]]
        print(f"\nheld answer visible in the queue {1000 * (visible - received):.1f} ms after the 202")
        assert item["reasons"] == ["domain:health"] and item["draft_text"] == DRAFT
        assert item["sources"][0]["title"] == "Leaflet"
        with gw.http(APP_KEY) as app:
            assert app.get(body["poll_url"]).json()["status"] == "pending"
        reviewer.post(f"/v1/seawall/reviews/{body['review_id']}/claim").raise_for_status()
        reviewer.post(f"/v1/seawall/reviews/{body['review_id']}/approve").raise_for_status()
    with gw.http(APP_KEY) as app:
        final = app.get(body["poll_url"]).json()
    assert final["status"] == "approved"
    assert final["completion"]["choices"][0]["message"]["content"] == DRAFT
    wait_for(gw.hooks, 30, "the review.decided hook")
    [hook] = gw.hooks()
    assert json.loads(hook.raw)["type"] == "review.decided"


def test_a_qualifying_stream_gets_202_pending_not_a_stream(gw: Setup) -> None:
    with gw.server.http(headers={"authorization": f"Bearer {APP_KEY}", **ACCEPTED}) as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": HEALTH}]},
        )
    assert response.status_code == 202
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status"] == "pending_review"
    [sent] = gw.chat_requests()
    assert not sent.body.get("stream")  # the upstream was asked for a plain answer


def test_a_declared_domain_is_held_and_a_rejection_reaches_the_poller(gw: Setup) -> None:
    with gw.server.client(APP_KEY) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": PLAIN}],
            extra_body={"seawall": {"review": {"domain": "law", "notes": "tenancy app"}}},
            extra_headers=ACCEPTED,
        )
    assert raw.status_code == 202
    review_id = json.loads(raw.text)["review_id"]
    with gw.http(REVIEWER) as reviewer:
        reviewer.post(f"/v1/seawall/reviews/{review_id}/claim").raise_for_status()
        reviewer.post(
            f"/v1/seawall/reviews/{review_id}/reject", json={"reason": "off-topic"}
        ).raise_for_status()
    with gw.http(APP_KEY) as app:
        final = app.get(f"/v1/seawall/reviews/{review_id}").json()
    assert (final["status"], final["completion"], final["reason"]) == ("rejected", None, "off-topic")


def test_a_bad_review_field_is_a_400_before_the_model_is_called(gw: Setup) -> None:
    with gw.server.client(APP_KEY) as client, pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": HEALTH}],
            extra_body={"seawall": {"review": {"webhook": "https://elsewhere.example/hook"}}},
        )
    assert refused.value.code == "webhook_not_allowed"
    assert gw.chat_requests() == []


def test_feedback_on_a_gateway_response_and_metrics(gw: Setup) -> None:
    with gw.server.client(APP_KEY) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": PLAIN}]
        )
        # One held answer of its own, for the outcome counted below (other tests may not have run).
        held = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": HEALTH}], extra_headers=ACCEPTED
        )
    assert held.status_code == 202
    request_id = raw.headers["x-seawall-request-id"]
    with gw.http(APP_KEY) as app:
        created = app.post(
            "/v1/feedback", json={"response_id": request_id, "category": "wrong", "user": "u1"}
        )
    assert created.status_code == 201
    with gw.http(REVIEWER) as reviewer:
        [report] = [
            r for r in reviewer.get("/v1/seawall/reports").json()["data"] if r["id"] == created.json()["id"]
        ]
        assert report["request_id"] == request_id
        assert_openai_error(reviewer.get("/metrics"), 403)
    with gw.http(ADMIN) as admin:
        metrics = admin.get("/metrics").text
    assert 'seawall_gateway_requests_total{outcome="ok"}' in metrics
    assert 'seawall_gateway_requests_total{outcome="held_for_review"}' in metrics
    assert 'seawall_reports{status="new"}' in metrics


def test_a_report_made_with_the_sdks_completion_id_finds_its_request(gw: Setup) -> None:
    """The id an app naturally has (``completion.id``) links the report to the audit record."""
    with gw.server.client(APP_KEY) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": PLAIN}]
        )
    completion = raw.parse()
    request_id = raw.headers["x-seawall-request-id"]
    assert completion.id != "chatcmpl-upstream"  # the upstream's id is not what the app gets
    with gw.http(APP_KEY) as app:
        created = app.post(
            "/v1/feedback", json={"response_id": completion.id, "category": "wrong", "user": "u-sdk"}
        )
    assert created.status_code == 201, created.text
    with gw.http(REVIEWER) as reviewer:
        report = reviewer.get(f"/v1/seawall/reports/{created.json()['id']}").json()
    assert report["request_id"] == request_id


def test_reviewer_routes_refuse_the_app_key(gw: Setup, tmp_path: Path) -> None:
    with gw.http(APP_KEY) as app:
        assert_openai_error(app.get("/v1/seawall/reviews"), 401, "invalid_reviewer_token")
        assert_openai_error(app.get("/v1/seawall/reports"), 401, "invalid_reviewer_token")
