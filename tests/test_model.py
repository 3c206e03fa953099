"""The embedded model at run time: shipped artefacts, windows, hierarchy, batching, features."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from seawall.categories import ALL_LABELS, PARENT
from seawall.errors import ModelArtefactError
from seawall.metrics import (
    average_precision,
    best_f1_threshold,
    f1_at,
    paired_difference,
    rate_matched_threshold,
)
from seawall.model.classifier import TextClassifier, default_model_dir
from seawall.model.features import FeatureConfig, Featurizer, sparse_dot


@pytest.fixture(scope="module")
def classifier() -> TextClassifier:
    return TextClassifier.load()


def column(name: str) -> int:
    return ALL_LABELS.index(name)


def test_shipped_artefacts_load_with_all_labels(classifier: TextClassifier) -> None:
    assert classifier.labels == ALL_LABELS
    assert set(classifier.meta.thresholds) == set(ALL_LABELS)
    assert all(0.0 < t <= 1.0 for t in classifier.meta.thresholds.values())
    assert (default_model_dir() / "MODEL_CARD.md").is_file()


def test_scores_are_probabilities_in_input_order(classifier: TextClassifier) -> None:
    texts = ["have a lovely day", "I will kill you and your whole family tonight", ""]
    scores = classifier.score(texts)
    assert scores.shape == (3, len(ALL_LABELS))
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[1, column("violence")] > scores[0, column("violence")] + 0.3
    assert np.allclose(classifier.score(texts[1:2])[0], scores[1], atol=1e-6)


def test_parent_never_below_child(classifier: TextClassifier) -> None:
    scores = classifier.score(["I'm going to stab you in the neck, you know where I live", "hello there"])
    for child, parent in PARENT.items():
        assert np.all(scores[:, column(parent)] >= scores[:, column(child)] - 1e-7)


THREATS = (
    "I know where you live and I am going to break every bone in your body. "
    "You will never be safe, I will hurt you and your family when you least expect it. "
    "Watch your back every night because I am coming for you with a knife. "
)
FILLER = " ".join(["The committee reviewed the quarterly budget and approved the minutes."] * 40)


def test_long_text_scores_as_its_worst_window(classifier: TextClassifier) -> None:
    harmful = THREATS * 2  # about one 96-word window
    long_text = f"{FILLER} {harmful} {FILLER}"
    alone = classifier.score([harmful])[0, column("violence")]
    buried = classifier.score([long_text])[0, column("violence")]
    whole = classifier.logits_for_words([Featurizer(classifier.meta.features).words(long_text)])
    assert alone > 0.5
    # Scores are calibrated (the threshold sits at 0.5): the buried part must flag as it does alone.
    threshold = classifier.meta.thresholds["violence"]
    assert buried >= threshold, "the window around the harmful part flags like the harmful part"
    assert buried > 1 / (1 + np.exp(-whole[0, column("violence")])) + 0.3, (
        "one window for all would dilute it"
    )


def test_focus_windows_catch_a_short_passage_among_many(classifier: TextClassifier) -> None:
    text = f"{FILLER} {THREATS} {FILLER}"  # about 47 harmful words in 250
    focused = classifier.with_features(dataclasses.replace(classifier.meta.features, focus_words=24))
    default_score = classifier.score([text])[0, column("violence")]
    focused_score = focused.score([text])[0, column("violence")]
    assert focused_score > 0.5
    assert focused_score > default_score + 0.3, (
        "the default windows dilute a short passage; focus ones do not"
    )


def test_obfuscated_text_scores_like_the_original(classifier: TextClassifier) -> None:
    plain, leet = classifier.score(["kill yourself you worthless loser", "k1ll y0urs3lf y0u w0rthl3ss l0s3r"])
    assert np.allclose(plain, leet, atol=1e-5)


def test_missing_artefacts_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelArtefactError, match="missing"):
        TextClassifier.load(tmp_path)


def test_featurizer_is_deterministic_and_sparse_dot_matches_dense() -> None:
    config = FeatureConfig(n_buckets=1 << 12)
    featurizer = Featurizer(config)
    texts = ["the quick brown fox", "jumps over the lazy dog dog dog", ""]
    rows = featurizer.transform(texts)
    again = featurizer.transform(texts)
    assert np.array_equal(rows.indices, again.indices) and np.array_equal(rows.values, again.values)
    dense = np.zeros((len(texts), config.n_buckets), dtype=np.float32)
    for i in range(len(texts)):
        for j in range(rows.indptr[i], rows.indptr[i + 1]):
            dense[i, rows.indices[j]] += rows.values[j]
    weights = np.random.default_rng(0).normal(size=(config.n_buckets, 3)).astype(np.float32)
    assert np.allclose(sparse_dot(rows, weights), dense @ weights, atol=1e-4)
    # each non-empty block is L2-normalised: two blocks, so the row norm is about sqrt(2)
    assert np.linalg.norm(dense[0]) == pytest.approx(np.sqrt(2), rel=0.05)


def test_metrics_on_a_worked_example() -> None:
    labels = np.array([1, 0, 1, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    # ranks: hit (P=1, R=.5), miss, hit (P=2/3, R=1) -> AP = .5*1 + .5*2/3
    assert average_precision(labels, scores) == pytest.approx(0.5 + 1 / 3)
    assert f1_at(labels, scores, 0.75) == pytest.approx((0.5, 0.5, 0.5))
    assert best_f1_threshold(labels, scores) == pytest.approx(0.7)
    assert np.isnan(average_precision(np.zeros(3, dtype=bool), np.zeros(3)))


def test_a_rate_matched_threshold_lets_through_at_most_that_share_of_negatives() -> None:
    negatives = np.array([0.1, 0.3, 0.3, 0.6, 0.8, 0.9], dtype=np.float32)
    # two of six may reach it: just above 0.6, so 0.8 and 0.9 do and 0.6 does not
    threshold = rate_matched_threshold(negatives, 2 / 6)
    assert 0.6 < threshold < 0.6001 and (negatives >= threshold).sum() == 2
    # four of six allowed, but the fourth highest ties with the fifth: both stay below
    assert (negatives >= rate_matched_threshold(negatives, 4 / 6)).sum() == 3
    # in float32, the threshold never rounds back onto the score it must stay above
    assert np.float32(rate_matched_threshold(negatives, 2 / 6)) > np.float32(0.6)
    assert rate_matched_threshold(negatives, 0.0) > 0.9
    assert rate_matched_threshold(negatives, 1.0) == pytest.approx(0.1)
    assert rate_matched_threshold(np.array([], dtype=np.float32), 0.1) == 0.5


def test_paired_difference_cancels_the_shared_spread_and_sees_a_real_gain() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(400) < 0.3
    noise = rng.normal(size=400)
    base = labels + noise  # a weak ranker
    better = labels * 2.0 + noise  # the same noise, a stronger signal: better on every resample

    def statistic(candidate: np.ndarray):  # type: ignore[no-untyped-def]
        return lambda at: (
            average_precision(labels[at], base[at]),
            average_precision(labels[at], candidate[at]),
        )

    same, low, high = paired_difference(statistic(base.copy()), 400, resamples=300)
    assert (same, low, high) == (0.0, 0.0, 0.0), "a model against itself differs by exactly 0"
    gain, low, high = paired_difference(statistic(better), 400, resamples=300)
    assert gain > 0.1 and 0 < low < gain < high
    # the same seed draws the same resamples; another seed draws others
    assert paired_difference(statistic(better), 400, resamples=300) == (gain, low, high)
    assert paired_difference(statistic(better), 400, resamples=300, seed=1)[1:] != (low, high)
    with pytest.raises(ValueError, match="resamples"):
        paired_difference(statistic(better), 400, resamples=0)
