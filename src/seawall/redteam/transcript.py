"""How a multi-turn, iterative or agent case went, for the CLI and the HTML report: the turn (or
attempt) at which it broke, the verdict on each turn, the authored history and the tool calls."""

from __future__ import annotations

import html

from seawall.redteam.cases import CaseResult


def tree_line(result: CaseResult) -> str:
    """How a tree case's search went: "broke at depth 2 (node 3.1: ladder: hypothetical, ladder:
    roleplay), 7 queries, 1 pruned", or "no break: 20 queries to depth 3 (budget), 2 pruned"."""
    meta = result.meta
    queries, pruned = meta.get("queries", len(result.sent)), meta.get("pruned", 0)
    tail = f"{queries} {'query' if queries == 1 else 'queries'}" + (f", {pruned} pruned" if pruned else "")
    broke = meta.get("broke_at")
    if broke is not None:
        path = " → ".join(meta.get("path", [])[1:]) or "the request as written"
        return f"broke at depth {broke['depth']} (node {broke['node']}: {path}), {tail}"
    return f"no break: {tail} to depth {meta.get('depth_reached', 0)} (stopped: {meta.get('stopped', '?')})"


def conversation_lines(findings: list[CaseResult]) -> list[str]:
    """One line per multi-turn, iterative, tree or agent finding: where the conversation broke, and
    the tool calls that were the attack's success."""
    lines = []
    for result in findings:
        case = result.case
        if case.tree is not None and "tree" in result.meta:
            lines.append(f"{result.id}: {tree_line(result)}")
        elif result.broke_at_turn is not None and (case.iterate or len(case.turns) > 1):
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
    if case.tree is not None and "tree" in result.meta:
        parts.append(f"<p class='broke'>{html.escape(tree_line(result))}</p>{_tree_html(result)}")
    elif result.broke_at_turn is not None and (case.iterate or len(case.turns) > 1):
        unit = "attempt" if case.iterate else "turn"
        total = case.iterate if case.iterate else len(case.turns)
        parts.append(f"<p class='broke'>broke at {unit} {result.broke_at_turn} of {total}</p>")
    if result.turn_verdicts and case.tree is None:
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


def _tree_html(result: CaseResult) -> str:
    """Every node of a tree case: where it hangs, what wrote it, and its verdict and score (a node
    that was not sent says why: pruned off-topic, a duplicate, or over the query budget)."""
    rows = []
    for node in result.meta.get("tree", []):
        if node.get("status") == "sent":
            outcome = (
                f"{node.get('verdict')}, score {node.get('score')}, attempt {int(node.get('sent', 0)) + 1}"
            )
        else:
            outcome = f"not sent: {node.get('status')}"
        topic = f" · on topic {node.get('on_topic')}" + (f" ({node['topic']})" if node.get("topic") else "")
        indent = "&nbsp;" * 4 * int(node.get("depth", 0))
        rows.append(
            f"<li>{indent}<code>{html.escape(str(node.get('node')))}</code> "
            f"{html.escape(str(node.get('by')))}: {html.escape(outcome)}{html.escape(topic)}</li>"
        )
    return (
        f"<details><summary>tree ({len(rows)} nodes)</summary><ul class='tree'>{''.join(rows)}</ul></details>"
    )
