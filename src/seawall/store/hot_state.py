"""The hot state of many gateway replicas on Redis: rate-limit counters and users' standing.

With several replicas on one PostgreSQL database every request costs database round trips for
its rate-limit buckets and the user's standing. ``store.cache_url: redis://...`` moves that hot
path to Redis (:class:`HotStateSqlStore`, an :class:`~seawall.store.sql.SqlStore` whose
:meth:`hit`, :meth:`get_user` and :meth:`set_user` go through :class:`RedisHotState`), while the
database stays the system of record: a user's standing is always written to the database first,
and audit records, review items and everything else never touch Redis.

* **Rate limits.** The same sliding window over two fixed windows as every other counter store
  (:mod:`seawall.store.windows`), counted by one Lua script (one round trip, atomic in Redis):
  read the previous window, and increment the current one only while it has room. Window keys
  expire on their own two windows after they start.
* **Standing.** A read-through cache of :class:`~seawall.store.base.UserState` under a version
  key per user: a reader fetches the version and the entry of that version in one script call;
  on a miss it reads the database and stores the entry under the version it read, for
  ``cache_ttl_s``. A writer updates the database, then increments the version, so every replica's
  next read misses and sees the change at once (a reader that raced the writer stored its stale
  entry under the old version, which nobody reads again).
* **Losing Redis.** Any Redis error (down, timeout, refused) switches this process to the
  database for ``cache_retry_s``, then Redis is tried again; requests never fail because of
  Redis. What that costs, stated: in the window where a process switches (either way) a rate-limit
  bucket is counted in two places, so it admits at most twice its limit in that window; a
  standing change written while Redis could not be told is seen by replicas still reading Redis
  after at most ``cache_ttl_s``. No block, review item or audit record is lost: they are in the
  database.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from seawall.clock import Clock, as_utc
from seawall.errors import ConfigurationError
from seawall.store.base import Admission, HitsFor, RateLimitResult, UserState
from seawall.store.sql import SqlStore
from seawall.store.windows import result, windows

if TYPE_CHECKING:
    import redis

log = logging.getLogger("seawall.store")

#: Prefix of every key seawall writes to Redis.
PREFIX = "seawall:"

# KEYS: the current window, the previous window. ARGV: limit, the previous window's weight, the
# seconds the current window's count is still needed (relative: callers' clocks may be anything).
# Returns {counted (0/1), current count, previous count}.
_HIT = """
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local most = math.floor(tonumber(ARGV[1]) - previous * tonumber(ARGV[2]) + 1e-9)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if most >= 1 and current < most then
  current = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return {1, current, previous}
end
return {0, current, previous}
"""

# KEYS: the user's version key. ARGV: the entry key's prefix. Returns {version, entry or false}.
_READ = """
local version = redis.call('GET', KEYS[1]) or '0'
return {version, redis.call('GET', ARGV[1] .. version)}
"""


class RedisHotState:
    """Counters and standing in Redis; every method raises ``redis.RedisError`` when Redis fails
    (:class:`HotStateSqlStore` decides what to do then)."""

    def __init__(self, url: str, *, timeout_s: float, ttl_s: float) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis is a runtime dependency
            raise ConfigurationError("store.cache_url needs the redis package (pip install redis)") from exc
        try:
            self.client: redis.Redis = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
            )
        except ValueError as exc:
            raise ConfigurationError(f"store.cache_url is not a Redis URL: {exc}") from exc
        self.ttl_s = ttl_s
        #: What a failing Redis raises (kept here so the hot path never imports anything).
        self.errors: type[Exception] = redis.RedisError
        self._hit = self.client.register_script(_HIT)
        self._read = self.client.register_script(_READ)

    def hit(self, bucket: str, limit: int, window_s: int, now: datetime) -> RateLimitResult:
        stamp, start, weight = windows(now, limit, window_s)
        key = f"{PREFIX}rl:{window_s}:{bucket}:"
        needed_s = max(1, math.ceil(start + 2 * window_s - stamp))
        counted, current, previous = self._hit(
            keys=[f"{key}{start}", f"{key}{start - window_s}"], args=[limit, repr(weight), needed_s]
        )
        return result(bool(counted), limit, int(current), int(previous), weight, start, window_s)

    def prune(self, now: datetime) -> int:
        """Delete the windows that no hit at ``now`` or later reads (their expiry does it too, on
        Redis's clock; this is for callers whose clock is their own); how many."""
        stamp = as_utc(now).timestamp()
        gone = 0
        for key in self.client.scan_iter(match=f"{PREFIX}rl:*", count=1000):
            window_s = key.removeprefix(f"{PREFIX}rl:").partition(":")[0]
            start = key.rpartition(":")[2]
            if float(start) + 2 * int(window_s) <= stamp:
                gone += int(self.client.delete(key))
        return gone

    def get_user(self, tenant: str, safety_id: str) -> tuple[str, UserState | None] | str:
        """The cached state as ``(version, state)``, or, on a miss, the version to store under."""
        version_key, entry_prefix = self._keys(tenant, safety_id)
        version, entry = self._read(keys=[version_key], args=[entry_prefix])
        if entry is None:
            return str(version)
        return str(version), _state_from_json(entry)

    def put_user(self, tenant: str, safety_id: str, version: str, state: UserState | None) -> None:
        _, entry_prefix = self._keys(tenant, safety_id)
        self.client.set(f"{entry_prefix}{version}", _state_to_json(state), ex=max(1, round(self.ttl_s)))

    def changed(self, tenant: str, safety_id: str) -> None:
        """The user's state changed in the database: every cached entry of it is stale now."""
        version_key, _ = self._keys(tenant, safety_id)
        self.client.incr(version_key)

    def ping(self) -> None:
        self.client.ping()

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _keys(tenant: str, safety_id: str) -> tuple[str, str]:
        user = f"{PREFIX}user:{tenant}:{safety_id}"
        return f"{user}:version", f"{user}:state:"


class HotStateSqlStore(SqlStore):
    """A :class:`~seawall.store.sql.SqlStore` whose hot path (rate limits, standing) goes through
    Redis, falling back to the database while Redis fails (see the module's docstring)."""

    def __init__(
        self, engine: Engine, hot: RedisHotState, *, retry_s: float, clock: Clock | None = None
    ) -> None:
        super().__init__(engine, clock=clock)
        self.hot = hot
        self.retry_s = retry_s
        self._down_until = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ Redis or the database

    def _redis_usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _redis_failed(self, doing: str, exc: Exception) -> None:
        with self._lock:
            first = self._redis_usable()
            self._down_until = time.monotonic() + self.retry_s
        if first:  # once per outage, not once per request
            log.warning(
                "Redis failed while %s (%s: %s); using the database for %.0f s",
                doing,
                type(exc).__name__,
                exc,
                self.retry_s,
            )

    @property
    def redis_in_use(self) -> bool:
        """Whether this process reads the hot state from Redis now (False while it falls back)."""
        return self._redis_usable()

    # ------------------------------------------------------------------ counters

    def hit(self, bucket: str, limit: int, window_s: int, now: datetime) -> RateLimitResult:
        if self._redis_usable():
            try:
                return self.hot.hit(bucket, limit, window_s, now)
            except self.hot.errors as exc:
                self._redis_failed("counting a rate-limit hit", exc)
        return super().hit(bucket, limit, window_s, now)

    def prune(self, now: datetime) -> int:
        gone = super().prune(now)  # windows counted in the database while Redis failed
        if self._redis_usable():
            try:
                gone += self.hot.prune(now)
            except self.hot.errors as exc:
                self._redis_failed("pruning rate-limit windows", exc)
        return gone

    # ------------------------------------------------------------------ standing

    def get_user(self, tenant: str, safety_id: str) -> UserState | None:
        if not self._redis_usable():
            return super().get_user(tenant, safety_id)
        try:
            cached = self.hot.get_user(tenant, safety_id)
        except self.hot.errors as exc:
            self._redis_failed("reading a user's standing", exc)
            return super().get_user(tenant, safety_id)
        if isinstance(cached, tuple):
            return cached[1]
        state = super().get_user(tenant, safety_id)
        try:
            self.hot.put_user(tenant, safety_id, cached, state)
        except self.hot.errors as exc:
            self._redis_failed("caching a user's standing", exc)
        return state

    def admit(self, tenant: str, safety_id: str, hits: HitsFor, now: datetime) -> Admission:
        """The standing from Redis's versioned cache (the database on a miss), then each hit in
        Redis: Redis has no transaction with the database, so these are the separate calls
        :meth:`get_user` and :meth:`hit` make (each atomic, each a round trip). While Redis fails,
        the database's one transaction (:meth:`SqlStore.admit`)."""
        if not self._redis_usable():
            return super().admit(tenant, safety_id, hits, now)
        state = self.get_user(tenant, safety_id)
        results: list[RateLimitResult] = []
        for hit in hits(state):
            results.append(self.hit(hit.bucket, hit.limit, hit.window_s, now))
            if not results[-1].allowed:
                break
        return Admission(state, tuple(results))

    def set_user(self, state: UserState) -> None:
        super().set_user(state)  # the database first: it is the record
        try:
            self.hot.changed(state.tenant, state.safety_id)
        except self.hot.errors as exc:
            # Replicas still reading Redis see the change once their entry expires (cache_ttl_s).
            self._redis_failed("announcing a change of a user's standing", exc)

    def close(self) -> None:
        super().close()
        self.hot.close()


def _state_to_json(state: UserState | None) -> str:
    if state is None:
        return "null"
    return json.dumps(
        {
            "tenant": state.tenant,
            "safety_id": state.safety_id,
            "status": state.status,
            "until": state.until.isoformat() if state.until else None,
            "reason": state.reason,
            "updated_at": state.updated_at.isoformat(),
            "updated_by": state.updated_by,
        }
    )


def _state_from_json(text: str) -> UserState | None:
    data: dict[str, Any] | None = json.loads(text)
    if data is None:
        return None
    return UserState(
        tenant=data["tenant"],
        safety_id=data["safety_id"],
        status=data["status"],
        until=datetime.fromisoformat(data["until"]) if data["until"] else None,
        reason=data["reason"],
        updated_at=datetime.fromisoformat(data["updated_at"]),
        updated_by=data["updated_by"],
    )


__all__ = ["PREFIX", "HotStateSqlStore", "RedisHotState"]
