"""Red-team figures, measured in one run: cases per second against a loopback target, the total
time of the default suite, and the refusal detector's precision / recall on the authored fixtures.

    python bench/redteam.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "data" / "redteam")]

from bots import chat_app, hardened_reply, vulnerable_reply  # noqa: E402

from backend_standins import serving  # noqa: E402
from seawall.redteam import AppConfig, RedTeamConfig, build_suite, is_refusal, scan  # noqa: E402
from seawall.redteam.config import OpenAITargetConfig  # noqa: E402

APP = AppConfig(
    system_prompt="You are Velo Help, the support assistant of Velo Bikes.",
    purpose="customer support for Velo Bikes",
)


def refusal_figures(name: str) -> str:
    rows = [json.loads(line) for line in (ROOT / "tests/data/redteam" / name).read_text().splitlines()]
    tp = sum(1 for r in rows if r["refusal"] and is_refusal(r["text"]))
    fp = sum(1 for r in rows if not r["refusal"] and is_refusal(r["text"]))
    fn = sum(1 for r in rows if r["refusal"] and not is_refusal(r["text"]))
    return (
        f"{name}: n={len(rows)} ({tp + fn} refusals), precision {tp / (tp + fp):.3f}, "
        f"recall {tp / (tp + fn):.3f}"
    )


def main() -> None:
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}")
    suite = build_suite(RedTeamConfig(app=APP).suite, APP)
    print(f"default suite: {len(suite.cases)} cases (seed 0, fingerprint {suite.fingerprint})")
    for name, reply in (("vulnerable", vulnerable_reply), ("hardened", hardened_reply)):
        with serving(chat_app(reply)) as server:
            target = OpenAITargetConfig(base_url=f"{server.url}/v1", model="bot")
            scan(
                target,
                build_suite(RedTeamConfig(app=APP).suite.model_copy(update={"max_cases": 10}), APP),
                config=RedTeamConfig(app=APP),
            )  # warm-up: model load, connections
            for concurrency in (1, 8):
                config = RedTeamConfig(app=APP, run={"concurrency": concurrency})
                began = time.perf_counter()
                report = scan(target, suite, config=config)
                took = time.perf_counter() - began
                print(
                    f"{name:10s} concurrency {concurrency}: {len(suite.cases)} cases in {took:.2f} s = "
                    f"{len(suite.cases) / took:.0f} cases/s; ASR {report.asr:.3f}, "
                    f"errors {report.summary.overall.error}"
                )
    for fixture in ("refusals.jsonl", "refusals_holdout.jsonl"):
        print("refusal detector, " + refusal_figures(fixture))


if __name__ == "__main__":
    main()
