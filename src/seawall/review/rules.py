"""The hold rules at work: which rules an answer matches, and why, from what the gateway saw.

:class:`HoldRules` evaluates ``review.rules`` (:class:`~seawall.review.settings.HoldRule`;
:meth:`~seawall.review.settings.ReviewSettings.hold_rules` says which are in force) against

* the request's domain: declared by the app (``seawall.review.domain``) or detected
  (:class:`~seawall.review.domains.DomainDetector`, only when a rule asks about domains);
* the moderation decisions the gateway made, kept apart by whose they are: the request's
  (``input_moderation``) and the draft answer's (``output_moderation``, ``tool_call_moderation``);
* the request's context (:class:`HoldContext`): the user's tier and whether it is scan traffic.

The result, :class:`RuleMatch`, lists every matched rule with the reason it gives (``domain:health``,
``declared:law``, ``flagged:violence``, ``uncertain:harassment``: the kinds the queue filters on)
and a sentence saying why, for the reviewer (``draft harassment 0.352 in [0.30, flag)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from seawall.review.settings import DOMAINS, Domain, HoldRule, ReviewSettings

#: The decision steps whose scores are the request's, and the draft answer's.
REQUEST_STEPS: Final = frozenset({"input_moderation"})
DRAFT_STEPS: Final = frozenset({"output_moderation", "tool_call_moderation"})
#: Output decisions that mean the answer was already refused or stopped: nothing to hold.
REFUSED: Final = frozenset({"filter", "block", "refuse", "failed_closed"})
#: The request header with which scan traffic asks for holds (``hold``); see ``review.scan_keys``.
SCAN_HEADER: Final = "x-seawall-scan-review"


@dataclass(frozen=True)
class HoldContext:
    """What the request's context says about holding: the user's tier (a policy tier's name, when
    the gateway knows one) and whether it is scan traffic that asked for holds."""

    tier: str | None = None
    scan: bool = False
    scan_asks_hold: bool = False


@dataclass(frozen=True)
class Fired:
    """One matched rule: its name, the reason it gives and why, in words."""

    rule: str
    reason: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "reason": self.reason, "why": self.why}


@dataclass
class Seen:
    """The moderation the gateway did, by whose scores they are."""

    scores: dict[str, dict[str, float]] = field(default_factory=lambda: {"request": {}, "draft": {}})
    flagged: dict[str, set[str]] = field(default_factory=lambda: {"request": set(), "draft": set()})
    refused: bool = False

    @classmethod
    def of(cls, decisions: Iterable[Mapping[str, Any]]) -> Seen:
        seen = cls()
        for decision in decisions:
            step = decision.get("step")
            whose = "request" if step in REQUEST_STEPS else "draft" if step in DRAFT_STEPS else None
            if whose is None:
                continue
            if decision.get("action") in REFUSED:
                seen.refused = True
            seen.flagged[whose].update(str(name) for name in decision.get("categories") or [])
            mine = seen.scores[whose]
            for name, score in (decision.get("scores") or {}).items():
                mine[str(name)] = max(mine.get(str(name), 0.0), float(score))
        return seen

    def merged(self) -> dict[str, float]:
        """Each category's highest score, the request's and the draft's together."""
        merged: dict[str, float] = {}
        for whose in ("request", "draft"):
            for name, score in self.scores[whose].items():
                merged[name] = max(merged.get(name, 0.0), score)
        return merged


@dataclass(frozen=True)
class RuleMatch:
    """The rules an answer matched (empty: not held), its domain, and what was seen."""

    fired: tuple[Fired, ...]
    domain: str | None
    seen: Seen
    band: dict[str, Any]

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(fired.reason for fired in self.fired))

    def record(self) -> dict[str, Any]:
        """What the review item keeps of the match: the rules and why, the scores by whose they are,
        the flagged categories and the bands, for the reviewer's page."""
        return {
            "rules": [fired.as_dict() for fired in self.fired],
            "scores": {whose: dict(sorted(s.items())) for whose, s in self.seen.scores.items()},
            "flagged": {whose: sorted(names) for whose, names in self.seen.flagged.items()},
            "band": self.band,
        }


def _fmt(value: float | None) -> str:
    return "flag" if value is None else f"{value:.2f}"


class HoldRules:
    """The hold rules of one :class:`ReviewSettings`; :meth:`match` is pure apart from the detector."""

    def __init__(self, settings: ReviewSettings) -> None:
        self.settings = settings
        self.rules: tuple[HoldRule, ...] = tuple(settings.hold_rules())
        wanted = {domain for rule in self.rules for domain in rule.domains or ()}
        #: The domains some rule asks about, in the detector's order (detection only covers these).
        self.domains: tuple[Domain, ...] = tuple(domain for domain in DOMAINS if domain in wanted)

    def band(self, applicable: list[HoldRule] | None = None) -> dict[str, Any]:
        """The score bands of the rules that apply to a request (all when not given), for marking
        scores: per source (request, draft), the lowest band start of each category a band rule looks
        at (``"*"``: every category), and ``low``, the lowest of all (None: no band)."""
        rules = self.rules if applicable is None else applicable
        lows: dict[str, dict[str, float]] = {"request": {}, "draft": {}}
        for rule in rules:
            if rule.band is None:
                continue
            for whose in ("request", "draft") if rule.scores == "either" else (rule.scores,):
                for category in rule.categories or ["*"]:
                    mine = lows[whose]
                    mine[category] = min(mine.get(category, 1.0), rule.band[0])
        every = [low for mine in lows.values() for low in mine.values()]
        return {"low": min(every) if every else None, **lows}

    def match(
        self,
        decisions: Iterable[Mapping[str, Any]],
        *,
        declared: str | None,
        detect: Any,
        context: HoldContext = HoldContext(),
    ) -> RuleMatch | None:
        """The matched rules, or None when the answer was refused already (nothing to hold).

        ``declared``: the app's ``seawall.review.domain`` (``"none"``: no domain); ``detect``: a
        callable returning ``(domain, score, threshold)`` for the request, called at most once and only
        when a rule asks about a domain the app did not declare."""
        seen = Seen.of(decisions)
        if seen.refused:
            return None
        if context.scan and not context.scan_asks_hold:
            return RuleMatch((), None, seen, self.band())
        domain: str | None = None
        domain_why = ""
        kind = "domain"
        looked = False
        fired: list[Fired] = []
        applicable: list[HoldRule] = []
        for rule in self.rules:
            if rule.tiers is not None and context.tier not in rule.tiers:
                continue
            if rule.domains is not None:
                if not looked:
                    looked = True
                    if declared == "none":
                        domain_why = "the app declared no domain"
                    elif declared is not None:
                        domain, kind, domain_why = declared, "declared", f"declared by the app: {declared}"
                    elif self.settings.detect_domains and self.domains:
                        found, score, threshold = detect()
                        if found is not None:
                            domain = found
                            domain_why = f"detected {found} (score {score:.2f} >= {threshold:.2f})"
                if domain is None or domain not in rule.domains:
                    continue
            applicable.append(rule)
            score_reason = self._score_condition(rule, seen)
            if score_reason is None:
                continue
            if score_reason:
                reason, why = score_reason
                if rule.domains is not None:
                    why = f"{why}; {domain_why}"
            else:
                reason, why = f"{kind}:{domain}", domain_why
            fired.append(Fired(rule.name, reason, why))
        return RuleMatch(tuple(fired), domain, seen, self.band(applicable))

    @staticmethod
    def _score_condition(rule: HoldRule, seen: Seen) -> tuple[str, str] | tuple[()] | None:
        """(reason, why) of the rule's score condition; () when it states none; None when it fails."""
        if rule.band is None and not rule.flagged:
            return ()
        sources = ("request", "draft") if rule.scores == "either" else (rule.scores,)
        wanted = set(rule.categories) if rule.categories is not None else None
        best: tuple[float, str, str] | None = None
        for whose in sources:
            flagged = seen.flagged[whose]
            if rule.flagged:
                for name in sorted(flagged):
                    if wanted is None or name in wanted:
                        score = seen.scores[whose].get(name, 0.0)
                        if best is None or score > best[0]:
                            best = (score, f"flagged:{name}", f"{whose} {name} flagged ({score:.3f})")
                continue
            assert rule.band is not None
            low, high = rule.band
            for name, score in seen.scores[whose].items():
                if name in flagged or (wanted is not None and name not in wanted):
                    continue
                in_band = score >= low and (high is None or score < high)
                if in_band and (best is None or score > best[0]):
                    best = (
                        score,
                        f"uncertain:{name}",
                        f"{whose} {name} {score:.3f} in [{low:.2f}, {_fmt(high)})",
                    )
        return None if best is None else (best[1], best[2])


__all__ = [
    "DRAFT_STEPS",
    "REQUEST_STEPS",
    "SCAN_HEADER",
    "Fired",
    "HoldContext",
    "HoldRules",
    "RuleMatch",
    "Seen",
]
