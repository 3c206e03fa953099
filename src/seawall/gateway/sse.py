"""Server-sent events framing of a chat completions stream (OpenAI's ``data: ...`` lines).

:class:`StreamState` keeps what the gateway needs of an upstream stream to frame the chunks it
releases; :func:`event` writes one event; :func:`as_chunks` turns an answer seawall gives itself
into a stream. The stream's guard and its audit stay in :mod:`seawall.gateway.pipeline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Send

log = logging.getLogger("seawall.gateway")

#: The event that ends every stream.
DONE = b"data: [DONE]\n\n"


class StreamState:
    """What the gateway keeps of an upstream stream: the chunk header, finish reason, usage, tool calls.

    The ``id`` is always seawall's (``chatcmpl-<request id>``, so a report made with it finds the
    request); ``created``, ``model`` and ``system_fingerprint`` are the first upstream
    chunk's, where it has them, else the gateway's own (the request's model), and the header
    stays the same for every chunk the client gets, whatever later upstream chunks say.
    ``extension`` is seawall's ``seawall`` field for every chunk; it is the gateway's to give (a
    held answer's review), never taken from the upstream's chunks. ``keep_model``: the chunks name
    ``model`` whatever the upstream's say (a name the policy maps onto another upstream model).
    """

    def __init__(
        self,
        request_id: str,
        model: str,
        extension: Mapping[str, Any] | None = None,
        *,
        keep_model: bool = False,
    ) -> None:
        self.id = f"chatcmpl-{request_id}"
        #: The upstream's own id for the stream (the client never sees it).
        self.upstream_id: str | None = None
        #: seawall's own ``seawall`` field, added to every chunk (a held answer's review), or None.
        self.extension = dict(extension) if extension else None
        self.created = int(time.time())
        self.model = model
        self.keep_model = keep_model
        self.system_fingerprint: str | None = None
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.tool_calls: list[Any] = []
        self._header_taken = False

    def observe(self, chunk: Mapping[str, Any]) -> str:
        """Note what ``chunk`` says about the stream; its text (the first choice's content delta)."""
        if not self._header_taken:
            self._header_taken = True
            self.upstream_id = str(chunk.get("id") or "") or None  # the client gets seawall's id
            created = chunk.get("created")
            if isinstance(created, int):
                self.created = created
            if not self.keep_model:
                self.model = str(chunk.get("model") or self.model)
            self.system_fingerprint = chunk.get("system_fingerprint") or None
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        text: str | None = None
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("tool_calls"), list):
                self.tool_calls.extend(delta["tool_calls"])
            if text is None and isinstance(delta.get("content"), str):
                text = delta["content"]
        return text or ""

    def chunk(self, delta: dict[str, Any], *, finish_reason: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if self.system_fingerprint:
            chunk["system_fingerprint"] = self.system_fingerprint
        if self.extension is not None:
            chunk["seawall"] = self.extension
        return chunk


#: Characters a JSON string may hold raw that Unicode-aware line splitters (Python's
#: ``str.splitlines``, httpx's ``iter_lines``) treat as line breaks: escaped, so an event stays one line.
_LINE_BREAKS_IN_JSON = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def event_json(payload: Mapping[str, Any]) -> str:
    """An event's compact JSON, on one line for every client's line splitter."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKS_IN_JSON)


def event(payload: Mapping[str, Any]) -> bytes:
    """One ``data:`` event (compact JSON)."""
    return b"data: " + event_json(payload).encode() + b"\n\n"


async def as_chunks(completion: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A completion seawall gives itself (a local answer, a held answer's placeholder or released
    draft) as one stream chunk: the first choice's content, its tool calls (indexed, as stream
    deltas carry them) and its finish reason. The stream's end follows in the gateway's stream."""
    choice = completion["choices"][0]
    message = choice.get("message") or {}
    delta: dict[str, Any] = {"content": message.get("content") or ""}
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list) and tool_calls:
        delta["tool_calls"] = [
            {"index": index, **call} for index, call in enumerate(tool_calls) if isinstance(call, dict)
        ]
    yield {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason") or "stop"}],
    }


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an (upstream) chunk iterator, never letting a broken one hide the real outcome."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing a broken upstream stream must not hide the real outcome
            log.debug("closing the upstream stream failed", exc_info=True)


class ClientTooSlowError(Exception):
    """Thrown into the gateway's event stream when its client took no bytes for too long."""


class GuardedStreamingResponse(StreamingResponse):
    """A stream whose client must keep reading: a send that waits longer than ``send_timeout_s``
    (the client stopped reading and the socket's buffers are full) ends the stream.

    :class:`ClientTooSlowError` is thrown into the event generator (it stops the upstream and
    audits the request), the generator is closed, and the response ends without its last
    chunk, so the server closes the connection. Without this a client that never reads would
    hold the upstream generation, and the request's audit record, for as long as it stays connected.
    """

    def __init__(self, content: AsyncGenerator[bytes, None], *, send_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.events = content
        self.send_timeout_s = send_timeout_s

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.events:
                try:
                    async with asyncio.timeout(self.send_timeout_s):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except TimeoutError:
                    log.warning(
                        "a stream's client took nothing for %.1f s: stream ended", self.send_timeout_s
                    )
                    with contextlib.suppress(ClientTooSlowError, StopAsyncIteration):
                        await self.events.athrow(ClientTooSlowError())
                    return  # no final chunk: the server closes the connection
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            # Shielded: when the client hung up, this task is being cancelled, and the generator's
            # cleanup (closing the upstream, the audit record) must still run to its end.
            with anyio.CancelScope(shield=True):
                await self.events.aclose()


__all__ = [
    "DONE",
    "ClientTooSlowError",
    "GuardedStreamingResponse",
    "StreamState",
    "aclose",
    "as_chunks",
    "event",
]
