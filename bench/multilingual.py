"""Per-language quality on the multilingual functional suites (authored for evaluation only).

``bench/data/multilingual/functional_<lang>.jsonl`` holds the same 176 cases (22
functionalities × 8) in English and in Spanish, German, French, Portuguese and Italian,
translated for evaluation and never trained on. For each language and each contextual
mode this prints the any-category AUPRC (worst category per text), recall and
false-positive rate at the shipped thresholds, and the gap to English.

Usage: python bench/multilingual.py [--model-dir DIR] [--out FILE] [--write-card]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from seawall.categories import ALL_LABELS, CATEGORIES
from seawall.evaluation import read_labeled_jsonl
from seawall.metrics import average_precision
from seawall.model.classifier import TextClassifier, default_model_dir
from seawall.training.model_card import record_evaluation

HERE = Path(__file__).parent
SUITES = HERE / "data" / "multilingual"
LANGUAGES = ("en", "es", "de", "fr", "pt", "it")
CATEGORY_COLUMNS = [ALL_LABELS.index(name) for name in CATEGORIES]


def language_figures(classifier: TextClassifier, lang: str, mode: str) -> dict[str, Any]:
    suite = read_labeled_jsonl(SUITES / f"functional_{lang}.jsonl")
    scores = classifier.score(suite.texts, mode)[:, CATEGORY_COLUMNS]
    truth = suite.labels[:, CATEGORY_COLUMNS]
    harmful = truth.any(axis=1)
    thresholds = np.array([classifier.meta.thresholds.get(name, 0.5) for name in CATEGORIES])
    flagged = (scores >= thresholds).any(axis=1)
    return {
        "rows": len(suite.texts),
        "any_auprc": round(average_precision(harmful, scores.max(axis=1)), 4),
        "recall": round(float(flagged[harmful].mean()), 4),
        "false_positive_rate": round(float(flagged[~harmful].mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "multilingual.json")
    parser.add_argument(
        "--write-card", action="store_true", help="keep the figures in the model's evaluation.json and card"
    )
    args = parser.parse_args()
    classifier = TextClassifier.load(args.model_dir)
    modes = ("off", "auto", "on") if classifier.context is not None else ("off",)
    results = {mode: {lang: language_figures(classifier, lang, mode) for lang in LANGUAGES} for mode in modes}
    print("| mode | language | any-category AUPRC | gap to English | recall | false-positive rate |")
    print("|---|---|---|---|---|---|")
    for mode, per_language in results.items():
        english = per_language["en"]["any_auprc"]
        for lang, figures in per_language.items():
            print(
                f"| {mode} | {lang} | {figures['any_auprc']:.3f} | {figures['any_auprc'] - english:+.3f} "
                f"| {figures['recall']:.3f} | {figures['false_positive_rate']:.3f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.write_card:
        record_evaluation(args.model_dir or default_model_dir(), "multilingual", results)


if __name__ == "__main__":
    main()
