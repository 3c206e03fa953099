"""Who is calling: API keys, the end user behind a request, and the safety identifier sent upstream.

Everything here is pure (no storage, no I/O but the secret file of :mod:`seawall.secret`), so
the gateway and the key store can share it.

**API keys.** :func:`generate_api_key` returns ``prefix`` plus 32 random bytes (256 bits) from
:mod:`secrets`, base64url-encoded. Keys are stored only as :func:`hash_api_key` digests:
``sha256$<hex>``, a plain SHA-256 of the UTF-8 key. A fast, unsalted hash is the right tool for a
*generated* 256-bit key (it is what GitHub and Stripe do): there is nothing to guess, so the slow,
salted hashes made for human passwords (scrypt, argon2) would only slow every request down, and a
lookup by digest stays possible. Do not use it for human-chosen passwords. The ``sha256$`` tag
leaves room for another scheme later; :func:`verify_api_key` compares digests with
:func:`hmac.compare_digest` (constant time) and answers ``False`` for a stored hash it cannot
parse, never raises.

**Safety identifier.** :func:`safety_identifier` (from :mod:`seawall.secret`, where it is
described) is an HMAC of the tenant and the user id under the server secret. **The raw user id is
never sent upstream and never logged**: :func:`upstream_body` replaces whatever the client sent in
``user`` or ``safety_identifier`` with the digest, and :class:`EndUser` keeps its ``repr`` free of
the id. Use the raw id only as an internal key (the risk ledger, rate limits).

**End user.** A user whose token the gateway verified (:mod:`seawall.gateway.user_tokens`) comes
first: :func:`verified_end_user`. Otherwise :func:`resolve_end_user` takes, in order: the trusted
header the app sets after its own login (only when one is configured; a client talking to seawall
directly could set any header, so an unconfigured header is ignored), the request's
``safety_identifier``, its ``user``; otherwise the caller is anonymous and gets a session id, the
one it presented in the session header or cookie, or a fresh random one (``new_session=True``: the
gateway should set the cookie). Every value must be a non-empty string of at most
:data:`MAX_ID_LENGTH` characters without control characters; anything else is a 400 that names the
field.

**Server secret.** :func:`load_or_create_secret` (also from :mod:`seawall.secret`) keeps the HMAC
key in a file of exactly :data:`SECRET_BYTES` bytes, mode 0600, created atomically on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, Literal

from seawall.errors import InvalidRequestError
from seawall.secret import SECRET_BYTES, load_or_create_secret, safety_identifier

API_KEY_BYTES = 32
"""Random bytes in a generated API key (256 bits)."""

MAX_ID_LENGTH = 256
"""Longest user id, safety identifier or session id accepted from a request, in characters."""

SESSION_HEADER = "x-seawall-session"
"""Default header an anonymous client presents its session id in."""

SESSION_COOKIE = "seawall_session"
"""Default cookie an anonymous client presents its session id in."""

_HASH_SCHEME = "sha256"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# C0 and C1 control characters, DEL, and the Unicode line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

Source = Literal["token", "header", "safety_identifier", "user", "session"]

#: Put before a verified user's id (from a token the gateway verified) to make the id it hashes
#: into the safety identifier. Ids from a request (header, ``user``, session) cannot contain its
#: control character, so an unverified request cannot take a verified user's safety identifier
#: by sending the same id in ``user``.
VERIFIED_PREFIX = "\x1fverified\x1f"


# ----------------------------------------------------------------- API keys


def generate_api_key(prefix: str = "sw-") -> str:
    """A new API key: ``prefix`` and 32 random bytes, base64url (43 characters)."""
    return prefix + secrets.token_urlsafe(API_KEY_BYTES)


def hash_api_key(key: str) -> str:
    """The form a key is stored in: ``sha256$`` and the hex SHA-256 of its UTF-8 bytes."""
    if not isinstance(key, str) or not key:
        raise ValueError("an API key must be a non-empty string")
    return f"{_HASH_SCHEME}${hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def verify_api_key(key: str, stored_hash: str) -> bool:
    """Whether ``key`` hashes to ``stored_hash``, compared in constant time.

    ``False`` for an empty or non-string key and for a stored hash of an unknown scheme or shape.
    """
    if not isinstance(key, str) or not key or not isinstance(stored_hash, str):
        return False
    scheme, sep, digest = stored_hash.partition("$")
    if not sep or scheme != _HASH_SCHEME or not _HEX64.fullmatch(digest):
        return False
    candidate = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return hmac.compare_digest(candidate.encode("ascii"), digest.encode("ascii"))


# ----------------------------------------------------------------- end user


@dataclass(frozen=True)
class EndUser:
    """The person behind a request.

    ``id`` is the raw identifier, for internal keys only (risk ledger, rate limits): never send
    it upstream or log it; its ``repr`` leaves it out.
    """

    id: str = field(repr=False)
    anonymous: bool
    source: Source
    new_session: bool = False
    """True when seawall minted the session id just now (the gateway should hand it to the client)."""


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever the case of the mapping's keys (None when absent)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def _check_id(value: Any, what: str, param: str | None) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{what} must be a string, not {type(value).__name__}", param=param)
    if not value:
        raise InvalidRequestError(f"{what} must not be empty", param=param)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRequestError(
            f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}", param=param
        )
    if _CONTROL.search(value):
        raise InvalidRequestError(f"{what} must not contain control characters", param=param)
    return value


def _session_from_cookie(cookie_header: str, cookie_name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    with contextlib.suppress(CookieError):
        jar.load(cookie_header)
    morsel = jar.get(cookie_name)
    return morsel.value if morsel is not None else None


def resolve_end_user(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    trusted_header: str | None,
    *,
    session_header: str | None = SESSION_HEADER,
    session_cookie: str | None = SESSION_COOKIE,
) -> EndUser:
    """The end user of a chat request: trusted header, ``safety_identifier``, ``user``, else a session.

    ``headers`` are looked up case-insensitively. ``trusted_header`` is honoured only when it is
    configured (not None); the session header and cookie (either may be turned off with None)
    are read only for anonymous traffic. A JSON ``null`` counts as absent.
    """
    if trusted_header:
        value = header_value(headers, trusted_header)
        if value is not None:
            user_id = _check_id(value, f"the {trusted_header} header", None)
            return EndUser(user_id, anonymous=False, source="header")
    for name in ("safety_identifier", "user"):
        value = body.get(name)
        if value is not None:
            user_id = _check_id(value, f"'{name}'", name)
            source: Source = "safety_identifier" if name == "safety_identifier" else "user"
            return EndUser(user_id, anonymous=False, source=source)
    presented: str | None = None
    if session_header:
        value = header_value(headers, session_header)
        if value is not None:
            presented = _check_id(value, f"the {session_header} header", None)
    if presented is None and session_cookie:
        cookies = header_value(headers, "cookie")
        value = _session_from_cookie(cookies, session_cookie) if cookies else None
        if value is not None:
            presented = _check_id(value, f"the {session_cookie} cookie", None)
    if presented is not None:
        return EndUser(presented, anonymous=True, source="session")
    return EndUser(secrets.token_urlsafe(16), anonymous=True, source="session", new_session=True)


def verified_end_user(user_id: str) -> EndUser:
    """The end user of a request whose user token the gateway verified (``user_id``: the token's
    user claim); see :data:`VERIFIED_PREFIX`."""
    return EndUser(VERIFIED_PREFIX + user_id, anonymous=False, source="token")


def upstream_body(body: Mapping[str, Any], safety_id: str) -> dict[str, Any]:
    """A copy of ``body`` for the upstream: ``safety_identifier`` is ``safety_id``, ``user`` is gone.

    ``safety_id`` must be a digest from :func:`safety_identifier` (64 lowercase hex characters);
    anything else is refused with ``ValueError``, so a raw id cannot be passed by mistake.
    """
    if not isinstance(safety_id, str) or not _HEX64.fullmatch(safety_id):
        raise ValueError("safety_id must be a digest from safety_identifier(), not a raw user id")
    copy = dict(body)
    copy.pop("user", None)
    copy["safety_identifier"] = safety_id
    return copy


__all__ = [
    "MAX_ID_LENGTH",
    "SECRET_BYTES",
    "SESSION_COOKIE",
    "SESSION_HEADER",
    "VERIFIED_PREFIX",
    "EndUser",
    "generate_api_key",
    "hash_api_key",
    "header_value",
    "load_or_create_secret",
    "resolve_end_user",
    "safety_identifier",
    "upstream_body",
    "verified_end_user",
    "verify_api_key",
]
