"""The Responses API's wire format, translated to and from chat completions.

The gateway guards chat completions (:mod:`seawall.gateway.pipeline`), and the model servers it
fronts (llama.cpp's server, vLLM in chat mode) speak nothing else, so a ``POST /v1/responses``
request is translated into a chat completions body, goes down the same request path, and what
comes back (a completion, or the guarded stream's chunks) is translated into a Response object or
the Responses API's typed stream events. This module is the translation alone, no I/O:

* :func:`parse_request` checks a Responses request and splits it into the parts the translation
  needs (:class:`ResponsesRequest`); a field the gateway cannot honour is a 400 naming it;
* :func:`conversation_items` / :func:`chat_body` build the chat completions body: ``instructions``
  become a ``developer`` message first, input items become messages (``function_call`` items an
  assistant message's ``tool_calls``, ``function_call_output`` items ``tool`` messages, which the
  gateway treats as untrusted content), ``input_image`` parts ``image_url`` parts, function tools
  chat tools, ``max_output_tokens`` ``max_completion_tokens`` (capped by the policy as on chat),
  ``text.format`` ``response_format``;
* :func:`response_object` turns a chat completion into a Response object;
* :class:`EventWriter` turns a chat completions stream's chunks into the typed events
  (``response.created``, ``response.output_text.delta``, ``response.completed``, ...).

Only function tools are served: OpenAI's hosted tools (web search, file search, computer use, ...)
run inside OpenAI, which the gateway is not.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from seawall.errors import InvalidRequestError, SeawallError
from seawall.gateway.sse import event_json
from seawall.messages import text_of

#: The prefix of a response's id (the rest is the request id's hex).
RESPONSE_PREFIX = "resp_"
#: The field of seawall's own extensions (documents, a held answer's review), as on chat completions.
EXTENSION_FIELD = "seawall"
#: Request fields translated into the chat completions body or into the Response object.
TRANSLATED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "previous_response_id",
        "store",
        "stream",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "metadata",
        "user",
        "safety_identifier",
        "reasoning",
        EXTENSION_FIELD,
    }
)
#: Request fields accepted and not acted on: they change nothing the gateway returns.
IGNORED = frozenset(
    {
        "include",
        "truncation",
        "service_tier",
        "prompt_cache_key",
        "stream_options",
        "top_logprobs",
        "max_tool_calls",
        "background",
        "conversation",
        "prompt",
    }
)
#: Roles an input message may have.
MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
#: Content part types that are text, by the role they may appear in.
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


@dataclass
class ResponsesRequest:
    """A checked Responses request: what goes into the chat completions body and what the Response
    object repeats back."""

    body: dict[str, Any]
    #: This request's own input, as items (a string input is one user message).
    items: list[dict[str, Any]]
    instructions: str | None
    previous_response_id: str | None
    store: bool
    stream: bool


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _unsupported(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="unsupported_parameter")


def parse_request(body: Mapping[str, Any]) -> ResponsesRequest:
    """Check a Responses request's fields (400 naming the first one that is wrong)."""
    unknown = sorted(set(body) - TRANSLATED - IGNORED)
    if unknown:
        raise _invalid(f"Unknown parameter: '{unknown[0]}'.", unknown[0], "unknown_parameter")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _invalid("'model' is a required property and must be a string.", "model", "invalid_model")
    if body.get("background"):
        raise _unsupported(
            "background responses are not served by the gateway; send background: false", "background"
        )
    for name in ("conversation", "prompt"):
        if body.get(name) is not None:
            raise _unsupported(
                f"'{name}' is not served by the gateway (it names state kept by OpenAI); send the input, "
                "or continue a response of this gateway with previous_response_id",
                name,
            )
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[dict[str, Any]] = [{"role": "user", "content": raw}]
    elif isinstance(raw, list):
        items = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                raise _invalid(f"input[{index}] must be an object.", f"input[{index}]", "invalid_type")
            items.append(item)
    elif raw is None:
        items = []
    else:
        raise _invalid("'input' must be a string or an array of input items.", "input", "invalid_type")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _invalid("'instructions' must be a string.", "instructions", "invalid_type")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise _invalid("'previous_response_id' must be a string.", "previous_response_id", "invalid_type")
    if previous is not None and not previous.strip():  # names no response; omit it to start afresh
        raise _invalid("'previous_response_id' must name a response: it is empty.", "previous_response_id")
    if not items and previous is None:
        raise _invalid("'input' is required: a string or a non-empty array of input items.", "input")
    for name in ("store", "stream", "parallel_tool_calls"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _invalid(f"'{name}' must be a boolean.", name, "invalid_type")
    cap = body.get("max_output_tokens")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise _invalid("'max_output_tokens' must be an integer of at least 1.", "max_output_tokens")
    return ResponsesRequest(
        body=dict(body),
        items=items,
        instructions=instructions,
        previous_response_id=previous,
        store=body.get("store") is not False,
        stream=bool(body.get("stream")),
    )


# ---------------------------------------------------------------------------------- request


def _text_content(content: Any, where: str, *, images: bool, refusals: bool = False) -> Any:
    """An input message's content as chat content: a string, or a list of chat parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(
            f"{where}.content must be a string or an array of parts.", f"{where}.content", "invalid_type"
        )
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            kind = None  # a list or an object would break the set lookups below (unhashable)
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and refusals and isinstance(part.get("refusal"), str):
            parts.append({"type": "refusal", "refusal": part["refusal"]})
        elif kind == "input_image" and images:
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise _unsupported(
                    f"{at}: the gateway takes images by image_url (an https or data: URL); file_id names "
                    "a file kept by OpenAI",
                    f"{at}.image_url",
                )
            image: dict[str, Any] = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind in {"input_file", "input_audio", "input_image"}:
            raise _unsupported(
                f"{at}: {kind} parts are not served here (the gateway cannot judge them)", f"{at}.type"
            )
        else:
            raise _invalid(f"{at} is not a content part this message may hold.", f"{at}.type", "invalid_type")
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def _output_text(output: Any, where: str) -> str:
    """A ``function_call_output`` item's output as text (a string, or its text parts)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return text_of(_text_content(output, where, images=False))
    raise _invalid(
        f"{where}.output must be a string or an array of parts.", f"{where}.output", "invalid_type"
    )


#: Where the parts of one chat message came from: (chat suffix, Responses param, keep what follows).
MessageSource = list[tuple[str, str, bool]]


def chat_messages(
    items: list[dict[str, Any]],
    *,
    first_index: int = 0,
    sources: list[MessageSource] | None = None,
    string_input: bool = False,
) -> list[dict[str, Any]]:
    """Input items as chat messages; ``first_index`` is the first item's index in ``input`` (errors
    name ``input[i]``; items of previous responses, already checked, come before it). ``sources``,
    when given, gets each message's :data:`MessageSource` (for :class:`ParamMap`); ``string_input``:
    the request's ``input`` was a string (its one item is named ``input``)."""
    messages: list[dict[str, Any]] = []
    for offset, item in enumerate(items):
        where = f"input[{offset - first_index}]" if offset >= first_index else f"previous input[{offset}]"
        param = where if offset >= first_index else "previous_response_id"
        kept = offset >= first_index and not string_input
        if string_input and offset >= first_index:
            param = "input"
        added = len(messages)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in MESSAGE_ROLES:
                raise _invalid(
                    f"{where}.role must be one of user, assistant, system, developer.", f"{where}.role"
                )
            content = _text_content(
                item.get("content"), where, images=role == "user", refusals=role == "assistant"
            )
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            arguments = item.get("arguments", "")
            if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, str):
                raise _invalid(
                    f"{where}: a function_call item needs a string call_id, name and arguments.", where
                )
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and isinstance(last["content"], str | None):
                last.setdefault("tool_calls", []).append(call)
                if sources is not None:
                    at = f".tool_calls[{len(last['tool_calls']) - 1}]"
                    sources[-1] += [
                        (at, param, False),
                        (f"{at}.function", param, kept),
                        (f"{at}.id", param, False),
                    ]
                continue
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            if sources is not None:
                at = ".tool_calls[0]"
                sources.append(
                    [("", param, False), (f"{at}.function", param, kept), (f"{at}.id", param, False)]
                )
            continue
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _invalid(
                    f"{where}: a function_call_output item needs a string call_id.", f"{where}.call_id"
                )
            messages.append(
                {"role": "tool", "tool_call_id": call_id, "content": _output_text(item.get("output"), where)}
            )
            if sources is not None:
                sources.append(
                    [
                        ("", param, kept),
                        (".content", f"{param}.output", kept),
                        (".tool_call_id", param, False),
                    ]
                )
            continue
        elif kind == "reasoning":
            continue  # a reasoning model's notes: nothing a chat model reads
        else:
            raise _unsupported(
                f"{where}: '{kind}' items are not served by the gateway (messages, function_call, "
                "function_call_output and reasoning items are)",
                f"{where}.type",
            )
        if sources is not None and len(messages) > added:  # a message item
            sources.append([("", param, kept)])
    return messages


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("'tools' must be an array.", "tools", "invalid_type")
    chat: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _unsupported(
                f"{where}: the gateway serves function tools only; {kind!r} is run by OpenAI itself",
                f"{where}.type",
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _invalid(f"{where}.name must be a string.", f"{where}.name", "invalid_type")
        function = {
            key: tool[key]
            for key in ("name", "description", "parameters", "strict")
            if tool.get(key) is not None
        }
        chat.append({"type": "function", "function": function})
    return chat


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _unsupported(
        '\'tool_choice\' must be none, auto, required or {"type": "function", "name": ...}', "tool_choice"
    )


def _response_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        raise _invalid("'text' must be an object.", "text", "invalid_type")
    spec = text.get("format")
    if spec is None:
        return None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(spec.get("schema"), dict) and isinstance(spec.get("name"), str):
        schema = {
            key: spec[key] for key in ("name", "schema", "strict", "description") if spec.get(key) is not None
        }
        return {"type": "json_schema", "json_schema": schema}
    raise _invalid(
        "'text.format' must be {type: text}, {type: json_object} or {type: json_schema, name, schema}.",
        "text.format",
    )


#: Chat completions fields and the Responses fields they were made from (what follows is kept).
_FIELDS: tuple[tuple[str, str], ...] = (
    ("max_completion_tokens", "max_output_tokens"),
    ("max_tokens", "max_output_tokens"),
    ("response_format.json_schema", "text.format"),
    ("response_format", "text.format"),
    ("tool_choice.function", "tool_choice"),
    ("reasoning_effort", "reasoning.effort"),
    ("stream_options", "stream"),
    ("messages", "input"),
)
_MESSAGE = re.compile(r"messages\[(\d+)\]")
_TOOL = re.compile(r"tools\[(\d+)\]\.function")


def _follows(text: str, prefix: str) -> bool:
    """Whether ``text`` is ``prefix`` or starts with it followed by a field or an index."""
    return text == prefix or (text.startswith(prefix) and text[len(prefix)] in ".[")


@dataclass
class ParamMap:
    """Which part of a Responses request each part of its chat completions body came from, so an
    error the gateway's chat path raises names the Responses field (``input[1].content`` rather than
    ``messages[2].content``, ``instructions``, ``max_output_tokens``)."""

    #: Per chat message, where it came from (:data:`MessageSource`).
    messages: list[MessageSource] = field(default_factory=list)

    def param(self, param: str | None) -> str | None:
        """The Responses request's name for the chat ``param`` (unchanged where they agree)."""
        if param is None:
            return None
        if (found := _MESSAGE.match(param)) is not None:
            index, rest = int(found.group(1)), param[found.end() :]
            if index >= len(self.messages):
                return "input"
            source = max(
                (entry for entry in self.messages[index] if _follows(rest, entry[0]) or not entry[0]),
                key=lambda entry: len(entry[0]),
            )
            suffix, named, keep = source
            return named + rest[len(suffix) :] if keep else named
        if (tool := _TOOL.match(param)) is not None:
            return f"tools[{tool.group(1)}]" + param[tool.end() :]
        for chat, responses in _FIELDS:
            if _follows(param, chat):
                return responses + param[len(chat) :]
        return param

    def rewrite(self, exc: SeawallError) -> SeawallError:
        """``exc`` with its ``param`` (and the param's mentions in its message) in Responses terms."""
        before = exc.param
        after = self.param(before)
        if before is not None and after != before:
            exc.param = after
            exc.message = _renamed(exc.message, before, after or "input")
            exc.args = (exc.message,)
        return exc

    def error(self, error: Mapping[str, Any]) -> dict[str, Any]:
        """An error object (a stream's error event) with its ``param`` in Responses terms."""
        before = error.get("param")
        after = self.param(before) if isinstance(before, str) else before
        if after == before:
            return dict(error)
        message = _renamed(str(error.get("message") or ""), str(before), str(after))
        return {**error, "param": after, "message": message}


def _renamed(message: str, before: str, after: str) -> str:
    """``message`` with the param ``before`` said as ``after``: a path (``messages[3].content``)
    wherever it stands as a whole name, a plain field name (``messages``) only where it is quoted
    (the word itself is also English, and part of other names: ``max_messages``)."""
    if "[" in before or "." in before:
        pattern = r"(?<![\w.\]])" + re.escape(before) + r"(?![\w\[])"
        return re.sub(pattern, lambda _: after, message)
    return message.replace(f"'{before}'", f"'{after}'")


def chat_body(
    request: ResponsesRequest, conversation: list[dict[str, Any]], first_index: int
) -> tuple[dict[str, Any], ParamMap]:
    """The chat completions body for ``request`` continuing ``conversation`` (the previous
    responses' items, then the request's own from ``first_index`` on), and where each of its
    messages and fields came from."""
    body = request.body
    messages: list[dict[str, Any]] = []
    params = ParamMap()
    if request.instructions:
        messages.append({"role": "developer", "content": request.instructions})
        params.messages.append([("", "instructions", False)])
    messages += chat_messages(
        conversation,
        first_index=first_index,
        sources=params.messages,
        string_input=isinstance(body.get("input"), str),
    )
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    for name in ("temperature", "top_p", "parallel_tool_calls", "metadata", "user", "safety_identifier"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get(EXTENSION_FIELD) is not None:
        chat[EXTENSION_FIELD] = body[EXTENSION_FIELD]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("text") is not None and (response_format := _response_format(body["text"])) is not None:
        chat["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    if request.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, params


# ---------------------------------------------------------------------------------- response


def new_item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def response_id(request_id: str) -> str:
    """The Response id of a gateway request (``swreq-<hex>`` -> ``resp_<hex>``)."""
    return RESPONSE_PREFIX + request_id.removeprefix("swreq-")


def skeleton(request: ResponsesRequest, response_id: str, *, created_at: int | None = None) -> dict[str, Any]:
    """A Response object with the request's settings and no output yet (status in_progress).

    The client's ``user`` is not repeated back: the Response is kept in the store, which holds no
    raw user ids."""
    body = request.body
    text = body.get("text") if isinstance(body.get("text"), dict) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": request.store,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": (text or {}).get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": list(body.get("tools") or []),
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def usage_of(usage: Any) -> dict[str, Any] | None:
    """A chat completion's usage in the Responses API's terms."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def ending(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """The Response's status and incomplete details for a chat finish reason."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)],
    }


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(call: Mapping[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "function_call",
        "id": new_item_id("fc"),
        "call_id": str(call.get("id") or new_item_id("call")),
        "name": str(function.get("name") or ""),
        "arguments": str(function.get("arguments") or ""),
        "status": status,
    }


def response_object(completion: Mapping[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A chat completion (the model's, or one seawall wrote: a refusal, a knowledge-base answer, a
    review placeholder) as the Response object ``base`` begins."""
    choices = completion.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    status, incomplete = ending(choice.get("finish_reason"))
    output: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    if text:
        output.append(message_item(new_item_id("msg"), text, status))
    elif isinstance(message.get("refusal"), str) and message["refusal"]:
        item = message_item(new_item_id("msg"), "", status)
        item["content"] = [{"type": "refusal", "refusal": message["refusal"]}]
        output.append(item)
    output += [function_call_item(call) for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    response = {
        **base,
        "status": status,
        "incomplete_details": incomplete,
        "output": output,
        "usage": usage_of(completion.get("usage")),
    }
    if isinstance(completion.get("model"), str) and completion["model"]:
        response["model"] = completion["model"]
    if completion.get(EXTENSION_FIELD) is not None:
        response[EXTENSION_FIELD] = completion[EXTENSION_FIELD]
    return response


def queued_response(pending: Mapping[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """An answer held for review under ``review.hold_response: accepted`` (the chat path's 202
    pending body) as a Response: ``status: queued``, no output yet, and seawall's review (``id``,
    ``status: pending``, ``poll_url``, ``reasons``, ``message``) in its ``seawall`` field."""
    review = {
        "id": pending.get("review_id"),
        "status": "pending",
        "poll_url": pending.get("poll_url"),
        "reasons": list(pending.get("reasons") or []),
        "message": pending.get("message"),
    }
    return {**base, "status": "queued", "output": [], EXTENSION_FIELD: {"review": review}}


# ---------------------------------------------------------------------------------- stream events


def sse(payload: Mapping[str, Any]) -> bytes:
    """One typed event: ``event: <type>`` and its JSON."""
    return f"event: {payload['type']}\ndata: {event_json(payload)}\n\n".encode()


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class EventWriter:
    """The typed events of one streamed response, from the guarded chat stream's chunks.

    :meth:`start` gives ``response.created`` and ``response.in_progress``; :meth:`chunk` the
    events of one chat chunk (the message item and its text part are opened by the first text,
    then one ``response.output_text.delta`` per released piece); :meth:`finish` closes the message,
    adds each function call (``response.output_item.added``, its arguments' delta and done events,
    ``response.output_item.done``) and ends with ``response.completed`` (or
    ``response.incomplete``); :meth:`fail` ends with ``response.failed`` and an ``error`` event
    that carries OpenAI's error object too (so the SDK raises it as :class:`openai.APIError`).
    Every event has its ``sequence_number``.
    """

    def __init__(self, base: dict[str, Any]) -> None:
        self.response = dict(base)
        self.sequence = 0
        self.message_id: str | None = None
        self.text: list[str] = []
        self.calls: dict[int, _Call] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return sse(payload)

    def _snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.response))  # type: ignore[no-any-return]

    def start(self) -> list[bytes]:
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    def queued(self) -> list[bytes]:
        """A response that waits (held for review): ``response.created`` and ``response.queued``,
        each with the queued Response; the stream ends there."""
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.queued", response=self._snapshot()),
        ]

    def chunk(self, chunk: Mapping[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get(EXTENSION_FIELD) is not None:
            self.response[EXTENSION_FIELD] = chunk[EXTENSION_FIELD]
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.response["model"] = chunk["model"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if isinstance(piece, str) and piece:
                events += self._open_message()
                self.text.append(piece)
                events.append(
                    self._event(
                        "response.output_text.delta",
                        item_id=self.message_id,
                        output_index=0,
                        content_index=0,
                        delta=piece,
                        logprobs=[],
                    )
                )
            for fragment in delta.get("tool_calls") or []:
                if isinstance(fragment, dict):
                    self._add_call(fragment)
        return events

    def _open_message(self) -> list[bytes]:
        if self.message_id is not None:
            return []
        self.message_id = new_item_id("msg")
        item = {**message_item(self.message_id, "", "in_progress"), "content": []}
        return [
            self._event("response.output_item.added", output_index=0, item=item),
            self._event(
                "response.content_part.added",
                item_id=self.message_id,
                output_index=0,
                content_index=0,
                part=output_text_part(""),
            ),
        ]

    def _add_call(self, fragment: Mapping[str, Any]) -> None:
        index = fragment.get("index", len(self.calls))
        call = self.calls.setdefault(index if isinstance(index, int) else len(self.calls), _Call())
        call.id = str(fragment.get("id") or call.id)
        function = fragment.get("function") or {}
        call.name = str(function.get("name") or call.name)
        if isinstance(function.get("arguments"), str):
            call.arguments.append(function["arguments"])

    def _close_message(self, status: str) -> list[bytes]:
        if self.message_id is None:
            return []
        text = "".join(self.text)
        item = message_item(self.message_id, text, status)
        self.response["output"] = [item]
        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=output_text_part(text)),
            self._event("response.output_item.done", output_index=0, item=item),
        ]

    def finish(self) -> list[bytes]:
        status, incomplete = ending(self.finish_reason)
        events = self._close_message(status)
        for _, call in sorted(self.calls.items()):
            index = len(self.response["output"])
            arguments = "".join(call.arguments)
            item = function_call_item(
                {"id": call.id or None, "function": {"name": call.name, "arguments": arguments}}
            )
            events.append(
                self._event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "arguments": "", "status": "in_progress"},
                )
            )
            where = {"item_id": item["id"], "output_index": index}
            events.append(self._event("response.function_call_arguments.delta", **where, delta=arguments))
            events.append(
                self._event(
                    "response.function_call_arguments.done", **where, name=call.name, arguments=arguments
                )
            )
            events.append(self._event("response.output_item.done", output_index=index, item=item))
            self.response["output"].append(item)
        self.response.update(status=status, incomplete_details=incomplete, usage=usage_of(self.usage))
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self._snapshot()))
        return events

    def fail(self, error: Mapping[str, Any]) -> list[bytes]:
        """The stream ended with ``error`` (OpenAI's error object: a guard cut the answer, the guard
        failed, the upstream broke off); only released text is in the failed response."""
        events = self._close_message("incomplete")
        code = error.get("code") or error.get("type") or "server_error"
        message = str(error.get("message") or "The response failed.")
        self.response.update(
            status="failed", error={"code": code, "message": message}, usage=usage_of(self.usage)
        )
        events.append(self._event("response.failed", response=self._snapshot()))
        events.append(
            self._event("error", code=code, message=message, param=error.get("param"), error=dict(error))
        )
        return events


__all__ = [
    "EXTENSION_FIELD",
    "IGNORED",
    "RESPONSE_PREFIX",
    "TRANSLATED",
    "EventWriter",
    "MessageSource",
    "ParamMap",
    "ResponsesRequest",
    "chat_body",
    "chat_messages",
    "ending",
    "parse_request",
    "queued_response",
    "response_id",
    "response_object",
    "skeleton",
    "usage_of",
]
