"""The Responses API (``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``) on the
gateway's one request path.

A Responses request is not a second pipeline: :class:`ResponsesAPI` translates it into a chat
completions body (:mod:`seawall.gateway.responses_wire`) and hands that to
:meth:`Gateway.chat <seawall.gateway.pipeline.Gateway.chat>` or
:meth:`Gateway.stream <seawall.gateway.pipeline.Gateway.stream>`, so identity, standing, rate
limits, input limits, input moderation, untrusted content, routing (knowledge base, topics), the
prompt policy, the output token cap, the upstream call, output moderation (the stream guard on
streamed text), review and the audit record are the chat path's, step for step. Two differences:

* **Input moderation** judges every input item that is not the assistant's: user messages as on
  chat completions, and also the request's ``instructions`` and system/developer items (on chat
  completions those are the app's own prompt; here any caller sends them). ``function_call_output``
  items become ``tool`` messages, judged as untrusted content (prompt injection, jailbreak) and
  fenced in the prompt, as tool messages are.
* **What comes back** is a Response object (plain), or the typed events of a streamed response
  (:class:`~seawall.gateway.responses_wire.EventWriter`) made from the chunks the stream guard
  released: no text reaches the client before the guard cleared it. A refusal before the answer is
  the usual HTTP error with OpenAI's error body (the SDK raises its typed error: 400
  ``BadRequestError``, 403 ``PermissionDeniedError``, ...); a stream the guard cuts ends with
  ``response.failed`` and an ``error`` event the SDK raises as ``APIError``. An answer held for
  review is a Response whose message is the placeholder (``review.hold_response: placeholder``), or
  (``accepted``) a 202 whose body is a Response with ``status: queued``, no output, and the review
  (``id``, ``poll_url``, ``reasons``, ``message``) in its ``seawall`` field, the review headers and
  ``Location`` (a stream: ``response.created`` and ``response.queued``, then the end). The app
  polls ``poll_url`` or ``GET /v1/responses/{id}`` for the decision (see *Responses held for review*).
* **Errors name the Responses request's fields.** The chat path names what it checks in chat
  terms (``messages[3]``, ``max_completion_tokens``); the translation keeps where each part of the
  chat body came from (:class:`~seawall.gateway.responses_wire.ParamMap`), so the error's
  ``param`` and message say ``input[2]``, ``instructions``, ``max_output_tokens`` instead.

**Kept responses.** Unless the request says ``store: false`` (or ``gateway.responses.store`` is
off), a completed or incomplete response is kept in the store (:class:`~seawall.store.base.
ResponseStore`) with the conversation it answered, for ``gateway.responses.retention_days``; a
later request continues it with ``previous_response_id`` (its input items and output come before
the new input; its ``instructions`` do not carry over, as on OpenAI's API). Only the same tenant and
app key read a kept response back: any other caller gets 404, as for an id that was never kept.
A failed response (cut by the guard, an upstream error) is not kept.

**Responses held for review.** A response held for review is kept as it was answered, unless
``store: false``: under ``hold_response: accepted`` a queued Response (no output), under
``placeholder`` (and ``wait`` when no decision came in time) a completed Response whose message is
the placeholder and whose ``seawall.review.status`` is ``pending``. Either follows its review: ``GET
/v1/responses/{id}`` asks the review queue each time until a reviewer has decided. Pending, it is
the Response the client got; approved or edited, the completed Response whose output is the
released answer; rejected, an ``incomplete`` Response (``incomplete_details.reason:
content_filter``) whose message is ``review.rejected_message``, as a rejected answer is in wait
mode. The decided Response keeps the id and ``created_at``, replaces the held one in the store (one
store read each time from then on), and ``seawall.review`` gives the decision (``status``, and the
rejection's ``reason``). When the review is not in the queue (any more), a queued Response has
``failed`` (``error.code: review_not_found``: there is no answer to give) and a placeholder stays
the placeholder with ``seawall.review.status: not_found``.

``previous_response_id`` naming a queued response is a 409 ``previous_response_queued`` until its
review is decided (the app chose to wait for the answer; there is no assistant turn yet); then it
continues the decided Response (a failed one cannot be continued: 400
``previous_response_failed``). A placeholder response can be continued at once: placeholder mode
is for apps that use the SDK unchanged, whose users reply to what they see, and what they saw is
the placeholder, so it is the assistant's turn in the conversation the model gets (never the
draft: it has not been released). Once the review is decided, continuations carry the decided
answer instead, also those of a conversation continued while the review was pending (the kept
conversation marks the placeholder with its review, :data:`HELD_ITEM`, and each continuation puts
the decided answer in its place). With ``store: false`` nothing is kept beyond the review item
itself: ``GET /v1/responses/{id}`` is a 404, as for every response that was not stored, and the app
polls ``seawall.review.poll_url``, which the review queue answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from seawall.clock import utc_now
from seawall.errors import ConflictError, InvalidRequestError, NotFoundError, SeawallError
from seawall.gateway.access import Caller
from seawall.gateway.identity import header_value
from seawall.gateway.pipeline import Gateway, GatewayResponse
from seawall.gateway.responses_wire import (
    EXTENSION_FIELD,
    EventWriter,
    ParamMap,
    chat_body,
    parse_request,
    queued_response,
    response_id,
    response_object,
    skeleton,
)
from seawall.gateway.sse import ClientTooSlowError, aclose
from seawall.review.gateway_hook import Disconnected
from seawall.review.responses import PENDING_STATUS, POLL_PATH, decided_response
from seawall.review.service import final_completion
from seawall.settings import ResponsesSettings
from seawall.store.base import ResponseStore, ReviewItem, StoredResponse

log = logging.getLogger("seawall.gateway")

#: The roles input moderation judges on a Responses request: every input item but the assistant's.
RESPONSES_JUDGED_ROLES = frozenset({"user", "system", "developer"})
#: Response statuses that are continued (a failed response is not; a queued one once decided).
KEPT_STATUSES = frozenset({"completed", "incomplete"})
#: Response statuses that are kept when they are answered: the continued ones, and a response
#: queued for review (``hold_response: accepted``), which retrieval settles once it is decided.
STORED_STATUSES = KEPT_STATUSES | {"queued"}
#: The ``error.code`` of a queued response whose review is not in the review queue.
REVIEW_NOT_FOUND = "review_not_found"
#: The key that marks a kept conversation item standing for an answer held for review (the
#: placeholder the user saw) with its review's id, so that a later continuation puts the decided
#: answer in its place. Only the gateway writes it: a request's own items lose it.
HELD_ITEM = "seawall_review_id"


class ResponsesAPI:
    """The Responses API over one :class:`~seawall.gateway.pipeline.Gateway` and its store."""

    def __init__(self, gateway: Gateway, settings: ResponsesSettings, store: ResponseStore | None) -> None:
        self.gateway = gateway
        self.settings = settings
        self.store = store

    # ------------------------------------------------------------------ create

    async def create(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        *,
        request_id: str,
        client_address: str | None = None,
        disconnected: Disconnected | None = None,
    ) -> GatewayResponse:
        """One ``POST /v1/responses``: a Response object, its event stream, or a 202 pending body.
        A request refused before the gateway's path (a bad field, an unknown previous response) is
        audited here; everything after is the gateway's."""
        try:
            request = parse_request(body)
            keep = request.store and self.settings.store and self.store is not None
            continues = request.previous_response_id is not None
            caller = await self._caller(headers) if keep or continues else None
            conversation: list[dict[str, Any]] = []
            if continues:
                assert caller is not None and request.previous_response_id is not None
                previous = await self._continued(request.previous_response_id, caller)
                conversation = await self._conversation(previous)
            first = len(conversation)
            conversation += [_unmarked(item) for item in request.items]  # a mark is the gateway's own
            chat, params = chat_body(request, conversation, first)
        except SeawallError as exc:
            self.gateway.reject(request_id, exc, stream=bool(body.get("stream")), api="responses")
            raise
        base = skeleton(request, response_id(request_id))
        kept = (caller, conversation) if keep and caller is not None else None
        handle = self.gateway.stream if request.stream else self.gateway.chat
        try:
            result = await handle(
                chat,
                headers,
                request_id=request_id,
                client_address=client_address,
                judged_roles=RESPONSES_JUDGED_ROLES,
                api="responses",
                disconnected=disconnected,
            )
        except SeawallError as exc:  # it names the chat body's fields: say the request's
            params.rewrite(exc)
            raise
        if result.status_code == PENDING_STATUS and result.body is not None:  # held, hold_response: accepted
            held = queued_response(result.body, base)
            if kept is not None:  # before the client hears of it: it may ask for it at once
                await self._keep(held, *kept)
            if request.stream:
                result.body, result.status_code = None, 200
                result.stream = _queued_events(held)
            else:
                result.body = held
        elif result.stream is not None:
            result.stream = self._events(result.stream, params, base, kept)
        elif result.status_code == 200 and result.body is not None:
            result.body = response_object(result.body, base)
            if kept is not None:
                await self._keep(result.body, *kept)
        return result

    async def _events(
        self,
        chat_events: AsyncGenerator[bytes, None],
        params: ParamMap,
        base: dict[str, Any],
        kept: tuple[Caller, list[dict[str, Any]]] | None,
    ) -> AsyncGenerator[bytes, None]:
        """The guarded chat stream as the Responses API's typed events."""
        writer = EventWriter(base)
        chunks = _chat_chunks(chat_events)
        try:
            for event in writer.start():
                yield event
            failed = False
            async for data in chunks:
                if isinstance(data, bytes):
                    yield data  # a keepalive comment
                    continue
                if failed:
                    continue  # the chat stream's end, after its error
                if isinstance(data.get("error"), dict):
                    failed = True
                    for event in writer.fail(params.error(data["error"])):
                        yield event
                    continue
                for event in writer.chunk(data):
                    yield event
            if not failed:
                ending = writer.finish()
                if kept is not None:  # before response.completed: a client may continue it at once
                    await self._keep(writer.response, *kept)
                for event in ending:
                    yield event
        except ClientTooSlowError as exc:  # the client stopped reading: the gateway's stream audits it
            with contextlib.suppress(ClientTooSlowError, StopAsyncIteration):
                await chat_events.athrow(exc)
            raise
        finally:
            await aclose(chunks)
            await aclose(chat_events)

    # ------------------------------------------------------------------ kept responses

    async def retrieve(self, response_id: str, headers: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/responses/{id}``: the kept Response object (404 unless this caller's); a
        queued one as its review stands now (:meth:`_settled`)."""
        stored = await self._settled(await self._find(response_id, await self._caller(headers)))
        return stored.response

    async def delete(self, response_id: str, headers: Mapping[str, str]) -> dict[str, Any]:
        """``DELETE /v1/responses/{id}``: forget a kept response (404 unless this caller's)."""
        stored = await self._find(response_id, await self._caller(headers))
        assert self.store is not None
        await asyncio.to_thread(self.store.delete_response, stored.id)
        return {"id": stored.id, "object": "response.deleted", "deleted": True}

    async def _caller(self, headers: Mapping[str, str]) -> Caller:
        access = self.gateway.access
        return await asyncio.to_thread(access.authenticate, header_value(headers, "authorization"))

    async def _continued(self, wanted: str, caller: Caller) -> StoredResponse:
        """The kept response a request continues (``previous_response_id``): 404 unless this
        caller's, 409 while it is queued for review, 400 when it failed."""
        param = "previous_response_id"
        previous = await self._settled(await self._find(wanted, caller, param=param))
        status = previous.response.get("status")
        if status == "queued":
            review = _review_of(previous.response)
            raise ConflictError(
                f"Response '{previous.id}' is queued for human review (review {review.get('id')}); it "
                "can be continued once a reviewer has decided it. Poll "
                f"{review.get('poll_url') or 'its review'} or GET /v1/responses/{previous.id}.",
                param=param,
                code="previous_response_queued",
            )
        if status not in KEPT_STATUSES:
            error = previous.response.get("error") or {}
            raise InvalidRequestError(
                f"Response '{previous.id}' {status} ({error.get('message') or 'no answer'}); it cannot "
                "be continued.",
                param=param,
                code="previous_response_failed",
            )
        return previous

    async def _settled(self, stored: StoredResponse) -> StoredResponse:
        """A kept response as it stands. One that waits for a review (queued, or a placeholder:
        :func:`_awaits_review`) stays as it is while its review is pending; once decided it becomes
        the decided Response (completed with the released answer, incomplete with the rejection
        message), which is kept in its place. When its review is not in the queue (any more) a
        queued response has failed (it has no answer to give), and a placeholder stays what the
        client got, its ``seawall.review.status`` saying ``not_found``."""
        response = stored.response
        if not _awaits_review(response):
            return stored
        review = _review_of(response)
        item = await self._review_item(review.get("id"), stored.tenant)
        if item is not None and item.status == "pending":
            return stored
        if item is not None:
            decided = self._decided(item, response)
        elif response.get("status") == "queued":
            base = {key: value for key, value in response.items() if key != EXTENSION_FIELD}
            decided = {
                **base,
                "status": "failed",
                "error": {
                    "code": REVIEW_NOT_FOUND,
                    "message": f"The review this response waited for ({review.get('id')}) is not in "
                    "the review queue; its answer cannot be released.",
                },
                EXTENSION_FIELD: {"review": {**review, "status": "not_found"}},
            }
        else:
            decided = {**response, EXTENSION_FIELD: {"review": {**review, "status": "not_found"}}}
        settled = replace(stored, response=decided)
        assert self.store is not None  # it was found there
        try:
            await asyncio.to_thread(self.store.save_response, settled)
        except Exception as exc:  # asked again next time; the caller gets the decision all the same
            log.error("cannot keep the decided response %s: %s", stored.id, exc)
        return settled

    async def _review_item(self, review_id: Any, tenant: str) -> ReviewItem | None:
        """The review item ``review_id`` of ``tenant`` (None: not in the queue, or another
        tenant's, or no review queue in this process)."""
        hook = self.gateway.review
        if hook is None or not isinstance(review_id, str):
            return None
        item = await asyncio.to_thread(hook.service.store.get_review, review_id)
        return item if item is not None and item.tenant == tenant else None

    def _decided(self, item: ReviewItem, response: Mapping[str, Any]) -> dict[str, Any]:
        """The Response ``response`` (queued, or a placeholder) becomes once its review ``item`` is
        decided: the released answer (approved, edited), or the rejection message with
        ``incomplete_details.reason: content_filter``; the decision in ``seawall.review``."""
        hook = self.gateway.review
        assert hook is not None  # the item came from its queue
        base = {key: value for key, value in response.items() if key != EXTENSION_FIELD}
        pending = {
            "id": response.get("id"),
            "created": response.get("created_at"),
            "model": response.get("model"),
            "poll_url": _review_of(response).get("poll_url") or POLL_PATH.format(id=item.id),
        }
        held = decided_response(item, final_completion(item), pending, hook.service.settings)
        decided = response_object(held.body, base)
        # Its items' ids come from the review's, so every reader (two settling it at once, a
        # continuation) names the decided answer's items alike.
        for index, output in enumerate(decided["output"]):
            prefix = "msg" if output.get("type") == "message" else "fc"
            output["id"] = f"{prefix}_{item.id.removeprefix('rev_')}" + (f"_{index}" if index else "")
        return decided

    async def _conversation(self, previous: StoredResponse) -> list[dict[str, Any]]:
        """The conversation a request continuing ``previous`` (settled) builds on: its input items,
        then its output. An answer still held for review goes in as the placeholder the user saw
        (never the draft: it is not released), marked (:data:`HELD_ITEM`) with its review's id; a
        marked item from an earlier turn is replaced by the decided answer once its review has been
        decided, so a conversation continued while a review was pending carries the reviewer's
        answer from then on. A marked item whose review is gone stays the placeholder, unmarked."""
        items: list[dict[str, Any]] = []
        for item in previous.input_items:
            review_id = item.get(HELD_ITEM)
            if review_id is None:
                items.append(item)
                continue
            review = await self._review_item(review_id, previous.tenant)
            if review is not None and review.status == "pending":
                items.append(item)
            elif review is not None:
                held = {"id": previous.id, "created_at": 0, "model": None}
                items += _as_input(self._decided(review, held).get("output"))
            else:
                items.append(_unmarked(item))
        output = _as_input(previous.response.get("output"))
        if _awaits_review(previous.response):  # settled and still pending: a placeholder
            review_id = _review_of(previous.response).get("id")
            output = [{**item, HELD_ITEM: review_id} for item in output]
        return items + output

    async def _find(self, wanted: str, caller: Caller, *, param: str | None = None) -> StoredResponse:
        """The kept response ``wanted`` of ``caller`` (its tenant and key); 404 otherwise."""
        stored = None
        if self.store is not None and self.settings.store:
            stored = await asyncio.to_thread(self.store.get_response, wanted, utc_now())
        if stored is None or (stored.tenant, stored.key_id) != (caller.tenant, caller.key_id):
            code = "previous_response_not_found" if param else "not_found"
            raise NotFoundError(f"Response with id '{wanted[:100]}' not found.", param=param, code=code)
        return stored

    async def _keep(
        self, response: dict[str, Any], caller: Caller, conversation: list[dict[str, Any]]
    ) -> None:
        """Keep a finished response and the conversation it answered (never a failed one). A store
        that fails does not turn the answer the client is getting into an error: it is logged."""
        if response.get("status") not in STORED_STATUSES or self.store is None:
            return
        now = utc_now()
        stored = StoredResponse(
            id=str(response["id"]),
            tenant=caller.tenant,
            key_id=caller.key_id,
            created_at=now,
            expires_at=now + timedelta(days=self.settings.retention_days),
            input_items=conversation,
            response=response,
        )
        try:
            await asyncio.to_thread(self.store.save_response, stored)
        except Exception as exc:
            log.error("cannot keep response %s: %s", stored.id, exc)


async def _queued_events(response: dict[str, Any]) -> AsyncGenerator[bytes, None]:
    """The events of a response held for review (``accepted``): created, then queued."""
    for event in EventWriter(response).queued():
        yield event


def _review_of(response: Mapping[str, Any]) -> dict[str, Any]:
    """The ``seawall.review`` field of a Response held for review (empty when there is none)."""
    extension = response.get(EXTENSION_FIELD)
    review = extension.get("review") if isinstance(extension, dict) else None
    return dict(review) if isinstance(review, dict) else {}


def _awaits_review(response: Mapping[str, Any]) -> bool:
    """Whether a kept Response waits for its review's decision: queued (``hold_response: accepted``),
    or an answer the client got as the placeholder (``placeholder``, or ``wait`` when no decision
    came in time), whose ``seawall.review.status`` is ``pending``."""
    status = response.get("status")
    return status == "queued" or (status in KEPT_STATUSES and _review_of(response).get("status") == "pending")


def _unmarked(item: dict[str, Any]) -> dict[str, Any]:
    """An input item without :data:`HELD_ITEM` (only the gateway marks the items it keeps)."""
    return {key: value for key, value in item.items() if key != HELD_ITEM} if HELD_ITEM in item else item


def _as_input(output: Any) -> list[dict[str, Any]]:
    """A kept response's output items, as input items of the conversation that continues it."""
    return [item for item in output or [] if isinstance(item, dict) and item.get("type") != "reasoning"]


async def _chat_chunks(events: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any] | bytes]:
    """The JSON payloads of a chat completions event stream (``data: ...`` events) up to
    ``data: [DONE]``, whatever the byte pieces it comes in; a comment-only event (a review wait's
    keepalive) comes through as its bytes, so the client's stream is not silent either."""
    pending = b""
    async for piece in events:
        pending += piece
        while b"\n\n" in pending:
            raw, pending = pending.split(b"\n\n", 1)
            data = b"\n".join(
                line.removeprefix(b"data:").lstrip() for line in raw.split(b"\n") if line.startswith(b"data:")
            )
            if not data:
                if raw.startswith(b":"):
                    yield raw + b"\n\n"
                continue
            if data == b"[DONE]":
                return
            payload = json.loads(data)
            if isinstance(payload, dict):
                yield payload


__all__ = [
    "HELD_ITEM",
    "KEPT_STATUSES",
    "RESPONSES_JUDGED_ROLES",
    "REVIEW_NOT_FOUND",
    "STORED_STATUSES",
    "ResponsesAPI",
]
