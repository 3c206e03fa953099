"""Verified end users: an end user's token (an OIDC ID token or a JWT access token from the app's
identity provider) checked against the provider's published keys.

:class:`UserTokenVerifier` answers a :class:`VerifiedUser` (the user id from
``gateway.user_tokens.user_claim`` and every claim, for the trust tiers) or raises
:class:`~seawall.errors.UserTokenError`, a 401 whose message says which check failed. The checks,
with joserfc (the JOSE library under Authlib) doing the cryptography:

1. The token is a signed compact JWT (three parts; an encrypted five-part JWE is refused) of at
   most :data:`MAX_TOKEN_CHARS` characters.
2. Its ``alg`` is one of ``algorithms`` (asymmetric only: the settings refuse ``none`` and the HMAC
   family, so a provider's public key can never serve as an HMAC secret).
3. A key of the provider's JWKS verifies the signature: the key with the token's ``kid`` (a token
   without ``kid``: each key of the JWKS), of the type the algorithm needs (RSA for RS/PS, EC with
   the matching curve for ES, OKP for EdDSA), whose own ``alg`` and ``use``, if the JWKS states
   them, allow it. Symmetric (``oct``) and encryption keys of a JWKS are ignored.
4. The claims: ``iss`` is ``issuer``; ``aud`` names one of ``audiences``; ``exp`` is present and
   not past; ``nbf`` and ``iat`` are not in the future; each with ``leeway_s`` of clock skew.
5. ``user_claim`` holds a non-empty string (or number) of at most 256 characters, without control
   characters.

:class:`ProviderKeys` keeps the JWKS. It is read from ``cache_file`` at start-up (a gateway that
cannot reach the provider verifies tokens with the keys it fetched before), fetched when none are
cached, fetched again when a token names a ``kid`` the cache lacks (the provider rotated its keys)
and when the cached copy is ``refresh_s`` old; never more than once per
``min_refresh_interval_s`` (failed attempts count), so tokens with made-up ``kid`` values cost the
provider one request per interval, not one per token. Concurrent requests that need a fetch share
it. A failed fetch keeps the keys cached; with none cached the request is a 503
(:class:`~seawall.errors.IdentityProviderError`).

Fetches (the discovery document, then the JWKS) follow :mod:`seawall.netguard`: the URL must be
https (http only to a loopback address: the settings check it), the host is resolved once and
every address must be public unless ``allow_private_hosts``, the connection goes to the checked
address (``Host`` header and TLS server name stay the host's), redirects are not followed, no proxy
from the environment is used, and a reply over :data:`MAX_DOCUMENT_BYTES` is refused. The
discovery document's ``issuer`` must be the configured issuer (OpenID Connect Discovery 1.0, 4.3).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key
from joserfc.jws import JWSRegistry
from joserfc.jwt import JWTClaimsRegistry

from seawall.errors import IdentityProviderError, UserTokenError
from seawall.gateway.identity import header_value
from seawall.netguard import NonPublicAddress, Resolver, check_addresses, literal_address, resolve_host
from seawall.settings import UserTokenSettings, secure_url

log = logging.getLogger("seawall.gateway")

#: Longest token accepted, in characters (real ID tokens are 1-3 KB).
MAX_TOKEN_CHARS = 16_384
#: Largest discovery document or JWKS accepted, in bytes.
MAX_DOCUMENT_BYTES = 1_048_576
#: Longest user id taken from ``user_claim``, in characters (the gateway's limit on user ids).
MAX_USER_ID_CHARS = 256
#: Version of the cache file's layout.
CACHE_VERSION = 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The key type (and curve) each accepted algorithm needs.
_KEY_FOR_ALG: dict[str, tuple[str, str | None]] = {
    **{name: ("RSA", None) for name in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
    "Ed25519": ("OKP", "Ed25519"),
}


@dataclass(frozen=True)
class VerifiedUser:
    """The user a verified token names: the id (from ``user_claim``) and every claim of the token.

    ``id`` is a raw identifier: never send it upstream or log it (its ``repr`` leaves it out)."""

    id: str = field(repr=False)
    claims: Mapping[str, Any] = field(repr=False)


def bearer_or_bare(value: str) -> str:
    """The token of a header value: ``Bearer <token>`` or the token alone."""
    value = value.strip()
    scheme, sep, rest = value.partition(" ")
    if sep and scheme.lower() == "bearer":
        return rest.strip()
    return value


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    seconds = abs(int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


# ---------------------------------------------------------------------------------- the keys


class ProviderFetcher:
    """Asks an identity provider for its JSON documents (discovery, JWKS; and for the web UI's
    sign-in the token exchange and userinfo) under :mod:`seawall.netguard`'s rules: the host is
    resolved once and each address checked (public only unless ``allow_private_hosts``;
    ``setting`` names the setting in the refusal), the connection goes to a checked address (TLS
    still verifies the host name), no redirects, no proxies from the environment, at most
    :data:`MAX_DOCUMENT_BYTES`, all within ``timeout_s``. Every failure is an
    :class:`~seawall.errors.IdentityProviderError` that says what and why. Also used by the web
    UI's OIDC sign-in (:mod:`seawall.ui.auth`)."""

    def __init__(
        self,
        *,
        timeout_s: float,
        allow_private_hosts: bool,
        setting: str,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.timeout_s = timeout_s
        self.allow_private_hosts = allow_private_hosts
        self.setting = setting
        self._resolve = resolver
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
            # No reuse: each connection goes to an address checked for this fetch (netguard).
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get_json(self, url: str, what: str) -> dict[str, Any]:
        """GET ``url`` from a checked address of its host (see the class) and parse the JSON
        object, all within ``timeout_s``; any answer but HTTP 200 is an error."""
        status, body = await self._fetch("GET", url, what, {}, None)
        if status != 200:
            raise IdentityProviderError(f"{what} at {url} answered HTTP {status}")
        return _json_object(body, url, what, status)

    async def request_json(
        self,
        method: str,
        url: str,
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Send ``method`` to ``url`` (with ``form`` as an urlencoded body) under the same rules,
        and give the HTTP status with the JSON object that came back, whatever the status (an
        OAuth token endpoint says what went wrong in a 400's JSON); a body that is no JSON object
        is an error that names the status."""
        status, body = await self._fetch(method, url, what, dict(headers or {}), form)
        return status, _json_object(body, url, what, status)

    async def _fetch(
        self, method: str, url: str, what: str, headers: dict[str, str], form: Mapping[str, str] | None
    ) -> tuple[int, bytes]:
        """The status and body, all within ``timeout_s``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch_body(method, url, what, headers, form)
        except TimeoutError:
            raise IdentityProviderError(
                f"{what} at {url} could not be fetched within {self.timeout_s:g} s"
            ) from None

    async def _fetch_body(
        self, method: str, url: str, what: str, headers: dict[str, str], form: Mapping[str, str] | None
    ) -> tuple[int, bytes]:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise IdentityProviderError(f"{what}: {url!r} is not a URL ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise IdentityProviderError(f"{what}: {url!r} is not an http(s) URL")
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        literal = literal_address(host)
        try:
            addresses = [str(literal)] if literal is not None else list(await self._resolve(host, port))
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise IdentityProviderError(f"{what}: the host {host!r} could not be resolved ({exc})") from exc
        if not addresses:
            raise IdentityProviderError(f"{what}: the host {host!r} could not be resolved")
        try:
            checked = check_addresses(addresses, allow_private=self.allow_private_hosts)
        except NonPublicAddress as exc:
            raise IdentityProviderError(
                f"{what}: the host {host!r} is or resolves to the non-public address {exc}; set "
                f"{self.setting} to fetch from a provider inside your network"
            ) from None
        failure: Exception | None = None
        for address in checked:
            try:
                status, body = await self._download(method, parsed, address, what, headers, form)
                break
            except httpx.ConnectError as exc:  # the next address, as browsers do
                failure = exc
            except httpx.HTTPError as exc:
                raise IdentityProviderError(f"{what} at {url} could not be fetched: {exc!r}") from exc
        else:
            raise IdentityProviderError(f"{what} at {url} could not be fetched: {failure!r}")
        return status, body

    async def _download(
        self,
        method: str,
        url: httpx.URL,
        address: str,
        what: str,
        headers: dict[str, str],
        form: Mapping[str, str] | None,
    ) -> tuple[int, bytes]:
        host = url.host
        async with self._client.stream(
            method,
            url.copy_with(host=address),
            headers={"Accept": "application/json", **headers, "Host": url.netloc.decode("ascii")},
            data=dict(form) if form is not None else None,
            extensions={"sni_hostname": host},
        ) as response:
            if response.is_redirect:  # never followed: a redirect could name any address
                raise IdentityProviderError(
                    f"{what} at {url} answered HTTP {response.status_code} (a redirect, not followed)"
                )
            chunks: list[bytes] = []
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > MAX_DOCUMENT_BYTES:
                    raise IdentityProviderError(f"{what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes")
                chunks.append(chunk)
        return response.status_code, b"".join(chunks)


def _json_object(body: bytes, url: str, what: str, status: int) -> dict[str, Any]:
    """A provider's answer as a JSON object; an error naming the HTTP status when it is not one."""
    answered = "" if status == 200 else f" (HTTP {status})"
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise IdentityProviderError(f"{what} at {url} is not JSON{answered}") from exc
    if not isinstance(document, dict):
        raise IdentityProviderError(f"{what} at {url} is not a JSON object{answered}")
    return document


class ProviderKeys:
    """The identity provider's signing keys: cached in memory and on disk, fetched when needed."""

    def __init__(
        self,
        settings: UserTokenSettings,
        *,
        resolver: Resolver = resolve_host,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.issuer is None:
            raise ValueError("ProviderKeys needs user_tokens.issuer")
        self.settings = settings
        self.issuer: str = settings.issuer
        self.clock = clock
        self.cache_path = settings.cache_path()
        self._fetcher = ProviderFetcher(
            timeout_s=settings.timeout_s,
            allow_private_hosts=settings.allow_private_hosts,
            setting="gateway.user_tokens.allow_private_hosts",
            resolver=resolver,
        )
        self._lock = asyncio.Lock()
        self.keys: list[Key] = []
        #: When the keys in use were fetched (wall clock; 0: never), and the last attempt to fetch.
        self.fetched_at = 0.0
        self._attempted_at: float | None = None
        self._last_error: str | None = None
        #: Fetches made (successful or not), for the operator and the tests.
        self.fetches = 0
        self._load_cache()

    async def aclose(self) -> None:
        await self._fetcher.aclose()

    # ------------------------------------------------------------------ lookup

    async def candidates(self, kid: str | None) -> list[Key]:
        """The keys that may have signed a token with this ``kid`` (all, without one), fetching
        the JWKS first when none is cached, when it is old, or when ``kid`` is unknown (each only
        as often as ``min_refresh_interval_s`` allows)."""
        if not self.keys:
            await self._refresh(reason="no keys cached yet")
            if not self.keys:
                raise IdentityProviderError(
                    "The identity provider's keys are not available to verify the user token"
                    + (f": {self._last_error}" if self._last_error else "")
                    + "."
                )
        elif self.clock() - self.fetched_at >= self.settings.refresh_s:
            await self._refresh(reason="the cached keys are old")
        found = self._matching(kid)
        if not found and kid is not None:
            await self._refresh(reason=f"a token names the unknown key {kid!r}")
            found = self._matching(kid)
        return found

    def _matching(self, kid: str | None) -> list[Key]:
        if kid is None:
            return list(self.keys)
        return [key for key in self.keys if key.kid == kid]

    # ------------------------------------------------------------------ fetching

    def _may_fetch(self) -> bool:
        if self._attempted_at is None:
            return True
        return self.clock() - self._attempted_at >= self.settings.min_refresh_interval_s

    async def _refresh(self, *, reason: str) -> None:
        """Fetch the JWKS unless a fetch was attempted within ``min_refresh_interval_s`` (a
        request waiting on another's fetch uses its result). A failure keeps the cached keys."""
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted or not self._may_fetch():
                return  # another request fetched (or tried) meanwhile, or it is too soon
            self._attempted_at = self.clock()
            self.fetches += 1
            try:
                jwks_url = self.settings.jwks_url or await self._discover()
                document = await self._get_json(jwks_url, "the JWKS")
                keys, raw = _signing_keys(document)
            except IdentityProviderError as exc:
                self._last_error = exc.message
                log.warning(
                    "cannot fetch the identity provider's keys (%s): %s%s",
                    reason,
                    exc.message,
                    "; the cached keys stay in use" if self.keys else "",
                )
                return
            self.keys, self.fetched_at, self._last_error = keys, self.clock(), None
            log.info("fetched %d signing key(s) of %s (%s)", len(keys), self.issuer, reason)
            self._save_cache(jwks_url, raw)

    async def _discover(self) -> str:
        url = f"{self.issuer}/.well-known/openid-configuration"
        document = await self._get_json(url, "the discovery document")
        if document.get("issuer") != self.issuer:
            raise IdentityProviderError(
                f"the discovery document at {url} names the issuer {document.get('issuer')!r}, "
                f"not {self.issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IdentityProviderError(f"the discovery document at {url} has no jwks_uri")
        try:
            return secure_url(jwks_uri, "the discovery document's jwks_uri")
        except ValueError as exc:
            raise IdentityProviderError(str(exc)) from None

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        return await self._fetcher.get_json(url, what)

    # ------------------------------------------------------------------ the cache file

    def _load_cache(self) -> None:
        path = self.cache_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring the cached keys in %s: %s", path, exc)
            return
        if (
            not isinstance(data, dict)
            or data.get("version") != CACHE_VERSION
            or data.get("issuer") != self.issuer
            or (self.settings.jwks_url is not None and data.get("jwks_url") != self.settings.jwks_url)
        ):
            log.warning("ignoring the cached keys in %s: they are for another provider or version", path)
            return
        try:
            keys, _ = _signing_keys(data.get("jwks"))
        except IdentityProviderError as exc:
            log.warning("ignoring the cached keys in %s: %s", path, exc.message)
            return
        fetched_at = data.get("fetched_at")
        self.keys = keys
        self.fetched_at = float(fetched_at) if isinstance(fetched_at, int | float) else 0.0

    def _save_cache(self, jwks_url: str, raw: list[dict[str, Any]]) -> None:
        """Write the public keys to the cache file, atomically (a crash leaves the old file whole)."""
        path = self.cache_path
        data = {
            "version": CACHE_VERSION,
            "issuer": self.issuer,
            "jwks_url": jwks_url,
            "fetched_at": self.fetched_at,
            "jwks": {"keys": raw},
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".jwks-", dir=path.parent)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(data, out, indent=1)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("cannot keep the identity provider's keys in %s: %s", path, exc)


def _signing_keys(document: Any) -> tuple[list[Key], list[dict[str, Any]]]:
    """The usable signing keys of a JWKS (and their public JSON, for the cache)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise IdentityProviderError("the JWKS is not an object with a 'keys' array")
    keys: list[Key] = []
    raw: list[dict[str, Any]] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # symmetric (oct) or unknown key types are never used to verify
        if entry.get("use", "sig") != "sig":
            continue
        public = {name: value for name, value in entry.items() if name not in _PRIVATE_MEMBERS}
        try:
            key = import_key(public)
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("skipping a key of the JWKS (kid %r): %s", entry.get("kid"), exc)
            continue
        keys.append(key)
        raw.append(public)
    if not keys:
        raise IdentityProviderError("the JWKS holds no usable signing key (RSA, EC or OKP)")
    return keys, raw


#: Members of a JWK that belong to a private key; never kept or used.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


# ---------------------------------------------------------------------------------- verification


class UserTokenVerifier:
    """Verifies end users' tokens for the gateway (see the module)."""

    def __init__(
        self,
        settings: UserTokenSettings,
        *,
        keys: ProviderKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.issuer is None:
            raise ValueError("UserTokenVerifier needs user_tokens.issuer")
        self.settings = settings
        self.issuer: str = settings.issuer
        self.clock = clock
        self.keys = keys or ProviderKeys(settings, clock=clock)
        self.where = f"the {settings.header} header"

    async def aclose(self) -> None:
        await self.keys.aclose()

    def _refuse(self, reason: str, code: str | None = None) -> UserTokenError:
        return UserTokenError(f"The user token ({self.where}) {reason}.", code=code)

    def token_of(self, headers: Mapping[str, str]) -> str | None:
        """The token the request carries in the configured header, or None."""
        value = header_value(headers, self.settings.header)
        if value is None:
            return None
        token = bearer_or_bare(value)
        if not token:
            raise self._refuse("is empty")
        return token

    def missing(self) -> UserTokenError:
        """The 401 for a request without a token when unverified users are refused."""
        return UserTokenError(
            f"A verified user token is required: send the user's token from {self.issuer} in {self.where}.",
            code="user_token_required",
        )

    async def verify(self, token: str) -> VerifiedUser:
        """The user ``token`` names, or :class:`UserTokenError` saying which check failed."""
        header = self._header(token)
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise self._refuse("names no signature algorithm ('alg')")
        if alg.lower() == "none":
            raise self._refuse("is not signed (alg 'none'); only signed tokens are accepted")
        if alg not in self.settings.algorithms:
            accepted = ", ".join(self.settings.algorithms)
            raise self._refuse(f"is signed with {alg}, which is not accepted here (accepted: {accepted})")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise self._refuse("has a 'kid' that is not a string")
        keys = await self.keys.candidates(kid)
        if not keys:
            raise self._refuse(
                f"is signed by a key the identity provider does not publish (kid {kid!r} is not in its JWKS)"
            )
        usable = [key for key in keys if _fits(key, alg)]
        if not usable:
            raise self._refuse(f"names key {kid!r}, which is not a {alg} key")
        claims = self._verified_claims(token, usable, alg, kid)
        self._check_claims(claims)
        return VerifiedUser(self._user_id(claims), claims)

    def _header(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_CHARS:
            raise self._refuse(f"is {len(token)} characters long; the limit is {MAX_TOKEN_CHARS}")
        parts = token.count(".") + 1
        if parts == 5:
            raise self._refuse("is encrypted (JWE); send a signed token (JWS)")
        if parts != 3:
            raise self._refuse("is not a JWT (three base64url parts separated by dots)")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise self._refuse("is not a JWT: its header or payload cannot be decoded") from None
        return dict(header)

    def _verified_claims(self, token: str, keys: Sequence[Key], alg: str, kid: str | None) -> dict[str, Any]:
        # Header members joserfc does not know (some providers add their own) are let through; a
        # member the token marks critical ('crit') must still be understood.
        registry = JWSRegistry(strict_check_header=False, algorithms=[alg])
        for key in keys:
            try:
                return dict(jwt.decode(token, key, registry=registry).claims)
            except BadSignatureError:
                continue
            except JoseError as exc:
                raise self._refuse(f"cannot be verified: {exc.description or exc.error}") from None
            except (ValueError, TypeError):
                raise self._refuse("is not a JWT: its payload is not a JSON object") from None
        named = f"the provider's key {kid!r}" if kid is not None else "any of the provider's keys"
        raise self._refuse(f"has a signature that does not verify with {named}: it was signed by another key")

    def _check_claims(self, claims: dict[str, Any]) -> None:
        now = self.clock()
        registry = JWTClaimsRegistry(
            now=int(now),
            leeway=self.settings.leeway_s,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "values": list(self.settings.audiences)},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            expired = float(claims["exp"])
            raise self._refuse(
                f"expired at {_when(expired)} ({_span(now - expired)} ago)", code="user_token_expired"
            ) from None
        except MissingClaimError as exc:
            names = ", ".join(f"'{name}'" for name in exc.claim.split(","))
            raise self._refuse(f"has no {names} claim") from None
        except ClaimError as exc:
            raise self._refuse(self._claim_problem(exc.claim, claims, now)) from None

    def _claim_problem(self, name: str, claims: Mapping[str, Any], now: float) -> str:
        value = claims.get(name)
        if name == "iss":
            return f"was issued by {value!r}, not by {self.issuer!r}"
        if name == "aud":
            accepted = ", ".join(repr(audience) for audience in self.settings.audiences)
            return f"is for the audience {value!r}, not this gateway's ({accepted})"
        if name == "nbf" and isinstance(value, int | float):
            return f"is not valid before {_when(value)} (in {_span(value - now)})"
        if name == "iat" and isinstance(value, int | float):
            return f"was issued in the future ({_when(value)})"
        return f"has an invalid '{name}' claim"

    def _user_id(self, claims: Mapping[str, Any]) -> str:
        name = self.settings.user_claim
        value = claims.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise self._refuse(f"has no '{name}' claim to identify the user (gateway.user_tokens.user_claim)")
        if len(value) > MAX_USER_ID_CHARS or _CONTROL.search(value):
            raise self._refuse(
                f"has a '{name}' claim that cannot identify a user (over {MAX_USER_ID_CHARS} characters "
                "or control characters)"
            )
        return value


def _fits(key: Key, alg: str) -> bool:
    """Whether ``key`` may verify an ``alg`` signature: its type (and curve), and its own ``alg``."""
    kty, curve = _KEY_FOR_ALG[alg]
    if key.key_type != kty:
        return False
    stated = key.get("alg")
    if stated is not None and stated != alg and not (alg == "EdDSA" and stated == "Ed25519"):
        return False
    if curve is not None and isinstance(key, ECKey | OKPKey) and key.curve_name != curve:
        return False
    return isinstance(key, RSAKey | ECKey | OKPKey)


__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_TOKEN_CHARS",
    "ProviderFetcher",
    "ProviderKeys",
    "UserTokenVerifier",
    "VerifiedUser",
    "bearer_or_bare",
]
