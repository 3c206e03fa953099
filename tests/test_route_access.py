"""Every route × every caller, against the documented table (:mod:`seawall.server.route_rules`).

The list of routes comes from the app itself (``create_app`` with the gateway, human review and
the web UI on), so a new route without a rule fails :func:`test_every_route_has_a_rule_and_a_probe`.
Then every route is called, over HTTP on a real server on loopback, by each caller: nobody, an app
key of another tenant, an app key of the tenant that owns the data, a reviewer and an admin (bearer
tokens for the API, a signed-in UI session for /ui), and an own-tenant key scoped to feedback only.
Data (held answers, a report, an audit record) is made
through the API first, the way clients make it; the upstream is a loopback stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from backend_standins import Recorded, json_reply, stand_in
from conftest import RunningServer, running_server, wait_for_audit
from seawall.gateway.identity import hash_api_key
from seawall.server.app import create_app
from seawall.server.route_rules import ANSWERS, CALLERS, ROUTE_RULES, Caller, app_routes
from seawall.settings import Settings, load_settings
from seawall.store import open_store
from test_ui_support import csrf_from, sign_in

MODEL = "gpt-test"
OWN_TENANT = "acme"
OTHER_TENANT = "globex"
OWN_KEY = "sw-own-tenant-key-0123456789abcdef"
OTHER_KEY = "sw-other-tenant-key-0123456789abcd"
FEEDBACK_KEY = "sw-feedback-only-key-0123456789ab"
REVIEWER_TOKEN = "reviewer-token-route-table-0123"
ADMIN_TOKEN = "admin-token-route-table-012345"
ACCOUNTS = {"reviewer": ("rita", "rita-password-123"), "admin": ("adam", "adam-password-123")}
PROBE_ACCOUNT = ("polly", "polly-password-12")
HEALTH = "What is the maximum daily dose of ibuprofen for an adult?"
PLAIN = "What is the capital of France?"
DRAFT = "Adults can usually take 200 to 400 mg of ibuprofen every 4 to 6 hours."


async def _upstream(request: Recorded) -> Response:
    if request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "t"}]})
    text = request.body["messages"][-1]["content"]
    return json_reply(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": DRAFT if "ibuprofen" in text else "Paris."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
        }
    )


def _settings(tmp: Path, upstream_url: str) -> Settings:
    return load_settings(
        gateway={
            "enabled": True,
            "upstream": {"base_url": f"{upstream_url}/v1", "max_retries": 0, "total_timeout_s": 20},
            "secret_file": str(tmp / "secret"),
            "tenant": OWN_TENANT,
            "risk": {"enabled": False},
            "rate_limits": {"per_user": None},
        },
        store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
        review={
            "enabled": True,
            "uncertain_low": None,  # hold on the health domain only
            "reviewer_tokens": {"rita": REVIEWER_TOKEN},
            "admin_tokens": {"root": ADMIN_TOKEN},
            "feedback_limit": {"requests": 1000, "window_s": 60},
        },
        ui={"secret_file": str(tmp / "ui-secret"), "login_attempts": 1000},
    )


@dataclass
class World:
    server: RunningServer
    clients: dict[Caller, httpx.Client]
    csrf: dict[Caller, str]
    review_id: str = ""
    report_id: str = ""
    request_id: str = ""
    token_id: str = ""
    closing: list[httpx.Client] = field(default_factory=list)

    def hold(self) -> str:
        """A new held answer of the own tenant (a health question through the gateway)."""
        with self.server.http(headers={"authorization": f"Bearer {OWN_KEY}"}) as http:
            response = http.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": HEALTH}]},
            )
        assert response.status_code == 200, response.text  # the placeholder completion (the default)
        return str(response.headers["x-seawall-review-id"])

    def fresh_session(self, caller: Caller) -> tuple[httpx.Client, str]:
        """A new client signed in as ``caller`` (for requests that end the session)."""
        client = self.server.http(headers=dict(self.clients[caller].headers))
        self.closing.append(client)
        if caller not in ACCOUNTS:
            return client, "no-session-no-token"
        assert sign_in(client, *ACCOUNTS[caller]).status_code == 303
        return client, csrf_from(client.get("/ui/users").text)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("route-access")
    with stand_in(_upstream) as upstream:
        settings = _settings(tmp, upstream.url)
        store = open_store(settings.store)
        from seawall.ui.accounts import AccountStore
        from seawall.ui.accounts import metadata as ui_metadata

        ui_metadata.create_all(store.engine)
        accounts = AccountStore(store)
        for role, (name, password) in ACCOUNTS.items():
            accounts.create(name, role, password)
        accounts.create(PROBE_ACCOUNT[0], "reviewer", PROBE_ACCOUNT[1])
        _, probe_token = accounts.create_token("revoked by the probes", "reviewer", "test")
        store.create_key("own app", OWN_TENANT, hash_api_key(OWN_KEY), OWN_KEY[:8])
        store.create_key("other app", OTHER_TENANT, hash_api_key(OTHER_KEY), OTHER_KEY[:8])
        store.create_key(
            "report widget", OWN_TENANT, hash_api_key(FEEDBACK_KEY), FEEDBACK_KEY[:8], scope="feedback"
        )
        store.close()
        with running_server(settings) as server:
            bearer = {
                "anonymous": None,
                "other_tenant": OTHER_KEY,
                "own_tenant": OWN_KEY,
                "feedback_key": FEEDBACK_KEY,
                "reviewer": REVIEWER_TOKEN,
                "admin": ADMIN_TOKEN,
            }
            clients: dict[Caller, httpx.Client] = {}
            csrf: dict[Caller, str] = {}
            for caller in CALLERS:
                token = bearer[caller]
                clients[caller] = server.http(headers={"authorization": f"Bearer {token}"} if token else {})
                csrf[caller] = "no-session-no-token"
                if caller in ACCOUNTS:
                    assert sign_in(clients[caller], *ACCOUNTS[caller]).status_code == 303
                    csrf[caller] = csrf_from(clients[caller].get("/ui/users").text)
            world = World(server, clients, csrf, token_id=probe_token.id)
            world.review_id = world.hold()
            with server.http(headers={"authorization": f"Bearer {OWN_KEY}"}) as http:
                answered = http.post(
                    "/v1/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": PLAIN}]},
                )
                assert answered.status_code == 200, answered.text
                world.request_id = answered.headers["x-seawall-request-id"]
                report = http.post("/v1/feedback", json={"response_id": world.review_id, "category": "wrong"})
                assert report.status_code == 201, report.text
                world.report_id = report.json()["id"]
            # The record reaches the store from the gateway's writer thread after the answer left:
            # the probe of /ui/audit/{request_id} reads it from there.
            store = open_store(settings.store)
            try:
                wait_for_audit(store, world.request_id)
            finally:
                store.close()
            try:
                yield world
            finally:
                for client in [*clients.values(), *world.closing]:
                    client.close()


# ----------------------------------------------------------------------------------- the probes


@dataclass(frozen=True)
class Probe:
    """A valid request to one route, and the status of its own answer when it is let through."""

    ok: int
    send: Callable[[World, httpx.Client, str], httpx.Response]
    #: The request ends the caller's session (sign-out): signed-in callers get a session of its own.
    ends_session: bool = False


def get(path: str | Callable[[World], str], ok: int = 200) -> Probe:
    def send(world: World, http: httpx.Client, csrf: str) -> httpx.Response:
        return http.get(path(world) if callable(path) else path)

    return Probe(ok, send)


def post_json(path: Callable[[World], str] | str, body: dict[str, Any], ok: int = 200) -> Probe:
    def send(world: World, http: httpx.Client, csrf: str) -> httpx.Response:
        return http.post(path(world) if callable(path) else path, json=body)

    return Probe(ok, send)


def post_form(
    path: Callable[[World], str] | str, form: dict[str, str], ok: int = 303, *, ends_session: bool = False
) -> Probe:
    def send(world: World, http: httpx.Client, csrf: str) -> httpx.Response:
        return http.post(path(world) if callable(path) else path, data={"csrf_token": csrf, **form})

    return Probe(ok, send, ends_session)


def options(path: str) -> Probe:
    def send(world: World, http: httpx.Client, csrf: str) -> httpx.Response:
        headers = {"origin": "https://shop.example", "access-control-request-method": "POST"}
        return http.options(path, headers=headers)

    return Probe(204, send)


def ui_login(world: World, http: httpx.Client, csrf: str) -> httpx.Response:
    # On a copy of the caller's client, so a signed-in caller keeps its own session.
    with world.server.http(headers=dict(http.headers), cookies=http.cookies) as copy:
        return sign_in(copy, *PROBE_ACCOUNT)


def claim_fresh_item(world: World, http: httpx.Client, csrf: str) -> httpx.Response:
    return http.post(f"/v1/seawall/reviews/{world.hold()}/claim")


def ui_claim_fresh_item(world: World, http: httpx.Client, csrf: str) -> httpx.Response:
    return http.post(f"/ui/review/{world.hold()}/claim", data={"csrf_token": csrf})


def ui_bulk_reject_fresh_item(world: World, http: httpx.Client, csrf: str) -> httpx.Response:
    form = {"csrf_token": csrf, "bulk_action": "reject", "reason": "route table", "review_id": world.hold()}
    return http.post("/ui/review", data=form)


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": PLAIN}]}


def fresh_response(world: World) -> str:
    """A new kept Responses API response of the own tenant's key."""
    with world.server.http(headers={"authorization": f"Bearer {OWN_KEY}"}) as http:
        response = http.post("/v1/responses", json={"model": MODEL, "input": PLAIN})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


#: One probe per route of :data:`ROUTE_RULES` (sign-out last).
PROBES: dict[tuple[str, str], Probe] = {
    ("GET", "/openapi.json"): get("/openapi.json"),
    ("GET", "/docs"): get("/docs"),
    ("GET", "/docs/oauth2-redirect"): get("/docs/oauth2-redirect"),
    ("GET", "/healthz"): get("/healthz"),
    ("GET", "/readyz"): get("/readyz"),
    ("POST", "/v1/moderations"): post_json("/v1/moderations", {"input": "hello there"}),
    ("POST", "/v1/seawall/moderations"): post_json("/v1/seawall/moderations", {"input": "hello there"}),
    ("POST", "/v1/chat/completions"): post_json("/v1/chat/completions", CHAT),
    ("GET", "/v1/models"): get("/v1/models"),
    ("POST", "/v1/responses"): post_json("/v1/responses", {"model": MODEL, "input": PLAIN}),
    ("GET", "/v1/responses/{response_id}"): get(lambda w: f"/v1/responses/{fresh_response(w)}"),
    ("DELETE", "/v1/responses/{response_id}"): Probe(
        200, lambda world, http, csrf: http.delete(f"/v1/responses/{fresh_response(world)}")
    ),
    ("GET", "/v1/seawall/notices"): get("/v1/seawall/notices"),
    ("OPTIONS", "/v1/seawall/notices"): options("/v1/seawall/notices"),
    ("OPTIONS", "/v1/feedback"): options("/v1/feedback"),
    ("POST", "/v1/feedback"): Probe(
        201,
        lambda world, http, csrf: http.post(
            "/v1/feedback", json={"response_id": world.review_id, "category": "other"}
        ),
    ),
    ("GET", "/v1/seawall/reviews/{review_id}"): get(lambda w: f"/v1/seawall/reviews/{w.review_id}"),
    ("GET", "/v1/seawall/reviews"): get("/v1/seawall/reviews"),
    ("GET", "/v1/seawall/reviews/{review_id}/events"): get(
        lambda w: f"/v1/seawall/reviews/{w.review_id}/events"
    ),
    ("POST", "/v1/seawall/reviews/{review_id}/{action}"): Probe(200, claim_fresh_item),
    ("GET", "/v1/seawall/reports"): get("/v1/seawall/reports"),
    ("GET", "/v1/seawall/reports/{report_id}"): get(lambda w: f"/v1/seawall/reports/{w.report_id}"),
    ("POST", "/v1/seawall/reports/{report_id}"): post_json(
        lambda w: f"/v1/seawall/reports/{w.report_id}", {"note": "looked at it"}
    ),
    ("GET", "/metrics"): get("/metrics"),
    ("GET", "/ui"): get("/ui", 307),
    ("GET", "/ui/login"): get("/ui/login"),
    ("POST", "/ui/login"): Probe(303, ui_login),
    # No OIDC provider is configured here: both routes are 404 to everyone (tests/test_ui_oidc.py
    # runs them against a real provider).
    ("GET", "/ui/login/oidc"): get("/ui/login/oidc", 404),
    ("GET", "/ui/auth/callback"): get("/ui/auth/callback?code=x&state=y", 404),
    ("GET", "/ui/widget.js"): get("/ui/widget.js"),
    ("GET", "/ui/static/{path}"): get("/ui/static/ui.css"),
    ("GET", "/ui/"): get("/ui/"),
    ("GET", "/ui/users"): get("/ui/users"),
    ("POST", "/ui/users/{action:str}"): post_form(
        "/ui/users/block", {"tenant": OWN_TENANT, "safety_id": "f" * 64, "reason": "route table probe"}
    ),
    ("GET", "/ui/audit"): get("/ui/audit"),
    ("GET", "/ui/audit/{request_id:str}"): get(lambda w: f"/ui/audit/{w.request_id}"),
    ("GET", "/ui/accounts"): get("/ui/accounts"),
    ("POST", "/ui/tokens"): post_form("/ui/tokens", {"name": "route table probe", "role": "reviewer"}, 201),
    ("POST", "/ui/tokens/{token_id:str}/revoke"): post_form(lambda w: f"/ui/tokens/{w.token_id}/revoke", {}),
    ("GET", "/ui/review"): get("/ui/review"),
    ("POST", "/ui/review"): Probe(303, ui_bulk_reject_fresh_item),
    ("GET", "/ui/review/{review_id:str}"): get(lambda w: f"/ui/review/{w.review_id}"),
    ("POST", "/ui/review/{review_id:str}/{action:str}"): Probe(303, ui_claim_fresh_item),
    ("GET", "/ui/reports"): get("/ui/reports"),
    ("GET", "/ui/reports/{report_id:str}"): get(lambda w: f"/ui/reports/{w.report_id}"),
    ("POST", "/ui/reports/{report_id:str}"): post_form(
        lambda w: f"/ui/reports/{w.report_id}", {"note": "looked at it in the UI"}
    ),
    ("POST", "/ui/logout"): post_form("/ui/logout", {}, ends_session=True),
}


def test_every_route_has_a_rule_and_a_probe(tmp_path: Path) -> None:
    """The app's routes, the documented rules and this test's probes name the same routes."""
    app = create_app(_settings(tmp_path, "http://127.0.0.1:9"))  # routes only: nothing is started
    served = app_routes(app)
    assert len(served) == len(set(served)), "a route is registered twice"
    missing = sorted(set(served) - set(ROUTE_RULES))
    assert not missing, f"routes without a rule in seawall.server.route_rules.ROUTE_RULES: {missing}"
    gone = sorted(set(ROUTE_RULES) - set(served))
    assert not gone, f"rules for routes the app does not serve: {gone}"
    assert set(PROBES) == set(ROUTE_RULES), sorted(set(ROUTE_RULES) ^ set(PROBES))
    assert set(ROUTE_RULES.values()) == set(ANSWERS)  # every rule is used and documented


def _answer_of(response: httpx.Response) -> str:
    return (
        f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:300]}"
    )


@pytest.mark.parametrize("route", list(PROBES), ids=lambda route: f"{route[0]} {route[1]}")
def test_every_caller_gets_the_documented_answer(world: World, route: tuple[str, str]) -> None:
    probe = PROBES[route]
    rule = ROUTE_RULES[route]
    for caller in CALLERS:
        expected = ANSWERS[rule][caller]
        http, csrf = world.clients[caller], world.csrf[caller]
        if probe.ends_session:
            http, csrf = world.fresh_session(caller)
        response = probe.send(world, http, csrf)
        where = f"{caller} on {' '.join(route)} ({rule!r}, expected {expected!r}): {_answer_of(response)}"
        if expected == "ok":
            assert response.status_code == probe.ok, where
        elif expected == "sign_in":
            assert response.status_code == 303, where
            assert response.headers["location"].startswith("/ui/login?next="), where
        else:
            assert response.status_code == expected, where
            if route[1].startswith("/v1/") or route[1] == "/metrics":
                error = json.loads(response.text)["error"]  # OpenAI's error body
                assert error["message"], where


def test_refused_callers_change_nothing(world: World) -> None:
    """A refused claim leaves the item unclaimed; a refused block leaves the user unblocked."""
    item = world.hold()
    for caller in ("anonymous", "other_tenant", "own_tenant"):
        assert world.clients[caller].post(f"/v1/seawall/reviews/{item}/claim").status_code == 401
        assert (
            world.clients[caller].post(f"/ui/review/{item}/claim", data={"csrf_token": "x"}).status_code
            == 303
        )
    view = world.clients["reviewer"].get(f"/v1/seawall/reviews/{item}").json()
    assert view["status"] == "pending" and not view.get("claimed_by")
    target = "e" * 64
    reviewer = world.clients["reviewer"]
    refused = reviewer.post(
        "/ui/users/block",
        data={"csrf_token": world.csrf["reviewer"], "tenant": OWN_TENANT, "safety_id": target, "reason": "x"},
    )
    assert refused.status_code == 403
    store = open_store(world.server.settings.store)
    try:
        assert store.get_user(OWN_TENANT, target) is None
    finally:
        store.close()
