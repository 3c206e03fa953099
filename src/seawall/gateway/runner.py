"""The request path as data: steps, the context they share, and the runner that takes a request
through them.

A :class:`Step` has a ``name`` and ``async run(ctx)``: it reads and adds to the
:class:`RequestContext` and returns None to let the request go on, or an :class:`Answer` to
stop it there (a reply seawall gives itself, an answer held for review); a refusal is a raised
:class:`~seawall.errors.SeawallError`. The :class:`Runner` times each step (the audit record's
``latency_ms`` and a trace span, both under the step's name) and owns the guard-failure policy
(:class:`Guards`): only :class:`~seawall.errors.GuardUnavailableError` follows ``fail_mode``;
anything else a guard raises is a 500, never an open door. :class:`RequestScope` settles the
user's ledger and writes the audit record exactly once, however the request ends.

**Shadow mode** (``gateway.modes``, an extra step's ``mode``): the runner runs a step whose control
is in shadow on a copy of the context (:meth:`RequestContext.shadow_copy`, ``ctx.shadow`` true) and
keeps nothing of it but what it would have done: a refusal it raised, an answer it gave, a change it
made, or a decision that is not a pass become one entry of the audit record's ``shadow`` list
(:func:`shadow_entry`); its decisions never reach ``decisions``, so they never count towards the
request's risk, the user's ledger or review. The request goes on as if the step had passed. A
shadowed step that cannot judge, or fails, does not fail the request either: that too is an entry.

Steps of your own come from the ``seawall.steps`` entry-point group (:func:`load_extra_steps`),
placed by ``gateway.extra_steps``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from seawall.errors import (
    BackendTimeoutError,
    ConfigurationError,
    GuardFailedError,
    GuardUnavailableError,
    InvalidRequestError,
    SeawallError,
)
from seawall.gateway.access import Caller
from seawall.gateway.audit import AuditRecord
from seawall.gateway.stream_guard import GuardVerdict
from seawall.gateway.tiers import ResolvedTier
from seawall.plugins import STEPS, PluginGroup, load_group
from seawall.service import ModerationService
from seawall.settings import ControlMode, ExtraStep, FailMode, Settings
from seawall.store.base import UserState

log = logging.getLogger("seawall.gateway")

T = TypeVar("T")

#: The entry-point group of steps of your own (``gateway.extra_steps`` places them).
STEP_ENTRY_POINTS = STEPS
#: The roles input moderation judges on a chat completions request.
USER_ROLES = frozenset({"user"})
#: Decision actions that let the request through as it was: a shadowed step that took only
#: these leaves no ``shadow`` entry.
PASSED = frozenset({"allow", "no_match"})


@dataclass
class Answer:
    """What a step answers instead of letting the request go on: a chat completion seawall wrote
    itself (200), or the pending body of an answer held for review (202)."""

    body: dict[str, Any]
    status_code: int = 200


@dataclass
class RequestContext:
    """One request on its way through the steps: what the client sent, and what the steps learnt."""

    body: dict[str, Any]
    headers: Mapping[str, str]
    audit: AuditRecord
    #: The client's address (for anonymous requests without a session), when the server knows it.
    client_address: str | None = None
    #: The roles of the messages input moderation judges: the user's (chat completions, where
    #: system and developer messages are the app's own), or every input item's but the
    #: assistant's (the Responses API, its ``instructions`` included).
    judged_roles: frozenset[str] = USER_ROLES
    caller: Caller | None = None
    #: A session id minted for an anonymous client, to hand back (header and cookie).
    new_session: str | None = None
    #: ``HMAC(secret, tenant, user)``: the only form of the user's id past the identity step.
    safety_id: str = ""
    #: The user's trust tier, when the policy has tiers: its limits, rate limit and thresholds.
    tier: ResolvedTier | None = None
    #: The user's escalation state, when warned or throttled.
    standing: UserState | None = None
    #: The rate limits' count when the standing step made it (:class:`~seawall.gateway.steps.Standing`
    #: with ``then``): None (counted, within the limits) or what the count raised; False: not counted.
    rate_limits_counted: Exception | bool | None = False
    #: The messages and untrusted documents as the guards left them (dropped ones replaced).
    messages: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, str]] = field(default_factory=list)
    #: What goes upstream (the prompt step builds it) and what came back.
    upstream_body: dict[str, Any] | None = None
    completion: dict[str, Any] | None = None
    #: A review decision taken before the upstream call (a stream to be answered 202 instead).
    hold: Any = None
    #: Response headers the steps add (warnings, the answer's source, the review id).
    response_headers: dict[str, str] = field(default_factory=dict)
    #: Whether the client has hung up (the route's ``request.is_disconnected``), for a wait that
    #: could outlast it (``review.hold_response: wait``); None where nobody can tell.
    disconnected: Callable[[], Awaitable[bool]] | None = None
    #: A held stream's wait for the reviewer's decision (wait mode), run by the stream itself.
    stream_wait: Any = None
    #: True in the copy a step in shadow mode runs on: whatever it changes is dropped, and it must
    #: not act outside the context (store writes: a review hold) but only say what it would do.
    shadow: bool = False

    @property
    def decisions(self) -> list[dict[str, Any]]:
        return self.audit.decisions

    def shadow_copy(self) -> RequestContext:
        """A copy for a step in shadow mode: the request's parts copied deep, a scratch audit record
        that starts with the decisions so far, and ``shadow`` set."""
        audit = self.audit
        scratch = AuditRecord(
            audit.request_id,
            audit.tenant,
            audit.stream,
            time=audit.time,
            key_id=audit.key_id,
            safety_identifier=audit.safety_identifier,
            user_source=audit.user_source,
            tier=audit.tier,
            model=audit.model,
            decisions=list(audit.decisions),
            outcome=audit.outcome,
        )
        # One deepcopy call, so parts that are the same object (body["messages"]) stay shared.
        body, messages, documents, upstream_body, completion = copy.deepcopy(
            (self.body, self.messages, self.documents, self.upstream_body, self.completion)
        )
        return replace(
            self,
            body=body,
            audit=scratch,
            messages=messages,
            documents=documents,
            upstream_body=upstream_body,
            completion=completion,
            response_headers=dict(self.response_headers),
            shadow=True,
        )


@runtime_checkable
class Step(Protocol):
    """One stage of the request path: a ``name`` (its latency key in the audit record and its
    trace span) and ``async run(ctx)``, which returns None to go on or an :class:`Answer` to stop.

    The runner treats a step as a guard unless it sets ``guard = False`` (as the built-in steps
    that judge nothing do): a :class:`~seawall.errors.GuardUnavailableError` it raises follows
    ``fail_mode``, and anything it raises that is not a :class:`~seawall.errors.SeawallError` is a
    500 (``guard_error``), never an open door.

    A step may set ``control`` (default: its ``name``): the control whose mode (enforce or
    shadow) applies to it. In shadow mode it runs on :meth:`RequestContext.shadow_copy`.
    """

    name: str

    async def run(self, ctx: RequestContext) -> Answer | None: ...


class Guards:
    """The moderation check and the guard-failure policy every guard follows."""

    def __init__(
        self,
        service: ModerationService,
        check: Callable[[str], Awaitable[GuardVerdict]],
        *,
        fail_mode: FailMode,
        timeout_s: float | None,
    ) -> None:
        self.service = service
        #: One text's verdict (whole and sentence by sentence); replaceable.
        self.check = check
        self.fail_mode = fail_mode
        self.timeout_s = timeout_s

    async def guard(
        self, step: str, audit: AuditRecord, check: Awaitable[T], *, client_errors: bool = False
    ) -> T | None:
        """Await a guard's ``check``: its answer, or None when the guard cannot judge and fails open.

        Only :class:`GuardUnavailableError` (a backend that is down, slow or overloaded) follows
        ``fail_mode`` (:meth:`failure`). Anything else is a bug in seawall: logged, audited and
        answered 500, never let through unjudged; with ``client_errors``, a 4xx about what the
        client sent (an image that cannot be fetched) is passed on instead.
        """
        try:
            return await check
        except GuardUnavailableError as exc:
            self.failure(step, exc, audit)
            return None
        except Exception as exc:
            if client_errors and isinstance(exc, InvalidRequestError):
                raise
            raise self.error(step, exc, audit) from exc

    def failure(self, step: str, exc: GuardUnavailableError, audit: AuditRecord) -> None:
        """A guard failed: raise 503 guard_failed (closed) or record that the text went unjudged (open)."""
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("guard %s failed for %s: %s", step, audit.request_id, reason)
        if self.fail_mode == "open":
            audit.decide(step, "failed_open", error=type(exc).__name__)
            return
        audit.decide(step, "failed_closed", error=type(exc).__name__)
        raise GuardFailedError(f"the {step.replace('_', ' ')} guard failed; the request was not served")

    def error(self, step: str, exc: Exception, audit: AuditRecord) -> SeawallError:
        """A bug in a guard: logged and audited; the 500 to raise."""
        log.exception("guard %s failed with an error for %s", step, audit.request_id, exc_info=exc)
        audit.decide(step, "error", error=type(exc).__name__)
        return SeawallError("The server had an error while processing your request.", code="guard_error")

    async def in_time(self, check: Awaitable[T]) -> T:
        """``check``, or :class:`BackendTimeoutError` (a guard failure) after ``timeout_s``."""
        try:
            return await asyncio.wait_for(check, self.timeout_s)
        except TimeoutError as exc:
            raise BackendTimeoutError(
                f"the moderation check did not answer within {self.timeout_s} s"
            ) from exc

    async def judge(self, text: str) -> GuardVerdict:
        """One text through the moderation check, with a time limit."""
        return await self.in_time(self.check(text))

    async def judge_images(self, parts: list[dict[str, Any]]) -> GuardVerdict:
        """The request's image parts as one moderation item (fetched with the SSRF-safe loader)."""
        try:
            moderation = await self.in_time(self.service.moderate(parts))
        except SeawallError as exc:
            # Its param names a position in the parts gathered here, not in the client's request.
            if exc.param is not None and exc.param.startswith("input"):
                exc.param = None
            raise
        [result] = moderation.results
        categories = sorted(name for name, hit in result.categories.items() if hit)
        return GuardVerdict(
            allowed=not categories, categories=categories, scores=dict(result.category_scores)
        )


def control_of(step: Step) -> str:
    """The control a step belongs to (its ``control``, else its ``name``): the key of its mode."""
    return str(getattr(step, "control", step.name))


def shadow_entry(
    step: str,
    decisions: list[dict[str, Any]],
    *,
    error: SeawallError | None = None,
    status: int | None = None,
    changed: bool = False,
    outcome: str | None = None,
) -> dict[str, Any] | None:
    """What a control in shadow mode would have done, for the audit record's ``shadow`` list; None
    when it would have let the request through unchanged.

    ``would`` is the last of its decisions that is not a pass (refuse, filter, block, drop, flag,
    hold, answer, warn, failed_closed, ...), else ``refuse`` for an ``error`` it raised, ``hold`` for
    a 202 answer, ``answer`` for another answer (``status``), ``change`` for a changed context.
    """
    acted = [d for d in decisions if d.get("action") not in PASSED]
    if acted:
        would = str(acted[-1]["action"])
    elif error is not None:
        would = "refuse"
    elif status is not None:
        would = "hold" if status == 202 else "answer"
    elif changed:
        would = "change"
    else:
        return None
    entry: dict[str, Any] = {"step": step, "would": would}
    if error is not None:
        entry.update(code=error.code, status=error.status_code)
    if outcome is not None:
        entry["outcome"] = outcome
    entry["categories"] = sorted({str(name) for d in acted for name in d.get("categories") or []})
    entry["decisions"] = decisions
    return entry


class Runner:
    """Takes a request through steps, in order: each one timed under its name, guards under the
    guard-failure policy; the first :class:`Answer` ends the walk. A step whose control ``modes``
    puts in shadow only says what it would have done (:meth:`_shadow`)."""

    def __init__(self, guards: Guards, modes: Mapping[str, ControlMode] | None = None) -> None:
        self.guards = guards
        #: Control (step name, or its ``control``) -> enforce | shadow; enforce when absent.
        self.modes: dict[str, ControlMode] = dict(modes or {})

    def shadowed(self, step: Step) -> bool:
        return self.modes.get(control_of(step), "enforce") == "shadow"

    async def run(self, steps: Sequence[Step], ctx: RequestContext) -> Answer | None:
        for step in steps:
            with ctx.audit.step(step.name):
                if self.shadowed(step):
                    await self._shadow(step, ctx)
                    continue
                answer = await self._run(step, ctx)
            if answer is not None:
                return answer
        return None

    async def _shadow(self, step: Step, ctx: RequestContext) -> None:
        """Run ``step`` on a copy of ``ctx``; record what it would have done, change nothing else."""
        trial = ctx.shadow_copy()
        seen = len(trial.audit.decisions)
        answer: Answer | None = None
        error: SeawallError | None = None
        try:
            answer = await self._run(step, trial)
        except SeawallError as exc:
            error = exc
        except Exception as exc:  # a bug in a step that is not a guard: audited, and it stops nothing
            error = self.guards.error(step.name, exc, trial.audit)
        if error is not None:
            trial.audit.failed(error)
        changed = (trial.messages, trial.documents, trial.completion, trial.response_headers) != (
            ctx.messages,
            ctx.documents,
            ctx.completion,
            ctx.response_headers,
        )
        entry = shadow_entry(
            control_of(step),
            trial.audit.decisions[seen:],
            error=error,
            status=answer.status_code if answer is not None else None,
            changed=changed,
            outcome=trial.audit.outcome if trial.audit.outcome != ctx.audit.outcome else None,
        )
        if entry is not None:
            ctx.audit.shadow.append(entry)

    async def _run(self, step: Step, ctx: RequestContext) -> Answer | None:
        if not getattr(step, "guard", True):
            return await step.run(ctx)
        try:
            return await step.run(ctx)
        except GuardUnavailableError as exc:
            self.guards.failure(step.name, exc, ctx.audit)
            return None
        except SeawallError:
            raise
        except Exception as exc:
            raise self.guards.error(step.name, exc, ctx.audit) from exc


class RequestScope:
    """Settles the ledger and writes the audit record exactly once, on every exit.

    ``async with RequestScope(...)``: on leaving, a :class:`SeawallError` is recorded as the
    request's failure, the request is settled (not after any other exception: the record says
    ``error``), and the record is written. A stream hands the scope to its event generator
    (:meth:`hand_off`), which calls :meth:`finish` when the stream ends.
    """

    def __init__(
        self,
        ctx: RequestContext,
        settle: Callable[[RequestContext], Awaitable[None]],
        write: Callable[[AuditRecord], Awaitable[None] | None],
    ) -> None:
        self.ctx = ctx
        self._settle = settle
        self._write = write
        self._handed_off = False
        self._settled = False
        self._written = False

    async def __aenter__(self) -> RequestContext:
        return self.ctx

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None and self._handed_off:
            return
        try:
            if isinstance(exc, SeawallError):
                self.ctx.audit.failed(exc)
                exc.new_session = self.ctx.new_session
            if exc is None or isinstance(exc, SeawallError):
                await self.settle()
        finally:
            await self.write()

    def hand_off(self) -> None:
        """The request goes on past this block (a stream): :meth:`finish` ends it."""
        self._handed_off = True

    async def settle(self) -> None:
        if not self._settled:
            self._settled = True
            await self._settle(self.ctx)

    async def write(self) -> None:
        """Write the record (once); an awaitable writer (the audit buffer's commit) is awaited, so
        the answer leaves only after the record is durable."""
        if not self._written:
            self._written = True
            durable = self._write(self.ctx.audit)
            if durable is not None:
                await durable

    async def finish(self) -> None:
        """Settle and write (each once)."""
        try:
            await self.settle()
        finally:
            await self.write()


# ---------------------------------------------------------------------------------- your own steps


def available_steps() -> PluginGroup[Step]:
    """Every step registered in the ``seawall.steps`` entry-point group, by name (not yet imported)."""
    return load_group(STEP_ENTRY_POINTS, Step)


def load_extra_steps(
    path: list[Step], extra: Sequence[ExtraStep], gateway: Any, settings: Settings | None = None
) -> list[Step]:
    """``path`` with the steps ``extra`` names, each built by its entry point's factory (called with
    the gateway, and ``config=`` its ``plugins.<name>`` section of ``settings`` when it declares a
    ``settings_model``) and placed before or after a step of the path (or an extra step placed
    earlier)."""
    if not extra:
        return path
    registered = available_steps()
    steps = list(path)
    for wanted in extra:
        if wanted.name not in registered:
            known = ", ".join(sorted(registered)) or "none"
            raise ConfigurationError(
                f"gateway.extra_steps: no step {wanted.name!r} is registered; known: {known}"
            )
        step = registered[wanted.name].create(gateway, settings=settings)
        anchor = wanted.before or wanted.after
        names = [s.name for s in steps]
        if anchor not in names:
            raise ConfigurationError(
                f"gateway.extra_steps: {wanted.name!r} is placed by {anchor!r}, which is not on the "
                f"request path; the path is: {', '.join(names)}"
            )
        at = names.index(anchor) + (0 if wanted.before else 1)
        steps.insert(at, step)
    return steps


__all__ = [
    "PASSED",
    "STEP_ENTRY_POINTS",
    "Answer",
    "Guards",
    "RequestContext",
    "RequestScope",
    "Runner",
    "Step",
    "available_steps",
    "control_of",
    "load_extra_steps",
    "shadow_entry",
]
