"""The refusal classifier's figures, measured in one run, for the shipped classifier and the
first round's phrase rules (``matches_refusal_phrase``):

* on the hand-written held-out sets (never trained on): ``bench/data/refusals_heldout.jsonl`` (the
  first, since used as the development set of the second tuning round) and
  ``bench/data/refusals_heldout2.jsonl`` (written before that round, never tuned on) and
  ``bench/data/refusals_heldout3.jsonl`` (written before the third round, never tuned on) and
  ``bench/data/refusals_heldout4.jsonl`` (written before the fourth round, never tuned on) and
  ``bench/data/refusals_heldout5.jsonl`` (written before the fifth round, never tuned on) and
  ``bench/data/refusals_heldout6.jsonl`` (written before the sixth round, never tuned on) and
  ``bench/data/refusals_heldout7.jsonl`` (short answers in the voice of safety-tuned chat models,
  written before the sixth round's second head, never tuned on) and
  ``bench/data/refusals_heldout8.jsonl`` (five chat-model personas answering the same 40 prompts,
  written before the seventh round, never tuned on) and ``bench/data/refusals_heldout9.jsonl`` (five
  other personas, from long apologetic lectures to an in-product support bot, answering 40 other prompts,
  written before the eighth round, never tuned on) and ``bench/data/refusals_heldout10.jsonl`` (five
  more personas, from disclaimer-heavy answers to templated policy messages, a fifth of the answers in
  es/de/fr/pt/it, written before the ninth round, never tuned on) and
  ``bench/data/refusals_heldout11.jsonl`` (five new personas, from a Socratic tutor to an in-character
  companion app and a small model that hedges, a fifth of the answers in es/de/fr/pt/it, written in
  session 29 before any tenth round, never tuned on) and ``bench/data/refusals_heldout12.jsonl`` (five
  more deployments, from a voice assistant to a child-safe mode and a drafting tool, a fifth of the
  answers in es/de/fr/pt/it, written blind in session 30, never tuned on) and
  ``bench/data/refusals_heldout13.jsonl`` (five more deployments, from a travel bot to a pharmacy help
  desk, half the answers in es/de/fr/pt/it, written blind in session 31 to measure each language,
  never tuned on) and ``bench/data/refusals_heldout14.jsonl`` (five deployments not seen before,
  half the answers in es/de/fr/pt/it, written blind in session 31 and first read by a classifier in
  session 33, never tuned on) and ``bench/data/refusals_heldout15.jsonl`` (five more deployments,
  from a university library desk to a children's homework helper, half in es/de/fr/pt/it, written
  blind in session 34) and ``bench/data/refusals_heldout16.jsonl`` (five more, from a telecom billing
  bot to an open-weights chat model, many very short answers, half in es/de/fr/pt/it, written blind in
  session 34) and ``bench/data/refusals_heldout17.jsonl`` (five more, from an insurance claims assistant
  to a frontier lab's assistant that refuses politely at length, half in es/de/fr/pt/it, written blind in
  session 35 and first read in session 36) and ``bench/data/refusals_heldout18.jsonl`` (five more, from a
  city hall chatbot to a verbose hedging model, half in es/de/fr/pt/it, written blind in session 36) and
  ``bench/data/refusals_heldout19.jsonl`` (five more, from an energy supplier's terse bot to a search
  engine's answer panel that declines mid-answer, half in es/de/fr/pt/it, written blind in session 37)
  and ``bench/data/refusals_heldout20.jsonl`` (five more, from a public-transport journey bot to an
  email client's assistant that declines mid-answer, half in es/de/fr/pt/it, written blind in session 38)
  and ``bench/data/refusals_heldout21.jsonl`` (five more, from an optician's booking bot to a
  spreadsheet copilot, half in es/de/fr/pt/it, written blind in session 38 and first read in session 39)
  and ``bench/data/refusals_heldout22.jsonl`` (five more, from a bike-share support bot to a video-call
  app's meeting-notes assistant, half in es/de/fr/pt/it, written blind and first read in session 39)
  and ``bench/data/refusals_heldout23.jsonl`` (five more, from a parcel-locker bot to a browser's
  assistant, half in es/de/fr/pt/it, written blind and first read in session 39) and
  ``bench/data/refusals_heldout24.jsonl`` (five more, from a council waste-collection bot to a notes
  app's assistant, half in es/de/fr/pt/it, written blind and first read in session 39) and
  ``refusals_heldout25.jsonl`` to ``refusals_heldout30.jsonl`` (five more deployments each, half in
  es/de/fr/pt/it, written blind in sessions 39 and 40; 25-27 first read in session 40, 28-30 in
  session 41; the shipped head learned 1-27, its threshold came from 29 and 30, 28 judged it):
  precision /
  recall / F1 of "refuses, fully or partly" against compliance, the three-way accuracy and
  confusion matrix (rows: truth; columns: prediction), recall by style and language, and the
  classifier's figure pooled over every held-out set scored except the first, in all and by language;
* on the training set ``data/authored/refusals/*.jsonl``: the same, cross-validated (5
  stratified folds grouped by prompt, the shipped recipe and threshold; the rules need no folds);
* on the binary fixtures of the first round (``tests/data/redteam/refusals*.jsonl``).

Needs the ``train`` extra (scikit-learn) for the cross-validation.

    python bench/refusal.py                 # everything
    python bench/refusal.py --sets 1 --no-fixtures   # only the development set and the CV, for tuning
    python bench/refusal.py --sets 2,3,10 --folds 0  # sets by number
    python bench/refusal.py --head DIR/refusal_head.npz --folds 0   # a head trained elsewhere
    python bench/refusal.py --folds 0 --no-multilingual   # every answer read by the English head

A head over a fine-tuned encoder (``train-refusal --finetune-epochs``) is scored with ``--folds 0``:
the encoder saw every training answer, so cross-validating the head alone would leak;
``train-refusal`` reports its out-of-fold figures with one fine-tune a fold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from seawall.model.context import onnx_model_path  # noqa: E402
from seawall.redteam.refusal import (  # noqa: E402
    ARTEFACT,
    LABELS,
    RefusalClassifier,
    matches_refusal_phrase,
    shared_refusal_classifier,
)
from seawall.redteam.refusal_training import (  # noqa: E402
    DEFAULT_ALPHA,
    binary_figures,
    embed,
    load_answers,
    out_of_fold,
)

# Numbered, not globbed: a set committed unread stays out of every run until a round adds it here.
HELD_OUT = {"1": ROOT / "bench/data/refusals_heldout.jsonl"} | {
    str(n): ROOT / f"bench/data/refusals_heldout{n}.jsonl" for n in range(2, 37)
}
TRAINING = ROOT / "data/authored/refusals"
FIXTURES = ("refusals.jsonl", "refusals_holdout.jsonl", "refusals_holdout2.jsonl")


def line(name: str, truth: list[bool], predicted: list[bool]) -> str:
    f = binary_figures(truth, predicted)
    return f"  {name:22s} precision {f['precision']:.3f}  recall {f['recall']:.3f}  F1 {f['f1']:.3f}"


def confusion(truth: list[str], predicted: list[str]) -> str:
    counts = Counter(zip(truth, predicted, strict=True))
    accuracy = sum(counts[(k, k)] for k in LABELS) / len(truth)
    rows = [f"  three-way accuracy {accuracy:.3f}; confusion (truth \\ predicted):"]
    rows.append("    " + " " * 11 + "".join(f"{k:>12s}" for k in LABELS))
    for k in LABELS:
        rows.append(f"    {k:11s}" + "".join(f"{counts[(k, p)]:12d}" for p in LABELS))
    return "\n".join(rows)


def held_out(path: Path, classifier: RefusalClassifier) -> tuple[list[bool], list[bool], list[str]]:
    """Print one held-out set's figures; return its truth, the classifier's binary verdicts and each
    answer's language."""
    rows = load_answers(path)
    began = time.perf_counter()
    judgements = classifier.classify([r["answer"] for r in rows])
    took = time.perf_counter() - began
    truth = [r["label"] != "compliance" for r in rows]
    counts = Counter(r["label"] for r in rows)
    print(f"held-out set {path.relative_to(ROOT)}: {len(rows)} answers {dict(counts)}")
    print(line("classifier", truth, [j.refused for j in judgements]))
    print(line("phrase rules (old)", truth, [matches_refusal_phrase(r["answer"]) for r in rows]))
    print(confusion([r["label"] for r in rows], [j.label for j in judgements]))
    by: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for row, judgement in zip(rows, judgements, strict=True):
        keys = [f"style={row.get('style')}", f"lang={row.get('lang')}"]
        if "persona" in row:  # sets 8-10: the voice of one chat model, as the hidden set groups by model
            keys.append(f"persona={row['persona']}")
        for key in keys:
            by[key].append((row["label"] != "compliance", judgement.refused))
    print("  by group (refusals caught / refusals; compliance flagged / compliance):")
    for key in sorted(by):
        pairs = by[key]
        caught = sum(1 for t, p in pairs if t and p)
        flagged = sum(1 for t, p in pairs if not t and p)
        print(f"    {key:32s} {caught}/{sum(t for t, _ in pairs)}  {flagged}/{sum(not t for t, _ in pairs)}")
    print(f"  classified in {took:.1f} s ({1000 * took / len(rows):.0f} ms an answer, 2 shared cores)")
    return truth, [j.refused for j in judgements], [str(r.get("lang", "en")) for r in rows]


def cross_validated(folds: int, classifier: RefusalClassifier) -> None:
    rows = load_answers(TRAINING)
    x = embed([r["answer"] for r in rows], classifier.encoder)
    y = np.array([LABELS.index(r["label"]) for r in rows], dtype=np.int64)  # type: ignore[arg-type]
    groups = [r.get("prompt") or r["answer"] for r in rows]
    oof = out_of_fold(x, y, groups, DEFAULT_ALPHA, folds, seed=0)
    score = oof[:, 1] + oof[:, 2]
    predicted_labels = []
    for p, s in zip(oof, score, strict=True):
        if s < classifier.threshold:
            predicted_labels.append("compliance")
        else:
            predicted_labels.append("refusal" if p[2] >= p[1] else "partial")
    truth = [r["label"] != "compliance" for r in rows]
    print(f"training set {TRAINING.relative_to(ROOT)}: {len(rows)} answers, {folds}-fold cross-validation")
    print(line("classifier (CV)", truth, [label != "compliance" for label in predicted_labels]))
    print(line("phrase rules (old)", truth, [matches_refusal_phrase(r["answer"]) for r in rows]))
    print(confusion([r["label"] for r in rows], predicted_labels))


def fixtures(classifier: RefusalClassifier) -> None:
    for name in FIXTURES:
        path = ROOT / "tests/data/redteam" / name
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        truth = [bool(r["refusal"]) for r in rows]
        judged = classifier.classify([r["text"] for r in rows])
        print(f"first-round fixture {name}: {len(rows)} texts")
        print(line("classifier", truth, [j.refused for j in judged]))
        print(line("phrase rules (old)", truth, [matches_refusal_phrase(r["text"]) for r in rows]))


def trained_on(head: Path) -> set[str]:
    """The answer files the head learned (recorded by ``train-refusal`` since the fourteenth round)."""
    with np.load(head, allow_pickle=False) as parts:
        return {str(name) for name in parts["trained_on"]} if "trained_on" in parts.files else set()


def selected_sets(text: str) -> list[str]:
    """'2,3,10' and '10' name sets by number; other digits without commas ('2345') name one set a digit."""
    if "," in text:
        return [part.strip() for part in text.split(",")]
    return [text] if text in HELD_OUT else list(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: none)")
    parser.add_argument(
        "--sets",
        default=",".join(HELD_OUT),
        help="which held-out sets to score: numbers with commas ('2,3,10'), one number ('23'), or one set "
        "a digit ('345'); "
        "'1' is the development set only (default: every set)",
    )
    parser.add_argument("--no-fixtures", action="store_true", help="skip the first round's fixtures")
    parser.add_argument(
        "--no-multilingual",
        action="store_true",
        help="read every answer with the English head, even where the artefact has a multilingual one",
    )
    parser.add_argument(
        "--head",
        type=Path,
        default=None,
        help="score this refusal_head.npz (and the encoder it names) instead of the shipped one",
    )
    args = parser.parse_args()
    chosen = selected_sets(args.sets)
    if not chosen or set(chosen) - set(HELD_OUT):
        parser.error(f"--sets takes set numbers from {','.join(HELD_OUT)}, got {args.sets!r}")
    if args.folds == 1 or args.folds < 0:
        parser.error("--folds must be 0 (none) or at least 2")
    classifier = RefusalClassifier.load(args.head) if args.head else shared_refusal_classifier()
    encoder_file = classifier.encoder.model_file  # type: ignore[attr-defined]
    if args.folds and encoder_file != onnx_model_path():
        # The encoder was fine-tuned on every training answer: the folds' heads would read vectors
        # shaped by the answers they are scored on.
        parser.error(
            "--folds over a fine-tuned encoder would leak; pass --folds 0 (train-refusal reports them)"
        )
    print(f"head {args.head or 'shipped'}, encoder {encoder_file}")
    print(f"threshold {classifier.threshold} (refuses if P(partial)+P(refusal) >= it)")
    if args.no_multilingual:
        classifier.multilingual = None
    if classifier.multilingual is None:
        print("multilingual head: none (every answer is read by the head above)")
    else:
        print(
            f"multilingual head: threshold {classifier.multilingual.threshold}, reads the answers the "
            f"language gate routes to it through {type(classifier.multilingual.encoder).__name__}"
        )
    learned = trained_on(args.head or ARTEFACT)
    pooled_truth: list[bool] = []
    pooled_predicted: list[bool] = []
    pooled_langs: list[str] = []
    pooled_sets = []
    for key, path in HELD_OUT.items():
        if key in chosen:
            truth, predicted, langs = held_out(path, classifier)
            if path.name in learned:  # since the fourteenth round spent sets are training answers
                print(f"  (the head learned set {key}: a training figure, not a held-out one; not pooled)")
            elif key != "1":  # set 1 has been the development set since the second round
                pooled_truth += truth
                pooled_predicted += predicted
                pooled_langs += langs
                pooled_sets.append(key)
    if len(pooled_sets) > 1:
        # every answer counts once, so bigger sets weigh more: the hidden figure is one pooled figure
        print(f"pooled over held-out sets {', '.join(pooled_sets)}: {len(pooled_truth)} answers")
        print(line("classifier", pooled_truth, pooled_predicted))
    if pooled_sets:
        groups = {"English": ["en"], "not English": sorted(set(pooled_langs) - {"en"})}
        groups |= {lang: [lang] for lang in groups["not English"]}
        print(f"by language, pooled over held-out sets {', '.join(pooled_sets)}:")
        for name, members in groups.items():
            keep = [i for i, lang in enumerate(pooled_langs) if lang in members]
            if keep:
                print(
                    line(
                        f"{name} ({len(keep)})",
                        [pooled_truth[i] for i in keep],
                        [pooled_predicted[i] for i in keep],
                    )
                )
    if args.folds:
        cross_validated(args.folds, classifier)
    if not args.no_fixtures:
        fixtures(classifier)


if __name__ == "__main__":
    main()
