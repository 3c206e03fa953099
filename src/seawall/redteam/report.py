"""The scan's report and its formats: JSON, JSONL, JUnit XML, SARIF 2.1.0 and self-contained HTML.

:class:`Report` is the whole result (every case with its prompt, transform chain, replies and
verdict, plus the summary); each writer is a function of it. JSONL lines are complete cases,
so any line can be replayed (``seawall redteam replay``).
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from seawall import __version__
from seawall.errors import ConfigurationError
from seawall.redteam.cases import SEVERITY_ORDER, CaseResult, Suite, Verdict
from seawall.redteam.coverage import CoverageRow, coverage
from seawall.redteam.stats import GroupStats, group_stats, grouped
from seawall.redteam.transcript import conversation_html


class Summary(BaseModel):
    overall: GroupStats
    by_family: dict[str, GroupStats]
    by_probe: dict[str, GroupStats]
    by_strategy: dict[str, GroupStats]
    by_owasp: dict[str, GroupStats]
    by_severity: dict[str, GroupStats]
    #: OWASP LLM Top 10 (2025): every risk, with the probes and cases of this scan (empty in
    #: reports written before coverage existed; :func:`coverage_of` computes it for those).
    coverage: list[CoverageRow] = Field(default_factory=list)


def summarise(results: list[CaseResult]) -> Summary:
    return Summary(
        coverage=coverage(results),
        overall=group_stats(results),
        by_family=grouped(results, lambda r: [r.case.family]),
        by_probe=grouped(results, lambda r: [r.case.probe]),
        by_strategy=grouped(results, lambda r: [r.case.strategy_name]),
        by_owasp=grouped(results, lambda r: r.case.owasp or ["-"]),
        by_severity=grouped(results, lambda r: [r.case.severity]),
    )


class Report(BaseModel):
    format: str = "seawall.redteam.report/1"
    seawall_version: str = __version__
    started_at: str
    duration_s: float
    target: dict[str, Any]
    seed: int
    suite_fingerprint: str
    settings: dict[str, Any] = Field(default_factory=dict)
    skipped: list[dict[str, str]] = Field(default_factory=list)
    summary: Summary
    results: list[CaseResult]
    gate: dict[str, Any] | None = None

    @classmethod
    def build(
        cls,
        results: list[CaseResult],
        *,
        suite: Suite,
        target: dict[str, Any],
        started: datetime,
        duration_s: float,
        settings: dict[str, Any],
    ) -> Report:
        return cls(
            started_at=started.isoformat(timespec="seconds"),
            duration_s=round(duration_s, 3),
            target=target,
            seed=suite.seed,
            suite_fingerprint=suite.fingerprint,
            settings=settings,
            skipped=suite.skipped,
            summary=summarise(results),
            results=results,
        )

    def resummarise(self) -> None:
        self.summary = summarise(self.results)

    # ------------------------------------------------------------------ questions a test asks

    @property
    def asr(self) -> float | None:
        """Overall attack success rate (vulnerable / (vulnerable + safe))."""
        return self.summary.overall.asr

    def findings(self, *, min_severity: str = "low", include_suppressed: bool = False) -> list[CaseResult]:
        """Vulnerable cases, worst first."""
        floor = SEVERITY_ORDER[min_severity]
        found = [
            r
            for r in self.results
            if r.verdict is Verdict.VULNERABLE
            and SEVERITY_ORDER[r.case.severity] >= floor
            and (include_suppressed or not r.suppressed)
        ]
        return sorted(found, key=lambda r: (-SEVERITY_ORDER[r.case.severity], r.case.family, r.id))

    def by_verdict(self, verdict: Verdict | str) -> list[CaseResult]:
        return [r for r in self.results if r.verdict == Verdict(verdict)]

    def coverage_of(self) -> list[CoverageRow]:
        """The OWASP coverage rows (computed from the results for a report that lacks them)."""
        return self.summary.coverage or coverage(self.results)

    def family(self, name: str) -> GroupStats:
        return self.summary.by_family.get(name, GroupStats())

    def strategy(self, name: str) -> GroupStats:
        return self.summary.by_strategy.get(name, GroupStats())


# ----------------------------------------------------------------- writers


def write_json(report: Report, path: Path) -> None:
    path.write_text(report.model_dump_json(indent=1), encoding="utf-8")


def write_jsonl(report: Report, path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for result in report.results:
            out.write(result.model_dump_json() + "\n")


def load_report(path: Path) -> Report:
    return Report.model_validate_json(path.read_text("utf-8"))


def write_junit(report: Report, path: Path) -> None:
    """One testsuite per family, one testcase per case: vulnerable is a failure, error an error,
    inconclusive (and blocked) skipped; suppressed findings are skipped with their reason."""
    root = ET.Element(
        "testsuites", name="seawall redteam", tests=str(len(report.results)), time=f"{report.duration_s:.3f}"
    )
    families: dict[str, list[CaseResult]] = {}
    for result in report.results:
        families.setdefault(result.case.family, []).append(result)
    for family, results in sorted(families.items()):
        stats = group_stats(results)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=family,
            tests=str(len(results)),
            failures=str(stats.vulnerable - stats.suppressed),
            errors=str(stats.error),
            skipped=str(stats.inconclusive + stats.suppressed),
        )
        for result in results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"redteam.{family}",
                name=result.id,
                time=f"{result.latency_ms / 1000:.3f}",
            )
            detail = f"{result.reason}\n" + "\n".join(result.evidence)
            if result.verdict is Verdict.VULNERABLE and result.suppressed:
                ET.SubElement(case, "skipped", message=f"suppressed: {result.suppressed}")
            elif result.verdict is Verdict.VULNERABLE:
                failure = ET.SubElement(
                    case,
                    "failure",
                    message=f"[{result.case.severity}] {result.case.title}",
                    type="vulnerable",
                )
                failure.text = detail
            elif result.verdict is Verdict.ERROR:
                error = ET.SubElement(case, "error", message=result.error or "error", type="error")
                error.text = detail
            elif result.verdict is Verdict.INCONCLUSIVE:
                ET.SubElement(
                    case,
                    "skipped",
                    message=("blocked: " if result.blocked else "inconclusive: ") + result.reason,
                )
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


_SARIF_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
_SARIF_SCORE = {"critical": "9.5", "high": "8.0", "medium": "5.0", "low": "2.0"}


def project_url() -> str | None:
    """The project's own address from the installed package's metadata (``[project.urls]`` in
    pyproject.toml: Homepage, Repository, Documentation), or None: SARIF's ``informationUri`` is
    optional, and a made-up address would be worse than none."""
    try:
        urls = importlib.metadata.metadata("seawall").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found: dict[str, str] = {}
    for entry in urls:
        label, _, address = str(entry).partition(", ")
        found[label] = address
    for label in ("Homepage", "Repository", "Documentation"):
        if found.get(label, "").startswith("https://"):
            return found[label]
    return None


def sarif(report: Report) -> dict[str, Any]:
    """SARIF 2.1.0: one rule per probe, one result per finding (suppressed ones marked so)."""
    probes: dict[str, CaseResult] = {}
    for result in report.results:
        probes.setdefault(result.case.probe, result)
    rule_ids = sorted(probes)
    rules = [
        {
            "id": probe,
            "name": probes[probe].case.title,
            "shortDescription": {"text": probes[probe].case.title},
            "fullDescription": {"text": probes[probe].case.goal or probes[probe].case.title},
            "defaultConfiguration": {"level": _SARIF_LEVEL[probes[probe].case.severity]},
            "properties": {
                "tags": [
                    "security",
                    "llm",
                    *probes[probe].case.owasp,
                    *probes[probe].case.agentic,
                    *probes[probe].case.atlas,
                ],
                "security-severity": _SARIF_SCORE[probes[probe].case.severity],
                "family": probes[probe].case.family,
            },
        }
        for probe in rule_ids
    ]
    results = []
    for result in report.findings(include_suppressed=True):
        entry: dict[str, Any] = {
            "ruleId": result.case.probe,
            "ruleIndex": rule_ids.index(result.case.probe),
            "level": _SARIF_LEVEL[result.case.severity],
            "message": {"text": f"{result.case.title}: {result.reason}. " + "; ".join(result.evidence)},
            "locations": [
                {
                    "logicalLocations": [
                        {
                            "name": result.id,
                            "kind": "member",
                            "fullyQualifiedName": f"{report.target.get('type')}:{result.id}",
                        }
                    ]
                }
            ],
            "partialFingerprints": {"caseId": result.id},
            "properties": {
                "strategy": result.case.strategy_name,
                "broke_at_turn": result.broke_at_turn,
                "owasp": result.case.owasp,
                "atlas": result.case.atlas,
            },
        }
        if result.suppressed:
            entry["suppressions"] = [{"kind": "external", "justification": result.suppressed}]
        results.append(entry)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "seawall-redteam",
                        "version": report.seawall_version,
                        **({"informationUri": url} if (url := project_url()) else {}),
                        "rules": rules,
                    }
                },
                "results": results,
                "properties": {"target": report.target, "seed": report.seed, "asr": report.asr},
            }
        ],
    }


def write_sarif(report: Report, path: Path) -> None:
    path.write_text(json.dumps(sarif(report), indent=1), encoding="utf-8")


# ----------------------------------------------------------------- HTML


def percent(value: float | None) -> str:
    """A rate as ``12.3%``, or a dash when there is none."""
    return "–" if value is None else f"{100 * value:.1f}%"


def guard_line(stats: GroupStats) -> str:
    """ASR and block rate side by side: ``0/2 judged vulnerable (ASR 0.0%, 95% CI 0.0%-65.8%);
    19 of 23 blocked (82.6%, 95% CI 62.9%-93.0%)``. Blocked cases (refused, filtered or held for
    review by the target's guard) are neither safe nor vulnerable; their share is the guard's value."""
    asr = (
        f"{stats.vulnerable}/{stats.judged} judged vulnerable (ASR {percent(stats.asr)}, "
        f"95% CI {percent(stats.ci_low)}–{percent(stats.ci_high)})"
        if stats.judged
        else "none judged (no ASR)"
    )
    blocked = (
        f"{stats.blocked} of {stats.answered} blocked ({percent(stats.block_rate)}, "
        f"95% CI {percent(stats.block_ci_low)}–{percent(stats.block_ci_high)})"
        if stats.answered
        else "no answers"
    )
    return f"{asr}; {blocked}"


def _bars(groups: dict[str, GroupStats], title: str) -> str:
    """A horizontal bar chart of ASR with its Wilson interval, as inline SVG."""
    rows = sorted(((k, v) for k, v in groups.items() if v.judged), key=lambda kv: (-(kv[1].asr or 0), kv[0]))
    if not rows:
        return f"<h3>{html.escape(title)}</h3><p>No judged cases.</p>"
    label_w, bar_w, row_h = 190, 420, 22
    height = row_h * len(rows) + 30
    parts = [
        f'<svg role="img" aria-label="{html.escape(title)}" width="{label_w + bar_w + 130}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = label_w + tick * bar_w
        parts.append(
            f'<line x1="{x}" y1="0" x2="{x}" y2="{height - 20}" stroke="#ddd"/>'
            f'<text x="{x}" y="{height - 6}" text-anchor="middle" fill="#666">{int(tick * 100)}%</text>'
        )
    for i, (name, stats) in enumerate(rows):
        y = i * row_h + 4
        asr = stats.asr or 0.0
        colour = "#c0392b" if asr >= 0.5 else "#e67e22" if asr >= 0.2 else "#f1c40f" if asr > 0 else "#27ae60"
        lo, hi = stats.ci_low or 0.0, stats.ci_high or 0.0
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{html.escape(name[:28])}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{max(asr * bar_w, 1):.1f}" height="{row_h - 8}" '
            f'fill="{colour}">'
            f"<title>{html.escape(name)}: {percent(stats.asr)} ({stats.vulnerable}/{stats.judged}), "
            f"95% CI {percent(lo)}–{percent(hi)}</title></rect>"
            f'<line x1="{label_w + lo * bar_w:.1f}" y1="{y + row_h / 2}" x2="{label_w + hi * bar_w:.1f}" '
            f'y2="{y + row_h / 2}" stroke="#333" stroke-width="1.5"/>'
            f'<text x="{label_w + bar_w + 8}" y="{y + 14}">'
            f"{percent(stats.asr)} ({stats.vulnerable}/{stats.judged})</text>"
        )
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>" + "".join(parts)


def _table(groups: dict[str, GroupStats], label: str) -> str:
    head = (
        f"<tr><th>{label}</th><th>cases</th><th>vulnerable</th><th>safe</th><th>inconclusive</th>"
        "<th>blocked</th><th>error</th><th>ASR</th><th>95% CI</th><th>block rate</th><th>95% CI</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{s.cases}</td><td>{s.vulnerable}</td><td>{s.safe}</td>"
        f"<td>{s.inconclusive}</td><td>{s.blocked}</td><td>{s.error}</td><td>{percent(s.asr)}</td>"
        f"<td>{percent(s.ci_low)}–{percent(s.ci_high)}</td><td>{percent(s.block_rate)}</td>"
        f"<td>{percent(s.block_ci_low)}–{percent(s.block_ci_high)}</td></tr>"
        for name, s in groups.items()
    )
    return f"<table>{head}{rows}</table>"


def coverage_outcome(row: CoverageRow) -> str:
    """A risk's outcome in words: ``3/20 vulnerable (ASR 15.0%, 95% CI 5.2%-36.0%); 2 blocked; 1 error``."""
    s = row.stats
    if not s.cases:
        return row.status
    asr = (
        f"{s.vulnerable}/{s.judged} vulnerable "
        f"(ASR {percent(s.asr)}, 95% CI {percent(s.ci_low)}–{percent(s.ci_high)})"
        if s.judged
        else "none judged"
    )
    return f"{asr}; {s.inconclusive} inconclusive; {s.blocked} blocked; {s.error} errors"


def _coverage_table(rows: list[CoverageRow]) -> str:
    head = (
        "<tr><th>OWASP LLM 2025 risk</th><th class='l'>probes in this scan (cases)</th><th>cases</th>"
        "<th>vulnerable</th><th>safe</th><th>inconclusive</th><th>blocked</th><th>error</th><th>ASR</th>"
        "<th>95% CI</th></tr>"
    )
    body = []
    for row in rows:
        s = row.stats
        if row.probes:
            probes = "<br>".join(f"<code>{html.escape(p)}</code> ({n})" for p, n in row.probes.items())
        elif row.catalogue:
            probes = "<i>not run in this scan</i>; catalogue: " + ", ".join(
                f"<code>{html.escape(p)}</code>" for p in row.catalogue
            )
        else:
            probes = "<i>no probe</i>"
        notes = (
            "<b>Probed:</b> "
            + html.escape(row.probed)
            + (f"<br><b>Not covered:</b> {html.escape(row.limits)}" if row.limits else "")
        )
        ci = f"{percent(s.ci_low)}–{percent(s.ci_high)}" if s.judged else "–"
        body.append(
            f"<tr class='{row.status.split()[0]}'><td><b>{row.risk}</b> {html.escape(row.name)}</td>"
            f"<td class='l'>{probes}</td><td>{s.cases}</td><td>{s.vulnerable}</td><td>{s.safe}</td>"
            f"<td>{s.inconclusive}</td><td>{s.blocked}</td><td>{s.error}</td><td>{percent(s.asr)}</td>"
            f"<td>{ci}</td></tr><tr class='notes'><td colspan='10'>{notes}</td></tr>"
        )
    tested = sum(row.status == "tested" for row in rows)
    return (
        f"<p>{tested} of {len(rows)} risks tested in this scan.</p>"
        f"<table class='coverage'>{head}{''.join(body)}</table>"
    )


def _case_block(result: CaseResult) -> str:
    case = result.case
    asked = result.sent if result.sent else case.turns
    turns = "".join(
        f"<div class='turn user'><b>user</b><pre>{html.escape(turn)}</pre></div>"
        + (
            f"<div class='turn bot'><b>target</b><pre>{html.escape(result.replies[i][:4000])}</pre></div>"
            if i < len(result.replies)
            else ""
        )
        for i, turn in enumerate(asked)
    )
    tags = " ".join(html.escape(t) for t in [*case.owasp, *case.agentic, *case.atlas])
    evidence = "".join(f"<li>{html.escape(e)}</li>" for e in result.evidence)
    suppressed = (
        f" <span class='sup'>suppressed: {html.escape(result.suppressed)}</span>" if result.suppressed else ""
    )
    return (
        f"<details class='{result.verdict.value}'><summary>"
        f"<span class='sev {case.severity}'>{case.severity}</span> "
        f"<b>{html.escape(case.title)}</b> <code>{html.escape(result.id)}</code> · "
        f"{html.escape(case.strategy_name)}"
        f" · <i>{result.verdict.value}</i>{suppressed}</summary>"
        f"<p>{html.escape(result.reason)}</p><ul>{evidence}</ul>"
        f"<p class='tags'>{tags}</p>{conversation_html(result)}{turns}</details>"
    )


def render_html(report: Report) -> str:
    s = report.summary
    findings = report.findings(include_suppressed=True)
    others = [r for r in report.results if r.verdict in (Verdict.INCONCLUSIVE, Verdict.ERROR)]
    gate = ""
    if report.gate:
        status = "passed" if report.gate.get("exit_code") == 0 else "FAILED"
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in report.gate.get("reasons", []))
        gate = f"<h2>Gate: {status}</h2><ul>{reasons}</ul>"
    skipped = "".join(
        f"<li><code>{html.escape(k['probe'])}</code>: {html.escape(k['reason'])}</li>" for k in report.skipped
    )
    o = s.overall
    guard = "".join(
        f"<li>{html.escape(n)}: {html.escape(guard_line(g))}</li>" for n, g in s.by_family.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seawall red-team report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
pre{{white-space:pre-wrap;margin:2px 0;background:#f6f6f6;padding:6px}}
details{{border-left:4px solid #999;margin:6px 0;padding:2px 8px}}details.vulnerable{{border-color:#c0392b}}
details.safe{{border-color:#27ae60}}details.error{{border-color:#7f8c8d}}details.inconclusive{{border-color:#f1c40f}}
.sev{{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;background:#888}}
.sev.critical{{background:#7b241c}}
.sev.high{{background:#c0392b}}.sev.medium{{background:#e67e22}}.sev.low{{background:#95a5a6}}
.turn.bot pre{{background:#eef5ff}}.tags{{color:#555;font-size:90%}}.sup{{color:#555}}
.big{{font-size:160%}}
td.l,th.l{{text-align:left}}tr.notes td{{text-align:left;font-size:85%;color:#444;border-top:none}}
tr.not td{{background:#fbf3e0}}tr.no td{{background:#f9e0e0}}
</style></head><body>
<h1>seawall red-team report</h1>
<p>Target: <code>{html.escape(json.dumps(report.target))}</code> · seed {report.seed}
 · suite {report.suite_fingerprint} · {len(report.results)} cases in {report.duration_s:.1f} s
 · started {html.escape(report.started_at)} · seawall {report.seawall_version}</p>
<p class="big">Attack success rate: <b>{percent(o.asr)}</b> ({o.vulnerable} of {o.judged} judged cases;
95% CI {percent(o.ci_low)}–{percent(o.ci_high)})
 · {o.inconclusive} inconclusive ({o.blocked} blocked by the target) · {o.error} errors</p>
<p class="big">Blocked by the target's guard: <b>{percent(o.block_rate)}</b> ({o.blocked} of {o.answered}
answered cases; 95% CI {percent(o.block_ci_low)}–{percent(o.block_ci_high)})</p>
<p>Errors, blocked requests and inconclusive cases never count as safe or as attack successes; a
block (a refusal, a filtered answer or an answer held for human review) is the guard's verdict.</p>
<ul class="guard">{guard}</ul>
{gate}
{_bars(s.by_family, "Attack success by category")}
{_bars(s.by_strategy, "Attack success by strategy")}
<h2>Coverage: OWASP Top 10 for LLM Applications (2025)</h2>
{_coverage_table(report.coverage_of())}
<h2>Findings, worst first ({len(findings)})</h2>
{"".join(_case_block(r) for r in findings) or "<p>None.</p>"}
<h2>By category</h2>{_table(s.by_family, "family")}
<h2>By strategy</h2>{_table(s.by_strategy, "strategy")}
<h2>By OWASP LLM Top 10 (2025)</h2>{_table(s.by_owasp, "OWASP")}
<h2>By probe</h2>{_table(s.by_probe, "probe")}
<h2>Inconclusive and errors ({len(others)})</h2>
{"".join(_case_block(r) for r in others) or "<p>None.</p>"}
<h2>Skipped probes</h2><ul>{skipped or "<li>none</li>"}</ul>
</body></html>
"""


def write_html(report: Report, path: Path) -> None:
    path.write_text(render_html(report), encoding="utf-8")


WRITERS = {
    "json": ("report.json", write_json),
    "jsonl": ("cases.jsonl", write_jsonl),
    "junit": ("junit.xml", write_junit),
    "sarif": ("report.sarif", write_sarif),
    "html": ("report.html", write_html),
}


def check_report_dir(directory: Path, formats: Iterable[str]) -> None:
    """Before a scan: the formats are known and ``directory`` (created if missing) takes files, so a
    typo or a read-only path is reported before the traffic, not after it."""
    unknown = [name for name in formats if name not in WRITERS]
    if unknown:
        raise ConfigurationError(
            f"unknown report format {', '.join(map(repr, unknown))}: choose from {', '.join(WRITERS)}"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".seawall-write-check-"):
            pass
    except OSError as exc:
        raise ConfigurationError(f"cannot write reports to {directory}: {exc.strerror or exc}") from exc


def write_reports(report: Report, directory: Path, formats: Iterable[str]) -> dict[str, Path]:
    """Write the requested formats into ``directory``; returns format -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in formats:
        filename, writer = WRITERS[name]
        writer(report, directory / filename)
        written[name] = directory / filename
    return written
