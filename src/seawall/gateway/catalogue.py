"""Which models the gateway serves: the policy's ``allowed_models``, else what the upstream lists.

Many model servers answer any model name with whatever they have loaded (llama.cpp's server,
some proxies), so a request for a model that does not exist would be served by another one
without a word. When the policy names no ``allowed_models``, :class:`ModelCatalogue` asks the
upstream's ``/v1/models`` which models exist and answers any other name with 404
``model_not_found``, before anything is sent upstream. The list is kept for ``ttl_s`` seconds
(``gateway.model_list_ttl_s``) and fetched once however many requests wait for it; a failure
to fetch it is the upstream's error (502/504), and is not kept. With ``allowed_models`` set
the policy decides alone (:func:`~seawall.gateway.limits.check_request`), and the upstream is
not asked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from seawall.errors import ModelNotFoundError
from seawall.gateway.upstream import Upstream


class ModelCatalogue:
    """The upstream's model ids, fetched from its ``/v1/models`` and kept for ``ttl_s`` seconds."""

    def __init__(
        self, upstream: Upstream, *, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.upstream = upstream
        self.ttl_s = ttl_s
        self.clock = clock
        self._ids: frozenset[str] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def check(self, model: str) -> None:
        """404 ``model_not_found`` unless the upstream lists ``model``."""
        if model not in await self.ids():
            raise ModelNotFoundError(
                f"The model '{model}' does not exist here; GET /v1/models lists the models served.",
                param="model",
            )

    async def ids(self) -> frozenset[str]:
        """The ids of the upstream's models, from the cache while it is fresh."""
        async with self._lock:
            if self._ids is None or self.clock() - self._fetched_at >= self.ttl_s:
                listing = await self.upstream.models()
                self._ids = frozenset(
                    str(entry["id"]) for entry in listing["data"] if isinstance(entry, dict) and "id" in entry
                )
                self._fetched_at = self.clock()
            return self._ids


__all__ = ["ModelCatalogue"]
