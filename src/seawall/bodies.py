"""JSON bodies in and out: a request's JSON object, bounded while it streams in, and the
responses (errors in OpenAI's shape) that the app and the review routes send."""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from seawall.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    RateLimitError,
    SeawallError,
    UnsupportedMediaTypeError,
    UpstreamError,
)


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def error_response(exc: SeawallError) -> Response:
    """The error in OpenAI's shape, with ``Retry-After`` when the error says when to retry."""
    response = json_response(exc.to_body(), exc.status_code)
    if isinstance(exc, UpstreamError | RateLimitError) and exc.retry_after is not None:
        response.headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return response


#: The body types a web page may post to another site without the browser asking it first (CORS
#: "simple" requests): never JSON, so refusing them keeps pages from using a visitor's loopback seawall.
BROWSER_SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


async def read_json(request: Request, max_bytes: int, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request's JSON object, read no further than ``max_bytes`` (413 past it); 400 for a
    body that is not a JSON object, or an empty one unless ``empty_ok`` (then ``{}``).

    415 for a body declared as one of :data:`BROWSER_SIMPLE_TYPES`, or declared as nothing by a
    browser (it sends ``Origin``): either could be a page on another site posting on its visitor's
    behalf. Programs that send no content type at all are still read."""
    declared_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if declared_type in BROWSER_SIMPLE_TYPES or (not declared_type and "origin" in request.headers):
        raise UnsupportedMediaTypeError(
            f"send the body as JSON with 'Content-Type: application/json' (got {declared_type or 'none'!r})."
        )
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
    if not raw and empty_ok:
        return {}
    if not raw:
        raise InvalidRequestError("request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 as well as malformed JSON, and words the first misleadingly.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InvalidRequestError(
                f"request body is not valid UTF-8 (byte 0x{raw[bad.start]:02x} at offset {bad.start}); "
                "send JSON encoded as UTF-8."
            ) from exc
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object.")
    return body


__all__ = ["read_json"]
