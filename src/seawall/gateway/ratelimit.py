"""Rate limits per app API key and per end user, counted in the store (shared by replicas)."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.clock import Clock, utc_now
from seawall.errors import RateLimitError
from seawall.gateway.tiers import ResolvedTier
from seawall.ratelimit import enforce, refused
from seawall.settings import RateLimit, RateLimitSettings
from seawall.store.base import CounterStore, Hit, RateLimitResult


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
        """Count the request (see :meth:`counts`), one store call per bucket; 429 at the first full one."""
        counts = self.counts(
            key_id, tenant, safety_id, address_without_session=address_without_session, tier=tier
        )
        for count in counts:
            hit = count.hit
            enforce(self.store, hit.bucket, hit.limit, hit.window_s, self.clock(), count.refusal)

    def counts(
        self,
        key_id: str | None,
        tenant: str,
        safety_id: str,
        *,
        address_without_session: str | None = None,
        tier: ResolvedTier | None = None,
    ) -> list[Count]:
        """The buckets a request counts in, in order: the user's, the address's, the key's.

        ``address_without_session``: the client address of an anonymous request that presented
        no session (its fresh session id would start a new per-user count every time). ``tier``:
        the user's trust tier, whose per-user limit replaces ``per_user`` (counted in a bucket of
        the tier's own, so tiers with different windows never share a count)."""
        counts: list[Count] = []
        if tier is not None:
            if tier.rate_limit is not None:
                whose = f"this user (tier {tier.name})"
                counts.append(_count(f"user:{tenant}:{safety_id}:{tier.name}", tier.rate_limit, whose))
        elif self.settings.per_user is not None:
            counts.append(_count(f"user:{tenant}:{safety_id}", self.settings.per_user, "this user"))
        if self.settings.per_address_without_session is not None and address_without_session:
            limit = self.settings.per_address_without_session
            bucket = f"address:{tenant}:{address_without_session}"
            counts.append(_count(bucket, limit, "requests without a session"))
        if self.settings.per_key is not None and key_id is not None:
            counts.append(_count(f"key:{key_id}", self.settings.per_key, "this API key"))
        return counts


@dataclass(frozen=True)
class Count:
    """One count a request makes: the hit, and the refusal (429) when its bucket is full."""

    hit: Hit
    refusal: str
    code: str | None = None

    def refused(self, result: RateLimitResult) -> RateLimitError | None:
        """The 429 if the store refused this count (``result``), else None."""
        return refused(result, self.refusal, code=self.code)


def _count(bucket: str, limit: RateLimit, whose: str) -> Count:
    refusal = f"Rate limit reached for {whose}: {limit.requests} requests per {limit.window_s} s."
    return Count(Hit(bucket, limit.requests, limit.window_s), refusal)


__all__ = ["Count", "RateLimiter"]
