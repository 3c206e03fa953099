"""Who may call each route: one rule per route, and the answer each kind of caller gets.

This is the documented permission table of the whole server (the OpenAI-compatible routes, human
review, and the web UI mounted at ``/ui``). ``tests/test_route_access.py`` builds the list of
routes from the running app (:func:`app_routes`), fails when a route has no rule here (or a rule
names a route that is gone), and calls every route as each caller of :data:`CALLERS` to check the
answer :data:`ANSWERS` documents.

Callers:

* ``anonymous`` — no credentials;
* ``other_tenant`` — an app API key of another tenant than the data the request names;
* ``own_tenant`` — an app API key of the tenant whose data the request names;
* ``feedback_key`` — an app API key of the own tenant made with ``seawall keys create --scope
  feedback``: a key meant only for user reports (a web page's report widget);
* ``reviewer`` — a reviewer's bearer token (``review.reviewer_tokens``) and a reviewer's UI
  session (a local account or OIDC identity with the ``reviewer`` role);
* ``admin`` — an admin's bearer token (``review.admin_tokens``) and an admin's UI session.

Reviewers and admins reach the ``staff`` and ``admin`` routes with a UI session too (the session
cookie is sent to the whole server; a request that changes something also needs the session's
``X-CSRF-Token`` header), and with operator tokens made in the UI or with ``seawall tokens
create`` (tests/test_ui_one_sign_in.py).

Rules (what :data:`ANSWERS` spells out per caller):

=================  =============================================================================
``public``         anyone: health, notices, the widget and its CORS preflights, sign-in, the
                   OpenAPI schema and its docs page, static files
``app``            an app API key of any tenant, which then names the tenant of the request (401
                   without one when keys are required: ``gateway.require_api_key``, or as soon
                   as any key exists). Staff tokens are not app keys (401). A feedback key: 403.
``app_own``        an app API key reads only what it made itself (a kept Responses API response):
                   another key's or tenant's is 404, as if it did not exist; staff tokens 401; a
                   feedback key 403
``feedback``       as ``app``, and a feedback key too (user reports)
``app_or_staff``   an app key sees its own tenant's items only (another tenant's are 404, as if
                   they did not exist); reviewers and admins see every tenant's; a feedback
                   key 403
``staff``          reviewers and admins (bearer token); anyone else 401
``admin``          admins (bearer token); reviewers 403, anyone else 401
``ui_staff``       a reviewer's or admin's UI session; anyone else is sent to sign in (303)
``ui_admin``       an admin's UI session; reviewers 403, anyone else is sent to sign in (303)
=================  =============================================================================

``GET /metrics`` is ``admin`` unless ``review.metrics_public`` (then ``public``); the table here
is the default. HEAD is answered wherever GET is, with the same rule.
"""

from __future__ import annotations

from typing import Any, Literal

from starlette.routing import BaseRoute, Mount, Route

Rule = Literal[
    "public", "app", "app_own", "feedback", "app_or_staff", "staff", "admin", "ui_staff", "ui_admin"
]
Caller = Literal["anonymous", "other_tenant", "own_tenant", "feedback_key", "reviewer", "admin"]
#: "ok": the route's own answer (the request is let through); "sign_in": 303 to /ui/login;
#: a number: the status of the refusal.
Answer = Literal["ok", "sign_in", 401, 403, 404]

CALLERS: tuple[Caller, ...] = ("anonymous", "other_tenant", "own_tenant", "feedback_key", "reviewer", "admin")

#: The answer each caller gets from a route of each rule.
ANSWERS: dict[Rule, dict[Caller, Answer]] = {
    "public": {
        "anonymous": "ok",
        "other_tenant": "ok",
        "own_tenant": "ok",
        "feedback_key": "ok",
        "reviewer": "ok",
        "admin": "ok",
    },
    "app": {
        "anonymous": 401,
        "other_tenant": "ok",
        "own_tenant": "ok",
        "feedback_key": 403,
        "reviewer": 401,
        "admin": 401,
    },
    "app_own": {
        "anonymous": 401,
        "other_tenant": 404,
        "own_tenant": "ok",
        "feedback_key": 403,
        "reviewer": 401,
        "admin": 401,
    },
    "feedback": {
        "anonymous": 401,
        "other_tenant": "ok",
        "own_tenant": "ok",
        "feedback_key": "ok",
        "reviewer": 401,
        "admin": 401,
    },
    "app_or_staff": {
        "anonymous": 401,
        "other_tenant": 404,
        "own_tenant": "ok",
        "feedback_key": 403,
        "reviewer": "ok",
        "admin": "ok",
    },
    "staff": {
        "anonymous": 401,
        "other_tenant": 401,
        "own_tenant": 401,
        "feedback_key": 401,
        "reviewer": "ok",
        "admin": "ok",
    },
    "admin": {
        "anonymous": 401,
        "other_tenant": 401,
        "own_tenant": 401,
        "feedback_key": 401,
        "reviewer": 403,
        "admin": "ok",
    },
    "ui_staff": {
        "anonymous": "sign_in",
        "other_tenant": "sign_in",
        "own_tenant": "sign_in",
        "feedback_key": "sign_in",
        "reviewer": "ok",
        "admin": "ok",
    },
    "ui_admin": {
        "anonymous": "sign_in",
        "other_tenant": "sign_in",
        "own_tenant": "sign_in",
        "feedback_key": "sign_in",
        "reviewer": 403,
        "admin": "ok",
    },
}

#: (method, path as the router spells it) -> rule. Every route of the app has exactly one.
ROUTE_RULES: dict[tuple[str, str], Rule] = {
    # FastAPI's schema and docs page (no data, no actions)
    ("GET", "/openapi.json"): "public",
    ("GET", "/docs"): "public",
    ("GET", "/docs/oauth2-redirect"): "public",
    # health
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    # moderation and the gateway
    ("POST", "/v1/moderations"): "app",
    ("POST", "/v1/seawall/moderations"): "app",
    ("POST", "/v1/chat/completions"): "app",
    ("GET", "/v1/models"): "app",
    ("POST", "/v1/responses"): "app",
    ("GET", "/v1/responses/{response_id}"): "app_own",
    ("DELETE", "/v1/responses/{response_id}"): "app_own",
    # notices, user reports and the widget's CORS preflights
    ("GET", "/v1/seawall/notices"): "public",
    ("OPTIONS", "/v1/seawall/notices"): "public",
    ("OPTIONS", "/v1/feedback"): "public",
    ("POST", "/v1/feedback"): "feedback",
    # human review over the API
    ("GET", "/v1/seawall/reviews/{review_id}"): "app_or_staff",
    ("GET", "/v1/seawall/reviews"): "staff",
    ("GET", "/v1/seawall/reviews/{review_id}/events"): "staff",
    ("POST", "/v1/seawall/reviews/{review_id}/{action}"): "staff",
    ("GET", "/v1/seawall/reports"): "staff",
    ("GET", "/v1/seawall/reports/{report_id}"): "staff",
    ("POST", "/v1/seawall/reports/{report_id}"): "staff",
    ("GET", "/metrics"): "admin",
    # the web UI
    ("GET", "/ui"): "public",  # a redirect to /ui/
    ("GET", "/ui/login"): "public",
    ("POST", "/ui/login"): "public",
    ("GET", "/ui/login/oidc"): "public",
    ("GET", "/ui/auth/callback"): "public",
    ("GET", "/ui/widget.js"): "public",
    ("GET", "/ui/static/{path}"): "public",
    ("POST", "/ui/logout"): "ui_staff",
    ("GET", "/ui/"): "ui_staff",
    ("GET", "/ui/users"): "ui_staff",
    ("POST", "/ui/users/{action:str}"): "ui_admin",
    ("GET", "/ui/audit"): "ui_staff",
    ("GET", "/ui/audit/{request_id:str}"): "ui_staff",
    ("GET", "/ui/accounts"): "ui_admin",
    ("POST", "/ui/tokens"): "ui_admin",
    ("POST", "/ui/tokens/{token_id:str}/revoke"): "ui_admin",
    ("GET", "/ui/review"): "ui_staff",
    ("POST", "/ui/review"): "ui_staff",
    ("GET", "/ui/review/{review_id:str}"): "ui_staff",
    ("POST", "/ui/review/{review_id:str}/{action:str}"): "ui_staff",
    ("GET", "/ui/reports"): "ui_staff",
    ("GET", "/ui/reports/{report_id:str}"): "ui_staff",
    ("POST", "/ui/reports/{report_id:str}"): "ui_staff",
}


def app_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) ``app`` serves, mounted apps included; HEAD is left out (it follows
    GET), and a mounted app without routes (static files) is ``GET <mount>/{path}``."""
    found: list[tuple[str, str]] = []

    def walk(routes: list[BaseRoute], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                inner = getattr(route.app, "routes", None)
                if inner is None:
                    found.append(("GET", f"{prefix}{route.path}/{{path}}"))
                else:
                    walk(list(inner), prefix + route.path)
            elif isinstance(route, Route) or hasattr(route, "methods"):
                path = getattr(route, "path", "")
                for method in sorted(getattr(route, "methods", None) or ()):
                    if method != "HEAD":
                        found.append((method, prefix + path))
            else:  # a websocket route or something else no rule can describe
                found.append(("?", prefix + str(getattr(route, "path", route))))

    walk(list(app.routes), "")
    return found


__all__ = ["ANSWERS", "CALLERS", "ROUTE_RULES", "Answer", "Caller", "Rule", "app_routes"]
