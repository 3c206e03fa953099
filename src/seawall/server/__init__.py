"""The HTTP server (ASGI app factory)."""

from seawall.server.app import create_app

__all__ = ["create_app"]
