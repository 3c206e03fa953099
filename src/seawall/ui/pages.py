"""What the UI's page handlers raise to end a request early (the UI app turns them into pages)."""

from __future__ import annotations

from typing import Any


class SignInNeeded(Exception):
    """Nobody is signed in: send them to the sign-in page."""


class Denied(Exception):
    """Refuse with an error page: 403 by default, or ``status`` (400, 404, ...)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def form_field(form: Any, name: str, *, limit: int, required: bool = False) -> str:
    """A submitted form field, stripped; 400 when required and empty, or longer than ``limit``."""
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise Denied(f"{name} is required", 400)
    if len(text) > limit:
        raise Denied(f"{name} is longer than {limit:,} characters", 400)
    return text


__all__ = ["Denied", "SignInNeeded", "form_field"]
