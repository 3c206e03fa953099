"""Targets: anything that answers a conversation.

* :class:`OpenAITarget` - an OpenAI-compatible ``/chat/completions`` endpoint (a base URL, a
  model, a key from the environment);
* :class:`SeawallTarget` - the seawall gateway: the same wire format, with untrusted documents
  sent in its ``seawall.documents`` extension field and its refusals recognised as blocks;
* :class:`HTTPTarget` - any HTTP endpoint: a JSON request template and a JSONPath to the reply;
* :class:`CallableTarget` - a Python function (``module:function``, sync or async) that gets
  the whole conversation.

A target returns a :class:`TargetReply`; it never raises for what the far end did (an HTTP
error, a timeout, a block): those are data, so a scan can tell ``error`` and ``blocked``
apart from ``safe``.

An answer a gateway holds for human review (seawall with ``review.enabled``) is the guard's
verdict, like a block: the model's draft did not reach the user. The OpenAI-compatible targets
recognise both shapes seawall answers a held request with: the 202 pending-review body
(``object: chat.completion.pending``, ``review_id``) and the placeholder completion (the
``x-seawall-review-status: pending`` header, or ``seawall.review.status`` in the body). A
reviewer's decision that came in time (``hold_response: wait``) is an ordinary answer when it
released the draft (approved or edited) and a block when it rejected it. An answer whose
``finish_reason`` is ``content_filter`` (seawall's and Azure's output filters) is a block too.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib
import inspect
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from seawall.errors import ConfigurationError
from seawall.redteam.cases import Document
from seawall.redteam.wire import (
    DONE,
    Assembled,
    ChatStream,
    chat_message_calls,
    read_chat_stream,
    read_responses_stream,
    responses_input,
    responses_output,
    responses_tools,
    sse_data,
)

#: Error codes with which OpenAI-compatible servers (seawall's gateway, Azure, OpenAI) refuse
#: a request on content grounds: a block, not an error. seawall's risk ledger answers a user it
#: has escalated with ``user_throttled`` (429) or ``user_under_review`` (403): the guard stopping
#: the attacker, unlike a provider's plain rate limit (``rate_limit_exceeded``), which stays an error.
BLOCK_CODES = frozenset(
    {
        "content_policy_violation",
        "untrusted_content_rejected",
        "content_filter",
        "moderation_blocked",
        "user_blocked",
        "user_throttled",
        "user_under_review",
    }
)


@dataclass
class Conversation:
    """What a target is asked: OpenAI-shaped chat messages plus untrusted documents."""

    messages: list[dict[str, Any]]
    documents: list[Document] = field(default_factory=list)
    #: The attack case this conversation belongs to (targets may derive a per-case user id from it).
    case_id: str = ""
    #: Tools offered to the target (OpenAI chat ``tools`` entries); empty: none.
    tools: list[dict[str, Any]] = field(default_factory=list)

    def with_inline_documents(self) -> list[dict[str, Any]]:
        """The messages with the documents written into the first user message (a new list)."""
        messages = copy.deepcopy(self.messages)
        if not self.documents:
            return messages
        block = "\n\n".join(f'Reference document ({d.source}):\n"""\n{d.text}\n"""' for d in self.documents)
        for message in messages:
            if message.get("role") == "user":
                message["content"] = f"{block}\n\n{message['content']}"
                break
        return messages

    @property
    def last_user(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return str(message.get("content") or "")
        return ""

    @property
    def system(self) -> str:
        return "\n\n".join(str(m["content"]) for m in self.messages if m.get("role") == "system")


@dataclass
class TargetReply:
    """A target's answer: its text, or why there is none."""

    text: str = ""
    blocked: bool = False
    error: str | None = None
    status: int | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    #: The review id when a gateway held the answer for human review (then ``blocked`` too).
    held: str | None = None
    #: Tool calls the target made: ``{"id", "name", "arguments"}`` (arguments: the JSON text sent).
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.blocked and self.error is None


@runtime_checkable
class Target(Protocol):
    """The red team's target protocol."""

    name: str
    #: Whether a system prompt sent with the conversation reaches the model (planted canaries
    #: and records need it).
    takes_system_prompt: bool

    async def send(self, conversation: Conversation) -> TargetReply: ...

    async def aclose(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def _env(value: str) -> str:
    """``${NAME}`` replaced by the environment variable NAME (an error if it is unset)."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigurationError(f"environment variable {name} is not set")
        return os.environ[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, value)


#: Headers and fields with which seawall marks an answer held for human review.
REVIEW_ID_HEADER = "x-seawall-review-id"
REVIEW_STATUS_HEADER = "x-seawall-review-status"
PENDING_OBJECT = "chat.completion.pending"


def held_reply(response: httpx.Response, payload: Any) -> TargetReply | None:
    """The reply for an answer a seawall gateway held for review (or a reviewer rejected in time):
    a block carrying the review id; None when the answer was not held (or was released)."""
    extension = payload.get("seawall") if isinstance(payload, dict) else None
    review = extension.get("review") if isinstance(extension, dict) else None
    review = review if isinstance(review, dict) else {}
    review_id = response.headers.get(REVIEW_ID_HEADER) or review.get("id")
    if isinstance(payload, dict) and (response.status_code == 202 or payload.get("object") == PENDING_OBJECT):
        review_id = review_id or payload.get("review_id")
        if review_id or payload.get("status") == "pending_review":
            return TargetReply(
                blocked=True,
                status=response.status_code,
                held=str(review_id or "?"),
                error=f"held for human review ({review_id or 'no id'})",
            )
    status = response.headers.get(REVIEW_STATUS_HEADER) or review.get("status")
    if review_id and status in ("pending", "rejected"):
        what = "held for human review" if status == "pending" else "rejected by a reviewer"
        return TargetReply(
            blocked=True, status=response.status_code, held=str(review_id), error=f"{what} ({review_id})"
        )
    return None


def _error_body(response: httpx.Response) -> tuple[str | None, str]:
    """(error code, message) from an OpenAI-style error body, else (None, a snippet)."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return (str(error["code"]) if error.get("code") else None), str(error.get("message", ""))[:300]
    return None, response.text[:200]


class _HTTPBase:
    def __init__(self, timeout_s: float, retries: int, max_connections: int) -> None:
        self.retries = retries
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=max_connections),
            trust_env=False,
        )

    async def _post(self, method: str, url: str, **kwargs: Any) -> httpx.Response | str:
        """The response, or an error description after the retries (connection errors, 429, 5xx)."""
        return await self._retrying(lambda: self._client.request(method, url, **kwargs), stream=False)

    async def _open_stream(self, method: str, url: str, **kwargs: Any) -> httpx.Response | str:
        """Like :meth:`_post`, but the body is left to stream (the caller closes the response); an
        answer that is not a 2xx is read whole first, so error bodies can be parsed."""
        return await self._retrying(
            lambda: self._client.send(self._client.build_request(method, url, **kwargs), stream=True),
            stream=True,
        )

    async def _retrying(
        self, send: Callable[[], Awaitable[httpx.Response]], *, stream: bool
    ) -> httpx.Response | str:
        """``send`` until it answers other than 429/502/503/504 or the retries are spent (doubling
        the pause from 0.25 s); an error description when no answer came. With ``stream``, an
        answer that is not a 2xx is read whole and closed before it is returned or retried."""
        delay = 0.25
        for attempt in range(self.retries + 1):
            try:
                response = await send()
            except httpx.TimeoutException:
                problem = "timeout"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if stream and 200 <= response.status_code < 300:
                    return response
                if stream:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
                if response.status_code not in (429, 502, 503, 504) or attempt == self.retries:
                    return response
                problem = f"HTTP {response.status_code}"
            if attempt < self.retries:
                await asyncio.sleep(delay)
                delay *= 2
        return problem

    async def _read_stream(
        self, response: httpx.Response, reader: Callable[[httpx.Response], Awaitable[Assembled]]
    ) -> Assembled | str:
        """The assembled answer of an open stream, or why it broke off."""
        try:
            return await reader(response)
        except httpx.TimeoutException:
            return "timeout while reading the stream"
        except httpx.HTTPError as exc:
            return f"the stream broke off: {type(exc).__name__}: {exc}"
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


def _assembled_reply(answer: Assembled, status: int) -> TargetReply:
    """A :class:`TargetReply` from an answer read off the wire: an error event with a block code is
    a block (with the text released before it), any other error event an error, a stream cut short
    an error, ``content_filter`` a block."""
    if answer.error is not None:
        code = str(answer.error.get("code") or answer.error.get("type") or "")
        message = str(answer.error.get("message") or "")[:300]
        if code in BLOCK_CODES:
            return TargetReply(
                text=answer.text, blocked=True, status=status, error=f"{code}: {message}", usage=answer.usage
            )
        return TargetReply(text=answer.text, error=f"stream error {code}: {message}".strip(), status=status)
    if answer.truncated:
        return TargetReply(
            text=answer.text,
            error="the stream ended without its final event (no finish reason)",
            status=status,
        )
    if answer.finish_reason == "content_filter":
        return TargetReply(
            text=answer.text,
            blocked=True,
            status=status,
            finish_reason="content_filter",
            error="content_filter: the answer was filtered by the target",
            usage=answer.usage,
            tool_calls=answer.tool_calls,
        )
    return TargetReply(
        text=answer.text,
        status=status,
        finish_reason=answer.finish_reason,
        usage=answer.usage,
        tool_calls=answer.tool_calls,
    )


def _refused(response: httpx.Response) -> TargetReply:
    """A non-2xx answer: a block when its error code is one, else an error."""
    code, message = _error_body(response)
    if code in BLOCK_CODES:
        return TargetReply(blocked=True, status=response.status_code, error=f"{code}: {message}")
    return TargetReply(
        error=f"HTTP {response.status_code} {code or ''}: {message}".strip(), status=response.status_code
    )


class OpenAITarget(_HTTPBase):
    """An OpenAI-compatible chat endpoint; ``base_url`` ends in ``/v1``."""

    takes_system_prompt = True
    documents_mode = "inline"

    #: The seawall gateway's extras: documents in its ``seawall`` field, one end user per case.
    per_case_user = False

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
        retries: int = 1,
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        max_connections: int = 64,
        name: str | None = None,
        stream: bool = False,
    ) -> None:
        super().__init__(timeout_s, retries, max_connections)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.stream = stream
        self.headers = {
            "content-type": "application/json",
            **{k: _env(v) for k, v in (headers or {}).items()},
        }
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.name = name or f"{self.base_url} ({model})"

    kind = "openai"
    path = "/chat/completions"

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"type": self.kind, "base_url": self.base_url, "model": self.model}
        if self.stream:
            described["stream"] = True
        if self.path != "/chat/completions":
            described["api"] = "responses"
        return described

    def _messages(self, conversation: Conversation) -> list[dict[str, Any]]:
        if self.documents_mode == "seawall":
            return copy.deepcopy(conversation.messages)
        return conversation.with_inline_documents()

    def _extras(self, conversation: Conversation, body: dict[str, Any]) -> dict[str, Any]:
        """The seawall gateway's fields (documents, the per-case user) when this target has them."""
        if self.documents_mode == "seawall" and conversation.documents:
            body["seawall"] = {"documents": [d.model_dump() for d in conversation.documents]}
        if self.per_case_user and conversation.case_id and "user" not in body:
            digest = hashlib.sha256(conversation.case_id.encode()).hexdigest()[:16]
            body["user"] = f"seawall-redteam-{digest}"
        return body

    def body(self, conversation: Conversation) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(conversation),
            **self.extra_body,
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if conversation.tools:
            body["tools"] = copy.deepcopy(conversation.tools)
        if self.stream:
            body["stream"] = True
            body.setdefault("stream_options", {"include_usage": True})
        return self._extras(conversation, body)

    def _reply_of(self, payload: Any) -> Assembled | None:
        """The answer in a plain (not streamed) reply body; None if it is not this API's shape."""
        try:
            choice = payload["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return Assembled(
            text=str(content),
            tool_calls=chat_message_calls(message),
            finish_reason=choice.get("finish_reason"),
            usage=payload.get("usage") or {},
        )

    async def _read(self, response: httpx.Response) -> Assembled:
        return await read_chat_stream(response)

    async def send(self, conversation: Conversation) -> TargetReply:
        url = f"{self.base_url}{self.path}"
        body = self.body(conversation)
        if self.stream:
            opened = await self._open_stream("POST", url, json=body, headers=self.headers)
            if isinstance(opened, str):
                return TargetReply(error=opened)
            if opened.is_success and "text/event-stream" in opened.headers.get("content-type", ""):
                answer = await self._read_stream(opened, self._read)
                if isinstance(answer, str):
                    return TargetReply(error=answer, status=opened.status_code)
                if (held := held_reply(opened, None)) is not None:
                    return held
                return _assembled_reply(answer, opened.status_code)
            # not a stream: a refusal before the answer, or a held (202) or plain answer
            if opened.is_success and not opened.is_closed:
                await opened.aread()
                await opened.aclose()
            result: httpx.Response | str = opened
        else:
            result = await self._post("POST", url, json=body, headers=self.headers)
        if isinstance(result, str):
            return TargetReply(error=result)
        payload: Any = None
        if result.status_code in (200, 202):
            try:
                payload = result.json()
            except ValueError:
                payload = None
            if (held := held_reply(result, payload)) is not None:
                return held
        if result.status_code != 200:
            return _refused(result)
        plain = self._reply_of(payload)
        if plain is None:
            return TargetReply(error=f"the reply is not a {self.answer_name}", status=200)
        return _assembled_reply(plain, 200)

    answer_name = "chat completion"


class SeawallTarget(OpenAITarget):
    """The seawall gateway (``/v1/chat/completions``): documents go in its extension field, and
    each case speaks as its own end user (``user`` = a hash of the case id), so the gateway's
    per-user escalation judges every case on its own instead of blocking the whole scan after
    the first few attacks (a ``user_blocked`` answer still counts as a block)."""

    documents_mode = "seawall"
    per_case_user = True
    kind = "seawall"


class ResponsesTarget(OpenAITarget):
    """An endpoint behind OpenAI's Responses API (``POST {base_url}/responses``), plain or streamed:
    system messages go as ``instructions``, the rest as input items (tool calls and their results
    as ``function_call`` / ``function_call_output`` items), ``store: false``. A Response whose
    ``error`` or stream ``error`` event carries a block code (a guard cut the answer) is a block."""

    path = "/responses"
    answer_name = "Response object"

    def body(self, conversation: Conversation) -> dict[str, Any]:
        instructions, items = responses_input(self._messages(conversation))
        body: dict[str, Any] = {"model": self.model, "input": items, "store": False, **self.extra_body}
        if instructions:
            body["instructions"] = instructions
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_output_tokens"] = self.max_tokens
        if conversation.tools:
            body["tools"] = responses_tools(conversation.tools)
        if self.stream:
            body["stream"] = True
        return self._extras(conversation, body)

    def _reply_of(self, payload: Any) -> Assembled | None:
        if not isinstance(payload, dict) or payload.get("object") != "response":
            return None
        return responses_output(payload)

    async def _read(self, response: httpx.Response) -> Assembled:
        return await read_responses_stream(response)


class SeawallResponsesTarget(ResponsesTarget):
    """The seawall gateway's Responses API, with its documents field and one end user per case."""

    documents_mode = "seawall"
    per_case_user = True
    kind = "seawall"


# ----------------------------------------------------------------- generic HTTP


_PATH_TOKEN = re.compile(r"\.([A-Za-z_][\w-]*)|\[(-?\d+)\]|\[['\"]([^'\"]+)['\"]\]")


def _parse_path(path: str) -> list[str | int]:
    """The steps of a JSONPath of the simple form ``$.a.b[0]['c-d']`` (no filters or wildcards)."""
    if not path.startswith("$"):
        raise ConfigurationError(f"reply_path must start with '$': {path!r}")
    steps: list[str | int] = []
    position = 1
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if not match:
            raise ConfigurationError(f"unsupported JSONPath syntax at {path[position:]!r} in {path!r}")
        key, index, quoted = match.groups()
        steps.append(int(index) if index is not None else (key if key is not None else quoted))
        position = match.end()
    return steps


def json_path(document: Any, path: str) -> Any:
    """The value at ``path`` (see :func:`_parse_path`); LookupError if it is not there."""
    value = document
    for step in _parse_path(path):
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError) as exc:
            raise LookupError(f"{path} not found in the reply") from exc
    return value


def render_template(template: Any, variables: Mapping[str, Any]) -> Any:
    """Fill a JSON template: a string that is exactly ``{{name}}`` becomes the variable's JSON value
    (so ``{{messages}}`` can be a list); ``{{name}}`` inside a longer string is replaced by text."""
    if isinstance(template, str):
        whole = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", template)
        if whole:
            return variables[whole.group(1)]

        def text(match: re.Match[str]) -> str:
            value = variables[match.group(1)]
            return value if isinstance(value, str) else json.dumps(value)

        return re.sub(r"\{\{\s*(\w+)\s*\}\}", text, template)
    if isinstance(template, list):
        return [render_template(item, variables) for item in template]
    if isinstance(template, dict):
        return {key: render_template(value, variables) for key, value in template.items()}
    return template


def _template_names(template: Any) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template)))


TEMPLATE_VARIABLES = ("prompt", "messages", "system", "conversation", "history", "tools")


class HTTPTarget(_HTTPBase):
    """Any HTTP endpoint: a JSON body template and a JSONPath to the reply's text.

    Template variables: ``{{prompt}}`` (the last user message), ``{{messages}}`` (the whole
    conversation as OpenAI-style messages, documents written into the first user message),
    ``{{history}}`` (the messages before the last user message), ``{{system}}`` (the system
    prompt), ``{{conversation}}`` (the conversation as plain text) and ``{{tools}}`` (the tools
    offered, OpenAI chat ``tools`` entries). A response whose status is in ``blocked_status`` is
    a block; other non-2xx statuses are errors.

    ``tool_calls_path`` points at the reply's tool calls (OpenAI's ``tool_calls`` list). With
    ``stream`` the reply is read as server-sent events: each event's text is at ``delta_path``
    (e.g. ``$.choices[0].delta.content``), its tool-call deltas at ``tool_calls_path`` (assembled
    by index, as OpenAI streams them); an event with an ``error`` object ends it (a block when its
    code is one).
    """

    def __init__(
        self,
        url: str,
        *,
        body: Any,
        reply_path: str,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        blocked_status: list[int] | None = None,
        timeout_s: float = 60.0,
        retries: int = 1,
        max_connections: int = 64,
        name: str | None = None,
        stream: bool = False,
        delta_path: str | None = None,
        tool_calls_path: str | None = None,
    ) -> None:
        super().__init__(timeout_s, retries, max_connections)
        names = _template_names(body)
        if unknown := names - set(TEMPLATE_VARIABLES):
            raise ConfigurationError(
                f"unknown template variables {sorted(unknown)}; known: {TEMPLATE_VARIABLES}"
            )
        if not names & {"prompt", "messages", "conversation"}:
            raise ConfigurationError(
                "the body template must use {{prompt}}, {{messages}} or {{conversation}}"
            )
        _parse_path(reply_path)
        if stream and not delta_path:
            raise ConfigurationError("a streamed http target needs delta_path (the text of each event)")
        for path in (delta_path, tool_calls_path):
            if path:
                _parse_path(path)
        self.url, self.method, self.template, self.reply_path = url, method.upper(), body, reply_path
        self.stream, self.delta_path, self.tool_calls_path = stream, delta_path, tool_calls_path
        self.headers = {k: _env(v) for k, v in (headers or {}).items()}
        self.blocked_status = set(blocked_status or [])
        self.takes_system_prompt = bool(names & {"system", "messages", "conversation"})
        self.name = name or url

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"type": "http", "url": self.url, "reply_path": self.reply_path}
        if self.stream:
            described |= {"stream": True, "delta_path": self.delta_path}
        return described

    def _calls_at(self, document: Any) -> list[dict[str, Any]]:
        if not self.tool_calls_path:
            return []
        try:
            calls = json_path(document, self.tool_calls_path)
        except LookupError:
            return []
        return chat_message_calls({"tool_calls": calls if isinstance(calls, list) else []})

    async def _read_events(self, response: httpx.Response) -> Assembled:
        """The events' text deltas at ``delta_path`` and tool-call deltas at ``tool_calls_path``."""
        assert self.delta_path is not None
        stream = ChatStream()
        parts: list[str] = []
        async for event in sse_data(response):
            if event == DONE:
                break
            if isinstance(event, dict) and isinstance(event.get("error"), dict):
                stream.answer.error = dict(event["error"])
                break
            try:
                delta = json_path(event, self.delta_path)
            except LookupError:
                delta = None
            if isinstance(delta, str):
                parts.append(delta)
            if self.tool_calls_path:
                try:
                    pieces = json_path(event, self.tool_calls_path)
                except LookupError:
                    pieces = None
                if isinstance(pieces, list):
                    stream.feed({"choices": [{"index": 0, "delta": {"tool_calls": pieces}}]})
        answer = stream.done()
        answer.text = "".join(parts)
        # a generic stream has no finish reason to wait for: it ends at [DONE] or when it closes
        answer.truncated = False
        return answer

    async def send(self, conversation: Conversation) -> TargetReply:
        messages = conversation.with_inline_documents()
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
        variables = {
            "prompt": str(messages[last_user].get("content", "")) if messages else "",
            "messages": messages,
            "history": [m for m in messages[:last_user] if m.get("role") != "system"],
            "system": conversation.system,
            "conversation": "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in messages),
            "tools": conversation.tools,
        }
        body = render_template(self.template, variables)
        if self.stream:
            opened = await self._open_stream(self.method, self.url, json=body, headers=self.headers)
            if isinstance(opened, str):
                return TargetReply(error=opened)
            if opened.is_success and "text/event-stream" in opened.headers.get("content-type", ""):
                answer = await self._read_stream(opened, self._read_events)
                if isinstance(answer, str):
                    return TargetReply(error=answer, status=opened.status_code)
                return _assembled_reply(answer, opened.status_code)
            if not opened.is_closed:
                await opened.aread()
                await opened.aclose()
            result: httpx.Response | str = opened
        else:
            result = await self._post(self.method, self.url, json=body, headers=self.headers)
        if isinstance(result, str):
            return TargetReply(error=result)
        if result.status_code in self.blocked_status:
            return TargetReply(blocked=True, status=result.status_code, error=f"HTTP {result.status_code}")
        if not 200 <= result.status_code < 300:
            return TargetReply(
                error=f"HTTP {result.status_code}: {result.text[:200]}", status=result.status_code
            )
        try:
            document = result.json()
        except ValueError as exc:
            return TargetReply(error=f"the reply is not JSON: {exc}", status=result.status_code)
        calls = self._calls_at(document)
        try:
            value = json_path(document, self.reply_path)
        except LookupError as exc:
            if not calls:  # a tool call with no text (content null or absent) is an answer
                return TargetReply(error=f"no reply at {self.reply_path}: {exc}", status=result.status_code)
            value = ""
        text = value if isinstance(value, str) else "" if value is None and calls else json.dumps(value)
        return TargetReply(text=text, status=result.status_code, tool_calls=calls)


# ----------------------------------------------------------------- Python callables


def load_callable(spec: str) -> Callable[..., Any]:
    """``package.module:function`` (or ``module:Class.method``) as a callable."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"expected 'module:function', got {spec!r}")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}")
        value = getattr(value, part)
    if not callable(value):
        raise ConfigurationError(f"{spec!r} is not callable")
    return value  # type: ignore[no-any-return]


class CallableTarget:
    """A Python function of the conversation: ``fn(messages) -> str | dict``, sync or async.

    ``messages`` is the OpenAI-style list (documents written into the first user message). The
    function returns the reply's text, or a dict with ``content``, optionally ``tool_calls``
    (OpenAI's list) and ``blocked: true`` when the app refused the request itself. An exception is
    an ``error`` for that case. A function of two parameters, ``fn(messages, tools)``, also gets
    the tools offered (agent probes); one of one parameter is never offered tools.
    """

    takes_system_prompt = True

    def __init__(self, fn: Callable[..., Any] | str, *, timeout_s: float = 60.0, name: str | None = None):
        self.fn = load_callable(fn) if isinstance(fn, str) else fn
        self.timeout_s = timeout_s
        try:
            parameters = inspect.signature(self.fn).parameters.values()
        except (TypeError, ValueError):
            parameters = []  # type: ignore[assignment]
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.takes_tools = len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)
        self.name: str = name or (fn if isinstance(fn, str) else str(getattr(fn, "__qualname__", repr(fn))))

    def describe(self) -> dict[str, Any]:
        return {"type": "callable", "callable": self.name}

    async def send(self, conversation: Conversation) -> TargetReply:
        messages = conversation.with_inline_documents()
        arguments: tuple[Any, ...] = (messages, conversation.tools) if self.takes_tools else (messages,)
        try:
            if inspect.iscoroutinefunction(self.fn):
                value = await asyncio.wait_for(self.fn(*arguments), self.timeout_s)
            else:
                value = await asyncio.wait_for(asyncio.to_thread(self.fn, *arguments), self.timeout_s)
        except TimeoutError:
            return TargetReply(error="timeout")
        except Exception as exc:  # the app under test failed: an error verdict, not a crash
            return TargetReply(error=f"{type(exc).__name__}: {exc}")
        if isinstance(value, str):
            return TargetReply(text=value)
        if isinstance(value, Mapping):
            if value.get("blocked"):
                return TargetReply(
                    blocked=True, text=str(value.get("content") or ""), error="blocked by the app"
                )
            return TargetReply(text=str(value.get("content") or ""), tool_calls=chat_message_calls(value))
        return TargetReply(error=f"the callable returned {type(value).__name__}, not str or dict")

    async def aclose(self) -> None:
        return None
