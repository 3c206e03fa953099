"""The gateway's request path: one chat completions request, top to bottom.

:class:`Gateway` puts seawall between an app and its model server. For each
``/v1/chat/completions`` request, in this order:

1. **Identity.** The end user (trusted header, the request's ``safety_identifier``
   or ``user``, else an anonymous session; :func:`~seawall.gateway.identity.resolve_end_user`)
   becomes a *safety identifier*, ``HMAC(secret, tenant, user)``. The raw id is never
   sent upstream, logged or audited.
2. **Limits.** :func:`~seawall.gateway.limits.check_request` with the policy's
   limits (4xx with OpenAI's error body: 413 for too many messages or too much input),
   plus the ``seawall`` extension field (below).
3. **Input moderation.** The text of every ``user`` message is moderated; any flagged
   category refuses the request with 400 ``content_policy_violation`` naming the
   categories, before the upstream is called. *Untrusted content* - the documents of
   the extension field and the content of ``tool``/``function`` messages - is checked
   for prompt injection and jailbreak (the model's flags, or ``injection_threshold`` on
   the prompt_injection score). The rule (``untrusted_action``): ``drop`` (default)
   leaves a flagged document out and replaces a flagged tool message's content with
   :data:`DROPPED_NOTICE`; ``refuse`` answers 400 ``untrusted_content_rejected``.
   Injection scores are not used on user messages: the user is not untrusted content,
   and the embedded model's injection head fires on plain questions.
4. **Prompt.** :func:`~seawall.gateway.prompt.build_prompt` with the policy: the
   gateway's system prompt first, the client's system/developer messages demoted,
   documents and tool output fenced. The ``seawall`` field and the client's ``user``
   and ``safety_identifier`` are removed; the hashed safety identifier is attached;
   ``max_tokens``/``max_completion_tokens`` are capped at the policy's ``max_output_tokens``.
5. **Upstream call** (:class:`~seawall.gateway.upstream.Upstream`): its errors are
   OpenAI-shaped :class:`~seawall.errors.UpstreamError` (an upstream 500 is a 502).
6. **Output moderation.** Plain answers: each choice's content is moderated; a
   flagged one is replaced by ``refusal_text`` with ``finish_reason: "content_filter"``.
   Streams: the deltas go through a :class:`~seawall.gateway.stream_guard.StreamGuard`,
   so only text a scan cleared reaches the client; on a violation (or a stream that
   breaks off) the client gets an OpenAI-style error event ``data: {"error": {...}}``
   and ``data: [DONE]``, never the withheld text.
7. **Audit.** One JSON record per request (:class:`AuditRecord`): time, request id,
   tenant, hashed safety identifier, each decision with its categories and top scores,
   the latency of each step, the upstream's outcome and the request's outcome. No
   message text, no raw user id.

A guard that fails (the moderation backend raises or times out) follows ``fail_mode``:
``closed`` (default) refuses with 503 ``guard_failed`` (an error event in a stream),
``open`` lets the text through; the audit record says which.

**The extension field.** A client may pass retrieved documents as untrusted data::

    {"model": ..., "messages": [...],
     "seawall": {"documents": [{"source": "kb/refunds.md", "text": "..."}]}}

``source`` is optional; ``text`` is required. The field never reaches the upstream.

Not done here yet: API keys per app, a store, the risk ledger, the knowledge base,
human review, moderation of images in user messages and of tool-call arguments in answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seawall.errors import (
    ContentPolicyError,
    GuardFailedError,
    InvalidRequestError,
    PayloadTooLargeError,
    SeawallError,
    UpstreamError,
)
from seawall.gateway.identity import load_or_create_secret, resolve_end_user, safety_identifier, upstream_body
from seawall.gateway.limits import cap_output_tokens, check_request
from seawall.gateway.policy import Policy, load_policy
from seawall.gateway.prompt import build_prompt
from seawall.gateway.stream_guard import (
    GUARD_FAILED,
    Blocked,
    GuardVerdict,
    StreamGuard,
    StreamGuardSettings,
    guard_stream,
    moderation_check,
)
from seawall.gateway.upstream import Upstream
from seawall.service import ModerationService
from seawall.settings import GatewaySettings, Settings

log = logging.getLogger("seawall.gateway")
audit_log = logging.getLogger("seawall.audit")

#: Response header that carries the request's id (also in the audit record).
REQUEST_ID_HEADER = "x-seawall-request-id"
#: The request field that carries seawall's extensions (documents); never sent upstream.
EXTENSION_FIELD = "seawall"
#: What replaces the content of a tool message dropped as a suspected injection.
DROPPED_NOTICE = "[content removed by seawall: suspected prompt injection]"
#: Roles whose content is untrusted output of tools.
UNTRUSTED_ROLES = frozenset({"tool", "function"})
#: Scores kept per decision in the audit record (the highest ones).
AUDIT_TOP_SCORES = 3

#: The policy used when ``gateway.policy_file`` is not set: a general assistant.
DEFAULT_POLICY = Policy(
    name="Assistant",
    purpose="You are a helpful general-purpose assistant. Answer accurately, clearly and concisely.",
    allowed_topics=["any question a general-purpose assistant can answer safely"],
    off_topic_reply="Sorry, I can't help with that.",
)


def new_request_id() -> str:
    return f"swreq-{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------------- audit


@dataclass
class AuditRecord:
    """What the audit log keeps about one request; never message text or the raw user id."""

    request_id: str
    tenant: str
    stream: bool
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    safety_identifier: str | None = None
    user_source: str | None = None
    model: str | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    upstream: dict[str, Any] | None = None
    #: ``ok``, ``refused_input``, ``filtered_output``, ``blocked_stream``, ``guard_failed``,
    #: ``upstream_error``, ``invalid_request``, ``client_disconnected`` or ``error``.
    outcome: str = "error"
    error: dict[str, Any] | None = None
    _began: float = field(default_factory=lambda: time.perf_counter(), repr=False)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.latency_ms[name] = round((time.perf_counter() - began) * 1000, 3)

    def decide(
        self,
        step: str,
        action: str,
        categories: list[str] | None = None,
        scores: Mapping[str, float] | None = None,
        **extra: Any,
    ) -> None:
        top = sorted((scores or {}).items(), key=lambda item: item[1], reverse=True)[:AUDIT_TOP_SCORES]
        flagged = {name: scores[name] for name in categories or () if scores and name in scores}
        kept = {name: round(float(score), 4) for name, score in [*top, *flagged.items()]}
        self.decisions.append(
            {"step": step, "action": action, "categories": list(categories or []), "scores": kept, **extra}
        )

    def failed(self, exc: SeawallError) -> None:
        self.error = {"status": exc.status_code, "code": exc.code}
        if isinstance(exc, UpstreamError):
            self.upstream = {"status": "error", "code": exc.code}
            self.outcome = "upstream_error"
        elif isinstance(exc, GuardFailedError):
            self.outcome = "guard_failed"
        elif isinstance(exc, ContentPolicyError) or exc.code == "untrusted_content_rejected":
            self.outcome = "refused_input"
        elif 400 <= exc.status_code < 500:
            self.outcome = "invalid_request"

    def to_dict(self) -> dict[str, Any]:
        self.latency_ms["total"] = round((time.perf_counter() - self._began) * 1000, 3)
        return {
            "time": self.time,
            "request_id": self.request_id,
            "tenant": self.tenant,
            "safety_identifier": self.safety_identifier,
            "user_source": self.user_source,
            "model": self.model,
            "stream": self.stream,
            "outcome": self.outcome,
            "error": self.error,
            "decisions": self.decisions,
            "upstream": self.upstream,
            "latency_ms": self.latency_ms,
        }


class AuditLog:
    """Appends one JSON line per request to a file (if configured) and logs it on ``seawall.audit``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path.expanduser() if path is not None else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: AuditRecord) -> None:
        line = json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"))
        audit_log.info("%s", line)
        if self.path is None:
            return
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as exc:
            log.error("cannot write the audit record of %s to %s: %s", record.request_id, self.path, exc)


# ---------------------------------------------------------------------------------- results


@dataclass
class GatewayResponse:
    """What the route sends back: a JSON body, or an SSE byte stream."""

    request_id: str
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {REQUEST_ID_HEADER: self.request_id}


# ---------------------------------------------------------------------------------- the gateway


class Gateway:
    """The guarding proxy for one upstream; create once per server, close with :meth:`aclose`."""

    def __init__(
        self, settings: Settings, service: ModerationService, *, upstream: Upstream | None = None
    ) -> None:
        self.settings: GatewaySettings = settings.gateway
        self.service = service
        self.policy = load_policy(self.settings.policy_file) if self.settings.policy_file else DEFAULT_POLICY
        self.secret = load_or_create_secret(self.settings.secret_file.expanduser())
        self.upstream = upstream or Upstream(self.settings.upstream)
        self.audit = AuditLog(self.settings.audit_file)
        self.check = moderation_check(service)
        guard = self.settings.stream_guard
        self.guard_settings = StreamGuardSettings(
            hold_back_chars=guard.hold_back_chars,
            scan_every_chars=guard.scan_every_chars,
            window_chars=guard.window_chars,
            fail_mode=self.settings.fail_mode,
            check_timeout_s=guard.check_timeout_s,
        )

    async def aclose(self) -> None:
        await self.upstream.aclose()

    async def models(self) -> dict[str, Any]:
        """The upstream's model list, narrowed to the policy's ``allowed_models`` when it has some."""
        listing = await self.upstream.models()
        allowed = self.policy.limits.allowed_models
        if allowed:
            listing = {**listing, "data": [m for m in listing["data"] if m.get("id") in allowed]}
        return listing

    # ------------------------------------------------------------------ plain requests

    async def chat(
        self, body: dict[str, Any], headers: Mapping[str, str], *, request_id: str | None = None
    ) -> GatewayResponse:
        """One non-streaming request, from the client's body to the (moderated) completion."""
        audit = AuditRecord(request_id or new_request_id(), self.settings.tenant, stream=False)
        try:
            prepared = await self._prepare(body, headers, audit)
            with audit.step("upstream"):
                completion = await self.upstream.chat(prepared)
            audit.upstream = {"status": 200}
            audit.outcome = "ok"
            if self.settings.output_moderation:
                with audit.step("output_moderation"):
                    await self._moderate_answer(completion, audit)
            return GatewayResponse(audit.request_id, body=completion)
        except SeawallError as exc:
            audit.failed(exc)
            raise
        finally:
            self.audit.write(audit)

    # ------------------------------------------------------------------ streams

    async def stream(
        self, body: dict[str, Any], headers: Mapping[str, str], *, request_id: str | None = None
    ) -> GatewayResponse:
        """One streaming request. Everything up to the upstream's first chunk happens here, so a
        refusal or an upstream failure is still an HTTP error; the rest is the returned SSE stream."""
        audit = AuditRecord(request_id or new_request_id(), self.settings.tenant, stream=True)
        chunks: AsyncIterator[dict[str, Any]] | None = None
        try:
            prepared = await self._prepare(body, headers, audit)
            chunks = self.upstream.stream(prepared)
            with audit.step("upstream_first_chunk"):
                first = await anext(chunks, None)
            audit.upstream = {"status": 200}
        except BaseException as exc:
            if isinstance(exc, SeawallError):
                audit.failed(exc)
            if chunks is not None:
                await _aclose(chunks)
            self.audit.write(audit)
            raise
        return GatewayResponse(audit.request_id, stream=self._sse(first, chunks, audit))

    async def _sse(
        self, first: dict[str, Any] | None, chunks: AsyncIterator[dict[str, Any]], audit: AuditRecord
    ) -> AsyncIterator[bytes]:
        """The client's event stream: released text only, then the end (or an error event)."""
        state = _StreamState(audit.request_id)
        audit.outcome = "client_disconnected"  # until the stream reaches its end

        async def deltas() -> AsyncIterator[str]:
            if first is None:
                return
            state.observe(first)
            if text := state.content(first):
                yield text
            async for chunk in chunks:
                state.observe(chunk)
                if text := state.content(chunk):
                    yield text

        guard = StreamGuard(self.check, self.guard_settings) if self.settings.output_moderation else None
        began = time.perf_counter()
        try:
            yield _event(state.chunk({"role": "assistant", "content": ""}))
            pieces: AsyncIterator[str | Blocked] = guard_stream(deltas(), guard) if guard else deltas()
            blocked: Blocked | None = None
            try:
                async for piece in pieces:
                    if isinstance(piece, Blocked):
                        blocked = piece
                        break
                    yield _event(state.chunk({"content": piece}))
            finally:
                await _aclose(pieces)
            if blocked is not None:
                error = self._blocked_error(blocked.verdict)
                audit.failed(error)
                audit.outcome = "guard_failed" if blocked.verdict.reason == GUARD_FAILED else "blocked_stream"
                yield _event(error.to_body())
            else:
                for tool_call in state.tool_calls:  # released at the end; arguments are not moderated
                    yield _event(state.chunk({"tool_calls": [tool_call]}))
                yield _event(state.chunk({}, finish_reason=state.finish_reason or "stop"))
                if state.usage is not None:
                    yield _event({**state.chunk({}), "choices": [], "usage": state.usage})
                audit.outcome = "ok"
        except SeawallError as exc:  # the upstream broke off, or sent an error event
            audit.failed(exc)
            yield _event(exc.to_body())
        except Exception:
            log.exception("stream %s failed", audit.request_id)
            audit.outcome = "error"
            yield _event(SeawallError("The server had an error while processing the stream.").to_body())
        finally:
            await _aclose(chunks)
            audit.latency_ms["stream"] = round((time.perf_counter() - began) * 1000, 3)
            if guard is not None:
                self._audit_guard(guard, audit)
            self.audit.write(audit)
        yield b"data: [DONE]\n\n"

    # ------------------------------------------------------------------ steps 1 to 4

    async def _prepare(
        self, body: dict[str, Any], headers: Mapping[str, str], audit: AuditRecord
    ) -> dict[str, Any]:
        """Identity, limits, input moderation and the prompt: the body to send upstream."""
        # 1. identity: only the digest leaves this function
        user = resolve_end_user(body, headers, self.settings.trusted_user_header)
        safety_id = safety_identifier(self.secret, self.settings.tenant, user.id)
        audit.safety_identifier, audit.user_source = safety_id, user.source
        audit.model = body.get("model") if isinstance(body.get("model"), str) else None

        # 2. limits
        with audit.step("limits"):
            check_request(body, self.policy.limits)
            documents = self._documents(body)
            if body.get("stream") and body.get("n") not in (None, 1):
                raise InvalidRequestError(
                    "the gateway streams one choice only; n must be 1 with stream", param="n"
                )
        messages: list[dict[str, Any]] = body["messages"]

        # 3. input moderation
        if self.settings.input_moderation:
            with audit.step("input_moderation"):
                await self._moderate_user_messages(messages, audit)
                documents, messages = await self._screen_untrusted(documents, messages, audit)

        # 4. prompt
        with audit.step("prompt"):
            built = build_prompt(self.policy, messages, documents, request_id=audit.request_id)
            dropped = {EXTENSION_FIELD, "user", "safety_identifier", "messages"}
            outgoing = {key: value for key, value in body.items() if key not in dropped}
            outgoing["messages"] = built.messages
            outgoing = cap_output_tokens(outgoing, self.policy.limits.max_output_tokens)
            return upstream_body(outgoing, safety_id)

    def _documents(self, body: Mapping[str, Any]) -> list[dict[str, str]]:
        """The untrusted documents of the ``seawall`` extension field, checked."""
        extension = body.get(EXTENSION_FIELD)
        if extension is None:
            return []
        if not isinstance(extension, dict):
            raise InvalidRequestError(f"'{EXTENSION_FIELD}' must be an object", param=EXTENSION_FIELD)
        unknown = sorted(set(extension) - {"documents"})
        if unknown:
            raise InvalidRequestError(
                f"unknown field(s) in '{EXTENSION_FIELD}': {', '.join(unknown)} (known: documents)",
                param=f"{EXTENSION_FIELD}.{unknown[0]}",
            )
        raw = extension.get("documents") or []
        if not isinstance(raw, list):
            raise InvalidRequestError("must be an array", param=f"{EXTENSION_FIELD}.documents")
        documents: list[dict[str, str]] = []
        for index, document in enumerate(raw):
            where = f"{EXTENSION_FIELD}.documents[{index}]"
            if not isinstance(document, dict) or not isinstance(document.get("text"), str):
                raise InvalidRequestError(f"{where} must be an object with a string 'text'", param=where)
            source = document.get("source", f"document {index + 1}")
            if not isinstance(source, str) or set(document) - {"text", "source"}:
                raise InvalidRequestError(
                    f"{where} may hold only 'text' and an optional string 'source'", param=where
                )
            documents.append({"source": source, "text": document["text"]})
        limit = self.policy.limits.max_input_chars
        total = sum(len(document["text"]) for document in documents)
        if limit is not None and total > limit:
            raise PayloadTooLargeError(
                f"the documents are {total} characters long; the limit (max_input_chars) is {limit}",
                param=f"{EXTENSION_FIELD}.documents",
                code="input_too_long",
            )
        return documents

    async def _moderate_user_messages(self, messages: list[dict[str, Any]], audit: AuditRecord) -> None:
        """Refuse the request if any user message's text is flagged in any category."""
        texts = [text for m in messages if m.get("role") == "user" and (text := _text_of(m.get("content")))]
        if not texts:
            return
        try:
            verdicts = await asyncio.gather(*(self._judge(text) for text in texts))
        except Exception as exc:
            self._guard_failure("input_moderation", exc, audit)
            return
        categories = sorted({name for verdict in verdicts for name in verdict.categories})
        scores = _max_scores(verdict.scores for verdict in verdicts)
        if categories:
            audit.decide("input_moderation", "refuse", categories, scores)
            raise ContentPolicyError(
                "The request was refused by the content policy; flagged: " + ", ".join(categories),
                param="messages",
            )
        audit.decide("input_moderation", "allow", [], scores)

    async def _screen_untrusted(
        self, documents: list[dict[str, str]], messages: list[dict[str, Any]], audit: AuditRecord
    ) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
        """Check documents and tool messages for prompt injection and jailbreak; drop or refuse."""
        pieces: list[tuple[str, int, str]] = [("document", i, d["text"]) for i, d in enumerate(documents)]
        pieces += [
            ("tool", i, text)
            for i, m in enumerate(messages)
            if m.get("role") in UNTRUSTED_ROLES and (text := _text_of(m.get("content")))
        ]
        if not pieces:
            return documents, messages
        try:
            moderation = await asyncio.wait_for(
                self.service.moderate([text for _, _, text in pieces]),
                self.settings.stream_guard.check_timeout_s,
            )
        except Exception as exc:
            self._guard_failure("untrusted_content", exc, audit)
            return documents, messages
        threshold = self.settings.injection_threshold
        drop_documents: set[int] = set()
        drop_messages: set[int] = set()
        for (kind, index, _), result in zip(pieces, moderation.results, strict=True):
            injection = result.extra_scores.get("prompt_injection", 0.0)
            if threshold is None:
                injected = bool(result.extra_flags.get("prompt_injection"))
            else:
                injected = injection >= threshold
            labels = ["prompt_injection"] if injected else []
            if result.extra_flags.get("jailbreak"):
                labels.append("jailbreak")
            where = f"{EXTENSION_FIELD}.documents[{index}]" if kind == "document" else f"messages[{index}]"
            if not labels:
                audit.decide("untrusted_content", "allow", [], result.extra_scores, source=where)
                continue
            action = "refuse" if self.settings.untrusted_action == "refuse" else "drop"
            audit.decide("untrusted_content", action, labels, result.extra_scores, source=where)
            if action == "refuse":
                raise InvalidRequestError(
                    f"{where} was refused as untrusted content: flagged {', '.join(labels)}",
                    param=where,
                    code="untrusted_content_rejected",
                )
            (drop_documents if kind == "document" else drop_messages).add(index)
        kept_documents = [d for i, d in enumerate(documents) if i not in drop_documents]
        kept_messages = [
            {**m, "content": DROPPED_NOTICE} if i in drop_messages else m for i, m in enumerate(messages)
        ]
        return kept_documents, kept_messages

    # ------------------------------------------------------------------ step 6 (plain answers)

    async def _moderate_answer(self, completion: dict[str, Any], audit: AuditRecord) -> None:
        """Replace every flagged choice's content with the refusal text (finish_reason content_filter)."""
        for choice in completion.get("choices") or []:
            message = choice.get("message") if isinstance(choice, dict) else None
            text = _text_of(message.get("content")) if isinstance(message, dict) else ""
            if not text:
                continue
            try:
                verdict = await self._judge(text)
            except Exception as exc:
                self._guard_failure("output_moderation", exc, audit)
                continue
            if verdict.allowed:
                audit.decide("output_moderation", "allow", [], verdict.scores, choice=choice.get("index"))
                continue
            audit.decide(
                "output_moderation", "filter", verdict.categories, verdict.scores, choice=choice.get("index")
            )
            audit.outcome = "filtered_output"
            assert isinstance(message, dict)
            message["content"] = self.settings.refusal_text
            message.pop("tool_calls", None)
            choice["finish_reason"] = "content_filter"

    # ------------------------------------------------------------------ guards

    async def _judge(self, text: str) -> GuardVerdict:
        """One text through the moderation check (whole and sentence by sentence), with a time limit."""
        return await asyncio.wait_for(self.check(text), self.settings.stream_guard.check_timeout_s)

    def _guard_failure(self, step: str, exc: Exception, audit: AuditRecord) -> None:
        """A guard failed: raise 503 guard_failed (closed) or record that the text went unjudged (open)."""
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("guard %s failed for %s: %s", step, audit.request_id, reason)
        if self.settings.fail_mode == "open":
            audit.decide(step, "failed_open", error=type(exc).__name__)
            return
        audit.decide(step, "failed_closed", error=type(exc).__name__)
        raise GuardFailedError(f"the {step.replace('_', ' ')} guard failed; the request was not served")

    def _blocked_error(self, verdict: GuardVerdict) -> SeawallError:
        if verdict.reason == GUARD_FAILED:
            return GuardFailedError("the output moderation guard failed; the answer was stopped")
        return ContentPolicyError(
            "The answer was stopped by the content policy; flagged: " + ", ".join(verdict.categories)
        )

    def _audit_guard(self, guard: StreamGuard, audit: AuditRecord) -> None:
        events = guard.events
        scores = _max_scores(event.verdict.scores for event in events)
        audit.latency_ms["output_moderation"] = round(sum(e.latency_s for e in events) * 1000, 3)
        verdict = guard.verdict
        if verdict is not None:
            action = "failed_closed" if verdict.reason == GUARD_FAILED else "block"
            categories = verdict.categories
        else:
            action = "failed_open" if guard.failed_open else "allow"
            categories = []
        audit.decide(
            "output_moderation",
            action,
            categories,
            scores,
            scans=len(events),
            released_chars=len(guard.released_text),
            received_chars=guard.received_chars,
        )


# ---------------------------------------------------------------------------------- helpers


class _StreamState:
    """What the gateway keeps of an upstream stream: the chunk header, finish reason, usage, tool calls."""

    def __init__(self, request_id: str) -> None:
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())
        self.model = ""
        self.system_fingerprint: str | None = None
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.tool_calls: list[Any] = []

    def observe(self, chunk: Mapping[str, Any]) -> None:
        self.id = str(chunk.get("id") or self.id)
        created = chunk.get("created")
        if isinstance(created, int):
            self.created = created
        self.model = str(chunk.get("model") or self.model)
        self.system_fingerprint = chunk.get("system_fingerprint") or self.system_fingerprint
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
                self.tool_calls.extend(delta["tool_calls"])

    @staticmethod
    def content(chunk: Mapping[str, Any]) -> str:
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                delta = choice.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    return str(delta["content"])
        return ""

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
        return chunk


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _text_of(content: Any) -> str:
    """The text of a message's content: the string, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _max_scores(all_scores: Any) -> dict[str, float]:
    merged: dict[str, float] = {}
    for scores in all_scores:
        for name, score in scores.items():
            merged[name] = max(merged.get(name, 0.0), float(score))
    return merged


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken upstream stream must not hide the real outcome
            log.debug("closing the upstream stream failed", exc_info=True)


__all__ = [
    "DEFAULT_POLICY",
    "DROPPED_NOTICE",
    "EXTENSION_FIELD",
    "REQUEST_ID_HEADER",
    "AuditLog",
    "AuditRecord",
    "Gateway",
    "GatewayResponse",
    "new_request_id",
]
