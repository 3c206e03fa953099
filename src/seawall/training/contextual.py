"""Training the contextual stage: a head over MiniLM sentence vectors, blended per label.

The fast stage (hashed n-grams + static embeddings) is trained first. The
contextual head reads the 384-dimensional MiniLM vector of the same word window
the fast stage scores: one hidden ReLU layer shared by every label
(``CONTEXT_HIDDEN`` units, scikit-learn's MLP, multi-label; with several
``CONTEXT_HEAD_SEEDS``, one such head per seed, averaged), or, with 0 units, a logistic
regression per label. Measured on the held-out sources with the head
alone (no blend; ``python bench/context_head.py``): any-category AUPRC 0.735
linear, 0.787 with 256 hidden units; mean per-label AUPRC 0.718 and 0.791. The
two stages are then stacked per label on the dev split —
``logit = a·fast + b·context + c`` — so the blend learns how much each stage is
worth for each category.

Embedding is the slow part on a CPU, so the rows the head learns from are a
per-source sample (``CONTEXT_ROWS_PER_SOURCE``), and rows in scripts MiniLM's
English vocabulary cannot read are left to the fast stage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from seawall.categories import ALL_LABELS, CATEGORIES
from seawall.metrics import average_precision, rate_matched_threshold
from seawall.model.classifier import MIN_LATIN_SHARE, TextClassifier, anchor, sigmoid
from seawall.model.context import latin_share
from seawall.model.features import Featurizer
from seawall.training.datasets import Example
from seawall.training.embedding_cache import EmbeddingCache

if TYPE_CHECKING:
    from seawall.training.finetune import FinetuneConfig

#: Rows per source the contextual head learns from (a deterministic sample).
CONTEXT_ROWS_PER_SOURCE = 8000
#: Hidden units of the contextual head (0: a linear head per label).
CONTEXT_HIDDEN = 256
#: A subfolder of ``data/authored`` whose rows only the contextual head learns from (never the fast
#: stage or the dev split): texts whose label turns on their frame, such as a benign how-to question
#: beside a method request in the same words. The fast stage, a bag of n-grams, can only learn them as
#: word weights, and those move the scores of every other text that shares the words.
CONTEXT_ONLY_FOLDER = "contextual_stage"
#: Seeds of the hidden heads fitted and averaged into the contextual head (``fit_averaged_heads``).
#: The shipped head is seed 0 alone. Measured in session 35 on the shipped data (same fast stage):
#: seed 1 alone read 0.8316 any-category AUPRC on the held-out sources against seed 0's 0.8364, and
#: the mean of seeds 0-4 read 0.8366 with a false-positive rate of 0.0676 against 0.0539 (its dev
#: thresholds moved), so it was not shipped. With the shared blended threshold (session 38) both gain on
#: the held-out sources, and the mean of seeds 0-4 reads 0.8436 there and 0.8786 on the web-register set
#: against seed 0's 0.8404 and 0.8838: still no clear winner, so still seed 0 alone.
CONTEXT_HEAD_SEEDS: tuple[int, ...] = (0,)


def context_text(featurizer: Featurizer, text: str) -> str:
    """What the contextual stage embeds for a short text: its first scoring window's words."""
    return " ".join(featurizer.words(text)[: featurizer.config.window_words])


def _rank(row: Example) -> str:
    return hashlib.sha1(f"{row.source}|{row.text}".encode()).hexdigest()


def context_sample(rows: Sequence[Example], per_source: int = CONTEXT_ROWS_PER_SOURCE) -> list[int]:
    """Indices of the rows the contextual stage learns from: readable, at most ``per_source`` a source."""
    by_source: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        if latin_share(row.text) >= MIN_LATIN_SHARE:
            by_source.setdefault(row.source, []).append(index)
    chosen: list[int] = []
    for indices in by_source.values():
        indices.sort(key=lambda i: _rank(rows[i]))
        chosen.extend(indices[:per_source])
    return sorted(chosen)


def finetune_on_training_rows(
    train_rows: Sequence[Example],
    targets: NDArray[np.bool_],
    ignored: NDArray[np.bool_],
    featurizer: Featurizer,
    rows_per_source: int,
    config: FinetuneConfig,
    store: Path,
    tokenizer_file: Path,
    progress: Callable[[str], None],
) -> tuple[Path, dict[str, Any]]:
    """MiniLM fine-tuned on a per-source sample of the training rows (the windows the stage embeds,
    the fast stage's labels and the labels it must not learn from), as an int8 ONNX file."""
    from seawall.training.finetune import finetuned_encoder_file

    chosen = context_sample(train_rows, rows_per_source)
    texts = [context_text(featurizer, train_rows[i].text) for i in chosen]
    progress(f"fine-tuning the encoder on {len(chosen)} rows (at most {rows_per_source} a source)")
    return finetuned_encoder_file(
        texts, targets[chosen], ~ignored[chosen], tokenizer_file, store, config, progress
    )


#: A hidden head: (hidden weights, hidden bias, output weights, output bias).
HiddenHead = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]


@dataclass
class ContextFit:
    """What training the contextual stage produced."""

    weights: NDArray[np.float32]
    bias: NDArray[np.float32]
    blend: NDArray[np.float32]
    #: The hidden layer (None for a linear head).
    hidden_weights: NDArray[np.float32] | None
    hidden_bias: NDArray[np.float32] | None
    #: Raw-probability threshold per label on the blended path.
    thresholds: dict[str, float]
    band: tuple[float, float]
    #: Dev-sample figures per band tried: share of rows sent to the encoder, any-category AUPRC.
    bands: list[dict[str, float]]
    rows: dict[str, int]


#: Bands tried for ``auto`` (calibrated fast scores that send a window to the encoder).
CANDIDATE_BANDS = ((0.3, 0.7), (0.2, 0.8), (0.15, 0.9), (0.1, 0.95), (0.05, 0.98))
#: The widest band whose dev share stays under this is the default (dev is ~40 % positive;
#: ordinary traffic, mostly clearly benign, sends far fewer texts to the encoder).
MAX_BAND_SHARE = 0.45


def shared_category_threshold(
    category_probabilities: NDArray[np.floating],
    any_positive: NDArray[np.bool_],
    per_label: dict[str, float],
) -> float:
    """One blended-path threshold for every category, flagging as many harmless dev rows as the
    per-label thresholds would.

    The blend is a logistic stacker fitted on dev, so its probabilities share one scale; anchoring
    each category's own F-beta threshold at 0.5 bent that scale differently per category, which
    hurt the ranking by the worst category and moved with the head's seed. Rule K2 (session 38),
    three head seeds, each against the per-label rule at the same seed (``bench/compare_models.py``):
    held-out sources any-category AUPRC +0.0040 / +0.0049 / +0.0055 (each interval above 0), their
    false-positive rate -0.0008 / -0.0040 / -0.0072; web-register set AUPRC -0.0018 / -0.0002 /
    +0.0026, false-positive rate +0.0187 / +0.0031 / -0.0218; the how-to probe's benign questions
    flagged +3.8 / +3.2 / +6.4 points.
    The shared threshold was 0.404 / 0.409 / 0.404 across the seeds.
    """
    harmless = category_probabilities[~any_positive]
    if not len(harmless):
        return 0.5  # nothing harmless on dev: no flag rate to keep (rate_matched_threshold's default)
    limits = np.array([per_label[label] for label in CATEGORIES], dtype=np.float64)
    flag_rate = float((harmless >= limits).any(axis=1).mean())
    return rate_matched_threshold(harmless.max(axis=1), flag_rate)


def fit_context_stage(
    train_rows: Sequence[Example],
    dev_rows: Sequence[Example],
    train_weight: NDArray[np.float64],
    ignored: NDArray[np.bool_],
    fast: TextClassifier,
    fast_thresholds: NDArray[np.float32],
    cache: EmbeddingCache,
    fit: Callable[[Any, NDArray[np.bool_], NDArray[np.float64]], tuple[NDArray[np.float64], float]],
    threshold: Callable[[NDArray[np.bool_], NDArray[np.float32]], float],
    labels_fitted: Sequence[int],
    progress: Callable[[str], None],
    workers: int = 2,
    rows_per_source: int = CONTEXT_ROWS_PER_SOURCE,
    hidden: int = CONTEXT_HIDDEN,
    head_seeds: Sequence[int] = CONTEXT_HEAD_SEEDS,
    masked: bool = False,
) -> ContextFit:
    """Head per label on the train sample's vectors; blend and thresholds on the dev sample."""
    from sklearn.linear_model import LogisticRegression

    featurizer = fast.featurizer
    train_at = context_sample(train_rows, rows_per_source)
    dev_at = context_sample(dev_rows, rows_per_source)
    train_texts = [context_text(featurizer, train_rows[i].text) for i in train_at]
    dev_texts = [context_text(featurizer, dev_rows[i].text) for i in dev_at]
    cache.fill(train_texts + dev_texts, progress)
    x_train = cache.get(train_texts)
    x_dev = cache.get(dev_texts)
    y_train = np.array([[label in train_rows[i].labels for label in ALL_LABELS] for i in train_at])
    y_dev = np.array([[label in dev_rows[i].labels for label in ALL_LABELS] for i in dev_at])
    # Labels a dev row's source never judged count neither way in the blend or the thresholds.
    unknown_dev = np.array([[label in dev_rows[i].unknown for label in ALL_LABELS] for i in dev_at])
    n_labels = len(ALL_LABELS)
    sample_weight = train_weight[train_at]
    hidden_weights: NDArray[np.float32] | None = None
    hidden_bias: NDArray[np.float32] | None = None
    if hidden:
        partial_rows = int(ignored[train_at].any(axis=1).sum())
        progress(
            f"{partial_rows} of {len(train_at)} rows leave a label unjudged: "
            + ("they count for the labels they judge" if masked else "the hidden head leaves them out whole")
        )
        hidden_weights, hidden_bias, weights, bias = fit_averaged_heads(
            x_train,
            y_train,
            sample_weight,
            ignored[train_at],
            labels_fitted,
            hidden,
            head_seeds,
            progress,
            fit_masked_hidden_head if masked else fit_hidden_head,
        )
    else:
        weights = np.zeros((x_train.shape[1], n_labels), dtype=np.float32)
        bias = np.full(n_labels, -8.0, dtype=np.float32)

        def fit_one(index: int) -> tuple[int, NDArray[np.float64], float]:
            coef, intercept = fit(x_train, y_train[:, index], sample_weight * ~ignored[train_at, index])
            return index, coef, intercept

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for index, coef, intercept in pool.map(fit_one, labels_fitted):
                weights[:, index] = coef
                bias[index] = intercept
    progress(f"contextual head fitted on {len(train_at)} rows")

    fast_dev = fast.logits_for_words(
        [featurizer.words(dev_rows[i].text)[: featurizer.config.window_words] for i in dev_at]
    )
    hidden_dev = x_dev
    if hidden_weights is not None and hidden_bias is not None:
        hidden_dev = np.maximum(x_dev @ hidden_weights + hidden_bias, np.float32(0))
    context_dev = hidden_dev @ weights + bias
    blend = np.tile(np.array([1.0, 0.0, 0.0], dtype=np.float32), (n_labels, 1))
    for index in labels_fitted:
        known = ~unknown_dev[:, index]
        positives = y_dev[known, index]
        if positives.sum() < 5 or positives.all():
            continue
        stacker = LogisticRegression(C=10.0, max_iter=500)
        stacker.fit(np.stack([fast_dev[known, index], context_dev[known, index]], axis=1), positives)
        blend[index] = [stacker.coef_[0][0], stacker.coef_[0][1], stacker.intercept_[0]]
    blended = sigmoid(blend[:, 0] * fast_dev + blend[:, 1] * context_dev + blend[:, 2])
    thresholds = {
        label: threshold(y_dev[~unknown_dev[:, i], i], blended[~unknown_dev[:, i], i].astype(np.float32))
        for i, label in enumerate(ALL_LABELS)
    }
    categories = slice(0, len(CATEGORIES))
    counted = y_dev.any(axis=1) | ~unknown_dev.any(axis=1)
    any_positive: NDArray[np.bool_] = np.asarray(y_dev[counted][:, categories].any(axis=1), dtype=bool)
    shared = shared_category_threshold(blended[counted][:, categories], any_positive, thresholds)
    thresholds.update(dict.fromkeys(CATEGORIES, shared))
    progress(f"blended path: one threshold {shared:.4f} for every category (the per-label rule's flag rate)")

    # The band for "auto": how many dev windows it sends to the encoder, and what that buys.
    fast_calibrated = anchor(sigmoid(fast_dev), fast_thresholds)
    blended_calibrated = anchor(
        blended.astype(np.float32), np.array([thresholds[label] for label in ALL_LABELS], dtype=np.float32)
    )
    tried: list[dict[str, Any]] = []
    for low, high in CANDIDATE_BANDS:
        sent = np.asarray(((fast_calibrated >= low) & (fast_calibrated <= high)).any(axis=1), dtype=bool)
        share = float(sent[counted].mean())
        mixed = np.where(sent[:, None], blended_calibrated, fast_calibrated)[counted]
        tried.append(
            {
                "low": low,
                "high": high,
                "share": round(share, 4),
                "any_auprc": round(average_precision(any_positive, mixed[:, categories].max(axis=1)), 4),
            }
        )
    within = [band for band in tried if band["share"] <= MAX_BAND_SHARE] or tried[:1]
    chosen = within[-1]
    for name, scores in (("off", fast_calibrated), ("on", blended_calibrated)):
        auprc = average_precision(any_positive, scores[counted][:, categories].max(axis=1))
        tried.append({"mode": name, "share": 0.0 if name == "off" else 1.0, "any_auprc": round(auprc, 4)})
    progress(f"contextual bands on dev: {tried}")
    return ContextFit(
        weights,
        bias,
        blend.astype(np.float32),
        hidden_weights,
        hidden_bias,
        thresholds,
        (chosen["low"], chosen["high"]),
        tried,
        {"train": len(train_at), "dev": len(dev_at)},
    )


def fit_hidden_head(
    x: NDArray[np.float32],
    y: NDArray[np.bool_],
    sample_weight: NDArray[np.float64],
    ignored: NDArray[np.bool_],
    labels_fitted: Sequence[int],
    hidden: int,
    seed: int = 0,
) -> HiddenHead:
    """One hidden ReLU layer shared by all labels: (hidden weights, hidden bias, output weights,
    output bias). The network learns every label at once, so a row any of whose labels it must
    not learn from (a source's unjudged label, a screened negative) is left out whole. ``seed``
    drives the initial weights and the early-stopping split."""
    from sklearn.neural_network import MLPClassifier

    keep = ~ignored.any(axis=1)
    network = MLPClassifier(
        hidden_layer_sizes=(hidden,),
        alpha=1e-3,
        batch_size=512,
        max_iter=40,
        early_stopping=True,
        n_iter_no_change=4,
        random_state=seed,
    )
    network.fit(x[keep], y[keep], sample_weight=sample_weight[keep])
    weights = np.zeros((hidden, y.shape[1]), dtype=np.float32)
    bias = np.full(y.shape[1], -8.0, dtype=np.float32)
    # Labels too rare to fit keep the linear head's "never" (a bias of -8), as before.
    for index in labels_fitted:
        weights[:, index] = network.coefs_[1][:, index]
        bias[index] = network.intercepts_[1][index]
    return (
        network.coefs_[0].astype(np.float32),
        network.intercepts_[0].astype(np.float32),
        weights,
        bias,
    )


#: The masked head's recipe, as close to ``fit_hidden_head``'s MLPClassifier as a masked loss allows.
MASKED_HEAD_L2 = 1e-3
MASKED_HEAD_STEP = 1e-3
MASKED_HEAD_BATCH = 512
MASKED_HEAD_EPOCHS = 40
MASKED_HEAD_PATIENCE = 4
MASKED_HEAD_VALIDATION = 0.1


def fit_masked_hidden_head(
    x: NDArray[np.float32],
    y: NDArray[np.bool_],
    sample_weight: NDArray[np.float64],
    ignored: NDArray[np.bool_],
    labels_fitted: Sequence[int],
    hidden: int,
    seed: int = 0,
) -> HiddenHead:
    """One hidden ReLU layer shared by all labels, like ``fit_hidden_head``, but each row counts for
    every label it judges: the loss of an ignored (row, label) pair is masked out instead of the
    row being left out whole. Weighted binary cross-entropy over the fitted labels, L2 on the
    weights, Adam; early stopping on the masked loss of a held-back tenth of the rows, keeping the
    best epoch's weights. Needs torch (the ``train`` extra)."""
    import torch

    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    fitted = np.array(sorted(labels_fitted), dtype=np.int64)
    mask = ~ignored[:, fitted]
    useful = mask.any(axis=1)  # a row that judges none of the fitted labels has nothing to teach
    rows = np.flatnonzero(useful)
    generator.shuffle(rows)
    n_validation = max(1, int(len(rows) * MASKED_HEAD_VALIDATION))
    validation, train = rows[:n_validation], rows[n_validation:]

    def tensors(at: NDArray[np.int64]) -> tuple[Any, Any, Any, Any]:
        """Vectors, targets, per-(row, label) weights (0 where ignored) and per-row weights."""
        return (
            torch.from_numpy(np.ascontiguousarray(x[at], dtype=np.float32)),
            torch.from_numpy(y[at][:, fitted].astype(np.float32)),
            torch.from_numpy((sample_weight[at, None] * mask[at]).astype(np.float32)),
            torch.from_numpy(sample_weight[at].astype(np.float32)),
        )

    x_train, y_train, w_train, r_train = tensors(train)
    x_valid, y_valid, w_valid, r_valid = tensors(validation)
    first, last = torch.nn.Linear(x.shape[1], hidden), torch.nn.Linear(hidden, len(fitted))
    network = torch.nn.Sequential(first, torch.nn.ReLU(), last)
    optimiser = torch.optim.Adam(network.parameters(), lr=MASKED_HEAD_STEP)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    # MLPClassifier's loss: the weighted mean over rows of the summed label losses, plus
    # alpha / 2 * squared weights / rows.
    l2 = MASKED_HEAD_L2 / (2 * len(train))

    def loss(xb: Any, yb: Any, wb: Any, rb: Any) -> Any:
        return (bce(network(xb), yb) * wb).sum() / rb.sum().clamp_min(1e-12)

    best = (float("inf"), [p.detach().clone() for p in network.parameters()])
    stale = 0
    for _epoch in range(MASKED_HEAD_EPOCHS):
        network.train()
        order = torch.from_numpy(generator.permutation(len(train)))
        for start in range(0, len(train), MASKED_HEAD_BATCH):
            batch = order[start : start + MASKED_HEAD_BATCH]
            penalty = l2 * ((first.weight**2).sum() + (last.weight**2).sum())
            value = loss(x_train[batch], y_train[batch], w_train[batch], r_train[batch]) + penalty
            optimiser.zero_grad()
            value.backward()
            optimiser.step()
        network.eval()
        with torch.no_grad():
            validation_loss = float(loss(x_valid, y_valid, w_valid, r_valid))
        if validation_loss < best[0] - 1e-4:
            best = (validation_loss, [p.detach().clone() for p in network.parameters()])
            stale = 0
        else:
            stale += 1
            if stale >= MASKED_HEAD_PATIENCE:
                break
    hidden_w, hidden_b, out_w, out_b = (p.numpy() for p in best[1])
    weights = np.zeros((hidden, y.shape[1]), dtype=np.float32)
    bias = np.full(y.shape[1], -8.0, dtype=np.float32)
    weights[:, fitted] = out_w.T
    bias[fitted] = out_b
    return hidden_w.T.astype(np.float32), hidden_b.astype(np.float32), weights, bias


def fit_averaged_heads(
    x: NDArray[np.float32],
    y: NDArray[np.bool_],
    sample_weight: NDArray[np.float64],
    ignored: NDArray[np.bool_],
    labels_fitted: Sequence[int],
    hidden: int,
    seeds: Sequence[int],
    progress: Callable[[str], None],
    fit_one: Callable[..., HiddenHead] = fit_hidden_head,
) -> HiddenHead:
    """One hidden head per seed, joined into a single wider head whose logits are their mean: the
    hidden layers side by side, each output layer scaled by 1/len(seeds). A head's figures move
    with its seed (initial weights, early-stopping split); the mean is steadier. ``seeds`` must not
    be empty."""
    heads = []
    for seed in seeds:
        heads.append(fit_one(x, y, sample_weight, ignored, labels_fitted, hidden, seed))
        progress(f"head {len(heads)}/{len(seeds)} fitted (seed {seed})")
    count = np.float32(len(heads))
    return (
        np.concatenate([head[0] for head in heads], axis=1),
        np.concatenate([head[1] for head in heads]),
        (np.concatenate([head[2] for head in heads], axis=0) / count).astype(np.float32),
        (np.sum([head[3] for head in heads], axis=0) / count).astype(np.float32),
    )
