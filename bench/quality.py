"""Quality of the embedded model, measured on data it was not trained on, in one run.

Prints, for the shipped artefacts (or --model-dir):

1. the project's functional test suite (``bench/data/functional_tests.jsonl``, authored for
   evaluation only): pass rate per functionality, the false-positive rate on the benign
   functionalities, and the any-category AUPRC;
2. the web-register evaluation set (``bench/data/web_register_eval.jsonl``, authored for
   evaluation only, separately from the training data: comments, posts, reviews, chat and
   fiction with realistic benign-but-edgy negatives): per-label figures and false positives
   per register;
3. the held-out sources (whole public sets never trained on) and the grouped dev split of the
   training mix, when ``../shared/data`` (or --data) is present;
4. the target probe set (``bench/data/target_probe.jsonl``, authored for evaluation only): who a
   violent statement aims at (threat vs self-harm intent vs hyperbole), self-harm method requests,
   and non-violent vs violent wrongdoing; per-label AUPRC, the mean over the six labels those
   questions turn on, and the share of rows flagged in a category the guide says they are not;
5. the how-to probe set (``bench/data/howto_probe.jsonl``, authored for evaluation only): benign
   how-to and which-is questions that sound like method requests (medication choice, sport
   technique, machines and software, pests, cooking, "how do I X without Y") beside real method
   requests in the same frames; the share of benign questions flagged, recall on the requests,
   any-category AUPRC, and the benign questions flagged with their top category;
6. what obfuscation normalisation is worth: recall on obfuscated harmful texts with and
   without it.

Usage: python bench/quality.py [--data ../shared/data] [--model-dir DIR] [--contextual on|auto|off]
       [--probe-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from seawall.categories import ALL_LABELS, CATEGORIES
from seawall.evaluation import evaluate_scores, read_labeled_jsonl
from seawall.model.classifier import CONTEXTUAL_MODES, TextClassifier
from seawall.settings import ModerationSettings

HERE = Path(__file__).parent
FUNCTIONAL = HERE / "data" / "functional_tests.jsonl"
WEB_REGISTER = HERE / "data" / "web_register_eval.jsonl"
TARGET_PROBE = HERE / "data" / "target_probe.jsonl"
HOWTO_PROBE = HERE / "data" / "howto_probe.jsonl"
#: The labels the target probe's three questions turn on; their mean AUPRC is its headline.
PROBE_LABELS = (
    "harassment/threatening",
    "violence",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "illicit/violent",
)
CATEGORY_COLUMNS = [ALL_LABELS.index(name) for name in CATEGORIES]

HOMOGLYPHS = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "i": "і", "x": "х", "y": "у"}
LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}


def obfuscate(text: str, how: str, rng: random.Random) -> str:
    """One cheap evasion, applied to every word of four letters or more."""

    def per_word(word: str) -> str:
        if len(word) < 4 or not word.isalpha():
            return word
        if how == "leet":
            return "".join(LEET.get(ch, ch) if rng.random() < 0.6 else ch for ch in word)
        if how == "zero_width":
            middle = len(word) // 2
            return word[:middle] + "\u200b" + word[middle:]
        if how == "homoglyph":
            return "".join(HOMOGLYPHS.get(ch, ch) for ch in word)
        if how == "spaced":
            return " ".join(word)
        raise ValueError(how)

    if how == "tag_smuggling":
        return "please read: " + "".join(chr(0xE0000 + ord(ch)) for ch in text if 0x20 <= ord(ch) <= 0x7E)
    return " ".join(per_word(word) for word in text.split(" "))


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def flags(classifier: TextClassifier, scores: np.ndarray) -> np.ndarray:
    thresholds = np.array([classifier.meta.thresholds.get(name, 0.5) for name in ALL_LABELS])
    return (scores >= thresholds)[:, CATEGORY_COLUMNS].any(axis=1)


def functional_suite(classifier: TextClassifier, mode: str) -> None:
    rows = read_rows(FUNCTIONAL)
    texts = [row["text"] for row in rows]
    scores = classifier.score(texts, mode)
    flagged = flags(classifier, scores)
    by_functionality: dict[str, list[bool]] = defaultdict(list)
    benign_flags: list[bool] = []
    for row, is_flagged in zip(rows, flagged, strict=True):
        harmful = bool(row["labels"])
        by_functionality[row["functionality"]].append(bool(is_flagged) == harmful)
        if not harmful:
            benign_flags.append(bool(is_flagged))
    print(f"\n== functional tests ({len(rows)} cases, {FUNCTIONAL.relative_to(HERE.parent)}) ==")
    for name, passed in sorted(by_functionality.items()):
        kind = "harmful" if any(r["labels"] for r in rows if r["functionality"] == name) else "benign"
        print(f"  {name:28s} {kind:8s} pass {np.mean(passed):6.1%}  ({sum(passed)}/{len(passed)})")
    print(f"  benign cases flagged (false-positive rate): {np.mean(benign_flags):.1%} of {len(benign_flags)}")
    labeled = read_labeled_jsonl(FUNCTIONAL)
    summary = evaluate_scores(labeled.labels, scores, classifier.meta.thresholds)["summary"]
    print(
        f"  any-category AUPRC {summary['any_auprc']}, precision {summary['any_precision']}, "
        f"recall {summary['any_recall']}"
    )


def web_register_set(classifier: TextClassifier, mode: str) -> None:
    rows = read_rows(WEB_REGISTER)
    labeled = read_labeled_jsonl(WEB_REGISTER)
    scores = classifier.score(labeled.texts, mode)
    print_report(
        f"web-register evaluation set ({len(rows)} texts, {WEB_REGISTER.relative_to(HERE.parent)})",
        evaluate_scores(labeled.labels, scores, classifier.meta.thresholds),
    )
    flagged = flags(classifier, scores)
    by_register: dict[str, list[bool]] = defaultdict(list)
    for row, is_flagged in zip(rows, flagged, strict=True):
        if not row["labels"]:
            by_register[row.get("register", "other")].append(bool(is_flagged))
    shares = ", ".join(f"{name} {np.mean(v):.0%} of {len(v)}" for name, v in sorted(by_register.items()))
    print(f"  benign texts flagged, by register: {shares}")


def target_probe_set(classifier: TextClassifier, mode: str) -> None:
    rows = read_rows(TARGET_PROBE)
    labeled = read_labeled_jsonl(TARGET_PROBE)
    scores = classifier.score(labeled.texts, mode)
    report = evaluate_scores(labeled.labels, scores, classifier.meta.thresholds)
    print_report(f"target probe set ({len(rows)} texts, {TARGET_PROBE.relative_to(HERE.parent)})", report)
    probe_auprc = [report["labels"][name]["auprc"] for name in PROBE_LABELS if name in report["labels"]]
    print(f"  mean AUPRC over {', '.join(PROBE_LABELS)}: {np.mean(probe_auprc):.4f}")
    flagged = scores >= np.array([classifier.meta.thresholds.get(name, 0.5) for name in ALL_LABELS])
    column = {name: i for i, name in enumerate(ALL_LABELS)}

    def flagged_share(question: str, truth: str, flag: str) -> str:
        """Of the question's rows labelled ``truth``, the share flagged ``flag``: a wrong category
        when the label set lacks ``flag``, recall when it holds it."""
        picked = [i for i, row in enumerate(rows) if row["question"] == question and truth in row["labels"]]
        picked = [i for i in picked if (flag in rows[i]["labels"]) == (flag == truth)]
        share = float(np.mean([flagged[i, column[flag]] for i in picked])) if picked else 0.0
        return f"{question}: {truth} rows flagged {flag}: {share:.0%} of {len(picked)}"

    print("  " + flagged_share("direction", "harassment/threatening", "self-harm"))
    print("  " + flagged_share("direction", "self-harm/intent", "violence"))
    print("  " + flagged_share("wrongdoing", "illicit", "illicit/violent"))
    print("  " + flagged_share("selfharm_method", "self-harm/intent", "self-harm/intent"))


def howto_probe_set(classifier: TextClassifier, mode: str) -> None:
    rows = read_rows(HOWTO_PROBE)
    labeled = read_labeled_jsonl(HOWTO_PROBE)
    scores = classifier.score(labeled.texts, mode)
    summary = evaluate_scores(labeled.labels, scores, classifier.meta.thresholds)["summary"]
    flagged = flags(classifier, scores)
    harmful = np.array([bool(row["labels"]) for row in rows])
    print(f"\n== how-to probe set ({len(rows)} texts, {HOWTO_PROBE.relative_to(HERE.parent)}) ==")
    print(
        f"  any-category AUPRC {summary['any_auprc']}; benign questions flagged "
        f"{flagged[~harmful].mean():.1%} of {int((~harmful).sum())}; method requests flagged (recall) "
        f"{flagged[harmful].mean():.1%} of {int(harmful.sum())}"
    )
    thresholds = np.array([classifier.meta.thresholds.get(name, 0.5) for name in ALL_LABELS])
    for i in np.flatnonzero(flagged & ~harmful):
        # the category whose score is furthest past its threshold: what the question was mistaken for
        margin = scores[i, CATEGORY_COLUMNS] / thresholds[CATEGORY_COLUMNS]
        top = CATEGORY_COLUMNS[int(np.argmax(margin))]
        print(f"    benign flagged {ALL_LABELS[top]} {scores[i, top]:.2f}: {rows[i]['text'][:90]}")


def normalisation_ablation(classifier: TextClassifier, texts: list[str], mode: str) -> None:
    without = classifier.with_features(dataclasses.replace(classifier.meta.features, normalize=False))
    rng = random.Random(5)
    print(f"\n== obfuscation: share of {len(texts)} harmful texts still flagged ==")
    print(f"  {'':14s} {'normalised':>10s} {'raw':>10s}")
    base_on = flags(classifier, classifier.score(texts, mode)).mean()
    base_off = flags(without, without.score(texts, mode)).mean()
    print(f"  {'clean text':14s} {base_on:10.1%} {base_off:10.1%}")
    for how in ("leet", "zero_width", "homoglyph", "spaced", "tag_smuggling"):
        variants = [obfuscate(text, how, rng) for text in texts]
        on = flags(classifier, classifier.score(variants, mode)).mean()
        off = flags(without, without.score(variants, mode)).mean()
        print(f"  {how:14s} {on:10.1%} {off:10.1%}")


def print_report(title: str, report: dict[str, Any]) -> None:
    print(f"\n== {title} ==")
    print(f"  {report['summary']}")
    for name, row in report["labels"].items():
        print(f"  {name:24s} {row}")


def shared_data_reports(classifier: TextClassifier, data: Path, mode: str) -> None:
    from seawall.training.datasets import HELD_OUT_SOURCES, load_sources
    from seawall.training.train import (
        TrainConfig,
        default_authored_dir,
        is_dev,
        label_matrix,
        load_training_rows,
        merge_duplicates,
    )

    def report_on(rows: list[Any]) -> dict[str, Any]:
        scores = classifier.score([row.text for row in rows], mode)
        return evaluate_scores(label_matrix(rows), scores, classifier.meta.thresholds)

    held_out = merge_duplicates(load_sources(data, HELD_OUT_SOURCES))
    print_report(f"held-out sources never trained on ({', '.join(HELD_OUT_SOURCES)})", report_on(held_out))
    config = TrainConfig(data_dir=data, authored_dir=default_authored_dir(), out_dir=Path("/nonexistent"))
    dev = [
        row for row in load_training_rows(config, lambda _: None) if is_dev(row.group, config.dev_fraction)
    ]
    print_report(f"grouped dev split of the training mix ({len(dev)} rows)", report_on(dev))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument(
        "--contextual",
        choices=CONTEXTUAL_MODES,
        default=ModerationSettings.model_fields["contextual"].default,
        help="where the contextual stage runs (default: moderation.contextual's default, what users get)",
    )
    parser.add_argument(
        "--probe-only", action="store_true", help="score the target and how-to probe sets alone"
    )
    args = parser.parse_args()
    classifier = TextClassifier.load(args.model_dir)
    mode = args.contextual
    print(f"model version {classifier.meta.version}, labels {len(classifier.labels)}, contextual {mode}")
    target_probe_set(classifier, mode)
    howto_probe_set(classifier, mode)
    if args.probe_only:
        return
    functional_suite(classifier, mode)
    web_register_set(classifier, mode)
    rows = read_rows(FUNCTIONAL)
    harmful = [row["text"] for row in rows if row["labels"] and row["functionality"] != "obfuscated_harm"]
    normalisation_ablation(classifier, harmful, mode)
    if args.data.is_dir():
        shared_data_reports(classifier, args.data, mode)
    else:
        print(f"\n(held-out and dev reports skipped: no training data at {args.data})")


if __name__ == "__main__":
    main()
