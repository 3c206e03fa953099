"""What the UI's page handlers raise to end a request early (the UI app turns them into pages)."""

from __future__ import annotations


class SignInNeeded(Exception):
    """Nobody is signed in: send them to the sign-in page."""


class Denied(Exception):
    """Refuse with an error page: 403 by default, or ``status`` (400, 404, ...)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


__all__ = ["Denied", "SignInNeeded"]
