"""The narrow hook the gateway's pipeline calls for human review, notices and metrics.

The pipeline (:mod:`seawall.gateway.pipeline`) owns the request path; it calls a
:class:`ReviewHook` at four points:

1. **limits step** — :meth:`ReviewHook.validate` checks ``seawall.review`` (domain, sources, notes,
   webhook) so a bad field is a 400 before the model is called;
2. **after output moderation** (plain requests) — ``decision = await hook.check(body, audit.decisions)``;
   when it is not None, ``pending = await hook.hold(decision, body, completion, ...)`` stores the
   draft and gives the body to send with HTTP :data:`PENDING_STATUS` (202) instead of the completion;
3. **streams, after input moderation and before the upstream** — the same ``check`` sees only the
   input decisions (the domain and the input's uncertain band). A stream that qualifies is not
   streamed: the gateway asks the upstream for a plain completion, moderates it, holds it and
   answers 202 with the pending body (JSON, not ``text/event-stream``). The answer's own
   uncertain band cannot hold a stream (its text is already on its way to the client);
4. **every response** — :meth:`headers` (the AI disclosure, the limitations); **every audit
   record** — :meth:`observe` (``/metrics``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from seawall.review.service import HoldDecision, ReviewService

#: HTTP status of the pending-review response.
PENDING_STATUS = 202
#: Response header with the AI disclosure.
DISCLOSURE_HEADER = "x-seawall-disclosure"
#: Response header listing the ids of the stated limitations (details at NOTICES_PATH).
LIMITATIONS_HEADER = "x-seawall-limitations"
#: Response header pointing at the notices endpoint.
NOTICES_HEADER = "x-seawall-notices"
#: Where the notices are served.
NOTICES_PATH = "/v1/seawall/notices"
#: Response header with the id of the held answer (on a pending-review response).
REVIEW_HEADER = "x-seawall-review-id"


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

    async def check(
        self, body: Mapping[str, Any], decisions: Iterable[Mapping[str, Any]]
    ) -> HoldDecision | None:
        """Whether to hold the answer, from the request and the moderation decisions so far."""
        if not self.service.settings.enabled:
            return None
        return await asyncio.to_thread(self.service.should_hold, body, list(decisions))

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


__all__ = [
    "DISCLOSURE_HEADER",
    "LIMITATIONS_HEADER",
    "NOTICES_HEADER",
    "NOTICES_PATH",
    "PENDING_STATUS",
    "REVIEW_HEADER",
    "ReviewHook",
]
