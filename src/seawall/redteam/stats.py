"""Attack success rates with Wilson 95% intervals, grouped any way a report needs.

The attack success rate (ASR) of a group is ``vulnerable / (vulnerable + safe)``: errors,
blocked requests and inconclusive cases are counted and shown, but never enter the rate as
successes or as defences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from statistics import NormalDist

from pydantic import BaseModel

from seawall.redteam.cases import CaseResult, Verdict

Z95 = 1.959963984540054


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``successes`` out of ``trials`` ((0, 1) when trials is 0)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def regression_p_value(base_k: int, base_n: int, new_k: int, new_n: int) -> float:
    """One-sided p-value that the new rate is higher than the baseline's (pooled two-proportion z-test)."""
    if base_n == 0 or new_n == 0:
        return 1.0
    pooled = (base_k + new_k) / (base_n + new_n)
    if pooled in (0.0, 1.0):
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / base_n + 1 / new_n))
    z = (new_k / new_n - base_k / base_n) / se
    return 1.0 - NormalDist().cdf(z)


class GroupStats(BaseModel):
    """Counts and the attack success rate of one group of cases."""

    cases: int = 0
    vulnerable: int = 0
    safe: int = 0
    error: int = 0
    inconclusive: int = 0
    blocked: int = 0
    suppressed: int = 0
    asr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    #: Blocked (refused, filtered or held for review by the target's guard) / cases that got an
    #: answer (all but errors), with its Wilson interval: the guard's share of the verdicts.
    block_rate: float | None = None
    block_ci_low: float | None = None
    block_ci_high: float | None = None

    @property
    def judged(self) -> int:
        return self.vulnerable + self.safe

    @property
    def answered(self) -> int:
        """Cases the target answered or blocked (every case but the errors)."""
        return self.cases - self.error

    def finish(self) -> GroupStats:
        if self.judged:
            self.asr = self.vulnerable / self.judged
            self.ci_low, self.ci_high = wilson(self.vulnerable, self.judged)
        if self.answered:
            self.block_rate = self.blocked / self.answered
            self.block_ci_low, self.block_ci_high = wilson(self.blocked, self.answered)
        return self


def group_stats(results: Iterable[CaseResult]) -> GroupStats:
    stats = GroupStats()
    for result in results:
        stats.cases += 1
        if result.verdict is Verdict.VULNERABLE:
            stats.vulnerable += 1
            if result.suppressed:
                stats.suppressed += 1
        elif result.verdict is Verdict.SAFE:
            stats.safe += 1
        elif result.verdict is Verdict.ERROR:
            stats.error += 1
        else:
            stats.inconclusive += 1
        stats.blocked += int(result.blocked)
    return stats.finish()


def grouped(
    results: Iterable[CaseResult], key: Callable[[CaseResult], Iterable[str]]
) -> dict[str, GroupStats]:
    """Stats per group; ``key`` gives the groups of a result (several for OWASP ids)."""
    groups: dict[str, list[CaseResult]] = {}
    for result in results:
        for name in key(result):
            groups.setdefault(name, []).append(result)
    return {name: group_stats(members) for name, members in sorted(groups.items())}
