"""The moderation service: from a request's ``input`` and ``model`` to results.

Readable top to bottom: parse the input, fetch images, pick the backend, score (long texts
also passage by passage), route image categories the backend cannot judge, apply configured
thresholds.
Both the HTTP server and the Python API (:func:`seawall.moderate`) use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from seawall.backends.base import ModerationBackend, available_backends, create_backend
from seawall.errors import ConfigurationError, ModelNotFoundError
from seawall.images import ImageLoader
from seawall.inputs import ModerationInput, parse_input
from seawall.passages import focus_segments
from seawall.results import ModerationResult
from seawall.settings import Settings

#: The model OpenAI's moderation endpoint uses when a request names none.
DEFAULT_OPENAI_MODEL = "omni-moderation-latest"
#: OpenAI's model names; each is served by the configured default backend.
OPENAI_MODEL_NAMES = frozenset(
    {
        "omni-moderation-latest",
        "omni-moderation-2024-09-26",
        "text-moderation-latest",
        "text-moderation-stable",
    }
)

#: How much neighbouring slices of a text longer than ``moderation.max_chars`` overlap (a fraction).
SLICE_OVERLAP = 0.1


@dataclass
class Moderation:
    """What one moderation call produced."""

    model: str
    results: list[ModerationResult]


class ModerationService:
    """Holds the backends and runs moderation calls."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._backends: dict[str, ModerationBackend] = {}
        self._lock = asyncio.Lock()
        self._images = ImageLoader(settings.images)

    def backend_name(self, model: str | None) -> str:
        """The backend that serves ``model`` (OpenAI's names map onto the default backend)."""
        if model is None or model in OPENAI_MODEL_NAMES:
            return self.settings.moderation.backend
        if model in available_backends():
            return model
        known = sorted(OPENAI_MODEL_NAMES | set(available_backends()))
        raise ModelNotFoundError(
            f"The model {model!r} does not exist here; use one of: {', '.join(known)}.", param="model"
        )

    async def backend(self, name: str) -> ModerationBackend:
        if name not in self._backends:
            async with self._lock:
                if name not in self._backends:
                    self._backends[name] = await asyncio.to_thread(create_backend, name, self.settings)
        return self._backends[name]

    async def moderate(
        self, raw_input: Any, model: str | None = None, *, passages: bool = True
    ) -> Moderation:
        """Moderate a request's ``input`` (any of OpenAI's shapes) with ``model``; ``passages``:
        judge long texts passage by passage too (off for callers that cut texts themselves)."""
        limits = self.settings.moderation
        backend_name = self.backend_name(model)
        inputs = parse_input(
            raw_input,
            max_items=limits.max_items,
            max_chars=limits.max_chars,
            max_images=self.settings.images.max_per_request,
        )
        inputs = await self._with_images(inputs)
        try:
            backend = await self.backend(backend_name)
        except ConfigurationError as exc:
            if backend_name == limits.backend:
                raise
            # A backend the request asked for by name that this server is not set up to run.
            raise ModelNotFoundError(
                f"The model {model!r} is not available on this server: {exc.message}", param="model"
            ) from exc
        results = await self._judge(backend, inputs, passages)
        results = await self._route_unassessed_images(inputs, results)
        if limits.thresholds:
            results = [result.with_thresholds(limits.thresholds) for result in results]
        return Moderation(model=model or backend_name, results=results)

    async def _judge(
        self, backend: ModerationBackend, inputs: list[ModerationInput], passages: bool
    ) -> list[ModerationResult]:
        """The backend's results for ``inputs``; a text longer than ``moderation.passages_over_chars``
        is also judged passage by passage (:func:`seawall.passages.focus_segments`) and keeps, per
        category, the highest score and any flag of the whole and its passages."""
        limits = self.settings.moderation
        items = list(inputs)
        owners: list[int] = []
        if passages and limits.passages_over_chars:
            for owner, item in enumerate(inputs):
                if len(item.text) > limits.passages_over_chars:
                    for passage in focus_segments(item.text, limits.passage_chars):
                        items.append(ModerationInput(texts=(passage,), passage=True))
                        owners.append(owner)
        scored: list[ModerationResult] = []
        for start in range(0, len(items), limits.max_items):
            scored.extend(await backend.moderate(items[start : start + limits.max_items]))
        results = scored[: len(inputs)]
        by_owner: dict[int, list[ModerationResult]] = {}
        for owner, result in zip(owners, scored[len(inputs) :], strict=True):
            by_owner.setdefault(owner, []).append(result)
        for owner, found in by_owner.items():
            results[owner] = _worst([results[owner], *found])
        return results

    async def moderate_texts(
        self,
        texts: Sequence[str],
        model: str | None = None,
        *,
        passages: bool = True,
        focus_chars: int | None = None,
    ) -> list[ModerationResult]:
        """One result per text, for any number of texts of any length: seawall's own checks
        (the gateway's guards), which the API's per-request limits do not bind.

        Texts go to :meth:`moderate` in batches of at most ``moderation.max_items``; a text longer
        than ``moderation.max_chars`` is judged as overlapping slices of that length, and its
        result is the worst of theirs. With ``focus_chars`` every text is also judged sentence by
        sentence (:func:`~seawall.passages.focus_segments`, each piece once), so benign context
        cannot dilute a violation; ``passages`` then adds nothing. The work grows linearly with
        the total length (at most about three characters of pieces per character of text).
        """
        limits = self.settings.moderation
        if focus_chars is not None:
            passages = False  # the texts are cut here already; the service need not cut them again
        slices = [
            [
                piece
                for whole in text_slices(text, limits.max_chars)
                for piece in dict.fromkeys(
                    [whole, *(focus_segments(whole, focus_chars) if focus_chars is not None else [])]
                )
            ]
            for text in texts
        ]
        flat = [piece for pieces in slices for piece in pieces]
        scored: list[ModerationResult] = []
        for start in range(0, len(flat), limits.max_items):
            chunk = flat[start : start + limits.max_items]
            scored.extend((await self.moderate(chunk, model, passages=passages)).results)
        results: list[ModerationResult] = []
        offset = 0
        for pieces in slices:
            results.append(_worst(scored[offset : offset + len(pieces)]))
            offset += len(pieces)
        return results

    async def _with_images(self, inputs: list[ModerationInput]) -> list[ModerationInput]:
        """Fetch and check every item's images; one item's images load as one unit (limits, cancel)."""
        loaded = []
        for item in inputs:
            if item.images:
                data = await self._images.load_all(
                    [part.url for part in item.images], [part.param for part in item.images]
                )
                item = replace(item, image_bytes=tuple(data))
            loaded.append(item)
        return loaded

    async def _route_unassessed_images(
        self, inputs: Sequence[ModerationInput], results: list[ModerationResult]
    ) -> list[ModerationResult]:
        """Ask the configured fallback backend about image categories the first backend left open."""
        fallback_name = self.settings.images.fallback_backend
        open_positions = [i for i, result in enumerate(results) if result.not_assessed]
        if not fallback_name or not open_positions:
            return results
        fallback = await self.backend(fallback_name)
        image_only = [
            ModerationInput(images=inputs[i].images, image_bytes=inputs[i].image_bytes)
            for i in open_positions
        ]
        answers = await fallback.moderate(image_only)
        merged = list(results)
        for position, answer in zip(open_positions, answers, strict=True):
            merged[position] = _merge_image_answer(results[position], answer, fallback_name)
        return merged

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()
        await self._images.aclose()


def text_slices(text: str, max_chars: int) -> list[str]:
    """``text`` as pieces of at most ``max_chars`` characters (itself when it is short enough);
    neighbouring pieces overlap by :data:`SLICE_OVERLAP` of ``max_chars``, so a passage cut by one
    boundary is whole in the next piece."""
    if len(text) <= max_chars:
        return [text]
    step = max(1, max_chars - int(max_chars * SLICE_OVERLAP))
    return [text[start : start + max_chars] for start in range(0, len(text) - max_chars + step, step)]


def _worst(results: Sequence[ModerationResult]) -> ModerationResult:
    """One result for the slices of one text: every score its highest, every flag raised by any slice."""
    first, *rest = results
    if not rest:
        return first
    scores, categories = dict(first.category_scores), dict(first.categories)
    extra_scores, extra_flags = dict(first.extra_scores), dict(first.extra_flags)
    for result in rest:
        for name, score in result.category_scores.items():
            scores[name] = max(scores.get(name, 0.0), score)
        for name, hit in result.categories.items():
            categories[name] = categories.get(name, False) or hit
        for name, score in result.extra_scores.items():
            extra_scores[name] = max(extra_scores.get(name, 0.0), score)
        for name, hit in result.extra_flags.items():
            extra_flags[name] = extra_flags.get(name, False) or hit
    return replace(
        first,
        category_scores=scores,
        categories=categories,
        extra_scores=extra_scores,
        extra_flags=extra_flags,
    )


def _merge_image_answer(result: ModerationResult, answer: ModerationResult, source: str) -> ModerationResult:
    scores = dict(result.category_scores)
    categories = dict(result.categories)
    applied = {name: list(types) for name, types in result.applied_input_types.items()}
    not_assessed = {}
    judged = []
    for name, types in result.not_assessed.items():
        if "image" in types and "image" in answer.applied_input_types.get(name, []):
            scores[name] = max(scores[name], answer.category_scores.get(name, 0.0))
            categories[name] = categories[name] or answer.categories.get(name, False)
            applied[name] = [
                kind for kind in ("text", "image") if kind in applied.get(name, []) or kind == "image"
            ]
            judged.append(name)
        else:
            not_assessed[name] = types
    notes = [*result.notes, f"image judged by {source} for: {', '.join(judged)}"] if judged else result.notes
    return replace(
        result,
        category_scores=scores,
        categories=categories,
        applied_input_types=applied,
        not_assessed=not_assessed,
        notes=notes,
    )
