"""The ``openai`` backend: OpenAI's own ``/v1/moderations``, through the official SDK.

Why the SDK rather than raw HTTP: it already does authentication, retries with
back-off on connection errors, 429 and 5xx (honouring ``Retry-After``), and
timeouts the way OpenAI documents them; this module only batches and maps.

Batching: OpenAI scores a list of strings in one request (one result per
string), but a list of content parts is *one* multi-modal item. So text-only
inputs go in chunks of ``openai.max_batch`` strings, and each input with images
goes alone, as one text part (its texts joined, as the local model sees them)
plus one ``image_url`` part per image. Images are sent as ``data:`` URLs built
from the bytes seawall already fetched and checked (so OpenAI sees exactly
what was validated, and private URLs work); an image whose bytes were never
loaded is sent by its original URL.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, TypeVar

import openai
from openai.types import ModerationCreateResponse, ModerationMultiModalInputParam
from PIL import Image, UnidentifiedImageError

from seawall.categories import CATEGORIES, IMAGE_CATEGORIES
from seawall.errors import BackendError, BackendTimeoutError, ConfigurationError
from seawall.inputs import ModerationInput
from seawall.results import ModerationResult
from seawall.settings import OpenAIBackendSettings, Settings

#: Upstream requests in flight at once for one ``moderate`` call; more buys little and invites 429s.
MAX_PARALLEL_REQUESTS = 4

T = TypeVar("T")


class OpenAIBackend:
    """Forwards inputs to OpenAI's moderation endpoint and maps the answer onto :class:`ModerationResult`."""

    name = "openai"

    def __init__(self, settings: OpenAIBackendSettings, *, api_key: str) -> None:
        self.settings = settings
        self._api_key = api_key
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=settings.base_url,
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
        )

    async def moderate(self, inputs: Sequence[ModerationInput]) -> list[ModerationResult]:
        text_positions = [i for i, item in enumerate(inputs) if not item.images]
        image_positions = [i for i, item in enumerate(inputs) if item.images]
        size = self.settings.max_batch
        chunks = [text_positions[start : start + size] for start in range(0, len(text_positions), size)]
        calls: list[Awaitable[list[ModerationResult]]] = [
            self._moderate_texts([inputs[i] for i in chunk]) for chunk in chunks
        ]
        calls += [self._moderate_parts(inputs[i]) for i in image_positions]
        answers = await _gather_bounded(calls, MAX_PARALLEL_REQUESTS)
        by_position: dict[int, ModerationResult] = {}
        groups = [*chunks, *([i] for i in image_positions)]
        for positions, answer in zip(groups, answers, strict=True):
            by_position.update(zip(positions, answer, strict=True))
        return [by_position[i] for i in range(len(inputs))]

    async def _moderate_texts(self, items: Sequence[ModerationInput]) -> list[ModerationResult]:
        texts = [item.text for item in items]
        return await self._call(texts, items)

    async def _moderate_parts(self, item: ModerationInput) -> list[ModerationResult]:
        parts: list[ModerationMultiModalInputParam] = []
        if item.texts:
            parts.append({"type": "text", "text": item.text})
        for index, image in enumerate(item.images):
            url = _data_url(item.image_bytes[index]) if index < len(item.image_bytes) else image.url
            parts.append({"type": "image_url", "image_url": {"url": url}})
        return await self._call(parts, [item])

    async def _call(
        self, payload: list[str] | list[ModerationMultiModalInputParam], items: Sequence[ModerationInput]
    ) -> list[ModerationResult]:
        try:
            response = await self._client.moderations.create(model=self.settings.model, input=payload)
        except openai.APITimeoutError as exc:
            raise BackendTimeoutError(
                f"OpenAI moderation at {self.settings.base_url} did not answer within "
                f"{self.settings.timeout_s} s ({self.settings.max_retries} retries)."
            ) from exc
        except openai.APIStatusError as exc:
            raise BackendError(
                self._redact(f"OpenAI moderation answered HTTP {exc.status_code}: {_upstream_message(exc)}")
            ) from exc
        except openai.APIConnectionError as exc:
            raise BackendError(
                self._redact(f"OpenAI moderation at {self.settings.base_url} could not be reached: {exc}")
            ) from exc
        except openai.OpenAIError as exc:
            raise BackendError(self._redact(f"OpenAI moderation failed: {exc}")) from exc
        if not isinstance(response, ModerationCreateResponse):  # the SDK hands back non-JSON bodies as-is
            raise BackendError(
                self._redact(f"OpenAI moderation sent a reply that is not JSON: {str(response)[:200]!r}")
            )
        raw_results = response.to_dict(warnings=False).get("results")
        if not isinstance(raw_results, list) or len(raw_results) != len(items):
            count = len(raw_results) if isinstance(raw_results, list) else "no"
            raise BackendError(
                f"OpenAI moderation sent a malformed reply: {count} results for {len(items)} inputs."
            )
        return [_to_result(raw, item) for raw, item in zip(raw_results, items, strict=True)]

    def _redact(self, message: str) -> str:
        """Upstream error bodies can echo the key back; it never goes further than this process."""
        return message.replace(self._api_key, "[redacted]") if self._api_key else message

    async def aclose(self) -> None:
        await self._client.close()


def _to_result(raw: Any, item: ModerationInput) -> ModerationResult:
    """Map one result object of OpenAI's reply; categories it omits (older models) count as not assessed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("category_scores"), dict):
        raise BackendError(f"OpenAI moderation sent a malformed result: {str(raw)[:200]}")
    raw_scores: dict[str, Any] = raw["category_scores"]
    raw_flags: dict[str, Any] = raw["categories"] if isinstance(raw.get("categories"), dict) else {}
    raw_applied = raw.get("category_applied_input_types")
    scores: dict[str, float] = {}
    categories: dict[str, bool] = {}
    applied: dict[str, list[str]] = {}
    for name in CATEGORIES:
        value = raw_scores.get(name)
        if value is None:
            scores[name], categories[name], applied[name] = 0.0, False, []
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BackendError(f"OpenAI moderation sent a non-numeric score for {name!r}: {value!r}")
        scores[name] = float(value)
        categories[name] = bool(raw_flags.get(name, False))
        if isinstance(raw_applied, dict):
            types = raw_applied.get(name)
            applied[name] = [str(kind) for kind in types] if isinstance(types, list) else []
        else:
            # Models before omni-moderation send no category_applied_input_types and judge text only.
            applied[name] = ["text"]
    not_assessed: dict[str, list[str]] = {}
    if item.images:
        for name in sorted(IMAGE_CATEGORIES):
            if "image" not in applied[name]:
                not_assessed[name] = ["image"]
    return ModerationResult(
        category_scores=scores,
        categories=categories,
        applied_input_types=applied,
        not_assessed=not_assessed,
        backend=OpenAIBackend.name,
    )


def _upstream_message(exc: openai.APIStatusError) -> str:
    """OpenAI's ``error.message`` if the body has one, else the SDK's summary."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return exc.message


def _data_url(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            mime = Image.MIME.get(image.format or "", "application/octet-stream")
    except (UnidentifiedImageError, OSError):
        mime = "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


async def _gather_bounded(calls: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """``asyncio.gather`` with at most ``limit`` running; the first failure cancels the rest."""
    semaphore = asyncio.Semaphore(limit)

    async def run(call: Awaitable[T]) -> T:
        async with semaphore:
            return await call

    tasks = [asyncio.ensure_future(run(call)) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def create(settings: Settings) -> OpenAIBackend:
    """Build the backend; a missing API key is a start-up error, not a per-request one."""
    api_key = settings.openai.api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        raise ConfigurationError(
            "the openai moderation backend needs an API key: set openai.api_key "
            "(SEAWALL_OPENAI__API_KEY) or OPENAI_API_KEY."
        )
    return OpenAIBackend(settings.openai, api_key=api_key)
