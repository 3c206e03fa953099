"""The ASGI application: OpenAI-compatible routes over the moderation service.

Routes:

* ``POST /v1/moderations`` — OpenAI's wire format, unchanged.
* ``POST /v1/seawall/moderations`` — the same request; each result also carries
  ``extra_scores`` (prompt_injection, jailbreak), ``not_assessed``, ``backend``
  and ``notes``.
* ``GET /healthz`` — liveness; ``GET /readyz`` — the default backend is loaded.
* ``POST /v1/chat/completions`` (plain and ``stream: true``) and ``GET /v1/models`` — the
  guarding gateway (:mod:`seawall.gateway.pipeline`), when ``gateway.enabled`` (by default:
  when an upstream is configured or the local-llm extra can start the bundled model).
* ``POST /v1/responses`` (plain and ``stream: true``), ``GET`` and ``DELETE /v1/responses/{id}`` —
  the Responses API on the same request path (:mod:`seawall.gateway.responses_api`).

Every error is OpenAI's error body with a fitting status, never a bare 500.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from seawall.bodies import error_response, json_response, read_json
from seawall.errors import (
    InvalidRequestError,
    SeawallError,
)
from seawall.gateway.access import KeyAuthenticator
from seawall.gateway.identity import SESSION_COOKIE, SESSION_HEADER
from seawall.gateway.local_llm import LocalModelServer, local_llm_available
from seawall.gateway.pipeline import REQUEST_ID_HEADER, Gateway, GatewayResponse, new_request_id
from seawall.gateway.responses_api import ResponsesAPI
from seawall.gateway.sse import GuardedStreamingResponse
from seawall.gateway.upstream import Upstream
from seawall.review.gateway_hook import ReviewHook
from seawall.review.routes import add_review_routes
from seawall.review.service import ReviewService
from seawall.service import DEFAULT_OPENAI_MODEL, ModerationService
from seawall.settings import Settings, load_settings
from seawall.store import open_store
from seawall.store.base import AuditAPI
from seawall.telemetry import Tracer, start_tracing
from seawall.ui import add_ui_routes

log = logging.getLogger("seawall.server")

#: How long the cookie with an anonymous client's session id lives (seconds).
SESSION_MAX_AGE_S = 30 * 86_400


async def _check_key(request: Request) -> None:
    access: KeyAuthenticator = request.app.state.access
    authorization = request.headers.get("authorization")
    if access.authenticate_cached(authorization) is None:  # the store must be asked: off the loop
        await asyncio.to_thread(access.authenticate, authorization)


def gateway_enabled(settings: Settings) -> bool:
    """Whether the app serves the gateway: ``gateway.enabled``, or (None) when an upstream is
    configured or the bundled local model can be started."""
    gateway = settings.gateway
    if gateway.enabled is not None:
        return gateway.enabled
    return gateway.upstream.base_url is not None or local_llm_available()


def keep_sql_out_of_logs() -> None:
    """Stop SQLAlchemy from logging statements with their parameters (INFO) and result rows (DEBUG).

    It does so on ``sqlalchemy.engine`` whenever that logger is enabled, which a root logger at
    INFO or DEBUG is enough for; the parameters and rows hold held answers, report comments and
    contacts, and webhook URLs. An operator who set a level on ``sqlalchemy.engine`` keeps it."""
    engine_log = logging.getLogger("sqlalchemy.engine")
    if engine_log.level == logging.NOTSET:
        engine_log.setLevel(logging.WARNING)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` default to :func:`load_settings` (file + environment)."""
    settings = settings or load_settings()
    keep_sql_out_of_logs()
    service = ModerationService(settings)
    gateway_on = gateway_enabled(settings)
    # The gateway's guards may read with another contextual mode (gateway.guard_contextual): they
    # then get a service of their own, which shares the loaded model with the API's.
    guard_settings = settings.for_gateway_guards()
    guard_service = service if guard_settings is settings else ModerationService(guard_settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load the default backend before the first request, so that request is fast, and the
        # image fallback too, so a misconfigured one stops start-up instead of failing requests.
        await service.backend(settings.moderation.backend)
        if settings.images.fallback_backend:
            await service.backend(settings.images.fallback_backend)
        async with AsyncExitStack() as stack:
            gateway: Gateway | None = None
            if gateway_on:
                if guard_service is not service:
                    await guard_service.backend(settings.moderation.backend)
                    stack.push_async_callback(guard_service.aclose)
                store = open_store(settings.store)
                stack.callback(store.close)
                app.state.store = store  # the UI (mounted below) works on this store too
                upstream = settings.gateway.upstream
                if upstream.base_url is None:
                    local = LocalModelServer(settings.gateway.local_llm)
                    await stack.enter_async_context(local)
                    upstream = upstream.model_copy(update={"base_url": local.base_url})
                review = ReviewService(store, settings.review)
                stack.callback(review.close)
                app.state.review = review
                tracer = Tracer(start_tracing(settings.telemetry))
                stack.callback(tracer.shutdown)  # flushes the spans still queued
                gateway = Gateway(
                    settings,
                    guard_service,
                    upstream=Upstream(upstream),
                    store=store,
                    review=ReviewHook(review),
                    tracer=tracer,
                )
                stack.push_async_callback(gateway.aclose)
                app.state.access = gateway.access
                app.state.responses = ResponsesAPI(gateway, settings.gateway.responses, store)
            app.state.gateway = gateway
            try:
                yield
            finally:
                await service.aclose()

    app = FastAPI(title="seawall", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.service = service
    # Without the gateway (and its store) only the keys in the settings count.
    app.state.access = KeyAuthenticator(
        settings.server.api_keys, None, default_tenant=settings.gateway.tenant
    )

    @app.exception_handler(SeawallError)
    async def seawall_error(request: Request, exc: SeawallError) -> Response:
        if exc.status_code >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        error = InvalidRequestError(f"{request.method} {request.url.path}: {exc.detail}", code=code)
        error.status_code = exc.status_code
        response = error_response(error)
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(SeawallError("The server had an error while processing your request."))

    async def run_moderation(request: Request) -> tuple[str, Any]:
        await _check_key(request)
        body = await read_json(request, settings.server.max_body_bytes)
        if "input" not in body:
            raise InvalidRequestError("'input' is a required property.", param="input")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequestError("'model' must be a string.", param="model")
        # An omitted model is OpenAI's default, served (as every OpenAI name is) by the default backend.
        moderation = await service.moderate(body["input"], DEFAULT_OPENAI_MODEL if model is None else model)
        return moderation.model, moderation.results

    @app.post("/v1/moderations")
    async def moderations(request: Request) -> Response:
        model, results = await run_moderation(request)
        return json_response(
            {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": [r.to_openai() for r in results]}
        )

    @app.post("/v1/seawall/moderations")
    async def seawall_moderations(request: Request) -> Response:
        model, results = await run_moderation(request)
        return json_response(
            {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": [r.to_seawall() for r in results]}
        )

    if gateway_on:
        _add_gateway_routes(app, settings)
        add_review_routes(app, settings.review)
        add_ui_routes(app, settings)  # on the gateway's store (app.state.store)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            await service.backend(settings.moderation.backend)
        except SeawallError as exc:
            return json_response(
                {"status": "not ready", "backend": settings.moderation.backend, "error": exc.message}, 503
            )
        return json_response({"status": "ready", "backend": settings.moderation.backend})

    return app


#: A gateway entry point: the body, the headers, then ``request_id``, ``client_address`` and
#: ``disconnected``.
GatewayCall = Callable[..., Awaitable[GatewayResponse]]


def _add_gateway_routes(app: FastAPI, settings: Settings) -> None:
    """The gateway's OpenAI-compatible routes; the :class:`Gateway` itself lives in the lifespan."""

    def gateway() -> Gateway:
        found: Gateway | None = getattr(app.state, "gateway", None)
        if found is None:
            raise SeawallError("the gateway is not running")
        return found

    def responses_api() -> ResponsesAPI:
        found: ResponsesAPI | None = getattr(app.state, "responses", None)
        if found is None:
            raise SeawallError("the gateway is not running")
        return found

    def reply(request: Request, result: GatewayResponse) -> Response:
        """The gateway's result as the HTTP response: an event stream, or a JSON body."""
        response: Response
        if result.stream is not None:
            headers = {**result.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
            response = GuardedStreamingResponse(
                result.stream,
                send_timeout_s=settings.gateway.client_send_timeout_s,
                media_type="text/event-stream",
                headers=headers,
            )
        else:  # a completion or Response, or 202 with the pending-review body (for streams too)
            response = json_response(result.body, result.status_code)
            response.headers.update(result.headers)
        if result.new_session is not None:
            _hand_back_session(response, result.new_session, secure=request.url.scheme == "https")
        return response

    def finish(response: Response, request_id: str) -> Response:
        response.headers[REQUEST_ID_HEADER] = request_id
        running: Gateway | None = getattr(app.state, "gateway", None)
        if running is not None and running.review is not None:
            response.headers.update(running.review.headers())  # the AI disclosure, on every answer
        return response

    async def guarded(request: Request, route: str, handle: GatewayCall) -> Response:
        """One request through the gateway: the body read (a bad one audited too), ``handle`` called
        with it, and the result or the error as the HTTP response, with the request's id."""
        request_id = new_request_id()
        response: Response
        try:
            try:
                body = await read_json(request, settings.server.max_body_bytes)
            except SeawallError as exc:
                api: AuditAPI = "responses" if route == "/v1/responses" else "chat.completions"
                gateway().reject(request_id, exc, api=api)  # audited like every other request
                raise
            client = request.client.host if request.client else None
            result = await handle(
                body,
                request.headers,
                request_id=request_id,
                client_address=client,
                disconnected=request.is_disconnected,  # ends a review wait whose client hung up
            )
            response = reply(request, result)
        except SeawallError as exc:
            if exc.status_code >= 500:
                log.warning("POST %s %s failed: %s", route, request_id, exc.message)
            response = error_response(exc)
            if exc.new_session is not None:  # a refused anonymous caller keeps one session
                _hand_back_session(response, exc.new_session, secure=request.url.scheme == "https")
        return finish(response, request_id)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        async def handle(body: dict[str, Any], headers: Any, **where: Any) -> GatewayResponse:
            running = gateway()
            return await (running.stream if body.get("stream") else running.chat)(body, headers, **where)

        return await guarded(request, "/v1/chat/completions", handle)

    @app.post("/v1/responses")
    async def responses_create(request: Request) -> Response:
        async def handle(body: dict[str, Any], headers: Any, **where: Any) -> GatewayResponse:
            return await responses_api().create(body, headers, **where)

        return await guarded(request, "/v1/responses", handle)

    @app.get("/v1/responses/{response_id}")
    async def responses_retrieve(request: Request, response_id: str) -> Response:
        return json_response(await responses_api().retrieve(response_id, request.headers))

    @app.delete("/v1/responses/{response_id}")
    async def responses_delete(request: Request, response_id: str) -> Response:
        return json_response(await responses_api().delete(response_id, request.headers))

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return json_response(await gateway().models(request.headers))


def _hand_back_session(response: Response, session: str, *, secure: bool) -> None:
    """Give an anonymous client the session id seawall minted, as a header and a cookie."""
    response.headers[SESSION_HEADER] = session
    response.set_cookie(
        SESSION_COOKIE, session, max_age=SESSION_MAX_AGE_S, httponly=True, samesite="lax", secure=secure
    )


def _version() -> str:
    from seawall import __version__

    return __version__
