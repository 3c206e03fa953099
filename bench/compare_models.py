"""Two moderation models on the same texts: each figure's difference with a paired bootstrap interval.

A ship rule that asks a candidate to stay within 0.002 AUPRC of the shipped model is only as good as
the noise under it. Refitting the contextual head with another seed, on the same data, moved the
held-out sources' any-category AUPRC by 0.005 and the web-register set's by 0.008 (session 35), so a
difference has to be read against its interval. For each set this prints, for the base and the
candidate model, the any-category AUPRC (the maximum over the 13 categories ranks, as a moderation API
is used), the mean per-category AUPRC (categories with at least 5 positives in the set), and the
any-category false-positive rate and recall at each model's own flag thresholds; then candidate − base
with its 95 % interval over resamples of the set's rows (the same resample for both models). An
interval that excludes 0 is marked ``*``.

Sets: the held-out sources (whole public sets never trained on; needs ``../shared/data`` or --data),
and the project's evaluation-only sets: the web-register set, the functional suite and the how-to
probe. Rows are resampled one by one; the authored sets pair some benign rows with harmful twins, so
their intervals are a little narrow.

Usage: python bench/compare_models.py --candidate DIR [--base DIR] [--data ../shared/data]
       [--contextual on|auto|off] [--sets held_out web_register functional howto] [--resamples 2000]
       [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from quality import CATEGORY_COLUMNS, FUNCTIONAL, HOWTO_PROBE, WEB_REGISTER
from seawall.categories import ALL_LABELS
from seawall.evaluation import read_labeled_jsonl
from seawall.metrics import average_precision, paired_difference
from seawall.model.classifier import CONTEXTUAL_MODES, TextClassifier
from seawall.settings import ModerationSettings

HERE = Path(__file__).parent
SETS = ("held_out", "web_register", "functional", "howto")
#: A category counts towards the mean per-category AUPRC with at least this many positives in the set.
MIN_POSITIVES = 5


def load_set(name: str, data: Path) -> tuple[list[str], NDArray[np.bool_]] | None:
    """(texts, labels (rows × ALL_LABELS)) of a set; None for the held-out sources without the data."""
    if name == "held_out":
        if not data.is_dir():
            return None
        from seawall.training.datasets import HELD_OUT_SOURCES, load_sources
        from seawall.training.train import label_matrix, merge_duplicates

        rows = merge_duplicates(load_sources(data, HELD_OUT_SOURCES))
        return [row.text for row in rows], label_matrix(rows)
    path = {"web_register": WEB_REGISTER, "functional": FUNCTIONAL, "howto": HOWTO_PROBE}[name]
    labeled = read_labeled_jsonl(path)
    return labeled.texts, labeled.labels


def figures(
    labels: NDArray[np.bool_], scores: NDArray[np.float32], thresholds: NDArray[np.float32]
) -> dict[str, Callable[[NDArray[np.int64]], float]]:
    """Each figure as a function of the rows drawn (so the bootstrap can redraw them)."""
    any_label = labels[:, CATEGORY_COLUMNS].any(axis=1)
    any_score = scores[:, CATEGORY_COLUMNS].max(axis=1)
    any_flag = (scores[:, CATEGORY_COLUMNS] >= thresholds[CATEGORY_COLUMNS]).any(axis=1)
    counted = [i for i in CATEGORY_COLUMNS if labels[:, i].sum() >= MIN_POSITIVES]

    def mean_category_auprc(at: NDArray[np.int64]) -> float:
        values = [average_precision(labels[at, i], scores[at, i]) for i in counted]
        kept = [value for value in values if not np.isnan(value)]
        return float(np.mean(kept)) if kept else float("nan")

    def share(flags: NDArray[np.bool_]) -> float:
        return float(flags.mean()) if len(flags) else float("nan")

    return {
        "any-category AUPRC": lambda at: average_precision(any_label[at], any_score[at]),
        "mean per-category AUPRC": mean_category_auprc,
        "false-positive rate": lambda at: share(any_flag[at][~any_label[at]]),
        "recall": lambda at: share(any_flag[at][any_label[at]]),
    }


def thresholds_of(classifier: TextClassifier) -> NDArray[np.float32]:
    return np.array([classifier.meta.thresholds.get(name, 0.5) for name in ALL_LABELS], dtype=np.float32)


def compare(
    base: TextClassifier,
    candidate: TextClassifier,
    texts: list[str],
    labels: NDArray[np.bool_],
    mode: str,
    resamples: int,
) -> dict[str, dict[str, float]]:
    base_figures = figures(labels, base.score(texts, mode), thresholds_of(base))
    candidate_figures = figures(labels, candidate.score(texts, mode), thresholds_of(candidate))
    out: dict[str, dict[str, float]] = {}
    for name, base_figure in base_figures.items():
        candidate_figure = candidate_figures[name]
        difference, low, high = paired_difference(
            lambda at, b=base_figure, c=candidate_figure: (b(at), c(at)), len(texts), resamples=resamples
        )
        everything = np.arange(len(texts))
        out[name] = {
            "base": round(base_figure(everything), 4),
            "candidate": round(candidate_figure(everything), 4),
            "difference": round(difference, 4),
            "low": round(low, 4),
            "high": round(high, 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidate", type=Path, required=True, help="the candidate's artefact folder")
    parser.add_argument("--base", type=Path, default=None, help="the base's folder (default: shipped)")
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument(
        "--contextual",
        choices=CONTEXTUAL_MODES,
        default=ModerationSettings.model_fields["contextual"].default,
        help="where the contextual stage runs, for both models (default: what users get)",
    )
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (at least 100)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args()
    if args.resamples < 100:
        parser.error("--resamples must be at least 100 for a 95 % interval")
    for folder in (args.base, args.candidate):
        if folder is not None and not (folder / "model.json").is_file():
            parser.error(f"{folder}: no model.json (not a model's artefact folder)")

    base = TextClassifier.load(args.base)
    candidate = TextClassifier.load(args.candidate)
    print(
        f"base {base.meta.version} ({args.base or 'shipped'}) against candidate {candidate.meta.version} "
        f"({args.candidate}), contextual {args.contextual}, {args.resamples} paired resamples"
    )
    results: dict[str, Any] = {}
    for name in args.sets:
        loaded = load_set(name, args.data)
        if loaded is None:
            print(f"\n({name} skipped: no training data at {args.data})")
            continue
        texts, labels = loaded
        results[name] = compare(base, candidate, texts, labels, args.contextual, args.resamples)
        positives = int(labels[:, CATEGORY_COLUMNS].any(axis=1).sum())
        print(f"\n== {name} ({len(texts)} rows, {positives} harmful) ==")
        print(f"  {'figure':24s} {'base':>7s} {'cand.':>7s} {'difference [95% interval]':>30s}")
        for figure, row in results[name].items():
            real = "*" if row["low"] > 0 or row["high"] < 0 else " "
            interval = f"{row['difference']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]{real}"
            print(f"  {figure:24s} {row['base']:7.4f} {row['candidate']:7.4f} {interval:>31s}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
