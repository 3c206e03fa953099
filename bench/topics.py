"""Off-topic detection and knowledge-base matching, measured on the project's own labelled cases.

Data (authored by hand for this benchmark, copied from no dataset; evaluation only, never training):

* ``bench/data/topic_cases.jsonl``: five app policies (a bike shop, a cooking assistant, a bank, an
  IT helpdesk, a general assistant), each with example requests it answers (``examples``) and
  example requests it refuses (``off_topic_examples``: in a policy file, the examples whose answer
  is the off-topic reply), and requests labelled ``on_topic``, ``off_topic`` or ``small_talk``
  (small talk must count as on-topic);
* ``bench/data/knowledge_cases.jsonl``: two knowledge bases (the bike shop's is
  ``examples/knowledge.yaml``; the bank's entries are inline and loaded as JSON Lines) and requests
  labelled with the entry that answers them, or null (near misses, negations, unrelated requests).

Every policy and knowledge base belongs to one split: thresholds were tuned on ``dev`` (shop and
cooking; the shop knowledge base) and the ``test`` figures are the ones to quote. Positive class:
``off_topic`` for the topic guard (what it refuses), "answered from the knowledge base" for
matching (a match counts as correct only when it is the expected entry).

``--refusals-as-anchors`` measures the guard as it was before off-topic examples counted against
the topic: every example's user turn, the refused ones too, as an on-topic anchor.

Usage: python bench/topics.py [--threshold-sweep] [--refusals-as-anchors]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from seawall.gateway import knowledge, topics
from seawall.gateway.knowledge import KnowledgeBase
from seawall.gateway.topics import TopicGuard

HERE = Path(__file__).parent
ROOT = HERE.parent
TOPIC_CASES = HERE / "data" / "topic_cases.jsonl"
KNOWLEDGE_CASES = HERE / "data" / "knowledge_cases.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def split_figures(counts: dict[str, dict[str, int]], groups: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and accuracy per split, and the share right within each group."""
    report: dict[str, dict[str, float]] = {}
    for split in ("dev", "test"):
        c = counts[split]
        precision, recall, f1 = prf(c["tp"], c["fp"], c["fn"])
        report[split] = {
            "cases": c["n"],
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "accuracy": c["correct"] / max(c["n"], 1),
            **{f"{group} ok": c[f"{group}_ok"] / max(c[f"{group}_n"], 1) for group in groups},
        }
    return report


def topic_bench(
    threshold: float | None, verbose: bool, refusals_as_anchors: bool = False
) -> dict[str, dict[str, float]]:
    rows = read_jsonl(TOPIC_CASES)
    policies = {row["id"]: row for row in rows if row["kind"] == "policy"}
    guards = {
        pid: TopicGuard.from_policy(
            p["purpose"],
            p["allowed_topics"],
            p["examples"] + p["off_topic_examples"] if refusals_as_anchors else p["examples"],
            off_topic_examples=[] if refusals_as_anchors else p["off_topic_examples"],
            threshold=threshold,
        )
        for pid, p in policies.items()
    }
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    elapsed, n = 0.0, 0
    for row in rows:
        if row["kind"] != "case":
            continue
        split = policies[row["policy"]]["split"]
        start = time.perf_counter()
        verdict = guards[row["policy"]].check(row["text"])
        elapsed += time.perf_counter() - start
        n += 1
        off_truth = row["label"] == "off_topic"
        off_pred = not verdict.on_topic
        c = counts[split]
        c["n"] += 1
        c["tp"] += off_truth and off_pred
        c["fp"] += off_pred and not off_truth
        c["fn"] += off_truth and not off_pred
        c["correct"] += off_truth == off_pred
        c[f"{row['label']}_n"] += 1
        c[f"{row['label']}_ok"] += off_truth == off_pred
        if verbose and off_truth != off_pred:
            print(f"  miss [{split}/{row['policy']}/{row['label']}] score={verdict.score:+.2f} {row['text']}")
    report = split_figures(counts, ("on_topic", "off_topic", "small_talk"))
    report["latency"] = {"ms per request": 1000 * elapsed / max(n, 1)}
    return report


def knowledge_bench(threshold: float | None, verbose: bool) -> dict[str, dict[str, float]]:
    rows = read_jsonl(KNOWLEDGE_CASES)
    bases: dict[str, KnowledgeBase] = {}
    splits: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            if row["kind"] != "kb":
                continue
            splits[row["kb"]] = row["split"]
            if row["file"]:
                bases[row["kb"]] = KnowledgeBase.load(ROOT / row["file"], threshold=threshold)
            else:
                inline = [
                    {k: v for k, v in r.items() if k not in ("kind", "kb")}
                    for r in rows
                    if r["kind"] == "entry" and r["kb"] == row["kb"]
                ]
                path = Path(tmp) / f"{row['kb']}.jsonl"
                path.write_text("".join(json.dumps(entry) + "\n" for entry in inline), encoding="utf-8")
                bases[row["kb"]] = KnowledgeBase.load(path, threshold=threshold)
    if threshold is None:
        for base in bases.values():  # the shop file may set its own; the bench measures the default
            base.threshold = knowledge.DEFAULT_THRESHOLD
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    elapsed, n = 0.0, 0
    for row in rows:
        if row["kind"] != "case":
            continue
        split = splits[row["kb"]]
        start = time.perf_counter()
        found = bases[row["kb"]].match(row["text"])
        elapsed += time.perf_counter() - start
        n += 1
        predicted = None if found is None else found.entry_id
        c = counts[split]
        c["n"] += 1
        c["correct"] += predicted == row["expect"]
        c["tp"] += predicted is not None and predicted == row["expect"]
        c["fp"] += predicted is not None and predicted != row["expect"]
        c["fn"] += row["expect"] is not None and predicted != row["expect"]
        c[f"{row['type']}_n"] += 1
        c[f"{row['type']}_ok"] += predicted == row["expect"]
        if verbose and predicted != row["expect"]:
            score = "-" if found is None else f"{found.score:.2f}"
            print(
                f"  miss [{split}/{row['kb']}/{row['type']}] {row['text']} -> {predicted} ({score}),"
                f" want {row['expect']}"
            )
    report = split_figures(counts, ("paraphrase", "near_miss", "negation", "unrelated"))
    # Latency at a realistic size: the shop base repeated to ~300 phrasings.
    shop = bases["shop"]
    big = KnowledgeBase(
        [
            knowledge.KnowledgeEntry(
                f"{e.id}-{i}", tuple(f"{q} ({i})" for q in e.questions), e.answer, e.sources
            )
            for i in range(10)
            for e in shop.entries
        ]
    )
    queries = [row["text"] for row in rows if row["kind"] == "case"]
    start = time.perf_counter()
    for query in queries:
        big.match(query)
    single = (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    big.match_many(queries)
    batched = (time.perf_counter() - start) / len(queries)
    report["latency"] = {
        "ms per request (small bases)": 1000 * elapsed / max(n, 1),
        f"ms per request, {sum(len(e.questions) for e in big.entries)} phrasings": 1000 * single,
        "same, batched": 1000 * batched,
    }
    return report


def show(title: str, report: dict[str, dict[str, float]]) -> None:
    print(f"\n== {title}")
    for section, values in report.items():
        line = "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        print(f"  {section:8s} {line}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--verbose", action="store_true", help="print every wrong decision")
    parser.add_argument(
        "--threshold-sweep", action="store_true", help="accuracy per threshold (dev and test)"
    )
    parser.add_argument(
        "--refusals-as-anchors",
        action="store_true",
        help="use the off-topic examples as on-topic anchors (the guard before they counted against)",
    )
    args = parser.parse_args()
    print(f"topic guard: threshold={topics.DEFAULT_THRESHOLD} (tuned on dev: shop, cooking)")
    anchors = " (off-topic examples used as on-topic anchors)" if args.refusals_as_anchors else ""
    show(
        f"off-topic detection (positive = off-topic){anchors}",
        topic_bench(None, args.verbose, args.refusals_as_anchors),
    )
    print(f"\nknowledge base: threshold={knowledge.DEFAULT_THRESHOLD} (tuned on dev: shop)")
    show(
        "knowledge-base matching (positive = answered, with the right entry)",
        knowledge_bench(None, args.verbose),
    )
    if args.threshold_sweep:
        print("\n== sweeps (accuracy dev / test)")
        for t in (-0.3, -0.25, -0.2, -0.15, -0.1, -0.05, 0.0, 0.05):
            r = topic_bench(t, False)
            print(f"  topic t={t:+.2f}  {r['dev']['accuracy']:.3f} / {r['test']['accuracy']:.3f}")
        for t in (0.5, 0.55, 0.58, 0.6, 0.62, 0.65, 0.7):
            r = knowledge_bench(t, False)
            print(f"  kb    t={t:.2f}  {r['dev']['accuracy']:.3f} / {r['test']['accuracy']:.3f}")


if __name__ == "__main__":
    main()
