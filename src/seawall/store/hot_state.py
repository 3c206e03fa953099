"""The hot state of many gateway replicas on Redis: rate-limit counters and users' standing.

With several replicas on one PostgreSQL database every request costs database round trips for
its rate-limit buckets and the user's standing. ``store.cache_url: redis://...`` moves that hot
path to Redis (:class:`HotStateSqlStore`, an :class:`~seawall.store.sql.SqlStore` whose
:meth:`hit`, :meth:`get_user` and :meth:`set_user` go through :class:`RedisHotState`), while the
database stays the system of record: a user's standing is always written to the database first,
and audit records, review items and everything else never touch Redis.

* **Rate limits.** The same sliding window over two fixed windows as every other counter store
  (:mod:`seawall.store.windows`), counted by a Lua script (one round trip, atomic in Redis):
  read the previous window, and increment the current one only while it has room. Window keys
  expire on their own two windows after they start.
* **Standing.** A read-through cache of :class:`~seawall.store.base.UserState` under a version
  key per user: a reader fetches the version and the entry of that version in one script call;
  on a miss it reads the database and stores the entry under the version it read, for
  ``cache_ttl_s``. A writer updates the database, then increments the version, so every replica's
  next read misses and sees the change at once (a reader that raced the writer stored its stale
  entry under the old version, which nobody reads again).
* **Admission** (:meth:`HotStateSqlStore.admit`, every gateway request): given the hits as a table
  (:class:`~seawall.store.base.HitsByStatus`, what the risk ledger passes), one script reads the
  standing and counts the hits the table names for it, atomically and in one round trip; the
  script judges a state in force as :meth:`~seawall.store.base.UserState.in_force_at` does, from
  the entry's ``until_us`` (microseconds since the epoch). Only when the entry is not cached (or
  was written by an older seawall, without ``until_us``, and has an end) does Python pick: the
  database's state (cached by the same call that counts) or the entry's, then one script counts.
  The keys, their expiry and the entry's other fields are the ones earlier versions use, so
  replicas of both versions share counts and standing during an upgrade. Scripts are sent by
  their SHA (``EVALSHA``) and loaded again when Redis answers ``NOSCRIPT`` (a restart, a
  ``SCRIPT FLUSH``).
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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from seawall.clock import Clock, as_utc
from seawall.errors import ConfigurationError
from seawall.store.base import Admission, Hit, HitsByStatus, RateLimitResult, UserState
from seawall.store.sql import SqlStore
from seawall.store.windows import result, windows

if TYPE_CHECKING:
    import redis

log = logging.getLogger("seawall.store")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Prefix of every key seawall writes to Redis.
PREFIX = "seawall:"

# Counting a list of hits, each while it has room, stopping at the first refused one. KEYS from
# KEYS[first]: per hit its current window's key, then its previous window's. hits: per hit
# {limit, the previous window's weight, the seconds the current window's count is still needed
# (relative: callers' clocks may be anything)}; picked: which hits to count (numbers into hits), in
# order. Appends {number, counted (0/1), current count, previous count} per hit tried to out.
_COUNT_FUNCTION = """
local function count(first, hits, picked, out)
  for _, i in ipairs(picked) do
    local hit = hits[i]
    local key = KEYS[first + 2 * (i - 1)]
    local previous = tonumber(redis.call('GET', KEYS[first + 2 * (i - 1) + 1]) or '0')
    local most = math.floor(hit[1] - previous * hit[2] + 1e-9)
    local current = tonumber(redis.call('GET', key) or '0')
    local counted = 0
    if most >= 1 and current < most then
      current = redis.call('INCR', key)
      redis.call('EXPIRE', key, hit[3])
      counted = 1
    end
    table.insert(out, i)
    table.insert(out, counted)
    table.insert(out, current)
    table.insert(out, previous)
    if counted == 0 then
      return out
    end
  end
  return out
end
"""

# KEYS[1]: with an entry to cache, its key (else unused); then the hits' keys (see count). ARGV[1]:
# JSON {hits, entry: the entry to cache or null, ttl_s}. Counts every hit in order.
# Returns {number, counted, current, previous} per hit tried.
_COUNT = (
    _COUNT_FUNCTION
    + """
local args = cjson.decode(ARGV[1])
if args['entry'] ~= cjson.null then
  redis.call('SET', KEYS[1], args['entry'], 'EX', args['ttl_s'])
end
local picked = {}
for i = 1, #args['hits'] do
  picked[i] = i
end
return count(2, args['hits'], picked, {})
"""
)

# KEYS[1]: the user's version key; then the table's hits' keys (see count). ARGV[1]: the entry key's
# prefix; ARGV[2]: JSON {now_us, hits, free: the hits (numbers) of a user with no standing in
# force, in_force: {status: its hits}} (HitsByStatus). Returns {version, entry or false, picked},
# then, when picked is 1, {number, counted, current, previous} per hit tried; picked 0: nothing
# counted, the entry is missing or cannot be judged here (no until_us: an older seawall's).
_ADMIT = (
    _COUNT_FUNCTION
    + """
local version = redis.call('GET', KEYS[1]) or '0'
local entry = redis.call('GET', ARGV[1] .. version)
if not entry then
  return {version, false, 0}
end
local args = cjson.decode(ARGV[2])
local picked = args['free']
if entry ~= 'null' then
  local state = cjson.decode(entry)
  if state['status'] ~= 'ok' then
    if state['until'] == cjson.null then
      picked = args['in_force'][state['status']] or {}
    elseif state['until_us'] == nil then
      return {version, entry, 0}
    elseif state['until_us'] > args['now_us'] then
      picked = args['in_force'][state['status']] or {}
    end
  end
end
return count(2, args['hits'], picked, {version, entry, 1})
"""
)

# KEYS: the user's version key. ARGV: the entry key's prefix. Returns {version, entry or false}.
_READ = """
local version = redis.call('GET', KEYS[1]) or '0'
return {version, redis.call('GET', ARGV[1] .. version)}
"""


@dataclass(frozen=True)
class CachedStanding:
    """What Redis holds of a user's standing: ``found`` and the state, or not (``version``: the one
    to cache the database's state under)."""

    version: str
    found: bool
    state: UserState | None = None


class _Counting:
    """The keys and arguments of counting ``hits`` at ``now`` (:data:`_COUNT_FUNCTION`), and the
    results the script's answer makes."""

    def __init__(self, hits: Sequence[Hit], now: datetime) -> None:
        self.hits = hits
        self.keys: list[str] = []
        self.specs: list[tuple[int, float, int]] = []
        self.windows: list[tuple[int, float]] = []
        for hit in hits:
            stamp, start, weight = windows(now, hit.limit, hit.window_s)  # ValueError before Redis
            key = f"{PREFIX}rl:{hit.window_s}:{hit.bucket}:"
            self.keys += [f"{key}{start}", f"{key}{start - hit.window_s}"]
            self.specs.append((hit.limit, weight, max(1, math.ceil(start + 2 * hit.window_s - stamp))))
            self.windows.append((start, weight))

    def results(self, answer: Sequence[Any]) -> tuple[RateLimitResult, ...]:
        """The results of the hits tried, from the script's flat ``{number, counted, current,
        previous}`` quadruples."""
        done: list[RateLimitResult] = []
        for at in range(0, len(answer), 4):
            number, counted, current, previous = (int(value) for value in answer[at : at + 4])
            hit = self.hits[number - 1]
            start, weight = self.windows[number - 1]
            done.append(result(bool(counted), hit.limit, current, previous, weight, start, hit.window_s))
        return tuple(done)


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
        # Sent by SHA (EVALSHA); redis-py loads a script again when Redis answers NOSCRIPT.
        self._count = self.client.register_script(_COUNT)
        self._admit = self.client.register_script(_ADMIT)
        self._read = self.client.register_script(_READ)

    def hit(self, bucket: str, limit: int, window_s: int, now: datetime) -> RateLimitResult:
        (counted,) = self.count([Hit(bucket, limit, window_s)], now)
        return counted

    def count(
        self,
        hits: Sequence[Hit],
        now: datetime,
        *,
        cache: tuple[str, str, str, UserState | None] | None = None,
    ) -> tuple[RateLimitResult, ...]:
        """Count ``hits`` in order, stopping at the first refused one, in one script call; with
        ``cache`` (tenant, safety id, version, state), the state cached under that version in the
        same call."""
        counting = _Counting(hits, now)
        if not hits and cache is None:
            return ()  # nothing to ask Redis
        entry_key, entry = "", None
        if cache is not None:
            tenant, safety_id, version, state = cache
            entry_key, entry = f"{self._keys(tenant, safety_id)[1]}{version}", _state_to_json(state)
        args = {"hits": counting.specs, "entry": entry, "ttl_s": self._ttl()}
        answer = self._count(keys=[entry_key, *counting.keys], args=[_compact(args)])
        return counting.results(answer)

    def admit(
        self, tenant: str, safety_id: str, table: HitsByStatus, now: datetime
    ) -> tuple[CachedStanding, tuple[RateLimitResult, ...] | None]:
        """The cached standing and, when the script could pick from ``table`` for it, the hits it
        picked counted (stopping at the first refused one), in one script call; None when it could
        not (the entry is missing, or has an end but no ``until_us``): nothing was counted."""
        hits = table.distinct()
        counting = _Counting(hits, now)
        number = {hit: at for at, hit in enumerate(hits, start=1)}
        args = {
            "now_us": _micros(table.now),
            "hits": counting.specs,
            "free": [number[hit] for hit in table.free],
            "in_force": {
                status: [number[hit] for hit in picked] for status, picked in table.in_force.items()
            },
        }
        version_key, entry_prefix = self._keys(tenant, safety_id)
        version, entry, picked, *counted = self._admit(
            keys=[version_key, *counting.keys], args=[entry_prefix, _compact(args)]
        )
        if entry is None:
            return CachedStanding(str(version), False), None
        cached = CachedStanding(str(version), True, _state_from_json(entry))
        return cached, counting.results(counted) if picked else None

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
        cached = self.read(tenant, safety_id)
        return (cached.version, cached.state) if cached.found else cached.version

    def read(self, tenant: str, safety_id: str) -> CachedStanding:
        """The cached standing (one script call)."""
        version_key, entry_prefix = self._keys(tenant, safety_id)
        version, entry = self._read(keys=[version_key], args=[entry_prefix])
        if entry is None:
            return CachedStanding(str(version), False)
        return CachedStanding(str(version), True, _state_from_json(entry))

    def put_user(self, tenant: str, safety_id: str, version: str, state: UserState | None) -> None:
        _, entry_prefix = self._keys(tenant, safety_id)
        self.client.set(f"{entry_prefix}{version}", _state_to_json(state), ex=self._ttl())

    def _ttl(self) -> int:
        return max(1, round(self.ttl_s))

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

    def admit(self, tenant: str, safety_id: str, hits: HitsByStatus, now: datetime) -> Admission:
        """The standing from Redis's versioned cache and the hits counted in Redis: with the
        standing cached, one script call (one round trip, atomic); otherwise the standing (the
        database's on a miss, then cached), then one call that counts the hits ``hits`` names for
        it (Redis has no transaction with the database, so a change between the two is seen by the
        next request). While Redis fails, the database's one transaction (:meth:`SqlStore.admit`)."""
        if self._redis_usable():
            try:
                return self._admit_on_redis(tenant, safety_id, hits, now)
            except self.hot.errors as exc:
                self._redis_failed("admitting a request", exc)
        return super().admit(tenant, safety_id, hits, now)

    def _admit_on_redis(self, tenant: str, safety_id: str, hits: HitsByStatus, now: datetime) -> Admission:
        cached, counted = self.hot.admit(tenant, safety_id, hits, now)
        if counted is not None:
            return Admission(cached.state, counted)
        if cached.found:
            return Admission(cached.state, self.hot.count(hits(cached.state), now))
        state = super().get_user(tenant, safety_id)
        counted = self.hot.count(hits(state), now, cache=(tenant, safety_id, cached.version, state))
        return Admission(state, counted)

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
            # For the admission script (read by nothing else; earlier versions ignore it).
            "until_us": _micros(state.until) if state.until else None,
            "reason": state.reason,
            "updated_at": state.updated_at.isoformat(),
            "updated_by": state.updated_by,
        }
    )


def _micros(moment: datetime) -> int:
    """``moment`` in whole microseconds since the epoch: exact in a Lua number (below 2**53)."""
    return (as_utc(moment) - _EPOCH) // timedelta(microseconds=1)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


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


__all__ = ["PREFIX", "CachedStanding", "HotStateSqlStore", "RedisHotState"]
