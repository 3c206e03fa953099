"""What every ``seawall`` command module shares: the ``--config`` option, the error exit, and
the store named in the settings. Kept apart from :mod:`seawall.cli`, which imports the
command modules (so they cannot import it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from seawall.errors import SeawallError
from seawall.settings import Settings, load_settings

if TYPE_CHECKING:
    from seawall.store.base import Store

#: Diagnostics go to stderr, so stdout stays for results.
console = Console(stderr=True)
#: Results (tables, keys, verdicts) go to stdout, where `> file` and pipes keep them.
out = Console()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML settings file (else $SEAWALL_CONFIG).")
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; raise the returned exit (status 2: bad input or setup)."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def configured_store(config: Path | None) -> Iterator[tuple[Settings, Store]]:
    """The settings and their store, closed at the end; seawall's errors become a clean exit."""
    from seawall.store import open_store  # SQLAlchemy loads only for the commands that use it

    try:
        settings = load_settings(config)
        store = open_store(settings.store)
    except SeawallError as exc:
        raise fail(exc.message) from exc
    try:
        yield settings, store
    except SeawallError as exc:
        raise fail(exc.message) from exc
    finally:
        store.close()


__all__ = ["ConfigOption", "configured_store", "console", "fail"]
