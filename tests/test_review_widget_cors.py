"""CORS of the report widget's two routes (POST /v1/feedback, GET /v1/seawall/notices) for the
origins in ``review.widget_origins``, on a real server on loopback with the app-key check."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError

from backend_standins import serving
from seawall.gateway.access import KeyAuthenticator
from seawall.review import ReviewService, ReviewSettings, add_review_routes
from seawall.settings import StoreSettings
from seawall.store import open_store

APP_KEY = "app-key-widget-0123456789"
PAGE = "http://127.0.0.1:8123"
ELSEWHERE = "https://evil.example"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("widget-cors")
    settings = ReviewSettings(widget_origins=[PAGE + "/"])
    store = open_store(StoreSettings(url=f"sqlite:///{tmp / 'seawall.db'}"))
    service = ReviewService(store, settings)
    app = FastAPI()
    app.state.access = KeyAuthenticator([SecretStr(APP_KEY)], None, default_tenant="acme", require=True)
    add_review_routes(app, settings, service=service)
    with serving(app) as server:
        yield server.url
    service.close()
    store.close()


def preflight(root: str, path: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(
        f"{root}{path}",
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": "authorization, content-type",
        },
    )


@pytest.mark.parametrize("path", ["/v1/feedback", "/v1/seawall/notices"])
def test_preflight_allows_a_configured_origin_only(root: str, path: str) -> None:
    allowed = preflight(root, path, PAGE)
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == PAGE
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= {
        h.strip() for h in allowed.headers["access-control-allow-headers"].split(",")
    }
    assert "access-control-allow-credentials" not in allowed.headers
    assert "Origin" in allowed.headers["vary"]
    refused = preflight(root, path, ELSEWHERE)
    assert "access-control-allow-origin" not in refused.headers


def test_feedback_from_the_page_carries_cors_headers_errors_too(root: str) -> None:
    with httpx.Client(base_url=root, headers={"origin": PAGE}) as http:
        created = http.post(
            "/v1/feedback",
            json={"response_id": "swreq-abc", "category": "wrong", "comment": "outdated"},
            headers={"authorization": f"Bearer {APP_KEY}"},
        )
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == PAGE
        no_key = http.post("/v1/feedback", json={"response_id": "x", "category": "wrong"})
        assert no_key.status_code == 401
        assert no_key.headers["access-control-allow-origin"] == PAGE  # the widget can read why
        notices = http.get("/v1/seawall/notices")
        assert notices.status_code == 200 and notices.headers["access-control-allow-origin"] == PAGE
    other = httpx.get(f"{root}/v1/seawall/notices", headers={"origin": ELSEWHERE})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


def test_widget_origins_must_be_origins() -> None:
    with pytest.raises(ValidationError, match="not an origin"):
        ReviewSettings(widget_origins=["https://app.example.org/chat"])
    assert ReviewSettings(widget_origins=["*"]).widget_origins == ["*"]
