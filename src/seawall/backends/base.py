"""The moderation backend protocol and the registry that finds backends by name.

A backend scores a *batch* of inputs in one call. Backends register under the
``seawall.backends`` entry-point group (the built-in ones too), each entry
pointing at a factory ``(settings) -> ModerationBackend`` (or ``(settings, config=...)`` for a
plugin with a ``settings_model``: see :mod:`seawall.plugins`), or at a backend itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from seawall.errors import ModelNotFoundError
from seawall.inputs import ModerationInput
from seawall.plugins import BACKENDS, PluginGroup, load_group
from seawall.results import ModerationResult
from seawall.settings import Settings

ENTRY_POINT_GROUP = BACKENDS


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


def available_backends() -> PluginGroup[ModerationBackend]:
    """Every registered backend by name (not yet imported: a broken plugin only fails when used)."""
    return load_group(ENTRY_POINT_GROUP, ModerationBackend)


def create_backend(name: str, settings: Settings) -> ModerationBackend:
    """Build the backend registered as ``name``: its factory is called with the settings (and
    ``config=``, its ``plugins.<name>`` section, when the plugin declares a ``settings_model``)."""
    registered = available_backends()
    if name not in registered:
        known = ", ".join(sorted(registered)) or "none (is seawall installed?)"
        raise ModelNotFoundError(f"unknown moderation backend {name!r}; known: {known}.", param="model")
    return registered[name].create(settings, settings=settings)
