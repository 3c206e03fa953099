"""``seawall accounts``: the web UI's local accounts (create, list, disable, enable, set-role,
set-password), and ``seawall tokens``: operator tokens for the review API and ``/metrics``
(create, list, revoke; stored hashed). They live in the store named in the settings, so every
replica sees them."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from seawall.cli_support import ConfigOption, configured_store, console, fail, out
from seawall.ui.accounts import AccountStore
from seawall.ui.settings import ROLES, UISettings

accounts_app = typer.Typer(
    help="Web UI accounts (sign-in at /ui/): create, list, disable, enable, set-role, set-password.",
    no_args_is_help=True,
)

NameArgument = Annotated[str, typer.Argument(help="The account's name (what its owner types to sign in).")]
StdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


@contextmanager
def _open(config: Path | None) -> Iterator[tuple[UISettings, AccountStore]]:
    with configured_store(config) as (settings, store):
        yield settings.ui, AccountStore(store)


def _read_password(from_stdin: bool, minimum: int) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < minimum:
        raise fail(f"the password must have at least {minimum} characters")
    return password


def _role(role: str) -> str:
    if role not in ROLES:
        raise fail(f"unknown role {role!r}; one of: {', '.join(ROLES)}")
    return role


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


@accounts_app.command("create")
def create(
    name: NameArgument,
    role: Annotated[str, typer.Option("--role", help="reviewer (read) or admin (also act on users).")],
    password_stdin: StdinOption = False,
    config: ConfigOption = None,
) -> None:
    """Create an account; the password is prompted for (twice), or read from stdin."""
    _role(role)
    with _open(config) as (ui, accounts):
        password = _read_password(password_stdin, ui.min_password_length)
        account = accounts.create(name, role, password)
        console.print(f"created {account.name} ({account.role})")


@accounts_app.command("list")
def list_accounts(config: ConfigOption = None) -> None:
    """List accounts (tab-separated when piped)."""
    with _open(config) as (_, accounts):
        rows = [
            [
                a.name,
                a.role,
                "enabled" if a.active else "disabled",
                _when(a.created_at),
                _when(a.last_login_at),
            ]
            for a in accounts.list_accounts()
        ]
    headers = ["name", "role", "state", "created", "last sign-in"]
    if out.is_terminal:
        table = Table(*headers)
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    for line in [headers, *rows]:
        print("\t".join(line))


@accounts_app.command("disable")
def disable(name: NameArgument, config: ConfigOption = None) -> None:
    """Disable an account and end its sessions at once."""
    with _open(config) as (_, accounts):
        account = accounts.disable(name)
        console.print(f"disabled {account.name}; its sessions are ended")


@accounts_app.command("enable")
def enable(name: NameArgument, config: ConfigOption = None) -> None:
    """Enable a disabled account again."""
    with _open(config) as (_, accounts):
        account = accounts.enable(name)
        console.print(f"enabled {account.name} ({account.role})")


@accounts_app.command("set-role")
def set_role(
    name: NameArgument,
    role: Annotated[str, typer.Argument(help="reviewer or admin.")],
    config: ConfigOption = None,
) -> None:
    """Change an account's role (its open sessions get the new role at their next request)."""
    _role(role)
    with _open(config) as (_, accounts):
        account = accounts.set_role(name, role)
        console.print(f"{account.name} is now {account.role}")


@accounts_app.command("set-password")
def set_password(
    name: NameArgument, password_stdin: StdinOption = False, config: ConfigOption = None
) -> None:
    """Set a new password (prompted, or from stdin); the account's sessions end."""
    with _open(config) as (ui, accounts):
        if accounts.get(name) is None:
            raise fail(f"no account named {name!r}")
        accounts.set_password(name, _read_password(password_stdin, ui.min_password_length))
        console.print(f"password of {name} changed; its sessions are ended")


# ---------------------------------------------------------------------------------- operator tokens

tokens_app = typer.Typer(
    help="Operator tokens (bearer tokens for the review API and /metrics): create, list, revoke.",
    no_args_is_help=True,
)


def _print(headers: list[str], rows: list[list[str]]) -> None:
    if out.is_terminal:
        table = Table(*headers)
        table.columns[0].no_wrap = True
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    for line in [headers, *rows]:
        print("\t".join(cell.replace("\t", " ") for cell in line))


@tokens_app.command("create")
def create_token(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. 'prometheus'.")],
    role: Annotated[str, typer.Option("--role", help="reviewer (the review API) or admin (also /metrics).")],
    by: Annotated[str | None, typer.Option("--by", help="Who makes it (kept); default: your login.")] = None,
    config: ConfigOption = None,
) -> None:
    """Make a token. It is printed once, on stdout; only its hash is stored."""
    _role(role)
    with _open(config) as (_, accounts):
        token, stored = accounts.create_token(name, role, by or getpass.getuser())
        console.print(f"created {stored.id} ({stored.name}, {stored.role}); the token (shown once):")
        out.print(token, markup=False, highlight=False)


@tokens_app.command("list")
def list_tokens(
    all_tokens: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    config: ConfigOption = None,
) -> None:
    """List tokens (never the tokens themselves: their first characters)."""
    with _open(config) as (_, accounts):
        rows = [
            [
                t.id,
                t.name,
                t.role,
                t.prefix + "…",
                t.created_by,
                _when(t.created_at),
                _when(t.last_used_at),
                _when(t.revoked_at),
            ]
            for t in accounts.list_tokens(include_revoked=all_tokens)
        ]
    _print(["id", "name", "role", "starts with", "made by", "created", "last used", "revoked"], rows)


@tokens_app.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_…), from `seawall tokens list`.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a token; every replica refuses it within seconds."""
    with _open(config) as (_, accounts):
        token = accounts.revoke_token(token_id)
        console.print(f"revoked {token.id} ({token.name})")


__all__ = ["accounts_app", "tokens_app"]
