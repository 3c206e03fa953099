"""The fault matrix: what a client sees and what is audited when the upstream or the store fails.

Everything here is real: seawall's app on loopback (uvicorn), a loopback upstream stand-in
(:mod:`backend_standins`) scripted to fail in one way per case, raw HTTP clients, a real
PostgreSQL server stopped and started again, a SQLite file locked by another OS process, and
``seawall serve`` subprocesses killed with SIGKILL. The README's "Reliability and security"
section carries the matrix with the outcomes these tests hold.

Faults with a test elsewhere (at the upstream client's level, or end to end) are listed in
:data:`COVERED_ELSEWHERE`; the cases here run each fault through the whole gateway, plain and
streamed, and check the three things every fault must give: an error in OpenAI's shape, no
text the stream guard did not clear, and one audit record naming the fault.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response, StreamingResponse

from backend_standins import Recorded, StandIn, json_reply, stand_in
from conftest import RunningServer, assert_openai_error, free_port, running_server
from seawall.gateway.pipeline import REQUEST_ID_HEADER
from test_gateway_pipeline import MODEL, gateway_settings

#: Fault -> tests that already hold it elsewhere (the matrix below runs each through the gateway).
COVERED_ELSEWHERE = {
    "connection_refused": [
        "test_gateway_upstream.py::test_connection_refused_is_502_unreachable_after_retries",
        "test_gateway_upstream.py::test_a_server_that_comes_up_during_the_retries_is_reached",
    ],
    "timeout_before_headers": ["test_gateway_upstream.py::test_read_timeout_is_504_and_not_retried"],
    "status_500": [
        "test_gateway_upstream.py::test_500_is_not_retried_and_the_client_sees_no_details",
        "test_gateway_pipeline.py::test_upstream_500_is_an_openai_502",
    ],
    "malformed_json": [
        "test_gateway_upstream.py::test_malformed_success_is_502_malformed",
        "test_gateway_upstream.py::test_bad_events_mid_stream",
    ],
    "cut_mid_sentence": [
        "test_gateway_upstream.py::test_connection_broken_mid_stream_is_interrupted",
        "test_gateway_pipeline.py::test_cut_stream_ends_with_an_error_and_nothing_unscanned",
    ],
    "stall": [
        "test_gateway_upstream.py::test_stall_between_chunks_is_504",
        "test_gateway_upstream.py::test_total_timeout_bounds_a_stream_that_keeps_trickling",
    ],
}

#: The upstream's read timeout in these tests (a stall is twice as long).
READ_TIMEOUT_S = 1.0
STALL_S = 2 * READ_TIMEOUT_S + 1
HOLD_BACK = 200
#: What the stand-in streams: clean sentences, then one left unfinished (the fault strikes after it).
SENT = (
    "Paris is the capital of France. It lies on the river Seine in the north of the country. "
    "The city is known for its museums, its cafes and its long history. Many visitors come "
    "every year to see the Louvre and to walk along the river in the evening. The last "
    "sentence of this answer never reaches its"
)
#: The tail that sat in the guard's hold-back when the fault struck: it must never reach a client.
UNSCANNED_TAIL = SENT[-HOLD_BACK:]
PIECE = 7


# ----------------------------------------------------------------- the scripted upstream


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _completion(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
        }
    ).encode()


class CutConnection(Exception):
    """Raised inside the stand-in's body: uvicorn drops the connection without ending the body."""


@dataclass
class Fault:
    """What the stand-in does to the next chat request; ``streamed`` counts stream pieces sent."""

    name: str = "none"
    streamed_chars: int = 0
    closed: asyncio.Event | None = None
    upstream_closed: list[bool] = field(default_factory=list)


def make_reply(fault: Fault) -> Any:
    async def reply(request: Recorded) -> Response:
        stream = bool(request.body and request.body.get("stream"))
        name = fault.name
        if name == "timeout_before_headers":
            await asyncio.sleep(STALL_S)
        if name == "status_500":
            return Response(b"internal meltdown on gpu-7 at 10.0.0.5", status_code=500)
        if not stream:
            return _plain(name)
        return StreamingResponse(_events(name, fault), media_type="text/event-stream")

    return reply


def _plain(name: str) -> Response:
    body = _completion(SENT)
    if name == "malformed_json":
        return Response(body[: len(body) // 2], media_type="application/json")

    async def parts() -> AsyncIterator[bytes]:
        if name == "timeout_after_headers":
            await asyncio.sleep(STALL_S)
        yield body[:40]
        if name == "stall":
            await asyncio.sleep(STALL_S)
        if name == "cut_mid_sentence":
            raise CutConnection("the stand-in drops the connection mid-body")
        yield body[40:]

    return StreamingResponse(parts(), media_type="application/json")


async def _events(name: str, fault: Fault) -> AsyncIterator[bytes]:
    try:
        if name == "timeout_after_headers":
            await asyncio.sleep(STALL_S)
        yield _chunk({"role": "assistant", "content": ""})
        for start in range(0, len(SENT), PIECE):
            yield _chunk({"content": SENT[start : start + PIECE]})
            fault.streamed_chars += PIECE
            await asyncio.sleep(0)
        if name == "malformed_json":
            yield b'data: {"id": "chatcmpl-upstream", "choices": [{"delta": {"content": "and th\n\n'
        elif name == "stall":
            await asyncio.sleep(STALL_S)
        elif name == "cut_mid_sentence":
            raise CutConnection("the stand-in drops the connection mid-sentence")
        elif name == "endless":  # for the slow client: clean text until the gateway hangs up
            while True:
                yield _chunk({"content": "and on. "})
                fault.streamed_chars += 8
                await asyncio.sleep(0)
        yield _chunk({}, "stop")
        yield b"data: [DONE]\n\n"
    finally:
        fault.upstream_closed.append(True)


# ----------------------------------------------------------------- the gateway under test


@dataclass
class Setup:
    server: RunningServer
    upstream: StandIn
    fault: Fault
    audit_file: Path

    def audit(self, request_id: str, timeout_s: float = 10) -> dict[str, Any]:
        """The one audit record of ``request_id`` (waits for it: a stream is audited as it ends)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.audit_file.read_text().splitlines() if self.audit_file.exists() else []
            found = [r for r in map(json.loads, lines) if r["request_id"] == request_id]
            if found or time.monotonic() > deadline:
                assert len(found) == 1, found
                return found[0]
            time.sleep(0.05)


def fault_settings(tmp: Path, upstream_url: str, **gateway: Any) -> Any:
    upstream = {
        "base_url": f"{upstream_url}/v1",
        "max_retries": 0,
        "read_timeout_s": READ_TIMEOUT_S,
        "total_timeout_s": 20,
    }
    return gateway_settings(tmp, upstream_url, upstream=upstream, **gateway)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("faults")
    fault = Fault()
    with stand_in(make_reply(fault)) as upstream:
        settings = fault_settings(tmp, upstream.url, client_send_timeout_s=1.0)
        with running_server(settings, send_buffer=16384) as server:
            yield Setup(server, upstream, fault, tmp / "audit.jsonl")


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A gateway whose upstream address refuses connections (nothing listens on the port)."""
    tmp = tmp_path_factory.mktemp("refused")
    settings = fault_settings(tmp, f"http://127.0.0.1:{free_port()}")
    with running_server(settings) as server:
        yield Setup(server, StandIn(reply=make_reply(Fault())), Fault(), tmp / "audit.jsonl")


# ----------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    """One fault, plain or streamed, and what the client must see: an HTTP error before any
    stream (``in_stream`` False) or an error event inside a 200 stream."""

    fault: str
    stream: bool
    status: int
    code: str
    in_stream: bool = False

    @property
    def id(self) -> str:
        return f"{self.fault}-{'stream' if self.stream else 'plain'}"


MATRIX = [
    Case("connection_refused", False, 502, "upstream_unreachable"),
    Case("connection_refused", True, 502, "upstream_unreachable"),
    Case("timeout_before_headers", False, 504, "upstream_timeout"),
    Case("timeout_before_headers", True, 504, "upstream_timeout"),
    Case("timeout_after_headers", False, 504, "upstream_timeout"),
    Case("timeout_after_headers", True, 504, "upstream_timeout"),
    Case("status_500", False, 502, "upstream_error"),
    Case("status_500", True, 502, "upstream_error"),
    Case("malformed_json", False, 502, "upstream_malformed"),
    Case("malformed_json", True, 502, "upstream_malformed", in_stream=True),
    Case("cut_mid_sentence", False, 502, "upstream_error"),
    Case("cut_mid_sentence", True, 502, "upstream_stream_interrupted", in_stream=True),
    Case("stall", False, 504, "upstream_timeout"),
    Case("stall", True, 504, "upstream_timeout", in_stream=True),
]


def _events_of(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


@pytest.mark.parametrize("case", MATRIX, ids=lambda case: case.id)
def test_upstream_fault(case: Case, request: pytest.FixtureRequest) -> None:
    gw: Setup = request.getfixturevalue("refused" if case.fault == "connection_refused" else "setup")
    gw.fault.name = case.fault
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about Paris."}]}
    began = time.monotonic()
    with (
        gw.server.http() as http,
        http.stream("POST", "/v1/chat/completions", json={**body, "stream": case.stream}) as response,
    ):
        request_id = response.headers[REQUEST_ID_HEADER]
        if case.in_stream:
            assert response.status_code == 200
            events = _events_of(response)
        else:
            response.read()
    took = time.monotonic() - began

    if case.in_stream:
        # The stream's end: one error event in OpenAI's shape, then [DONE]; before it, only text
        # the guard cleared, never the held-back tail.
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])
        assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}
        assert error["error"]["code"] == case.code
        released = "".join(
            choice["delta"].get("content") or ""
            for chunk in map(json.loads, events[:-2])
            for choice in chunk["choices"]
        )
        assert SENT.startswith(released)
        assert UNSCANNED_TAIL[:40] not in released and len(released) <= len(SENT) - HOLD_BACK
    else:
        error = assert_openai_error(response, case.status, case.code)
    for secret in ("127.0.0.1", "10.0.0.5", "meltdown", "gpu-7"):
        assert secret not in json.dumps(error)
    assert took < 15, f"the client waited {took:.1f} s"

    record = gw.audit(request_id)
    assert record["outcome"] == "upstream_error" and record["stream"] is case.stream
    assert record["error"] == {"status": case.status, "code": case.code}
    assert record["upstream"] == {"status": "error", "code": case.code}


def test_a_slow_client_that_never_reads_is_cut_off_and_audited(setup: Setup) -> None:
    """A client that sends a stream request and never reads: once the socket's buffers are full
    and nothing moves for ``client_send_timeout_s``, the gateway closes the upstream, audits the
    request, and stops sending."""
    setup.fault.name = "endless"
    setup.fault.streamed_chars = 0
    setup.fault.upstream_closed.clear()
    body = json.dumps(
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Tell me about Paris."}]}
    ).encode()
    port = int(setup.server.root.rsplit(":", 1)[1])
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
    client.connect(("127.0.0.1", port))
    try:
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 60
        while not setup.fault.upstream_closed and time.monotonic() < deadline:
            time.sleep(0.1)
        assert setup.fault.upstream_closed, (
            "the gateway kept reading the upstream for a client that never reads"
        )
        streamed = setup.fault.streamed_chars
        time.sleep(1)
        assert setup.fault.streamed_chars == streamed  # the generation stopped
        # The request's id is in the response head, the first thing in the socket.
        client.settimeout(5)
        head = client.recv(4096).decode("latin-1")
        request_id = head.split(REQUEST_ID_HEADER + ": ", 1)[1].split("\r\n", 1)[0]
    finally:
        client.close()
    record = setup.audit(request_id)
    assert record["outcome"] == "client_disconnected"
    assert record["error"] == {"status": None, "code": "client_too_slow"}
    [moderation] = [d for d in record["decisions"] if d["step"] == "output_moderation"]
    assert moderation["released_chars"] <= moderation["received_chars"]
