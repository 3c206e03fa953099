"""Prompts that sound dangerous but are safe, mixed with unsafe ones: flagged or not, at the defaults.

``bench/data/request_probes.jsonl`` holds 84 short prompts to an assistant, written for seawall as
an evaluation-only stand-in before the ``requests_twins`` training rows existed, and never trained
on: homonyms of violent and drug words, safe targets, games, history, definitions, nonsense
groups, and their unsafe counterparts (requests to hurt people, hateful claims, self-harm, drugs,
sexual content involving a minor asked for). Privacy requests are left out: no category of the
taxonomy covers them. It is written by the same team as the training data, so its figures are
optimistic; the verdict is a public set never seen.

Prints precision, recall, F1 and the false-positive rate of ``flagged`` (any category) for each
``moderation.contextual`` mode, and lists the prompts that were judged wrong.

Usage: python bench/request_probes.py [--model-dir DIR] [--modes auto off on]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import seawall
from seawall.settings import load_settings

PROBES = Path(__file__).parent / "data" / "request_probes.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--modes", nargs="+", default=["auto", "off", "on"], choices=["auto", "off", "on"])
    args = parser.parse_args()
    rows = [json.loads(line) for line in PROBES.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [row["text"] for row in rows]
    for mode in args.modes:
        settings = load_settings()
        settings = settings.model_copy(
            update={
                "moderation": settings.moderation.model_copy(
                    update={"contextual": mode, "model_dir": args.model_dir}
                )
            }
        )
        results = seawall.moderate(texts, settings=settings)
        counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        wrong = []
        for row, result in zip(rows, results, strict=True):
            flagged = result.flagged
            key = ("t" if flagged == row["harmful"] else "f") + ("p" if flagged else "n")
            counts[key] += 1
            if flagged != row["harmful"]:
                wrong.append((row, result))
        precision = counts["tp"] / max(counts["tp"] + counts["fp"], 1)
        recall = counts["tp"] / max(counts["tp"] + counts["fn"], 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        fpr = counts["fp"] / max(counts["fp"] + counts["tn"], 1)
        print(
            f"[contextual {mode}] {len(rows)} prompts: precision {precision:.3f} recall {recall:.3f} "
            f"F1 {f1:.3f} false-positive rate {fpr:.3f}"
        )
        for row, result in wrong:
            top = max(result.category_scores, key=lambda name: result.category_scores[name])
            verdict = "missed" if row["harmful"] else "false alarm"
            print(f"  {verdict:11} {top} {result.category_scores[top]:.2f}  {row['text'][:90]}")


if __name__ == "__main__":
    main()
