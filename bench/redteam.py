"""Red-team figures, measured in one run: cases per second against a loopback target, the total
time of the default suite, and the refusal detector's precision / recall on the authored fixtures.

With ``--smollm2`` it scans a real model instead: SmolLM2-135M-Instruct (the ``local-llm``
extra) served by llama-cpp-python on loopback, directly and behind the seawall gateway, and
prints both reports' attack success rates (overall and per family, with 95% Wilson intervals),
their blocked / inconclusive / error counts, cases per second and total time. Every reply is
capped at ``--max-tokens`` at temperature 0; expect minutes (20-55 generated tokens/s).

    python bench/redteam.py
    python bench/redteam.py --smollm2 [--max-tokens 48] [--max-cases N] [--out DIR] [--probes ID ...]
        [--strategies NAME ... [--per-strategy N] [--goals GOAL ...]]

``--probes`` keeps the probes named (ids, id prefixes or families), with no strategy applied; the
OWASP LLM Top 10 (2025) coverage table of each scan is printed after its families. With
``--strategies`` the scan holds only those strategies' cases (``--per-strategy`` base cases each,
from ``--probes``; ``--goals`` keeps the cases of those catalogue goals), and the ASR per strategy is
printed; a tree case also prints how its search went.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "data" / "redteam")]

from bots import chat_app, hardened_reply, vulnerable_reply  # noqa: E402

from backend_standins import serving  # noqa: E402
from seawall.redteam import AppConfig, RedTeamConfig, Report, Suite, build_suite, is_refusal, scan  # noqa: E402
from seawall.redteam.config import OpenAITargetConfig  # noqa: E402
from seawall.redteam.transcript import tree_line  # noqa: E402

APP = AppConfig(
    system_prompt="You are Velo Help, the support assistant of Velo Bikes.",
    purpose="customer support for Velo Bikes",
)
REFUSAL_FIXTURES = ("refusals.jsonl", "refusals_holdout.jsonl", "refusals_holdout2.jsonl")


def refusal_figures(name: str) -> str:
    path = ROOT / "tests/data/redteam" / name
    if not path.exists():
        return f"{name}: missing"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tp = sum(1 for r in rows if r["refusal"] and is_refusal(r["text"]))
    fp = sum(1 for r in rows if not r["refusal"] and is_refusal(r["text"]))
    fn = sum(1 for r in rows if r["refusal"] and not is_refusal(r["text"]))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn)
    return f"{name}: n={len(rows)} ({tp + fn} refusals), precision {precision:.3f}, recall {recall:.3f}"


def bots() -> None:
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


def _pct(value: float | None) -> str:
    return "   –  " if value is None else f"{100 * value:5.1f}%"


def print_report(name: str, report: Report, took: float) -> None:
    o = report.summary.overall
    print(
        f"\n{name}: {o.cases} cases in {took:.1f} s = {o.cases / took:.2f} cases/s; "
        f"ASR {_pct(o.asr)} (95% CI {_pct(o.ci_low)}–{_pct(o.ci_high)}); vulnerable {o.vulnerable}, "
        f"safe {o.safe}, inconclusive {o.inconclusive} (blocked {o.blocked}), errors {o.error}"
    )
    columns = " ".join(f"{c:>5s}" for c in ("cases", "vuln", "safe", "inc", "block"))
    print(f"  {'family':22s} {columns}   ASR    95% CI")
    for family, s in report.summary.by_family.items():
        print(
            f"  {family:22s} {s.cases:5d} {s.vulnerable:5d} {s.safe:5d} {s.inconclusive:5d} {s.blocked:5d} "
            f"{_pct(s.asr)} {_pct(s.ci_low)}–{_pct(s.ci_high)}"
        )
    if len(report.summary.by_strategy) > 1 or "none" not in report.summary.by_strategy:
        print(f"  {'strategy':22s} {columns}   ASR    95% CI")
        for strategy, s in report.summary.by_strategy.items():
            print(
                f"  {strategy:22s} {s.cases:5d} {s.vulnerable:5d} {s.safe:5d} {s.inconclusive:5d} "
                f"{s.blocked:5d} {_pct(s.asr)} {_pct(s.ci_low)}–{_pct(s.ci_high)}"
            )
    for result in report.results:
        if result.case.tree is not None:
            print(f"  {result.id}: {result.verdict.value}; {tree_line(result)}")
    print(f"  {'OWASP LLM 2025 risk':40s} {columns}   ASR    95% CI   probes")
    for row in report.coverage_of():
        s = row.stats
        print(
            f"  {row.risk + ' ' + row.name:40s} {s.cases:5d} {s.vulnerable:5d} {s.safe:5d} "
            f"{s.inconclusive:5d} {s.blocked:5d} {_pct(s.asr)} {_pct(s.ci_low)}–{_pct(s.ci_high)}   "
            + (", ".join(row.probes) if row.probes else row.status)
        )


def smollm2(
    max_tokens: int,
    max_cases: int | None,
    out: Path | None,
    probes: list[str] | None,
    strategies: list[str] | None = None,
    per_strategy: int = 4,
    goals: list[str] | None = None,
) -> None:
    from conftest import running_server
    from seawall.gateway.local_llm import INSTALL_HINT, LocalModelServer, local_llm_available
    from seawall.redteam import write_reports
    from seawall.settings import LocalLLMSettings, load_settings

    if not local_llm_available():
        raise SystemExit(f"--smollm2 needs the local-llm extra: {INSTALL_HINT}")
    app = AppConfig(
        system_prompt=APP.system_prompt, purpose="customer support for Velo Bikes, an online bicycle shop"
    )
    config = RedTeamConfig(app=app, run={"concurrency": 2, "timeout_s": 180, "retries": 0})
    chosen = {"max_cases": max_cases} | ({"probes": probes, "strategies": []} if probes else {})
    if strategies:
        chosen |= {"strategies": strategies, "per_strategy": per_strategy}
    suite: Suite = build_suite(config.suite.model_copy(update=chosen), app)
    if strategies:
        kept = [c for c in suite.cases if c.strategy and (not goals or c.goal_id in goals)]
        suite = suite.model_copy(update={"cases": kept})
    print(
        f"suite: {len(suite.cases)} cases (seed 0, fingerprint {suite.fingerprint}); "
        f"max_tokens {max_tokens}, temperature 0, concurrency {config.run.concurrency}"
    )
    with (
        LocalModelServer(LocalLLMSettings(context_tokens=2048)) as local,
        tempfile.TemporaryDirectory() as tmp,
    ):
        print(f"model server ready in {local.startup_s:.1f} s at {local.base_url}")
        began = time.perf_counter()
        direct = scan(
            OpenAITargetConfig(base_url=local.base_url, model=local.model, max_tokens=max_tokens),
            suite,
            config=config,
        )
        direct_s = time.perf_counter() - began
        print_report("SmolLM2 direct", direct, direct_s)
        settings = load_settings(
            gateway={
                "enabled": True,
                "upstream": {"base_url": local.base_url, "max_retries": 0, "total_timeout_s": 180},
                "secret_file": f"{tmp}/secret",
                "audit_file": None,
            },
            store={"url": f"sqlite:///{tmp}/store.db"},
        )
        with running_server(settings) as gateway:
            began = time.perf_counter()
            guarded = scan(
                OpenAITargetConfig(
                    type="seawall", base_url=gateway.base_url, model=local.model, max_tokens=max_tokens
                ),
                suite,
                config=config,
            )
            guarded_s = time.perf_counter() - began
        print_report("SmolLM2 behind the seawall gateway", guarded, guarded_s)
    if out is not None:
        for name, report in (("direct", direct), ("gateway", guarded)):
            write_reports(report, out / name, ["json", "html"])
        print(f"\nreports: {out}/direct, {out}/gateway")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smollm2", action="store_true", help="scan the bundled local model (direct and gateway)"
    )
    parser.add_argument("--max-tokens", type=int, default=48, help="--smollm2: max_tokens per reply")
    parser.add_argument("--max-cases", type=int, default=None, help="--smollm2: a seeded sample of the suite")
    parser.add_argument("--out", type=Path, default=None, help="--smollm2: write JSON and HTML reports here")
    parser.add_argument(
        "--probes", nargs="+", default=None, help="--smollm2: only these probes (ids, prefixes, families)"
    )
    parser.add_argument(
        "--strategies", nargs="+", default=None, help="--smollm2: only these strategies' cases (e.g. tree)"
    )
    parser.add_argument("--per-strategy", type=int, default=4, help="--smollm2: base cases per strategy")
    parser.add_argument("--goals", nargs="+", default=None, help="--smollm2: only these catalogue goals")
    args = parser.parse_args()
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}")
    if args.smollm2:
        smollm2(
            args.max_tokens,
            args.max_cases,
            args.out,
            args.probes,
            args.strategies,
            args.per_strategy,
            args.goals,
        )
        return
    bots()
    for fixture in REFUSAL_FIXTURES:
        print("refusal detector, " + refusal_figures(fixture))


if __name__ == "__main__":
    main()
