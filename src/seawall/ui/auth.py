"""Who is signed in to the UI: the signed session cookie, CSRF tokens, and OIDC sign-in.

* :class:`CookieSessions` — ASGI middleware keeping a small dict in one signed cookie
  (itsdangerous; HttpOnly, SameSite=Lax, Secure over https, ``Path=/``, so a signed-in admin
  reaches ``/metrics`` and the review API with it too). It carries the
  session token (the session itself is a row in ``ui_sessions``), the CSRF token of the
  sign-in form and Authlib's OIDC state; it is the ``request.session`` Authlib expects.
* :func:`current_session` — the live :class:`~seawall.ui.accounts.Session` of a request.
* :class:`StaffSessions` — the same for the server's API routes (outside the UI's middleware):
  a signed-in reviewer or admin may use what their bearer token could; a request that changes
  something must carry the session's CSRF token in ``X-CSRF-Token``.
* :func:`submitted_csrf` — the CSRF token a POST carries (header or form field; every POST must).
* :class:`OIDCSignIn` — the authorization-code flow with PKCE through Authlib's Starlette
  client, and the e-mail → role allow-list. Every request to the provider — the discovery
  document, its keys (JWKS), the token exchange and userinfo — goes under
  :mod:`seawall.netguard`'s rules, as the gateway fetches user-token keys
  (:class:`~seawall.gateway.user_tokens.ProviderFetcher`): public addresses only unless
  ``ui.oidc.allow_private_hosts``, the connection pinned to the checked address, no redirects,
  a size cap; the document must name the configured issuer. Authlib builds the authorization
  URL, keeps state, nonce and PKCE verifier, and validates the ID token; it sends nothing itself.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import quote_plus

import httpx
from authlib.integrations.starlette_client import OAuth, OAuthError, StarletteOAuth2App
from authlib.oauth2.rfc6749 import OAuth2Token
from authlib.oidc.core import UserInfo
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seawall.errors import IdentityProviderError
from seawall.gateway.user_tokens import ProviderFetcher
from seawall.netguard import Resolver, resolve_host
from seawall.ui.accounts import AccountStore, Session
from seawall.ui.settings import OIDCSettings, Role, UISettings

log = logging.getLogger("seawall.ui")

#: The UI's cookie (signed; holds the session token, never the session itself).
COOKIE = "seawall_ui"
#: Form field and header that carry the CSRF token.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: Keys of the cookie dict.
SESSION_TOKEN = "sid"
LOGIN_CSRF = "login_csrf"
NEXT_URL = "next"
#: Size of the key that signs the cookies (``ui.secret_file``; seawall.secret keeps it). Files
#: made by earlier versions hold 64 hex characters, so they are read as they are.
SECRET_BYTES = 64


class CookieSessions:
    """Pure-ASGI middleware: ``scope["session"]`` from a signed cookie, written back when changed.

    The cookie expires with the session (``max_age_s``); a tampered or expired cookie is an
    empty session. ``Secure`` follows ``secure``: "auto" marks it on https requests only.
    """

    def __init__(
        self, app: ASGIApp, *, secret: bytes, max_age_s: int, secure: str = "auto", path: str = "/"
    ) -> None:
        self.app = app
        self.serializer = URLSafeTimedSerializer(secret, salt="seawall.ui.session")
        self.max_age_s = max_age_s
        self.secure = secure
        self.path = path

    def _load(self, connection: HTTPConnection) -> dict[str, Any]:
        raw = connection.cookies.get(COOKIE)
        if not raw:
            return {}
        try:
            data = self.serializer.loads(raw, max_age=self.max_age_s)
        except BadSignature:
            return {}
        return data if isinstance(data, dict) else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        loaded = self._load(connection)
        scope["session"] = dict(loaded)
        https = scope.get("scheme") == "https"
        secure = self.secure == "always" or (self.secure == "auto" and https)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                session = scope["session"]
                flags = f"Path={self.path}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
                cookie = None
                if session and session != loaded:
                    value = self.serializer.dumps(session)
                    cookie = f"{COOKIE}={value}; Max-Age={self.max_age_s}; {flags}"
                elif not session and loaded:
                    cookie = f"{COOKIE}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; {flags}"
                if cookie is not None:
                    headers = MutableHeaders(scope=message)
                    headers.append("set-cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)


# ---------------------------------------------------------------------------------- sessions and CSRF


def login_csrf(request: Request) -> str:
    """The CSRF token of the sign-in form (kept in the cookie until someone signs in)."""
    token = request.session.get(LOGIN_CSRF)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[LOGIN_CSRF] = token
    return token


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


async def submitted_csrf(request: Request) -> str | None:
    """The CSRF token a POST carries: the ``X-CSRF-Token`` header, else the form field."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    form = await request.form()
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else None


def current_session(request: Request, accounts: AccountStore, settings: UISettings) -> Session | None:
    """The request's live session, or None (and the cookie forgets a dead one).

    OIDC sessions take their role from the allow-list as it is now, so taking an address off
    the list ends that person's access at their next request."""
    token = request.session.get(SESSION_TOKEN)
    if not isinstance(token, str):
        return None
    session = accounts.session(token, idle_s=settings.session_idle_s)
    if session is not None and session.source == "oidc":
        role = settings.oidc.role_for(session.subject) if settings.oidc is not None else None
        if role is None:
            accounts.end_session(token)
            session = None
        elif role != session.role:
            session = replace(session, role=role)
    if session is None:
        request.session.pop(SESSION_TOKEN, None)
    return session


class StaffSessions:
    """The signed-in UI session of an API request (``app.state.staff_sessions`` of the review
    routes): (name, role), or None. Blocking (store lookups): call it in a worker thread."""

    def __init__(
        self, secret: bytes, max_age_s: int, accounts: Callable[[], AccountStore], settings: UISettings
    ) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt="seawall.ui.session")
        self.max_age_s = max_age_s
        self.accounts = accounts
        self.settings = settings

    def __call__(self, request: Request) -> tuple[str, Role] | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self.serializer.loads(raw, max_age=self.max_age_s)
        except BadSignature:
            return None
        token = data.get(SESSION_TOKEN) if isinstance(data, dict) else None
        if not isinstance(token, str):
            return None
        session = self.accounts().session(token, idle_s=self.settings.session_idle_s)
        if session is not None and session.source == "oidc":
            oidc = self.settings.oidc
            role = oidc.role_for(session.subject) if oidc is not None else None
            session = replace(session, role=role) if role is not None else None
        if session is None:
            return None
        if request.method not in ("GET", "HEAD", "OPTIONS") and not tokens_match(
            session.csrf_token, request.headers.get(CSRF_HEADER)
        ):
            return None  # a cookie alone never changes anything: a cross-site form cannot set the header
        return session.subject, session.role


def sign_in(request: Request, token: str) -> None:
    """Put a new session's token in the cookie: a fresh cookie (no fixation), no login CSRF."""
    request.session.clear()
    request.session[SESSION_TOKEN] = token


# ---------------------------------------------------------------------------------- OIDC


class OIDCRefused(Exception):
    """The provider answered, but this person may not sign in (the message says why)."""


class OIDCUnavailable(OIDCRefused):
    """The sign-in cannot be completed because the provider cannot be used: it did not answer,
    answered nonsense, or an endpoint it names is refused by netguard's rules (the message says
    which and why)."""


class GuardedOAuth2App(StarletteOAuth2App):  # type: ignore[misc]  # Authlib is untyped
    """Authlib's Starlette client whose requests to the provider — discovery document, JWKS, token
    exchange, userinfo — go through a :class:`~seawall.gateway.user_tokens.ProviderFetcher`
    (netguard's rules) instead of its own unchecked HTTP client."""

    fetcher: ProviderFetcher
    issuer: str

    async def load_server_metadata(self) -> dict[str, Any]:
        if "_loaded_at" not in self.server_metadata:
            url = f"{self.issuer}/.well-known/openid-configuration"
            document = await self.fetcher.get_json(url, "the discovery document")
            if document.get("issuer") != self.issuer:
                raise IdentityProviderError(
                    f"the discovery document at {url} names the issuer {document.get('issuer')!r}, "
                    f"not {self.issuer!r}"
                )
            self.server_metadata.update({**document, "_loaded_at": time.time()})
        return self.server_metadata  # type: ignore[no-any-return]

    async def fetch_jwk_set(self, force: bool = False) -> dict[str, Any]:
        metadata = await self.load_server_metadata()
        if metadata.get("jwks") and not force:
            return dict(metadata["jwks"])
        uri = metadata.get("jwks_uri")
        if not isinstance(uri, str):
            raise IdentityProviderError("the provider's discovery document has no jwks_uri")
        jwks = await self.fetcher.get_json(uri, "the JWKS")
        self.server_metadata["jwks"] = jwks
        return jwks

    async def fetch_access_token(self, redirect_uri: str | None = None, **kwargs: Any) -> OAuth2Token:
        """The authorization-code exchange (RFC 6749 §4.1.3 with PKCE's ``code_verifier``), the
        client authenticated as Authlib does it (HTTP Basic with a secret, ``client_id`` in the
        body without); an error answer (``{"error": ...}``) is Authlib's :class:`OAuthError`."""
        metadata = await self.load_server_metadata()
        endpoint = self.access_token_url or metadata.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise IdentityProviderError("the provider's discovery document has no token_endpoint")
        code = kwargs.get("code")
        if not isinstance(code, str) or not code:
            raise OAuthError(error="invalid_request", description="the callback has no authorization code")
        form = {"grant_type": "authorization_code", "code": code}
        redirect = redirect_uri or kwargs.get("redirect_uri")
        if isinstance(redirect, str) and redirect:
            form["redirect_uri"] = redirect
        if isinstance(kwargs.get("code_verifier"), str):
            form["code_verifier"] = kwargs["code_verifier"]
        headers: dict[str, str] = {}
        if self.client_secret:  # client_secret_basic (RFC 6749 §2.3.1: each part form-encoded)
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:  # a public client
            form["client_id"] = self.client_id
        status, token = await self.fetcher.request_json(
            "POST", endpoint, "the token endpoint", headers=headers, form=form
        )
        if "error" in token:
            raise OAuthError(error=str(token["error"]), description=token.get("error_description"))
        if status != 200 or not isinstance(token.get("access_token"), str):
            raise IdentityProviderError(
                f"the token endpoint at {endpoint} answered HTTP {status} without an access token"
            )
        return OAuth2Token.from_dict(token)

    async def userinfo(self, **kwargs: Any) -> UserInfo:
        """The userinfo endpoint's claims (OIDC Core §5.3), asked with the access token."""
        metadata = await self.load_server_metadata()
        endpoint = metadata.get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            raise IdentityProviderError("the provider's discovery document has no userinfo_endpoint")
        token = kwargs.get("token") or {}
        access = token.get("access_token") if isinstance(token, dict) else None
        if not isinstance(access, str):
            raise IdentityProviderError("there is no access token to ask the userinfo endpoint with")
        status, claims = await self.fetcher.request_json(
            "GET", endpoint, "the userinfo endpoint", headers={"Authorization": f"Bearer {access}"}
        )
        if status != 200:
            raise IdentityProviderError(f"the userinfo endpoint at {endpoint} answered HTTP {status}")
        return UserInfo(claims)


class _GuardedOAuth(OAuth):  # type: ignore[misc]
    oauth2_client_cls = GuardedOAuth2App


class OIDCSignIn:
    """The authorization-code flow (PKCE, nonce, state) against one OIDC provider."""

    NAME = "seawall"

    def __init__(self, settings: OIDCSettings, *, resolver: Resolver = resolve_host) -> None:
        self.settings = settings
        self.oauth = _GuardedOAuth()
        secret = settings.client_secret.get_secret_value() if settings.client_secret else None
        self.client: Any = self.oauth.register(
            self.NAME,
            client_id=settings.client_id,
            client_secret=secret,
            server_metadata_url=f"{settings.issuer}/.well-known/openid-configuration",
            client_kwargs={
                "scope": settings.scope,
                "code_challenge_method": "S256",
                "timeout": settings.timeout_s,
            },
        )
        self.fetcher = ProviderFetcher(
            timeout_s=settings.timeout_s,
            allow_private_hosts=settings.allow_private_hosts,
            setting="ui.oidc.allow_private_hosts",
            resolver=resolver,
        )
        self.client.fetcher, self.client.issuer = self.fetcher, settings.issuer

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once, under netguard's rules);
        :class:`~seawall.errors.IdentityProviderError` when it cannot be had."""
        return await self.client.load_server_metadata()  # type: ignore[no-any-return]

    async def start(self, request: Request, redirect_uri: str, login_hint: str | None = None) -> Any:
        """The redirect to the provider's authorization endpoint."""
        extra = {"login_hint": login_hint} if login_hint else {}
        return await self.client.authorize_redirect(request, redirect_uri, **extra)

    async def finish(self, request: Request) -> tuple[str, str, Role]:
        """Complete the flow on the callback: (e-mail, display name, role), or :class:`OIDCRefused`.

        Authlib checks state, exchanges the code and validates the ID token (signature, issuer,
        audience, expiry, nonce). Claims missing from the ID token come from the userinfo
        endpoint, whose ``sub`` must be the ID token's."""
        error = request.query_params.get("error")
        if error:
            description = request.query_params.get("error_description") or error
            raise OIDCRefused(f"the provider refused the sign-in: {description}")
        try:
            token = await self.client.authorize_access_token(request)
        except OAuthError as exc:
            raise OIDCRefused(f"the sign-in could not be completed: {exc.description or exc.error}") from exc
        except IdentityProviderError as exc:  # netguard refused an endpoint, or it did not answer
            log.warning("OIDC token exchange failed: %s", exc.message)
            raise OIDCUnavailable(f"the sign-in could not be completed: {exc.message}") from exc
        except (httpx.HTTPError, json.JSONDecodeError, ValueError) as exc:
            log.warning("OIDC token exchange failed: %s", exc)
            raise OIDCUnavailable("the sign-in could not be completed: the provider did not answer") from exc
        claims: dict[str, Any] = dict(token.get("userinfo") or {})
        if not claims.get("sub"):
            raise OIDCRefused("the provider sent no ID token")
        if "email" not in claims or "email_verified" not in claims:
            try:
                extra = dict(await self.client.userinfo(token=token))
            except IdentityProviderError as exc:
                log.warning("OIDC userinfo failed: %s", exc.message)
                raise OIDCUnavailable(f"the sign-in could not be completed: {exc.message}") from exc
            if extra.get("sub") != claims["sub"]:
                raise OIDCRefused("the provider's userinfo is about someone else")
            claims = {**extra, **{k: v for k, v in claims.items() if v is not None}}
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise OIDCRefused("the provider sent no e-mail address (request the 'email' scope)")
        if self.settings.require_verified_email and claims.get("email_verified") is not True:
            raise OIDCRefused(f"the provider has not verified {email}")
        role = self.settings.role_for(email)
        if role is None:
            raise OIDCRefused(f"{email} is not allowed to use this seawall (ui.oidc.roles)")
        name = claims.get("name")
        return email.lower(), name if isinstance(name, str) and name else email, role


__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "CookieSessions",
    "GuardedOAuth2App",
    "OIDCRefused",
    "OIDCSignIn",
    "OIDCUnavailable",
    "StaffSessions",
    "current_session",
    "login_csrf",
    "sign_in",
    "submitted_csrf",
    "tokens_match",
]
