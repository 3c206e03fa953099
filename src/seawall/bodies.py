"""Reading request bodies: one JSON object, bounded while it streams in."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from seawall.errors import InvalidRequestError, PayloadTooLargeError


async def read_json(request: Request, max_bytes: int, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request's JSON object, read no further than ``max_bytes`` (413 past it); 400 for a
    body that is not a JSON object, or an empty one unless ``empty_ok`` (then ``{}``)."""
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
        # orjson rejects invalid UTF-8 as well as malformed JSON.
        raise InvalidRequestError(f"request body is not valid JSON (UTF-8): {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object.")
    return body


__all__ = ["read_json"]
