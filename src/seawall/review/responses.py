"""What a client gets for an answer held for review, and how a request waits for its decision.

Three shapes (``review.hold_response``, or the request's :data:`MODE_HEADER`):

* **placeholder** (default) — an ordinary ``chat.completion`` whose one choice's message is
  ``review.placeholder_message`` and whose ``finish_reason`` is ``stop``, so an app using the
  OpenAI SDK unchanged reads ``r.choices[0].message.content`` and shows it. ``stop``, not
  ``content_filter``: nothing was filtered, the message is complete and meant for the user, and some
  clients treat ``content_filter`` as an error (LangChain's Azure client raises on it). What
  happened is in the body's ``seawall`` field (``{"review": {"id", "status": "pending",
  "poll_url", "reasons"}}``, the SDK's ``model_extra``) and in the headers :data:`REVIEW_HEADER`,
  :data:`STATUS_HEADER` and :data:`POLL_URL_HEADER`. A stream gets the same as a valid stream.
* **accepted** — HTTP 202 with the pending-review body (``object: chat.completion.pending``,
  ``choices: []``, ``review_id``, ``poll_url``), JSON for streams too, plus ``Location``: the
  protocol for apps that poll.
* **wait** — the request waits up to ``review.wait_s`` for a reviewer (:class:`DecisionWaiters`):
  approved or edited, the client gets that answer as an ordinary completion; rejected, the
  ``review.rejected_message`` with ``finish_reason: content_filter`` (as a filtered answer gets);
  no decision in time, the placeholder. The ``seawall`` field and headers say which. A stream
  gets its role chunk at once (headers: status ``pending``), a :data:`KEEPALIVE` comment every
  ``review.wait_keepalive_s``, then the answer as content chunks whose ``seawall`` field carries
  the decision. A client that hangs up ends the wait (the item stays in the queue).

The draft is never in any of these bodies until a reviewer released it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from seawall.errors import InvalidRequestError
from seawall.review.settings import HOLD_RESPONSES, HoldResponse, ReviewSettings
from seawall.store.base import ReviewItem

log = logging.getLogger("seawall.review")

#: Request header with which a request chooses its hold response (placeholder, accepted, wait).
MODE_HEADER = "x-seawall-review"
#: Response header with the id of the held answer.
REVIEW_HEADER = "x-seawall-review-id"
#: Response header with the review's status (pending, approved, edited, rejected).
STATUS_HEADER = "x-seawall-review-status"
#: Response header with the path where the held answer is polled.
POLL_URL_HEADER = "x-seawall-poll-url"
#: HTTP status of the pending-review (accepted) response.
PENDING_STATUS = 202
#: Where clients poll a held answer (``{id}`` replaced).
POLL_PATH = "/v1/seawall/reviews/{id}"
#: The extension field of a response that carries seawall's own fields.
EXTENSION_FIELD = "seawall"
#: The SSE comment a waiting stream (wait mode) sends every ``review.wait_keepalive_s`` until the
#: decision comes: clients skip comments (the OpenAI SDK does), proxies see the connection in use.
KEEPALIVE = b": waiting for review\n\n"


def requested_mode(headers: Mapping[str, str], default: HoldResponse) -> HoldResponse:
    """The hold response a request asks for with :data:`MODE_HEADER`, else ``default``; 400 for a
    value that is not one of :data:`~seawall.review.settings.HOLD_RESPONSES`."""
    raw = next((value for key, value in headers.items() if key.lower() == MODE_HEADER), None)
    if raw is None:
        return default
    wanted = raw.strip().lower()
    for mode in HOLD_RESPONSES:
        if wanted == mode:
            return mode
    raise InvalidRequestError(
        f"the {MODE_HEADER} header must be one of {', '.join(HOLD_RESPONSES)}; got {raw[:40]!r}",
        param=MODE_HEADER,
        code="invalid_review_mode",
    )


@dataclass(frozen=True)
class HeldResponse:
    """What the client gets for a held answer: a body, its HTTP status, and headers to add."""

    body: dict[str, Any]
    status_code: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def _headers(review_id: str, status: str) -> dict[str, str]:
    return {
        REVIEW_HEADER: review_id,
        STATUS_HEADER: status,
        POLL_URL_HEADER: POLL_PATH.format(id=review_id),
    }


def accepted_response(pending: Mapping[str, Any]) -> HeldResponse:
    """The 202 pending-review protocol, unchanged (plus ``Location``, the poll URL)."""
    headers = {**_headers(pending["review_id"], "pending"), "location": pending["poll_url"]}
    return HeldResponse(dict(pending), PENDING_STATUS, headers)


def _completion(
    pending_or_draft: Mapping[str, Any], text: str, finish_reason: str, review: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": pending_or_draft["id"],
        "object": "chat.completion",
        "created": pending_or_draft["created"],
        "model": pending_or_draft.get("model") or "seawall",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        EXTENSION_FIELD: {"review": review},
    }


def placeholder_response(pending: Mapping[str, Any], settings: ReviewSettings) -> HeldResponse:
    """An ordinary completion that tells the user a person is checking the answer."""
    review_id = pending["review_id"]
    review = {
        "id": review_id,
        "status": "pending",
        "poll_url": pending["poll_url"],
        "reasons": list(pending.get("reasons") or []),
    }
    body = _completion(pending, settings.placeholder_message, "stop", review)
    return HeldResponse(body, 200, _headers(review_id, "pending"))


def decided_response(
    item: ReviewItem,
    completion: Mapping[str, Any] | None,
    pending: Mapping[str, Any],
    settings: ReviewSettings,
) -> HeldResponse:
    """A decided review as an ordinary completion: the released ``completion`` (approved or edited),
    or the rejection message (``finish_reason: content_filter``)."""
    review: dict[str, Any] = {"id": item.id, "status": item.status, "poll_url": pending["poll_url"]}
    headers = _headers(item.id, item.status)
    if item.status == "rejected" or completion is None:
        review["reason"] = item.reason
        body = _completion(pending, settings.rejected_message, "content_filter", review)
        return HeldResponse(body, 200, headers)
    return HeldResponse({**completion, EXTENSION_FIELD: {"review": review}}, 200, headers)


class DecisionWaiters:
    """Wakes the requests waiting for a review's decision.

    A decision made in this process (:meth:`notify`, from any thread: the review routes and the
    desk decide in worker threads) ends the wait at once; a decision made by another replica is
    seen when the wait next asks the store, every ``poll_s``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def notify(self, review_id: str) -> None:
        """A review was decided: wake whoever waits for it (safe to call from any thread)."""
        with self._lock:
            waiting = list(self._waiting.get(review_id, ()))
        for loop, event in waiting:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits there
                loop.call_soon_threadsafe(event.set)

    def waiting(self, review_id: str) -> int:
        """How many requests wait for ``review_id`` (for tests and metrics)."""
        with self._lock:
            return len(self._waiting.get(review_id, ()))

    def total(self) -> int:
        """How many requests wait for a decision in this process (``seawall_review_waiting``)."""
        with self._lock:
            return sum(len(entries) for entries in self._waiting.values())

    @contextlib.contextmanager
    def _register(self, review_id: str) -> Iterator[asyncio.Event]:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiting.setdefault(review_id, []).append(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                entries = self._waiting.get(review_id, [])
                entries.remove(entry)
                if not entries:
                    self._waiting.pop(review_id, None)

    async def wait(
        self,
        review_id: str,
        load: Callable[[], Awaitable[ReviewItem | None]],
        *,
        timeout_s: float,
        poll_s: float,
    ) -> ReviewItem | None:
        """The decided item, or None when no decision came within ``timeout_s``. ``load`` reads the
        item from the store; it is called at the start, on each wake-up and every ``poll_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        with self._register(review_id) as decided:
            while True:
                decided.clear()  # before the read: a decision during the read wakes the next wait
                item = await load()
                if item is not None and item.status != "pending":
                    return item
                left = deadline - loop.time()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(decided.wait(), min(poll_s, left))


__all__ = [
    "EXTENSION_FIELD",
    "KEEPALIVE",
    "MODE_HEADER",
    "PENDING_STATUS",
    "POLL_PATH",
    "POLL_URL_HEADER",
    "REVIEW_HEADER",
    "STATUS_HEADER",
    "DecisionWaiters",
    "HeldResponse",
    "accepted_response",
    "decided_response",
    "placeholder_response",
    "requested_mode",
]
