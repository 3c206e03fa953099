"""The embedded moderation model at run time: numpy only, loaded from shipped artefacts.

Artefacts (written by ``seawall train``) in one directory:

* ``model.json`` — labels, feature configuration, per-label thresholds, provenance;
* ``weights.npz`` — ``weights`` (n_buckets x n_labels, float16), ``bias`` and ``idf``;
  with the semantic block also ``dense_weights`` (dims x n_labels) and ``token_weights``;
* ``static_embeddings.npy`` and ``tokenizer.json`` — the semantic block's token vectors
  (see :mod:`seawall.model.embeddings`); optional.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from seawall.categories import PARENT
from seawall.errors import ModelArtefactError
from seawall.model.embeddings import TOKENIZER_FILE, VECTORS_FILE, StaticEncoder
from seawall.model.features import FeatureConfig, Featurizer, sparse_dot

MODEL_FILE = "model.json"
#: Windows scored per numpy call: bounds memory whatever the length of the texts.
WINDOWS_PER_CHUNK = 256
WEIGHTS_FILE = "weights.npz"


def default_model_dir() -> Path:
    """The artefacts shipped inside the package."""
    return Path(str(resources.files("seawall.model") / "artefacts"))


@dataclass(frozen=True)
class ModelMeta:
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    features: FeatureConfig
    version: str
    info: dict[str, Any]


def _sigmoid(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0))), dtype=np.float32)


class TextClassifier:
    """Multi-label text scores from hashed n-gram features and a linear layer."""

    def __init__(
        self,
        meta: ModelMeta,
        weights: NDArray[np.float16],
        bias: NDArray[np.float32],
        idf: NDArray[np.float32],
        encoder: StaticEncoder | None = None,
        dense_weights: NDArray[np.floating] | None = None,
    ) -> None:
        if weights.shape != (meta.features.n_buckets, len(meta.labels)):
            raise ModelArtefactError(
                f"weights have shape {weights.shape}; expected {(meta.features.n_buckets, len(meta.labels))}"
            )
        self.meta = meta
        self.labels = meta.labels
        self._weights = weights
        self._bias = bias.astype(np.float32)
        self._featurizer = Featurizer(meta.features, idf.astype(np.float32))
        if (encoder is None) != (dense_weights is None):
            raise ModelArtefactError("the semantic block needs both its encoder and its weights")
        if (
            encoder is not None
            and dense_weights is not None
            and dense_weights.shape != (encoder.dims, len(meta.labels))
        ):
            raise ModelArtefactError(
                f"dense weights have shape {dense_weights.shape}; expected ({encoder.dims}, n_labels)"
            )
        self._encoder = encoder
        self._dense_weights = None if dense_weights is None else dense_weights.astype(np.float32)
        self._parent_pairs = [
            (meta.labels.index(child), meta.labels.index(parent))
            for child, parent in PARENT.items()
            if child in meta.labels and parent in meta.labels
        ]

    @classmethod
    def load(cls, directory: Path | None = None) -> TextClassifier:
        directory = directory or default_model_dir()
        try:
            raw = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
            arrays = np.load(directory / WEIGHTS_FILE)
            weights, bias, idf = arrays["weights"], arrays["bias"], arrays["idf"]
            encoder = None
            dense_weights = None
            if "dense_weights" in arrays:
                dense_weights = arrays["dense_weights"]
                encoder = StaticEncoder(
                    directory / TOKENIZER_FILE, np.load(directory / VECTORS_FILE), arrays["token_weights"]
                )
        except FileNotFoundError as exc:
            raise ModelArtefactError(
                f"model artefacts missing in {directory}: {exc.filename}. Run 'seawall train' to create them."
            ) from exc
        except (KeyError, ValueError, json.JSONDecodeError) as exc:
            raise ModelArtefactError(f"model artefacts in {directory} are corrupt: {exc}") from exc
        meta = ModelMeta(
            labels=tuple(raw["labels"]),
            thresholds={k: float(v) for k, v in raw["thresholds"].items()},
            features=FeatureConfig(**raw["features"]),
            version=str(raw.get("version", "unknown")),
            info=raw.get("info", {}),
        )
        return cls(meta, weights, bias, idf, encoder, dense_weights)

    def with_features(self, features: FeatureConfig) -> TextClassifier:
        """The same weights under another feature configuration (for ablations)."""
        meta = dataclasses.replace(self.meta, features=features)
        return TextClassifier(
            meta, self._weights, self._bias, self._featurizer.idf, self._encoder, self._dense_weights
        )

    def logits_for_words(self, windows: Sequence[Sequence[str]]) -> NDArray[np.float32]:
        rows = self._featurizer.transform_words(windows)
        logits = sparse_dot(rows, self._weights) + self._bias
        if self._encoder is not None and self._dense_weights is not None:
            logits += dense_features(self._encoder, windows, self.meta.features) @ self._dense_weights
        return logits

    def score(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Probabilities, shape (len(texts), len(labels)); long texts score as their worst window."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        scores = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        windows: list[list[str]] = []
        owners: list[int] = []

        def flush() -> None:
            # Windows are scored a bounded chunk at a time, so one huge text cannot allocate
            # memory in proportion to its length; each text keeps its worst window.
            probabilities = _sigmoid(self.logits_for_words(windows))
            np.maximum.at(scores, np.asarray(owners), probabilities)
            windows.clear()
            owners.clear()

        for position, text in enumerate(texts):
            for window in self._featurizer.windows(text):
                windows.append(window)
                owners.append(position)
                if len(windows) >= WINDOWS_PER_CHUNK:
                    flush()
        if windows:
            flush()
        for child, parent in self._parent_pairs:
            # A threat is harassment too: a parent never scores below its sub-category.
            np.maximum(scores[:, parent], scores[:, child], out=scores[:, parent])
        return scores


def dense_features(
    encoder: StaticEncoder, windows: Sequence[Sequence[str]], config: FeatureConfig
) -> NDArray[np.float32]:
    """The semantic block's rows for word windows, scaled against the n-gram blocks."""
    return encoder.encode([" ".join(words) for words in windows]) * np.float32(config.dense_weight)


@lru_cache(maxsize=4)
def shared_classifier(directory: Path | None = None) -> TextClassifier:
    """One loaded classifier per artefact directory, shared by every backend in the process."""
    return TextClassifier.load(directory)
