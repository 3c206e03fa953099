"""Coverage of the OWASP Top 10 for LLM Applications (2025): risk -> probes -> cases -> outcome.

Every risk gets a row, whether or not this scan ran a probe for it: a risk without cases says
so, with the catalogue's probes that would cover it, and every row says what the probes test and
what a chat endpoint cannot show (``data/owasp_llm_2025.yaml``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, Field

from seawall.redteam.cases import CaseResult
from seawall.redteam.config import SuiteConfig
from seawall.redteam.stats import GroupStats, group_stats
from seawall.redteam.suite import all_probes

Status = Literal["tested", "not run in this scan", "no probe"]


class Risk(BaseModel):
    id: str
    name: str
    probed: str
    limits: str = ""


class CoverageRow(BaseModel):
    """One risk of the list and what a scan did about it."""

    risk: str
    name: str
    status: Status
    #: Probes of this scan tagged with the risk, and how many cases each ran.
    probes: dict[str, int] = Field(default_factory=dict)
    #: Probes of the catalogue (built-in ones) tagged with the risk, run or not.
    catalogue: list[str] = Field(default_factory=list)
    stats: GroupStats = Field(default_factory=GroupStats)
    probed: str = ""
    limits: str = ""


@functools.cache
def risks() -> tuple[Risk, ...]:
    """The ten risks, in order."""
    raw = yaml.safe_load(
        resources.files("seawall.redteam").joinpath("data/owasp_llm_2025.yaml").read_text("utf-8")
    )
    return tuple(Risk.model_validate(entry) for entry in raw)


@functools.cache
def catalogue_by_risk() -> dict[str, tuple[str, ...]]:
    """Built-in probe ids per OWASP id (authored YAML and the hallucination items)."""
    found: dict[str, list[str]] = {}
    for probe in all_probes(SuiteConfig(plugins=False)):
        for tag in probe.describe().get("owasp", []):
            found.setdefault(tag, []).append(probe.id)
    return {tag: tuple(ids) for tag, ids in found.items()}


def coverage(results: Iterable[CaseResult]) -> list[CoverageRow]:
    """One row per OWASP LLM 2025 risk, in the list's order."""
    tagged: dict[str, list[CaseResult]] = {}
    for result in results:
        for tag in result.case.owasp:
            tagged.setdefault(tag, []).append(result)
    catalogue = catalogue_by_risk()
    rows: list[CoverageRow] = []
    for risk in risks():
        members = tagged.get(risk.id, [])
        probes: dict[str, int] = {}
        for result in members:
            probes[result.case.probe] = probes.get(result.case.probe, 0) + 1
        known = list(catalogue.get(risk.id, ()))
        status: Status = "tested" if members else "not run in this scan" if known else "no probe"
        rows.append(
            CoverageRow(
                risk=risk.id,
                name=risk.name,
                status=status,
                probes=dict(sorted(probes.items())),
                catalogue=known,
                stats=group_stats(members),
                probed=risk.probed,
                limits=risk.limits,
            )
        )
    return rows
