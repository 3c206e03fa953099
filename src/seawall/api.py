"""The Python API: moderation without a server."""

from __future__ import annotations

import asyncio
from typing import Any

from seawall.errors import InvalidRequestError
from seawall.results import ModerationResult
from seawall.service import ModerationService
from seawall.settings import Settings, load_settings


async def amoderate(
    input: Any, *, model: str | None = None, settings: Settings | None = None
) -> list[ModerationResult]:
    """Moderate ``input`` (a string, a list of strings, or a list of content parts).

    Returns one :class:`ModerationResult` per item, as OpenAI's API would.
    """
    service = ModerationService(settings or load_settings())
    try:
        return (await service.moderate(input, model)).results
    finally:
        await service.aclose()


def moderate(
    input: Any, *, model: str | None = None, settings: Settings | None = None
) -> list[ModerationResult]:
    """Synchronous :func:`amoderate`; inside a running event loop, await :func:`amoderate` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(amoderate(input, model=model, settings=settings))
    raise InvalidRequestError(
        "seawall.moderate() was called inside an event loop; use 'await seawall.amoderate()'."
    )
