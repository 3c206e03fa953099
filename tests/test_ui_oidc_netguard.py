"""The web UI's OIDC sign-in fetches the provider's discovery document and keys under netguard's
rules, as the gateway fetches user-token keys: a provider on a loopback or private address is
refused unless ``ui.oidc.allow_private_hosts`` is set, and a discovery document for another issuer
is not trusted.

The provider is a loopback stand-in serving OpenID Connect Discovery 1.0's document (the only
test double; the full sign-in flow against a real provider is ``tests/test_ui_oidc.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.responses import Response

from backend_standins import Recorded, StandIn, json_reply, stand_in
from seawall.errors import IdentityProviderError
from seawall.ui.auth import OIDCSignIn
from seawall.ui.settings import OIDCSettings
from test_ui_support import make_settings, open_ui_store, ui_server, ui_settings

CLIENT_ID = "seawall-ui"


def discovery_reply(issuer: list[str]) -> object:
    async def reply(request: Recorded) -> Response:
        if request.path == "/.well-known/openid-configuration":
            base = issuer[0]
            return json_reply(
                {
                    "issuer": base,
                    "authorization_endpoint": f"{base}/auth",
                    "token_endpoint": f"{base}/token",
                    "jwks_uri": f"{base}/jwks",
                    "userinfo_endpoint": f"{base}/me",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )
        if request.path == "/jwks":
            return json_reply({"keys": []})
        return json_reply({"error": "not found"}, 404)

    return reply


@pytest.fixture
def provider() -> Iterator[tuple[StandIn, list[str]]]:
    issuer: list[str] = [""]
    with stand_in(discovery_reply(issuer)) as standin:  # type: ignore[arg-type]
        issuer[0] = standin.url
        yield standin, issuer


def oidc(issuer: str, **extra: object) -> OIDCSettings:
    return OIDCSettings(issuer=issuer, client_id=CLIENT_ID, roles={"ada@example.org": "admin"}, **extra)


def discovery_requests(standin: StandIn) -> list[Recorded]:
    return [r for r in standin.requests if r.path == "/.well-known/openid-configuration"]


def test_a_loopback_provider_is_refused_unless_allowed(
    provider: tuple[StandIn, list[str]], tmp_path: Path
) -> None:
    standin, issuer = provider
    settings = make_settings(tmp_path)
    store = open_ui_store(settings)
    try:
        refusing_ui = ui_settings(tmp_path / "a", oidc=oidc(issuer[0]))
        with ui_server(settings, refusing_ui, store) as refused, refused.http() as http:
            started = http.get("/ui/login/oidc", params={"login_hint": "ada"})
        assert started.status_code == 503 and "cannot be reached" in started.text
        assert discovery_requests(standin) == []  # refused before any connection

        allowed_ui = ui_settings(tmp_path / "b", oidc=oidc(issuer[0], allow_private_hosts=True))
        with ui_server(settings, allowed_ui, store) as allowed, allowed.http() as http:
            redirect = http.get("/ui/login/oidc", params={"login_hint": "ada"})
    finally:
        store.close()
    assert redirect.status_code == 302, redirect.text
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{issuer[0]}/auth"
    query = parse_qs(location.query)
    assert query["client_id"] == [CLIENT_ID] and query["code_challenge_method"] == ["S256"]
    [fetched] = discovery_requests(standin)
    assert fetched.method == "GET"


def test_a_provider_resolving_to_a_private_address_is_not_fetched(
    provider: tuple[StandIn, list[str]],
) -> None:
    standin, issuer = provider
    port = urlsplit(issuer[0]).port
    resolved: list[str] = []

    async def resolve(host: str, _port: int) -> list[str]:
        resolved.append(host)
        return ["10.1.2.3"]

    async def discover(sign_in: OIDCSignIn) -> object:
        try:
            return await sign_in.metadata()
        finally:
            await sign_in.aclose()

    sign_in = OIDCSignIn(oidc(f"https://idp.example.test:{port}"), resolver=resolve)
    with pytest.raises(IdentityProviderError) as refused:
        asyncio.run(discover(sign_in))
    assert "10.1.2.3" in refused.value.message and "ui.oidc.allow_private_hosts" in refused.value.message
    assert resolved == ["idp.example.test"] and discovery_requests(standin) == []


def test_a_discovery_document_for_another_issuer_is_not_trusted(
    provider: tuple[StandIn, list[str]],
) -> None:
    standin, issuer = provider
    served = issuer[0]
    issuer[0] = "https://impostor.example.com"  # what the document now claims

    async def discover(sign_in: OIDCSignIn) -> object:
        try:
            return await sign_in.metadata()
        finally:
            await sign_in.aclose()

    with pytest.raises(IdentityProviderError, match=r"names the issuer 'https://impostor\.example\.com'"):
        asyncio.run(discover(OIDCSignIn(oidc(served, allow_private_hosts=True))))
    assert len(discovery_requests(standin)) == 1
