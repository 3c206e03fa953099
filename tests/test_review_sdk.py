"""Human review does not break an app that uses the OpenAI SDK unchanged (issue 13).

The official ``openai`` client -> seawall on loopback -> a loopback upstream stand-in, in each hold
response: the default placeholder completion (plain and streamed), the 202 protocol asked for by
header and by setting, and the synchronous wait with a reviewer's decision arriving in time (made
through the reviewer API from another thread, in this process and from a second replica on the same
store) or not (the placeholder).

Three servers (replicas) on one SQLite store: ``a`` with the defaults (placeholder; a long wait
bound, and a store poll longer still, so only a decision made in its own process ends a wait), ``b``
with ``hold_response: accepted`` and a short wait bound, ``c`` with ``hold_response: wait`` and a
short store poll (it sees decisions made on the other replicas).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from starlette.responses import Response

from backend_standins import Recorded, StandIn, json_reply, stand_in
from conftest import RunningServer, running_server
from seawall.gateway.pipeline import REQUEST_ID_HEADER
from seawall.settings import Settings, load_settings

MODEL = "gpt-test"
TENANT = "acme"
APP_KEY = "sw-review-sdk-app-key"
REVIEWER = "reviewer-token-0123456789"
DRAFT = "Adults can usually take 200 to 400 mg of ibuprofen every 4 to 6 hours."
EDITED = "Ask a pharmacist: the dose depends on your weight and other medicines."
PLAIN = "What is the capital of France?"
PLACEHOLDER = "A person is checking this answer before it is shared. Please check back in a little while."
REJECTED = "This answer was withheld after a review by a person."
A_WAIT_S = 20.0  # long: the decision always comes first
A_POLL_S = 60.0  # longer than the wait: only a decision made in this process ends it early
B_WAIT_S = 1.0  # short: the wait times out
C_POLL_S = 0.3


@dataclass
class Side:
    server: RunningServer
    tmp: Path

    def record(self, request_id: str) -> dict[str, Any]:
        lines = (self.tmp / "audit.jsonl").read_text().splitlines()
        [record] = [r for r in map(json.loads, lines) if r["request_id"] == request_id]
        return record


@dataclass
class Setup:
    a: Side
    b: Side
    c: Side
    upstream: StandIn

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.upstream.requests if r.path == "/v1/chat/completions"]


async def _reply(request: Recorded) -> Response:
    if request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "t"}]})
    if request.body.get("stream"):
        return Response(b"streams are not expected for held requests", status_code=500)
    content = "Paris." if PLAIN in request.body["messages"][-1]["content"] else DRAFT
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


def _settings(tmp: Path, shared: Path, upstream_url: str, **review: Any) -> Settings:
    return load_settings(
        server={"api_keys": [APP_KEY]},
        gateway={
            "enabled": True,
            "upstream": {"base_url": f"{upstream_url}/v1", "max_retries": 0, "total_timeout_s": 20},
            "secret_file": str(shared / "secret"),
            "audit_file": str(tmp / "audit.jsonl"),
            "tenant": TENANT,
            "risk": {"enabled": False},
            "rate_limits": {"per_user": None},
        },
        store={"url": f"sqlite:///{shared / 'seawall.db'}"},
        review={
            "enabled": True,
            "detect_domains": False,  # held when the request declares a domain
            "uncertain_low": None,
            "reviewer_tokens": {"rita": REVIEWER},
            **review,
        },
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    shared = tmp_path_factory.mktemp("review-sdk")
    for name in "abc":
        (shared / name).mkdir()
    with stand_in(_reply) as upstream:
        a = _settings(shared / "a", shared, upstream.url, wait_s=A_WAIT_S, wait_poll_s=A_POLL_S)
        b = _settings(shared / "b", shared, upstream.url, hold_response="accepted", wait_s=B_WAIT_S)
        c = _settings(shared / "c", shared, upstream.url, hold_response="wait", wait_poll_s=C_POLL_S)
        with running_server(a) as server_a, running_server(b) as server_b, running_server(c) as server_c:
            sides = [
                Side(server, shared / name)
                for server, name in zip((server_a, server_b, server_c), "abc", strict=True)
            ]
            yield Setup(*sides, upstream)


@pytest.fixture
def gw(setup: Setup) -> Setup:
    setup.upstream.requests.clear()
    return setup


def held(tag: str) -> dict[str, Any]:
    """Request fields that get the answer held (a declared domain), tagged for the reviewer to find."""
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "How much ibuprofen can I take?"}],
        "extra_body": {"seawall": {"review": {"domain": "health", "notes": tag}}},
    }


@dataclass
class Reviewer:
    """A reviewer in another thread: finds the item with the ``tag`` note, claims and decides it."""

    server: RunningServer
    tag: str
    action: str
    payload: dict[str, Any] = field(default_factory=dict)
    decided_at: float | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._work, daemon=True)

    def __enter__(self) -> Reviewer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        try:
            headers = {"authorization": f"Bearer {REVIEWER}"}
            with self.server.http(headers=headers) as http:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    queue = http.get("/v1/seawall/reviews", params={"limit": 200}).json()["data"]
                    found = [item for item in queue if item["notes"] == self.tag]
                    if found:
                        review_id = found[0]["id"]
                        http.post(f"/v1/seawall/reviews/{review_id}/claim").raise_for_status()
                        decided = http.post(
                            f"/v1/seawall/reviews/{review_id}/{self.action}", json=self.payload
                        )
                        decided.raise_for_status()
                        self.decided_at = time.monotonic()
                        return
                    time.sleep(0.05)
                raise AssertionError(f"no held item with the note {self.tag!r} in the queue")
        except BaseException as exc:
            self.error = exc


def new_tag() -> str:
    return f"sdk-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------- placeholder (the default)


def test_a_held_answer_is_an_ordinary_completion_the_sdk_reads(gw: Setup) -> None:
    with gw.a.server.client(APP_KEY) as client:
        raw = client.chat.completions.with_raw_response.create(**held(new_tag()))
    reply = raw.parse()
    assert raw.status_code == 200
    assert reply.choices[0].message.content == PLACEHOLDER
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.role == "assistant"
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert DRAFT not in raw.text  # the draft is held back
    review = (reply.model_extra or {})["seawall"]["review"]
    assert review["status"] == "pending" and review["id"].startswith("rev_")
    assert review["poll_url"] == f"/v1/seawall/reviews/{review['id']}" and review["reasons"] == ["declared"]
    assert raw.headers["x-seawall-review-id"] == review["id"]
    assert raw.headers["x-seawall-review-status"] == "pending"
    assert raw.headers["x-seawall-poll-url"] == review["poll_url"]
    [sent] = gw.chat_requests()  # the model was asked, the draft stored for the reviewer
    assert not sent.body.get("stream")

    with gw.a.server.http(headers={"authorization": f"Bearer {APP_KEY}"}) as app:
        assert app.get(review["poll_url"]).json()["status"] == "pending"
    with gw.a.server.http(headers={"authorization": f"Bearer {REVIEWER}"}) as reviewer:
        item = reviewer.get(review["poll_url"]).json()
        assert item["draft_text"] == DRAFT
        reviewer.post(f"{review['poll_url']}/claim").raise_for_status()
        reviewer.post(f"{review['poll_url']}/approve").raise_for_status()
    with gw.a.server.http(headers={"authorization": f"Bearer {APP_KEY}"}) as app:
        final = app.get(review["poll_url"]).json()
    assert final["status"] == "approved" and final["completion"]["choices"][0]["message"]["content"] == DRAFT
    record = gw.a.record(raw.headers[REQUEST_ID_HEADER])
    assert record["outcome"] == "held_for_review"
    [hold] = [d for d in record["decisions"] if d["step"] == "review"]
    assert hold["review_id"] == review["id"] and hold["response"] == "placeholder"


def test_a_held_stream_is_a_valid_stream_of_the_placeholder(gw: Setup) -> None:
    with gw.a.server.client(APP_KEY) as client:
        raw = client.chat.completions.with_raw_response.create(**held(new_tag()), stream=True)
        chunks = list(raw.parse())
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-seawall-review-status"] == "pending"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PLACEHOLDER
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and {c.model for c in chunks} == {MODEL}
    reviews = {json.dumps((c.model_extra or {})["seawall"], sort_keys=True) for c in chunks}
    [review] = [json.loads(r)["review"] for r in reviews]  # the same in every chunk
    assert review["status"] == "pending" and review["id"] == raw.headers["x-seawall-review-id"]
    [sent] = gw.chat_requests()
    assert not sent.body.get("stream")  # the upstream was asked for a plain answer, then held

    with gw.a.server.http(headers={"authorization": f"Bearer {APP_KEY}"}) as http:
        fields = held(new_tag())
        body = {**fields.pop("extra_body"), **fields, "stream": True}
        text = http.post("/v1/chat/completions", json=body).text
    assert text.startswith("data: {") and text.endswith("data: [DONE]\n\n") and DRAFT not in text


def test_an_answer_that_is_not_held_has_no_review_fields(gw: Setup) -> None:
    with gw.a.server.client(APP_KEY) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": PLAIN}],
            extra_headers={"x-seawall-review": "wait"},
        )
    assert raw.status_code == 200 and raw.parse().choices[0].message.content == "Paris."
    assert "seawall" not in json.loads(raw.text) and "x-seawall-review-id" not in raw.headers


def test_an_unknown_review_mode_is_a_400_before_the_model_is_called(gw: Setup) -> None:
    with gw.a.server.client(APP_KEY) as client, pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**held(new_tag()), extra_headers={"x-seawall-review": "later"})
    assert refused.value.code == "invalid_review_mode"
    assert refused.value.param == "x-seawall-review"
    assert gw.chat_requests() == []


# ----------------------------------------------------------------- the 202 protocol, asked for


def _assert_pending(raw: Any) -> dict[str, Any]:
    assert raw.status_code == 202
    assert raw.headers["content-type"].startswith("application/json")
    raw.http_response.read()  # a stream=True request's body is read on demand
    body = json.loads(raw.text)
    assert body["object"] == "chat.completion.pending" and body["status"] == "pending_review"
    assert body["choices"] == [] and body["poll_url"] == f"/v1/seawall/reviews/{body['review_id']}"
    assert raw.headers["x-seawall-review-id"] == body["review_id"]
    assert raw.headers["location"] == body["poll_url"]
    assert DRAFT not in raw.text
    return body


def test_an_app_asks_for_the_202_protocol_with_the_header(gw: Setup) -> None:
    accepted = {"x-seawall-review": "accepted"}
    with gw.a.server.client(APP_KEY) as client:
        _assert_pending(
            client.chat.completions.with_raw_response.create(**held(new_tag()), extra_headers=accepted)
        )
        streamed = client.chat.completions.with_raw_response.create(
            **held(new_tag()), stream=True, extra_headers=accepted
        )
        _assert_pending(streamed)  # JSON, not a stream


def test_the_202_protocol_as_the_setting_and_the_header_overriding_it(gw: Setup) -> None:
    with gw.b.server.client(APP_KEY) as client:
        _assert_pending(client.chat.completions.with_raw_response.create(**held(new_tag())))
        _assert_pending(client.chat.completions.with_raw_response.create(**held(new_tag()), stream=True))
        reply = client.chat.completions.create(
            **held(new_tag()), extra_headers={"x-seawall-review": "placeholder"}
        )
    assert reply.choices[0].message.content == PLACEHOLDER


# ----------------------------------------------------------------- wait: the decision in time


def test_wait_returns_the_edited_answer_when_a_reviewer_decides_in_time(gw: Setup) -> None:
    tag = new_tag()
    with gw.a.server.client(APP_KEY) as client, Reviewer(gw.a.server, tag, "edit", {"text": EDITED}) as rita:
        raw = client.chat.completions.with_raw_response.create(
            **held(tag), extra_headers={"x-seawall-review": "wait"}
        )
        answered = time.monotonic()
    reply = raw.parse()
    assert reply.choices[0].message.content == EDITED and reply.choices[0].finish_reason == "stop"
    assert DRAFT not in raw.text
    review = (reply.model_extra or {})["seawall"]["review"]
    assert review["status"] == "edited" and raw.headers["x-seawall-review-status"] == "edited"
    # Woken in process: a's store poll (60 s) is longer than its wait (20 s), which would end
    # with the placeholder.
    assert rita.decided_at is not None and answered - rita.decided_at < 5
    record = gw.a.record(raw.headers[REQUEST_ID_HEADER])
    [waited] = [d for d in record["decisions"] if d["step"] == "review_wait"]
    assert waited["action"] == "edited" and waited["waited_ms"] < 1000 * A_WAIT_S


def test_wait_streams_the_approved_answer(gw: Setup) -> None:
    tag = new_tag()
    with gw.a.server.client(APP_KEY) as client, Reviewer(gw.a.server, tag, "approve"):
        raw = client.chat.completions.with_raw_response.create(
            **held(tag), stream=True, extra_headers={"x-seawall-review": "wait"}
        )
        chunks = list(raw.parse())
    # The headers and the role chunk go out before the decision (then keepalives while waiting),
    # so the decision is in the chunks that carry the answer.
    assert raw.headers["x-seawall-review-status"] == "pending"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DRAFT
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1 and {c.model for c in chunks} == {MODEL}
    statuses = [(c.model_extra or {})["seawall"]["review"]["status"] for c in chunks]
    assert statuses[0] == "pending" and set(statuses[1:]) == {"approved"}


def test_wait_gives_the_rejection_message_with_content_filter(gw: Setup) -> None:
    tag = new_tag()
    with (
        gw.a.server.client(APP_KEY) as client,
        Reviewer(gw.a.server, tag, "reject", {"reason": "unsafe dose"}),
    ):
        reply = client.chat.completions.create(**held(tag), extra_headers={"x-seawall-review": "wait"})
    assert reply.choices[0].message.content == REJECTED
    assert reply.choices[0].finish_reason == "content_filter"
    review = (reply.model_extra or {})["seawall"]["review"]
    assert (review["status"], review["reason"]) == ("rejected", "unsafe dose")


def test_wait_as_the_setting_sees_a_decision_made_by_another_replica(gw: Setup) -> None:
    tag = new_tag()
    # The request waits on replica c (hold_response: wait); the reviewer decides on replica a.
    with gw.c.server.client(APP_KEY) as client, Reviewer(gw.a.server, tag, "approve") as rita:
        began = time.monotonic()
        reply = client.chat.completions.create(**held(tag))
        answered = time.monotonic()
    assert reply.choices[0].message.content == DRAFT
    assert (reply.model_extra or {})["seawall"]["review"]["status"] == "approved"
    assert rita.decided_at is not None and answered - rita.decided_at < C_POLL_S + 2.0
    assert answered - began < 15  # well before the 30 s default wait bound


# ----------------------------------------------------------------- wait: no decision in time


def test_wait_times_out_to_the_placeholder_plain_and_streamed(gw: Setup) -> None:
    wait = {"x-seawall-review": "wait"}
    with gw.b.server.client(APP_KEY) as client:
        began = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(**held(new_tag()), extra_headers=wait)
        waited = time.monotonic() - began
        reply = raw.parse()
        assert reply.choices[0].message.content == PLACEHOLDER and reply.choices[0].finish_reason == "stop"
        assert (reply.model_extra or {})["seawall"]["review"]["status"] == "pending"
        assert B_WAIT_S <= waited < B_WAIT_S + 10
        record = gw.b.record(raw.headers[REQUEST_ID_HEADER])
        [timed_out] = [d for d in record["decisions"] if d["step"] == "review_wait"]
        assert timed_out["action"] == "timeout" and timed_out["waited_ms"] >= 1000 * B_WAIT_S

        chunks = list(client.chat.completions.create(**held(new_tag()), stream=True, extra_headers=wait))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PLACEHOLDER
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {(c.model_extra or {})["seawall"]["review"]["status"] for c in chunks} == {"pending"}
