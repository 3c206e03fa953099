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

The policy's ``models`` map (:attr:`~seawall.gateway.policy.Policy.models`) adds names of its own:
a mapped name is served when the upstream lists the model it maps onto (the upstream is sent that
name), and :func:`served_models` lists it on ``/v1/models`` beside the upstream's names; a name
mapped onto a model the upstream does not list is a 404 like any unknown name (the message says
which upstream model is missing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from seawall.errors import ModelNotFoundError
from seawall.gateway.upstream import Upstream


class ModelCatalogue:
    """The upstream's model ids, fetched from its ``/v1/models`` and kept for ``ttl_s`` seconds."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        mapped: Mapping[str, str] | None = None,
    ) -> None:
        self.upstream = upstream
        #: The policy's mapped names, each with the upstream model it is served by.
        self.mapped = dict(mapped or {})
        self.ttl_s = ttl_s
        self.clock = clock
        self._ids: frozenset[str] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def check(self, model: str) -> None:
        """404 ``model_not_found`` unless the upstream lists ``model``, or the model the policy
        maps it onto."""
        target = self.mapped.get(model)
        if target is not None:
            if target not in await self.ids():
                raise ModelNotFoundError(
                    f"The model '{model}' is served by the upstream model '{target}' (the policy's "
                    "models), which the upstream does not list.",
                    param="model",
                )
            return
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


def served_models(
    listing: Mapping[str, Any], mapped: Mapping[str, str], allowed: Collection[str] = ()
) -> dict[str, Any]:
    """The ``/v1/models`` list clients see: the upstream's ``listing`` plus one entry per name of
    the policy's ``mapped`` (client name -> upstream name) whose upstream model it lists (that
    model's entry under the client's name, replacing an upstream entry of the same name), narrowed
    to ``allowed`` when it names any."""
    entries = [entry for entry in listing.get("data") or [] if isinstance(entry, dict)]
    by_id = {str(entry.get("id")): entry for entry in entries}
    for name, target in mapped.items():
        if target in by_id:
            entries = [*(e for e in entries if e.get("id") != name), {**by_id[target], "id": name}]
    if allowed:
        entries = [entry for entry in entries if entry.get("id") in allowed]
    return {**listing, "object": "list", "data": entries}


__all__ = ["ModelCatalogue", "served_models"]
