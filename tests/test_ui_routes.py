"""The web UI over HTTP on a real server on loopback: sign-in, cookies, roles, CSRF, actions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from seawall.gateway.audit import decision
from seawall.gateway.risk import RiskLedger
from seawall.gateway.runner import shadow_entry
from seawall.store.base import AUDIT_OUTCOMES
from seawall.ui.accounts import AccountStore
from seawall.ui.auth import COOKIE, CookieSessions
from seawall.ui.routes import login_delay
from test_ui_support import (
    ADMIN,
    REVIEWER,
    UIServer,
    add_accounts,
    audit_record,
    csrf_from,
    make_settings,
    open_ui_store,
    safety_id,
    seed,
    sign_in,
    ui_server,
    ui_settings,
)

PAGES = ["/ui/", "/ui/users", "/ui/audit", "/ui/accounts", "/ui/audit/req_1"]
BLOCKED = safety_id(7)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    tmp = tmp_path_factory.mktemp("ui-routes")
    settings = make_settings(tmp)
    store = open_ui_store(settings)
    add_accounts(store)
    now = datetime.now(UTC)
    seed(
        store,
        [
            audit_record(
                at=now - timedelta(minutes=5),
                user=BLOCKED,
                outcome="refused_input",
                risk="high",
                categories=["violence"],
                request_id="req_1",
            ),
            audit_record(at=now - timedelta(minutes=3), user=safety_id(8), request_id="req_2"),
        ],
    )
    with ui_server(settings, ui_settings(tmp, login_attempts=1000), store) as running:
        yield running
    store.close()


def client(server: UIServer) -> httpx.Client:
    return server.http()


def signed_in(server: UIServer, who: tuple[str, str]) -> httpx.Client:
    http = server.http()
    response = sign_in(http, *who)
    assert response.status_code == 303, response.text
    return http


def action_form(http: httpx.Client, **fields: str) -> dict[str, str]:
    page = http.get("/ui/users")
    assert page.status_code == 200
    return {"csrf_token": csrf_from(page.text), "tenant": "default", **fields}


def status_of(server: UIServer, who: str) -> str:
    state = server.store.get_user("default", who)
    return state.status if state else "ok"


# ---------------------------------------------------------------------------------- anonymous


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_requests_are_sent_to_sign_in(server: UIServer, path: str) -> None:
    with client(server) as http:
        response = http.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?" + httpx.QueryParams({"next": path}).__str__()


def test_anonymous_posts_change_nothing(server: UIServer) -> None:
    with client(server) as http:
        response = http.post("/ui/users/block", data={"safety_id": safety_id(9), "reason": "x"})
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")
    assert server.store.get_user("default", safety_id(9)) is None


def test_ui_without_slash_redirects_and_pages_carry_security_headers(server: UIServer) -> None:
    with client(server) as http:
        assert http.get("/ui").headers["location"] == "/ui/"
        page = http.get("/ui/login")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert '<label for="password">' in page.text and "<main" in page.text


# ---------------------------------------------------------------------------------- sign-in


def test_sign_in_sets_a_signed_http_only_lax_cookie_and_goes_where_asked(server: UIServer) -> None:
    with client(server) as http:
        response = sign_in(http, *ADMIN, next_url="/ui/audit?outcome=ok")
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/audit?outcome=ok"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "path", "samesite", "max-age"} <= attributes
        assert "SameSite=Lax" in cookie and "Path=/;" in cookie
        assert "secure" not in attributes  # plain http on loopback
        assert http.get("/ui/").status_code == 200

        tampered = http.cookies[COOKIE][:-3] + "abc"
    with client(server) as other:
        other.cookies.set(COOKIE, tampered)
        assert other.get("/ui/").status_code == 303


def test_wrong_passwords_and_unknown_names_get_the_same_refusal(server: UIServer) -> None:
    with client(server) as http:
        wrong = sign_in(http, ADMIN[0], "not-the-password")
        unknown = sign_in(http, "mallory", "whatever-password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong account name or password" in wrong.text and "Wrong account name or password" in unknown.text
    assert COOKIE not in wrong.headers.get("set-cookie", "") or "sid" not in wrong.headers.get(
        "set-cookie", ""
    )


def test_sign_in_needs_the_form_csrf_token(server: UIServer) -> None:
    with client(server) as http:
        http.get("/ui/login")
        response = http.post(
            "/ui/login", data={"name": ADMIN[0], "password": ADMIN[1], "csrf_token": "forged"}
        )
        assert response.status_code == 403
        assert http.get("/ui/").status_code == 303


def test_sign_in_never_redirects_off_the_ui(server: UIServer) -> None:
    for target in ("//evil.example/ui/", "https://evil.example/", "/v1/models", "/ui\\@evil"):
        with client(server) as http:
            response = sign_in(http, *ADMIN, next_url=target)
        assert response.status_code == 303 and response.headers["location"] == "/ui/", target


def test_repeated_failures_are_throttled(server: UIServer, tmp_path: Path) -> None:
    AccountStore(server.store).create("erin", "reviewer", "erin-password-12")
    strict = ui_settings(tmp_path, login_attempts=3)
    with ui_server(server.settings, strict, server.store) as other, other.http() as http:
        codes = [sign_in(http, "erin", f"guess-{n}").status_code for n in range(4)]
        locked = sign_in(http, "erin", "erin-password-12")  # even the right one, until the window passes
    assert codes == [401, 401, 401, 429]
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0


def test_a_stranger_cannot_lock_the_owner_out_and_waits_longer_each_time(
    server: UIServer, tmp_path: Path
) -> None:
    """Wrong passwords count per account and source address, with progressive delays: the owner,
    signing in from another address, still gets in with the right password."""
    AccountStore(server.store).create("owen", "reviewer", "owen-password-12")
    strict = ui_settings(tmp_path, login_attempts=5, login_max_delay_s=1.0)
    with ui_server(server.settings, strict, server.store) as other:
        with other.http() as attacker:  # from 127.0.0.1
            timings = []
            for n in range(6):
                began = time.monotonic()
                timings.append(
                    (sign_in(attacker, "owen", f"guess-{n}").status_code, time.monotonic() - began)
                )
        assert [code for code, _ in timings] == [401, 401, 401, 401, 401, 429]
        assert timings[3][1] >= 1.0 and timings[4][1] >= 1.0  # past the first three: a delay first
        owner = httpx.Client(
            base_url=other.root, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30
        )
        with owner:
            assert sign_in(owner, "owen", "owen-password-12").status_code == 303
            assert owner.get("/ui/").status_code == 200


def test_sign_in_delays_grow_after_the_first_attempts_up_to_the_limit() -> None:
    assert [login_delay(n, 8.0) for n in range(9)] == [0, 0, 0, 1, 2, 4, 8, 8, 8]
    assert login_delay(7, 0.0) == 0


def test_sign_out_ends_the_session_on_the_server(server: UIServer) -> None:
    http = signed_in(server, ADMIN)
    stolen = http.cookies[COOKIE]
    page = http.get("/ui/")
    assert http.post("/ui/logout", data={"csrf_token": "wrong"}).status_code == 403
    response = http.post("/ui/logout", data={"csrf_token": csrf_from(page.text)})
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    http.close()
    with client(server) as replay:  # the old cookie no longer opens anything
        replay.cookies.set(COOKIE, stolen)
        assert replay.get("/ui/").status_code == 303


def test_disabling_an_account_ends_its_open_session(server: UIServer) -> None:
    accounts = AccountStore(server.store)
    accounts.create("dave", "admin", "dave-password-12")
    http = signed_in(server, ("dave", "dave-password-12"))
    assert http.get("/ui/accounts").status_code == 200
    accounts.set_role("dave", "reviewer")
    assert http.get("/ui/accounts").status_code == 403
    accounts.disable("dave")
    response = http.get("/ui/")
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")
    http.close()


# ---------------------------------------------------------------------------------- roles


def test_reviewer_reads_but_cannot_open_admin_pages_or_act(server: UIServer) -> None:
    http = signed_in(server, REVIEWER)
    for path in ("/ui/", "/ui/users", "/ui/audit", "/ui/audit/req_1"):
        assert http.get(path).status_code == 200, path
    denied = http.get("/ui/accounts")
    assert denied.status_code == 403 and "for administrators" in denied.text
    assert "/ui/accounts" not in http.get("/ui/").text  # not offered in the navigation
    users = http.get("/ui/users")
    assert "Unblock" not in users.text and "Block…" not in users.text

    ledger = RiskLedger(server.store, server.settings.gateway.risk)
    ledger.block("default", BLOCKED, "test", "abuse", None)
    for action in ("clear", "block"):
        form = action_form(http, safety_id=BLOCKED, reason="reviewer tries")
        assert http.post(f"/ui/users/{action}", data=form).status_code == 403
    assert status_of(server, BLOCKED) == "review"
    http.close()


def test_admin_blocks_and_unblocks_through_the_ledger_with_csrf(server: UIServer) -> None:
    who = safety_id(11)
    http = signed_in(server, ADMIN)
    forged = {"csrf_token": "forged", "tenant": "default", "safety_id": who, "reason": "spam"}
    assert http.post("/ui/users/block", data=forged).status_code == 403
    assert status_of(server, who) == "ok"

    response = http.post("/ui/users/block", data=action_form(http, safety_id=who, reason="spam", hours="2"))
    assert response.status_code == 303
    state = server.store.get_user("default", who)
    assert state is not None and state.status == "blocked" and state.updated_by == ADMIN[0]
    assert state.until is not None and timedelta(hours=1.9) < state.until - datetime.now(UTC) < timedelta(
        hours=2
    )
    assert state.reason == "spam"

    # htmx: the user's row comes back, updated.
    row = http.post("/ui/users/clear", data=action_form(http, safety_id=who), headers={"HX-Request": "true"})
    assert row.status_code == 200 and row.text.lstrip().startswith("<tr") and 'data-status="ok"' in row.text
    assert status_of(server, who) == "ok"

    missing_reason = http.post("/ui/users/block", data=action_form(http, safety_id=who))
    assert missing_reason.status_code == 400 and status_of(server, who) == "ok"
    assert http.post("/ui/users/promote", data=action_form(http, safety_id=who)).status_code == 404
    http.close()


# ---------------------------------------------------------------------------------- pages


def test_audit_search_filters_and_validates(server: UIServer) -> None:
    http = signed_in(server, REVIEWER)
    refused = http.get("/ui/audit", params={"outcome": "refused_input"})
    assert refused.status_code == 200 and "req_1" in refused.text and "req_2" not in refused.text
    by_user = http.get("/ui/audit", params={"safety_id": safety_id(8)[:20]})
    assert "req_2" in by_user.text and "req_1" not in by_user.text
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert "No audit record matches" in http.get("/ui/audit", params={"since": future}).text
    assert http.get("/ui/audit", params={"outcome": "nonsense"}).status_code == 400
    assert http.get("/ui/audit", params={"since": "yesterday"}).status_code == 400
    detail = http.get("/ui/audit/req_1")
    assert detail.status_code == 200 and "violence" in detail.text
    assert http.get("/ui/audit/req_nope").status_code == 404
    http.close()


def test_audit_search_finds_answers_held_for_review(server: UIServer) -> None:
    # Two hours ago: outside the dashboard's 1h range that another test counts.
    held = audit_record(
        at=datetime.now(UTC) - timedelta(hours=2), outcome="held_for_review", request_id="req_held"
    )
    seed(server.store, [held])
    http = signed_in(server, REVIEWER)
    found = http.get("/ui/audit", params={"outcome": "held_for_review"})
    assert found.status_code == 200, found.text
    assert "req_held" in found.text and "req_1" not in found.text
    for outcome in AUDIT_OUTCOMES:  # every outcome the gateway writes is one the search accepts
        assert http.get("/ui/audit", params={"outcome": outcome}).status_code == 200, outcome
    http.close()


def test_audit_search_filters_on_shadow_decisions(server: UIServer) -> None:
    shadowed = audit_record(at=datetime.now(UTC) - timedelta(hours=3), request_id="req_shadowed")
    would = [decision("output_moderation", "filter", ["violence"], {"violence": 0.9})]
    shadowed["shadow"] = [shadow_entry("output_moderation", would)]
    seed(server.store, [shadowed])
    http = signed_in(server, REVIEWER)
    found = http.get("/ui/audit", params={"shadow": "1"})
    assert found.status_code == 200, found.text
    assert "req_shadowed" in found.text and "req_1" not in found.text
    assert (
        "output_moderation: filter" in found.text
        and 'name="shadow" type="checkbox" value="1" checked' in found.text
    )
    assert "req_1" in http.get("/ui/audit").text  # without the filter, the others are back
    detail = http.get("/ui/audit/req_shadowed")
    assert detail.status_code == 200 and "output_moderation: filter" in detail.text
    http.close()


def test_audit_search_filters_on_the_api_and_the_tier(server: UIServer) -> None:
    at = datetime.now(UTC) - timedelta(hours=4)
    responses = audit_record(at=at, request_id="req_via_responses")
    responses.update(api="responses", tier="email_verified")
    seed(server.store, [responses])
    http = signed_in(server, REVIEWER)
    found = http.get("/ui/audit", params={"api": "responses"})
    assert found.status_code == 200, found.text
    assert "req_via_responses" in found.text and "req_1" not in found.text
    assert "<option selected>responses</option>" in found.text and "<td>email_verified</td>" in found.text
    chat = http.get("/ui/audit", params={"api": "chat.completions"}).text  # older records: chat
    assert "req_1" in chat and "req_via_responses" not in chat
    tiered = http.get("/ui/audit", params={"tier": "email_verified"}).text
    assert "req_via_responses" in tiered and "req_1" not in tiered
    assert http.get("/ui/audit", params={"api": "graphql"}).status_code == 400
    detail = http.get("/ui/audit/req_via_responses").text
    assert "<dt>API</dt><dd>responses</dd>" in detail and "<dt>Tier</dt><dd>email_verified</dd>" in detail
    http.close()


def test_dashboard_embeds_the_figures_for_its_charts(server: UIServer) -> None:
    http = signed_in(server, REVIEWER)
    page = http.get("/ui/", params={"range": "1h"})
    assert page.status_code == 200
    assert 'id="dashboard-data"' in page.text and '"violence"' in page.text
    assert '<dd id="total-requests">2</dd>' in page.text
    assert http.get("/ui/", params={"range": "1y"}).status_code == 400
    http.close()


# ---------------------------------------------------------------------------------- cookie security


async def test_cookies_are_secure_over_https(tmp_path: Path) -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        scope["session"]["sid"] = "token"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    for secure, url, expect in [
        ("auto", "https://seawall.example", True),
        ("auto", "http://127.0.0.1", False),
        ("always", "http://127.0.0.1", True),
        ("never", "https://seawall.example", False),
    ]:
        wrapped = CookieSessions(app, secret=b"k" * 32, max_age_s=60, secure=secure)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url=url) as http:
            cookie = (await http.get("/ui/")).headers["set-cookie"]
        assert ("; Secure" in cookie) is expect, (secure, url)
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_the_ui_works_on_the_apps_store_and_opens_none_of_its_own(tmp_path: Path) -> None:
    """Mounted on an app that has a store (the gateway's, ``app.state.store``), the UI uses that
    one object; it neither opens a second store nor closes the app's."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from seawall.store import MemoryStore
    from seawall.ui.routes import add_ui_routes

    shared = MemoryStore()
    closed: list[bool] = []
    shared.close = lambda: closed.append(True)  # type: ignore[method-assign]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = shared
        yield

    app = FastAPI(lifespan=lifespan)
    settings = make_settings(tmp_path, url="postgresql+psycopg://nobody@127.0.0.1:1/never-opened")
    add_ui_routes(app, settings, ui=ui_settings(tmp_path))
    with TestClient(app) as client:
        [mount] = [route for route in app.routes if getattr(route, "path", "") == "/ui"][-1:]
        view = mount.app.state.ui  # type: ignore[attr-defined]
        assert view.store is shared
        assert client.get("/ui/login").status_code == 200
    assert closed == []


def test_a_fresh_server_says_how_to_make_the_first_account(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = open_ui_store(settings)
    try:
        with ui_server(settings, ui_settings(tmp_path), store) as fresh, fresh.http() as http:
            page = http.get("/ui/login").text
            assert "seawall accounts create alice --role admin" in page
            AccountStore(store).create("alice", "admin", "alice-password-1")
            assert "seawall accounts create" not in http.get("/ui/login").text
    finally:
        store.close()


def test_users_page_dates_the_reason_and_offers_the_action_that_fits_the_state(server: UIServer) -> None:
    ledger = RiskLedger(server.store, server.settings.gateway.risk)
    warned, blocked = safety_id(931), safety_id(932)
    ledger.record("default", warned, "medium", "req_w1")  # 1 point: warned, the reason says so
    for n in range(2, 4):  # later events (still under the throttle rung) raise the counts, not the reason
        ledger.record("default", warned, "medium", f"req_w{n}")
    state = server.store.get_user("default", warned)
    assert state is not None and state.status == "warned"
    ledger.block("default", blocked, "ops", "abuse report 9", None)
    http = signed_in(server, ADMIN)
    page = http.get("/ui/users", params={"hours": "24"}).text
    warned_row = page.split(f'id="user-{warned}"')[1].split("</tr>")[0]
    blocked_row = page.split(f'id="user-{blocked}"')[1].split("</tr>")[0]
    assert "<td>3</td>" in warned_row  # three medium-risk events in the window ...
    assert "warned since" in warned_row and "when the count was" in warned_row  # ... the reason is dated
    assert state.reason in warned_row
    assert "Clear warning" in warned_row and "Unblock" not in warned_row
    assert "Unblock" in blocked_row and "by ops: abuse report 9" in blocked_row
    assert "Why (as it was when the state changed)" in page
    http.close()
