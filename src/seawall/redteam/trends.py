"""Trends over saved runs (``seawall redteam compare RUN1 RUN2 ...``): ASR per family with Wilson
95% intervals, run after run, as a table and an inline SVG chart (self-contained HTML, no script).

A run is the ``report.json`` that ``seawall redteam run`` writes (or the folder holding it). Runs
are put in the order they were started. They must be runs of the same catalogue: the same
(probe, strategy) pairs; otherwise a family's rate would move because its cases changed, not the
target. ``shared_only`` compares the pairs every run has instead of refusing.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from seawall.errors import ConfigurationError
from seawall.redteam.cases import CaseResult
from seawall.redteam.report import Report, percent
from seawall.redteam.stats import GroupStats, group_stats

REPORT_FORMAT = "seawall.redteam.report/1"
PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
]


@dataclass
class Run:
    path: Path
    report: Report


def _signature(report: Report) -> set[tuple[str, str]]:
    return {(r.case.probe, r.case.strategy_name) for r in report.results}


def load_run(path: Path) -> Run:
    """A saved run; ConfigurationError says plainly what is wrong with a bad one."""
    file = path / "report.json" if path.is_dir() else path
    if not file.exists():
        where = f"{path} holds no report.json" if path.is_dir() else f"{path}: no such file"
        raise ConfigurationError(where)
    try:
        raw = json.loads(file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {file}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{file} is not JSON ({exc.msg} at line {exc.lineno}), so not a run"
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") != REPORT_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ConfigurationError(
            f"{file} is not a red-team run (expected the report.json of 'seawall redteam run', "
            f"format {REPORT_FORMAT!r}; found {found!r})"
        )
    try:
        report = Report.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(
            f"{file} is a red-team report but not a valid one: {'.'.join(map(str, first['loc']))}: "
            f"{first['msg']} ({exc.error_count()} problems)"
        ) from exc
    return Run(path=file, report=report)


def load_runs(paths: list[Path], *, shared_only: bool = False) -> list[Run]:
    """The runs in the order they were started, checked to be of one catalogue.

    With ``shared_only``, each run keeps only the (probe, strategy) pairs all runs have."""
    if len(paths) < 2:
        raise ConfigurationError("compare needs at least two runs (report.json files or their folders)")
    runs = sorted((load_run(p) for p in paths), key=lambda r: r.report.started_at)
    signatures = [_signature(run.report) for run in runs]
    shared = set.intersection(*signatures)
    if any(sig != shared for sig in signatures):
        if not shared_only:
            first, first_sig = runs[0], signatures[0]
            other, other_sig = next((r, s) for r, s in zip(runs, signatures, strict=True) if s != first_sig)
            extra = sorted({"+".join(p) for p in other_sig - first_sig})
            missing = sorted({"+".join(p) for p in first_sig - other_sig})

            def show(items: list[str]) -> str:
                return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")

            raise ConfigurationError(
                f"runs of different catalogues: {other.path} "
                + (f"has probe+strategy pairs {first.path} lacks ({show(extra)})" if extra else "")
                + ("; " if extra and missing else "")
                + (f"lacks pairs {first.path} has ({show(missing)})" if missing else "")
                + ". Compare runs of one catalogue, or pass --shared-only to compare the pairs all runs have."
            )
        if not shared:
            raise ConfigurationError("the runs share no probe+strategy pair: nothing to compare")
        for run in runs:
            kept = [r for r in run.report.results if (r.case.probe, r.case.strategy_name) in shared]
            run.report = run.report.model_copy(update={"results": kept})
    return runs


class TrendRun(BaseModel):
    label: str
    path: str
    started_at: str
    seed: int
    suite_fingerprint: str
    cases: int
    target: str


class Trend(BaseModel):
    """Per run, per family: the family's stats (cases, verdicts, ASR with its interval)."""

    runs: list[TrendRun]
    overall: list[GroupStats]
    families: dict[str, list[GroupStats]]


def trend(runs: list[Run]) -> Trend:
    families = sorted({r.case.family for run in runs for r in run.report.results})
    per_run: list[dict[str, list[CaseResult]]] = []
    for run in runs:
        groups: dict[str, list[CaseResult]] = {}
        for result in run.report.results:
            groups.setdefault(result.case.family, []).append(result)
        per_run.append(groups)
    infos = []
    for index, run in enumerate(runs, start=1):
        r = run.report
        target = r.target.get("model") or r.target.get("base_url") or r.target.get("type") or "?"
        infos.append(
            TrendRun(
                label=f"#{index} {r.started_at[:16].replace('T', ' ')}",
                path=str(run.path),
                started_at=r.started_at,
                seed=r.seed,
                suite_fingerprint=r.suite_fingerprint,
                cases=len(r.results),
                target=str(target),
            )
        )
    return Trend(
        runs=infos,
        overall=[group_stats(run.report.results) for run in runs],
        families={f: [group_stats(groups.get(f, [])) for groups in per_run] for f in families},
    )


def cell(stats: GroupStats) -> str:
    """``12.5% [4.1%–30.2%] (3/24)``, or a dash when nothing was judged."""
    if not stats.judged:
        return f"– (0 judged of {stats.cases})" if stats.cases else "–"
    interval = f"[{percent(stats.ci_low)}–{percent(stats.ci_high)}]"
    return f"{percent(stats.asr)} {interval} ({stats.vulnerable}/{stats.judged})"


def _chart(data: Trend) -> str:
    """ASR per family (and overall, dashed) across runs, with each point's Wilson interval."""
    series = [("overall", data.overall), *data.families.items()]
    n = len(data.runs)
    left, top, width, height, legend_w = 50, 15, max(360, 110 * n), 260, 230
    step = width / max(n - 1, 1)

    def x(i: int) -> float:
        return left + (i * step if n > 1 else width / 2)

    def y(v: float) -> float:
        return top + (1 - v) * height

    parts = [
        f'<svg role="img" aria-label="attack success rate per family across runs" '
        f'width="{left + width + legend_w}" height="{top + height + 45}" '
        'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + width}" y2="{y(tick):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="#666">'
            f"{int(tick * 100)}%</text>"
        )
    for i, run in enumerate(data.runs):
        parts.append(
            f'<text x="{x(i):.1f}" y="{top + height + 16}" text-anchor="middle" fill="#444">'
            f"{html.escape(run.label.split(' ')[0])}</text>"
            f'<text x="{x(i):.1f}" y="{top + height + 30}" text-anchor="middle" fill="#888">'
            f"{html.escape(run.started_at[:10])}</text>"
        )
    for k, (name, stats) in enumerate(series):
        colour = "#222" if name == "overall" else PALETTE[(k - 1) % len(PALETTE)]
        # past the palette, lines repeat a colour with a dotted stroke
        dash = (
            ' stroke-dasharray="5,3"'
            if name == "overall"
            else ' stroke-dasharray="2,2"'
            if k > len(PALETTE)
            else ""
        )
        points = [(i, s) for i, s in enumerate(stats) if s.judged and s.asr is not None]
        if len(points) > 1:
            path = " ".join(f"{x(i):.1f},{y(s.asr or 0):.1f}" for i, s in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for i, s in points:
            lo, hi = s.ci_low or 0.0, s.ci_high or 0.0
            parts.append(
                f'<line x1="{x(i) + (k - len(series) / 2) * 1.5:.1f}" y1="{y(hi):.1f}" '
                f'x2="{x(i) + (k - len(series) / 2) * 1.5:.1f}" y2="{y(lo):.1f}" stroke="{colour}" '
                f'stroke-opacity="0.45" stroke-width="1.5"/>'
                f'<circle cx="{x(i):.1f}" cy="{y(s.asr or 0):.1f}" r="3.5" fill="{colour}">'
                f"<title>{html.escape(name)}, run {i + 1}: {html.escape(cell(s))}</title></circle>"
            )
        ly = top + 14 * k
        parts.append(
            f'<line x1="{left + width + 20}" y1="{ly + 4}" x2="{left + width + 40}" y2="{ly + 4}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{left + width + 46}" y="{ly + 8}">{html.escape(name[:28])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_trend_html(data: Trend) -> str:
    heads = "".join(f"<th>{html.escape(run.label)}</th>" for run in data.runs)
    rows = [("overall", data.overall), *data.families.items()]
    body = "".join(
        f"<tr><td>{'<b>overall</b>' if name == 'overall' else html.escape(name)}</td>"
        + "".join(f"<td>{html.escape(cell(s))}</td>" for s in stats)
        + "</tr>"
        for name, stats in rows
    )
    runs = "".join(
        f"<li><b>{html.escape(r.label)}</b>: <code>{html.escape(r.path)}</code> · target "
        f"{html.escape(r.target)} · seed {r.seed} · suite {html.escape(r.suite_fingerprint)} · "
        f"{r.cases} cases</li>"
        for r in data.runs
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seawall red-team trend</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
</style></head><body>
<h1>seawall red-team trend</h1>
<p>Attack success rate (vulnerable / (vulnerable + safe)) per family, run after run, with Wilson 95%
intervals in brackets and the counts behind each rate. Errors, blocked and inconclusive cases never
enter a rate. Overlapping intervals mean the runs cannot be told apart at this sample size.</p>
{_chart(data)}
<table><tr><th>family</th>{heads}</tr>{body}</table>
<h2>Runs</h2><ul>{runs}</ul>
</body></html>
"""


def write_trend_html(data: Trend, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_trend_html(data), encoding="utf-8")
