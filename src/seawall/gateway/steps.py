"""The built-in steps of the request path, in the order :mod:`seawall.gateway.pipeline` runs them.

Each is a :class:`~seawall.gateway.runner.Step`: a ``name`` (the audit record's latency key and
the trace span's name) and ``async run(ctx)``. Each one is built with what it needs and only
when its control is on: the pipeline leaves a step out rather than asking inside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from seawall.errors import (
    ContentPolicyError,
    InvalidRequestError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
)
from seawall.gateway.access import KeyAuthenticator
from seawall.gateway.audit import AuditRecord
from seawall.gateway.catalogue import ModelCatalogue
from seawall.gateway.identity import (
    header_value,
    resolve_end_user,
    safety_identifier,
    upstream_body,
    verified_end_user,
)
from seawall.gateway.knowledge import KnowledgeBase
from seawall.gateway.limits import cap_output_tokens, check_request
from seawall.gateway.messages import REASONING_FIELDS, image_parts, last_user_text, text_of
from seawall.gateway.parameters import check_parameters
from seawall.gateway.policy import Policy
from seawall.gateway.prompt import build_prompt
from seawall.gateway.ratelimit import Count, RateLimiter
from seawall.gateway.risk import RiskLedger
from seawall.gateway.runner import Answer, Guards, RequestContext
from seawall.gateway.tiers import ResolvedTier, Tiers
from seawall.gateway.topics import TopicGuard
from seawall.gateway.upstream import Upstream
from seawall.gateway.user_tokens import UserTokenVerifier, VerifiedUser
from seawall.review.gateway_hook import DISCONNECTED, PENDING_STATUS, ReviewHook, WaitEnd
from seawall.review.rules import HoldContext
from seawall.store.base import UserState

#: The request field that carries seawall's extensions (documents); never sent upstream.
EXTENSION_FIELD = "seawall"
#: What replaces the content of a tool message dropped as a suspected injection.
DROPPED_NOTICE = "[content removed by seawall: suspected prompt injection]"
#: Response header that warns a client its user is escalated (warned, throttled).
WARNING_HEADER = "x-seawall-warning"
#: Response header that says where an answer came from when not from the model.
ANSWER_SOURCE_HEADER = "x-seawall-answer-source"
#: Roles whose content is untrusted output of tools.
UNTRUSTED_ROLES = frozenset({"tool", "function"})


class Identity:
    """The app's key, the end user (a verified user token first), the user's safety identifier (the
    raw id goes no further) and, when the policy has tiers, the user's trust tier."""

    name = "identity"
    guard = False

    def __init__(
        self,
        access: KeyAuthenticator,
        secret: bytes,
        trusted_user_header: str | None,
        *,
        verifier: UserTokenVerifier | None = None,
        tiers: Tiers | None = None,
    ) -> None:
        self.access = access
        self.secret = secret
        self.trusted_user_header = trusted_user_header
        self.verifier = verifier
        self.tiers = tiers if tiers else None

    async def run(self, ctx: RequestContext) -> Answer | None:
        audit, body = ctx.audit, ctx.body
        authorization = header_value(ctx.headers, "authorization")
        # From the cache when it can answer: a thread-pool hop costs more than the lookup.
        caller = self.access.authenticate_cached(authorization)
        if caller is None:
            caller = await asyncio.to_thread(self.access.authenticate, authorization)
        ctx.caller = caller
        audit.key_id, audit.tenant = caller.key_id, caller.tenant
        audit.model = body.get("model") if isinstance(body.get("model"), str) else None
        verified = await self._verified(ctx.headers)
        if verified is not None:
            user = verified_end_user(verified.id)
        else:
            user = resolve_end_user(body, ctx.headers, self.trusted_user_header)
        if user.new_session:
            ctx.new_session = user.id
        ctx.safety_id = safety_identifier(self.secret, caller.tenant, user.id)
        audit.safety_identifier, audit.user_source = ctx.safety_id, user.source
        if self.tiers is not None:
            ctx.tier = self.tiers.for_claims(verified.claims if verified is not None else None)
            audit.tier = ctx.tier.name
        return None

    async def tier(self, headers: Mapping[str, str]) -> ResolvedTier | None:
        """The trust tier of a request with these headers (None: the policy has no tiers); a bad
        token is the same 401 as on a chat request."""
        if self.tiers is None:
            return None
        verified = await self._verified(headers)
        return self.tiers.for_claims(verified.claims if verified is not None else None)

    async def _verified(self, headers: Mapping[str, str]) -> VerifiedUser | None:
        """The user of a verified token; None without a token (where unverified users are
        accepted); 401 for a token that fails, or a missing one where they are refused."""
        if self.verifier is None:
            return None
        token = self.verifier.token_of(headers)
        if token is None:
            if self.verifier.settings.unverified == "refuse":
                raise self.verifier.missing()
            return None
        return await self.verifier.verify(token)


class Standing:
    """The user's standing on the escalation ladder: 403 when blocked or under review, 429 when
    throttled and over the throttle's rate, a warning header when warned (or throttled).

    With ``then`` (the rate-limit step, when it comes right after this one) an enforced standing
    step that lets the request on also counts it against the rate limits, in the same thread-pool
    call and the same store transaction (:meth:`~seawall.gateway.risk.RiskLedger.admit_counting`):
    one hop off the event loop instead of two, one transaction instead of two. The rate-limit step
    then only hands on what that count decided, and this step's latency includes the count."""

    name = "standing"
    guard = False

    def __init__(self, ledger: RiskLedger, then: RateLimits | None = None) -> None:
        self.ledger = ledger
        self.then = then

    async def run(self, ctx: RequestContext) -> Answer | None:
        caller = ctx.caller
        assert caller is not None
        count = self.then if not ctx.shadow else None  # a shadowed step acts on nothing
        try:
            ctx.standing, counted = await asyncio.to_thread(self._admit, caller.tenant, ctx, count)
        except (PermissionDeniedError, RateLimitError) as exc:
            ctx.audit.decide(self.name, "refuse", code=exc.code)
            raise
        if count is not None:
            ctx.rate_limits_counted = counted
        if ctx.standing is not None:
            ctx.audit.decide(self.name, "warn", status=ctx.standing.status)
            ctx.response_headers[WARNING_HEADER] = warning(ctx.standing)
        return None

    def _admit(
        self, tenant: str, ctx: RequestContext, count: RateLimits | None
    ) -> tuple[UserState | None, Exception | None]:
        """The standing in force (or its refusal, raised); then, with ``count``, the request
        counted against the rate limits in the same store call (one transaction): None, or the
        refusal, for the rate-limit step to raise."""
        throttle = ctx.tier.risk.throttle if ctx.tier is not None else None  # the tier's rate
        counts = count.counts(ctx) if count is not None else ()
        return self.ledger.admit_counting(tenant, ctx.safety_id, counts, throttle=throttle)


class RateLimits:
    """The rate limits per user, per key and per address without a session (429). Capacity, not a
    judgement: always enforced, never in shadow mode."""

    name = "rate_limits"
    guard = False

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def run(self, ctx: RequestContext) -> Answer | None:
        counted, ctx.rate_limits_counted = ctx.rate_limits_counted, False
        if counted is False:  # not counted yet (the standing step did not do it)
            await asyncio.to_thread(self.count, ctx)
        elif isinstance(counted, Exception):
            raise counted
        return None

    def count(self, ctx: RequestContext) -> None:
        """Count the request against its buckets (blocking: a store call); 429 when one is full."""
        caller = ctx.caller
        assert caller is not None
        sessionless = ctx.client_address if ctx.new_session else None
        self.limiter.check(
            caller.key_id,
            caller.tenant,
            ctx.safety_id,
            address_without_session=sessionless,
            tier=ctx.tier,
        )

    def counts(self, ctx: RequestContext) -> list[Count]:
        """The request's counts (buckets and refusals), for the standing step to make."""
        caller = ctx.caller
        assert caller is not None
        sessionless = ctx.client_address if ctx.new_session else None
        return self.limiter.counts(
            caller.key_id,
            caller.tenant,
            ctx.safety_id,
            address_without_session=sessionless,
            tier=ctx.tier,
        )


class InputLimits:
    """The policy's limits, the standard parameters, the model, and the ``seawall`` extension field."""

    name = "limits"
    guard = False

    def __init__(self, policy: Policy, catalogue: ModelCatalogue | None, review: ReviewHook | None) -> None:
        self.policy = policy
        self.catalogue = catalogue
        self.review = review
        self.extension_fields = {"documents", "review"} if review is not None else {"documents"}

    async def run(self, ctx: RequestContext) -> Answer | None:
        body = ctx.body
        tier = ctx.tier
        limits = self.policy.limits
        if tier is not None:  # the tier's limits; a model no one is served is still a 404 first
            limits = tier.limits.model_copy(update={"allowed_models": limits.allowed_models})
        check_request(body, limits)
        check_parameters(body)
        if self.review is not None:
            self.review.mode(ctx.headers)  # a bad x-seawall-review header: 400 before the model
        if self.catalogue is not None:
            await self.catalogue.check(body["model"])
        if (
            tier is not None
            and tier.limits.allowed_models
            and body["model"] not in tier.limits.allowed_models
        ):
            raise PermissionDeniedError(
                f"The model '{body['model']}' is not available to users of the tier '{tier.name}'; "
                f"their models: {', '.join(tier.limits.allowed_models)}",
                param="model",
                code="model_not_allowed_for_tier",
            )
        ctx.documents = self._documents(body, ctx)
        if body.get("stream") and body.get("n") not in (None, 1):
            raise InvalidRequestError(
                "the gateway streams one choice only; n must be 1 with stream", param="n"
            )
        ctx.messages = body["messages"]
        return None

    def _documents(self, body: Mapping[str, Any], ctx: RequestContext) -> list[dict[str, str]]:
        """The untrusted documents of the ``seawall`` extension field, checked."""
        extension = body.get(EXTENSION_FIELD)
        if extension is None:
            return []
        if not isinstance(extension, dict):
            raise InvalidRequestError(f"'{EXTENSION_FIELD}' must be an object", param=EXTENSION_FIELD)
        known = self.extension_fields
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
        limit = (tier.limits if (tier := ctx.tier) is not None else self.policy.limits).max_input_chars
        total = sum(len(document["text"]) for document in documents)
        if limit is not None and total > limit:
            raise PayloadTooLargeError(
                f"the documents are {total} characters long; the limit (max_input_chars) is {limit}",
                param=f"{EXTENSION_FIELD}.documents",
                code="input_too_long",
            )
        return documents


class InputModeration:
    """Refuse the request if any user message's text or image is flagged in a blocking category
    (and any system or developer message's, where the context's ``judged_roles`` say so)."""

    name = "input_moderation"
    guard = True

    def __init__(self, guards: Guards, category_actions: Mapping[str, str]) -> None:
        self.guards = guards
        self.category_actions = category_actions

    async def run(self, ctx: RequestContext) -> Answer | None:
        audit = ctx.audit
        roles = ctx.judged_roles
        user = [m.get("content") for m in ctx.messages if m.get("role") in roles]
        texts = [text for content in user if (text := text_of(content))]
        images = [part for content in user for part in image_parts(content)]
        if not texts and not images:
            return None
        checks = [self.guards.judge(text) for text in texts]
        if images:
            checks.append(self.guards.judge_images(images))
        # An image that cannot be fetched or decoded, or is too large, cannot be judged: the client hears why.
        verdicts = await self.guards.guard(
            self.name, audit, asyncio.gather(*checks), client_errors=bool(images)
        )
        if verdicts is None:
            return None
        categories = sorted({name for verdict in verdicts for name in verdict.categories})
        scores = max_scores(verdict.scores for verdict in verdicts)
        blocking = [name for name in categories if self.category_actions.get(name, "block") == "block"]
        if blocking:
            audit.decide(self.name, "refuse", categories, scores, images=len(images))
            raise ContentPolicyError(
                "The request was refused by the content policy; flagged: " + ", ".join(blocking),
                param="messages",
            )
        # Categories set to 'flag' pass, and count as high risk in the audit and the ledger.
        audit.decide(self.name, "flag" if categories else "allow", categories, scores, images=len(images))
        return None


class UntrustedContent:
    """Check documents and tool messages for prompt injection and jailbreak; drop or refuse."""

    name = "untrusted_content"
    guard = True

    def __init__(self, guards: Guards, threshold: float | None, action: str) -> None:
        self.guards = guards
        self.threshold = threshold
        self.action = "refuse" if action == "refuse" else "drop"

    async def run(self, ctx: RequestContext) -> Answer | None:
        audit, documents, messages = ctx.audit, ctx.documents, ctx.messages
        pieces: list[tuple[str, int, str]] = [("document", i, d["text"]) for i, d in enumerate(documents)]
        pieces += [
            ("tool", i, text)
            for i, m in enumerate(messages)
            if m.get("role") in UNTRUSTED_ROLES and (text := text_of(m.get("content")))
        ]
        if not pieces:
            return None
        # Each piece is judged whole and sentence by sentence, as the moderation guards judge a
        # span, so an instruction buried in a long, ordinary document is not diluted by it.
        texts = [text for _, _, text in pieces]
        focus_chars = self.guards.service.settings.moderation.passage_chars
        check = self.guards.in_time(self.guards.service.moderate_texts(texts, focus_chars=focus_chars))
        results = await self.guards.guard(self.name, audit, check)
        if results is None:
            return None
        drop_documents: set[int] = set()
        drop_messages: set[int] = set()
        for (kind, index, _), result in zip(pieces, results, strict=True):
            scores, flags = result.extra_scores, result.extra_flags
            injection = scores.get("prompt_injection", 0.0)
            if self.threshold is None:
                injected = flags.get("prompt_injection", False)
            else:
                injected = injection >= self.threshold
            labels = ["prompt_injection"] if injected else []
            if flags.get("jailbreak"):
                labels.append("jailbreak")
            where = f"{EXTENSION_FIELD}.documents[{index}]" if kind == "document" else f"messages[{index}]"
            if not labels:
                audit.decide(self.name, "allow", [], scores, source=where)
                continue
            audit.decide(self.name, self.action, labels, scores, source=where)
            if self.action == "refuse":
                raise InvalidRequestError(
                    f"{where} was refused as untrusted content: flagged {', '.join(labels)}",
                    param=where,
                    code="untrusted_content_rejected",
                )
            (drop_documents if kind == "document" else drop_messages).add(index)
        ctx.documents = [d for i, d in enumerate(documents) if i not in drop_documents]
        ctx.messages = [
            {**m, "content": DROPPED_NOTICE} if i in drop_messages else m for i, m in enumerate(messages)
        ]
        return None


class Routing:
    """A curated answer from the knowledge base, or the policy's off-topic reply: no model call."""

    name = "routing"
    guard = False

    def __init__(
        self, knowledge: KnowledgeBase | None, topics: TopicGuard | None, policy: Policy, cite_sources: bool
    ) -> None:
        self.knowledge = knowledge
        self.topics = topics
        self.policy = policy
        self.cite_sources = cite_sources

    async def run(self, ctx: RequestContext) -> Answer | None:
        question = last_user_text(ctx.messages)
        text = self._answer(question, ctx) if question else None
        if text is None:
            return None
        return Answer(local_completion(ctx.audit.request_id, ctx.body, text))

    def _answer(self, question: str, ctx: RequestContext) -> str | None:
        """The knowledge base's answer, or the off-topic reply, or None (ask the model)."""
        audit = ctx.audit
        if self.knowledge is not None:
            match = self.knowledge.match(question)
            if match is not None:
                audit.decide("knowledge_base", "answer", entry=match.entry_id, score=round(match.score, 4))
                audit.outcome = "knowledge_base"
                ctx.response_headers[ANSWER_SOURCE_HEADER] = f"knowledge_base; entry={match.entry_id}"
                if self.cite_sources and match.sources:
                    return f"{match.answer}\n\nSources: {', '.join(match.sources)}"
                return match.answer
            audit.decide("knowledge_base", "no_match")
        if self.topics is not None:
            verdict = self.topics.check(question)
            action = "allow" if verdict.on_topic else "refuse"
            audit.decide("topic", action, score=round(verdict.score, 4), reason=verdict.reason)
            if not verdict.on_topic:
                audit.outcome = "off_topic"
                ctx.response_headers[ANSWER_SOURCE_HEADER] = "off_topic"
                return self.policy.off_topic_reply
        return None


class Prompt:
    """The upstream's body: the policy's prompt, the client's fields less seawall's and the user's
    id, the safety identifier, the output token cap."""

    name = "prompt"
    guard = False

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def run(self, ctx: RequestContext) -> Answer | None:
        built = build_prompt(self.policy, ctx.messages, ctx.documents, request_id=ctx.audit.request_id)
        dropped = {EXTENSION_FIELD, "user", "safety_identifier", "messages"}
        outgoing = {key: value for key, value in ctx.body.items() if key not in dropped}
        outgoing["messages"] = built.messages
        outgoing["model"] = self.policy.upstream_model(outgoing["model"])  # the policy's models map
        limits = ctx.tier.limits if ctx.tier is not None else self.policy.limits
        outgoing = cap_output_tokens(outgoing, limits.max_output_tokens)
        ctx.upstream_body = upstream_body(outgoing, ctx.safety_id)
        return None


class UpstreamCall:
    """The model's answer, without streaming (a stream's upstream call is the pipeline's own)."""

    name = "upstream"
    guard = False

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def run(self, ctx: RequestContext) -> Answer | None:
        assert ctx.upstream_body is not None
        ctx.completion = await self.upstream.chat(ctx.upstream_body)
        # Every answer seawall serves carries seawall's id (a report made with it finds the audit
        # record); the upstream's own id is kept in the audit record.
        upstream_id = ctx.completion.get("id")
        ctx.completion["id"] = f"chatcmpl-{ctx.audit.request_id}"
        ctx.audit.upstream = {"status": 200, **({"id": str(upstream_id)} if upstream_id else {})}
        if (model := ctx.upstream_body.get("model")) != ctx.body.get("model"):  # a mapped name
            ctx.completion["model"] = ctx.body.get("model")  # the client's name, as a stream's chunks
            ctx.audit.upstream["model"] = model
        ctx.audit.outcome = "ok"
        return None


class OutputModeration:
    """Replace every flagged choice's content with the refusal text (finish_reason content_filter);
    its tool calls, reasoning and log probabilities go with it."""

    name = "output_moderation"
    guard = True

    def __init__(self, guards: Guards, refusal_text: str) -> None:
        self.guards = guards
        self.refusal_text = refusal_text

    async def run(self, ctx: RequestContext) -> Answer | None:
        audit = ctx.audit
        for choice in (ctx.completion or {}).get("choices") or []:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            # Tool-call arguments are output too: an app may show or execute them; so is the reasoning
            # some servers return beside the answer (vLLM, llama.cpp, DeepSeek: reasoning_content).
            reasoning = [message.get(key) for key in REASONING_FIELDS if isinstance(message.get(key), str)]
            text = "\n".join(
                filter(None, [text_of(message.get("content")), tool_arguments(message), *reasoning])
            )
            if not text:
                continue
            verdict = await self.guards.guard(self.name, audit, self.guards.judge(text))
            if verdict is None:
                continue
            if verdict.allowed:
                audit.decide(self.name, "allow", [], verdict.scores, choice=choice.get("index"))
                continue
            audit.decide(self.name, "filter", verdict.categories, verdict.scores, choice=choice.get("index"))
            audit.outcome = "filtered_output"
            message["content"] = self.refusal_text
            for key in ("tool_calls", *REASONING_FIELDS):
                message.pop(key, None)
            if choice.get("logprobs") is not None:
                choice["logprobs"] = None  # its tokens spell out the answer just withheld
            choice["finish_reason"] = "content_filter"
        return None


class ReviewRoute:
    """Streams only: a request that qualifies for review is not streamed from the upstream (the
    pipeline takes it down the plain path, where :class:`ReviewHold` holds it, and streams what the
    client gets for it, or sends the 202 body as JSON)."""

    name = "review_route"
    control = "review"
    guard = False

    def __init__(self, review: ReviewHook) -> None:
        self.review = review

    async def run(self, ctx: RequestContext) -> Answer | None:
        ctx.hold = await self.review.check(ctx.body, ctx.decisions, hold_context(self.review, ctx))
        if ctx.shadow and ctx.hold is not None:  # in enforce mode ReviewHold records the hold
            ctx.audit.decide("review", "hold", reasons=list(ctx.hold.reasons))
        return None


class ReviewHold:
    """Hold the answer for human review when the review rules (or a stream's earlier decision) say
    so; the client gets what the hold response asks for (a placeholder completion, the 202
    pending body, or the reviewer's decision if it comes in time: ``review.hold_response``)."""

    name = "review"
    guard = False

    def __init__(self, review: ReviewHook) -> None:
        self.review = review

    async def run(self, ctx: RequestContext) -> Answer | None:
        assert ctx.completion is not None
        audit = ctx.audit
        decision = ctx.hold or await self.review.check(
            ctx.body, ctx.decisions, hold_context(self.review, ctx)
        )
        if decision is None:
            return None
        if ctx.shadow:  # would hold: say so, store nothing (the answer is released)
            audit.decide("review", "hold", reasons=list(decision.reasons))
            return Answer({}, status_code=PENDING_STATUS)
        mode = self.review.mode(ctx.headers)
        pending = await self.review.hold(
            decision,
            ctx.body,
            ctx.completion,
            request_id=audit.request_id,
            tenant=audit.tenant,
            safety_id=audit.safety_identifier,
        )
        review_id = pending["review_id"]
        audit.decide("review", "hold", reasons=list(decision.reasons), review_id=review_id, response=mode)
        audit.outcome = "held_for_review"
        if mode == "wait" and audit.stream:
            # The stream waits itself (Gateway._sse): its role chunk goes out at once, keepalive
            # comments while it waits, then the decision or this placeholder.
            ctx.stream_wait = self.review.stream_wait(pending)
            held = self.review.placeholder(pending)
        elif mode == "wait":
            end = await self.review.wait_end(pending, disconnected=ctx.disconnected)
            record_wait(audit, end)
            held = end.response
        else:
            held = await self.review.respond(pending, mode)
        ctx.response_headers.update(held.headers)
        return Answer(held.body, status_code=held.status_code)


def record_wait(audit: AuditRecord, end: WaitEnd) -> None:
    """The audit record of how a wait for a reviewer's decision ended (the ``review_wait``
    decision: approved, edited, rejected, timeout or client_disconnected, with ``waited_ms``); a
    client that hung up is the request's outcome. The held item stays in the queue either way."""
    audit.decide("review_wait", end.outcome, waited_ms=end.waited_ms)
    if end.outcome == DISCONNECTED:
        audit.outcome = "client_disconnected"


# ---------------------------------------------------------------------------------- helpers


def hold_context(review: ReviewHook, ctx: RequestContext) -> HoldContext:
    """The request's context for the hold rules: its API key (scan traffic) and the user's tier."""
    key_id = ctx.caller.key_id if ctx.caller is not None else None
    tier = ctx.tier.name if ctx.tier is not None else None
    return review.context(ctx.headers, key_id=key_id, tier=tier)


def warning(state: UserState) -> str:
    until = f" until {state.until.isoformat(timespec='minutes')}" if state.until else ""
    return f"{state.status}{until}: {state.reason}"


def local_completion(request_id: str, body: Mapping[str, Any], text: str) -> dict[str, Any]:
    """A chat completion seawall answers itself (knowledge base, off-topic reply)."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or "seawall"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def tool_arguments(message: Mapping[str, Any]) -> str:
    """The arguments of a message's tool calls (and legacy function call), joined by newlines."""
    calls = [c.get("function") for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    calls.append(message.get("function_call"))
    return "\n".join(
        str(call.get("arguments")) for call in calls if isinstance(call, dict) and call.get("arguments")
    )


def max_scores(all_scores: Any) -> dict[str, float]:
    merged: dict[str, float] = {}
    for scores in all_scores:
        for name, score in scores.items():
            merged[name] = max(merged.get(name, 0.0), float(score))
    return merged


__all__ = [
    "ANSWER_SOURCE_HEADER",
    "DROPPED_NOTICE",
    "EXTENSION_FIELD",
    "WARNING_HEADER",
    "Identity",
    "InputLimits",
    "InputModeration",
    "OutputModeration",
    "Prompt",
    "RateLimits",
    "ReviewHold",
    "ReviewRoute",
    "Routing",
    "Standing",
    "UntrustedContent",
    "UpstreamCall",
    "record_wait",
]
