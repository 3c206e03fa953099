"""Run the ASGI app with uvicorn for ``seawall serve``, and say where it listens once it does.

With ``server.port: 0`` the OS picks a free port when uvicorn binds, so nobody knows it in advance:
:func:`serve_app` names the bound port in the serving line and, when asked, writes it to a port file
once the server accepts requests. A script, a supervisor or a test starts ``seawall serve --port 0
--port-file PATH`` and reads the port from the file, with no window in which another process could
take a port picked beforehand.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from seawall.errors import ConfigurationError
from seawall.settings import Settings

#: uvicorn's exit status when the server could not start (its ``STARTUP_FAILURE``).
STARTUP_FAILURE = 3


def check_port_file(path: Path) -> None:
    """Refuse a port file that cannot be written, before anything starts; remove a stale one (left
    by a run that was killed), so that whoever waits for the file never reads an old port."""
    if not path.parent.is_dir():
        raise ConfigurationError(f"--port-file: the folder {path.parent} does not exist")
    if path.is_dir():
        raise ConfigurationError(f"--port-file: {path} is a folder")
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"--port-file: cannot replace {path}: {exc.strerror}") from exc


def _write_port_file(path: Path, port: int) -> None:
    """Write ``port`` and a newline to ``path`` at once (a temporary file renamed over it): a reader
    sees no file or the whole number, never a part of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(f"{port}\n", encoding="ascii")
    os.replace(partial, path)


def bound_port(listeners: Sequence[socket.socket]) -> int:
    """The TCP port of the first listening socket (the one the serving line names)."""
    return int(listeners[0].getsockname()[1])


class _Server(uvicorn.Server):
    """uvicorn's server, which calls ``on_listening(port)`` once it accepts requests and removes
    the port file when it stops."""

    def __init__(
        self, config: uvicorn.Config, on_listening: Callable[[int], None], port_file: Path | None
    ) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._port_file = port_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = bound_port([sock for server in self.servers for sock in server.sockets])
            if self._port_file is not None:
                _write_port_file(self._port_file, port)
            self._on_listening(port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._port_file is not None:
            self._port_file.unlink(missing_ok=True)  # a stopped server's port is nobody's to use
        await super().shutdown(sockets)


def serve_app(
    application: Any,
    settings: Settings,
    *,
    on_listening: Callable[[int], None],
    port_file: Path | None = None,
) -> int:
    """Serve ``application`` on ``settings.server`` until a signal stops it; the exit status
    (0, or :data:`STARTUP_FAILURE` when it could not start: the port taken, start-up failed)."""
    config = uvicorn.Config(
        application,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=settings.server.log_level == "debug",
    )
    server = _Server(config, on_listening, port_file)
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl+C during shutdown
        server.run()
    return 0 if server.started else STARTUP_FAILURE
