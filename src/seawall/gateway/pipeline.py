"""The gateway's request path: one chat completions request, top to bottom.

:class:`Gateway` puts seawall between an app and its model server. The path is data: a list of
steps (:mod:`seawall.gateway.steps`) built once from the settings, a control that is off being a
step left out, run in order by one :class:`~seawall.gateway.runner.Runner`. For each
``/v1/chat/completions`` request, in this order:

1. **Identity.** The app's key, then the end user (a verified user token,
   :mod:`~seawall.gateway.user_tokens`; else the trusted header, the request's
   ``safety_identifier`` or ``user``, else an anonymous session;
   :func:`~seawall.gateway.identity.resolve_end_user`) becomes a *safety identifier*,
   ``HMAC(secret, tenant, user)``. The raw id is never sent upstream, logged or audited. With the
   policy's ``tiers`` (:mod:`~seawall.gateway.tiers`) the user gets a trust tier, whose rate limit,
   limits and escalation thresholds the later steps apply.
2. **Standing.** With a store and the risk ledger: the user's standing (403 blocked, 429
   throttled, a warning header when warned).
3. **Rate limits.** With a store: per user, per key, per address without a session (429).
4. **Limits.** :func:`~seawall.gateway.limits.check_request` with the policy's
   limits (4xx with OpenAI's error body: 413 for too many messages or too much input),
   :func:`~seawall.gateway.parameters.check_parameters` (400 naming a standard parameter of the
   wrong type or out of range), the model (404 ``model_not_found`` unless the policy's
   ``allowed_models`` or, without them, the upstream's model list names it:
   :class:`~seawall.gateway.catalogue.ModelCatalogue`), plus the ``seawall`` extension field (below).
5. **Input moderation.** The text and images of every ``user`` message are moderated; any
   flagged category (set to ``block``) refuses the request with 400 ``content_policy_violation``
   naming the categories, before the upstream is called.
6. **Untrusted content.** The documents of the extension field and the content of
   ``tool``/``function`` messages are checked for prompt injection and jailbreak (the model's
   flags, or ``injection_threshold`` on the prompt_injection score). The rule
   (``untrusted_action``): ``drop`` (default) leaves a flagged document out and replaces a flagged
   tool message's content with :data:`DROPPED_NOTICE`; ``refuse`` answers 400
   ``untrusted_content_rejected``. Injection scores are not used on user messages: the user is
   not untrusted content, and the embedded model's injection head fires on plain questions.
7. **Routing.** With a knowledge base or the topic guard: a curated answer, or the policy's
   off-topic reply, without the model.
8. **Prompt.** :func:`~seawall.gateway.prompt.build_prompt` with the policy: the
   gateway's system prompt first, the client's system/developer messages demoted,
   documents and tool output fenced. The ``seawall`` field and the client's ``user``
   and ``safety_identifier`` are removed; the hashed safety identifier is attached;
   ``max_tokens``/``max_completion_tokens`` are capped at the policy's ``max_output_tokens``.
9. **Upstream.** (:class:`~seawall.gateway.upstream.Upstream`): its errors are
   OpenAI-shaped :class:`~seawall.errors.UpstreamError` (an upstream 500 is a 502).
10. **Output moderation.** Plain answers: each choice's content is moderated; a
    flagged one is replaced by ``refusal_text`` with ``finish_reason: "content_filter"``.
    Streams: the answer passes through its own steps (:attr:`Gateway.answer_steps`,
    :mod:`seawall.gateway.answer_stream`): the stream guard
    (:class:`~seawall.gateway.stream_guard.StreamGuard`) releases each sentence once a scan
    cleared it, so only text a scan cleared reaches the client; on a violation (or a stream that
    breaks off) the client gets an OpenAI-style error event ``data: {"error": {...}}``
    and ``data: [DONE]``, never the withheld text; then tool-call moderation judges the tool
    calls, held to the end.
11. **Review.** With ``review.enabled``: an answer the review rules pick is held for a person. The
    client gets (``review.hold_response``, or the request's ``x-seawall-review`` header) an ordinary
    completion saying a person is checking the answer (``placeholder``, the default), the 202
    pending body (``accepted``), or the reviewer's decision if it comes within ``review.wait_s``
    (``wait``); :mod:`seawall.review.responses`. A stream that qualifies is asked after the prompt
    step, its answer fetched the plain way and held, and what the client gets sent as a stream
    (one id and model in every chunk, the review in each chunk's ``seawall`` field), the 202 as JSON.

**Shadow mode** (``gateway.modes``; an extra step's ``mode``): a control in shadow decides on a
copy of the request, and what it would have done (refused, filtered, cut the stream, dropped,
held, answered itself, ...) goes to the audit record's ``shadow`` list and the
``seawall_gateway_shadow_total`` metric; the request goes on as if it had passed. Shadow decisions
never count towards the risk level, the user's ledger or review. Streams: with output moderation in
shadow the text goes out as it comes (no hold-back) and the guard only says where it would have
cut; tool calls are released, their would-be block audited. Identity, limits, rate limits, prompt
and upstream are always enforced.

Then, on every exit (:class:`~seawall.gateway.runner.RequestScope`), exactly once: the risk
level and the user's ledger, and one audit record (:class:`AuditRecord`): time, request id,
tenant, hashed safety identifier, each decision with its categories and top scores, the latency
of each step, the upstream's outcome and the request's outcome. No message text, no raw user id.

A guard that cannot judge (its moderation backend is down, times out or is overloaded: a
:class:`~seawall.errors.GuardUnavailableError`) follows ``fail_mode``: ``closed`` (default)
refuses with 503 ``guard_failed`` (an error event in a stream), ``open`` lets the text
through; the audit record says which. Anything else a guard raises is a bug: 500 (a
``server_error`` event in a stream), logged, and never an open door.

Steps of your own: the ``seawall.steps`` entry points, placed by ``gateway.extra_steps``.

**The extension field.** A client may pass retrieved documents as untrusted data::

    {"model": ..., "messages": [...],
     "seawall": {"documents": [{"source": "kb/refunds.md", "text": "..."}]}}

``source`` is optional; ``text`` is required. The field never reaches the upstream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from seawall.clock import utc_now
from seawall.errors import ConfigurationError, SeawallError
from seawall.gateway.access import KeyAuthenticator
from seawall.gateway.answer_stream import (
    StreamOutputModeration,
    StreamStep,
    StreamToolCallModeration,
    StreamWatch,
    blocked_error,
)
from seawall.gateway.audit import AuditLog, AuditRecord
from seawall.gateway.catalogue import ModelCatalogue, served_models
from seawall.gateway.identity import header_value, load_or_create_secret
from seawall.gateway.knowledge import KnowledgeBase
from seawall.gateway.policy import Policy, load_policy
from seawall.gateway.ratelimit import RateLimiter
from seawall.gateway.risk import RiskLedger, risk_level
from seawall.gateway.runner import (
    USER_ROLES,
    Answer,
    Guards,
    RequestContext,
    RequestScope,
    Runner,
    Step,
    load_extra_steps,
)
from seawall.gateway.sse import DONE, ClientTooSlowError, StreamState, aclose, as_chunks, event
from seawall.gateway.steps import (
    ANSWER_SOURCE_HEADER,
    DROPPED_NOTICE,
    EXTENSION_FIELD,
    WARNING_HEADER,
    Identity,
    InputLimits,
    InputModeration,
    OutputModeration,
    Prompt,
    RateLimits,
    ReviewHold,
    ReviewRoute,
    Routing,
    Standing,
    UntrustedContent,
    UpstreamCall,
    record_wait,
    warning,
)
from seawall.gateway.stream_guard import (
    GUARD_FAILED,
    Blocked,
    GuardVerdict,
    StreamGuardSettings,
    moderation_check,
)
from seawall.gateway.tiers import Tiers
from seawall.gateway.topics import TopicGuard
from seawall.gateway.upstream import Upstream
from seawall.gateway.user_tokens import UserTokenVerifier
from seawall.review.gateway_hook import Disconnected, ReviewHook, StreamWait, WaitEnd
from seawall.review.metrics import GUARD_STEPS
from seawall.service import ModerationService
from seawall.settings import ControlMode, GatewaySettings, Settings
from seawall.store.base import DEFAULT_AUDIT_API, AuditAPI, FilteredAnswer, RiskLevel, Store
from seawall.telemetry import Tracer

log = logging.getLogger("seawall.gateway")

#: Response header that carries the request's id (also in the audit record).
REQUEST_ID_HEADER = "x-seawall-request-id"
#: Audit outcomes of answers seawall gives itself, without the upstream.
LOCAL_OUTCOMES = frozenset({"knowledge_base", "off_topic"})
#: Audit outcomes a stream that reaches its end keeps (else it is ``ok``).
KEPT_OUTCOMES = LOCAL_OUTCOMES | {"held_for_review"}
#: Audit outcomes of requests turned away before they were judged (no risk level).
TURNED_AWAY = frozenset({"unauthorized", "user_blocked", "rate_limited"})
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


def policy_tiers(policy: Policy, settings: GatewaySettings) -> Tiers:
    """The policy's trust tiers resolved against the gateway's rate limit and risk settings."""
    try:
        return Tiers(policy.tiers, policy.limits, settings.rate_limits.per_user, settings.risk)
    except ValueError as exc:
        raise ConfigurationError(f"policy file {settings.policy_file}: {exc}", param="tiers") from None


def new_request_id() -> str:
    return f"swreq-{uuid.uuid4().hex}"


@dataclass
class GatewayResponse:
    """What the route sends back: a JSON body, or an SSE byte stream, and seawall's headers."""

    request_id: str
    body: dict[str, Any] | None = None
    stream: AsyncGenerator[bytes, None] | None = None
    #: Extra response headers: a warning for an escalated user, the answer's source.
    extra_headers: dict[str, str] = field(default_factory=dict)
    #: A session id minted for an anonymous client, to hand back (header and cookie).
    new_session: str | None = None
    #: HTTP status of a JSON body: 200, or 202 for an answer held for review.
    status_code: int = 200

    @property
    def headers(self) -> dict[str, str]:
        return {REQUEST_ID_HEADER: self.request_id, **self.extra_headers}


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
            else ModelCatalogue(
                self.upstream, ttl_s=self.settings.model_list_ttl_s, mapped=self.policy.upstream_models
            )
        )
        self.store = store
        self.access = KeyAuthenticator(
            settings.server.api_keys,
            store,
            default_tenant=self.settings.tenant,
            require=self.settings.require_api_key,
        )
        self.ledger = RiskLedger(store, self.settings.risk) if store and self.settings.risk.enabled else None
        self.tiers = policy_tiers(self.policy, self.settings)
        tokens = self.settings.user_tokens
        self.verifier = UserTokenVerifier(tokens) if tokens.enabled else None
        self.identity = Identity(
            self.access,
            self.secret,
            self.settings.trusted_user_header,
            verifier=self.verifier,
            tiers=self.tiers,
        )
        self.limiter = RateLimiter(store, self.settings.rate_limits) if store else None
        self.audit = AuditLog(
            self.settings.audit_file,
            store if settings.store.audit else None,
            observer=review.observe if review is not None else None,
            buffer_path=settings.store.audit_buffer_file() if store is not None else None,
            retry_s=settings.store.audit_retry_s,
            sync=settings.store.audit_sync == "fsync",
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
        guard = self.settings.stream_guard
        self.guards = Guards(
            service,
            moderation_check(service),
            fail_mode=self.settings.fail_mode,
            timeout_s=guard.check_timeout_s,
        )
        self.guard_settings = StreamGuardSettings(**guard.model_dump(), fail_mode=self.settings.fail_mode)
        #: enforce | shadow per control: the built-in controls', then each extra step's own.
        self.modes: dict[str, ControlMode] = {
            **self.settings.modes.model_dump(),
            **{extra.name: extra.mode for extra in self.settings.extra_steps},
        }
        self.runner = Runner(self.guards, self.modes)
        #: The request path of a plain request, in order (``gateway.extra_steps`` included).
        self.steps: list[Step] = load_extra_steps(self._path(), self.settings.extra_steps, self, settings)
        for step, after in itertools.pairwise(self.steps):
            if isinstance(step, Standing) and isinstance(after, RateLimits):
                step.then = after  # both store calls in one thread-pool hop
        upstream_at = [step.name for step in self.steps].index("upstream")
        #: A stream's steps before its upstream call: the path's, and the review's question.
        holds: list[Step] = [ReviewRoute(review)] if review is not None and review.enabled else []
        self.stream_steps: list[Step] = self.steps[:upstream_at] + holds
        #: The rest of the plain path, for a stream answered 202 pending instead.
        self.held_steps: list[Step] = self.steps[upstream_at:]
        #: What a stream's answer passes through after the upstream, in order (with output moderation).
        self.answer_steps: list[StreamStep] = (
            [StreamOutputModeration(self.guards, self.guard_settings), StreamToolCallModeration(self.guards)]
            if self.settings.output_moderation
            else []
        )

    def _path(self) -> list[Step]:
        """The built-in steps, in order; a control that is off is a step left out."""
        s = self.settings
        path: list[Step] = [self.identity]
        if self.ledger is not None:
            path.append(Standing(self.ledger))
        if self.limiter is not None:
            path.append(RateLimits(self.limiter))
        path.append(InputLimits(self.policy, self.catalogue, self.review))
        if s.input_moderation:
            path.append(InputModeration(self.guards, s.category_actions))
            path.append(UntrustedContent(self.guards, s.injection_threshold, s.untrusted_action))
        if self.knowledge is not None or self.topics is not None:
            path.append(Routing(self.knowledge, self.topics, self.policy, s.knowledge_cite_sources))
        path += [Prompt(self.policy), UpstreamCall(self.upstream)]
        if s.output_moderation:
            path.append(OutputModeration(self.guards, s.refusal_text))
        if self.review is not None and self.review.enabled:
            path.append(ReviewHold(self.review))
        return path

    @property
    def check(self) -> Callable[[str], Awaitable[GuardVerdict]]:
        """The moderation check every guard uses (one text's verdict)."""
        return self.guards.check

    @check.setter
    def check(self, check: Callable[[str], Awaitable[GuardVerdict]]) -> None:
        self.guards.check = check

    async def aclose(self) -> None:
        await self.upstream.aclose()
        if self.verifier is not None:
            await self.verifier.aclose()
        self.audit.close()

    async def models(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """The upstream's model list with the policy's mapped names, narrowed to the policy's
        ``allowed_models`` (the user's tier's, with tiers) when it has some."""
        await asyncio.to_thread(self.access.authenticate, header_value(headers, "authorization"))
        tier = await self.identity.tier(headers)
        allowed = (tier.limits if tier is not None else self.policy.limits).allowed_models
        return served_models(await self.upstream.models(), self.policy.upstream_models, allowed)

    def _new_audit(self, request_id: str | None, *, stream: bool, api: AuditAPI) -> AuditRecord:
        """The record of a new request, with its trace span (ended when the record is written)."""
        audit = AuditRecord(request_id or new_request_id(), self.settings.tenant, stream=stream, api=api)
        audit.tracer = self.tracer
        audit.span = self.tracer.start_request(
            f"seawall.{api.replace('.', '_')}",
            **{"seawall.request_id": audit.request_id, "seawall.stream": stream, "seawall.api": api},
        )
        return audit

    def reject(
        self, request_id: str, exc: SeawallError, *, stream: bool = False, api: AuditAPI = DEFAULT_AUDIT_API
    ) -> None:
        """Audit a request refused before it reached the pipeline (a body that is not JSON)."""
        audit = self._new_audit(request_id, stream=stream, api=api)
        audit.failed(exc)
        self.audit.write(audit)

    def _scope(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        request_id: str | None,
        client_address: str | None,
        *,
        stream: bool,
        judged_roles: frozenset[str],
        disconnected: Disconnected | None,
        api: AuditAPI,
    ) -> RequestScope:
        """A new request's context, in the scope that settles and audits it once, however it ends."""
        audit = self._new_audit(request_id, stream=stream, api=api)
        if self.settings.audit_content:
            audit.content = {"messages": body.get("messages")}
        ctx = RequestContext(
            body,
            headers,
            audit,
            client_address=client_address,
            judged_roles=judged_roles,
            disconnected=disconnected,
        )
        return RequestScope(ctx, self._settle, self.audit.commit)

    def _response(self, ctx: RequestContext, **content: Any) -> GatewayResponse:
        return GatewayResponse(
            ctx.audit.request_id, extra_headers=ctx.response_headers, new_session=ctx.new_session, **content
        )

    # ------------------------------------------------------------------ plain requests

    async def chat(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        *,
        request_id: str | None = None,
        client_address: str | None = None,
        judged_roles: frozenset[str] = USER_ROLES,
        disconnected: Disconnected | None = None,
        api: AuditAPI = DEFAULT_AUDIT_API,
    ) -> GatewayResponse:
        """One non-streaming request, from the client's body to the (moderated) completion; ``api``
        is the API it came through, for the audit record. ``disconnected`` (the route's
        ``request.is_disconnected``) ends a review wait whose client hung up."""
        async with self._scope(
            body,
            headers,
            request_id,
            client_address,
            stream=False,
            judged_roles=judged_roles,
            disconnected=disconnected,
            api=api,
        ) as ctx:
            answer = await self.runner.run(self.steps, ctx)
            if answer is None:
                assert ctx.completion is not None
                answer = Answer(ctx.completion)
            if ctx.audit.content is not None and answer.status_code == 200:
                choices = answer.body.get("choices") or []
                ctx.audit.content["answer"] = [
                    (choice.get("message") or {}).get("content") for choice in choices
                ]
            return self._response(ctx, body=answer.body, status_code=answer.status_code)

    # ------------------------------------------------------------------ streams

    async def stream(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        *,
        request_id: str | None = None,
        client_address: str | None = None,
        judged_roles: frozenset[str] = USER_ROLES,
        disconnected: Disconnected | None = None,
        api: AuditAPI = DEFAULT_AUDIT_API,
    ) -> GatewayResponse:
        """One streaming request. Everything up to the upstream's first chunk happens here, so a
        refusal or an upstream failure is still an HTTP error; the rest is the returned SSE stream
        (whose server notices a client that hangs up: ``disconnected`` is for the plain path)."""
        scope = self._scope(
            body,
            headers,
            request_id,
            client_address,
            stream=True,
            judged_roles=judged_roles,
            disconnected=disconnected,
            api=api,
        )
        async with scope as ctx:
            answer = await self.runner.run(self.stream_steps, ctx)
            if answer is None and ctx.hold is not None:
                # Held for review: answered as a plain completion (Upstream.chat turns streaming
                # off), then held, also when output moderation filtered the draft: the reviewer sees
                # it. The client gets the hold response as a stream, or the 202 body as JSON.
                answer = await self.runner.run(self.held_steps, ctx)
                assert answer is not None
                if answer.status_code != 200:
                    return self._response(ctx, body=answer.body, status_code=answer.status_code)
            if answer is None:
                assert ctx.upstream_body is not None
                chunks = self.upstream.stream(ctx.upstream_body)
            else:
                chunks = as_chunks(answer.body)
            try:
                with ctx.audit.step("upstream_first_chunk"):
                    first = await anext(chunks, None)
            except BaseException:
                await aclose(chunks)
                raise
            if answer is None:
                ctx.audit.upstream = {"status": 200}
            scope.hand_off()
        # A local answer (knowledge base, off-topic reply) was judged when it was written; a held
        # answer's draft when it was held (and a person wrote or released what goes out now).
        guarded = self.settings.output_moderation and answer is None
        model = str(body.get("model") or "")
        extension = answer.body.get(EXTENSION_FIELD) if answer is not None else None
        sse = self._sse(
            first, chunks, scope, model=model, guarded=guarded, extension=extension, wait=ctx.stream_wait
        )
        return self._response(ctx, stream=sse)

    async def _sse(
        self,
        first: dict[str, Any] | None,
        chunks: AsyncIterator[dict[str, Any]],
        scope: RequestScope,
        *,
        model: str,
        guarded: bool,
        extension: Mapping[str, Any] | None = None,
        wait: StreamWait | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """The client's event stream: released text only, then the end (or an error event).
        Every chunk has the same ``id`` and names the ``model``, the role chunk first; with
        ``extension`` (a held answer's), every chunk carries it as its ``seawall`` field.
        With ``wait`` (a held answer in wait mode; ``first`` is its placeholder's chunk) the role
        chunk goes out at once, then a keepalive comment every ``review.wait_keepalive_s`` until
        the decision, which replaces the placeholder (and its ``seawall`` field) if it came in time."""
        audit = scope.ctx.audit
        mapped = self.policy.upstream_model(model) != model  # chunks keep the client's name for it
        state = StreamState(audit.request_id, model, extension, keep_model=mapped)
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

        watches = (
            [step.watch(scope.ctx, shadow=self.modes[step.control] == "shadow") for step in self.answer_steps]
            if guarded
            else []
        )
        released: list[str] = []  # what the client received
        began = time.perf_counter()
        try:
            yield event(state.chunk({"role": "assistant", "content": ""}))
            if wait is not None:
                async for keepalive in wait.keepalives():
                    yield keepalive
                # The decided answer replaces the placeholder; deltas() has not started reading yet.
                await aclose(chunks)  # the placeholder's, not yet read past its first chunk
                chunks, first = await _decided_answer(wait.decided(), state, audit)
                first_text = state.observe(first) if first is not None else ""
            blocked: Blocked | None = None
            pieces = _watched(deltas(), watches)
            try:
                async for piece in pieces:
                    if isinstance(piece, Blocked):
                        blocked = piece
                        break
                    released.append(piece)
                    yield event(state.chunk({"content": piece}))
            finally:
                await aclose(pieces)
            refused = None
            if blocked is not None:
                refused = blocked_error(blocked.verdict)
                audit.failed(refused)
                audit.outcome = "guard_failed" if blocked.verdict.reason == GUARD_FAILED else "blocked_stream"
            else:
                for watch in watches:
                    if (refused := await watch.at_end(state.tool_calls)) is not None:
                        audit.failed(refused)
                        break
            if refused is not None:
                yield event(refused.to_body())
            else:
                for tool_call in state.tool_calls:  # released at the end, once their arguments passed
                    yield event(state.chunk({"tool_calls": [tool_call]}))
                yield event(state.chunk({}, finish_reason=state.finish_reason or "stop"))
                if state.usage is not None:
                    yield event({**state.chunk({}), "choices": [], "usage": state.usage})
                audit.outcome = outcome if outcome in KEPT_OUTCOMES else "ok"
        except ClientTooSlowError:  # the client stopped reading (GuardedStreamingResponse)
            audit.outcome = "client_disconnected"
            audit.error = {"status": None, "code": "client_too_slow"}
            raise
        except SeawallError as exc:  # the upstream broke off, or sent an error event
            audit.failed(exc)
            yield event(exc.to_body())
        except Exception:
            log.exception("stream %s failed", audit.request_id)
            audit.outcome = "error"
            yield event(SeawallError("The server had an error while processing the stream.").to_body())
        finally:
            if wait is not None and (abandoned := wait.abandon()) is not None:
                record_wait(audit, abandoned)  # before any await: this generator may be cancelled
            await aclose(chunks)
            audit.latency_ms["stream"] = round((time.perf_counter() - began) * 1000, 3)
            for watch in watches:
                watch.close()
            if audit.content is not None:
                audit.content["answer"] = ["".join(released)]
            await scope.finish()
        yield DONE

    # ------------------------------------------------------------------ after the answer

    async def _settle(self, ctx: RequestContext) -> None:
        """After the answer: the request's risk level, the count of filtered answers, the ledger
        (which charges the user for what the user sent, never for the model's answer), and any
        escalation."""
        audit = ctx.audit
        if audit.safety_identifier is None or audit.outcome in TURNED_AWAY:
            return
        medium_score = (ctx.tier.risk if ctx.tier is not None else self.settings.risk).medium_score
        audit.risk = self._risk(audit.decisions, GUARD_STEPS | {"untrusted_content"}, medium_score)
        filtered = _categories(audit.decisions, ANSWER_STEPS, ANSWER_STOPPED)
        if filtered is not None and self.store is not None and ctx.caller is not None:
            answer = FilteredAnswer(
                ctx.caller.tenant, audit.model or "unknown", utc_now(), audit.request_id, tuple(filtered)
            )
            try:
                await asyncio.to_thread(self.store.record_filtered_answer, answer)
            except Exception as exc:  # the answer is settled; counting it must not turn it into an error
                log.error("cannot count the filtered answer of %s: %s", audit.request_id, exc)
        level = self._risk(audit.decisions, USER_STEPS, medium_score)
        if self.ledger is None or level == "low" or ctx.caller is None:
            return
        categories = {name for d in audit.decisions if d["step"] in USER_STEPS for name in d["categories"]}
        try:
            escalated = await asyncio.to_thread(
                self.ledger.record,
                ctx.caller.tenant,
                audit.safety_identifier,
                level,
                audit.request_id,
                categories,
                thresholds=ctx.tier.risk if ctx.tier is not None else None,
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
            ctx.response_headers[WARNING_HEADER] = warning(escalated)

    def _risk(self, decisions: list[dict[str, Any]], steps: frozenset[str], medium_score: float) -> RiskLevel:
        """The risk level that the decisions of ``steps`` add up to (``medium_score``: the user's
        tier's, else ``risk.medium_score``)."""
        flagged, scores, injection = _risk_signals(decisions, steps)
        return risk_level(flagged=flagged, scores=scores, injection=injection, medium_score=medium_score)


# ---------------------------------------------------------------------------------- helpers


class _Stopped(Exception):
    """A watch stopped the stream: raised through the later watches, so none of them releases
    what it still holds (as it would at an ordinary end of the text)."""

    def __init__(self, marker: Blocked) -> None:
        super().__init__("stream stopped")
        self.marker = marker


async def _decided_answer(
    end: WaitEnd, state: StreamState, audit: AuditRecord
) -> tuple[AsyncIterator[dict[str, Any]], dict[str, Any] | None]:
    """A waiting stream's answer once its wait ended (the reviewer's, or the placeholder on a
    timeout), recorded in the audit: its chunks and the first of them, already read."""
    record_wait(audit, end)
    held = end.response.body
    state.extension = held.get(EXTENSION_FIELD)
    chunks = as_chunks(held)
    return chunks, await anext(chunks, None)


async def _watched(deltas: AsyncIterator[str], watches: list[StreamWatch]) -> AsyncIterator[str | Blocked]:
    """``deltas`` through each watch's :meth:`~StreamWatch.text` in turn; the first
    :class:`Blocked` marker, from any of them, ends the stream."""

    async def texts(pieces: AsyncIterator[str | Blocked]) -> AsyncIterator[str]:
        try:
            async for piece in pieces:
                if isinstance(piece, Blocked):
                    raise _Stopped(piece)
                yield piece
        finally:
            await aclose(pieces)

    pieces: AsyncIterator[str | Blocked] = deltas
    for watch in watches:
        pieces = watch.text(texts(pieces))
    try:
        async for piece in pieces:
            yield piece
            if isinstance(piece, Blocked):
                return
    except _Stopped as stopped:
        yield stopped.marker
    finally:
        await aclose(pieces)


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
