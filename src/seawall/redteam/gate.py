"""The CI gate: suppressions, comparison with a baseline, and ``--fail-on`` rules -> exit code.

Exit codes: 0 the gate passed, 1 findings over the gate, 2 the scan could not be trusted
(errors above ``max_error_rate``, or it did not run).

Suppression file (YAML)::

    - case: leak.repeat_above/0+base64      # or probe: ..., optionally with strategy: ...
      reason: accepted - the canary test prompt is not used in production  (required)
      expires: 2026-06-30                    # optional; an expired entry no longer applies (and is reported)

Suppressed findings stay in every report, marked with their reason; the ``severity``/``any``
rules ignore them, the ``asr`` and ``regression`` rules measure all cases.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from seawall.errors import ConfigurationError
from seawall.redteam.cases import SEVERITY_ORDER, Verdict
from seawall.redteam.report import Report, load_report, summarise
from seawall.redteam.stats import GroupStats, regression_p_value


class Suppression(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case: str | None = None
    probe: str | None = None
    strategy: str | None = None
    reason: str
    expires: dt.date | None = None

    def expired(self, today: dt.date) -> bool:
        """Whether the entry has expired (it applies up to and including its ``expires`` date)."""
        return self.expires is not None and today > self.expires

    @property
    def subject(self) -> str:
        """What the entry suppresses: the case id, or ``probe P`` (``, strategy S``)."""
        if self.case is not None:
            return self.case
        return f"probe {self.probe}" + (f", strategy {self.strategy}" if self.strategy is not None else "")

    def matches(self, case_id: str, probe: str, strategy: str, today: dt.date) -> bool:
        if self.expired(today):
            return False
        if self.case is not None and self.case != case_id:
            return False
        if self.probe is not None and self.probe != probe:
            return False
        return self.strategy is None or self.strategy == strategy


def load_suppressions(path: Path) -> list[Suppression]:
    try:
        raw = yaml.safe_load(path.read_text("utf-8")) or []
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read suppressions {path}: {exc}") from exc
    if not isinstance(raw, list):
        raise ConfigurationError(f"{path}: expected a list of suppressions")
    try:
        entries = [Suppression.model_validate(item) for item in raw]
    except ValidationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    for entry in entries:
        if entry.case is None and entry.probe is None:
            raise ConfigurationError(f"{path}: each suppression needs 'case' or 'probe'")
        if not entry.reason.strip():
            raise ConfigurationError(f"{path}: each suppression needs a reason")
    return entries


def expired_suppressions(entries: Iterable[Suppression], today: dt.date | None = None) -> list[Suppression]:
    """The entries that no longer apply on ``today`` (default: today), in file order: an expired
    entry is ignored, and its findings count again, so the user must be told."""
    today = today or dt.date.today()
    return [entry for entry in entries if entry.expired(today)]


def expiry_notice(entry: Suppression) -> str:
    """``suppression for CASE expired on DATE: no longer applied``."""
    return f"suppression for {entry.subject} expired on {entry.expires}: no longer applied"


def apply_suppressions(report: Report, entries: list[Suppression], today: dt.date | None = None) -> int:
    """Mark matching findings suppressed (with the reason); returns how many. Expired entries apply
    to nothing; each is recorded as an :func:`expiry_notice` in the report's ``settings.notes``."""
    today = today or dt.date.today()
    if expired := expired_suppressions(entries, today):
        notes = report.settings.setdefault("notes", [])
        notes += [expiry_notice(entry) for entry in expired]
    count = 0
    for result in report.results:
        if result.verdict is not Verdict.VULNERABLE:
            continue
        for entry in entries:
            if entry.matches(result.id, result.case.probe, result.case.strategy_name, today):
                result.suppressed = entry.reason
                count += 1
                break
    report.resummarise()
    return count


@dataclass
class Comparison:
    """The current report against a baseline."""

    regressions: list[dict[str, Any]] = field(default_factory=list)
    improvements: list[dict[str, Any]] = field(default_factory=list)
    new_findings: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    same_suite: bool = True
    #: Cases both runs have (the only ones compared), and each run's number of cases.
    shared_cases: int = 0
    baseline_cases: int = 0
    current_cases: int = 0


def compare(report: Report, baseline: Report, alpha: float = 0.05) -> Comparison:
    """Per group (overall, family, strategy): a one-sided two-proportion test at ``alpha``;
    per case id: which findings are new and which are fixed.

    Only the cases both runs have are compared: a run of a subset of the suite (``--case``, a
    smaller catalogue) is measured against the baseline's results for the same cases, not against
    the baseline's whole suite (whose other cases would make a false regression or improvement)."""
    result = Comparison(same_suite=report.suite_fingerprint == baseline.suite_fingerprint)
    shared = {r.id for r in report.results} & {r.id for r in baseline.results}
    result.shared_cases = len(shared)
    result.baseline_cases = len(baseline.results)
    result.current_cases = len(report.results)
    new_summary = summarise([r for r in report.results if r.id in shared])
    old_summary = summarise([r for r in baseline.results if r.id in shared])
    pairs: list[tuple[str, GroupStats, GroupStats]] = [("overall", old_summary.overall, new_summary.overall)]
    for label, new_groups, old_groups in (
        ("family", new_summary.by_family, old_summary.by_family),
        ("strategy", new_summary.by_strategy, old_summary.by_strategy),
    ):
        pairs += [
            (f"{label}:{name}", old_groups[name], stats)
            for name, stats in new_groups.items()
            if name in old_groups
        ]
    for name, old, new in pairs:
        p_up = regression_p_value(old.vulnerable, old.judged, new.vulnerable, new.judged)
        p_down = regression_p_value(new.vulnerable, new.judged, old.vulnerable, old.judged)
        row = {
            "group": name,
            "baseline_asr": old.asr,
            "asr": new.asr,
            "baseline": f"{old.vulnerable}/{old.judged}",
            "current": f"{new.vulnerable}/{new.judged}",
        }
        if p_up < alpha:
            result.regressions.append({**row, "p_value": round(p_up, 5)})
        elif p_down < alpha:
            result.improvements.append({**row, "p_value": round(p_down, 5)})
    old_verdicts = {r.id: r.verdict for r in baseline.results}
    for r in report.results:
        before = old_verdicts.get(r.id)
        if r.verdict is Verdict.VULNERABLE and before is Verdict.SAFE:
            result.new_findings.append(r.id)
        elif r.verdict is Verdict.SAFE and before is Verdict.VULNERABLE:
            result.fixed.append(r.id)
    return result


@dataclass
class GateResult:
    exit_code: int
    reasons: list[str]
    comparison: Comparison | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"exit_code": self.exit_code, "reasons": self.reasons}
        if self.comparison is not None:
            c = self.comparison
            body["comparison"] = {
                "regressions": c.regressions,
                "improvements": c.improvements,
                "new_findings": c.new_findings,
                "fixed": c.fixed,
                "same_suite": c.same_suite,
                "shared_cases": c.shared_cases,
                "baseline_cases": c.baseline_cases,
                "current_cases": c.current_cases,
            }
        return body


def _rate(text: str, rule: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ConfigurationError(f"--fail-on {rule!r}: {text!r} is not a number") from exc
    if not 0 <= value <= 1:
        raise ConfigurationError(f"--fail-on {rule!r}: a rate must be within [0, 1]")
    return value


@dataclass(frozen=True)
class Rule:
    """One ``--fail-on`` rule, checked: ``kind`` severity | any | asr | regression."""

    text: str
    kind: str
    severity: str = ""
    family: str | None = None
    limit: float = 0.0


RULE_FORMS = "severity:LEVEL, asr:RATE, asr:FAMILY=RATE, regression, any"


def parse_rules(
    fail_on: list[str], *, has_baseline: bool, families: Iterable[str] | None = None
) -> list[Rule]:
    """The ``--fail-on`` rules, checked before a scan starts (a typo must not cost the scan):
    ConfigurationError for an unknown rule, a bad level or rate, ``regression`` without a
    baseline, and (when ``families`` is given) an ``asr:FAMILY=RATE`` naming no known family."""
    rules: list[Rule] = []
    known = set(families) if families is not None else None
    for text in fail_on:
        kind, _, arg = text.partition(":")
        if kind == "severity":
            if arg not in SEVERITY_ORDER:
                raise ConfigurationError(
                    f"--fail-on {text!r}: severity must be one of {list(SEVERITY_ORDER)}"
                )
            rules.append(Rule(text, kind, severity=arg))
        elif kind == "any" and not arg:
            rules.append(Rule(text, kind))
        elif kind == "asr":
            family, eq, value = arg.rpartition("=")
            if eq and known is not None and family not in known:
                raise ConfigurationError(
                    f"--fail-on {text!r}: no family {family!r} (families: {', '.join(sorted(known))})"
                )
            rules.append(Rule(text, kind, family=family if eq else None, limit=_rate(value, text)))
        elif kind == "regression" and not arg:
            if not has_baseline:
                raise ConfigurationError("--fail-on regression needs --baseline")
            rules.append(Rule(text, kind))
        else:
            raise ConfigurationError(f"unknown --fail-on rule {text!r} ({RULE_FORMS})")
    return rules


def read_baseline(path: Path) -> Report:
    """A baseline report (a report.json, or the folder holding one), read and checked before a scan
    starts."""
    if path.is_dir() and (path / "report.json").is_file():
        path = path / "report.json"
    if not path.is_file():
        raise ConfigurationError(f"--baseline {path}: no such file (give a report.json of an earlier run)")
    try:
        return load_report(path)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"--baseline {path}: not a seawall red-team report.json ({exc})") from exc


def evaluate(
    report: Report,
    fail_on: list[str],
    *,
    baseline: Report | None = None,
    max_error_rate: float = 0.2,
    alpha: float = 0.05,
) -> GateResult:
    """Apply the rules; the report's ``gate`` field is set to the outcome."""
    reasons: list[str] = []
    failed = False
    rules = parse_rules(fail_on, has_baseline=baseline is not None)
    comparison = compare(report, baseline, alpha) if baseline is not None else None
    overall = report.summary.overall
    for rule in rules:
        kind = rule.kind
        if kind == "severity":
            found = report.findings(min_severity=rule.severity)
            if found:
                failed = True
                reasons.append(
                    f"{len(found)} unsuppressed finding(s) of severity {rule.severity} or worse "
                    f"(first: {found[0].id})"
                )
        elif kind == "any":
            if found := report.findings():
                failed = True
                reasons.append(f"{len(found)} unsuppressed finding(s)")
        elif kind == "asr":
            stats = report.family(rule.family) if rule.family is not None else overall
            label = f"family {rule.family}" if rule.family is not None else "overall"
            if stats.asr is not None and stats.asr > rule.limit:
                failed = True
                reasons.append(f"{label} attack success rate {stats.asr:.3f} > {rule.limit}")
        elif kind == "regression":
            assert comparison is not None  # parse_rules refuses regression without a baseline
            if comparison.regressions:
                failed = True
                groups = ", ".join(
                    f"{r['group']} {r['baseline']}→{r['current']} (p={r['p_value']})"
                    for r in comparison.regressions
                )
                reasons.append(f"significant regression against the baseline: {groups}")
    code = 1 if failed else 0
    if overall.cases == 0:
        code, reasons = 2, [*reasons, "the suite has no cases"]
    elif overall.error / overall.cases > max_error_rate:
        code = 2
        reasons.append(
            f"{overall.error} of {overall.cases} cases errored (> {max_error_rate:.0%}): "
            "the scan cannot be trusted"
        )
    if comparison is not None and (
        not comparison.same_suite or comparison.shared_cases < comparison.baseline_cases
    ):
        reasons.append(
            f"note: compared on the {comparison.shared_cases} cases both runs have "
            f"(this run {comparison.current_cases}, the baseline {comparison.baseline_cases})"
        )
    result = GateResult(code, reasons, comparison)
    report.gate = result.to_dict()
    return result
