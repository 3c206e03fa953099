"""HTTP routes of human review, user reports, notices and metrics.

:func:`add_review_routes` adds, to a FastAPI app whose ``state.review`` is a
:class:`~seawall.review.service.ReviewService` (set it in the lifespan, or pass ``service``):

Public, or with the app's API key (``app.state.access``, a
:class:`~seawall.gateway.access.KeyAuthenticator`, when present):

* ``GET /v1/seawall/notices`` — the AI disclosure and the stated limitations (no key needed).
* ``GET /v1/seawall/reviews/{id}`` — poll a held answer: ``{"status": "pending" | "approved" |
  "edited" | "rejected", "completion": {...} | null, "reason": ...}``; only the key's tenant's items.
  With a reviewer token instead, the reviewer's full view.
* ``OPTIONS`` of those two: the CORS preflight of the report widget (``/ui/widget.js``); both
  answer pages of ``review.widget_origins`` with ``Access-Control-Allow-Origin`` (never credentials).
* ``POST /v1/feedback`` — a user's report: ``{"response_id", "category": harmful|wrong|biased|
  privacy|other, "comment"?, "contact"?, "user"?}`` -> 201; an app key of any scope (``all`` or
  ``feedback``). 429 past ``feedback_limit`` per source: what the client cannot choose (the
  gateway's trusted user header when it is configured and sent, else the API key and the client
  address), never the ``user`` field or a session id, which a client can change at will. The
  ``user`` field (else the session header or cookie, else the address) names the reporter in the
  report's history, kept as a digest of the user's safety identifier.

Reviewers and admins (``Authorization: Bearer <token>`` from ``review.reviewer_tokens`` or
``review.admin_tokens``, or an operator token made in the web UI or with ``seawall tokens
create``; or a signed-in web UI session, whose requests that change something carry its CSRF
token in ``X-CSRF-Token``; 401 without any):

* ``GET /v1/seawall/reviews?status=pending|approved|edited|rejected|all&domain=&tenant=&claimable=true
  &mine=true&limit=&offset=`` — the queue, oldest first.
* ``GET /v1/seawall/reviews/{id}/events`` — the item's trail.
* ``POST /v1/seawall/reviews/{id}/claim`` | ``/release`` | ``/approve`` | ``/edit`` (``{"text"}``)
  | ``/reject`` (``{"reason"}``) — 409 when someone else holds the claim, it expired, or it is decided.
* ``GET /v1/seawall/reports?status=&category=&tenant=&limit=&offset=``, ``GET /v1/seawall/reports/{id}``
  (with its trail), ``POST /v1/seawall/reports/{id}`` (``{"status"?, "note"?}``) — the triage queue.

Admins only (403 for reviewers), unless ``review.metrics_public``: ``GET /metrics``.

Errors are OpenAI's error body, whatever exception handlers the app has.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import Response

from seawall.bearer import bearer_token
from seawall.bodies import error_response, json_response, read_json
from seawall.clock import utc_now
from seawall.errors import (
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    SeawallError,
)
from seawall.review.gateway_hook import NOTICES_PATH
from seawall.review.service import ReviewService
from seawall.review.settings import ReviewSettings
from seawall.secret import safety_identifier
from seawall.store.base import (
    REPORT_CATEGORIES,
    REPORT_STATUSES,
    REVIEW_STATUSES,
    KeyScope,
    operator_token_hash,
)

log = logging.getLogger("seawall.review")

#: Largest JSON body the review routes read.
MAX_BODY_BYTES = 1024 * 1024
#: Most items one list request returns.
MAX_LIMIT = 200

Role = Literal["reviewer", "admin"]


class Caller(Protocol):
    """The authenticated app, as the app's key check (``app.state.access``) answers it."""

    key_id: str | None
    tenant: str


Handler = Callable[..., Awaitable[Response]]


#: What the report widget may send cross-origin.
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "authorization, content-type, x-seawall-session"
CORS_MAX_AGE_S = 600


def cors_headers(request: Request, settings: ReviewSettings, *, preflight: bool = False) -> dict[str, str]:
    """CORS headers for a request from a page of ``settings.widget_origins`` (empty otherwise).

    The origin is echoed (with ``Vary: Origin``) and no credentials are allowed: the widget
    authenticates with the app's key, never with cookies."""
    origin = request.headers.get("origin")
    allowed = settings.widget_origins
    headers = {"vary": "Origin"}
    if not origin or not ("*" in allowed or origin.rstrip("/") in allowed):
        return headers
    headers["access-control-allow-origin"] = origin
    if preflight:
        headers["access-control-allow-methods"] = CORS_METHODS
        headers["access-control-allow-headers"] = CORS_HEADERS
        headers["access-control-max-age"] = str(CORS_MAX_AGE_S)
    else:
        headers["access-control-expose-headers"] = "retry-after"
    return headers


def _guarded(handler: Handler) -> Handler:
    """Answer every SeawallError with its OpenAI-style body."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except SeawallError as exc:
            return error_response(exc)

    return wrapper


def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequestError(f"'{name}' is required", param=name)
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"'{name}' must be a string", param=name)
    return value


def _limit(request: Request) -> tuple[int, int]:
    try:
        limit = int(request.query_params.get("limit", "50"))
        offset = int(request.query_params.get("offset", "0"))
    except ValueError:
        raise InvalidRequestError("limit and offset must be integers", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise InvalidRequestError(f"limit must be 1..{MAX_LIMIT} and offset >= 0", param="limit")
    return limit, offset


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise InvalidRequestError(f"'{name}' must be one of {', '.join(allowed)}", param=name)
    return value


#: Seconds an operator token lookup is reused (a revoked token stops working within this time).
TOKEN_CACHE_TTL_S = 5.0
#: Most operator token lookups kept in the cache.
TOKEN_CACHE_SIZE = 256
#: Methods that change nothing: a UI session may call them without the CSRF header.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Finds the staff member a request's browser session belongs to (the web UI installs one as
#: ``app.state.staff_sessions``): (name, role), or None. Called in a worker thread.
SessionLookup = Callable[[Request], "tuple[str, Role] | None"]


class StaffAuth:
    """Who a staff request is: a reviewer or admin bearer token (``review.reviewer_tokens`` and
    ``review.admin_tokens`` in the settings, compared in constant time; or an operator token made
    in the UI or with ``seawall tokens create``, stored hashed), else a signed-in UI session (the
    web UI's ``app.state.staff_sessions``; a request that changes something must carry the
    session's CSRF token in ``X-CSRF-Token``)."""

    def __init__(self, settings: ReviewSettings) -> None:
        self._tokens: list[tuple[bytes, str, Role]] = [
            (token.get_secret_value().encode(), name, "reviewer")
            for name, token in settings.reviewer_tokens.items()
        ] + [
            (token.get_secret_value().encode(), name, "admin")
            for name, token in settings.admin_tokens.items()
        ]
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, tuple[str, Role] | None]] = OrderedDict()

    def _configured(self, token: str) -> tuple[str, Role] | None:
        offered = token.encode()
        found: tuple[str, Role] | None = None
        for secret, name, role in self._tokens:
            if hmac.compare_digest(offered, secret):  # no early exit: timing says nothing
                found = (name, role)
        return found

    def _stored(self, store: Any, token: str) -> tuple[str, Role] | None:
        """An operator token from the store (cached for TOKEN_CACHE_TTL_S)."""
        key = operator_token_hash(token)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        row = store.find_token(key, utc_now())
        found: tuple[str, Role] | None = None
        if row is not None and row.active and row.role in ("reviewer", "admin"):
            found = (f"token:{row.name}", row.role)
        with self._lock:
            self._cache[key] = (now + TOKEN_CACHE_TTL_S, found)
            self._cache.move_to_end(key)
            while len(self._cache) > TOKEN_CACHE_SIZE:
                self._cache.popitem(last=False)
        return found

    def _lookup(self, request: Request) -> tuple[str, Role] | None:
        """The staff member of ``request`` (blocking: store lookups), or None."""
        token = bearer_token(request.headers.get("authorization"))
        if token is not None:
            found = self._configured(token)
            store = getattr(request.app.state, "store", None)
            if found is None and store is not None and hasattr(store, "find_token"):
                try:
                    found = self._stored(store, token)
                except SeawallError as exc:  # a store without the tokens table: settings tokens only
                    log.warning("cannot look up an operator token: %s", exc)
            return found
        sessions: SessionLookup | None = getattr(request.app.state, "staff_sessions", None)
        return sessions(request) if sessions is not None else None

    async def identify(self, request: Request) -> tuple[str, Role] | None:
        """(name, role) of the request's staff member, or None."""
        return await asyncio.to_thread(self._lookup, request)

    async def require(self, request: Request, role: Role = "reviewer") -> str:
        """The reviewer's or admin's name; 401 without a known token or session, 403 when an
        admin is needed."""
        name, has = await self.require_member(request)
        if role == "admin" and has != "admin":
            raise PermissionDeniedError("This route is for admins only.", code="admin_required")
        return name

    async def require_member(self, request: Request) -> tuple[str, Role]:
        """(name, role) of the request's reviewer or admin; 401 without a known token or session."""
        who = await self.identify(request)
        if who is None:
            raise AuthenticationError(
                "This route needs a reviewer or admin token ('Authorization: Bearer <token>') or a "
                "signed-in web UI session (changes also need its X-CSRF-Token header).",
                code="invalid_reviewer_token",
            )
        return who


def add_review_routes(
    app: FastAPI, settings: ReviewSettings, *, service: ReviewService | None = None
) -> None:
    """Add the review, report, notice and metrics routes (see the module's docstring)."""
    if service is not None:
        app.state.review = service
    staff = StaffAuth(settings)

    def review() -> ReviewService:
        found: ReviewService | None = getattr(app.state, "review", None)
        if found is None:
            raise SeawallError("human review is not running")
        return found

    async def app_caller(request: Request, purpose: KeyScope = "all") -> Caller | None:
        """The calling app (its API key), or None when the app has no key check."""
        access = getattr(request.app.state, "access", None)
        if access is None:
            return None
        found: Caller = await asyncio.to_thread(
            functools.partial(access.authenticate, purpose=purpose), request.headers.get("authorization")
        )
        return found

    async def app_tenant(request: Request) -> str | None:
        """The calling app's tenant (its API key), or None when the app has no key check."""
        caller = await app_caller(request)
        return None if caller is None else str(caller.tenant)

    # ------------------------------------------------------------------ public

    def with_cors(handler: Handler) -> Handler:
        """Add the widget's CORS headers to whatever ``handler`` answers (errors included)."""

        @functools.wraps(handler)
        async def wrapper(request: Request) -> Response:
            response = await handler(request)
            response.headers.update(cors_headers(request, settings))
            return response

        return wrapper

    async def preflight(request: Request) -> Response:
        return Response(status_code=204, headers=cors_headers(request, settings, preflight=True))

    app.add_api_route(NOTICES_PATH, preflight, methods=["OPTIONS"], include_in_schema=False)
    app.add_api_route("/v1/feedback", preflight, methods=["OPTIONS"], include_in_schema=False)

    @app.get(NOTICES_PATH)
    @with_cors
    @_guarded
    async def notices(request: Request) -> Response:
        config = settings.notices
        response = json_response(
            {
                "object": "seawall.notices",
                "disclosure": config.disclosure,
                "limitations": [notice.model_dump() for notice in config.limitations],
            }
        )
        response.headers["cache-control"] = "public, max-age=300"
        return response

    @app.post("/v1/feedback")
    @with_cors
    @_guarded
    async def feedback(request: Request) -> Response:
        caller = await app_caller(request, "feedback")
        tenant = str(caller.tenant) if caller is not None else _default_tenant(request)
        body = await read_json(request, MAX_BODY_BYTES, empty_ok=True)
        unknown = sorted(set(body) - {"response_id", "category", "comment", "contact", "user"})
        if unknown:
            raise InvalidRequestError(f"unknown field(s): {', '.join(unknown)}", param=unknown[0])
        reporter = _string(body, "user") or request.headers.get("x-seawall-session")
        reporter = reporter or request.cookies.get("seawall_session")
        if not reporter and request.client is not None:
            reporter = f"ip:{request.client.host}"
        gateway = getattr(request.app.state, "gateway", None)
        if reporter and gateway is not None:
            # Only the user's safety identifier (the gateway's HMAC) is kept, never the raw id.
            reporter = safety_identifier(gateway.secret, tenant, reporter)
        report = await asyncio.to_thread(
            review().report,
            tenant,
            response_id=_string(body, "response_id", required=True) or "",
            category=_string(body, "category", required=True) or "",
            comment=_string(body, "comment") or "",
            contact=_string(body, "contact"),
            reporter=reporter,
            source=_feedback_source(request, caller),
        )
        return json_response(
            {
                "id": report.id,
                "object": "seawall.report",
                "status": report.status,
                "response_id": report.response_id,
                "category": report.category,
                "created_at": review().report_view(report)["created_at"],
            },
            201,
        )

    @app.get("/metrics")
    @_guarded
    async def metrics(request: Request) -> Response:
        if not settings.metrics_public:
            await staff.require(request, "admin")
        exposition = await asyncio.to_thread(review().metrics.exposition)
        return Response(exposition, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------------ reviewers: the queue

    @app.get("/v1/seawall/reviews")
    @_guarded
    async def list_reviews(request: Request) -> Response:
        name = await staff.require(request)
        limit, offset = _limit(request)
        status = _choice(request, "status", (*REVIEW_STATUSES, "all")) or "pending"
        items = await asyncio.to_thread(
            review().queue,
            status=None if status == "all" else status,  # type: ignore[arg-type]  # checked by _choice
            domain=request.query_params.get("domain") or None,
            tenant=request.query_params.get("tenant") or None,
            claimable=request.query_params.get("claimable") == "true",
            claimed_by=name if request.query_params.get("mine") == "true" else None,
            limit=limit,
            offset=offset,
        )
        return json_response({"object": "list", "data": [review().reviewer_view(item) for item in items]})

    @app.get("/v1/seawall/reviews/{review_id}")
    @_guarded
    async def get_review(review_id: str, request: Request) -> Response:
        if await staff.identify(request) is not None:
            item = await asyncio.to_thread(review().get, review_id)
            return json_response(review().reviewer_view(item))
        tenant = await app_tenant(request)
        return json_response(await asyncio.to_thread(review().poll, review_id, tenant))

    @app.get("/v1/seawall/reviews/{review_id}/events")
    @_guarded
    async def review_events(review_id: str, request: Request) -> Response:
        await staff.require(request)
        await asyncio.to_thread(review().get, review_id)
        return json_response({"object": "list", "data": await asyncio.to_thread(review().events, review_id)})

    @app.post("/v1/seawall/reviews/{review_id}/{action}")
    @_guarded
    async def act(review_id: str, action: str, request: Request) -> Response:
        name = await staff.require(request)
        body = await read_json(request, MAX_BODY_BYTES, empty_ok=True)
        service = review()
        if action == "claim":
            item = await asyncio.to_thread(service.claim, review_id, name)
        elif action == "release":
            item = await asyncio.to_thread(service.release, review_id, name)
        elif action in ("approve", "edit", "reject"):
            item = await asyncio.to_thread(
                service.decide,
                review_id,
                name,
                action,  # type: ignore[arg-type]  # one of the three, checked above
                text=_string(body, "text"),
                reason=_string(body, "reason"),
            )
        else:
            raise InvalidRequestError(
                f"unknown action {action!r}: claim, release, approve, edit or reject", code="not_found"
            )
        return json_response(service.reviewer_view(item))

    # ------------------------------------------------------------------ reviewers: reports

    @app.get("/v1/seawall/reports")
    @_guarded
    async def list_reports(request: Request) -> Response:
        await staff.require(request)
        limit, offset = _limit(request)
        found = await asyncio.to_thread(
            review().reports,
            status=_choice(request, "status", REPORT_STATUSES),  # type: ignore[arg-type]
            category=_choice(request, "category", REPORT_CATEGORIES),  # type: ignore[arg-type]
            tenant=request.query_params.get("tenant") or None,
            limit=limit,
            offset=offset,
        )
        return json_response({"object": "list", "data": [review().report_view(report) for report in found]})

    @app.get("/v1/seawall/reports/{report_id}")
    @_guarded
    async def get_report(report_id: str, request: Request) -> Response:
        await staff.require(request)
        report = await asyncio.to_thread(review().get_report, report_id)
        view = review().report_view(report)
        view["events"] = await asyncio.to_thread(review().events, report_id)
        return json_response(view)

    @app.post("/v1/seawall/reports/{report_id}")
    @_guarded
    async def triage(report_id: str, request: Request) -> Response:
        name, role = await staff.require_member(request)
        body = await read_json(request, MAX_BODY_BYTES, empty_ok=True)
        report = await asyncio.to_thread(
            review().triage,
            report_id,
            name,
            status=_string(body, "status"),
            note=_string(body, "note"),
            admin=role == "admin",
        )
        return json_response(review().report_view(report))


def _feedback_source(request: Request, caller: Caller | None) -> str:
    """What the feedback limit counts by: what the client cannot choose. The gateway's trusted
    user header (set by the app's own server) when configured and sent, else the API key and the
    client address."""
    settings = getattr(request.app.state, "settings", None)
    header = getattr(getattr(settings, "gateway", None), "trusted_user_header", None)
    trusted = request.headers.get(header) if header else None
    if trusted:
        return f"user:{trusted}"
    key = caller.key_id if caller is not None and caller.key_id else "-"
    address = request.client.host if request.client is not None else "-"
    return f"key:{key}|ip:{address}"


def _default_tenant(request: Request) -> str:
    settings = getattr(request.app.state, "settings", None)
    gateway = getattr(settings, "gateway", None)
    return str(getattr(gateway, "tenant", "default"))


__all__ = ["MAX_LIMIT", "StaffAuth", "add_review_routes", "cors_headers"]
