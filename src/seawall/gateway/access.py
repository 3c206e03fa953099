"""Who is calling: app API keys, from the settings or made with ``seawall keys create``.

Keys made with the CLI are stored hashed (:func:`~seawall.gateway.identity.hash_api_key`);
each belongs to a tenant, which then names the app in safety identifiers, limits and the
audit, and has a scope: ``all`` (every app route) or ``feedback`` (a key meant only for user
reports, safe to put in a web page: every other app route answers it 403 ``api_key_scope``).
A key is required when ``gateway.require_api_key`` says so, or (None) as soon as any key exists.
Lookups are cached for :data:`CACHE_TTL_S`, so a revoked key stops working
on every replica within that time.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from seawall.bearer import bearer_token
from seawall.errors import AuthenticationError, PermissionDeniedError
from seawall.gateway.identity import hash_api_key
from seawall.store.base import ApiKey, KeyScope, KeyStore

#: Seconds a key lookup (and whether any key exists) is reused before the store is asked again.
CACHE_TTL_S = 5.0
#: Most key lookups kept in the cache.
CACHE_SIZE = 1024
#: What a cache-only lookup answers when the cache has no answer.
_UNKNOWN = object()


@dataclass(frozen=True)
class Caller:
    """The authenticated app: its key's id (None without a key) and tenant."""

    key_id: str | None
    tenant: str


class KeyAuthenticator:
    """Checks a request's bearer token against the configured keys and the store's keys."""

    def __init__(
        self,
        static_keys: Sequence[SecretStr],
        store: KeyStore | None,
        *,
        default_tenant: str,
        require: bool | None = None,
    ) -> None:
        self._static = [key.get_secret_value().encode() for key in static_keys]
        self.store = store
        self.default_tenant = default_tenant
        self.require = require
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._any_key: tuple[float, bool] | None = None

    def authenticate(self, authorization: str | None, *, purpose: KeyScope = "all") -> Caller:
        """The caller, or 401 when a key is required and this one is missing, unknown or revoked;
        403 for a key whose scope does not cover ``purpose`` (a feedback key anywhere but
        ``POST /v1/feedback``, which passes ``purpose="feedback"``). May ask the store (blocking)."""
        caller = self._authenticate(authorization, purpose, cached_only=False)
        assert caller is not None
        return caller

    def authenticate_cached(self, authorization: str | None, *, purpose: KeyScope = "all") -> Caller | None:
        """What :meth:`authenticate` answers (the caller, or the same error) when that needs no
        store call (a key of the settings, a lookup still cached, or no key where whether one is
        required is known); None when it does: then call :meth:`authenticate` off the event loop."""
        return self._authenticate(authorization, purpose, cached_only=True)

    def _authenticate(
        self, authorization: str | None, purpose: KeyScope, *, cached_only: bool
    ) -> Caller | None:
        token = bearer_token(authorization)
        if token is not None:
            offered = token.encode()
            # Constant-time against every configured key, so timing reveals no prefix.
            if any(hmac.compare_digest(offered, key) for key in self._static):
                return Caller("settings", self.default_tenant)
            found = self._lookup(token, cached_only=cached_only)
            if found is _UNKNOWN:
                return None
            stored = found if isinstance(found, ApiKey) else None
            if stored is not None:
                if not stored.active:
                    raise AuthenticationError("This API key was revoked.", code="api_key_revoked")
                if stored.scope != "all" and stored.scope != purpose:
                    raise PermissionDeniedError(
                        f"This API key is for {stored.scope} only (POST /v1/feedback).", code="api_key_scope"
                    )
                return Caller(stored.id, stored.tenant)
        required = self._required(cached_only=cached_only)
        if required is None:
            return None
        if not required:
            return Caller(None, self.default_tenant)
        if token is None:
            raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.")
        raise AuthenticationError("Incorrect API key provided.")

    def _lookup(self, token: str, *, cached_only: bool = False) -> ApiKey | object | None:
        """The stored key of ``token`` (None: no such key); :data:`_UNKNOWN` when only the cache
        may be asked (``cached_only``) and it has no answer."""
        if self.store is None:
            return None
        key_hash = hash_api_key(token)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_hash)
            if cached is not None and cached[0] > now:
                return cached[1]
        if cached_only:
            return _UNKNOWN
        found = self.store.find_key(key_hash)
        with self._lock:
            self._cache[key_hash] = (now + CACHE_TTL_S, found)
            self._cache.move_to_end(key_hash)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return found

    def _required(self, *, cached_only: bool = False) -> bool | None:
        """Whether a key is required; None when only the cache may be asked and it has no answer."""
        if self.require is not None:
            return self.require
        if self._static:
            return True
        if self.store is None:
            return False
        now = time.monotonic()
        with self._lock:
            if self._any_key is not None and self._any_key[0] > now:
                return self._any_key[1]
        if cached_only:
            return None
        exists = bool(self.store.list_keys())
        with self._lock:
            self._any_key = (now + CACHE_TTL_S, exists)
        return exists


__all__ = ["CACHE_TTL_S", "Caller", "KeyAuthenticator", "bearer_token"]
