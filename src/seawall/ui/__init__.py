"""seawall's web UI for operators and reviewers, served at ``/ui/``.

:func:`add_ui_routes` mounts it on the seawall app; :mod:`seawall.ui.cli` manages its local
accounts; :class:`UISettings` is its part of the settings (``ui``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seawall.ui.settings import OIDCSettings, Role, UISettings

if TYPE_CHECKING:
    from seawall.ui.routes import add_ui_routes


def __getattr__(name: str) -> Any:
    if name == "add_ui_routes":  # Jinja2, Authlib and SQLAlchemy load only when the UI is mounted
        from seawall.ui.routes import add_ui_routes

        return add_ui_routes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["OIDCSettings", "Role", "UISettings", "add_ui_routes"]
