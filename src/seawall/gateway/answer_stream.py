"""The steps a streamed answer passes through after the upstream: the stream guard on its text,
then the judgement of its tool calls at the end.

A plain answer is judged whole by the ``output_moderation`` step of the request path; a stream
cannot be, so its steps watch it go by. A :class:`StreamStep` is built once with the gateway (a
control that is off is a step left out, as on the plain path) and opens one :class:`StreamWatch`
per answer, which

* passes the answer's text on (:meth:`StreamWatch.text`): only what it releases goes further,
  and a :class:`~seawall.gateway.stream_guard.Blocked` marker stops the stream;
* judges what the stream holds back to its end (:meth:`StreamWatch.at_end`: the tool calls),
  returning the error to send instead;
* writes its decision into the audit record when the stream is over, however it ended
  (:meth:`StreamWatch.close`).

A step whose control (``output_moderation``) is in shadow mode watches without stopping anything:
the text goes out as it comes and what it would have done is a ``shadow`` entry of the record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from seawall.errors import ContentPolicyError, GuardFailedError, SeawallError
from seawall.gateway.audit import AuditRecord, decision
from seawall.gateway.runner import Guards, RequestContext, shadow_entry
from seawall.gateway.steps import max_scores
from seawall.gateway.stream_guard import (
    GUARD_FAILED,
    Blocked,
    GuardVerdict,
    StreamGuard,
    StreamGuardSettings,
    guard_stream,
    watch_stream,
)


class StreamWatch(Protocol):
    """One answer's watch by one :class:`StreamStep`."""

    def text(self, deltas: AsyncIterator[str]) -> AsyncIterator[str | Blocked]:
        """The text that may go on, ending with a :class:`Blocked` marker if the stream is stopped."""
        ...

    async def at_end(self, tool_calls: list[Any]) -> SeawallError | None:
        """After the last text: the error to send instead of the held tool calls, or None."""
        ...

    def close(self) -> None:
        """The stream is over (finished, stopped or broken off): record the decision."""
        ...


class StreamStep(Protocol):
    """A stage of a streamed answer: a ``name`` (its decisions' step in the audit record), the
    ``control`` whose mode applies to it, and :meth:`watch`, which opens one answer's watch."""

    name: str
    control: str

    def watch(self, ctx: RequestContext, *, shadow: bool) -> StreamWatch: ...


def blocked_error(verdict: GuardVerdict) -> SeawallError:
    """The error a stream ends with when a guard stopped it."""
    if verdict.reason == GUARD_FAILED:
        return GuardFailedError("the output moderation guard failed; the answer was stopped")
    return ContentPolicyError(
        "The answer was stopped by the content policy; flagged: " + ", ".join(verdict.categories)
    )


# ---------------------------------------------------------------------- the stream guard


class StreamOutputModeration:
    """The stream guard: text goes on only once a moderation scan cleared it
    (:class:`~seawall.gateway.stream_guard.StreamGuard`)."""

    name = "output_moderation"
    control = "output_moderation"

    def __init__(self, guards: Guards, settings: StreamGuardSettings) -> None:
        self.guards = guards
        self.settings = settings

    def watch(self, ctx: RequestContext, *, shadow: bool) -> StreamWatch:
        # guards.check is read per answer: tests and callers may replace it on a running gateway.
        return _GuardWatch(StreamGuard(self.guards.check, self.settings), ctx.audit, shadow=shadow)


class _GuardWatch:
    def __init__(self, guard: StreamGuard, audit: AuditRecord, *, shadow: bool) -> None:
        self.guard = guard
        self.audit = audit
        self.shadow = shadow

    def text(self, deltas: AsyncIterator[str]) -> AsyncIterator[str | Blocked]:
        if self.shadow:  # everything goes out as it comes; the guard only says where it would cut
            return watch_stream(deltas, self.guard)
        return guard_stream(deltas, self.guard)

    async def at_end(self, tool_calls: list[Any]) -> SeawallError | None:
        return None

    def close(self) -> None:
        """The guard's decision; in shadow mode, what it would have done (a ``shadow`` entry)."""
        guard, audit = self.guard, self.audit
        events = guard.events
        scores = max_scores(e.verdict.scores for e in events)
        audit.latency_ms[StreamOutputModeration.name] = round(sum(e.latency_s for e in events) * 1000, 3)
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
        judged = decision(
            StreamOutputModeration.name,
            action,
            categories,
            scores,
            scans=len(events),
            released_chars=len(guard.released_text),
            received_chars=guard.received_chars,
            **extra,
        )
        if not self.shadow:
            audit.decisions.append(judged)
            return
        # released_chars: what the guard would have let out before it cut the stream.
        error = blocked_error(verdict) if verdict is not None else None
        entry = shadow_entry(StreamOutputModeration.name, [judged], error=error)
        if entry is not None:
            audit.shadow.append(entry)


# ---------------------------------------------------------------------- tool calls


class StreamToolCallModeration:
    """A stream's tool calls are held to its end and released only once their arguments passed
    moderation; otherwise the stream ends with a content-policy error."""

    name = "tool_call_moderation"
    control = "output_moderation"

    def __init__(self, guards: Guards) -> None:
        self.guards = guards

    def watch(self, ctx: RequestContext, *, shadow: bool) -> StreamWatch:
        return _ToolCallWatch(self.guards, ctx.audit, shadow=shadow)


class _ToolCallWatch:
    def __init__(self, guards: Guards, audit: AuditRecord, *, shadow: bool) -> None:
        self.guards = guards
        self.audit = audit
        self.shadow = shadow

    def text(self, deltas: AsyncIterator[str]) -> AsyncIterator[str | Blocked]:
        return deltas

    async def at_end(self, tool_calls: list[Any]) -> SeawallError | None:
        """With the control in shadow mode the verdict goes to the record's ``shadow`` list and the
        calls are released whatever it says."""
        arguments = "\n".join(
            str(call.get("function", {}).get("arguments") or "")
            for call in tool_calls
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        ).strip()
        if not arguments:
            return None
        with self.audit.step(StreamToolCallModeration.name):
            if not self.shadow:
                return await self._judge(arguments, self.audit)
            scratch = AuditRecord(self.audit.request_id, self.audit.tenant, stream=True)
            try:
                refused = await self._judge(arguments, scratch)
            except SeawallError as exc:  # a bug in the guard (guard_error): audited, stops nothing
                refused = exc
        entry = shadow_entry(StreamToolCallModeration.name, scratch.decisions, error=refused)
        if entry is not None:
            self.audit.shadow.append(entry)
        return None

    def close(self) -> None:
        return None

    async def _judge(self, arguments: str, audit: AuditRecord) -> SeawallError | None:
        name = StreamToolCallModeration.name
        try:
            verdict = await self.guards.guard(name, audit, self.guards.judge(arguments))
        except GuardFailedError as failed:
            return failed
        if verdict is None:
            return None
        if verdict.allowed:
            audit.decide(name, "allow", [], verdict.scores)
            return None
        audit.decide(name, "block", verdict.categories, verdict.scores)
        return ContentPolicyError(
            "The answer's tool call was stopped by the content policy; flagged: "
            + ", ".join(verdict.categories)
        )


__all__ = [
    "StreamOutputModeration",
    "StreamStep",
    "StreamToolCallModeration",
    "StreamWatch",
    "blocked_error",
]
