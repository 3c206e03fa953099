"""The gateway's upstream client against a loopback stand-in for an OpenAI-compatible model server.

The stand-in is a real HTTP server (uvicorn + Starlette on 127.0.0.1) that answers
from a per-test script: completions, SSE streams cut into awkward pieces, streams
that stop early, break or stall, 5xx/429/4xx replies. It records every request,
so the tests assert what was sent, how often and when.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from starlette.responses import Response, StreamingResponse

from backend_standins import LoopbackServer, Recorded, StandIn, json_reply, stand_in
from conftest import refusing_port
from seawall.errors import (
    BackendError,
    ConfigurationError,
    GuardUnavailableError,
    SeawallError,
    UpstreamError,
)
from seawall.gateway.upstream import MAX_RETRY_AFTER_S, SSEDecoder, Upstream, retry_after
from seawall.settings import UpstreamSettings

KEY = "sk-upstream-test-secret-123"

Step = Callable[[Recorded], Awaitable[Response]]


class Script:
    """Replies with ``steps`` in order (the last one repeats); notes when each request arrived."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.arrivals: list[float] = []

    async def __call__(self, request: Recorded) -> Response:
        self.arrivals.append(time.monotonic())
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        return await step(request)

    def gaps(self) -> list[float]:
        return [later - earlier for earlier, later in zip(self.arrivals, self.arrivals[1:], strict=False)]


# ----------------------------------------------------------------- replies


def completion_body(content: str = "Hello!") -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "standin-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def chunk(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-standin-{index}",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "standin-model",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }


def event(payload: dict[str, Any], newline: bytes = b"\n") -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + newline + newline


def done(newline: bytes = b"\n") -> bytes:
    return b"data: [DONE]" + newline + newline


def completion(content: str = "Hello!") -> Step:
    async def reply(request: Recorded) -> Response:
        return json_reply(completion_body(content))

    return reply


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Step:
    async def reply(request: Recorded) -> Response:
        if isinstance(body, str | bytes):
            return Response(body, status_code=code, headers=headers, media_type="text/html")
        return json_reply(body if body is not None else {}, status_code=code, headers=headers)

    return reply


def slow(seconds: float, then: Step) -> Step:
    async def reply(request: Recorded) -> Response:
        await asyncio.sleep(seconds)
        return await then(request)

    return reply


def sse(
    pieces: list[bytes],
    *,
    pause: float = 0.005,
    stall_before: int | None = None,
    stall: float = 0.0,
    break_at_end: bool = False,
    finished: threading.Event | None = None,
) -> Step:
    """A stream written as ``pieces`` (one write each, ``pause`` apart); it can stall, or break at the end."""

    async def body() -> AsyncIterator[bytes]:
        try:
            for position, piece in enumerate(pieces):
                if position == stall_before:
                    await asyncio.sleep(stall)
                yield piece
                await asyncio.sleep(pause)
            if break_at_end:
                raise RuntimeError("the stand-in drops the connection mid-stream")
        finally:
            if finished is not None:
                finished.set()

    async def reply(request: Recorded) -> Response:
        return StreamingResponse(body(), media_type="text/event-stream")

    return reply


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in pieces of the given sizes, cycling through them."""
    pieces: list[bytes] = []
    position = 0
    index = 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        pieces.append(data[position : position + size])
        position += size
        index += 1
    return pieces


# ----------------------------------------------------------------- fixtures


def upstream_settings(server_url: str, **overrides: Any) -> UpstreamSettings:
    values: dict[str, Any] = {
        "base_url": f"{server_url}/v1",
        "api_key": KEY,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "total_timeout_s": 10.0,
        "max_retries": 2,
        "retry_backoff_s": 0.05,
    }
    values.update(overrides)
    return UpstreamSettings(**values)


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with stand_in(Script(completion())) as running:
        yield running


@pytest.fixture
def server(standin: StandIn) -> StandIn:
    standin.requests.clear()
    standin.reply = Script(completion())
    return standin


def script(server: StandIn, *steps: Step) -> Script:
    replies = Script(*steps)
    server.reply = replies
    return replies


@pytest.fixture(params=["lean", "httpx"])
async def upstream(server: StandIn, request: pytest.FixtureRequest) -> AsyncIterator[Upstream]:
    """The client on each HTTP transport (``upstream.http_transport``): they must behave alike."""
    async with Upstream(upstream_settings(server.url, http_transport=request.param)) as client:
        yield client


def gateway_warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name == "seawall.gateway" and record.levelno == logging.WARNING
    )


async def collect(stream: AsyncIterator[dict[str, Any]], into: list[dict[str, Any]]) -> None:
    """Gather a stream's chunks into ``into`` (kept even when the stream then raises)."""
    async with aclosing(stream) as chunks:
        async for item in chunks:
            into.append(item)


def assert_clean_message(error: UpstreamError, server: StandIn) -> None:
    """What the client sees names neither the upstream's address nor the key."""
    body = json.dumps(error.to_body())
    for secret in (KEY, server.url, "127.0.0.1", str(server.url.rsplit(":", 1)[1])):
        assert secret not in body, (secret, body)


# ----------------------------------------------------------------- settings


def test_settings_defaults_and_documentation() -> None:
    settings = UpstreamSettings()
    assert settings.base_url is None  # the bundled local model
    with pytest.raises(ConfigurationError, match="base_url"):
        Upstream(settings)
    assert settings.api_key is None
    assert (settings.connect_timeout_s, settings.read_timeout_s, settings.total_timeout_s) == (5, 60, 300)
    assert (settings.max_retries, settings.retry_backoff_s, settings.max_connections) == (2, 0.25, 100)
    for name, field in UpstreamSettings.model_fields.items():
        assert field.description, name
    assert UpstreamSettings(base_url="http://host:1/v1/").base_url == "http://host:1/v1"
    with pytest.raises(ValueError, match="http"):
        UpstreamSettings(base_url="ftp://host/v1")
    # An upstream failure is not a moderation backend's: it must never trigger a guard's fail mode.
    assert issubclass(UpstreamError, SeawallError) and not issubclass(UpstreamError, GuardUnavailableError)
    assert issubclass(BackendError, GuardUnavailableError)


# ----------------------------------------------------------------- chat


async def test_chat_forces_no_stream_and_sends_key_and_extra_headers(
    server: StandIn, upstream: Upstream
) -> None:
    body = {
        "model": "standin-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
    }
    original = json.loads(json.dumps(body))
    answer = await upstream.chat(
        body, headers={"OpenAI-Organization": "org-123", "Authorization": "Bearer client-key"}
    )
    assert answer == completion_body()
    assert body == original  # the caller's dict is not changed
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.body == {
        "model": "standin-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "temperature": 0.2,
    }
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["openai-organization"] == "org-123"


async def test_a_cookie_the_upstream_sets_is_sent_back(server: StandIn, upstream: Upstream) -> None:
    """As httpx's client does (a load balancer's affinity cookie, say): a change that builds the
    upstream request without the client's build_request must keep it."""

    async def with_cookie(request: Recorded) -> Response:
        return json_reply(completion_body(), headers={"set-cookie": "affinity=a1; Path=/"})

    script(server, with_cookie, completion())
    for _ in range(2):
        await upstream.chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    first, second = server.requests
    assert "cookie" not in first.headers
    assert second.headers["cookie"] == "affinity=a1"


async def test_the_body_goes_out_as_compact_utf8_json_and_odd_replies_parse_as_before(
    server: StandIn, upstream: Upstream
) -> None:
    """The request body is encoded by orjson and replies parsed by it, falling back to the
    standard library for what orjson refuses: the bytes sent are what ``json.dumps`` with
    httpx's settings writes, and a reply with ``NaN`` (which some model servers write in logprobs)
    or a lone surrogate escape is read as before, not taken for a malformed reply."""
    body = {"model": "standin-model", "messages": [{"role": "user", "content": "Grüße, 日本 ✓"}], "n": 1}
    await upstream.chat(body)
    [request] = server.requests
    expected = {**body, "stream": False}
    assert request.raw == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(request.raw))
    odd = json.dumps(completion_body("\ud83d half an emoji")).replace(
        '"created": 1700000000', '"created": NaN'
    )
    assert "NaN" in odd

    async def reply(_: Recorded) -> Response:
        return Response(odd, media_type="application/json")

    script(server, reply)
    answer = await upstream.chat(body)
    assert answer["choices"][0]["message"]["content"] == "\ud83d half an emoji"
    assert answer["created"] != answer["created"]  # NaN, as json.loads reads it


async def test_no_authorization_header_without_a_key(server: StandIn) -> None:
    async with Upstream(upstream_settings(server.url, api_key=None)) as client:
        await client.chat({"model": "m", "messages": []})
        script(server, sse([event(CHUNKS[0]), done()]))
        await collect(client.stream({"model": "m", "messages": []}), [])
    assert len(server.requests) == 2
    assert [r for r in server.requests if "authorization" in r.headers] == []


async def test_models(server: StandIn, upstream: Upstream) -> None:
    listing = {"object": "list", "data": [{"id": "standin-model", "object": "model", "owned_by": "me"}]}
    script(server, status(200, listing))
    assert await upstream.models(headers={"X-Extra": "1"}) == listing
    [request] = server.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-extra"] == "1"


async def test_503_and_502_are_retried_with_doubling_backoff(server: StandIn, upstream: Upstream) -> None:
    replies = script(
        server, status(503, {"error": {"message": "busy"}}), status(502, "bad gateway"), completion("ok")
    )
    answer = await upstream.chat({"model": "m", "messages": []})
    assert answer["choices"][0]["message"]["content"] == "ok"
    assert len(server.requests) == 3
    first, second = replies.gaps()
    assert first >= 0.05 and second >= 0.1, replies.gaps()


async def test_retries_stop_after_max_retries(server: StandIn, caplog: pytest.LogCaptureFixture) -> None:
    script(server, status(504, {"error": {"message": "timeout"}}))
    async with Upstream(upstream_settings(server.url, max_retries=3, retry_backoff_s=0.01)) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.chat({"model": "m", "messages": []})
    assert len(server.requests) == 4
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_error")
    assert "retry 3 of 3" in gateway_warnings(caplog)


async def test_no_retries_when_max_retries_is_zero(server: StandIn) -> None:
    script(server, status(503, {}))
    async with Upstream(upstream_settings(server.url, max_retries=0)) as client:
        with pytest.raises(UpstreamError):
            await client.chat({"model": "m", "messages": []})
    assert len(server.requests) == 1


async def test_500_is_not_retried_and_the_client_sees_no_details(
    server: StandIn, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    script(server, status(500, {"error": {"message": f"internal failure, key {KEY} at {server.url}"}}))
    with pytest.raises(UpstreamError) as caught:
        await upstream.chat({"model": "m", "messages": []})
    assert len(server.requests) == 1
    error = caught.value
    assert (error.status_code, error.code) == (502, "upstream_error")
    assert "HTTP 500" in error.message
    assert "internal failure" not in error.message
    assert_clean_message(error, server)
    logged = gateway_warnings(caplog)
    # The upstream's message is not logged either: upstreams quote the request in their errors.
    assert "internal failure" not in logged and "message of" in logged and "withheld" in logged
    assert f"{server.url}/v1/chat/completions" in logged and "HTTP 500" in logged  # operators see where
    assert KEY not in logged


async def test_400_openai_error_passes_through_unretried(server: StandIn, upstream: Upstream) -> None:
    upstream_error = {
        "message": "This model's maximum context length is 8192 tokens. However, your messages resulted "
        "in 9000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    script(server, status(400, {"error": upstream_error}))
    with pytest.raises(UpstreamError) as caught:
        await upstream.chat({"model": "m", "messages": []})
    assert len(server.requests) == 1
    assert caught.value.status_code == 400
    assert caught.value.to_body() == {"error": upstream_error}


async def test_vllm_flat_error_body_passes_through(server: StandIn, upstream: Upstream) -> None:
    vllm_error = {"object": "error", "message": "The model `nope` does not exist.", "type": "NotFoundError"}
    script(server, status(404, vllm_error | {"param": None, "code": 404}))
    with pytest.raises(UpstreamError) as caught:
        await upstream.chat({"model": "nope", "messages": []})
    assert caught.value.status_code == 404
    assert caught.value.to_body()["error"] == {
        "message": "The model `nope` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": None,
    }


async def test_passed_through_messages_are_scrubbed(server: StandIn, upstream: Upstream) -> None:
    message = f"bad request to {server.url}/v1 with key {KEY}"
    script(server, status(422, {"error": {"message": message, "type": "invalid_request_error"}}))
    with pytest.raises(UpstreamError) as caught:
        await upstream.chat({"model": "m", "messages": []})
    assert caught.value.status_code == 422
    assert "bad request to" in caught.value.message and "[redacted]" in caught.value.message
    assert_clean_message(caught.value, server)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (status(401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}), "credentials"),
        (status(404, {"detail": "Not Found"}), "HTTP 404"),  # a wrong base_url, not the client's fault
        (status(302, "", {"location": "http://elsewhere/"}), "HTTP 302"),
    ],
)
async def test_upstream_faults_that_are_not_the_clients_become_502(
    server: StandIn, upstream: Upstream, reply: Step, why: str
) -> None:
    script(server, reply)
    with pytest.raises(UpstreamError) as caught:
        await upstream.chat({"model": "m", "messages": []})
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_error")
    assert why in caught.value.message
    assert len(server.requests) == 1


async def test_429_waits_for_retry_after(server: StandIn, upstream: Upstream) -> None:
    replies = script(
        server, status(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"}), completion("late")
    )
    answer = await upstream.chat({"model": "m", "messages": []})
    assert answer["choices"][0]["message"]["content"] == "late"
    assert len(server.requests) == 2
    assert replies.gaps()[0] >= 0.95  # the upstream's second, not the 0.05 s back-off


async def test_429_with_retry_after_beyond_the_cap_reaches_the_client(server: StandIn) -> None:
    body = {
        "error": {
            "message": "Rate limit reached for model in organization org-SECRETORG on requests per min",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    asked = MAX_RETRY_AFTER_S + 5
    script(server, status(429, body, {"Retry-After": str(asked)}))
    # A total timeout long enough for the wait: only the cap can stop the retry.
    async with Upstream(upstream_settings(server.url, total_timeout_s=3600)) as client:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await asyncio.wait_for(client.chat({"model": "m", "messages": []}), 10)
    # Retried, it would wait the capped MAX_RETRY_AFTER_S (20 s) first: half that is room enough for
    # one loopback request on a loaded machine.
    assert time.monotonic() - started < MAX_RETRY_AFTER_S / 2
    assert len(server.requests) == 1
    error = caught.value
    assert (error.status_code, error.code, error.error_type) == (
        429,
        "rate_limit_exceeded",
        "rate_limit_error",
    )
    assert error.retry_after == asked
    assert "org-SECRETORG" not in error.message


async def test_a_retry_that_would_cross_the_total_deadline_is_not_made(server: StandIn) -> None:
    script(server, status(503, {}))
    # The deadline is far beyond one loopback request even on a loaded machine, the back-off further.
    settings = upstream_settings(server.url, total_timeout_s=5.0, retry_backoff_s=10.0)
    async with Upstream(settings) as client:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await client.chat({"model": "m", "messages": []})
    assert time.monotonic() - started < 5.0  # neither the back-off nor the deadline was waited out
    assert len(server.requests) == 1
    assert caught.value.code == "upstream_error"


async def test_read_timeout_is_504_and_not_retried(server: StandIn) -> None:
    script(server, slow(1.0, completion()))
    async with Upstream(upstream_settings(server.url, read_timeout_s=0.3)) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.chat({"model": "m", "messages": []})
    assert (caught.value.status_code, caught.value.code) == (504, "upstream_timeout")
    assert len(server.requests) == 1
    assert_clean_message(caught.value, server)


async def test_connection_refused_is_502_unreachable_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    with refusing_port() as port:
        settings = upstream_settings(f"http://127.0.0.1:{port}", retry_backoff_s=0.05)
        async with Upstream(settings) as client:
            started = time.monotonic()
            with pytest.raises(UpstreamError) as caught:
                await client.chat({"model": "m", "messages": []})
    assert time.monotonic() - started >= 0.15  # two retries: 0.05 s, then 0.1 s
    error = caught.value
    assert (error.status_code, error.code) == (502, "upstream_unreachable")
    assert str(port) not in json.dumps(error.to_body()) and "127.0.0.1" not in error.message
    assert "retry 2 of 2" in gateway_warnings(caplog)


async def test_a_server_that_comes_up_during_the_retries_is_reached(caplog: pytest.LogCaptureFixture) -> None:
    late = StandIn(reply=Script(completion("finally")))
    server = LoopbackServer(late.app())  # the port is bound but not listening yet: connections are refused
    starter = threading.Timer(0.2, server.start)
    starter.start()
    try:
        settings = upstream_settings(server.url, max_retries=5, retry_backoff_s=0.1)
        async with Upstream(settings) as client:
            answer = await client.chat({"model": "m", "messages": []})
    finally:
        starter.join()
        server.stop()
    assert answer["choices"][0]["message"]["content"] == "finally"
    assert len(late.requests) == 1
    assert "retry 1 of 5" in gateway_warnings(caplog)


@pytest.mark.parametrize(
    "reply",
    [
        status(200, "<html>not json</html>"),
        status(200, [1, 2, 3]),
        status(200, {"id": "x", "object": "chat.completion"}),  # no choices
    ],
)
async def test_malformed_success_is_502_malformed(server: StandIn, upstream: Upstream, reply: Step) -> None:
    script(server, reply)
    with pytest.raises(UpstreamError) as caught:
        await upstream.chat({"model": "m", "messages": []})
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_malformed")
    assert len(server.requests) == 1


# ----------------------------------------------------------------- streams

CHUNKS = [chunk(0, "Hel"), chunk(1, "lo, "), chunk(2, "naïve wörld 🙂"), chunk(3, "!", "stop")]


def awkward_stream(newline: bytes = b"\n") -> bytes:
    """A full stream with comments, fields OpenAI does not use and an event over two data lines."""
    split_event = json.dumps(CHUNKS[3]).replace(', "model"', newline.decode() + 'data: , "model"', 1)
    return b"".join(
        [
            b": connected" + newline + newline,
            event(CHUNKS[0], newline),
            b": keep-alive" + newline,
            event(CHUNKS[1], newline),
            b"event: message" + newline + b"id: 7" + newline + b"retry: 1000" + newline,
            event(CHUNKS[2], newline),
            b"data: " + split_event.encode() + newline + newline,
            done(newline),
        ]
    )


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
async def test_stream_parses_awkwardly_chunked_sse(
    server: StandIn, upstream: Upstream, newline: bytes
) -> None:
    # Pieces of 1, 2, 3, 7, 11 and 300 bytes: lines and UTF-8 characters split, several events in one write.
    script(server, sse(cut(awkward_stream(newline), [1, 2, 3, 7, 11, 300])))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    got: list[dict[str, Any]] = []
    await collect(upstream.stream(body, headers={"OpenAI-Organization": "org-9"}), got)
    assert got == CHUNKS
    assert body["stream"] is False  # the caller's dict is not changed
    [request] = server.requests
    assert request.body["stream"] is True
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["openai-organization"] == "org-9"


async def test_stream_ignores_what_follows_done(server: StandIn, upstream: Upstream) -> None:
    script(server, sse([event(CHUNKS[0]) + done() + event(CHUNKS[1])]))
    got: list[dict[str, Any]] = []
    await collect(upstream.stream({"model": "m", "messages": []}), got)
    assert got == CHUNKS[:1]


async def test_done_without_its_blank_line_still_ends_the_stream(server: StandIn, upstream: Upstream) -> None:
    script(server, sse([event(CHUNKS[0]), b"data: [DONE]\n"]))
    got: list[dict[str, Any]] = []
    await collect(upstream.stream({"model": "m", "messages": []}), got)
    assert got == CHUNKS[:1]


@pytest.mark.parametrize(
    "pieces",
    [
        [event(CHUNKS[0]), event(CHUNKS[1])],  # ends cleanly, but without [DONE]
        [event(CHUNKS[0]), event(CHUNKS[1]), event(CHUNKS[2])[:-1]],  # last event lacks its blank line
        [event(CHUNKS[0]), event(CHUNKS[1]), b'data: {"id": "chatcmpl-sta'],  # stops mid-event
    ],
)
async def test_stream_ending_before_done_is_interrupted(
    server: StandIn, upstream: Upstream, pieces: list[bytes]
) -> None:
    script(server, sse(pieces))
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as caught:
        await collect(upstream.stream({"model": "m", "messages": []}), got)
    assert got == CHUNKS[:2]
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_stream_interrupted")
    assert len(server.requests) == 1


async def test_connection_broken_mid_stream_is_interrupted(server: StandIn, upstream: Upstream) -> None:
    script(server, sse([event(CHUNKS[0]), event(CHUNKS[1])[:20]], break_at_end=True))
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as caught:
        await collect(upstream.stream({"model": "m", "messages": []}), got)
    assert got == CHUNKS[:1]
    assert caught.value.code == "upstream_stream_interrupted"
    assert len(server.requests) == 1  # nothing is retried once the stream has started


async def test_stall_between_chunks_is_504(server: StandIn) -> None:
    script(server, sse([event(CHUNKS[0]), event(CHUNKS[1]), done()], stall_before=1, stall=3.0))
    got: list[dict[str, Any]] = []
    async with Upstream(upstream_settings(server.url, read_timeout_s=0.3)) as client:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await collect(client.stream({"model": "m", "messages": []}), got)
    assert time.monotonic() - started < 2.0  # the 0.3 s read timeout, not the 3 s stall
    assert got == CHUNKS[:1]
    assert (caught.value.status_code, caught.value.code) == (504, "upstream_timeout")


async def test_total_timeout_bounds_a_stream_that_keeps_trickling(server: StandIn) -> None:
    # 40 chunks 0.1 s apart take 4 s; each gap is well inside the read timeout, and the first two
    # come well inside the total one even on a loaded machine.
    script(server, sse([event(chunk(i, "x")) for i in range(40)] + [done()], pause=0.1))
    got: list[dict[str, Any]] = []
    async with Upstream(upstream_settings(server.url, total_timeout_s=1.5, read_timeout_s=1.0)) as client:
        with pytest.raises(UpstreamError) as caught:
            await collect(client.stream({"model": "m", "messages": []}), got)
    assert (caught.value.status_code, caught.value.code) == (504, "upstream_timeout")
    assert 2 <= len(got) < 40


async def test_stream_retries_5xx_before_the_first_byte(server: StandIn, upstream: Upstream) -> None:
    script(server, status(503, {}), status(502, "down"), sse([event(CHUNKS[0]), done()]))
    got: list[dict[str, Any]] = []
    await collect(upstream.stream({"model": "m", "messages": []}), got)
    assert got == CHUNKS[:1]
    assert len(server.requests) == 3
    assert all(request.body["stream"] is True for request in server.requests)


async def test_stream_500_is_not_retried(server: StandIn, upstream: Upstream) -> None:
    script(server, status(500, {}), sse([event(CHUNKS[0]), done()]))
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as caught:
        await collect(upstream.stream({"model": "m", "messages": []}), got)
    assert got == []
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_error")
    assert len(server.requests) == 1


async def test_stream_client_error_surfaces_before_any_chunk(server: StandIn, upstream: Upstream) -> None:
    error = {
        "message": "messages is required",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }
    script(server, status(400, {"error": error}))
    stream = upstream.stream({"model": "m"})
    with pytest.raises(UpstreamError) as caught:
        await anext(stream)
    assert caught.value.status_code == 400
    assert caught.value.to_body() == {"error": error}


@pytest.mark.parametrize(
    ("pieces", "code"),
    [
        ([event(CHUNKS[0]), b"data: {not json\n\n", done()], "upstream_malformed"),
        ([event(CHUNKS[0]), b"data: [1, 2]\n\n", done()], "upstream_malformed"),
        ([event(CHUNKS[0]), b"data: \xff\xfe\n\n", done()], "upstream_malformed"),
        ([event(CHUNKS[0]), event({"error": {"message": "CUDA out of memory"}}), done()], "upstream_error"),
    ],
)
async def test_bad_events_mid_stream(
    server: StandIn, upstream: Upstream, pieces: list[bytes], code: str
) -> None:
    script(server, sse(pieces))
    got: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError) as caught:
        await collect(upstream.stream({"model": "m", "messages": []}), got)
    assert got == CHUNKS[:1]
    assert (caught.value.status_code, caught.value.code) == (502, code)
    assert "CUDA" not in caught.value.message


async def test_json_reply_to_a_stream_request_is_not_taken_for_a_stream(
    server: StandIn, upstream: Upstream
) -> None:
    script(server, completion())  # a server that ignores "stream": true
    with pytest.raises(UpstreamError) as caught:
        await anext(upstream.stream({"model": "m", "messages": []}))
    assert caught.value.code == "upstream_malformed"


async def test_closing_the_stream_early_closes_the_upstream_connection(
    server: StandIn, upstream: Upstream
) -> None:
    finished = threading.Event()
    script(server, sse([event(chunk(i, "x")) for i in range(200)] + [done()], pause=0.01, finished=finished))
    async with aclosing(upstream.stream({"model": "m", "messages": []})) as stream:
        first = await anext(stream)
    assert first == chunk(0, "x")
    # The stand-in stops writing well before its 200 chunks (2 s) would have been sent.
    assert await asyncio.to_thread(finished.wait, 1.0)


# ----------------------------------------------------------------- units


def test_sse_decoder_gives_the_same_events_however_the_bytes_are_split() -> None:
    for newline in (b"\n", b"\r\n", b"\r"):
        data = b"\xef\xbb\xbf" + awkward_stream(newline)  # with a byte-order mark, which SSE drops
        whole = SSEDecoder()
        expected = whole.feed(data)
        assert [json.loads(e) for e in expected[:-1]] == CHUNKS and expected[-1] == "[DONE]"
        for split in range(1, len(data)):
            decoder = SSEDecoder()
            assert decoder.feed(data[:split]) + decoder.feed(data[split:]) == expected, (newline, split)
        one_by_one = SSEDecoder()
        assert [e for i in range(len(data)) for e in one_by_one.feed(data[i : i + 1])] == expected


def test_sse_decoder_limits_line_length() -> None:
    decoder = SSEDecoder(max_chars=100)
    with pytest.raises(ValueError):
        decoder.feed(b"data: " + b"x" * 200)


def test_retry_after_forms() -> None:
    assert retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert retry_after(httpx.Headers({"retry-after-ms": "250", "Retry-After": "3"})) == 0.25
    in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    assert 8 <= (retry_after(httpx.Headers({"Retry-After": in_ten})) or 0) <= 10
    assert retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after(httpx.Headers({})) is None
