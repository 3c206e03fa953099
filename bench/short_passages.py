"""Should short texts be judged passage by passage too? What it buys and what it costs.

``/v1/moderations`` judges a text over ``moderation.passages_over_chars`` (5,000 characters) also
sentence by sentence, so a harmful sentence is not diluted by the harmless ones around it; shorter
texts are judged whole. This script scores the same texts through the moderation service (the code
behind the API, contextual stage as the API reads) twice: as shipped, and with
``passages_over_chars: 1`` (every text of two or more sentences also judged passage by passage,
the documented opt-in). It also derives a third reading: only the categories a single sentence
decides by definition (threats, violence, self-harm, violent illicit) take the passage reading.

Sets: the held-out sources never trained on (with ``--data``, ``../shared/data`` by default when
present), the web-register evaluation set and the functional suite (both authored for evaluation
only, so secondary). Prints, per set and reading, the any-category AUPRC, precision, recall and
false-positive rate at the shipped thresholds, and the mean per-label AUPRC.

Usage: python bench/short_passages.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from seawall.categories import ALL_LABELS
from seawall.evaluation import evaluate_scores, read_labeled_jsonl
from seawall.service import ModerationService
from seawall.settings import load_settings

HERE = Path(__file__).parent
#: Categories one sentence decides by definition: a threat is a threat in any company.
SENTENCE_DECIDES = (
    "harassment/threatening",
    "hate/threatening",
    "violence",
    "violence/graphic",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "illicit/violent",
)


async def scores(texts: list[str], passages_over_chars: int) -> tuple[NDArray[np.float32], dict[str, float]]:
    """(texts, labels) scores from the service, and the thresholds it flags at."""
    service = ModerationService(load_settings(moderation={"passages_over_chars": passages_over_chars}))
    try:
        results = await service.moderate_texts(texts, "omni-moderation-latest")
        backend = await service.backend(service.backend_name(None))
        thresholds = dict(getattr(backend, "thresholds", {}))
    finally:
        await service.aclose()
    matrix = np.zeros((len(texts), len(ALL_LABELS)), dtype=np.float32)
    for row, result in enumerate(results):
        every = {**result.category_scores, **result.extra_scores}
        for column, label in enumerate(ALL_LABELS):
            matrix[row, column] = every.get(label, 0.0)
    return matrix, thresholds


def report(name: str, labels: NDArray[np.bool_], texts: list[str]) -> None:
    whole, thresholds = asyncio.run(scores(texts, 5000))
    cut, _ = asyncio.run(scores(texts, 1))
    some = whole.copy()
    columns = [ALL_LABELS.index(label) for label in SENTENCE_DECIDES]
    some[:, columns] = cut[:, columns]
    print(f"\n== {name} ({len(texts)} texts) ==")
    readings = (
        ("whole (shipped)", whole),
        ("passages, every category", cut),
        ("passages, threat/violence/self-harm only", some),
    )
    for reading, matrix in readings:
        result = evaluate_scores(labels, matrix, thresholds)
        summary = result["summary"]
        per_label = [row["auprc"] for row in result["labels"].values()]
        print(
            f"  {reading:42s} any-category AUPRC {summary['any_auprc']:.4f}  precision "
            f"{summary['any_precision']:.3f}  recall {summary['any_recall']:.3f}  false-positive rate "
            f"{summary['false_positive_rate']:.3f}  mean per-label AUPRC {np.mean(per_label):.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = parser.parse_args()
    if args.data.is_dir():
        from seawall.training.datasets import HELD_OUT_SOURCES, load_sources
        from seawall.training.train import label_matrix, merge_duplicates

        held_out = merge_duplicates(load_sources(args.data, HELD_OUT_SOURCES))
        report(
            f"held-out sources never trained on ({', '.join(HELD_OUT_SOURCES)})",
            label_matrix(held_out),
            [row.text for row in held_out],
        )
    else:
        print(f"no {args.data}: the held-out sources are skipped (the authored sets follow)")
    for path in (HERE / "data" / "web_register_eval.jsonl", HERE / "data" / "functional_tests.jsonl"):
        labeled = read_labeled_jsonl(path)
        report(f"{path.name} (authored, evaluation only)", labeled.labels, list(labeled.texts))


if __name__ == "__main__":
    main()
