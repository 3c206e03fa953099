"""``seawall db``: the store's schema from the command line (``upgrade``, ``current``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from seawall.cli_support import ConfigOption, console, fail
from seawall.errors import SeawallError
from seawall.settings import load_settings
from seawall.store.migrate import current_revision, head_revision, upgrade
from seawall.store.sql import create_folder, make_engine, normalise_url

app = typer.Typer(help="The store's database schema (Alembic migrations).", no_args_is_help=True)


@app.command("upgrade")
def upgrade_command(config: ConfigOption = None) -> None:
    """Apply pending migrations to the configured store (store.url), creating its tables if needed."""
    try:
        settings = load_settings(config).store
        url = normalise_url(settings.url.get_secret_value())
        create_folder(url)
        engine = make_engine(url, pool_size=1)
        try:
            before = current_revision(engine)
            after = upgrade(engine)
        finally:
            engine.dispose()
    except SeawallError as exc:
        raise fail(exc.message) from exc
    where = escape(url.render_as_string(hide_password=True))
    if before == after:
        console.print(f"{where}: already at revision {after} (up to date)", soft_wrap=True)
    else:
        console.print(f"{where}: upgraded from {before or 'none'} to {after}", soft_wrap=True)


@app.command("current")
def current_command(config: ConfigOption = None) -> None:
    """Print the store's schema revision and the one this seawall needs; exit 1 if they differ."""
    try:
        settings = load_settings(config).store
        url = normalise_url(settings.url.get_secret_value())
        database = url.database if url.get_backend_name() == "sqlite" else None
        if database and database != ":memory:" and not Path(database).exists():
            current = None  # a read-only command: do not create the file just to look inside
        else:
            engine = make_engine(url, pool_size=1)
            try:
                current = current_revision(engine)
            finally:
                engine.dispose()
    except SeawallError as exc:
        raise fail(exc.message) from exc
    head = head_revision()
    where = escape(url.render_as_string(hide_password=True))
    if current == head:
        console.print(f"{where}: revision {current} (up to date)", soft_wrap=True)
        return
    console.print(
        f"{where}: revision {current or 'none'}, this seawall needs {head}: run `seawall db upgrade`",
        soft_wrap=True,
    )
    raise typer.Exit(1)


__all__ = ["app"]
