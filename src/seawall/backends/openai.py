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
loaded is sent by its original URL. At most ``MAX_PARALLEL_REQUESTS`` requests
are in flight at once for the whole backend, shared by concurrent calls.

Failures: the API client sees which backend failed and the upstream HTTP
status (or that it timed out, was unreachable or replied nonsense); the URL, the
status and the error's ``type`` and ``code`` go to the ``seawall.backends`` log, with
the API key redacted. The upstream's error message or malformed reply is logged only
as its length and hash: it can quote the moderated text (see :mod:`seawall.backends.remote`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import Awaitable, Sequence
from typing import Any

import openai
from openai.types import ModerationCreateResponse, ModerationMultiModalInputParam
from PIL import Image, UnidentifiedImageError

from seawall.backends.remote import (
    MALFORMED,
    TIMED_OUT,
    UNREACHABLE,
    fingerprint,
    gather_or_cancel,
    http_status,
    identifier,
    upstream_error,
)
from seawall.categories import CATEGORIES, IMAGE_CATEGORIES
from seawall.errors import BackendError, ConfigurationError
from seawall.inputs import ModerationInput
from seawall.results import ModerationResult
from seawall.settings import OpenAIBackendSettings, Settings

#: Upstream requests in flight at once for one backend, however many ``moderate`` calls share it;
#: more buys little and invites 429s.
MAX_PARALLEL_REQUESTS = 4


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
        self._slots = asyncio.Semaphore(MAX_PARALLEL_REQUESTS)

    async def moderate(self, inputs: Sequence[ModerationInput]) -> list[ModerationResult]:
        text_positions = [i for i, item in enumerate(inputs) if not item.images]
        image_positions = [i for i, item in enumerate(inputs) if item.images]
        size = self.settings.max_batch
        chunks = [text_positions[start : start + size] for start in range(0, len(text_positions), size)]
        calls: list[Awaitable[list[ModerationResult]]] = [
            self._moderate_texts([inputs[i] for i in chunk]) for chunk in chunks
        ]
        calls += [self._moderate_parts(inputs[i]) for i in image_positions]
        answers = await gather_or_cancel(calls, self._slots)
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
        where = f"OpenAI moderation at {self.settings.base_url}"
        try:
            response = await self._client.moderations.create(model=self.settings.model, input=payload)
        except openai.APITimeoutError as exc:
            raise self._error(
                TIMED_OUT,
                f"{where} did not answer within {self.settings.timeout_s} s "
                f"({self.settings.max_retries} retries)",
                timeout=True,
            ) from exc
        except openai.APIStatusError as exc:
            raise self._error(
                http_status(exc.status_code),
                f"{where} answered HTTP {exc.status_code}: {_upstream_error(exc)}",
            ) from exc
        except openai.APIConnectionError as exc:
            raise self._error(
                UNREACHABLE, f"{where} could not be reached: {exc!r} (cause: {exc.__cause__!r})"
            ) from exc
        except openai.OpenAIError as exc:
            raise self._error(MALFORMED, f"{where} failed: {exc!r}") from exc
        if not isinstance(response, ModerationCreateResponse):  # the SDK hands back non-JSON bodies as-is
            raise self._error(
                MALFORMED, f"{where} sent a reply that is not JSON: {fingerprint(str(response))}"
            )
        raw_results = response.to_dict(warnings=False).get("results")
        if not isinstance(raw_results, list) or len(raw_results) != len(items):
            count = len(raw_results) if isinstance(raw_results, list) else "no"
            raise self._error(MALFORMED, f"{where} sent {count} results for {len(items)} inputs")
        try:
            return [_to_result(raw, item) for raw, item in zip(raw_results, items, strict=True)]
        except ValueError as exc:
            raise self._error(MALFORMED, f"{where} sent a malformed reply: {exc}") from exc

    def _error(self, reason: str, detail: str, *, timeout: bool = False) -> BackendError:
        """Log ``detail`` (key redacted) and return the generic error clients see."""
        return upstream_error(self.name, reason, detail, secret=self._api_key, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.close()


def _to_result(raw: Any, item: ModerationInput) -> ModerationResult:
    """Map one result object of OpenAI's reply (a :class:`ValueError` if it is malformed).

    Categories OpenAI did not judge for an input type the item has are listed in
    ``not_assessed``, never passed as safe: an image category whose applied input
    types leave ``image`` out, and every input type of a category an older model
    omits altogether (``text-moderation-*`` has no ``illicit`` categories).
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("category_scores"), dict):
        raise ValueError(f"a result without category_scores: {fingerprint(str(raw))}")
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
            raise ValueError(f"a non-numeric score for {name!r}: {value!r}")
        scores[name] = float(value)
        categories[name] = bool(raw_flags.get(name, False))
        if isinstance(raw_applied, dict):
            types = raw_applied.get(name)
            applied[name] = [str(kind) for kind in types] if isinstance(types, list) else []
        else:
            # Models before omni-moderation send no category_applied_input_types and judge text only.
            applied[name] = ["text"] if item.texts else []
    not_assessed: dict[str, list[str]] = {}
    for name in CATEGORIES:
        present = [
            *(["text"] if item.texts else []),
            *(["image"] if item.images and name in IMAGE_CATEGORIES else []),
        ]
        missing = [kind for kind in present if kind not in applied[name]]
        if missing:
            not_assessed[name] = missing
    return ModerationResult(
        category_scores=scores,
        categories=categories,
        applied_input_types=applied,
        not_assessed=not_assessed,
        backend=OpenAIBackend.name,
    )


def _upstream_error(exc: openai.APIStatusError) -> str:
    """What the log says of an error reply: OpenAI's ``error.type`` and ``error.code`` when they are
    identifiers, and its ``error.message`` (or the whole body) only as a :func:`fingerprint`."""
    body = exc.body
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"body {fingerprint(exc.response.text)}"
    fields = [f"{name} {value}" for name in ("type", "code") if (value := identifier(error.get(name)))]
    message = error.get("message")
    fields.append(
        f"message {fingerprint(message)}"
        if isinstance(message, str)
        else f"body {fingerprint(exc.response.text)}"
    )
    return ", ".join(fields)


def _data_url(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            mime = Image.MIME.get(image.format or "", "application/octet-stream")
    except (UnidentifiedImageError, OSError):
        mime = "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def create(settings: Settings) -> OpenAIBackend:
    """Build the backend; a missing API key is a start-up error, not a per-request one."""
    configured = settings.openai.api_key
    api_key = configured.get_secret_value() if configured else os.environ.get("OPENAI_API_KEY")
    if not api_key:
        raise ConfigurationError(
            "the openai moderation backend needs an API key: set openai.api_key "
            "(SEAWALL_OPENAI__API_KEY) or OPENAI_API_KEY."
        )
    return OpenAIBackend(settings.openai, api_key=api_key)
