"""Admin commands: ``seawall keys`` (app API keys), ``seawall users`` (the risk ledger) and
``seawall org`` (the organisation's roll-up). They work on the store named in the settings,
so on a shared PostgreSQL they act on every replica at once."""

from __future__ import annotations

import getpass
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from seawall.cli_support import ConfigOption, configured_store, console, fail, out
from seawall.clock import utc_now
from seawall.gateway.identity import generate_api_key, hash_api_key, load_or_create_secret, safety_identifier
from seawall.gateway.risk import LADDER, RiskLedger
from seawall.settings import Settings
from seawall.store.base import KEY_SCOPES, UserState

keys_app = typer.Typer(help="App API keys: create, list, revoke (stored hashed).", no_args_is_help=True)
users_app = typer.Typer(
    help="End users on the escalation ladder: list, show, block, clear.", no_args_is_help=True
)

TenantOption = Annotated[str | None, typer.Option(help="Tenant (app); default: gateway.tenant.")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who does this (audited); default: your login.")]
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: The longest block or window in hours (ten years): NaN, infinity and absurd spans are refused.
MAX_HOURS = 87_600.0


#: The longest key name or tenant a key is made with.
MAX_LABEL_CHARS = 200


def _label(value: str, what: str) -> str:
    """A key's name or tenant as given, refused when blank, too long or holding control characters:
    a tab or a line break would split the tab-separated lines that `keys list` prints for scripts."""
    if not value.strip():
        raise fail(f"the {what} must not be blank")
    if len(value) > MAX_LABEL_CHARS:
        raise fail(f"the {what} is {len(value)} characters; the limit is {MAX_LABEL_CHARS}")
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in value):
        raise fail(f"the {what} {value!r} holds a control character (a tab, a line break, ...)")
    return value


def _print_rows(headers: list[str], rows: list[list[str]]) -> None:
    """A table on a terminal; tab-separated lines (header first) when piped, for scripts."""
    if out.is_terminal:
        table = Table(*headers)
        table.columns[0].no_wrap = True  # ids are copied into other commands
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    for line in [headers, *rows]:
        print("\t".join(cell.replace("\t", " ") for cell in line))


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


# ---------------------------------------------------------------------------------- keys


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. 'support-bot prod'.")],
    tenant: TenantOption = None,
    scope: Annotated[
        str,
        typer.Option(
            help="all: every app route; feedback: user reports only (POST /v1/feedback), a key "
            "meant for a web page's report widget."
        ),
    ] = "all",
    config: ConfigOption = None,
) -> None:
    """Make a key. It is printed once, on stdout; only its hash is stored."""
    if scope not in KEY_SCOPES:
        raise fail(f"--scope must be one of {', '.join(KEY_SCOPES)}, not {scope!r}")
    name = _label(name, "key name")
    if tenant is not None:
        tenant = _label(tenant, "tenant")
    with configured_store(config) as (settings, store):
        key = generate_api_key()
        stored = store.create_key(
            name,
            tenant or settings.gateway.tenant,
            hash_api_key(key),
            key[:8],
            scope=scope,  # type: ignore[arg-type]  # checked against KEY_SCOPES above
        )
        console.print(
            f"created {stored.id} ({stored.name}, tenant {stored.tenant}, scope {stored.scope}); "
            "the key (shown once):"
        )
        out.print(key, markup=False, highlight=False)


@keys_app.command("list")
def list_keys(
    tenant: TenantOption = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    config: ConfigOption = None,
) -> None:
    """List keys (never the keys themselves: their first characters)."""
    with configured_store(config) as (_, store):
        rows = [
            [
                key.id,
                key.name,
                key.tenant,
                key.scope,
                key.prefix + "…",
                _when(key.created_at),
                _when(key.last_used_at),
                _when(key.revoked_at),
            ]
            for key in store.list_keys(tenant, include_revoked=all_keys)
        ]
        _print_rows(["id", "name", "tenant", "scope", "starts with", "created", "last used", "revoked"], rows)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…), from `seawall keys list`.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key; every replica refuses it within seconds."""
    with configured_store(config) as (_, store):
        key = store.revoke_key(key_id)
        console.print(f"revoked {key.id} ({key.name}) at {_when(key.revoked_at)}")


# ---------------------------------------------------------------------------------- users


def _safety_id(settings: Settings, tenant: str, who: str, raw: bool) -> str:
    """The safety identifier: given as such, or computed from a raw user id with the server secret."""
    if raw:
        secret = load_or_create_secret(settings.gateway.secret_file.expanduser())
        return safety_identifier(secret, tenant, who)
    if not _HEX64.fullmatch(who):
        raise fail(f"{who!r} is not a safety identifier (64 hex characters); pass --raw for a user id")
    return who


@contextmanager
def _user(
    config: Path | None, tenant: str | None, who: str, raw: bool
) -> Iterator[tuple[RiskLedger, str, str]]:
    """The ledger, the tenant and the user's safety identifier, for the users commands."""
    with configured_store(config) as (settings, store):
        tenant = tenant or settings.gateway.tenant
        yield RiskLedger(store, settings.gateway.risk), tenant, _safety_id(settings, tenant, who, raw)


WhoArgument = Annotated[str, typer.Argument(help="Safety identifier (or, with --raw, the app's user id).")]
RawOption = Annotated[bool, typer.Option("--raw", help="WHO is the app's own user id; hash it first.")]


def _print_state(state: UserState | None, safety_id: str) -> None:
    if state is None:
        out.print(f"{safety_id}: ok (no escalation on record)")
        return
    out.print(
        f"{safety_id}: {state.status} until {_when(state.until) if state.until else 'cleared'}"
        f" — {state.reason} (by {state.updated_by}, {_when(state.updated_at)})"
    )


@users_app.command("list")
def list_users(
    status: Annotated[str | None, typer.Option(help="Only users in this state (warned, blocked…).")] = None,
    hours: Annotated[
        float, typer.Option(min=0.001, max=MAX_HOURS, help="Count risk events of the last N hours.")
    ] = 24,
    limit: Annotated[int, typer.Option(help="Most users shown.")] = 50,
    tenant: TenantOption = None,
    config: ConfigOption = None,
) -> None:
    """Users with risk events or an escalation, most high-risk events first, with each one's trust
    tier (of their latest request that had one; '-' without tiers in the policy)."""
    with configured_store(config) as (settings, store):
        since = utc_now() - timedelta(hours=hours)
        wanted = next((s for s in LADDER if s == status), None)
        if status is not None and wanted is None:
            raise fail(f"unknown status {status!r}; one of: {', '.join(LADDER)}")
        tenant = tenant or settings.gateway.tenant
        rows = store.list_users(tenant, since=since, status=wanted, limit=limit)
        tiers = store.user_tiers(tenant, [row.safety_id for row in rows])
        _print_rows(
            ["safety identifier", "tier", "status", "until", "high", "medium", "last event"],
            [
                [
                    row.safety_id,
                    tiers.get(row.safety_id, "-"),
                    row.state.status if row.state else "ok",
                    _when(row.state.until if row.state else None),
                    str(row.high),
                    str(row.medium),
                    _when(row.last_event_at),
                ]
                for row in rows
            ],
        )


@users_app.command("show")
def show_user(
    who: WhoArgument, raw: RawOption = False, tenant: TenantOption = None, config: ConfigOption = None
) -> None:
    """One user's state, risk points and trust tier."""
    with configured_store(config) as (settings, store):
        tenant = tenant or settings.gateway.tenant
        safety_id = _safety_id(settings, tenant, who, raw)
        ledger = RiskLedger(store, settings.gateway.risk)
        _print_state(store.get_user(tenant, safety_id), safety_id)
        points, high, medium = ledger.points(tenant, safety_id)
        out.print(f"risk points: {points:g} ({high} high, {medium} medium in the window)")
        tier = store.user_tiers(tenant, [safety_id]).get(safety_id)
        out.print(f"tier: {tier or '- (no request with a tier on record)'}")


@users_app.command("clear")
def clear_user(
    who: WhoArgument,
    reason: Annotated[str, typer.Option(help="Why (kept with the state).")] = "cleared by an admin",
    raw: RawOption = False,
    by: ByOption = None,
    tenant: TenantOption = None,
    config: ConfigOption = None,
) -> None:
    """Unblock a user (any state back to ok) and reset their risk points."""
    with _user(config, tenant, who, raw) as (ledger, tenant, safety_id):
        _print_state(ledger.clear(tenant, safety_id, by or getpass.getuser(), reason), safety_id)


@users_app.command("block")
def block_user(
    who: WhoArgument,
    reason: Annotated[str, typer.Option(help="Why (shown to the user in the 403).")],
    hours: Annotated[
        float | None,
        typer.Option(min=0.001, max=MAX_HOURS, help="Block for N hours; without it, until cleared."),
    ] = None,
    raw: RawOption = False,
    by: ByOption = None,
    tenant: TenantOption = None,
    config: ConfigOption = None,
) -> None:
    """Block a user by hand, for some hours or until cleared."""
    with _user(config, tenant, who, raw) as (ledger, tenant, safety_id):
        duration = None if hours is None else max(1, round(hours * 3600))
        _print_state(ledger.block(tenant, safety_id, by or getpass.getuser(), reason, duration), safety_id)


# ---------------------------------------------------------------------------------- org


def org(
    hours: Annotated[float, typer.Option(min=0.001, max=MAX_HOURS, help="The window, in hours.")] = 24,
    tenant: TenantOption = None,
    config: ConfigOption = None,
) -> None:
    """The organisation's roll-up: risk events, users escalated, answers filtered per model, and
    how close the last day came to the high-risk volume you treat as your provider's threshold."""
    with configured_store(config) as (settings, store):
        tenant = tenant or settings.gateway.tenant
        since = utc_now() - timedelta(hours=hours)
        summary = store.org_summary(tenant, since)
        risk = settings.gateway.risk
        high = summary.events.get("high", 0)
        budget = risk.org_high_events_per_day * hours / 24
        rows = [
            ["window", f"last {hours:g} h (since {_when(since)})"],
            ["high-risk requests", str(high)],
            ["medium-risk requests", str(summary.events.get("medium", 0))],
            ["users with high-risk requests", str(summary.users_with_high)],
            *([f"users {status}", str(count)] for status, count in sorted(summary.users_by_status.items())),
            # Answers output moderation stopped: the model's doing, so no user's ledger is charged.
            ["answers filtered (not charged to users)", str(sum(summary.filtered_answers.values()))],
            *(
                [f"answers filtered, model {model}", str(count)]
                for model, count in sorted(summary.filtered_answers.items())
            ),
            [
                "share of the provider threshold",
                f"{high / budget:.1%} of {budget:g} high-risk requests "
                "(gateway.risk.org_high_events_per_day)",
            ],
        ]
        _print_rows(["figure", "value"], rows)


__all__ = ["keys_app", "org", "users_app"]
