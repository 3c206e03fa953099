"""The ``cascade`` backend: a cheap primary for everything, a stronger secondary for doubt.

Most traffic is clearly fine or clearly not, and the embedded model says so
for free; paying a remote backend (OpenAI, a Llama Guard server) only for the
rest keeps cost and latency down without lowering the bar. The primary
(``cascade.primary``, default ``local``) scores every input. An input goes to
the secondary (``cascade.secondary``) when any of the 13 category scores lies
inside ``[cascade.uncertain_low, cascade.uncertain_high]``, or when the
primary could not assess part of it (``not_assessed``, e.g. image categories
the local model does not judge). All such inputs go in one batched call, and
the secondary's answer replaces the primary's for them; the primary's
``extra_scores`` (prompt_injection, jailbreak) are kept, since remote
backends do not score those.

If the secondary fails, ``cascade.on_secondary_error`` decides: ``primary``
keeps the primary's answers and says so in their notes; ``error`` fails the
call. Every result's notes say which backend decided it.
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
            decided = self._decided_by(answer, secondary_name)
            results[i] = replace(decided, extra_scores=dict(first[i].extra_scores))
        return results

    def _decided_by(self, result: ModerationResult, source: str) -> ModerationResult:
        return replace(result, backend=self.name, notes=[*result.notes, f"cascade: decided by {source}"])

    async def aclose(self) -> None:
        try:
            await self.primary.aclose()
        finally:
            await self.secondary.aclose()


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
