"""The gateway's request path: one chat completions request, top to bottom.

:class:`Gateway` puts seawall between an app and its model server. For each
``/v1/chat/completions`` request, in this order:

1. **Identity.** The end user (trusted header, the request's ``safety_identifier``
   or ``user``, else an anonymous session; :func:`~seawall.gateway.identity.resolve_end_user`)
   becomes a *safety identifier*, ``HMAC(secret, tenant, user)``. The raw id is never
   sent upstream, logged or audited.
2. **Limits.** :func:`~seawall.gateway.limits.check_request` with the policy's
   limits (4xx with OpenAI's error body: 413 for too many messages or too much input),
   :func:`~seawall.gateway.parameters.check_parameters` (400 naming a standard parameter of the
   wrong type or out of range), the model (404 ``model_not_found`` unless the policy's
   ``allowed_models`` or, without them, the upstream's model list names it:
   :class:`~seawall.gateway.catalogue.ModelCatalogue`), plus the ``seawall`` extension field (below).
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

A guard that cannot judge (its moderation backend is down, times out or is overloaded: a
:class:`~seawall.errors.GuardUnavailableError`) follows ``fail_mode``: ``closed`` (default)
refuses with 503 ``guard_failed`` (an error event in a stream), ``open`` lets the text
through; the audit record says which. Anything else a guard raises is a bug: 500 (a
``server_error`` event in a stream), logged, and never an open door.

**The extension field.** A client may pass retrieved documents as untrusted data::

    {"model": ..., "messages": [...],
     "seawall": {"documents": [{"source": "kb/refunds.md", "text": "..."}]}}

``source`` is optional; ``text`` is required. The field never reaches the upstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from seawall.clock import utc_now
from seawall.errors import (
    BackendTimeoutError,
    ContentPolicyError,
    GuardFailedError,
    GuardUnavailableError,
    InvalidRequestError,
    PayloadTooLargeError,
    SeawallError,
)
from seawall.gateway.access import Caller, KeyAuthenticator
from seawall.gateway.audit import AuditLog, AuditRecord
from seawall.gateway.catalogue import ModelCatalogue
from seawall.gateway.identity import (
    header_value,
    load_or_create_secret,
    resolve_end_user,
    safety_identifier,
    upstream_body,
)
from seawall.gateway.knowledge import KnowledgeBase
from seawall.gateway.limits import cap_output_tokens, check_request
from seawall.gateway.messages import image_parts, last_user_text, text_of
from seawall.gateway.parameters import check_parameters
from seawall.gateway.policy import Policy, load_policy
from seawall.gateway.prompt import build_prompt
from seawall.gateway.ratelimit import RateLimiter
from seawall.gateway.risk import RiskLedger, risk_level
from seawall.gateway.sse import DONE, StreamState, aclose, as_chunks, event
from seawall.gateway.stream_guard import (
    GUARD_FAILED,
    Blocked,
    GuardVerdict,
    StreamGuard,
    StreamGuardSettings,
    guard_stream,
    moderation_check,
)
from seawall.gateway.topics import TopicGuard
from seawall.gateway.upstream import Upstream
from seawall.review.gateway_hook import PENDING_STATUS, REVIEW_HEADER, ReviewHook
from seawall.review.metrics import GUARD_STEPS
from seawall.review.service import HoldDecision
from seawall.service import ModerationService
from seawall.settings import GatewaySettings, Settings
from seawall.store.base import FilteredAnswer, RiskLevel, Store, UserState
from seawall.telemetry import Tracer

log = logging.getLogger("seawall.gateway")

T = TypeVar("T")

#: Response header that carries the request's id (also in the audit record).
REQUEST_ID_HEADER = "x-seawall-request-id"
#: The request field that carries seawall's extensions (documents); never sent upstream.
EXTENSION_FIELD = "seawall"
#: What replaces the content of a tool message dropped as a suspected injection.
DROPPED_NOTICE = "[content removed by seawall: suspected prompt injection]"
#: Response header that warns a client its user is escalated (warned, throttled).
WARNING_HEADER = "x-seawall-warning"
#: Response header that says where an answer came from when not from the model.
ANSWER_SOURCE_HEADER = "x-seawall-answer-source"
#: Audit outcomes of answers seawall gives itself, without the upstream.
LOCAL_OUTCOMES = frozenset({"knowledge_base", "off_topic"})
#: Audit outcomes of requests turned away before they were judged (no risk level).
TURNED_AWAY = frozenset({"unauthorized", "user_blocked", "rate_limited"})
#: Roles whose content is untrusted output of tools.
UNTRUSTED_ROLES = frozenset({"tool", "function"})
#: Audit steps that judge what the user sent: the only ones the user's risk ledger charges for.
USER_STEPS = frozenset({"input_moderation"})
#: Audit steps that judge the model's answer; an answer they stopped is counted per tenant and
#: model (``seawall org``), never charged to the user.
ANSWER_STEPS = frozenset({"output_moderation", "tool_call_moderation"})
#: The actions of those steps that mean the answer was filtered or stopped by the content policy.
ANSWER_STOPPED = frozenset({"filter", "block"})

#: The policy used when ``gateway.policy_file`` is not set: a general assistant.
DEFAULT_POLICY = Policy(
    name="Assistant",
    purpose="You are a helpful general-purpose assistant. Answer accurately, clearly and concisely.",
    allowed_topics=["any question a general-purpose assistant can answer safely"],
    off_topic_reply="Sorry, I can't help with that.",
)


def new_request_id() -> str:
    return f"swreq-{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------------- results


@dataclass
class GatewayResponse:
    """What the route sends back: a JSON body, or an SSE byte stream, and seawall's headers."""

    request_id: str
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    #: Extra response headers: a warning for an escalated user, the answer's source.
    extra_headers: dict[str, str] = field(default_factory=dict)
    #: A session id minted for an anonymous client, to hand back (header and cookie).
    new_session: str | None = None
    #: HTTP status of a JSON body: 200, or 202 for an answer held for review.
    status_code: int = 200

    @property
    def headers(self) -> dict[str, str]:
        return {REQUEST_ID_HEADER: self.request_id, **self.extra_headers}


@dataclass
class _Request:
    """What the steps learn about one request on its way through the pipeline."""

    audit: AuditRecord
    caller: Caller | None = None
    new_session: str | None = None
    standing: UserState | None = None
    #: The client's address (for anonymous requests without a session), when the server knows it.
    client_address: str | None = None
    #: Response headers the steps add (warnings, the answer's source).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Prepared:
    """The outcome of steps 1-6: a body for the upstream, or an answer seawall gives itself."""

    upstream_body: dict[str, Any] | None = None
    local_answer: str | None = None


# ---------------------------------------------------------------------------------- the gateway


class Gateway:
    """The guarding proxy for one upstream; create once per server, close with :meth:`aclose`."""

    def __init__(
        self,
        settings: Settings,
        service: ModerationService,
        *,
        upstream: Upstream | None = None,
        store: Store | None = None,
        review: ReviewHook | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.settings: GatewaySettings = settings.gateway
        self.review = review
        self.tracer = tracer or Tracer(None)
        self.service = service
        self.policy = load_policy(self.settings.policy_file) if self.settings.policy_file else DEFAULT_POLICY
        self.secret = load_or_create_secret(self.settings.secret_file.expanduser())
        self.upstream = upstream or Upstream(self.settings.upstream)
        # With allowed_models the policy names the models served; without, the upstream's list does.
        self.catalogue = (
            None
            if self.policy.limits.allowed_models
            else ModelCatalogue(self.upstream, ttl_s=self.settings.model_list_ttl_s)
        )
        self.store = store
        self.access = KeyAuthenticator(
            settings.server.api_keys,
            store,
            default_tenant=self.settings.tenant,
            require=self.settings.require_api_key,
        )
        self.ledger = RiskLedger(store, self.settings.risk) if store and self.settings.risk.enabled else None
        self.limiter = RateLimiter(store, self.settings.rate_limits) if store else None
        self.audit = AuditLog(
            self.settings.audit_file,
            store if settings.store.audit else None,
            observer=review.observe if review is not None else None,
        )
        self.knowledge = (
            KnowledgeBase.load(self.settings.knowledge_file, threshold=self.settings.knowledge_threshold)
            if self.settings.knowledge_file
            else None
        )
        self.topics = (
            TopicGuard.for_policy(self.policy, threshold=self.settings.topic_threshold)
            if self.settings.topic_guard
            else None
        )
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
        self.audit.close()

    async def models(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """The upstream's model list, narrowed to the policy's ``allowed_models`` when it has some."""
        await asyncio.to_thread(self.access.authenticate, header_value(headers, "authorization"))
        listing = await self.upstream.models()
        allowed = self.policy.limits.allowed_models
        if allowed:
            listing = {**listing, "data": [m for m in listing["data"] if m.get("id") in allowed]}
        return listing

    def _new_audit(self, request_id: str | None, *, stream: bool) -> AuditRecord:
        """The record of a new request, with its trace span (ended when the record is written)."""
        audit = AuditRecord(request_id or new_request_id(), self.settings.tenant, stream=stream)
        audit.tracer = self.tracer
        audit.span = self.tracer.start_request(
            "seawall.chat_completions", **{"seawall.request_id": audit.request_id, "seawall.stream": stream}
        )
        return audit

    def reject(self, request_id: str, exc: SeawallError, *, stream: bool = False) -> None:
        """Audit a request refused before it reached the pipeline (a body that is not JSON)."""
        audit = self._new_audit(request_id, stream=stream)
        audit.failed(exc)
        self.audit.write(audit)

    # ------------------------------------------------------------------ plain requests

    async def chat(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> GatewayResponse:
        """One non-streaming request, from the client's body to the (moderated) completion."""
        request = _Request(self._new_audit(request_id, stream=False), client_address=client_address)
        audit = request.audit
        try:
            prepared = await self._prepare(body, headers, request)
            if prepared.upstream_body is None:
                completion = _local_completion(audit.request_id, body, prepared.local_answer or "")
            else:
                completion = await self._complete(prepared.upstream_body, audit)
                if self.review is not None:
                    pending = await self._hold(body, completion, request)
                    if pending is not None:
                        await self._settle(request)
                        return self._response(request, body=pending, status_code=PENDING_STATUS)
            if audit.content is not None:
                audit.content["answer"] = [
                    (choice.get("message") or {}).get("content") for choice in completion.get("choices") or []
                ]
            await self._settle(request)
            return self._response(request, body=completion)
        except SeawallError as exc:
            audit.failed(exc)
            await self._settle(request)
            raise
        finally:
            self.audit.write(audit)

    # ------------------------------------------------------------------ streams

    async def stream(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        *,
        request_id: str | None = None,
        client_address: str | None = None,
    ) -> GatewayResponse:
        """One streaming request. Everything up to the upstream's first chunk happens here, so a
        refusal or an upstream failure is still an HTTP error; the rest is the returned SSE stream."""
        request = _Request(self._new_audit(request_id, stream=True), client_address=client_address)
        audit = request.audit
        chunks: AsyncIterator[dict[str, Any]] | None = None
        try:
            prepared = await self._prepare(body, headers, request)
            if prepared.upstream_body is not None and self.review is not None:
                # A stream that qualifies for review is answered 202 pending, as JSON, not streamed.
                decision = await self.review.check(body, audit.decisions)
                if decision is not None:
                    # Answered as a plain completion (Upstream.chat turns streaming off), then held,
                    # also when output moderation filtered the draft: the reviewer sees it.
                    completion = await self._complete(prepared.upstream_body, audit)
                    held = await self._hold(body, completion, request, decision)
                    assert held is not None
                    await self._settle(request)
                    self.audit.write(audit)
                    return self._response(request, body=held, status_code=PENDING_STATUS)
            if prepared.upstream_body is None:
                answer = _local_completion(audit.request_id, body, prepared.local_answer or "")
                chunks = as_chunks(answer)
            else:
                chunks = self.upstream.stream(prepared.upstream_body)
            with audit.step("upstream_first_chunk"):
                first = await anext(chunks, None)
            if prepared.upstream_body is not None:
                audit.upstream = {"status": 200}
        except BaseException as exc:
            if isinstance(exc, SeawallError):
                audit.failed(exc)
                await self._settle(request)
            if chunks is not None:
                await aclose(chunks)
            self.audit.write(audit)
            raise
        # A local answer (knowledge base, off-topic reply) was judged when it was written.
        guarded = self.settings.output_moderation and prepared.upstream_body is not None
        model = str(body.get("model") or "")
        return self._response(request, stream=self._sse(first, chunks, request, model=model, guarded=guarded))

    async def _sse(
        self,
        first: dict[str, Any] | None,
        chunks: AsyncIterator[dict[str, Any]],
        request: _Request,
        *,
        model: str,
        guarded: bool,
    ) -> AsyncIterator[bytes]:
        """The client's event stream: released text only, then the end (or an error event).
        Every chunk has the same ``id`` and names the ``model``, the role chunk first."""
        audit = request.audit
        state = StreamState(audit.request_id, model)
        first_text = state.observe(first) if first is not None else ""  # the header comes from it
        outcome = audit.outcome
        audit.outcome = "client_disconnected"  # until the stream reaches its end

        async def deltas() -> AsyncIterator[str]:
            if first is None:
                return
            if first_text:
                yield first_text
            async for chunk in chunks:
                if text := state.observe(chunk):
                    yield text

        guard = StreamGuard(self.check, self.guard_settings) if guarded else None
        released: list[str] = []  # what the client received
        began = time.perf_counter()
        try:
            yield event(state.chunk({"role": "assistant", "content": ""}))
            pieces: AsyncIterator[str | Blocked] = guard_stream(deltas(), guard) if guard else deltas()
            blocked: Blocked | None = None
            try:
                async for piece in pieces:
                    if isinstance(piece, Blocked):
                        blocked = piece
                        break
                    released.append(piece)
                    yield event(state.chunk({"content": piece}))
            finally:
                await aclose(pieces)
            if blocked is not None:
                error = self._blocked_error(blocked.verdict)
                audit.failed(error)
                audit.outcome = "guard_failed" if blocked.verdict.reason == GUARD_FAILED else "blocked_stream"
                yield event(error.to_body())
            elif (refused := await self._refuse_tool_calls(state.tool_calls, guarded, audit)) is not None:
                audit.failed(refused)
                yield event(refused.to_body())
            else:
                for tool_call in state.tool_calls:  # released at the end, once their arguments passed
                    yield event(state.chunk({"tool_calls": [tool_call]}))
                yield event(state.chunk({}, finish_reason=state.finish_reason or "stop"))
                if state.usage is not None:
                    yield event({**state.chunk({}), "choices": [], "usage": state.usage})
                audit.outcome = outcome if outcome in LOCAL_OUTCOMES else "ok"
        except SeawallError as exc:  # the upstream broke off, or sent an error event
            audit.failed(exc)
            yield event(exc.to_body())
        except Exception:
            log.exception("stream %s failed", audit.request_id)
            audit.outcome = "error"
            yield event(SeawallError("The server had an error while processing the stream.").to_body())
        finally:
            await aclose(chunks)
            audit.latency_ms["stream"] = round((time.perf_counter() - began) * 1000, 3)
            if guard is not None:
                self._audit_guard(guard, audit)
            if audit.content is not None:
                audit.content["answer"] = ["".join(released)]
            await self._settle(request)
            self.audit.write(audit)
        yield DONE

    async def _refuse_tool_calls(
        self, tool_calls: list[Any], guarded: bool, audit: AuditRecord
    ) -> SeawallError | None:
        """Moderate a stream's tool-call arguments (held until the end); the error to send, or None."""
        arguments = "\n".join(
            str(call.get("function", {}).get("arguments") or "")
            for call in tool_calls
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        ).strip()
        if not guarded or not arguments:
            return None
        try:
            verdict = await self._guard("tool_call_moderation", audit, self._judge(arguments))
        except GuardFailedError as failed:
            return failed
        if verdict is None:
            return None
        if verdict.allowed:
            audit.decide("tool_call_moderation", "allow", [], verdict.scores)
            return None
        audit.decide("tool_call_moderation", "block", verdict.categories, verdict.scores)
        return ContentPolicyError(
            "The answer's tool call was stopped by the content policy; flagged: "
            + ", ".join(verdict.categories)
        )

    async def _complete(self, upstream_body: dict[str, Any], audit: AuditRecord) -> dict[str, Any]:
        """Steps 7 and 8 without streaming: the upstream's completion, moderated."""
        with audit.step("upstream"):
            completion = await self.upstream.chat(upstream_body)
        audit.upstream = {"status": 200}
        audit.outcome = "ok"
        if self.settings.output_moderation:
            with audit.step("output_moderation"):
                await self._moderate_answer(completion, audit)
        return completion

    async def _hold(
        self,
        body: dict[str, Any],
        completion: dict[str, Any],
        request: _Request,
        decision: HoldDecision | None = None,
    ) -> dict[str, Any] | None:
        """Hold the answer for human review if ``decision`` (else the review rules, asked now)
        says so: the pending body, or None."""
        assert self.review is not None
        audit = request.audit
        with audit.step("review"):
            decision = decision or await self.review.check(body, audit.decisions)
            if decision is None:
                return None
            pending = await self.review.hold(
                decision,
                body,
                completion,
                request_id=audit.request_id,
                tenant=audit.tenant,
                safety_id=audit.safety_identifier,
            )
        audit.decide("review", "hold", reasons=list(decision.reasons), review_id=pending["review_id"])
        audit.outcome = "held_for_review"
        request.headers[REVIEW_HEADER] = pending["review_id"]
        return pending

    def _response(self, request: _Request, **content: Any) -> GatewayResponse:
        audit = request.audit
        return GatewayResponse(
            audit.request_id, extra_headers=request.headers, new_session=request.new_session, **content
        )

    # ------------------------------------------------------------------ steps 1 to 6

    async def _prepare(
        self, body: dict[str, Any], headers: Mapping[str, str], request: _Request
    ) -> _Prepared:
        """Identity, standing, limits, input moderation, knowledge base, topic and prompt."""
        audit = request.audit
        if self.settings.audit_content:
            audit.content = {"messages": body.get("messages")}
        # 1. identity and access: only the digest of the user's id leaves this function
        with audit.step("identity"):
            caller = await asyncio.to_thread(self.access.authenticate, header_value(headers, "authorization"))
            request.caller = caller
            audit.key_id, audit.tenant = caller.key_id, caller.tenant
            user = resolve_end_user(body, headers, self.settings.trusted_user_header)
            if user.new_session:
                request.new_session = user.id
            safety_id = safety_identifier(self.secret, caller.tenant, user.id)
            audit.safety_identifier, audit.user_source = safety_id, user.source
            audit.model = body.get("model") if isinstance(body.get("model"), str) else None

        # 2. the user's standing (blocked, throttled, warned) and rate limits
        with audit.step("standing"):
            if self.ledger is not None or self.limiter is not None:
                sessionless = request.client_address if user.new_session else None
                request.standing = await asyncio.to_thread(self._admit, caller, safety_id, sessionless)
                if request.standing is not None:
                    request.headers[WARNING_HEADER] = _warning(request.standing)

        # 3. input limits
        with audit.step("limits"):
            check_request(body, self.policy.limits)
            check_parameters(body)
            if self.catalogue is not None:
                await self.catalogue.check(body["model"])
            documents = self._documents(body)
            if body.get("stream") and body.get("n") not in (None, 1):
                raise InvalidRequestError(
                    "the gateway streams one choice only; n must be 1 with stream", param="n"
                )
        messages: list[dict[str, Any]] = body["messages"]

        # 4. input moderation
        if self.settings.input_moderation:
            with audit.step("input_moderation"):
                await self._moderate_user_messages(messages, audit)
                documents, messages = await self._screen_untrusted(documents, messages, audit)

        # 5. a curated answer, or a polite refusal of an off-topic request, without the model
        question = last_user_text(messages)
        if question and (self.knowledge is not None or self.topics is not None):
            with audit.step("routing"):
                local = self._answer_locally(question, request)
            if local is not None:
                return _Prepared(local_answer=local)

        # 6. prompt
        with audit.step("prompt"):
            built = build_prompt(self.policy, messages, documents, request_id=audit.request_id)
            dropped = {EXTENSION_FIELD, "user", "safety_identifier", "messages"}
            outgoing = {key: value for key, value in body.items() if key not in dropped}
            outgoing["messages"] = built.messages
            outgoing = cap_output_tokens(outgoing, self.policy.limits.max_output_tokens)
            return _Prepared(upstream_body=upstream_body(outgoing, safety_id))

    def _answer_locally(self, question: str, request: _Request) -> str | None:
        """The knowledge base's answer, or the off-topic reply, or None (ask the model)."""
        audit = request.audit
        if self.knowledge is not None:
            match = self.knowledge.match(question)
            if match is not None:
                audit.decide("knowledge_base", "answer", entry=match.entry_id, score=round(match.score, 4))
                audit.outcome = "knowledge_base"
                request.headers[ANSWER_SOURCE_HEADER] = f"knowledge_base; entry={match.entry_id}"
                if self.settings.knowledge_cite_sources and match.sources:
                    return f"{match.answer}\n\nSources: {', '.join(match.sources)}"
                return match.answer
            audit.decide("knowledge_base", "no_match")
        if self.topics is not None:
            verdict = self.topics.check(question)
            action = "allow" if verdict.on_topic else "refuse"
            audit.decide("topic", action, score=round(verdict.score, 4), reason=verdict.reason)
            if not verdict.on_topic:
                audit.outcome = "off_topic"
                request.headers[ANSWER_SOURCE_HEADER] = "off_topic"
                return self.policy.off_topic_reply
        return None

    def _admit(self, caller: Caller, safety_id: str, sessionless_address: str | None) -> UserState | None:
        """The user's standing (403/429 when blocked or throttled), then the rate limits: one
        thread hop for both store calls."""
        standing = self.ledger.admit(caller.tenant, safety_id) if self.ledger is not None else None
        if self.limiter is not None:
            self.limiter.check(
                caller.key_id, caller.tenant, safety_id, address_without_session=sessionless_address
            )
        return standing

    async def _settle(self, request: _Request) -> None:
        """After the answer: the request's risk level, the count of filtered answers, the ledger
        (which charges the user for what the user sent, never for the model's answer), and any
        escalation."""
        audit = request.audit
        if audit.safety_identifier is None or audit.outcome in TURNED_AWAY:
            return
        audit.risk = self._risk(audit.decisions, GUARD_STEPS | {"untrusted_content"})
        filtered = _categories(audit.decisions, ANSWER_STEPS, ANSWER_STOPPED)
        if filtered is not None and self.store is not None and request.caller is not None:
            answer = FilteredAnswer(
                request.caller.tenant, audit.model or "unknown", utc_now(), audit.request_id, tuple(filtered)
            )
            try:
                await asyncio.to_thread(self.store.record_filtered_answer, answer)
            except Exception as exc:  # the answer is settled; counting it must not turn it into an error
                log.error("cannot count the filtered answer of %s: %s", audit.request_id, exc)
        level = self._risk(audit.decisions, USER_STEPS)
        if self.ledger is None or level == "low" or request.caller is None:
            return
        categories = {name for d in audit.decisions if d["step"] in USER_STEPS for name in d["categories"]}
        try:
            escalated = await asyncio.to_thread(
                self.ledger.record,
                request.caller.tenant,
                audit.safety_identifier,
                level,
                audit.request_id,
                categories,
            )
        except Exception as exc:  # the answer is settled; a ledger failure must not turn it into an error
            log.error("cannot record the risk event of %s: %s", audit.request_id, exc)
            audit.escalation = {"error": type(exc).__name__}
            return
        if escalated is not None:
            audit.escalation = {
                "status": escalated.status,
                "until": escalated.until.isoformat() if escalated.until else None,
            }
            request.headers[WARNING_HEADER] = _warning(escalated)

    def _risk(self, decisions: list[dict[str, Any]], steps: frozenset[str]) -> RiskLevel:
        """The risk level that the decisions of ``steps`` add up to."""
        flagged, scores, injection = _risk_signals(decisions, steps)
        return risk_level(
            flagged=flagged, scores=scores, injection=injection, medium_score=self.settings.risk.medium_score
        )

    def _documents(self, body: Mapping[str, Any]) -> list[dict[str, str]]:
        """The untrusted documents of the ``seawall`` extension field, checked."""
        extension = body.get(EXTENSION_FIELD)
        if extension is None:
            return []
        if not isinstance(extension, dict):
            raise InvalidRequestError(f"'{EXTENSION_FIELD}' must be an object", param=EXTENSION_FIELD)
        known = {"documents", "review"} if self.review is not None else {"documents"}
        unknown = sorted(set(extension) - known)
        if unknown:
            raise InvalidRequestError(
                f"unknown field(s) in '{EXTENSION_FIELD}': {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})",
                param=f"{EXTENSION_FIELD}.{unknown[0]}",
            )
        if self.review is not None:
            self.review.validate(body)
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
        """Refuse the request if any user message's text or image is flagged in any category."""
        user = [m.get("content") for m in messages if m.get("role") == "user"]
        texts = [text for content in user if (text := text_of(content))]
        images = [part for content in user for part in image_parts(content)]
        if not texts and not images:
            return
        checks = [self._judge(text) for text in texts]
        if images:
            checks.append(self._judge_images(images))
        # An image that cannot be fetched or decoded, or is too large, cannot be judged: the client hears why.
        verdicts = await self._guard(
            "input_moderation", audit, asyncio.gather(*checks), client_errors=bool(images)
        )
        if verdicts is None:
            return
        categories = sorted({name for verdict in verdicts for name in verdict.categories})
        scores = _max_scores(verdict.scores for verdict in verdicts)
        actions = self.settings.category_actions
        blocking = [name for name in categories if actions.get(name, "block") == "block"]
        if blocking:
            audit.decide("input_moderation", "refuse", categories, scores, images=len(images))
            raise ContentPolicyError(
                "The request was refused by the content policy; flagged: " + ", ".join(blocking),
                param="messages",
            )
        # Categories set to 'flag' pass, and count as high risk in the audit and the ledger.
        action = "flag" if categories else "allow"
        audit.decide("input_moderation", action, categories, scores, images=len(images))

    async def _screen_untrusted(
        self, documents: list[dict[str, str]], messages: list[dict[str, Any]], audit: AuditRecord
    ) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
        """Check documents and tool messages for prompt injection and jailbreak; drop or refuse."""
        pieces: list[tuple[str, int, str]] = [("document", i, d["text"]) for i, d in enumerate(documents)]
        pieces += [
            ("tool", i, text)
            for i, m in enumerate(messages)
            if m.get("role") in UNTRUSTED_ROLES and (text := text_of(m.get("content")))
        ]
        if not pieces:
            return documents, messages
        results = await self._guard(
            "untrusted_content",
            audit,
            self._in_time(self.service.moderate_texts([text for _, _, text in pieces])),
        )
        if results is None:
            return documents, messages
        threshold = self.settings.injection_threshold
        drop_documents: set[int] = set()
        drop_messages: set[int] = set()
        for (kind, index, _), result in zip(pieces, results, strict=True):
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
            if not isinstance(message, dict):
                continue
            # Tool-call arguments are output too: an app may show or execute them.
            text = "\n".join(filter(None, [text_of(message.get("content")), _tool_arguments(message)]))
            if not text:
                continue
            verdict = await self._guard("output_moderation", audit, self._judge(text))
            if verdict is None:
                continue
            if verdict.allowed:
                audit.decide("output_moderation", "allow", [], verdict.scores, choice=choice.get("index"))
                continue
            audit.decide(
                "output_moderation", "filter", verdict.categories, verdict.scores, choice=choice.get("index")
            )
            audit.outcome = "filtered_output"
            message["content"] = self.settings.refusal_text
            message.pop("tool_calls", None)
            choice["finish_reason"] = "content_filter"

    # ------------------------------------------------------------------ guards

    async def _guard(
        self, step: str, audit: AuditRecord, check: Awaitable[T], *, client_errors: bool = False
    ) -> T | None:
        """Await a guard's ``check``: its answer, or None when the guard cannot judge and fails open.

        Only :class:`GuardUnavailableError` (a backend that is down, slow or overloaded) follows
        ``fail_mode`` (:meth:`_guard_failure`). Anything else is a bug in seawall: logged, audited
        and answered 500, never let through unjudged; with ``client_errors``, a 4xx about what the
        client sent (an image that cannot be fetched) is passed on instead.
        """
        try:
            return await check
        except GuardUnavailableError as exc:
            self._guard_failure(step, exc, audit)
            return None
        except Exception as exc:
            if client_errors and isinstance(exc, InvalidRequestError):
                raise
            log.exception("guard %s failed with an error for %s", step, audit.request_id)
            audit.decide(step, "error", error=type(exc).__name__)
            raise SeawallError(
                "The server had an error while processing your request.", code="guard_error"
            ) from exc

    async def _in_time(self, check: Awaitable[T]) -> T:
        """``check``, or :class:`BackendTimeoutError` (a guard failure) after ``check_timeout_s``."""
        timeout = self.settings.stream_guard.check_timeout_s
        try:
            return await asyncio.wait_for(check, timeout)
        except TimeoutError as exc:
            raise BackendTimeoutError(f"the moderation check did not answer within {timeout} s") from exc

    async def _judge(self, text: str) -> GuardVerdict:
        """One text through the moderation check (whole and sentence by sentence), with a time limit."""
        return await self._in_time(self.check(text))

    async def _judge_images(self, parts: list[dict[str, Any]]) -> GuardVerdict:
        """The request's image parts as one moderation item (fetched with the SSRF-safe loader)."""
        moderation = await self._in_time(self.service.moderate(parts))
        [result] = moderation.results
        categories = sorted(name for name, hit in result.categories.items() if hit)
        scores = dict(result.category_scores)
        return GuardVerdict(allowed=not categories, categories=categories, scores=scores)

    def _guard_failure(self, step: str, exc: GuardUnavailableError, audit: AuditRecord) -> None:
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
        extra: dict[str, Any] = {}
        if guard.crashed is not None:
            action, categories, extra = "error", [], {"error": guard.crashed}
        elif verdict is not None:
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
            **extra,
        )


# ---------------------------------------------------------------------------------- helpers


def _warning(state: UserState) -> str:
    until = f" until {state.until.isoformat(timespec='minutes')}" if state.until else ""
    return f"{state.status}{until}: {state.reason}"


def _risk_signals(decisions: list[dict[str, Any]], steps: frozenset[str]) -> tuple[bool, list[float], bool]:
    """(anything flagged, the moderation scores seen, untrusted content flagged) from the
    decisions of ``steps``."""
    mine = [d for d in decisions if d["step"] in steps]
    flagged = any(d["action"] in {"refuse", "filter", "block", "flag"} and d["categories"] for d in mine)
    scores = [float(score) for d in mine if d["step"] in GUARD_STEPS for score in d["scores"].values()]
    injection = any(d["step"] == "untrusted_content" and d["action"] != "allow" for d in mine)
    return flagged, scores, injection


def _categories(
    decisions: list[dict[str, Any]], steps: frozenset[str], actions: frozenset[str]
) -> list[str] | None:
    """The categories of the decisions of ``steps`` that took one of ``actions``; None if none did."""
    taken = [d for d in decisions if d["step"] in steps and d["action"] in actions]
    if not taken:
        return None
    return sorted({name for d in taken for name in d["categories"]})


def _local_completion(request_id: str, body: Mapping[str, Any], text: str) -> dict[str, Any]:
    """A chat completion seawall answers itself (knowledge base, off-topic reply)."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or "seawall"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _tool_arguments(message: Mapping[str, Any]) -> str:
    """The arguments of a message's tool calls (and legacy function call), joined by newlines."""
    calls = [c.get("function") for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    calls.append(message.get("function_call"))
    return "\n".join(
        str(call.get("arguments")) for call in calls if isinstance(call, dict) and call.get("arguments")
    )


def _max_scores(all_scores: Any) -> dict[str, float]:
    merged: dict[str, float] = {}
    for scores in all_scores:
        for name, score in scores.items():
            merged[name] = max(merged.get(name, 0.0), float(score))
    return merged


__all__ = [
    "ANSWER_SOURCE_HEADER",
    "DEFAULT_POLICY",
    "DROPPED_NOTICE",
    "EXTENSION_FIELD",
    "REQUEST_ID_HEADER",
    "WARNING_HEADER",
    "Gateway",
    "GatewayResponse",
    "new_request_id",
]
