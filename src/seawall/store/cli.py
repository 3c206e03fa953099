"""``seawall db``: the store's schema from the command line (``upgrade``, ``current``);
``seawall audit verify``: the audit trail's hash chain, in a file or the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from seawall.cli_support import ConfigOption, console, fail, out
from seawall.errors import SeawallError
from seawall.settings import load_settings
from seawall.store.chain import Verified, read_jsonl, verify
from seawall.store.migrate import current_revision, head_revision, upgrade
from seawall.store.sql import create_folder, make_engine, normalise_url

app = typer.Typer(help="The store's database schema (Alembic migrations).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail (hash-chained per tenant).", no_args_is_help=True)


def _in_memory(url: str) -> bool:
    """Whether ``url`` is the in-memory store, which has no schema (said on the console)."""
    from seawall.store import is_memory_url

    if is_memory_url(url):
        console.print("memory://: the in-memory store has no schema to migrate", soft_wrap=True)
        return True
    return False


@app.command("upgrade")
def upgrade_command(config: ConfigOption = None) -> None:
    """Apply pending migrations to the configured store (store.url), creating its tables if needed."""
    try:
        settings = load_settings(config).store
        if _in_memory(settings.url.get_secret_value()):
            return
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
        out.print(f"{where}: already at revision {after} (up to date)", soft_wrap=True)
    else:
        out.print(f"{where}: upgraded from {before or 'none'} to {after}", soft_wrap=True)


@app.command("current")
def current_command(config: ConfigOption = None) -> None:
    """Print the store's schema revision and the one this seawall needs; exit 1 if they differ."""
    try:
        settings = load_settings(config).store
        if _in_memory(settings.url.get_secret_value()):
            return
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
        out.print(f"{where}: revision {current} (up to date)", soft_wrap=True)
        return
    out.print(
        f"{where}: revision {current or 'none'}, this seawall needs {head}: run `seawall db upgrade`",
        soft_wrap=True,
    )
    raise typer.Exit(1)


@audit_app.command("verify")
def verify_command(
    source: Annotated[
        str | None,
        typer.Argument(
            help="'store' for the configured store; else an audit file (JSONL). Default: gateway.audit_file "
            "when it is set, else the store"
        ),
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="An audit file (JSONL) to check.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Check only this tenant's chain (store only).")] = None,
    continued: Annotated[
        bool,
        typer.Option(help="Accept a chain that starts mid-way (a rotated file, a pruned store)."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Check the audit trail's hash chain: report the first broken link (record number, request id
    and why) and exit 1, or say it is intact and exit 0."""
    try:
        settings = load_settings(config)
        if source == "store" and file is not None:
            raise fail("give 'store' or --file, not both")
        if file is None and source not in (None, "store"):
            file = Path(source)
        if file is None and source is None:
            file = settings.gateway.audit_file
        if file is not None and tenant is not None:
            raise fail("--tenant checks one tenant's chain in the store; an audit file is checked whole")
        if file is not None:
            path = file.expanduser()
            where = str(path)
            try:
                with path.open(encoding="utf-8", errors="replace") as lines:
                    result = verify(read_jsonl(lines), continued=continued)
            except OSError as exc:
                raise fail(f"cannot read the audit file {path}: {exc.strerror or exc}") from exc
        else:
            from seawall.store import describe_url, open_store

            store = open_store(settings.store)
            try:
                where = describe_url(settings.store.url.get_secret_value())
                result = verify(store.audit_chain(tenant), continued=continued)
            finally:
                store.close()
    except SeawallError as exc:
        raise fail(exc.message) from exc
    _report(escape(where), result)


def _report(where: str, result: Verified) -> None:
    if result.broken is None:
        out.print(f"{where}: intact ({result.records} records, {result.tenants} tenants)", soft_wrap=True)
        return
    out.print(f"{where}: broken at {escape(str(result.broken))}", soft_wrap=True)
    raise typer.Exit(1)


__all__ = ["app", "audit_app"]
