"""The UI's OIDC token exchange and userinfo call go under netguard's rules, as discovery and the
JWKS do: an endpoint on a loopback or private address (or a host name resolving to one) is refused
unless ``ui.oidc.allow_private_hosts``, before any connection; a redirect is never followed. The
sign-in page says why, with HTTP 503 (the provider cannot be used, which is not the person's fault).

The provider is a loopback stand-in speaking the wire format of OpenID Connect Core 1.0's
authorization-code flow (discovery, an authorization endpoint that sends the browser straight back
with a code, a token endpoint that issues an RS256 ID token with the flow's nonce, userinfo, the
JWKS), so each endpoint can misbehave on its own; the sign-in against a real provider
(npm ``oidc-provider``) is ``tests/test_ui_oidc.py``, which must keep passing through the same path.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from backend_standins import serving
from seawall.errors import IdentityProviderError
from seawall.ui.accounts import ui_sessions
from seawall.ui.auth import OIDCSignIn, OIDCUnavailable
from seawall.ui.settings import OIDCSettings
from test_ui_support import make_settings, open_ui_store, ui_server, ui_settings

CLIENT_ID = "seawall-ui"
CLIENT_SECRET = "stand-in-secret/with+odd chars"
ADA = {"sub": "ada-1", "email": "ada@example.org", "email_verified": True, "name": "Ada Admin"}


@dataclass
class Provider:
    """The stand-in provider: what it answers (``token``, ``userinfo``: ``ok`` or ``redirect``),
    where its discovery document says the token and userinfo endpoints are, what it received."""

    url: str = ""
    token: str = "ok"
    userinfo: str = "ok"
    token_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    received: list[tuple[str, str]] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    nonces: dict[str, str] = field(default_factory=dict)
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})
    )

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/auth",
            "token_endpoint": self.token_endpoint or f"{self.url}/token",
            "userinfo_endpoint": self.userinfo_endpoint or f"{self.url}/me",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            path = request.url.path
            self.received.append((request.method, path))
            self.headers.append(dict(request.headers))
            if path == "/.well-known/openid-configuration":
                return JSONResponse(self.discovery())
            if path == "/jwks":
                return JSONResponse({"keys": [self.key.as_dict(private=False)]})
            if path == "/auth":  # the person signs in at once; back to the app with a code
                query = request.query_params
                code = uuid.uuid4().hex
                self.nonces[code] = query["nonce"]
                back = {"code": code, "state": query["state"]}
                return RedirectResponse(f"{query['redirect_uri']}?{urlencode(back)}", 302)
            if path == "/token":
                form = {key: str(value) for key, value in (await request.form()).items()}
                self.forms.append(form)
                if self.token == "redirect":
                    return RedirectResponse(f"{self.url}/elsewhere", 307)
                now = int(time.time())
                claims = {
                    "iss": self.url,
                    "sub": ADA["sub"],
                    "aud": CLIENT_ID,
                    "iat": now,
                    "exp": now + 300,
                    "nonce": self.nonces.pop(form["code"]),
                }  # no e-mail in the ID token: it comes from userinfo
                id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
                return JSONResponse(
                    {"access_token": "at-" + form["code"], "token_type": "Bearer", "id_token": id_token}
                )
            if path == "/me":
                if self.userinfo == "redirect":
                    return RedirectResponse(f"{self.url}/elsewhere", 302)
                return JSONResponse(ADA)
            return JSONResponse({"error": "not found"}, 404)

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])


@pytest.fixture
def provider() -> Iterator[Provider]:
    stand_in = Provider()
    with serving(stand_in.app()) as server:
        stand_in.url = server.url
        yield stand_in


def oidc(issuer: str, **extra: Any) -> OIDCSettings:
    return OIDCSettings(
        name="Stand-in IdP",
        issuer=issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        roles={"ada@example.org": "admin"},
        **extra,
    )


# ----------------------------------------------------------------- through the UI server


def sign_in_through_ui(provider: Provider, tmp_path: Path) -> tuple[Any, Any]:
    """Click 'Sign in' and follow every redirect (the stand-in's /auth sends the browser back)."""
    settings = make_settings(tmp_path)
    store = open_ui_store(settings)
    try:
        ui = ui_settings(tmp_path, oidc=oidc(provider.url, allow_private_hosts=True))  # on loopback
        with ui_server(settings, ui, store) as server, server.http(follow_redirects=True) as http:
            response = http.get("/ui/login/oidc", params={"next": "/ui/accounts"})
            with store.engine.connect() as connection:
                sessions = [row.subject for row in connection.execute(ui_sessions.select())]
    finally:
        store.close()
    return response, sessions


def test_the_stand_in_provider_signs_in_through_the_guarded_calls(provider: Provider, tmp_path: Path) -> None:
    response, sessions = sign_in_through_ui(provider, tmp_path)
    assert response.status_code == 200 and "Ada Admin" in response.text, response.text
    assert sessions == ["ada@example.org"]
    assert ("POST", "/token") in provider.received and ("GET", "/me") in provider.received
    [form] = provider.forms
    assert form["grant_type"] == "authorization_code" and form["redirect_uri"].endswith("/ui/auth/callback")
    assert len(form["code_verifier"]) >= 43  # PKCE
    token_headers = provider.headers[provider.received.index(("POST", "/token"))]
    assert token_headers["authorization"].startswith("Basic ")  # client_secret_basic, as Authlib does
    userinfo_headers = provider.headers[provider.received.index(("GET", "/me"))]
    assert userinfo_headers["authorization"].startswith("Bearer at-")


@pytest.mark.parametrize("endpoint", ["token", "userinfo"])
def test_a_redirecting_endpoint_is_not_followed(provider: Provider, tmp_path: Path, endpoint: str) -> None:
    setattr(provider, endpoint, "redirect")
    response, sessions = sign_in_through_ui(provider, tmp_path)
    assert response.status_code == 503, response.text
    assert f"the {endpoint} endpoint at" in response.text and "a redirect, not followed" in response.text
    assert ("GET", "/elsewhere") not in provider.received and ("POST", "/elsewhere") not in provider.received
    assert sessions == []


# ----------------------------------------------------------------- private addresses


def request_for(path: str, session: dict[str, Any], query: str = "") -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "query_string": query.encode(),
        "headers": [],
        "session": session,
    }
    return Request(scope)


async def finish_flow(sign_in: OIDCSignIn) -> Any:
    """Start the flow (the authorization redirect, whose state goes in the session) and come back
    to the callback with a code, as the browser would; the result of :meth:`OIDCSignIn.finish`."""
    session: dict[str, Any] = {}
    try:
        started = await sign_in.start(request_for("/ui/login/oidc", session), "https://seawall.test/cb")
        state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
        callback = request_for("/ui/auth/callback", session, urlencode({"code": "c0de", "state": state}))
        return await sign_in.finish(callback)
    finally:
        await sign_in.aclose()


def public_provider(sign_in: OIDCSignIn, provider: Provider) -> None:
    """The discovery document as fetched from a public provider (which no test can reach):
    netguard let it through, and it names the endpoints the test is about."""
    document = {**provider.discovery(), "issuer": sign_in.settings.issuer}
    sign_in.client.server_metadata.update({**document, "_loaded_at": time.time()})


def test_a_token_endpoint_on_a_private_address_is_refused(provider: Provider) -> None:
    provider.token_endpoint = f"{provider.url}/token"  # 127.0.0.1
    sign_in = OIDCSignIn(oidc("https://idp.example.com"))
    public_provider(sign_in, provider)
    with pytest.raises(OIDCUnavailable) as refused:
        asyncio.run(finish_flow(sign_in))
    message = str(refused.value)
    assert "the token endpoint: the host '127.0.0.1' is or resolves to the non-public address" in message
    assert "ui.oidc.allow_private_hosts" in message
    assert provider.received == []  # refused before any connection


def test_a_token_endpoint_resolving_to_a_private_address_is_refused(provider: Provider) -> None:
    port = urlsplit(provider.url).port
    provider.token_endpoint = f"https://tokens.example.com:{port}/token"
    resolved: list[str] = []

    async def resolve(host: str, _port: int) -> list[str]:
        resolved.append(host)
        return ["93.184.216.34", "10.1.2.3"]  # one private answer is enough to refuse the host

    sign_in = OIDCSignIn(oidc("https://idp.example.com"), resolver=resolve)
    public_provider(sign_in, provider)
    with pytest.raises(OIDCUnavailable, match=r"non-public address 10\.1\.2\.3.*allow_private_hosts"):
        asyncio.run(finish_flow(sign_in))
    assert resolved == ["tokens.example.com"] and provider.received == []


def test_a_userinfo_endpoint_on_a_private_address_is_refused(provider: Provider) -> None:
    provider.userinfo_endpoint = f"{provider.url}/me"  # 127.0.0.1

    async def ask(sign_in: OIDCSignIn) -> Any:
        try:
            return await sign_in.client.userinfo(token={"access_token": "at-1", "token_type": "Bearer"})
        finally:
            await sign_in.aclose()

    refusing = OIDCSignIn(oidc("https://idp.example.com"))
    public_provider(refusing, provider)
    with pytest.raises(IdentityProviderError) as refused:
        asyncio.run(ask(refusing))
    assert "the userinfo endpoint: the host '127.0.0.1' is or resolves to the non-public address" in (
        refused.value.message
    )
    assert "ui.oidc.allow_private_hosts" in refused.value.message and provider.received == []

    allowed = OIDCSignIn(oidc("https://idp.example.com", allow_private_hosts=True))
    public_provider(allowed, provider)
    assert dict(asyncio.run(ask(allowed))) == ADA
    assert provider.received == [("GET", "/me")]
