"""Ranking and decision metrics in numpy (shared by ``seawall eval``, training and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray


def average_precision(labels: NDArray[np.bool_], scores: NDArray[np.floating]) -> float:
    """Area under the precision-recall curve (step-wise, as scikit-learn has it); NaN without positives."""
    labels = np.asarray(labels, dtype=bool)
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    sorted_scores = np.asarray(scores, dtype=np.float64)[order]
    hits = labels[order]
    true_pos = np.cumsum(hits)
    # Only the last index of each run of tied scores is a threshold.
    distinct = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    tp = true_pos[distinct]
    precision = tp / (distinct + 1)
    recall = tp / positives
    recall_steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_steps * precision))


def f1_at(
    labels: NDArray[np.bool_], scores: NDArray[np.floating], threshold: float
) -> tuple[float, float, float]:
    """(precision, recall, F1) when flagging ``scores >= threshold``."""
    labels = np.asarray(labels, dtype=bool)
    predicted = np.asarray(scores) >= threshold
    tp = float(np.sum(predicted & labels))
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / max(float(labels.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def best_f1_threshold(
    labels: NDArray[np.bool_], scores: NDArray[np.floating], *, beta: float = 1.0, floor: float = 0.05
) -> float:
    """The threshold (at least ``floor``) that maximises F-beta on (labels, scores)."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.sum() == 0:
        return 0.5
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    true_pos = np.cumsum(labels[order])
    predicted = np.arange(1, len(scores) + 1)
    precision = true_pos / predicted
    recall = true_pos / labels.sum()
    b2 = beta * beta
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (1 + b2) * precision * recall / (b2 * precision + recall)
    f = np.nan_to_num(f)
    f[sorted_scores < floor] = -1
    # Only thresholds at the end of a run of ties are reachable.
    last_of_tie = np.r_[np.diff(sorted_scores) != 0, True]
    f[~last_of_tie] = -1
    best = int(np.argmax(f))
    if f[best] <= 0:
        return max(0.5, floor)  # no threshold above the floor catches anything: a neutral default
    return float(sorted_scores[best])


def rate_matched_threshold(negative_scores: NDArray[np.floating], rate: float) -> float:
    """The lowest threshold at which at most ``rate`` of ``negative_scores`` reach it (scores >= it).

    With no negatives every threshold keeps the rate, so the answer is 0.5, a neutral default.
    """
    # In the scores' own precision: a float32 score must not round back onto the threshold.
    ordered = np.sort(np.asarray(negative_scores))
    if not len(ordered):
        return 0.5
    allowed = int(np.floor(max(0.0, rate) * len(ordered) + 1e-9))
    if allowed >= len(ordered):
        return float(ordered[0])
    # Just above the highest score that must stay below it (ties there stay below too).
    highest_below = ordered[len(ordered) - allowed - 1]
    return float(np.nextafter(highest_below, np.array(np.inf, dtype=ordered.dtype)))


def paired_difference(
    statistic: Callable[[NDArray[np.int64]], tuple[float, float]],
    rows: int,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(difference on all rows, low, high): ``statistic(indices)`` returns (base, candidate) on the
    rows at ``indices``; the interval is the percentile interval of candidate − base over bootstrap
    resamples of the rows, the same resample for both models (paired), so the spread that both
    models share (which texts happen to be in the set) cancels. Resamples where the statistic is
    undefined (NaN: no positives drawn) are left out."""
    if rows < 1 or resamples < 1 or not 0 < level < 1:
        raise ValueError("paired_difference needs rows >= 1, resamples >= 1 and 0 < level < 1")
    base, candidate = statistic(np.arange(rows))
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        drawn_base, drawn_candidate = statistic(rng.integers(0, rows, rows))
        if not (np.isnan(drawn_base) or np.isnan(drawn_candidate)):
            differences.append(drawn_candidate - drawn_base)
    if not differences:
        return candidate - base, float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return candidate - base, float(low), float(high)
