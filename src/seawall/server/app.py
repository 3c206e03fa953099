"""The ASGI application: OpenAI-compatible routes over the moderation service.

Routes:

* ``POST /v1/moderations`` — OpenAI's wire format, unchanged.
* ``POST /v1/seawall/moderations`` — the same request; each result also carries
  ``extra_scores`` (prompt_injection, jailbreak), ``not_assessed``, ``backend``
  and ``notes``.
* ``GET /healthz`` — liveness; ``GET /readyz`` — the default backend is loaded.
* ``POST /v1/chat/completions`` (plain and ``stream: true``) and ``GET /v1/models`` — the
  guarding gateway (:mod:`seawall.gateway.pipeline`), only when ``gateway.enabled``.

Every error is OpenAI's error body with a fitting status, never a bare 500.
"""

from __future__ import annotations

import hmac
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from seawall.errors import (
    AuthenticationError,
    InvalidRequestError,
    PayloadTooLargeError,
    RateLimitError,
    SeawallError,
    UpstreamError,
)
from seawall.gateway.pipeline import REQUEST_ID_HEADER, Gateway, new_request_id
from seawall.service import ModerationService
from seawall.settings import Settings, load_settings

log = logging.getLogger("seawall.server")


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def _error(exc: SeawallError) -> Response:
    response = _json(exc.to_body(), exc.status_code)
    if isinstance(exc, UpstreamError | RateLimitError) and exc.retry_after is not None:
        response.headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return response


async def _read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"request body is {declared} bytes; the limit is {max_bytes}.")
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLargeError(f"request body exceeds the {max_bytes}-byte limit.")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        # Nobody is listening any more; a 400 ends the request without an error in the log.
        raise InvalidRequestError("the client disconnected before sending the whole body.") from exc
    raw = b"".join(chunks)
    if not raw:
        raise InvalidRequestError("request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 as well as malformed JSON.
        raise InvalidRequestError(f"request body is not valid JSON (UTF-8): {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object.")
    return body


def _check_key(request: Request, settings: Settings) -> None:
    keys = settings.server.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.")
    offered = token.strip().encode()
    # Compare against every key in constant time, so timing does not reveal a key's prefix.
    if not any(hmac.compare_digest(offered, key.get_secret_value().encode()) for key in keys):
        raise AuthenticationError("Incorrect API key provided.")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` default to :func:`load_settings` (file + environment)."""
    settings = settings or load_settings()
    service = ModerationService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load the default backend before the first request, so that request is fast, and the
        # image fallback too, so a misconfigured one stops start-up instead of failing requests.
        await service.backend(settings.moderation.backend)
        if settings.images.fallback_backend:
            await service.backend(settings.images.fallback_backend)
        gateway = Gateway(settings, service) if settings.gateway.enabled else None
        app.state.gateway = gateway
        try:
            yield
        finally:
            if gateway is not None:
                await gateway.aclose()
            await service.aclose()

    app = FastAPI(title="seawall", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.service = service

    @app.exception_handler(SeawallError)
    async def seawall_error(request: Request, exc: SeawallError) -> Response:
        if exc.status_code >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        error = InvalidRequestError(f"{request.method} {request.url.path}: {exc.detail}", code=code)
        error.status_code = exc.status_code
        response = _error(error)
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(SeawallError("The server had an error while processing your request."))

    async def run_moderation(request: Request) -> tuple[str, Any]:
        _check_key(request, settings)
        body = await _read_json(request, settings.server.max_body_bytes)
        if "input" not in body:
            raise InvalidRequestError("'input' is a required property.", param="input")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequestError("'model' must be a string.", param="model")
        moderation = await service.moderate(body["input"], model)
        return moderation.model, moderation.results

    @app.post("/v1/moderations")
    async def moderations(request: Request) -> Response:
        model, results = await run_moderation(request)
        return _json(
            {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": [r.to_openai() for r in results]}
        )

    @app.post("/v1/seawall/moderations")
    async def seawall_moderations(request: Request) -> Response:
        model, results = await run_moderation(request)
        return _json(
            {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": [r.to_seawall() for r in results]}
        )

    if settings.gateway.enabled:
        _add_gateway_routes(app, settings)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            await service.backend(settings.moderation.backend)
        except SeawallError as exc:
            return _json(
                {"status": "not ready", "backend": settings.moderation.backend, "error": exc.message}, 503
            )
        return _json({"status": "ready", "backend": settings.moderation.backend})

    return app


def _add_gateway_routes(app: FastAPI, settings: Settings) -> None:
    """The gateway's OpenAI-compatible routes; the :class:`Gateway` itself lives in the lifespan."""

    def gateway() -> Gateway:
        found: Gateway | None = getattr(app.state, "gateway", None)
        if found is None:
            raise SeawallError("the gateway is not running")
        return found

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        request_id = new_request_id()
        try:
            _check_key(request, settings)
            body = await _read_json(request, settings.server.max_body_bytes)
            if body.get("stream"):
                result = await gateway().stream(body, request.headers, request_id=request_id)
                assert result.stream is not None
                headers = {**result.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
                return StreamingResponse(result.stream, media_type="text/event-stream", headers=headers)
            result = await gateway().chat(body, request.headers, request_id=request_id)
            response = _json(result.body)
        except SeawallError as exc:
            if exc.status_code >= 500:
                log.warning("POST /v1/chat/completions %s failed: %s", request_id, exc.message)
            response = _error(exc)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        _check_key(request, settings)
        return _json(await gateway().models())


def _version() -> str:
    from seawall import __version__

    return __version__
