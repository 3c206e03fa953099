"""``seawall train``: from ``shared/data`` and the project's authored data to shipped artefacts.

Steps: load and map every source; merge duplicate texts (positive labels win);
split by group (templated variants stay together) into train and dev; fit one
logistic regression per label on hashed n-gram features; pick each label's
threshold on the dev split; score the held-out sources; write the artefacts and
the model card.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from seawall.categories import ALL_LABELS
from seawall.errors import DataError
from seawall.evaluation import evaluate_scores
from seawall.metrics import best_f1_threshold
from seawall.model.classifier import MODEL_FILE, WEIGHTS_FILE, ModelMeta, TextClassifier
from seawall.model.features import FeatureConfig, Featurizer, SparseRows
from seawall.training.datasets import (
    HELD_OUT_SOURCES,
    TRAINING_SOURCES,
    Example,
    authored,
    load_sources,
)

Progress = Callable[[str], None]


@dataclass
class TrainConfig:
    data_dir: Path
    authored_dir: Path | None
    out_dir: Path
    dev_fraction: float = 0.1
    regularisation_c: float = 4.0
    #: How much more a positive row weighs than a negative one, per label, at most.
    max_positive_boost: float = 8.0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    #: Optional cap on rows per source (for quick runs and tests).
    limit_per_source: int | None = None
    sources: tuple[str, ...] | None = None


def default_authored_dir() -> Path | None:
    """``data/authored`` of a source checkout, if this is one."""
    candidate = Path(__file__).resolve().parents[3] / "data" / "authored"
    return candidate if candidate.is_dir() else None


def merge_duplicates(rows: list[Example]) -> list[Example]:
    """One row per normalised text; labels are unioned (the stricter reading wins)."""
    merged: dict[str, Example] = {}
    for row in rows:
        key = hashlib.sha1(" ".join(Featurizer.words(row.text)).encode()).hexdigest()
        if key in merged:
            kept = merged[key]
            merged[key] = Example(
                kept.text, kept.labels | row.labels, kept.source, kept.group, max(kept.weight, row.weight)
            )
        else:
            merged[key] = row
    return list(merged.values())


def is_dev(group: str, fraction: float) -> bool:
    bucket = int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def label_matrix(rows: list[Example]) -> NDArray[np.bool_]:
    return np.array([[label in row.labels for label in ALL_LABELS] for row in rows], dtype=bool)


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


def train(config: TrainConfig, progress: Progress = print) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    started = time.time()
    sources = TRAINING_SOURCES
    if config.sources:
        unknown = set(config.sources) - set(TRAINING_SOURCES)
        if unknown:
            raise DataError(f"unknown sources: {sorted(unknown)}")
        sources = {name: TRAINING_SOURCES[name] for name in config.sources}

    def counted(name: str, count: int) -> None:
        progress(f"loaded {name}: {count} rows")

    rows = load_sources(config.data_dir, sources, counted)
    if config.authored_dir is not None:
        own = authored(config.authored_dir)
        progress(f"loaded authored: {len(own)} rows")
        rows.extend(own)
    if config.limit_per_source:
        by_source: dict[str, list[Example]] = {}
        for row in rows:
            by_source.setdefault(row.source, []).append(row)
        rows = [row for group in by_source.values() for row in group[: config.limit_per_source]]
    rows = merge_duplicates(rows)
    train_rows = [row for row in rows if not is_dev(row.group, config.dev_fraction)]
    dev_rows = [row for row in rows if is_dev(row.group, config.dev_fraction)]
    held_out = merge_duplicates(load_sources(config.data_dir, HELD_OUT_SOURCES))
    progress(f"{len(train_rows)} train rows, {len(dev_rows)} dev rows, {len(held_out)} held-out rows")

    featurizer = Featurizer(config.features)
    raw_train = featurizer.transform([row.text for row in train_rows])
    idf = document_frequency_idf(raw_train, config.features.n_buckets)
    featurizer = Featurizer(config.features, idf)
    progress(f"featurising ({time.time() - started:.0f}s)")
    x_train = _to_csr(featurizer.transform([row.text for row in train_rows]), config.features.n_buckets)
    y_train = label_matrix(train_rows)
    base_weight = np.array([row.weight for row in train_rows], dtype=np.float64)

    weights = np.zeros((config.features.n_buckets, len(ALL_LABELS)), dtype=np.float32)
    bias = np.zeros(len(ALL_LABELS), dtype=np.float32)
    for index, label in enumerate(ALL_LABELS):
        positives = y_train[:, index]
        if positives.sum() < 5:
            progress(f"label {label}: only {int(positives.sum())} positives, skipped")
            bias[index] = -8.0
            continue
        # Rare labels get their positives up-weighted (bounded), so they are not drowned out.
        boost = min(config.max_positive_boost, max(1.0, np.sqrt((~positives).sum() / positives.sum()) / 2))
        sample_weight = base_weight * np.where(positives, boost, 1.0)
        model = LogisticRegression(C=config.regularisation_c, solver="liblinear", max_iter=200)
        model.fit(x_train, positives, sample_weight=sample_weight)
        weights[:, index] = model.coef_[0]
        bias[index] = model.intercept_[0]
        progress(
            f"label {label}: {int(positives.sum())} positives, boost {boost:.1f} "
            f"({time.time() - started:.0f}s)"
        )

    meta = ModelMeta(
        labels=ALL_LABELS,
        thresholds={label: 0.5 for label in ALL_LABELS},
        features=config.features,
        version=time.strftime("%Y.%m.%d"),
        info={},
    )
    classifier = TextClassifier(meta, weights.astype(np.float16), bias, idf)
    dev_scores = classifier.score([row.text for row in dev_rows])
    y_dev = label_matrix(dev_rows)
    thresholds = {}
    for index, label in enumerate(ALL_LABELS):
        # F-beta with beta < 1 favours precision: a moderation flag that cries wolf gets switched off.
        thresholds[label] = round(
            best_f1_threshold(y_dev[:, index], dev_scores[:, index], beta=0.7, floor=0.2), 4
        )
    report = {
        "dev": evaluate_scores(y_dev, dev_scores, thresholds),
        "held_out": evaluate_scores(
            label_matrix(held_out), classifier.score([r.text for r in held_out]), thresholds
        ),
        "rows": {"train": len(train_rows), "dev": len(dev_rows), "held_out": len(held_out)},
        "sources": sorted({row.source for row in rows}),
        "seconds": round(time.time() - started, 1),
    }
    write_artefacts(config.out_dir, meta, thresholds, weights, bias, idf, report)
    progress(f"wrote artefacts to {config.out_dir} ({report['seconds']}s)")
    return report


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
                "version": meta.version,
                "info": {"report": report},
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
