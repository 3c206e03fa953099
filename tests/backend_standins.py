"""Loopback HTTP servers for the backend tests.

Remote backends are tested against real HTTP servers on 127.0.0.1 that speak
the documented wire formats (the only test double is the far end, OpenAI's or
a Llama Guard server's). :class:`StandIn` records every request it gets so a
test can assert what was sent; its ``reply`` decides what comes back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp


@dataclass
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


Reply = Callable[[Recorded], Awaitable[Response]]


@dataclass
class StandIn:
    """An upstream stand-in: records requests, answers with ``reply`` (settable per test)."""

    reply: Reply
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            recorded = Recorded(request.method, request.url.path, dict(request.headers), body, raw)
            self.requests.append(recorded)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self.reply(recorded)
            finally:
                self.in_flight -= 1

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])

    async def until_peak(self, count: int, hold_s: float = 0.1, timeout_s: float = 5.0) -> None:
        """For a reply to await first: hold until ``count`` requests were in flight at once (or
        ``timeout_s`` passed), then ``hold_s`` more. A client allowed ``count`` at once reaches that
        peak however slow the machine (a fixed sleep alone leaves it to timing); one allowed fewer
        stays below it (each request waits out the timeout); one allowed more shows it in the
        requests that arrive while these are held."""
        deadline = time.monotonic() + timeout_s
        while self.max_in_flight < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(hold_s)


class LoopbackServer:
    """Serves an ASGI app with uvicorn on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app: ASGIApp, *, lifespan: str = "off") -> None:
        # IPPROTO_TCP: asyncio turns Nagle off only for sockets that say they are TCP (else every
        # response waits ~40 ms for the client's delayed acknowledgement).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("loopback server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@contextmanager
def serving(app: ASGIApp, *, lifespan: str = "off") -> Iterator[LoopbackServer]:
    server = LoopbackServer(app, lifespan=lifespan)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def stand_in(reply: Reply) -> Iterator[StandIn]:
    """A running :class:`StandIn`; its ``url`` is set while the block runs."""
    upstream = StandIn(reply=reply)
    with serving(upstream.app()) as server:
        upstream.url = server.url
        yield upstream


def json_reply(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status_code, headers=headers)


def chat_model_reply(request: Recorded, model: str, answer: str) -> Response:
    """An upstream's wire answer: its model list for ``/v1/models``, else a plain chat completion of
    ``answer`` (OpenAI's documented shapes)."""
    if request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "t"}]})
    return json_reply(
        {
            "id": "chatcmpl-up",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
            ],
        }
    )


def backend_warnings(caplog: pytest.LogCaptureFixture) -> str:
    """Every warning the remote backends logged (where upstream details go), one per line."""
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name == "seawall.backends" and record.levelno == logging.WARNING
    )
