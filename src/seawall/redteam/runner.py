"""Run a suite against a target: bounded concurrency, multi-turn conversations, verdicts.

Readable top to bottom: :func:`ascan` fans the cases out under a semaphore; :func:`run_case`
holds one conversation (each user turn gets the target's real reply), stops at the first
error or block, and hands the replies to the case's detector; an inconclusive verdict goes to
the judge when one is configured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from seawall.redteam.cases import AttackCase, CaseResult, Suite, Verdict
from seawall.redteam.conversation import AttackerError, LadderRewriter, Rewriter
from seawall.redteam.detectors import (
    DetectorContext,
    DetectorFn,
    Finding,
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


def _tool_exchange(output: str, name: str = "lookup") -> list[dict[str, Any]]:
    """An assistant tool call and its (untrusted) result, as OpenAI's wire format has them.

    The call's ``content`` is an empty string, not ``null``: OpenAI accepts both, but
    llama-cpp-python's server rejects ``null`` (HTTP 500) and its chat templates need the key.
    """
    call = {"id": TOOL_CALL_ID, "type": "function", "function": {"name": name, "arguments": "{}"}}
    return [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": output},
    ]


#: Tool calls a target may make in answer to one user turn before the turn ends (each gets the
#: case's scripted result and the target is asked again).
MAX_TOOL_ROUNDS = 3
DEFAULT_TOOL_RESULT = '{"ok": true}'


@dataclass
class Exchange:
    """One conversation with the target: its replies (one per user turn), tool calls, and how it
    ended (``stop``: None, or ``blocked``/``error`` with the 1-based turn and the reason)."""

    replies: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    stop: str | None = None
    stop_turn: int = 0
    reason: str = ""
    #: The verdict on each turn's reply (``judge_each_turn`` cases), and the turn that broke.
    turn_findings: list[Finding] = field(default_factory=list)
    broke_at: int | None = None


def _tool_results(
    case: AttackCase, calls: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The assistant message that made ``calls`` and each call's scripted result."""
    wire = [
        {
            "id": c["id"] or f"call_{i}",
            "type": "function",
            "function": {"name": c["name"], "arguments": c["arguments"]},
        }
        for i, c in enumerate(calls)
    ]
    results = [
        {
            "role": "tool",
            "tool_call_id": w["id"],
            "content": case.tool_results.get(c["name"], case.tool_results.get("*", DEFAULT_TOOL_RESULT)),
        }
        for c, w in zip(calls, wire, strict=True)
    ]
    return wire, results


async def converse(
    case: AttackCase,
    turns: list[str],
    target: Target,
    judge_turn: Callable[[list[str], list[dict[str, Any]]], Awaitable[Finding]] | None = None,
) -> Exchange:
    """Hold ``case``'s conversation with ``turns`` as the user turns: each gets the target's real
    reply; a reply that calls tools gets the case's scripted results and the target is asked again
    (up to :data:`MAX_TOOL_ROUNDS` times a turn). With ``judge_turn``, the reply to every turn but
    the last is judged, and the conversation stops at the first vulnerable one."""
    messages = _messages(case, target) + [dict(m) for m in case.history]
    out = Exchange()
    for index, turn in enumerate(turns):
        number = index + 1
        messages.append({"role": "user", "content": turn})
        if index == len(turns) - 1 and case.tool_output:
            messages += _tool_exchange(case.tool_output, case.tool_output_name)
        for tool_round in range(MAX_TOOL_ROUNDS + 1):
            reply = await target.send(
                Conversation(
                    messages=list(messages),
                    documents=list(case.documents),
                    case_id=case.id,
                    tools=list(case.tools),
                )
            )
            out.tool_calls += [{"turn": number, **call} for call in reply.tool_calls]
            if reply.blocked:
                if reply.text:
                    out.replies.append(reply.text)
                out.stop, out.stop_turn, out.reason = "blocked", number, reply.error or "blocked"
                return out
            if reply.error is not None:
                out.stop, out.stop_turn, out.reason = "error", number, reply.error
                return out
            if reply.finish_reason:
                out.meta["finish_reason"] = reply.finish_reason
            if reply.usage:
                out.meta["usage"] = reply.usage
            if not reply.tool_calls or not case.tools or tool_round == MAX_TOOL_ROUNDS:
                break
            wire, results = _tool_results(case, reply.tool_calls)
            messages.append({"role": "assistant", "content": reply.text, "tool_calls": wire})
            messages += results
        out.replies.append(reply.text)
        messages.append({"role": "assistant", "content": reply.text})
        if judge_turn is not None and index < len(turns) - 1:
            finding = await judge_turn(list(out.replies), list(out.tool_calls))
            out.turn_findings.append(finding)
            if finding.verdict is Verdict.VULNERABLE:
                out.broke_at = number
                return out
    return out


async def _judge(
    case: AttackCase,
    replies: list[str],
    calls: list[dict[str, Any]],
    detector: DetectorFn,
    context: DetectorContext,
) -> Finding:
    return await detector(case, replies, replace(context, tool_calls=calls))


async def run_case(
    case: AttackCase,
    target: Target,
    detectors: Mapping[str, DetectorFn],
    context: DetectorContext,
    judge: Judge | None = None,
    rewriter: Rewriter | None = None,
) -> CaseResult:
    """One case: the conversation (or, for an iterative or tree case, its attempts), then the verdict."""
    began = time.perf_counter()
    exchange = Exchange()
    sent: list[str] = []
    turn_verdicts: list[str] = []

    def done(**fields: Any) -> CaseResult:
        return CaseResult(
            case=case,
            replies=exchange.replies,
            tool_calls=exchange.tool_calls,
            sent=sent,
            turn_verdicts=turn_verdicts,
            latency_ms=round((time.perf_counter() - began) * 1000, 2),
            meta=exchange.meta,
            **fields,
        )

    detector = detectors.get(case.check.detector)
    if detector is None:
        return done(
            verdict=Verdict.ERROR,
            error=f"unknown detector {case.check.detector!r}",
            reason="no such detector",
        )

    async def judge_turn(replies: list[str], calls: list[dict[str, Any]]) -> Finding:
        return await _judge(case, replies, calls, detector, context)

    try:
        if case.tree is not None:
            from seawall.redteam.tree import search

            return await search(case, target, detector, context, judge, rewriter, began)
        if case.iterate > 0:
            return await _iterate(case, target, detector, context, judge, rewriter, began)
        exchange = await converse(case, case.turns, target, judge_turn if case.judge_each_turn else None)
        turn_verdicts += [f.verdict.value for f in exchange.turn_findings]
        if exchange.stop == "blocked":
            turn_verdicts.append("blocked")
            return done(
                verdict=Verdict.INCONCLUSIVE,
                blocked=True,
                reason=f"blocked by the target at turn {exchange.stop_turn}: {exchange.reason}",
            )
        if exchange.stop == "error":
            return done(
                verdict=Verdict.ERROR,
                error=exchange.reason,
                reason=f"target error at turn {exchange.stop_turn}",
            )
        if exchange.broke_at is not None:
            finding = exchange.turn_findings[-1]
            return _decided(done, finding, exchange.replies, exchange.broke_at, "rules")
        finding = await judge_turn(exchange.replies, exchange.tool_calls)
    except AttackerError as exc:
        return done(verdict=Verdict.ERROR, error=exc.message, reason="the iterative attacker failed")
    except Exception as exc:  # a broken detector must not look like a safe target
        return done(
            verdict=Verdict.ERROR,
            error=f"detector failed: {type(exc).__name__}: {exc}",
            reason="detector error",
        )
    if case.judge_each_turn:
        turn_verdicts.append(finding.verdict.value)
    verdict, reason, judged_by = await _with_judge(case, finding, exchange.replies, judge)
    finding = Finding(verdict, reason, finding.evidence, finding.refused, finding.scores, finding.refusal)
    return _decided(done, finding, exchange.replies, len(exchange.replies), judged_by)


def _decided(
    done: Callable[..., CaseResult], finding: Finding, replies: list[str], turn: int, judged_by: str
) -> CaseResult:
    result = done(
        verdict=finding.verdict,
        reason=finding.reason,
        evidence=finding.evidence,
        refused=finding.refused,
        refusal=finding.refusal,
        scores=finding.scores,
        judged_by=judged_by,
        broke_at_turn=turn if finding.verdict is Verdict.VULNERABLE else None,
    )
    if pii := pii_findings(replies[-1] if replies else ""):
        result.meta["pii_in_reply"] = pii[:10]
    return result


async def _with_judge(
    case: AttackCase, finding: Finding, replies: list[str], judge: Judge | None
) -> tuple[Verdict, str, str]:
    """An inconclusive verdict put to the LLM judge, when one is configured."""
    verdict, reason, judged_by = finding.verdict, finding.reason, "rules"
    if verdict is Verdict.INCONCLUSIVE and judge is not None and replies:
        decided = await judge.decide(case, replies[-1], finding.reason)
        if decided is not None:
            verdict, why = decided
            reason, judged_by = f"{finding.reason}; judge: {why}", "judge"
    return verdict, reason, judged_by


async def _iterate(
    case: AttackCase,
    target: Target,
    detector: DetectorFn,
    context: DetectorContext,
    judge: Judge | None,
    rewriter: Rewriter | None,
    began: float,
) -> CaseResult:
    """PAIR-style: each attempt is a fresh conversation (the case's earlier turns, then the attempt);
    an attempt that does not succeed is rewritten from the target's answer, up to ``case.iterate``
    attempts. The result's ``replies`` and ``sent`` hold each attempt's last reply and its text;
    ``broke_at_turn`` is the attempt that succeeded."""
    rewriter = rewriter or LadderRewriter()
    attempt = case.turns[-1]
    sent: list[str] = []
    replies: list[str] = []
    calls: list[dict[str, Any]] = []
    verdicts: list[str] = []
    meta: dict[str, Any] = {"attempts": 0, "rewritten_by": ["the case"]}
    finding: Finding | None = None
    blocked_reason = ""

    def result(**fields: Any) -> CaseResult:
        return CaseResult(
            case=case,
            replies=replies,
            sent=sent,
            tool_calls=calls,
            turn_verdicts=verdicts,
            latency_ms=round((time.perf_counter() - began) * 1000, 2),
            meta=meta,
            **fields,
        )

    for number in range(1, case.iterate + 1):
        exchange = await converse(case, [*case.turns[:-1], attempt], target)
        sent.append(attempt)
        calls += [{**call, "turn": number} for call in exchange.tool_calls]
        reply = exchange.replies[-1] if exchange.replies else ""
        replies.append(reply)
        meta.update(exchange.meta)
        meta["attempts"] = number
        if exchange.stop == "error":
            return result(
                verdict=Verdict.ERROR, error=exchange.reason, reason=f"target error at attempt {number}"
            )
        if exchange.stop == "blocked":
            verdicts.append("blocked")
            blocked_reason = exchange.reason
            finding = None
        else:
            finding = await _judge(case, exchange.replies, exchange.tool_calls, detector, context)
            verdicts.append(finding.verdict.value)
            if finding.verdict is Verdict.VULNERABLE:
                return _decided(result, finding, replies, number, "rules")
        if number < case.iterate:
            attempt, writer = await rewriter.rewrite(case, attempt, reply, number)
            meta["rewritten_by"].append(writer)
    if finding is None:
        return result(
            verdict=Verdict.INCONCLUSIVE,
            blocked=True,
            reason=f"blocked by the target at attempt {case.iterate} of {case.iterate}: {blocked_reason}",
        )
    verdict, reason, judged_by = await _with_judge(case, finding, replies, judge)
    final = Finding(
        verdict,
        f"after {case.iterate} attempts: {reason}",
        finding.evidence,
        finding.refused,
        finding.scores,
        finding.refusal,
    )
    return _decided(result, final, replies, case.iterate, judged_by)


async def ascan(
    target: Target,
    suite: Suite,
    *,
    concurrency: int = 8,
    context: DetectorContext | None = None,
    judge: Judge | None = None,
    progress: Progress | None = None,
    settings: dict[str, Any] | None = None,
    rewriter: Rewriter | None = None,
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
                result = await run_case(case, target, detectors, context, judge, rewriter)
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
