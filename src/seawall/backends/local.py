"""The embedded backend: seawall's own text model plus an NSFW image model, offline.

Images are judged for ``sexual`` only, by Yahoo's open_nsfw (:mod:`seawall.model.nsfw`). Its probability is
mapped onto the sexual category's scale before it is merged with the text score
(see :func:`nsfw_on_category_scale`), so that for images as for text the
reported score reaches the category's threshold exactly when the category is
flagged, and an operator's threshold override moves both the same way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np

from seawall.batching import MicroBatcher
from seawall.categories import CATEGORIES, EXTRA_LABELS, IMAGE_CATEGORIES
from seawall.inputs import ModerationInput
from seawall.model.classifier import TextClassifier, shared_classifier
from seawall.model.nsfw import NSFW_CHUNK, NSFW_POOL, NSFW_THRESHOLD, NSFWImageModel, nsfw_on_category_scale
from seawall.results import ModerationResult
from seawall.settings import Settings

#: Image categories the local image model judges; the rest of IMAGE_CATEGORIES are not assessed.
LOCAL_IMAGE_CATEGORIES = frozenset({"sexual"})
#: Texts longer than this many characters, and the passages the service cuts from such texts, are
#: scored in a lane of their own: a 200,000-character text takes seconds, and a short request
#: queued behind it in one lane waited for all of them.
BULK_CHARS = 5000


class LocalBackend:
    """Scores text with the embedded classifier and images with open_nsfw."""

    name = "local"

    def __init__(self, settings: Settings, classifier: TextClassifier | None = None) -> None:
        moderation = settings.moderation
        self._contextual = moderation.contextual
        self._long_chars = moderation.passages_over_chars
        # The API and the gateway's guards (gateway.guard_contextual) share one classifier: it
        # carries the contextual stage when either reads with it.
        guard_mode = settings.gateway.guard_contextual or moderation.contextual
        self._classifier = classifier or shared_classifier(
            moderation.model_dir,
            moderation.contextual != "off" or guard_mode != "off",
            moderation.multilingual,
            moderation.threads or 0,
        )
        self._images: NSFWImageModel | None = None
        self._images_lock = threading.Lock()
        self._batcher: MicroBatcher[tuple[str, str], np.ndarray] = MicroBatcher(
            self._score_texts,
            window_s=moderation.batch_window_ms / 1000,
            max_items=moderation.batch_max_items,
        )
        # Long texts and their passages: a second worker thread, so short texts never queue behind
        # them (the encoders take turns batch by batch under their own locks).
        self._bulk: MicroBatcher[tuple[str, str], np.ndarray] = MicroBatcher(
            self._score_texts,
            window_s=moderation.batch_window_ms / 1000,
            max_items=moderation.batch_max_items,
        )
        self.thresholds = dict(self._classifier.meta.thresholds)

    @property
    def classifier(self) -> TextClassifier:
        """The text classifier this backend scores with (shared in the process; see ``shared_classifier``)."""
        return self._classifier

    def _mode(self, item: ModerationInput) -> str:
        """The contextual mode for an item. With ``on``, a long text (over ``passages_over_chars``) and
        the passages the service cut from one are read as ``auto``: MiniLM on every window, sentence
        and sentence pair of a 60,000-character text costs seconds of CPU, against a fraction of a
        second in ``auto``."""
        long = item.passage or (self._long_chars > 0 and len(item.text) > self._long_chars)
        return "auto" if long and self._contextual == "on" else self._contextual

    def _score_texts(self, items: list[tuple[str, str]]) -> list[np.ndarray]:
        """Scores for (text, mode) pairs, one classifier call per mode."""
        out: list[np.ndarray] = [np.empty(0)] * len(items)
        for mode in dict.fromkeys(mode for _, mode in items):
            positions = [i for i, (_, wanted) in enumerate(items) if wanted == mode]
            scores = self._classifier.score([items[i][0] for i in positions], mode)
            for i, row in zip(positions, scores, strict=True):
                out[i] = row
        return out

    def _image_model(self) -> NSFWImageModel:
        with self._images_lock:  # one load, even when the first image requests arrive together
            if self._images is None:
                self._images = NSFWImageModel()
            return self._images

    async def moderate(self, inputs: Sequence[ModerationInput]) -> list[ModerationResult]:
        text_positions = [i for i, item in enumerate(inputs) if item.texts]
        bulk = [i for i in text_positions if inputs[i].passage or len(inputs[i].text) > BULK_CHARS]
        in_bulk = frozenset(bulk)
        quick = [i for i in text_positions if i not in in_bulk]
        quick_scores, bulk_scores = await asyncio.gather(
            self._batcher.submit([(inputs[i].text, self._mode(inputs[i])) for i in quick]),
            self._bulk.submit([(inputs[i].text, self._mode(inputs[i])) for i in bulk]),
        )
        scores_by_position = dict(zip([*quick, *bulk], [*quick_scores, *bulk_scores], strict=True))
        image_scores = await self._score_images(inputs)
        return [
            self._result(item, scores_by_position.get(i), image_scores.get(i))
            for i, item in enumerate(inputs)
        ]

    async def _score_images(self, inputs: Sequence[ModerationInput]) -> dict[int, float]:
        wanted = [(i, data) for i, item in enumerate(inputs) for data in item.image_bytes]
        if not wanted:
            return {}
        # Loading the model takes a while the first time: not on the event loop.
        model = self._images if self._images is not None else await asyncio.to_thread(self._image_model)
        loop = asyncio.get_running_loop()
        worst: dict[int, float] = {}
        # One chunk at a time: between its chunks a request with many images goes back in the queue.
        for start in range(0, len(wanted), NSFW_CHUNK):
            chunk = wanted[start : start + NSFW_CHUNK]
            nsfw = await loop.run_in_executor(NSFW_POOL, model.score, [data for _, data in chunk])
            for (position, _), score in zip(chunk, nsfw, strict=True):
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
                # On the category's own scale, so that score >= threshold is exactly the flag.
                threshold = self.thresholds.get("sexual", NSFW_THRESHOLD)
                scores["sexual"] = max(scores["sexual"], nsfw_on_category_scale(image_nsfw, threshold))
                categories["sexual"] = scores["sexual"] >= threshold
        return ModerationResult(
            category_scores=scores,
            categories=categories,
            applied_input_types=applied,
            extra_scores=extra,
            extra_flags={name: extra[name] >= self.thresholds.get(name, 0.5) for name in EXTRA_LABELS},
            not_assessed=not_assessed,
            backend=self.name,
        )

    async def aclose(self) -> None:
        await self._batcher.aclose()
        await self._bulk.aclose()


def create(settings: Settings) -> LocalBackend:
    return LocalBackend(settings)
