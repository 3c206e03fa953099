"""Dilution: is a harmful passage still flagged when it is buried in a long harmless text?

For every harmful row of the project's evaluation sets (``bench/data/functional_tests.jsonl`` and
``web_register_eval.jsonl``, authored for evaluation only) that is flagged on its own, builds a
text of about ``--chars`` characters: harmless rows of the same sets (those that score under
``--filler-max-score`` on their own), with the harmful one at a random position, and asks the
moderation service (the code behind ``/v1/moderations``) again.
Prints, with passage judging on (the default, ``moderation.passages_over_chars``) and off:

* kept: the share of those passages still flagged when buried (the goal is 100 %);
* false alarms: the share of long texts built from harmless rows alone that are flagged;
* the time to judge one long text.

Usage: python bench/dilution.py [--chars 20000] [--texts 150] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

from seawall.service import ModerationService
from seawall.settings import Settings

HERE = Path(__file__).parent
SETS = [HERE / "data" / "functional_tests.jsonl", HERE / "data" / "web_register_eval.jsonl"]


def as_sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text[-1:] in ".!?" else f"{text}."


async def run(threshold: int, harmful: list[str], benign: list[str], args: argparse.Namespace) -> None:
    settings = Settings()
    settings.moderation.passages_over_chars = threshold
    service = ModerationService(settings)
    rng = random.Random(args.seed)
    # Filler is harmless rows the model finds plainly harmless on their own (every category under
    # --filler-max-score), so what is measured is the effect of putting texts together, not the
    # model's false alarms on single rows. The evaluation sets' benign rows are edgy on purpose.
    judged = await service.moderate_texts(benign)
    benign = [
        text
        for text, result in zip(benign, judged, strict=True)
        if max(result.category_scores.values()) < args.filler_max_score
    ]

    def filler() -> list[str]:
        chosen: list[str] = []
        while sum(len(text) + 1 for text in chosen) < args.chars:
            chosen.append(rng.choice(benign))
        return chosen

    alone = await service.moderate_texts(harmful)
    flagged_alone = [text for text, result in zip(harmful, alone, strict=True) if result.flagged]
    sample = rng.sample(flagged_alone, min(args.texts, len(flagged_alone)))
    long_texts = []
    for passage in sample:
        parts = filler()
        parts.insert(rng.randrange(len(parts) + 1), passage)
        long_texts.append(" ".join(parts))
    harmless_texts = [" ".join(filler()) for _ in range(len(sample))]
    started = time.perf_counter()
    buried = await service.moderate_texts(long_texts)
    seconds = time.perf_counter() - started
    harmless = await service.moderate_texts(harmless_texts)
    kept = sum(result.flagged for result in buried)
    alarms = sum(result.flagged for result in harmless)
    label = f"passages over {threshold} chars" if threshold else "whole text only"
    print(
        f"{len(benign)} filler rows; {label:28s} kept {kept}/{len(sample)} ({kept / len(sample):.1%})  "
        f"false alarms {alarms}/{len(sample)} ({alarms / len(sample):.1%})  "
        f"{1000 * seconds / len(sample):.0f} ms per {args.chars:,}-character text"
    )
    await service.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=20_000, help="Length of each long text.")
    parser.add_argument("--texts", type=int, default=150, help="Harmful passages to bury.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--filler-max-score", type=float, default=0.2, help="Filler rows score under this on every category."
    )
    args = parser.parse_args()
    rows = [
        json.loads(line) for path in SETS for line in path.read_text(encoding="utf-8").splitlines() if line
    ]
    harmful = [as_sentence(row["text"]) for row in rows if row["labels"] and len(row["text"]) <= 300]
    benign = [as_sentence(row["text"]) for row in rows if not row["labels"]]
    print(f"{len(harmful)} harmful passages of at most 300 characters, {len(benign)} harmless rows")
    default = Settings().moderation.passages_over_chars
    for threshold in (default, 0):
        asyncio.run(run(threshold, harmful, benign, args))


if __name__ == "__main__":
    main()
