"""The bearer token of an ``Authorization`` header: one reading for the app keys' check
(:mod:`seawall.gateway.access`) and the review routes' staff tokens (:mod:`seawall.review.routes`),
which must not import each other."""

from __future__ import annotations


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


__all__ = ["bearer_token"]
