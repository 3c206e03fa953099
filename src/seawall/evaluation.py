"""``seawall eval``: score a labeled JSONL file and report per-category quality.

Each line is ``{"text": ..., "labels": ["harassment", ...]}`` (an empty list is
benign), or ``{"text": ..., "<category>": 0/1, ...}`` with one key per
category. Categories that appear in no row's labels are reported as absent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from seawall.categories import ALL_LABELS, CATEGORIES, with_parents
from seawall.errors import DataError
from seawall.metrics import average_precision, f1_at

if TYPE_CHECKING:
    from seawall.results import ModerationResult
    from seawall.service import ModerationService


@dataclass
class LabeledSet:
    texts: list[str]
    labels: np.ndarray  # (rows, len(ALL_LABELS)) bool


def read_labeled_jsonl(path: Path) -> LabeledSet:
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    texts: list[str] = []
    rows: list[list[bool]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record: Any = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"{path}:{number}: each line needs a string 'text'")
            if "labels" in record:
                if not isinstance(record["labels"], list):
                    raise DataError(f"{path}:{number}: 'labels' must be a list of category names")
                names = set(record["labels"])
            elif any(name in record for name in ALL_LABELS):
                names = {name for name in ALL_LABELS if record.get(name) in (1, True, "1", "true")}
            else:  # read as benign, a row that was never labelled would count as a false positive
                raise DataError(
                    f"{path}:{number}: no labels: give 'labels' (a list of category names, [] for "
                    "benign) or the categories as 0/1 fields"
                )
            unknown = names - set(ALL_LABELS)
            if unknown:
                raise DataError(f"{path}:{number}: unknown labels {sorted(unknown)}")
            names = with_parents(names)
            texts.append(record["text"])
            rows.append([name in names for name in ALL_LABELS])
    if not texts:
        raise DataError(f"{path} holds no rows")
    return LabeledSet(texts, np.array(rows, dtype=bool))


async def score_texts(
    service: ModerationService,
    texts: Sequence[str],
    model: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ModerationResult]:
    """One result per text, through the batch path ``seawall moderate`` uses
    (:func:`seawall.batch.rows.moderate_items`); ``progress`` hears how many texts each batch finished."""
    from seawall.batch.rows import moderate_items

    return [found for (found,) in await moderate_items(service, texts, model, progress=progress)]


def scores_matrix(results: list[Any]) -> np.ndarray:
    """(rows, len(ALL_LABELS)) scores from moderation results (extra labels included)."""
    out = np.zeros((len(results), len(ALL_LABELS)), dtype=np.float32)
    for row, result in enumerate(results):
        for col, name in enumerate(ALL_LABELS):
            if name in CATEGORIES:
                out[row, col] = result.category_scores.get(name, 0.0)
            else:
                out[row, col] = result.extra_scores.get(name, 0.0)
    return out


def evaluate_scores(
    y: NDArray[np.bool_],
    scores: NDArray[np.float32],
    thresholds: dict[str, float],
    labels: tuple[str, ...] = ALL_LABELS,
) -> dict[str, Any]:
    """Per-label AUPRC and precision/recall/F1 at the thresholds, plus the any-category AUPRC."""
    per_label: dict[str, Any] = {}
    for index, label in enumerate(labels):
        positives = int(y[:, index].sum())
        if positives == 0:
            continue
        precision, recall, f1 = f1_at(y[:, index], scores[:, index], thresholds.get(label, 0.5))
        per_label[label] = {
            "positives": positives,
            "auprc": round(average_precision(y[:, index], scores[:, index]), 4),
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
        }
    category_columns = [i for i, label in enumerate(labels) if label in CATEGORIES]
    any_label: NDArray[np.bool_] = np.asarray(y[:, category_columns].any(axis=1), dtype=bool)
    any_score = scores[:, category_columns].max(axis=1)
    any_flag = np.zeros(len(y), dtype=bool)
    for i in category_columns:
        any_flag |= scores[:, i] >= thresholds.get(labels[i], 0.5)
    tp = float((any_flag & any_label).sum())
    summary = {
        "rows": len(y),
        "any_positives": int(any_label.sum()),
        "any_auprc": round(average_precision(any_label, any_score), 4) if any_label.any() else None,
        "any_precision": round(tp / max(float(any_flag.sum()), 1.0), 4),
        "any_recall": round(tp / max(float(any_label.sum()), 1.0), 4),
        "false_positive_rate": round(
            float((any_flag & ~any_label).sum()) / max(float((~any_label).sum()), 1.0), 4
        ),
    }
    return {"summary": summary, "labels": per_label}
