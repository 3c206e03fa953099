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

Steps of your own come from the ``seawall.steps`` entry-point group (:func:`load_extra_steps`),
placed by ``gateway.extra_steps``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
from seawall.plugins import STEPS, PluginGroup, load_group
from seawall.service import ModerationService
from seawall.settings import ExtraStep, FailMode, Settings
from seawall.store.base import UserState

log = logging.getLogger("seawall.gateway")

T = TypeVar("T")

#: The entry-point group of steps of your own (``gateway.extra_steps`` places them).
STEP_ENTRY_POINTS = STEPS


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
    caller: Caller | None = None
    #: A session id minted for an anonymous client, to hand back (header and cookie).
    new_session: str | None = None
    #: ``HMAC(secret, tenant, user)``: the only form of the user's id past the identity step.
    safety_id: str = ""
    #: The user's escalation state, when warned or throttled.
    standing: UserState | None = None
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

    @property
    def decisions(self) -> list[dict[str, Any]]:
        return self.audit.decisions


@runtime_checkable
class Step(Protocol):
    """One stage of the request path: a ``name`` (its latency key in the audit record and its
    trace span) and ``async run(ctx)``, which returns None to go on or an :class:`Answer` to stop.

    The runner treats a step as a guard unless it sets ``guard = False`` (as the built-in steps
    that judge nothing do): a :class:`~seawall.errors.GuardUnavailableError` it raises follows
    ``fail_mode``, and anything it raises that is not a :class:`~seawall.errors.SeawallError` is a
    500 (``guard_error``), never an open door.
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
        moderation = await self.in_time(self.service.moderate(parts))
        [result] = moderation.results
        categories = sorted(name for name, hit in result.categories.items() if hit)
        return GuardVerdict(
            allowed=not categories, categories=categories, scores=dict(result.category_scores)
        )


class Runner:
    """Takes a request through steps, in order: each one timed under its name, guards under the
    guard-failure policy; the first :class:`Answer` ends the walk."""

    def __init__(self, guards: Guards) -> None:
        self.guards = guards

    async def run(self, steps: Sequence[Step], ctx: RequestContext) -> Answer | None:
        for step in steps:
            with ctx.audit.step(step.name):
                answer = await self._run(step, ctx)
            if answer is not None:
                return answer
        return None

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
        write: Callable[[AuditRecord], None],
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
            if exc is None or isinstance(exc, SeawallError):
                await self.settle()
        finally:
            self.write()

    def hand_off(self) -> None:
        """The request goes on past this block (a stream): :meth:`finish` ends it."""
        self._handed_off = True

    async def settle(self) -> None:
        if not self._settled:
            self._settled = True
            await self._settle(self.ctx)

    def write(self) -> None:
        if not self._written:
            self._written = True
            self._write(self.ctx.audit)

    async def finish(self) -> None:
        """Settle and write (each once)."""
        try:
            await self.settle()
        finally:
            self.write()


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
    "STEP_ENTRY_POINTS",
    "Answer",
    "Guards",
    "RequestContext",
    "RequestScope",
    "Runner",
    "Step",
    "available_steps",
    "load_extra_steps",
]
