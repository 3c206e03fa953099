"""The ``cascade`` backend: a cheap primary for everything, a stronger secondary for doubt.

Most traffic is clearly fine or clearly not, and the embedded model says so
for free; paying a remote backend (OpenAI, a Llama Guard server) only for the
rest keeps cost and latency down without lowering the bar. The primary
(``cascade.primary``, default ``local``) scores every input. An input goes to
the secondary (``cascade.secondary``) when any of the 13 category scores lies
inside ``[cascade.uncertain_low, cascade.uncertain_high]``, or when the
primary could not assess part of it (``not_assessed``, e.g. image categories
the local model does not judge). All such inputs go in one batched call.

The two answers are merged category by category, looking at which input types
("text", "image") each backend actually assessed (``applied_input_types``):

* the secondary assessed none of the category's input types: the primary's
  score and flag stand;
* the secondary assessed every input type the primary did (and maybe more):
  the secondary's score and flag replace the primary's, unless the primary
  flagged the category with a score above ``uncertain_high`` — a confident
  flag is never lowered, so then the two are combined as below;
* the primary assessed an input type the secondary did not (say the local
  model judged ``sexual`` on an image, and the secondary reads text only):
  the primary's score holds a verdict the secondary never saw, so the two are
  combined: the higher score, flagged if either backend flags it.

``applied_input_types`` is the union of both; ``not_assessed`` keeps only
what neither backend assessed. The primary's ``extra_scores`` and
``extra_flags`` (prompt_injection, jailbreak) are kept, since remote backends do not score
those. The notes say which backend decided which categories.

If the secondary fails, ``cascade.on_secondary_error`` decides: ``primary``
keeps the primary's answers and says so in their notes; ``error`` fails the
call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from seawall.backends.base import ModerationBackend, create_backend
from seawall.categories import CATEGORIES
from seawall.errors import BackendError, ConfigurationError, ModelNotFoundError
from seawall.inputs import ModerationInput
from seawall.results import ModerationResult
from seawall.settings import CascadeSettings, Settings

#: The order input types are listed in.
INPUT_TYPES = ("text", "image")


class CascadeBackend:
    """Primary for every input, secondary for the uncertain ones."""

    name = "cascade"

    def __init__(
        self, settings: CascadeSettings, primary: ModerationBackend, secondary: ModerationBackend
    ) -> None:
        self.settings = settings
        self.primary = primary
        self.secondary = secondary

    def is_uncertain(self, result: ModerationResult) -> bool:
        """True if the primary's answer is not good enough to stand on its own."""
        low, high = self.settings.uncertain_low, self.settings.uncertain_high
        if any(types for types in result.not_assessed.values()):
            return True
        return any(low <= result.category_scores.get(name, 0.0) <= high for name in CATEGORIES)

    async def moderate(self, inputs: Sequence[ModerationInput]) -> list[ModerationResult]:
        first = await self.primary.moderate(inputs)
        results = [self._decided_by(result, self.primary.name) for result in first]
        uncertain = [i for i, result in enumerate(first) if self.is_uncertain(result)]
        if not uncertain:
            return results
        secondary_name = self.secondary.name
        try:
            answers = await self.secondary.moderate([inputs[i] for i in uncertain])
            if len(answers) != len(uncertain):
                raise BackendError(
                    f"{secondary_name} returned {len(answers)} results for {len(uncertain)} inputs."
                )
        except BackendError as exc:
            if self.settings.on_secondary_error == "error":
                raise
            for i in uncertain:
                results[i].notes.append(
                    f"cascade: secondary {secondary_name} failed ({exc.message}); primary's answer kept"
                )
            return results
        for i, answer in zip(uncertain, answers, strict=True):
            results[i] = self.merge(first[i], answer)
        return results

    def merge(self, primary: ModerationResult, secondary: ModerationResult) -> ModerationResult:
        """One answer from both backends' answers on the same input (see the module's docstring)."""
        scores: dict[str, float] = {}
        categories: dict[str, bool] = {}
        applied: dict[str, list[str]] = {}
        not_assessed: dict[str, list[str]] = {}
        by_primary: list[str] = []
        by_secondary: list[str] = []
        combined: list[str] = []
        for name in CATEGORIES:
            p_types = set(primary.applied_input_types.get(name, []))
            s_types = set(secondary.applied_input_types.get(name, []))
            p_score = primary.category_scores.get(name, 0.0)
            p_flag = primary.categories.get(name, False)
            s_score = secondary.category_scores.get(name, 0.0)
            s_flag = secondary.categories.get(name, False)
            confident_flag = p_flag and p_score > self.settings.uncertain_high
            if not s_types:
                scores[name], categories[name] = p_score, p_flag
                by_primary.append(name)
            elif p_types <= s_types and not confident_flag:
                scores[name], categories[name] = s_score, s_flag
                by_secondary.append(name)
            else:
                scores[name], categories[name] = max(p_score, s_score), p_flag or s_flag
                combined.append(name)
            assessed = p_types | s_types
            applied[name] = _ordered(assessed)
            open_types = set(primary.not_assessed.get(name, [])) | set(secondary.not_assessed.get(name, []))
            if open_types - assessed:
                not_assessed[name] = _ordered(open_types - assessed)
        return ModerationResult(
            category_scores=scores,
            categories=categories,
            applied_input_types=applied,
            extra_scores=dict(primary.extra_scores),
            extra_flags=dict(primary.extra_flags),
            not_assessed=not_assessed,
            backend=self.name,
            notes=[*primary.notes, *secondary.notes, *self._provenance(by_primary, by_secondary, combined)],
        )

    def _provenance(self, by_primary: list[str], by_secondary: list[str], combined: list[str]) -> list[str]:
        """Notes naming who decided which categories; one note when one backend decided them all."""
        primary, secondary = self.primary.name, self.secondary.name
        if len(by_secondary) == len(CATEGORIES):
            return [f"cascade: decided by {secondary}"]
        if len(by_primary) == len(CATEGORIES):
            return [f"cascade: decided by {primary}; {secondary} assessed none of its input types"]
        notes = [
            f"cascade: {source} decided {', '.join(names)}"
            for source, names in ((secondary, by_secondary), (primary, by_primary))
            if names
        ]
        if combined:
            notes.append(
                f"cascade: {primary} and {secondary} combined (higher score, flagged if either flags) "
                f"for {', '.join(combined)}"
            )
        return notes

    def _decided_by(self, result: ModerationResult, source: str) -> ModerationResult:
        return replace(result, backend=self.name, notes=[*result.notes, f"cascade: decided by {source}"])

    async def aclose(self) -> None:
        try:
            await self.primary.aclose()
        finally:
            await self.secondary.aclose()


def _ordered(types: set[str]) -> list[str]:
    return sorted(types, key=lambda kind: (INPUT_TYPES.index(kind) if kind in INPUT_TYPES else 99, kind))


def _member(role: str, name: str, settings: Settings) -> ModerationBackend:
    if name == CascadeBackend.name:
        raise ConfigurationError(f"cascade.{role} cannot be 'cascade' itself; name another backend.")
    try:
        return create_backend(name, settings)
    except ModelNotFoundError as exc:
        raise ConfigurationError(f"cascade.{role}: {exc.message}") from exc


def create(settings: Settings) -> CascadeBackend:
    """Build both members now, so a missing key or unknown name fails at start-up."""
    cascade = settings.cascade  # its band order is checked when the settings load
    primary = _member("primary", cascade.primary, settings)
    secondary = _member("secondary", cascade.secondary, settings)
    return CascadeBackend(cascade, primary, secondary)
