"""How a multi-turn, iterative or agent case went, for the CLI and the HTML report: the turn (or
attempt) at which it broke, the verdict on each turn, the authored history and the tool calls."""

from __future__ import annotations

import html

from seawall.redteam.cases import CaseResult


def conversation_lines(findings: list[CaseResult]) -> list[str]:
    """One line per multi-turn, iterative or agent finding: where the conversation broke, and the
    tool calls that were the attack's success."""
    lines = []
    for result in findings:
        case = result.case
        if result.broke_at_turn is not None and (case.iterate or len(case.turns) > 1):
            unit = "attempt" if case.iterate else "turn"
            total = case.iterate if case.iterate else len(case.turns)
            lines.append(f"{result.id}: broke at {unit} {result.broke_at_turn} of {total}")
        if case.tools and result.tool_calls:
            calls = ", ".join(f"{c['name']}({str(c['arguments'])[:60]})" for c in result.tool_calls[:4])
            lines.append(f"{result.id}: tool calls {calls}")
    return lines


def conversation_html(result: CaseResult) -> str:
    """The case's authored history, its tool calls and where it broke, for the HTML report."""
    case = result.case
    parts = []
    if result.broke_at_turn is not None and (case.iterate or len(case.turns) > 1):
        unit = "attempt" if case.iterate else "turn"
        total = case.iterate if case.iterate else len(case.turns)
        parts.append(f"<p class='broke'>broke at {unit} {result.broke_at_turn} of {total}</p>")
    if result.turn_verdicts:
        parts.append(
            f"<p class='tags'>per {'attempt' if case.iterate else 'turn'}: "
            f"{html.escape(', '.join(result.turn_verdicts))}</p>"
        )
    if case.history:
        shown = "".join(
            f"<div class='turn'><b>{html.escape(str(m.get('role')))} (authored)</b>"
            f"<pre>{html.escape(str(m.get('content') or ''))}</pre></div>"
            for m in case.history
        )
        parts.append(f"<details><summary>authored history ({len(case.history)})</summary>{shown}</details>")
    if result.tool_calls:
        calls = "".join(
            f"<li>turn {c.get('turn')}: <code>{html.escape(str(c.get('name')))}"
            f"({html.escape(str(c.get('arguments'))[:400])})</code></li>"
            for c in result.tool_calls
        )
        parts.append(f"<p>Tool calls:</p><ul>{calls}</ul>")
    return "".join(parts)
