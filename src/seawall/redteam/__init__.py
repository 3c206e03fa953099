"""seawall's red team: probes x strategies against any target, deterministic detectors, reports, a CI gate.

::

    from seawall.redteam import scan, SuiteConfig
    report = scan("http://127.0.0.1:8000/v1", SuiteConfig(seed=7), model="my-model")
    report.asr, report.findings(min_severity="high")
"""

from __future__ import annotations

from seawall.redteam.cases import AttackCase, CaseResult, Check, Document, Suite, Verdict
from seawall.redteam.catalogue import FAMILIES, AuthoredProbe, FileProbe, Probe, ProbeContext, builtin_probes
from seawall.redteam.config import AppConfig, RedTeamConfig, SuiteConfig, load_config
from seawall.redteam.detectors import DetectorContext, Finding
from seawall.redteam.gate import GateResult, apply_suppressions, compare, evaluate, load_suppressions
from seawall.redteam.refusal import RefusalClassifier, RefusalJudgement, classify_refusal, is_refusal
from seawall.redteam.report import Report, load_report, write_reports
from seawall.redteam.scan import ascan, make_target, scan
from seawall.redteam.stats import GroupStats, wilson
from seawall.redteam.strategies import Strategy, available_strategies
from seawall.redteam.suite import build_suite, freeze, load_suite
from seawall.redteam.targets import (
    CallableTarget,
    Conversation,
    HTTPTarget,
    OpenAITarget,
    ResponsesTarget,
    SeawallResponsesTarget,
    SeawallTarget,
    Target,
    TargetReply,
)

__all__ = [
    "FAMILIES",
    "AppConfig",
    "AttackCase",
    "AuthoredProbe",
    "CallableTarget",
    "CaseResult",
    "Check",
    "Conversation",
    "DetectorContext",
    "Document",
    "FileProbe",
    "Finding",
    "GateResult",
    "GroupStats",
    "HTTPTarget",
    "OpenAITarget",
    "Probe",
    "ProbeContext",
    "RedTeamConfig",
    "RefusalClassifier",
    "RefusalJudgement",
    "Report",
    "ResponsesTarget",
    "SeawallResponsesTarget",
    "SeawallTarget",
    "Strategy",
    "Suite",
    "SuiteConfig",
    "Target",
    "TargetReply",
    "Verdict",
    "apply_suppressions",
    "ascan",
    "available_strategies",
    "build_suite",
    "builtin_probes",
    "classify_refusal",
    "compare",
    "evaluate",
    "freeze",
    "is_refusal",
    "load_config",
    "load_report",
    "load_suite",
    "load_suppressions",
    "make_target",
    "scan",
    "wilson",
    "write_reports",
]
