"""Rate limits per app API key and per end user, counted in the store (shared by replicas)."""

from __future__ import annotations

from seawall.clock import Clock, utc_now
from seawall.gateway.tiers import ResolvedTier
from seawall.ratelimit import enforce
from seawall.settings import RateLimit, RateLimitSettings
from seawall.store.base import CounterStore


class RateLimiter:
    """Counts one request against the caller's key and user buckets; 429 when one is full.

    The user's bucket is counted first; a request refused by the key's limit has still
    used one of the user's requests (limits are ceilings, not quotas).
    """

    def __init__(self, store: CounterStore, settings: RateLimitSettings, *, clock: Clock = utc_now) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def check(
        self,
        key_id: str | None,
        tenant: str,
        safety_id: str,
        *,
        address_without_session: str | None = None,
        tier: ResolvedTier | None = None,
    ) -> None:
        """``address_without_session``: the client address of an anonymous request that presented
        no session (its fresh session id would start a new per-user count every time). ``tier``:
        the user's trust tier, whose per-user limit replaces ``per_user`` (counted in a bucket of
        the tier's own, so tiers with different windows never share a count)."""
        if tier is not None:
            if tier.rate_limit is not None:
                whose = f"this user (tier {tier.name})"
                self._hit(f"user:{tenant}:{safety_id}:{tier.name}", tier.rate_limit, whose)
        elif self.settings.per_user is not None:
            self._hit(f"user:{tenant}:{safety_id}", self.settings.per_user, "this user")
        if self.settings.per_address_without_session is not None and address_without_session:
            limit = self.settings.per_address_without_session
            self._hit(f"address:{tenant}:{address_without_session}", limit, "requests without a session")
        if self.settings.per_key is not None and key_id is not None:
            self._hit(f"key:{key_id}", self.settings.per_key, "this API key")

    def _hit(self, bucket: str, limit: RateLimit, whose: str) -> None:
        refusal = f"Rate limit reached for {whose}: {limit.requests} requests per {limit.window_s} s."
        enforce(self.store, bucket, limit.requests, limit.window_s, self.clock(), refusal)


__all__ = ["RateLimiter"]
