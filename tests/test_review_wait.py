"""Wait mode on a real day (issue 13, part 1): a client that hangs up while its request waits for
a reviewer, a waiting stream that is not silent, and the hold/wait metrics.

A seawall server on loopback (a loopback upstream stand-in, a real SQLite store) with
``review.hold_response: placeholder`` and requests asking for ``x-seawall-review: wait``; the
wait bound is long enough for a reviewer in another thread to decide, and far longer than the few
seconds in which a hang-up must end the wait. Clients are raw sockets (that hang up), httpx (which
sees the SSE keepalive comments) and the official OpenAI SDK (which skips them).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend_standins import StandIn, stand_in
from conftest import RunningServer, running_server, wait_for
from seawall.gateway.pipeline import REQUEST_ID_HEADER
from test_review_sdk import (
    APP_KEY,
    DRAFT,
    EDITED,
    MODEL,
    PLACEHOLDER,
    REVIEWER,
    Reviewer,
    _reply,
    _settings,
    held,
    new_tag,
)

WAIT_S = 8.0  # the reviewers in these tests decide well within it
KEEPALIVE_S = 0.3
HANG_UP_SEEN_S = 4.0  # a hang-up ends the wait within this (the wait bound is twice as long)
WAIT = {"x-seawall-review": "wait"}


@dataclass
class Setup:
    server: RunningServer
    tmp: Path
    upstream: StandIn

    def records(self) -> list[dict[str, Any]]:
        path = self.tmp / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def records_of(self, review_id: str) -> list[dict[str, Any]]:
        """The audit records of the request whose answer was held as ``review_id``."""
        return [
            r
            for r in self.records()
            if any(d.get("review_id") == review_id for d in r["decisions"] if d["step"] == "review")
        ]

    def metrics(self) -> str:
        with self.server.http() as http:
            response = http.get("/metrics")
        response.raise_for_status()
        return response.text


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("review-wait")
    with stand_in(_reply) as upstream:
        settings = _settings(
            tmp,
            tmp,
            upstream.url,
            wait_s=WAIT_S,
            wait_poll_s=0.5,
            wait_keepalive_s=KEEPALIVE_S,
            metrics_public=True,
        )
        with running_server(settings) as server:
            yield Setup(server, tmp, upstream)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of ``/metrics`` (0 when it is not there yet)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def queued_item(server: RunningServer, tag: str, timeout_s: float = 20) -> dict[str, Any]:
    """The review item whose note is ``tag``, once it is in the queue."""
    with server.http(headers={"authorization": f"Bearer {REVIEWER}"}) as http:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            queue = http.get("/v1/seawall/reviews", params={"limit": 200}).json()["data"]
            found = [item for item in queue if item["notes"] == tag]
            if found:
                return dict(found[0])
            time.sleep(0.05)
    raise AssertionError(f"no held item with the note {tag!r} in the queue")


def raw_request(server: RunningServer, body: dict[str, Any], headers: dict[str, str]) -> socket.socket:
    """Send a chat completions request on a bare socket and return the socket, unread."""
    host, port = server.root.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
        f"authorization: Bearer {APP_KEY}",
        *(f"{key}: {value}" for key, value in headers.items()),
    ]
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    return sock


def chat_body(tag: str, **extra: Any) -> dict[str, Any]:
    fields = held(tag)
    return {**fields.pop("extra_body"), **fields, **extra}


def wait_for_record(setup: Setup, review_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := setup.records_of(review_id):
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no audit record for the request held as {review_id} within {timeout_s} s")


# ----------------------------------------------------------------- a client that hangs up


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_client_that_hangs_up_ends_its_wait_and_the_item_stays_in_the_queue(
    setup: Setup, stream: bool
) -> None:
    before = setup.metrics()
    tag = new_tag()
    sock = raw_request(setup.server, chat_body(tag, stream=stream), WAIT)
    item = queued_item(setup.server, tag)
    if stream:  # the stream has begun (headers and the role chunk) before the client goes
        sock.settimeout(HANG_UP_SEEN_S)
        begun = b""
        while b'"role":"assistant"' not in begun:
            piece = sock.recv(65536)
            assert piece, "the server closed the stream"
            begun += piece
        assert begun.startswith(b"HTTP/1.1 200")
    wait_for(  # the wait begins just after the item is stored
        lambda: metric(setup.metrics(), "seawall_review_waiting") == 1, 30, "the request's wait to begin"
    )
    sock.close()
    hung_up = time.monotonic()

    record = wait_for_record(setup, item["id"], HANG_UP_SEEN_S)
    assert time.monotonic() - hung_up < HANG_UP_SEEN_S  # not the wait bound (WAIT_S)
    [waited] = [d for d in record["decisions"] if d["step"] == "review_wait"]
    assert waited["action"] == "client_disconnected" and waited["waited_ms"] < 1000 * WAIT_S
    assert record["outcome"] == "client_disconnected" and record["stream"] is stream
    # Written once, and nothing waits any more.
    time.sleep(0.5)
    assert len(setup.records_of(item["id"])) == 1
    after = setup.metrics()
    assert metric(after, "seawall_review_waiting") == 0
    assert metric(after, "seawall_review_waits_total", outcome="disconnected") == (
        metric(before, "seawall_review_waits_total", outcome="disconnected") + 1
    )

    # The item is still in the queue: a reviewer decides it, and the app's poll gets the answer.
    with setup.server.http(headers={"authorization": f"Bearer {REVIEWER}"}) as reviewer:
        assert reviewer.get(f"/v1/seawall/reviews/{item['id']}").json()["status"] == "pending"
        reviewer.post(f"/v1/seawall/reviews/{item['id']}/claim").raise_for_status()
        reviewer.post(f"/v1/seawall/reviews/{item['id']}/approve").raise_for_status()
    with setup.server.http(headers={"authorization": f"Bearer {APP_KEY}"}) as app:
        final = app.get(f"/v1/seawall/reviews/{item['id']}").json()
    assert final["status"] == "approved"
    assert final["completion"]["choices"][0]["message"]["content"] == DRAFT


# ----------------------------------------------------------------- a waiting stream is not silent


def test_a_waiting_stream_sends_its_role_chunk_at_once_then_keepalives_then_the_decision(
    setup: Setup,
) -> None:
    tag = new_tag()
    lines: list[tuple[float, str]] = []
    with setup.server.http(headers={"authorization": f"Bearer {APP_KEY}", **WAIT}) as http:
        began = time.monotonic()
        with http.stream("POST", "/v1/chat/completions", json=chat_body(tag, stream=True)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-seawall-review-status"] == "pending"  # sent before the decision
            decided_at: float | None = None
            for line in response.iter_lines():
                if not line:  # the blank line that ends each event
                    continue
                lines.append((time.monotonic() - began, line))
                keepalives = sum(1 for _, seen in lines if seen == ": waiting for review")
                if keepalives == 3 and decided_at is None:  # only now does the reviewer decide
                    with Reviewer(setup.server, tag, "edit", {"text": EDITED}):
                        pass
                    decided_at = time.monotonic() - began
    data = [(at, json.loads(line.removeprefix("data: "))) for at, line in lines if line.startswith("data: {")]
    assert lines[-1][1] == "data: [DONE]"
    first_at, first = data[0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["seawall"]["review"]["status"] == "pending"
    assert decided_at is not None and first_at < decided_at  # the role chunk did not wait
    comments = [at for at, line in lines if line.startswith(":")]
    assert len(comments) >= 3 and all(
        line == ": waiting for review" for _, line in lines if line.startswith(":")
    )
    live = [at for at in comments if at < decided_at]  # (later ones were buffered while it decided)
    # Paced by review.wait_keepalive_s, not a flood: the n-th comment cannot arrive before n
    # intervals have passed. (Gaps between arrivals are no measure: a client that stalls on a
    # loaded machine reads two at once.)
    assert live and live[-1] >= len(live) * KEEPALIVE_S * 0.9, (live, KEEPALIVE_S)
    content = [chunk for at, chunk in data if at >= decided_at]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in content) == EDITED
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    assert {c["seawall"]["review"]["status"] for c in content} == {"edited"}
    assert len({c["id"] for _, c in data}) == 1 and {c["model"] for _, c in data} == {MODEL}
    assert DRAFT not in "\n".join(line for _, line in lines)


def test_the_sdk_streams_a_waited_answer_and_skips_the_keepalives(setup: Setup) -> None:
    tag = new_tag()
    with setup.server.client(APP_KEY) as client, Reviewer(setup.server, tag, "approve") as rita:
        raw = client.chat.completions.with_raw_response.create(**held(tag), stream=True, extra_headers=WAIT)
        chunks = list(raw.parse())
    assert rita.decided_at is not None
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DRAFT
    assert chunks[-1].choices[0].finish_reason == "stop"
    statuses = [(c.model_extra or {})["seawall"]["review"]["status"] for c in chunks]
    assert statuses[0] == "pending" and statuses[-1] == "approved"
    record = setup.records_of(raw.headers["x-seawall-review-id"])[0]
    assert record["request_id"] == raw.headers[REQUEST_ID_HEADER]
    [waited] = [d for d in record["decisions"] if d["step"] == "review_wait"]
    assert waited["action"] == "approved" and record["outcome"] == "held_for_review"


def test_a_waiting_stream_ends_with_the_placeholder_when_nobody_decides(setup: Setup) -> None:
    with setup.server.http(headers={"authorization": f"Bearer {APP_KEY}", **WAIT}, timeout=60) as http:
        began = time.monotonic()
        text = http.post("/v1/chat/completions", json=chat_body(new_tag(), stream=True)).text
        waited = time.monotonic() - began
    assert WAIT_S <= waited < WAIT_S + 10
    assert text.count(": waiting for review\n\n") >= int(WAIT_S / KEEPALIVE_S) // 2
    chunks = [
        json.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: {")
    ]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == PLACEHOLDER
    assert {c["seawall"]["review"]["status"] for c in chunks} == {"pending"}
    assert text.endswith("data: [DONE]\n\n") and DRAFT not in text


# ----------------------------------------------------------------- the metrics


def test_metrics_count_holds_by_mode_and_waits_by_how_they_ended(setup: Setup) -> None:
    before = setup.metrics()
    with setup.server.client(APP_KEY) as client:
        client.chat.completions.create(**held(new_tag()))  # placeholder
        client.chat.completions.with_raw_response.create(
            **held(new_tag()), extra_headers={"x-seawall-review": "accepted"}
        )
        tag = new_tag()
        with Reviewer(setup.server, tag, "reject", {"reason": "no"}):
            client.chat.completions.create(**held(tag), extra_headers=WAIT)  # decided
        client.chat.completions.create(**held(new_tag()), extra_headers=WAIT)  # timeout
    after = setup.metrics()

    def added(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert added("seawall_review_holds_total", mode="placeholder") == 1
    assert added("seawall_review_holds_total", mode="accepted") == 1
    assert added("seawall_review_holds_total", mode="wait") == 2
    assert added("seawall_review_waits_total", outcome="decided") == 1
    assert added("seawall_review_waits_total", outcome="timeout") == 1
    assert added("seawall_review_waits_total", outcome="disconnected") == 0
    assert metric(after, "seawall_review_waiting") == 0
    assert "# TYPE seawall_review_waits_total counter" in after


def test_a_waiting_responses_stream_passes_the_keepalives_on(setup: Setup) -> None:
    """Through ``/v1/responses`` too, a stream waiting for a reviewer is not silent."""
    body = chat_body(new_tag(), stream=True)
    request = {"model": body["model"], "input": body["messages"][0]["content"], "stream": True}
    request["seawall"] = body["seawall"]
    with setup.server.http(headers={"authorization": f"Bearer {APP_KEY}", **WAIT}, timeout=60) as http:
        text = http.post("/v1/responses", json=request).text
    assert text.count(": waiting for review\n\n") >= int(WAIT_S / KEEPALIVE_S) // 2
    assert "event: response.completed" in text and PLACEHOLDER in text and DRAFT not in text
