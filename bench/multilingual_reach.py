"""How far a retrained multilingual stage can move the leave-one-source-out figures.

The folds (``bench/loso.py``) judge the English stages; the multilingual stage reads only the word
windows its language gate routes. This scores the six fold sources with the shipped English stages and
two multilingual stages (the shipped one and another, e.g. the previous release's) and prints how many
rows the gate routes, how much the two stages' readings of them differ, and each source's
any-category AUPRC with each stage loaded (contextual ``off``: unrouted rows then score alike). The
English stages trained on these sources, so only the difference between the columns means anything.

Usage: python bench/multilingual_reach.py --other-stage OLD/multilingual.npz [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from seawall.categories import ALL_LABELS, CATEGORIES
from seawall.metrics import average_precision
from seawall.model.classifier import TextClassifier, default_model_dir
from seawall.model.multilingual import detect_language
from seawall.training.datasets import TRAINING_SOURCES, load_sources

sys.path.insert(0, str(Path(__file__).parent))
from loso import REALISTIC_SOURCES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--other-stage", type=Path, required=True, help="another multilingual.npz")
    args = parser.parse_args()
    if not args.other_stage.is_file():
        parser.error(f"--other-stage: no such file {args.other_stage}")
    shipped = TextClassifier.load(default_model_dir(), contextual=False, multilingual="on")
    with tempfile.TemporaryDirectory() as folder:
        other_dir = Path(folder)
        for path in default_model_dir().iterdir():
            shutil.copy(path, other_dir / path.name)
        shutil.copy(args.other_stage, other_dir / "multilingual.npz")
        other = TextClassifier.load(other_dir, contextual=False, multilingual="on")
    sources = {name: TRAINING_SOURCES[name] for name in REALISTIC_SOURCES}
    rows = load_sources(args.data, sources, lambda name, count: print(f"loaded {name}: {count} rows"))
    texts = [row.text for row in rows]
    routed = sum(any(detect_language(w) for w in shipped.featurizer.windows(text)) for text in texts)
    print(f"{len(rows)} rows; {routed} have a window the language gate routes")
    columns = [ALL_LABELS.index(name) for name in CATEGORIES]
    ours = shipped.score(texts, "off")[:, columns]
    theirs = other.score(texts, "off")[:, columns]
    change = np.abs(ours - theirs).max(axis=1)
    flips = ((ours >= 0.5).any(axis=1) != (theirs >= 0.5).any(axis=1)).sum()
    print(f"largest score change {change.max():.4f}; any-category flag changed on {flips} rows")
    truth = np.array([any(label in CATEGORIES for label in row.labels) for row in rows])
    source = np.array([row.source for row in rows])
    print("| source | any-category AUPRC, shipped stage | other stage |")
    for name in REALISTIC_SOURCES:
        m = source == name
        print(
            f"| {name} | {average_precision(truth[m], ours[m].max(axis=1)):.4f} "
            f"| {average_precision(truth[m], theirs[m].max(axis=1)):.4f} |"
        )


if __name__ == "__main__":
    main()
