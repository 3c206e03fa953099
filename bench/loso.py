"""Leave-one-source-out quality: the primary stand-in for "real text the model never saw".

For each realistic comment source in turn, the whole training recipe (``seawall train``:
both stages, thresholds, calibration) runs without that source, and the resulting model
scores every row of it. A source's own annotators judged only some categories (toxicity,
sexism, hate), so per-label figures are given for the labels it judged; the any-category
figure ranks by the worst of the 13 categories, as a moderation API is used.

Each fold is a full training run (about 15–25 minutes on 2 cores; MiniLM vectors come from
the embedding cache). By default a fold skips the screening of out-of-scope negatives (it
doubles the fitting time and moves few rows); ``--screen`` runs the shipped recipe exactly.
Results are written as JSON (``--out``) and printed;
``--write-card`` adds them to the shipped model card's evaluation section.

With ``--finetune-rows N`` each fold first fine-tunes its own encoder on at most N of its training
rows a source (never the left-out source's), so the figure says what fine-tuning buys on text it
never saw; add about 15 minutes a fold on 2 cores for N = 500.

Usage: python bench/loso.py [--data ../shared/data] [--sources jigsaw edos ...] [--out FILE] [--write-card]
[--keep-models DIR] [--finetune-rows N]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from seawall.model.classifier import default_model_dir
from seawall.training.datasets import ANNOTATED_LABELS
from seawall.training.model_card import record_evaluation
from seawall.training.train import TrainConfig, default_authored_dir, train

HERE = Path(__file__).parent
#: Realistic user-written comment corpora (the register of web text); each is one fold.
REALISTIC_SOURCES = ("jigsaw", "toxic_spans", "edos", "davidson", "convabuse", "stormfront")


def fold(source: str, args: argparse.Namespace) -> dict[str, Any]:
    config = TrainConfig(
        data_dir=args.data,
        authored_dir=default_authored_dir(),
        out_dir=args.keep_models / source if args.keep_models else Path("/nonexistent"),
        exclude_sources=(source,),
        # Written out, a fold's artefacts can be joined to other stages trained without the same
        # source (python -m seawall.training.multilingual --holdout SOURCE --english-stages DIR).
        write=args.keep_models is not None,
    )
    if not args.screen:
        config.screen_score = None
    config.finetune_rows_per_source = args.finetune_rows
    if args.embedding_cache:
        config.embedding_cache = args.embedding_cache
    started = time.time()
    report = train(config, progress=lambda message: None)
    left_out = report["left_out"]
    judged = sorted(ANNOTATED_LABELS.get(source, ()))
    out: dict[str, Any] = {
        "source": source,
        "seconds": round(time.time() - started),
        "encoder": report.get("contextual", {}).get("encoder", {}),
        "modes": {},
    }
    for mode in ("off", "auto", "on"):
        if mode not in left_out:
            continue
        figures = left_out[mode]
        per_label = {
            label: figures["labels"][label]["auprc"]
            for label in judged
            if label in figures["labels"] and figures["labels"][label]["positives"] >= 10
        }
        out["modes"][mode] = {
            "any_auprc": figures["summary"]["any_auprc"],
            "false_positive_rate": figures["summary"]["false_positive_rate"],
            "rows": figures["summary"]["rows"],
            "positives": figures["summary"]["any_positives"],
            "label_auprc": per_label,
            "mean_label_auprc": round(float(np.mean(list(per_label.values()))), 4) if per_label else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--sources", nargs="+", default=list(REALISTIC_SOURCES))
    parser.add_argument("--embedding-cache", type=Path, default=None)
    parser.add_argument(
        "--screen",
        action="store_true",
        help="also screen out-of-scope negatives (the shipped recipe; doubles the fitting time)",
    )
    parser.add_argument(
        "--finetune-rows",
        type=int,
        default=0,
        help="fine-tune each fold's encoder on at most N training rows a source (0: the stock encoder)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "loso.json")
    parser.add_argument(
        "--keep-models",
        type=Path,
        default=None,
        help="write each fold's artefacts to DIR/SOURCE (with its multilingual stage, also without it)",
    )
    parser.add_argument(
        "--write-card",
        action="store_true",
        help="keep the figures in the shipped model's evaluation.json and card",
    )
    args = parser.parse_args()
    if args.finetune_rows < 0:
        parser.error("--finetune-rows must be 0 (the stock encoder) or more")
    if not args.data.is_dir():
        raise SystemExit(f"training data not found at {args.data} (pass --data)")
    results: list[dict[str, Any]] = []
    if args.out.exists():  # resume: folds already done are kept
        results = [r for r in json.loads(args.out.read_text()) if r["source"] in args.sources]
    done = {r["source"] for r in results}
    for source in args.sources:
        if source in done:
            continue
        print(f"fold without {source} ...", flush=True)
        results.append(fold(source, args))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(results[-1]), flush=True)
    print()
    print(
        "| left-out source | rows | positives | mode | any-category AUPRC | FPR | mean AUPRC, judged labels |"
    )
    print("|---|---|---|---|---|---|---|")
    for result in results:
        for mode, figures in result["modes"].items():
            print(
                f"| {result['source']} | {figures['rows']} | {figures['positives']} | {mode} "
                f"| {figures['any_auprc']} | {figures['false_positive_rate']} "
                f"| {figures['mean_label_auprc']} |"
            )
    for mode in ("off", "auto", "on"):
        values = [r["modes"][mode]["any_auprc"] for r in results if mode in r["modes"]]
        labels = [r["modes"][mode]["mean_label_auprc"] for r in results if mode in r["modes"]]
        labels = [v for v in labels if v is not None]
        if values:
            print(
                f"mean over {len(values)} folds, contextual {mode}: any-category AUPRC "
                f"{np.mean(values):.3f}, mean per-label AUPRC {np.mean(labels):.3f}"
            )

    if args.write_card:
        record_evaluation(default_model_dir(), "loso", results)
        # The folds retrain with today's recipe; say so, in case the shipped model changes later.
        recipe = f"folds trained {date.today().isoformat()} with the recipe then current"
        record_evaluation(default_model_dir(), "loso_recipe", recipe)


if __name__ == "__main__":
    main()
