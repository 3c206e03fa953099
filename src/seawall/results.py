"""What a moderation backend returns for one input, and how it becomes OpenAI's wire shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from seawall.categories import CATEGORIES, EXTRA_LABELS, PARENT


@dataclass
class ModerationResult:
    """Scores and decisions for one input.

    ``category_scores`` always holds all 13 categories. ``applied_input_types``
    says, per category, which input types ("text", "image") were actually
    assessed; a category with an image input that no backend could judge
    lists it in ``not_assessed`` instead of pretending it is safe.
    """

    category_scores: dict[str, float]
    categories: dict[str, bool]
    applied_input_types: dict[str, list[str]]
    extra_scores: dict[str, float] = field(default_factory=dict)
    #: Decisions on the extra labels (prompt_injection, jailbreak) at the backend's thresholds.
    extra_flags: dict[str, bool] = field(default_factory=dict)
    not_assessed: dict[str, list[str]] = field(default_factory=dict)
    backend: str = "local"
    #: Notes for operators (e.g. "secondary backend failed; primary's answer kept").
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.categories = with_parent_flags(self.categories)

    @property
    def flagged(self) -> bool:
        return any(self.categories.values())

    def with_thresholds(self, thresholds: Mapping[str, float]) -> ModerationResult:
        """Re-decide the categories named in ``thresholds`` (configured overrides win)."""
        categories = dict(self.categories)
        extra_flags = dict(self.extra_flags)
        for name, threshold in thresholds.items():
            if name in self.category_scores:
                categories[name] = self.category_scores[name] >= threshold
            elif name in self.extra_scores:
                extra_flags[name] = self.extra_scores[name] >= threshold
        return replace(
            self, categories=with_parent_flags(categories), extra_flags=extra_flags, notes=list(self.notes)
        )

    def to_openai(self) -> dict[str, Any]:
        """The result object of OpenAI's ``/v1/moderations`` response."""
        return {
            "flagged": self.flagged,
            "categories": {name: bool(self.categories.get(name, False)) for name in CATEGORIES},
            "category_scores": {name: float(self.category_scores.get(name, 0.0)) for name in CATEGORIES},
            "category_applied_input_types": {
                name: list(self.applied_input_types.get(name, [])) for name in CATEGORIES
            },
        }

    def to_seawall(self) -> dict[str, Any]:
        """OpenAI's shape plus seawall's extra scores, coverage and provenance."""
        body = self.to_openai()
        body["extra_scores"] = {name: float(self.extra_scores.get(name, 0.0)) for name in EXTRA_LABELS}
        body["extra_flags"] = {name: bool(self.extra_flags.get(name, False)) for name in EXTRA_LABELS}
        body["not_assessed"] = {name: list(types) for name, types in self.not_assessed.items() if types}
        body["backend"] = self.backend
        body["notes"] = list(self.notes)
        return body


def with_parent_flags(categories: Mapping[str, bool]) -> dict[str, bool]:
    """The taxonomy's rule on flags: a flagged sub-category flags its parent (a threat is harassment)."""
    out = dict(categories)
    for child, parent in PARENT.items():
        if out.get(child) and parent in out:
            out[parent] = True
    return out
