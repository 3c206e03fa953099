"""The contextual head alone: a linear head per label against one hidden ReLU layer.

Fits both heads on the MiniLM vectors of the training sample the contextual stage learns from
(read from the embedding cache ``seawall train`` fills; ``--cache``), and scores them, without the
fast stage or the blend, on the held-out sources never trained on (embedded here). This is the
measurement behind ``CONTEXT_HIDDEN`` in ``seawall/training/contextual.py``.

Needs ``../shared/data`` (or ``--data``) and a filled cache (run ``seawall train
--embedding-cache DIR`` once). The hidden layer is fitted by training's own function; the linear
heads skip a row's unjudged labels per label.

Usage: python bench/context_head.py [--data ../shared/data] [--cache DIR] [--hidden 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from seawall.categories import ALL_LABELS, CATEGORIES
from seawall.model.classifier import shared_classifier
from seawall.training.contextual import context_sample, context_text, fit_hidden_head
from seawall.training.datasets import HELD_OUT_SOURCES, load_sources
from seawall.training.embedding_cache import EmbeddingCache
from seawall.training.train import (
    TrainConfig,
    default_authored_dir,
    is_dev,
    load_training_rows,
    merge_duplicates,
)

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "seawall" / "embeddings")
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    started = time.time()
    config = TrainConfig(
        data_dir=args.data, authored_dir=default_authored_dir(), out_dir=Path("/nonexistent")
    )
    train = [
        row
        for row in load_training_rows(config, lambda _: None)
        if not is_dev(row.group, config.dev_fraction)
    ]
    held_out = merge_duplicates(load_sources(args.data, HELD_OUT_SOURCES))
    classifier = shared_classifier()
    if classifier.context is None:
        raise SystemExit("the shipped model has no contextual stage to embed the held-out texts with")
    featurizer = classifier.featurizer
    cache = EmbeddingCache(args.cache, None)
    texts = [context_text(featurizer, train[i].text) for i in context_sample(train)]
    missing = set(cache.missing(texts))
    if missing:
        print(f"{len(missing)} of {len(texts)} training texts are not in the cache; they are left out")
    kept = [i for i, text in zip(context_sample(train), texts, strict=True) if text not in missing]
    x = cache.get([context_text(featurizer, train[i].text) for i in kept])
    n = len(CATEGORIES)
    y = np.array([[label in train[i].labels for label in ALL_LABELS[:n]] for i in kept])
    unknown = np.array([[label in train[i].unknown for label in ALL_LABELS[:n]] for i in kept])
    x_held = classifier.context.encoder.encode([context_text(featurizer, row.text) for row in held_out])
    y_held = np.array([[label in row.labels for label in ALL_LABELS[:n]] for row in held_out])
    print(f"{len(x)} training vectors, {len(x_held)} held-out texts ({time.time() - started:.0f} s)")

    def report(name: str, scores: np.ndarray) -> None:
        any_auprc = average_precision_score(y_held.any(axis=1), scores.max(axis=1))
        judged = [j for j in range(n) if y_held[:, j].sum() >= 5]
        per_label = np.mean([average_precision_score(y_held[:, j], scores[:, j]) for j in judged])
        print(
            f"{name:24s} held-out any-category AUPRC {any_auprc:.3f}, mean per-label AUPRC {per_label:.3f} "
            f"({len(judged)} labels with 5+ positives)"
        )

    linear = np.zeros((len(x_held), n))
    for j in range(n):
        known = ~unknown[:, j]
        head = LogisticRegression(C=1.0, max_iter=300).fit(x[known], y[known, j])
        linear[:, j] = head.predict_proba(x_held)[:, 1]
    report("linear head per label", linear)
    # The head exactly as training fits it (rows with an unjudged label left out whole).
    hidden_weights, hidden_bias, weights, bias = fit_hidden_head(
        x, y, np.ones(len(x)), unknown, range(n), args.hidden
    )
    hidden_layer = np.maximum(x_held @ hidden_weights + hidden_bias, 0)
    report(f"{args.hidden} hidden units", hidden_layer @ weights + bias)


if __name__ == "__main__":
    main()
