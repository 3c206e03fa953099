"""Run a suite against a target: bounded concurrency, multi-turn conversations, verdicts.

Readable top to bottom: :func:`ascan` fans the cases out under a semaphore; :func:`run_case`
holds one conversation (each user turn gets the target's real reply), stops at the first
error or block, and hands the replies to the case's detector; an inconclusive verdict goes to
the judge when one is configured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from seawall.redteam.cases import AttackCase, CaseResult, Suite, Verdict
from seawall.redteam.detectors import (
    DetectorContext,
    DetectorFn,
    available_detectors,
    pii_findings,
)
from seawall.redteam.judge import Judge
from seawall.redteam.report import Report
from seawall.redteam.targets import Conversation, Target

Progress = Callable[[CaseResult, int, int], None]

TOOL_CALL_ID = "call_redteam_1"


def _messages(case: AttackCase, target: Target) -> list[dict[str, Any]]:
    if case.system and target.takes_system_prompt:
        return [{"role": "system", "content": case.system}]
    return []


def _tool_exchange(output: str) -> list[dict[str, Any]]:
    """An assistant tool call and its (untrusted) result, as OpenAI's wire format has them.

    The call's ``content`` is an empty string, not ``null``: OpenAI accepts both, but
    llama-cpp-python's server rejects ``null`` (HTTP 500) and its chat templates need the key.
    """
    call = {"id": TOOL_CALL_ID, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    return [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": output},
    ]


async def run_case(
    case: AttackCase,
    target: Target,
    detectors: Mapping[str, DetectorFn],
    context: DetectorContext,
    judge: Judge | None = None,
) -> CaseResult:
    """One case: the conversation, then the verdict."""
    began = time.perf_counter()
    messages = _messages(case, target)
    replies: list[str] = []
    meta: dict[str, Any] = {}

    def done(**fields: Any) -> CaseResult:
        return CaseResult(
            case=case,
            replies=replies,
            latency_ms=round((time.perf_counter() - began) * 1000, 2),
            meta=meta,
            **fields,
        )

    for index, turn in enumerate(case.turns):
        messages.append({"role": "user", "content": turn})
        if index == len(case.turns) - 1 and case.tool_output:
            messages += _tool_exchange(case.tool_output)
        reply = await target.send(
            Conversation(messages=list(messages), documents=list(case.documents), case_id=case.id)
        )
        if reply.blocked:
            if reply.text:
                replies.append(reply.text)
            return done(
                verdict=Verdict.INCONCLUSIVE,
                blocked=True,
                reason=f"blocked by the target at turn {index + 1}: {reply.error or 'blocked'}",
            )
        if reply.error is not None:
            return done(verdict=Verdict.ERROR, error=reply.error, reason=f"target error at turn {index + 1}")
        replies.append(reply.text)
        if reply.finish_reason:
            meta["finish_reason"] = reply.finish_reason
        if reply.usage:
            meta["usage"] = reply.usage
        messages.append({"role": "assistant", "content": reply.text})

    detector = detectors.get(case.check.detector)
    if detector is None:
        return done(
            verdict=Verdict.ERROR,
            error=f"unknown detector {case.check.detector!r}",
            reason="no such detector",
        )
    try:
        finding = await detector(case, replies, context)
    except Exception as exc:  # a broken detector must not look like a safe target
        return done(
            verdict=Verdict.ERROR,
            error=f"detector failed: {type(exc).__name__}: {exc}",
            reason="detector error",
        )
    if pii := pii_findings(replies[-1] if replies else ""):
        meta["pii_in_reply"] = pii[:10]
    verdict, reason, judged_by = finding.verdict, finding.reason, "rules"
    if verdict is Verdict.INCONCLUSIVE and judge is not None and replies:
        decided = await judge.decide(case, replies[-1], finding.reason)
        if decided is not None:
            verdict, why = decided
            reason, judged_by = f"{finding.reason}; judge: {why}", "judge"
    return done(
        verdict=verdict,
        reason=reason,
        evidence=finding.evidence,
        refused=finding.refused,
        refusal=finding.refusal,
        scores=finding.scores,
        judged_by=judged_by,
    )


async def ascan(
    target: Target,
    suite: Suite,
    *,
    concurrency: int = 8,
    context: DetectorContext | None = None,
    judge: Judge | None = None,
    progress: Progress | None = None,
    settings: dict[str, Any] | None = None,
) -> Report:
    """Run every case of ``suite`` against ``target``; the report holds them in suite order."""
    context = context if context is not None else DetectorContext()
    detectors = available_detectors()
    semaphore = asyncio.Semaphore(concurrency)
    started = datetime.now(UTC)
    began = time.perf_counter()
    finished_count = 0

    async def one(case: AttackCase) -> CaseResult:
        nonlocal finished_count
        async with semaphore:
            try:
                result = await run_case(case, target, detectors, context, judge)
            except Exception as exc:  # never lose a case: an unexpected failure is an error verdict
                result = CaseResult(
                    case=case,
                    verdict=Verdict.ERROR,
                    error=f"{type(exc).__name__}: {exc}",
                    reason="the scan failed on this case",
                )
        finished_count += 1
        if progress is not None:
            progress(result, finished_count, len(suite.cases))
        return result

    results = await asyncio.gather(*(one(case) for case in suite.cases))
    return Report.build(
        list(results),
        suite=suite,
        target=target.describe(),
        started=started,
        duration_s=time.perf_counter() - began,
        settings=settings or {},
    )
