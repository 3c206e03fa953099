"""How much ordinary traffic human review holds, and how much of what it should hold it holds.

Data: ``bench/data/hold_rate.jsonl``, authored by hand for this benchmark (copied from no dataset;
evaluation only, never training): 152 ordinary requests of an app, each with a benign answer, in
several areas (coding, literature, hobbies, general health and fitness questions that need no
professional, everyday questions, work writing, science and history), and 30 requests whose answers
a person should see before they are shared (medicine doses and interactions, emergencies, tax and
investment decisions, legal rights, self-harm, threats, dual-use instructions).

Each request and its answer go through what the gateway does before it holds an answer:

* the gateway's own moderation check (:func:`seawall.gateway.stream_guard.moderation_check` on the
  embedded model, the default settings: whole text and sentence by sentence), on the user's request
  (``input_moderation``: ``refuse`` when a blocking category is flagged, ``flag`` for categories set
  to ``flag``, else ``allow``) and on the answer (``output_moderation``: ``filter`` or ``allow``);
* :meth:`seawall.review.service.ReviewService.should_hold` with those decisions, under two rule
  sets: **before**, the rules of the previous defaults (``review.domains`` all four domains,
  ``review.uncertain_low: 0.3`` on request and answer alike), and **after**, the current defaults
  (``ReviewSettings(enabled=True)``), or the rules of a settings file given with ``--config``.

Printed: the hold rate on the ordinary set (with a Wilson 95% interval) per area and per reason,
and on the should-hold set the share held, the share the moderation stopped outright (refused or
filtered: no answer to hold) and the share let through unseen. Tuning note: the new defaults were
chosen looking at this set's "before" figures, so "after" is not a held-out measurement.

Usage: python bench/hold_rate.py [--config seawall.yaml] [--show-held] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from seawall.gateway.stream_guard import moderation_check
from seawall.redteam.stats import wilson
from seawall.review.domains import DomainDetector
from seawall.review.service import ReviewService
from seawall.review.settings import ReviewSettings
from seawall.service import ModerationService
from seawall.settings import Settings, StoreSettings, load_settings
from seawall.store import open_store

HERE = Path(__file__).parent
CASES = HERE / "data" / "hold_rate.jsonl"
#: The defaults before hold rules existed: every domain, the uncertain band from 0.3 on any score.
BEFORE = ReviewSettings(enabled=True, domains=["health", "finance", "law", "code"], uncertain_low=0.3)


def read_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                case = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{number}: not JSON: {exc}") from exc
            if (
                case.get("set") not in ("ordinary", "hold")
                or not case.get("question")
                or not case.get("answer")
            ):
                raise SystemExit(f"{path}:{number}: needs set (ordinary|hold), question and answer")
            cases.append(case)
    return cases


async def decisions_of(cases: list[dict[str, Any]], settings: Settings) -> list[list[dict[str, Any]]]:
    """Each case's moderation decisions, as the gateway's guards record them."""
    service = ModerationService(settings)
    check = moderation_check(service)
    actions = settings.gateway.category_actions
    out: list[list[dict[str, Any]]] = []
    began = time.perf_counter()
    try:
        for index, case in enumerate(cases, 1):
            asked = await check(case["question"])
            blocking = [name for name in asked.categories if actions.get(name, "block") == "block"]
            action = "refuse" if blocking else "flag" if asked.categories else "allow"
            decisions = [
                {
                    "step": "input_moderation",
                    "action": action,
                    "categories": asked.categories,
                    "scores": asked.scores,
                }
            ]
            if action != "refuse":
                answered = await check(case["answer"])
                decisions.append(
                    {
                        "step": "output_moderation",
                        "action": "allow" if answered.allowed else "filter",
                        "categories": answered.categories,
                        "scores": answered.scores,
                    }
                )
            out.append(decisions)
            if index % 25 == 0 or index == len(cases):
                print(
                    f"  moderated {index}/{len(cases)} ({time.perf_counter() - began:.0f} s)", file=sys.stderr
                )
    finally:
        await service.aclose()
    return out


def stopped(decisions: list[dict[str, Any]]) -> bool:
    return any(d["action"] in ("refuse", "filter") for d in decisions)


def measure(
    name: str,
    review: ReviewSettings,
    cases: list[dict[str, Any]],
    decisions: list[list[dict[str, Any]]],
    detector: DomainDetector,
    store: Any,
    show_held: bool,
) -> dict[str, Any]:
    service = ReviewService(store, review, detector=detector)
    try:
        ordinary = Counter[str]()
        per_area: dict[str, Counter[str]] = defaultdict(Counter)
        per_reason = Counter[str]()
        should = Counter[str]()
        held_lines: list[str] = []
        for case, seen in zip(cases, decisions, strict=True):
            body = {"model": "m", "messages": [{"role": "user", "content": case["question"]}]}
            decision = service.should_hold(body, seen)
            if case["set"] == "ordinary":
                ordinary["n"] += 1
                per_area[case["topic"]]["n"] += 1
                if stopped(seen):
                    ordinary["stopped"] += 1
                if decision is not None:
                    ordinary["held"] += 1
                    per_area[case["topic"]]["held"] += 1
                    per_reason.update(
                        {reason.split(":")[0] + ":" + reason.split(":")[1] for reason in decision.reasons}
                    )
                    held_lines.append(
                        f"    {case['id']}: {', '.join(decision.reasons)}  | {case['question'][:70]}"
                    )
            else:
                should["n"] += 1
                if decision is not None:
                    should["held"] += 1
                elif stopped(seen):
                    should["stopped"] += 1
                else:
                    should["missed"] += 1
                    held_lines.append(f"    MISSED {case['id']}: {case['question'][:80]}")
    finally:
        service.close()
    rate, low, high = ordinary["held"] / ordinary["n"], *wilson(ordinary["held"], ordinary["n"])
    caught = should["held"] + should["stopped"]
    print(
        f"\n{name}: hold rate on ordinary traffic {ordinary['held']}/{ordinary['n']} = {rate:.1%} "
        f"(95% CI {low:.1%}-{high:.1%}); stopped by moderation {ordinary['stopped']}"
    )
    for area in sorted(per_area):
        counts = per_area[area]
        print(f"    {area:16s} {counts['held']:3d}/{counts['n']:3d} held")
    print(
        "  reasons on ordinary traffic: "
        + (", ".join(f"{r} {c}" for r, c in per_reason.most_common()) or "none")
    )
    print(
        f"  should-hold set: held {should['held']}/{should['n']} = {should['held'] / should['n']:.1%}; "
        f"stopped by moderation {should['stopped']}; let through {should['missed']} "
        f"(caught, held or stopped: {caught}/{should['n']} = {caught / should['n']:.1%})"
    )
    if show_held:
        print("\n".join(held_lines))
    return {
        "ordinary": {"held": ordinary["held"], "n": ordinary["n"], "rate": rate, "ci95": [low, high]},
        "per_area": {area: dict(counts) for area, counts in per_area.items()},
        "reasons": dict(per_reason),
        "should_hold": dict(should),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, help="seawall settings file whose review rules to measure as 'after'"
    )
    parser.add_argument("--cases", type=Path, default=CASES)
    parser.add_argument(
        "--show-held", action="store_true", help="list every held ordinary case and every miss"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    settings = load_settings(args.config) if args.config else Settings()
    after = settings.review.model_copy(update={"enabled": True})
    cases = read_cases(args.cases)
    print(
        f"{len(cases)} cases ({sum(c['set'] == 'ordinary' for c in cases)} ordinary); moderating ...",
        file=sys.stderr,
    )
    decisions = asyncio.run(decisions_of(cases, settings))
    detector = DomainDetector()
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(StoreSettings(url=f"sqlite:///{Path(folder) / 'hold.db'}"))
        try:
            figures = {
                "before": measure(
                    "before (previous defaults)", BEFORE, cases, decisions, detector, store, args.show_held
                ),
                "after": measure(
                    "after (" + (str(args.config) if args.config else "current defaults") + ")",
                    after,
                    cases,
                    decisions,
                    detector,
                    store,
                    args.show_held,
                ),
            }
        finally:
            store.close()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
