"""The narrow hook the gateway's pipeline calls for human review, notices and metrics.

The pipeline (:mod:`seawall.gateway.pipeline`) owns the request path; it calls a
:class:`ReviewHook` at four points:

1. **limits step** — :meth:`ReviewHook.validate` checks ``seawall.review`` (domain, sources, notes,
   webhook) so a bad field is a 400 before the model is called;
2. **after output moderation** (plain requests) — ``decision = await hook.check(body, audit.decisions,
   hook.context(headers, key_id=..., tier=...))`` (the hold rules, :mod:`seawall.review.rules`);
   when it is not None, ``pending = await hook.hold(decision, body, completion, ...)`` stores the
   draft, and ``await hook.respond(pending, hook.mode(headers))`` gives what the client gets
   instead of the completion (:mod:`seawall.review.responses`): a placeholder completion (default),
   the pending body with HTTP :data:`PENDING_STATUS` (202, ``accepted``), or the reviewer's decision
   when it comes within ``review.wait_s`` (``wait``: :meth:`ReviewHook.wait_end`, which also ends
   when the client hangs up). :meth:`ReviewHook.mode` is checked in the limits step too, so a bad
   ``x-seawall-review`` header is a 400 before the model is called;
3. **streams, after input moderation and before the upstream** — the same ``check`` sees only the
   input decisions (the domain and the input's uncertain band). A stream that qualifies is not
   streamed from the upstream: the gateway asks it for a plain completion, moderates it, holds it
   and sends what ``respond`` gave as a stream (placeholder) or as the 202 JSON body (accepted);
   in wait mode the stream waits itself (:class:`StreamWait`: the role chunk at once, keepalive
   comments, then the decision or the placeholder). The answer's own uncertain band cannot hold a
   stream (its text is already on its way to the client);
4. **every response** — :meth:`headers` (the AI disclosure, the limitations); **every audit
   record** — :meth:`observe` (``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from seawall.errors import InvalidRequestError
from seawall.review.responses import (
    KEEPALIVE,
    PENDING_STATUS,
    REVIEW_HEADER,
    HeldResponse,
    accepted_response,
    decided_response,
    placeholder_response,
    requested_mode,
)
from seawall.review.rules import SCAN_HEADER, HoldContext
from seawall.review.service import HoldDecision, ReviewService, final_completion
from seawall.review.settings import HoldResponse
from seawall.store.base import ReviewItem

log = logging.getLogger("seawall.review")
#: Response header with the AI disclosure.
DISCLOSURE_HEADER = "x-seawall-disclosure"
#: Response header listing the ids of the stated limitations (details at NOTICES_PATH).
LIMITATIONS_HEADER = "x-seawall-limitations"
#: Response header pointing at the notices endpoint.
NOTICES_HEADER = "x-seawall-notices"
#: Where the notices are served.
NOTICES_PATH = "/v1/seawall/notices"


#: How often a waiting plain request asks whether its client is still there (wait mode).
DISCONNECT_CHECK_S = 0.25
#: How a wait for a decision ends besides the item's status (approved, edited, rejected).
TIMEOUT = "timeout"
DISCONNECTED = "client_disconnected"

#: Whether the client has hung up (Starlette's ``Request.is_disconnected``).
Disconnected = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class WaitEnd:
    """How a wait for a reviewer's decision ended (wait mode)."""

    #: What the client gets: the decision as a completion, or the placeholder.
    response: HeldResponse
    #: ``approved``, ``edited``, ``rejected``, :data:`TIMEOUT` or :data:`DISCONNECTED` (the audit
    #: record's ``review_wait`` decision).
    outcome: str
    waited_ms: float


async def _hung_up(disconnected: Disconnected) -> None:
    """Return when the client has hung up; if that cannot be asked, never (the wait runs its course)."""
    try:
        while not await disconnected():
            await asyncio.sleep(DISCONNECT_CHECK_S)
    except Exception as exc:  # not knowing is not a hang-up
        log.warning("cannot tell whether a waiting client is still there: %s", exc)
        await asyncio.Event().wait()


def scan_asks_hold(headers: Mapping[str, str]) -> bool:
    """Whether the request asks for holds with :data:`SCAN_HEADER` (``hold``; ``skip`` or no header:
    no); 400 ``invalid_scan_review`` for any other value. Only scan traffic (``review.scan_keys``)
    reads it: other requests are held by the rules alone."""
    raw = next((value for key, value in headers.items() if key.lower() == SCAN_HEADER), None)
    if raw is None:
        return False
    wanted = raw.strip().lower()
    if wanted not in ("hold", "skip"):
        raise InvalidRequestError(
            f"the {SCAN_HEADER} header must be hold or skip; got {raw[:40]!r}",
            param=SCAN_HEADER,
            code="invalid_scan_review",
        )
    return wanted == "hold"


class ReviewHook:
    """What the gateway calls; build with the app's :class:`ReviewService`."""

    def __init__(self, service: ReviewService) -> None:
        self.service = service
        notices = service.settings.notices
        self._headers: dict[str, str] = {}
        if notices.enabled:
            self._headers = {
                DISCLOSURE_HEADER: notices.disclosure,
                LIMITATIONS_HEADER: ", ".join(notice.id for notice in notices.limitations),
                NOTICES_HEADER: NOTICES_PATH,
            }

    @property
    def enabled(self) -> bool:
        """Whether answers are held at all (``review.enabled``): off, the gateway leaves its review
        steps out (the hook still validates the ``seawall.review`` field, and serves the notices)."""
        return self.service.settings.enabled

    def validate(self, body: Mapping[str, Any]) -> None:
        """400 for a malformed ``seawall.review`` field (cheap; no store, no model)."""
        self.service.review_request(body)

    def mode(self, headers: Mapping[str, str]) -> HoldResponse:
        """The hold response the request asks for (``x-seawall-review``), else ``review.hold_response``;
        400 ``invalid_review_mode`` for an unknown value (and for a bad :data:`SCAN_HEADER`)."""
        scan_asks_hold(headers)
        return requested_mode(headers, self.service.settings.hold_response)

    def context(
        self, headers: Mapping[str, str], *, key_id: str | None = None, tier: str | None = None
    ) -> HoldContext:
        """What the hold rules need to know of the request beyond its body: the user's tier, and
        whether it is scan traffic (an API key in ``review.scan_keys``) that asked for holds."""
        scan = key_id is not None and key_id in self.service.settings.scan_keys
        return HoldContext(tier=tier, scan=scan, scan_asks_hold=scan and scan_asks_hold(headers))

    async def respond(self, pending: Mapping[str, Any], mode: HoldResponse) -> HeldResponse:
        """What the client gets for the held answer ``pending`` (the body :meth:`hold` returned):
        the 202 body (accepted), the placeholder completion, or in wait mode the decision if one
        comes within ``review.wait_s`` (:meth:`wait_end` also says how the wait ended)."""
        if mode == "accepted":
            return accepted_response(pending)
        if mode == "wait":
            return (await self.wait_end(pending)).response
        return self.placeholder(pending)

    def placeholder(self, pending: Mapping[str, Any]) -> HeldResponse:
        """The placeholder completion for the held answer ``pending``."""
        return placeholder_response(pending, self.service.settings)

    async def wait_end(
        self, pending: Mapping[str, Any], *, disconnected: Disconnected | None = None
    ) -> WaitEnd:
        """Wait (wait mode) for the decision on the held answer ``pending``: the decision as an
        ordinary completion, or the placeholder when none came within ``review.wait_s``, or, when
        ``disconnected`` (the route's ``request.is_disconnected``, asked every
        :data:`DISCONNECT_CHECK_S`) says the client hung up first, the wait ends there. The review
        item stays in the queue either way: a reviewer may still decide it, for the poll URL."""
        began = time.perf_counter()
        waiting = asyncio.ensure_future(self.wait(pending["review_id"]))
        watching = asyncio.ensure_future(_hung_up(disconnected)) if disconnected is not None else None
        try:
            await asyncio.wait([t for t in (waiting, watching) if t is not None], return_when=FIRST_COMPLETED)
        finally:  # also when this request is cancelled: nothing is left waiting
            for task in (waiting, watching):
                if task is not None and not task.done():
                    task.cancel()
        waited_ms = round((time.perf_counter() - began) * 1000, 3)
        if not waiting.done() or waiting.cancelled():  # the client hung up first
            with contextlib.suppress(asyncio.CancelledError):
                await waiting  # its registration is gone before the audit record is written
            return WaitEnd(self.placeholder(pending), DISCONNECTED, waited_ms)
        item = waiting.result()
        if item is None:
            return WaitEnd(self.placeholder(pending), TIMEOUT, waited_ms)
        response = decided_response(item, final_completion(item), pending, self.service.settings)
        return WaitEnd(response, item.status, waited_ms)

    def stream_wait(self, pending: Mapping[str, Any]) -> StreamWait:
        """A held stream's wait (wait mode), run by the stream itself: see :class:`StreamWait`."""
        return StreamWait(self, pending)

    async def wait(self, review_id: str) -> ReviewItem | None:
        """The decided item, or None when no decision came within ``review.wait_s`` (or the store
        cannot be read: the answer stays held and the client gets the placeholder)."""
        settings = self.service.settings

        async def load() -> ReviewItem | None:
            return await asyncio.to_thread(self.service.store.get_review, review_id)

        try:
            return await self.service.waiters.wait(
                review_id, load, timeout_s=settings.wait_s, poll_s=settings.wait_poll_s
            )
        except Exception as exc:  # the answer is held either way; the client gets the placeholder
            log.warning("cannot wait for the decision on %s: %s", review_id, exc)
            return None

    async def check(
        self,
        body: Mapping[str, Any],
        decisions: Iterable[Mapping[str, Any]],
        context: HoldContext | None = None,
    ) -> HoldDecision | None:
        """Whether to hold the answer, from the request, the moderation decisions so far and the
        request's :meth:`context`."""
        if not self.service.settings.enabled:
            return None
        return await asyncio.to_thread(self.service.should_hold, body, list(decisions), context)

    async def hold(
        self,
        decision: HoldDecision,
        body: Mapping[str, Any],
        completion: Mapping[str, Any],
        *,
        request_id: str,
        tenant: str,
        safety_id: str | None,
    ) -> dict[str, Any]:
        """Store the draft for review; the pending body to send with :data:`PENDING_STATUS`."""
        return await asyncio.to_thread(
            self.service.hold,
            decision,
            body,
            completion,
            request_id=request_id,
            tenant=tenant,
            safety_id=safety_id,
        )

    def headers(self) -> dict[str, str]:
        """Headers for every gateway response: the AI disclosure and the limitations' ids."""
        return dict(self._headers)

    def observe(self, record: Mapping[str, Any]) -> None:
        """Count one gateway request in /metrics, from its audit record."""
        self.service.metrics.observe_request(record)


class StreamWait:
    """A held stream's wait for the decision (wait mode), run by the stream's event generator: the
    role chunk goes out first, then :meth:`keepalives` yields a :data:`KEEPALIVE` comment every
    ``review.wait_keepalive_s`` until the wait ends, and :attr:`end` says how it ended. A client
    that hangs up cancels the generator; its cleanup calls :meth:`abandon`."""

    def __init__(self, hook: ReviewHook, pending: Mapping[str, Any]) -> None:
        self.hook = hook
        self.pending = pending
        self.end: WaitEnd | None = None
        self._task: asyncio.Future[WaitEnd] | None = None
        self._began = 0.0

    async def keepalives(self) -> AsyncIterator[bytes]:
        """Start the wait; a keepalive comment each time ``review.wait_keepalive_s`` passes without
        its end. On return :attr:`end` is set."""
        every_s = self.hook.service.settings.wait_keepalive_s
        self._began = time.perf_counter()
        self._task = asyncio.ensure_future(self.hook.wait_end(self.pending))
        while True:
            done, _ = await asyncio.wait([self._task], timeout=every_s)
            if done:
                self.end = self._task.result()
                return
            yield KEEPALIVE

    def decided(self) -> WaitEnd:
        """How the wait ended, once :meth:`keepalives` has returned."""
        if self.end is None:
            raise RuntimeError("StreamWait.decided() before keepalives() returned")
        return self.end

    def abandon(self) -> WaitEnd | None:
        """The stream ended before the wait did (the client hung up, or stopped reading): stop
        waiting (the item stays in the queue) and say so; None when the wait had already ended or
        never started. Synchronous, for the generator's cleanup while it is being cancelled."""
        if self.end is not None or self._task is None:
            return None
        self._task.cancel()
        waited_ms = round((time.perf_counter() - self._began) * 1000, 3)
        self.end = WaitEnd(self.hook.placeholder(self.pending), DISCONNECTED, waited_ms)
        return self.end


__all__ = [
    "DISCLOSURE_HEADER",
    "DISCONNECTED",
    "LIMITATIONS_HEADER",
    "NOTICES_HEADER",
    "NOTICES_PATH",
    "PENDING_STATUS",
    "REVIEW_HEADER",
    "SCAN_HEADER",
    "TIMEOUT",
    "Disconnected",
    "HeldResponse",
    "ReviewHook",
    "StreamWait",
    "WaitEnd",
    "scan_asks_hold",
]
