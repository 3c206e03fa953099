"""The web UI at ``/ui/``: sign-in, dashboard, users, audit search, accounts.

:func:`add_ui_routes` mounts a small Starlette app of its own on the seawall app, with its own
cookie session, error pages and security headers, so nothing of it touches the ``/v1`` routes.
Pages are rendered on the server (Jinja2); htmx updates a user's row after an admin action,
uPlot draws the dashboard's charts. Every route checks the role:

=================================  =========  ==========================================
route                              role       what
=================================  =========  ==========================================
``GET /ui/``                       reviewer   dashboard: requests, risk, blocks, flag rate
``GET /ui/users``                  reviewer   users by safety identifier, state, risk counts
``POST /ui/users/block|clear``     admin      block or unblock (RiskLedger), CSRF-checked
``GET /ui/audit``                  reviewer   audit search (outcome, API, tier, shadow, safety id, time)
``GET /ui/audit/{request_id}``     reviewer   one audit record
``GET /ui/accounts``               admin      local accounts and the OIDC allow-list
``/ui/review…``, ``/ui/reports…``  reviewer   the review desk (:mod:`seawall.ui.desk`)
``GET /ui/widget.js``              anyone     the embeddable "Report this answer" widget
``GET|POST /ui/login``             anyone     password sign-in; ``/ui/login/oidc`` for OIDC
``POST /ui/logout``                signed in  sign out
=================================  =========  ==========================================

Anonymous requests are sent to the sign-in page; a reviewer asking for an admin page gets 403.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

from fastapi import FastAPI
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seawall.errors import InvalidRequestError, NotFoundError, SeawallError
from seawall.gateway.risk import LADDER, RiskLedger
from seawall.review.service import ReviewService
from seawall.secret import load_or_create_secret
from seawall.settings import Settings
from seawall.store.base import (
    AUDIT_APIS,
    AUDIT_OUTCOMES,
    REPORT_STATUSES,
    RISK_LEVELS,
    AuditQuery,
    OperatorToken,
    Store,
    UserState,
    UserSummary,
)
from seawall.ui import queries
from seawall.ui.accounts import AccountStore, Session
from seawall.ui.auth import (
    CSRF_FIELD,
    NEXT_URL,
    SECRET_BYTES,
    SESSION_TOKEN,
    CookieSessions,
    OIDCRefused,
    OIDCSignIn,
    OIDCUnavailable,
    StaffSessions,
    current_session,
    login_csrf,
    sign_in,
    submitted_csrf,
    tokens_match,
)
from seawall.ui.desk import Desk, age, duration, question
from seawall.ui.pages import Denied, SignInNeeded, form_field
from seawall.ui.settings import ROLES, Role, UISettings

log = logging.getLogger("seawall.ui")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
#: Longest text accepted in a form field (reasons, identifiers).
MAX_FIELD = 500
#: The embeddable report widget (served at /ui/widget.js, cacheable, for other origins' pages).
WIDGET = STATIC / "widget.js"
WIDGET_MAX_AGE_S = 3600

#: Security headers of every UI response. Scripts and styles come from /ui/static only.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


class SecurityHeaders:
    """Pure-ASGI middleware: security headers everywhere, ``no-store`` on pages (not static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "")
        static = scope["path"].startswith(f"{root}/static/") or scope["path"] == f"{root}/widget.js"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _StoreHolder:
    """The store the UI reads: the caller's; else the app's (the gateway's, ``shared``); else one
    the UI opens at start-up (and closes)."""

    def __init__(
        self, settings: Settings, store: Store | None, shared: Callable[[], Store | None] | None = None
    ) -> None:
        self.settings = settings
        self.given = store
        self.store = store
        self.shared = shared
        self.owned = False
        self.on_close: list[Callable[[], None]] = []

    def get(self) -> Store:
        if self.store is None:
            found = self.shared() if self.shared is not None else None
            if found is not None:
                self.store = found
            else:
                from seawall.store import open_store

                self.store = open_store(self.settings.store)
                self.owned = True
        return self.store

    def close(self) -> None:
        for callback in self.on_close:
            callback()
        if self.owned and self.store is not None:
            self.store.close()
        self.store = self.given  # a shared store is looked up again at the next start
        self.owned = False


def _when(value: Any, seconds: bool = False) -> str:
    """A time as 'YYYY-MM-DD HH:MM' UTC (ISO strings and datetimes)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return str(value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"))
    return str(value)


def _parse_time(value: str | None, name: str) -> datetime | None:
    """A ``datetime-local`` form value (or ISO 8601), taken as UTC when it has no offset."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Denied(f"{name}: {value[:40]!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)", 400) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hours(value: str) -> float:
    """A number of hours from a form or a query: more than 0, at most 366 days; else 400."""
    try:
        hours = float(value)
    except ValueError:
        raise Denied("hours must be a number", 400) from None
    if not 0 < hours <= 24 * 366:
        raise Denied("hours must be between 0 and 8784", 400)
    return hours


#: Sign-in attempts of an account from one address (in the window) checked without a delay.
FREE_ATTEMPTS = 3


def login_delay(earlier: float, most: float) -> float:
    """Seconds to wait before checking a sign-in attempt, after ``earlier`` attempts of the same
    account from the same address in the window: none for the first :data:`FREE_ATTEMPTS`, then
    1, 2, 4 ... seconds, at most ``most``."""
    extra = math.floor(earlier + 1e-9) - FREE_ATTEMPTS
    return 0.0 if extra < 0 else float(min(most, 2.0**extra))


def _safe_next(value: str | None, base: str) -> str:
    """Where to go after signing in: only a path inside the UI (no open redirect)."""
    if value and value.startswith(base + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return base + "/"


class UI:
    """The UI's routes and what they share; :func:`add_ui_routes` builds and mounts it."""

    def __init__(self, settings: Settings, ui: UISettings, holder: _StoreHolder) -> None:
        self.settings = settings
        self.ui = ui
        self.holder = holder
        self._accounts: AccountStore | None = None
        self.oidc = OIDCSignIn(ui.oidc) if ui.oidc is not None else None
        self.dashboard_cache = queries.DashboardCache()
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["when_epoch"] = lambda seconds: _when(datetime.fromtimestamp(seconds, UTC))
        self.env.filters["categories"] = queries.flagged_categories
        self.env.filters["shadow"] = queries.shadow_decisions
        self.env.filters["age"] = age
        self.env.filters["duration"] = duration
        self.env.filters["question"] = question
        self.desk: Desk | None = None
        #: The signed-in session of the server's API routes (set by :func:`build_ui_app`).
        self.staff_sessions: StaffSessions | None = None
        from seawall import __version__

        self.env.globals["version"] = __version__

    # ------------------------------------------------------------------ plumbing

    @property
    def store(self) -> Store:
        return self.holder.get()

    @property
    def accounts(self) -> AccountStore:
        if self._accounts is None or self._accounts.records is not self.store:
            self._accounts = AccountStore(self.store)
        return self._accounts

    def ledger(self) -> RiskLedger:
        return RiskLedger(self.store, self.settings.gateway.risk)

    def render(
        self,
        request: Request,
        template: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        session: Session | None = getattr(request.state, "session", None)
        context.setdefault("page", "")
        html = self.env.get_template(template).render(
            base=base,
            session=session,
            csrf=session.csrf_token if session is not None else "",
            oidc_name=self.ui.oidc.name if self.ui.oidc is not None else None,
            **context,
        )
        return HTMLResponse(html, status_code=status_code, headers=headers)

    async def require(self, request: Request, role: Role = "reviewer") -> Session:
        """The signed-in session with at least ``role``; else a redirect to sign in, or 403."""
        session = await run_in_threadpool(current_session, request, self.accounts, self.ui)
        if session is None:
            raise SignInNeeded()
        request.state.session = session
        if role == "admin" and not session.is_admin:
            raise Denied("This page is for administrators; you are signed in as a reviewer.")
        return session

    async def check_csrf(self, request: Request, session: Session) -> None:
        if not tokens_match(session.csrf_token, await submitted_csrf(request)):
            raise Denied("The form's security token is missing or stale: reload the page and try again.")

    # ------------------------------------------------------------------ errors

    async def on_sign_in_needed(self, request: Request, exc: Exception) -> Response:
        base = request.scope.get("root_path", "")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = f"{base}/login?" + urlencode({NEXT_URL: target})
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"hx-redirect": location})
        return RedirectResponse(location, status_code=303)

    async def on_denied(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Denied)
        titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 429: "Too many attempts"}
        return self.render(
            request, "error.html", exc.status, title=titles.get(exc.status, "Error"), message=exc.message
        )

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return await self.on_denied(request, Denied(message, exc.status_code))

    async def on_seawall_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SeawallError)
        if exc.status_code >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
        return self.render(request, "error.html", exc.status_code, title="Error", message=exc.message)

    # ------------------------------------------------------------------ sign-in

    async def login_page(self, request: Request) -> Response:
        base = request.scope.get("root_path", "")
        # A fresh server has no account yet: say how to make the first one.
        first_run = self.ui.oidc is None and not await run_in_threadpool(self.accounts.list_accounts)
        return self.render(
            request,
            "login.html",
            login_csrf=login_csrf(request),
            next=_safe_next(request.query_params.get(NEXT_URL), base),
            error=request.query_params.get("error"),
            name="",
            first_run=first_run,
        )

    async def login(self, request: Request) -> Response:
        base = request.scope.get("root_path", "")
        form = await request.form()
        name = form_field(form, "name", limit=MAX_FIELD)
        password = form.get("password")
        password = password if isinstance(password, str) else ""
        next_url = _safe_next(form_field(form, NEXT_URL, limit=MAX_FIELD), base)

        def again(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
            return self.render(
                request,
                "login.html",
                status,
                headers,
                login_csrf=login_csrf(request),
                next=next_url,
                error=error,
                name=name,
                first_run=False,
            )

        offered = form_field(form, CSRF_FIELD, limit=MAX_FIELD)
        if not tokens_match(request.session.get("login_csrf"), offered):
            return again("The sign-in form expired. Please try again.", 403)
        if not name or not password:
            return again("Enter your account name and password.", 400)
        # Counted per account name and source address: a stranger's guesses never lock the owner
        # out from another address. Each attempt past the first few waits longer before it is checked.
        address = request.client.host if request.client is not None else "-"
        hit = await run_in_threadpool(
            self.store.hit,
            f"ui-login:{name.lower()}:{address}",
            self.ui.login_attempts,
            self.ui.login_window_s,
            datetime.now(UTC),
        )
        if not hit.allowed:
            retry = max(1, math.ceil(hit.retry_after_s))
            return again(
                f"Too many sign-in attempts for this account from your address. Try again in {retry} s.",
                429,
                {"retry-after": str(retry)},
            )
        delay = login_delay(hit.count - 1, self.ui.login_max_delay_s)
        if delay > 0:
            await asyncio.sleep(delay)
        account = await run_in_threadpool(self.accounts.verify, name, password[:1024])
        if account is None:
            log.info("UI sign-in refused for %r", name)
            return again("Wrong account name or password, or the account is disabled.", 401)
        token, _ = await run_in_threadpool(
            self.accounts.start_session,
            account.name,
            "local",
            account.role,
            account.name,
            max_age_s=self.ui.session_max_age_s,
        )
        sign_in(request, token)
        log.info("UI sign-in: %s (%s)", account.name, account.role)
        return RedirectResponse(next_url, status_code=303)

    def _redirect_uri(self, request: Request) -> str:
        base = request.scope.get("root_path", "")
        if self.ui.public_url:
            return f"{self.ui.public_url}/ui/auth/callback"
        return str(request.base_url).rstrip("/") + f"{base}/auth/callback"

    async def oidc_start(self, request: Request) -> Response:
        if self.oidc is None:
            raise HTTPException(404)
        base = request.scope.get("root_path", "")
        request.session[NEXT_URL] = _safe_next(request.query_params.get(NEXT_URL), base)
        hint = request.query_params.get("login_hint")
        try:
            response: Response = await self.oidc.start(request, self._redirect_uri(request), hint)
        except Exception as exc:  # discovery failed: the provider is down or misconfigured
            log.warning("OIDC sign-in could not start: %s", exc)
            raise Denied("The sign-in provider cannot be reached. Try again later.", 503) from exc
        return response

    async def oidc_callback(self, request: Request) -> Response:
        if self.oidc is None:
            raise HTTPException(404)
        base = request.scope.get("root_path", "")
        try:
            email, name, role = await self.oidc.finish(request)
        except OIDCUnavailable as exc:  # the provider cannot be used: not this person's fault
            log.warning("UI OIDC sign-in failed: %s", exc)
            raise Denied(f"You could not be signed in: {exc}.", 503) from exc
        except OIDCRefused as exc:
            log.info("UI OIDC sign-in refused: %s", exc)
            raise Denied(f"You could not be signed in: {exc}.", 403) from exc
        next_url = _safe_next(request.session.get(NEXT_URL), base)
        token, _ = await run_in_threadpool(
            self.accounts.start_session, email, "oidc", role, name, max_age_s=self.ui.session_max_age_s
        )
        sign_in(request, token)
        log.info("UI sign-in (OIDC): %s (%s)", email, role)
        return RedirectResponse(next_url, status_code=303)

    async def logout(self, request: Request) -> Response:
        base = request.scope.get("root_path", "")
        session = await self.require(request)
        await self.check_csrf(request, session)
        token = request.session.get(SESSION_TOKEN)
        if isinstance(token, str):
            await run_in_threadpool(self.accounts.end_session, token)
        request.session.clear()
        return RedirectResponse(f"{base}/login", status_code=303)

    # ------------------------------------------------------------------ pages

    async def dashboard(self, request: Request) -> Response:
        await self.require(request)
        range_name = request.query_params.get("range", "24h")
        if range_name not in queries.RANGES:
            raise Denied(f"range must be one of {', '.join(queries.RANGES)}", 400)
        tenant = request.query_params.get("tenant") or None
        data = await run_in_threadpool(
            queries.dashboard, self.store, range_name, tenant=tenant, cache=self.dashboard_cache
        )
        tenants = await run_in_threadpool(self.store.audit_tenants)
        desk = await run_in_threadpool(queries.desk_figures, self.store, range_name, tenant=tenant)
        return self.render(
            request,
            "dashboard.html",
            page="dashboard",
            data=data,
            desk=desk,
            chart={**data.to_json(), **desk.to_json()},
            report_statuses=REPORT_STATUSES,
            ranges=list(queries.RANGES),
            range=range_name,
            tenant=tenant or "",
            tenants=tenants,
            block_groups=list(queries.BLOCK_GROUPS),
            risk_levels=RISK_LEVELS,
        )

    def _user_row(self, tenant: str, safety_id: str, hours: float) -> UserSummary:
        since = datetime.now(UTC) - timedelta(hours=hours)
        state = self.store.get_user(tenant, safety_id)
        high = self.store.count_events(tenant, safety_id, "high", since)
        medium = self.store.count_events(tenant, safety_id, "medium", since)
        return UserSummary(
            state, tenant, safety_id, high, medium, None
        )  # the store keeps no last-event lookup

    async def users(self, request: Request) -> Response:
        session = await self.require(request)
        params = request.query_params
        tenant = params.get("tenant") or self.settings.gateway.tenant
        status = params.get("status") or None
        if status is not None and status not in LADDER:
            raise Denied(f"status must be one of {', '.join(LADDER)}", 400)
        hours = _hours(params.get("hours") or "24")
        lookup = (params.get("q") or "").strip()[:200]
        since = datetime.now(UTC) - timedelta(hours=hours)
        if lookup:
            rows = [await run_in_threadpool(self._user_row, tenant, lookup, hours)]
        else:
            rows = await run_in_threadpool(
                lambda: self.store.list_users(tenant, since=since, status=cast(Any, status), limit=200)
            )
        ids = [row.safety_id for row in rows]
        tiers = await run_in_threadpool(self.store.user_tiers, tenant, ids)  # each one's latest tier
        return self.render(
            request,
            "users.html",
            page="users",
            rows=rows,
            tiers=tiers,
            tenant=tenant,
            status=status or "",
            statuses=LADDER,
            hours=f"{hours:g}",
            q=lookup,
            is_admin=session.is_admin,
            notice=params.get("done"),
        )

    async def user_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("block", "clear"):
            raise HTTPException(404)
        session = await self.require(request, "admin")
        await self.check_csrf(request, session)
        form = await request.form()
        tenant = form_field(form, "tenant", limit=MAX_FIELD) or self.settings.gateway.tenant
        safety_id = form_field(form, "safety_id", required=True, limit=MAX_FIELD)
        hours_text = form_field(form, "hours", limit=MAX_FIELD)
        ledger = self.ledger()
        state: UserState
        if action == "clear":
            reason = form_field(form, "reason", limit=MAX_FIELD)
            reason = reason or f"cleared by {session.subject} in the UI"
            state = await run_in_threadpool(ledger.clear, tenant, safety_id, session.subject, reason)
            done = "unblocked"
        else:
            reason = form_field(form, "reason", required=True, limit=MAX_FIELD)
            duration: int | None = None
            if hours_text:
                duration = max(1, round(_hours(hours_text) * 3600))
            state = await run_in_threadpool(
                ledger.block, tenant, safety_id, session.subject, reason, duration
            )
            done = "blocked"
        log.info("UI: %s %s user %s/%s (%s)", session.subject, done, tenant, safety_id, state.status)
        if request.headers.get("hx-request"):
            row = await run_in_threadpool(self._user_row, tenant, safety_id, 24)
            tiers = await run_in_threadpool(self.store.user_tiers, tenant, [safety_id])
            return self.render(
                request, "_user_row.html", row=row, tiers=tiers, tenant=tenant, is_admin=True, notice=done
            )
        base = request.scope.get("root_path", "")
        query = urlencode({"tenant": tenant, "q": safety_id, "done": done})
        return RedirectResponse(f"{base}/users?{query}", status_code=303)

    async def audit(self, request: Request) -> Response:
        await self.require(request)
        params = request.query_params
        outcome = params.get("outcome") or None
        if outcome is not None and outcome not in AUDIT_OUTCOMES:
            raise Denied(f"outcome must be one of {', '.join(AUDIT_OUTCOMES)}", 400)
        api = params.get("api") or None
        if api is not None and api not in AUDIT_APIS:
            raise Denied(f"api must be one of {', '.join(AUDIT_APIS)}", 400)
        try:
            page = max(1, int(params.get("page") or 1))
        except ValueError:
            raise Denied("page must be a whole number", 400) from None
        query = AuditQuery(
            outcome=outcome,
            safety_id=(params.get("safety_id") or "").strip()[:200] or None,
            tenant=params.get("tenant") or None,
            since=_parse_time(params.get("since"), "from"),
            until=_parse_time(params.get("until"), "until"),
            shadow=params.get("shadow") == "1",
            api=api,
            tier=(params.get("tier") or "").strip()[:64] or None,
            page=page,
            page_size=self.ui.page_size,
        )
        result = await run_in_threadpool(self.store.audit_page, query)
        filters = {
            "outcome": outcome or "",
            "shadow": "1" if query.shadow else "",
            "api": api or "",
            "tier": query.tier or "",
            "safety_id": query.safety_id or "",
            "tenant": query.tenant or "",
            "since": params.get("since") or "",
            "until": params.get("until") or "",
        }
        kept = {key: value for key, value in filters.items() if value}

        def page_link(number: int) -> str:
            return "?" + urlencode({**kept, "page": number})

        return self.render(
            request,
            "audit.html",
            page="audit",
            result=result,
            filters=filters,
            outcomes=AUDIT_OUTCOMES,
            apis=AUDIT_APIS,
            prev_link=page_link(result.page - 1) if result.page > 1 else None,
            next_link=page_link(result.page + 1) if result.page < result.pages else None,
        )

    async def audit_detail(self, request: Request) -> Response:
        await self.require(request)
        request_id = request.path_params["request_id"]
        record = await run_in_threadpool(self.store.get_audit, request_id)
        if record is None:
            raise Denied(f"There is no audit record {request_id[:100]!r}.", 404)
        return self.render(
            request,
            "audit_detail.html",
            page="audit",
            record=record,
            pretty=json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True),
        )

    async def accounts_page(
        self,
        request: Request,
        *,
        status_code: int = 200,
        new_token: tuple[str, OperatorToken] | None = None,
        error: str | None = None,
    ) -> Response:
        await self.require(request, "admin")
        accounts = await run_in_threadpool(self.accounts.list_accounts)
        tokens = await run_in_threadpool(lambda: self.accounts.list_tokens(include_revoked=True))
        done = request.query_params.get("done")
        return self.render(
            request,
            "accounts.html",
            status_code,
            page="accounts",
            accounts=accounts,
            tokens=tokens,
            new_token=new_token,
            notice="Token revoked." if done == "revoked" else None,
            error=error,
            roles=ROLES,
            oidc=self.ui.oidc,
        )

    async def token_create(self, request: Request) -> Response:
        """Make an operator token (shown once, on the page this answers)."""
        session = await self.require(request, "admin")
        await self.check_csrf(request, session)
        form = await request.form()
        name = form_field(form, "name", limit=MAX_FIELD)
        role = form_field(form, "role", limit=20)
        try:
            made = await run_in_threadpool(self.accounts.create_token, name, role, session.subject)
        except InvalidRequestError as exc:
            return await self.accounts_page(request, status_code=400, error=exc.message)
        log.info("UI: %s made operator token %s (%s, %s)", session.subject, made[1].id, made[1].name, role)
        return await self.accounts_page(request, status_code=201, new_token=made)

    async def token_revoke(self, request: Request) -> Response:
        session = await self.require(request, "admin")
        await self.check_csrf(request, session)
        token_id = request.path_params["token_id"][:40]
        try:
            await run_in_threadpool(self.accounts.revoke_token, token_id)
        except NotFoundError:
            raise Denied(f"There is no operator token {token_id!r}.", 404) from None
        log.info("UI: %s revoked operator token %s", session.subject, token_id)
        base = request.scope.get("root_path", "")
        return RedirectResponse(f"{base}/accounts?done=revoked", status_code=303)


async def widget(request: Request) -> Response:
    """The report widget's script: public, cacheable, for pages on other origins."""
    body = await run_in_threadpool(WIDGET.read_bytes)
    return Response(
        body,
        media_type="text/javascript; charset=utf-8",
        headers={
            "cache-control": f"public, max-age={WIDGET_MAX_AGE_S}",
            "cross-origin-resource-policy": "cross-origin",
            "access-control-allow-origin": "*",
        },
    )


def build_ui_app(
    settings: Settings,
    ui: UISettings,
    store: Store | None = None,
    *,
    review: Callable[[], ReviewService | None] | None = None,
    shared_store: Callable[[], Store | None] | None = None,
) -> tuple[Starlette, UI]:
    """The UI as its own ASGI app (mounted at /ui by :func:`add_ui_routes`).

    ``store`` is the store to use; without one, ``shared_store`` finds the running app's (the
    gateway's), and when it gives None the UI opens the store of ``settings.store`` itself.
    ``review`` finds the running :class:`ReviewService` (the gateway's); when it gives None the
    review desk makes one of its own over the UI's store."""
    holder = _StoreHolder(settings, store, shared_store)
    view = UI(settings, ui, holder)
    desk = Desk(view, review or (lambda: None))
    view.desk = desk
    holder.on_close.append(desk.close)
    secret = load_or_create_secret(ui.secret_file, size=SECRET_BYTES)

    routes = [
        Route("/", view.dashboard, methods=["GET"], name="dashboard"),
        Route("/login", view.login_page, methods=["GET"], name="login_page"),
        Route("/login", view.login, methods=["POST"], name="login"),
        Route("/login/oidc", view.oidc_start, methods=["GET"], name="oidc_start"),
        Route("/auth/callback", view.oidc_callback, methods=["GET"], name="oidc_callback"),
        Route("/logout", view.logout, methods=["POST"], name="logout"),
        Route("/users", view.users, methods=["GET"], name="users"),
        Route("/users/{action:str}", view.user_action, methods=["POST"], name="user_action"),
        Route("/audit", view.audit, methods=["GET"], name="audit"),
        Route("/audit/{request_id:str}", view.audit_detail, methods=["GET"], name="audit_detail"),
        Route("/accounts", view.accounts_page, methods=["GET"], name="accounts"),
        Route("/tokens", view.token_create, methods=["POST"], name="token_create"),
        Route("/tokens/{token_id:str}/revoke", view.token_revoke, methods=["POST"], name="token_revoke"),
        Route("/review", desk.queue, methods=["GET"], name="review_queue"),
        Route("/review", desk.bulk, methods=["POST"], name="review_bulk"),
        Route("/review/{review_id:str}", desk.item, methods=["GET"], name="review_item"),
        Route("/review/{review_id:str}/{action:str}", desk.act, methods=["POST"], name="review_action"),
        Route("/reports", desk.reports, methods=["GET"], name="reports"),
        Route("/reports/{report_id:str}", desk.report, methods=["GET"], name="report"),
        Route("/reports/{report_id:str}", desk.triage, methods=["POST"], name="report_triage"),
        Route("/widget.js", widget, methods=["GET"], name="widget"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                CookieSessions, secret=secret, max_age_s=ui.session_max_age_s, secure=ui.secure_cookies
            ),
        ],
        exception_handlers={
            SignInNeeded: view.on_sign_in_needed,
            Denied: view.on_denied,
            HTTPException: view.on_http_error,
            SeawallError: view.on_seawall_error,
        },
    )
    app.state.ui = view
    view.staff_sessions = StaffSessions(secret, ui.session_max_age_s, lambda: view.accounts, ui)
    return app, view


def add_ui_routes(
    app: FastAPI, settings: Settings, store: Store | None = None, *, ui: UISettings | None = None
) -> None:
    """Mount the web UI at ``/ui`` on ``app``.

    ``store`` is the store to read and act on (the caller closes it); None: the app's store
    (``app.state.store``, the gateway's, once the app started), else one the UI opens from
    ``settings.store`` when the app starts and closes when it stops. ``ui`` defaults to
    ``settings.ui``."""
    ui = ui or settings.ui
    if not ui.enabled:
        return
    ui_app, view = build_ui_app(
        settings,
        ui,
        store,
        review=lambda: getattr(app.state, "review", None),
        shared_store=lambda: getattr(app.state, "store", None),
    )

    async def to_ui(request: Request) -> Response:
        return RedirectResponse(request.url.path + "/", status_code=307)

    app.add_route("/ui", to_ui, include_in_schema=False)
    app.mount("/ui", ui_app, name="ui")
    # A signed-in reviewer or admin may use the review API and /metrics as their token could.
    app.state.staff_sessions = view.staff_sessions
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(parent: Any) -> AsyncIterator[Any]:
        async with original(parent) as state:
            await run_in_threadpool(view.holder.get)  # a bad store URL stops start-up
            try:
                yield state
            finally:
                await run_in_threadpool(view.holder.close)  # the store only if the UI opened it

    app.router.lifespan_context = lifespan


__all__ = ["SECURITY_HEADERS", "UI", "add_ui_routes", "build_ui_app"]
