"""The moderation backend protocol and the registry that finds backends by name.

A backend scores a *batch* of inputs in one call. Backends register under the
``seawall.backends`` entry-point group (the built-in ones too), each entry
pointing at a factory ``(settings) -> ModerationBackend``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol, runtime_checkable

from seawall.errors import ConfigurationError, ModelNotFoundError
from seawall.inputs import ModerationInput
from seawall.results import ModerationResult
from seawall.settings import Settings

ENTRY_POINT_GROUP = "seawall.backends"


@runtime_checkable
class ModerationBackend(Protocol):
    """Scores inputs on the 13 categories."""

    #: The name the backend is registered under (``local``, ``openai``, ...).
    name: str

    async def moderate(self, inputs: Sequence[ModerationInput]) -> list[ModerationResult]:
        """One result per input, in order. Raises :class:`seawall.errors.BackendError` on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


BackendFactory = Callable[[Settings], ModerationBackend]


@cache
def available_backends() -> dict[str, EntryPoint]:
    """Every registered backend by name (not yet imported: a broken plugin only fails when used).

    Read once per process: scanning installed packages' metadata costs milliseconds.
    """
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


def create_backend(name: str, settings: Settings) -> ModerationBackend:
    """Build the backend registered as ``name``."""
    registered = available_backends()
    if name not in registered:
        known = ", ".join(sorted(registered)) or "none (is seawall installed?)"
        raise ModelNotFoundError(f"unknown moderation backend {name!r}; known: {known}.", param="model")
    try:
        factory: BackendFactory = registered[name].load()
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"backend plugin {name!r} could not be loaded: {exc}") from exc
    backend = factory(settings)
    if not isinstance(backend, ModerationBackend):
        raise ConfigurationError(f"backend factory {name!r} did not return a ModerationBackend")
    return backend
