"""Reading a target's answer off the wire: chat completions (plain and SSE-streamed chunks, with
tool-call deltas) and the Responses API (a Response object, or its typed stream events).

Each reader folds what the far end sent into an :class:`Assembled` answer (text, tool calls,
finish reason, usage, and the error object a stream ended with); the targets in
:mod:`seawall.redteam.targets` turn that into a ``TargetReply``. Tool calls come out in one shape
whatever the wire said: ``{"id", "name", "arguments"}`` with ``arguments`` the JSON text as sent.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Assembled:
    """An answer read off the wire."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    #: The error object a stream ended with (OpenAI's ``{"code", "message"}``), if it did.
    error: dict[str, Any] | None = None
    #: The stream ended without its terminator (``[DONE]``, ``response.completed``, ...).
    truncated: bool = False


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """A tool call in the red team's one shape (arguments kept as the JSON text the target sent)."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": str(call_id or ""), "name": str(name or ""), "arguments": arguments}


DONE = "[DONE]"


async def sse_data(response: httpx.Response) -> AsyncIterator[Any]:
    """The JSON payload of each server-sent event of ``response`` (its ``data:`` lines joined); a
    payload that is not JSON comes as its text, and ``data: [DONE]`` as :data:`DONE`, the last."""
    lines: list[str] = []

    def payload() -> Any:
        text = "\n".join(lines)
        lines.clear()
        try:
            return json.loads(text)
        except ValueError:
            return text

    async for line in response.aiter_lines():
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
        elif not line.strip() and lines:
            value = payload()
            yield value
            if value == DONE:
                return
    if lines:
        yield payload()


# ----------------------------------------------------------------- chat completions


def chat_message_calls(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tool calls of a chat completion's message (and a legacy ``function_call``)."""
    calls = []
    for call in message.get("tool_calls") or []:
        if isinstance(call, Mapping):
            function = call.get("function") or {}
            calls.append(tool_call(call.get("id"), function.get("name"), function.get("arguments", "")))
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        calls.append(tool_call("", legacy.get("name"), legacy.get("arguments", "")))
    return calls


class ChatStream:
    """Folds ``chat.completion.chunk`` events: content deltas, tool-call deltas by index (the id
    and name come once, the arguments in pieces), the finish reason, usage and an error event."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.answer = Assembled(truncated=True)

    def feed(self, event: Any) -> None:
        if not isinstance(event, Mapping):
            return
        if isinstance(event.get("error"), Mapping):
            self.answer.error = dict(event["error"])
            return
        if isinstance(event.get("usage"), Mapping):
            self.answer.usage = dict(event["usage"])
        for choice in event.get("choices") or []:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self.parts.append(delta["content"])
            for piece in delta.get("tool_calls") or []:
                if not isinstance(piece, Mapping):
                    continue
                slot = self.calls.setdefault(int(piece.get("index", len(self.calls))), {"arguments": []})
                if piece.get("id"):
                    slot["id"] = piece["id"]
                function = piece.get("function") or {}
                if function.get("name"):
                    slot["name"] = function["name"]
                if isinstance(function.get("arguments"), str):
                    slot["arguments"].append(function["arguments"])
            if choice.get("finish_reason"):
                self.answer.finish_reason = str(choice["finish_reason"])

    def done(self) -> Assembled:
        self.answer.text = "".join(self.parts)
        self.answer.tool_calls = [
            tool_call(slot.get("id"), slot.get("name"), "".join(slot["arguments"]))
            for _, slot in sorted(self.calls.items())
        ]
        # An OpenAI stream's last choice chunk always carries a finish reason: one without is cut
        # short, even where [DONE] follows (llama-cpp-python's server ends an interrupted stream so
        # when a second request arrives), and an interrupted answer must not be judged.
        self.answer.truncated = self.answer.finish_reason is None
        return self.answer


async def read_chat_stream(response: httpx.Response) -> Assembled:
    stream = ChatStream()
    async for event in sse_data(response):
        if event == DONE:
            break
        stream.feed(event)
    return stream.done()


# ----------------------------------------------------------------- the Responses API


def responses_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat ``tools`` entries as Responses function tools (the function's fields at the top)."""
    converted = []
    for tool in tools:
        function = tool.get("function") if tool.get("type") == "function" else None
        if isinstance(function, Mapping):
            converted.append({"type": "function", **{k: v for k, v in function.items() if v is not None}})
        else:
            converted.append(copy.deepcopy(tool))
    return converted


def responses_input(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(instructions, input items) for chat-shaped messages: system messages become the
    instructions, an assistant's tool calls ``function_call`` items, tool messages
    ``function_call_output`` items."""
    instructions = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "system":
            continue
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": str(message.get("tool_call_id") or ""),
                    "output": str(message.get("content") or ""),
                }
            )
            continue
        content = message.get("content")
        if content:
            items.append({"type": "message", "role": role, "content": str(content)})
        for call in chat_message_calls(message) if role == "assistant" else []:
            items.append(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": call["name"],
                    "arguments": call["arguments"],
                }
            )
    return ("\n\n".join(instructions) or None), items


def responses_output(response: Mapping[str, Any]) -> Assembled:
    """A Response object's text (its messages' ``output_text`` parts) and function calls."""
    parts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or []:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, Mapping) and part.get("type") in ("output_text", "text"):
                    parts.append(str(part.get("text") or ""))
                elif isinstance(part, Mapping) and part.get("type") == "refusal":
                    parts.append(str(part.get("refusal") or ""))
        elif item.get("type") == "function_call":
            calls.append(
                tool_call(item.get("call_id") or item.get("id"), item.get("name"), item.get("arguments"))
            )
    status = response.get("status")
    incomplete = response.get("incomplete_details") or {}
    finish = {"completed": "stop", "incomplete": str(incomplete.get("reason") or "length")}.get(str(status))
    if calls and status == "completed":
        finish = "tool_calls"
    if incomplete.get("reason") == "content_filter":
        finish = "content_filter"
    error = response.get("error") if isinstance(response.get("error"), Mapping) else None
    return Assembled(
        text="".join(parts),
        tool_calls=calls,
        finish_reason=finish,
        usage=dict(response.get("usage") or {}),
        error=dict(error) if error else None,
    )


async def read_responses_stream(response: httpx.Response) -> Assembled:
    """Fold a streamed Response's typed events: text deltas, function calls (from their finished
    items), and the ``response.completed`` / ``incomplete`` / ``failed`` end, or an ``error`` event."""
    parts: list[str] = []
    calls: dict[str, dict[str, Any]] = {}
    final: Assembled | None = None
    error: dict[str, Any] | None = None
    async for event in sse_data(response):
        if not isinstance(event, Mapping):
            continue
        kind = event.get("type")
        if kind == "response.output_text.delta":
            parts.append(str(event.get("delta") or ""))
        elif kind == "response.output_item.done":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                key = str(item.get("call_id") or item.get("id") or len(calls))
                calls[key] = tool_call(key, item.get("name"), item.get("arguments"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            final = responses_output(event.get("response") or {})
        elif kind == "error":
            inner = event.get("error")
            error = (
                dict(inner)
                if isinstance(inner, Mapping)
                else {
                    "code": event.get("code"),
                    "message": event.get("message"),
                }
            )
    answer = final or Assembled(truncated=error is None)
    # the text the client was streamed is what it got (a failed response keeps only released text)
    answer.text = "".join(parts) if parts or final is None else answer.text
    answer.tool_calls = answer.tool_calls or list(calls.values())
    answer.error = error or answer.error
    return answer
