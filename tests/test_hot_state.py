"""The hot state of many replicas on Redis (``store.cache_url``): two stores on one PostgreSQL
database and one real Redis server play two replicas; Redis is stopped and started under them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from redis_server import RedisServer
from seawall.errors import ConfigurationError
from seawall.settings import StoreSettings
from seawall.store import SqlStore, UserState, open_store
from seawall.store.base import Hit, HitsByStatus
from seawall.store.hot_state import PREFIX, HotStateSqlStore

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def private_redis(tmp_path: Path, redis_server: object) -> Iterator[RedisServer]:
    """A Redis server of this test's own, so stopping it disturbs no other test."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def replica(postgres_url: str, redis_url: str) -> HotStateSqlStore:
    store = open_store(
        StoreSettings(url=postgres_url, cache_url=redis_url, cache_retry_s=0.2, cache_ttl_s=30)
    )
    assert isinstance(store, HotStateSqlStore)
    return store


def blocked(reason: str = "abuse") -> UserState:
    return UserState("acme", "user-1", "blocked", None, reason, T0)


def test_a_block_written_through_one_replica_is_seen_by_the_other_at_once(
    postgres_schema_url: str, fresh_redis_url: str
) -> None:
    one, two = replica(postgres_schema_url, fresh_redis_url), replica(postgres_schema_url, fresh_redis_url)
    try:
        assert two.get_user("acme", "user-1") is None  # now cached as "no state" on Redis
        one.set_user(blocked())
        assert two.get_user("acme", "user-1") == blocked()
        cleared = UserState("acme", "user-1", "ok", None, "cleared by an admin", T0, "alice")
        two.set_user(cleared)
        assert one.get_user("acme", "user-1") == cleared
    finally:
        one.close()
        two.close()


def test_a_reader_that_raced_a_writer_cannot_serve_its_stale_entry(
    postgres_schema_url: str, fresh_redis_url: str
) -> None:
    """The reader read the database before the write and caches after it: under the old version."""
    one, two = replica(postgres_schema_url, fresh_redis_url), replica(postgres_schema_url, fresh_redis_url)
    try:
        missed = two.hot.get_user("acme", "user-1")
        assert isinstance(missed, str)  # a miss: the version to store under
        one.set_user(blocked())
        two.hot.put_user("acme", "user-1", missed, None)  # the racing reader's late, stale entry
        assert two.get_user("acme", "user-1") == blocked()
    finally:
        one.close()
        two.close()


def test_rate_limits_on_redis_are_exact_across_replicas(
    postgres_schema_url: str, fresh_redis_url: str
) -> None:
    one, two = replica(postgres_schema_url, fresh_redis_url), replica(postgres_schema_url, fresh_redis_url)
    try:
        results = [(one if i % 2 else two).hit("user:acme:u", 7, 60, T0) for i in range(12)]
        assert [r.allowed for r in results] == [True] * 7 + [False] * 5
        # Counted on Redis, not in the database: a replica without Redis starts from zero.
        plain = open_store(StoreSettings(url=postgres_schema_url))
        assert plain.hit("user:acme:u", 7, 60, T0).count == 1
        plain.close()
    finally:
        one.close()
        two.close()


def test_losing_redis_loses_no_block_and_keeps_limits_within_twice_the_limit(
    postgres_schema_url: str, private_redis: RedisServer
) -> None:
    one, two = (
        replica(postgres_schema_url, private_redis.url),
        replica(postgres_schema_url, private_redis.url),
    )
    try:
        admitted = sum(one.hit("user:acme:u", 5, 60, T0).allowed for _ in range(3))
        assert two.get_user("acme", "user-1") is None
        private_redis.stop()  # mid-run: every Redis call now fails
        # Requests go on: the block is written to the database and read from it.
        one.set_user(blocked())
        assert two.get_user("acme", "user-1") == blocked()
        assert not two.redis_in_use
        admitted += sum(two.hit("user:acme:u", 5, 60, T0 + timedelta(seconds=1)).allowed for _ in range(10))
        # The stated bound: a bucket admits at most twice its limit in the window Redis failed in.
        assert 5 < admitted <= 10
        private_redis.start()
        time.sleep(0.3)  # cache_retry_s: Redis is tried again
        assert two.get_user("acme", "user-1") == blocked()  # restarted empty: read from the database
        assert two.redis_in_use
    finally:
        one.close()
        two.close()


def test_redis_needs_a_sql_store() -> None:
    with pytest.raises(ConfigurationError, match="SQL store"):
        open_store(StoreSettings(url="memory://", cache_url="redis://127.0.0.1:1/0"))


def test_a_malformed_cache_url_is_a_configuration_error(postgres_schema_url: str) -> None:
    with pytest.raises(ConfigurationError, match="Redis URL"):
        open_store(StoreSettings(url=postgres_schema_url, cache_url="http://not-redis"))


# ----------------------------------------------------------------------------- admission in one script


def table(now: datetime = T0) -> HitsByStatus:
    """What the risk ledger passes: a user's limit, and the throttle first for a throttled user."""
    user = Hit("user:acme:user-1", 100, 60)
    return HitsByStatus(
        now, (user,), {"warned": (user,), "throttled": (Hit("throttle:acme:user-1", 2, 60), user)}
    )


def counted(store: HotStateSqlStore, now: datetime = T0) -> list[tuple[int, bool]]:
    """One admission of user-1: the limit and the verdict of each hit counted."""
    return [(r.limit, r.allowed) for r in store.admit("acme", "user-1", table(now), now).results]


class Sent:
    """The commands clients send Redis while the block runs, as Redis's MONITOR reports them: the
    round trips, not the commands scripts run inside (MONITOR marks those ``lua``)."""

    END = "seawall-test-end"

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.names: list[str] = []

    def __enter__(self) -> Sent:
        self.monitor = self.client.monitor()
        self.monitor.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(self.END)  # through another connection of the pool
        seen: list[tuple[str, str]] = []
        try:
            while (entry := self.monitor.next_command())["command"] != f"ECHO {self.END}":
                if entry["client_type"] != "lua":
                    seen.append((entry["client_port"], entry["command"].split(" ", 1)[0].lower()))
        finally:
            self.monitor.__exit__()
            self.client.close()
        mine = entry["client_port"]  # the connection the ending ECHO came through (and its HELLO)
        self.names = [name for port, name in seen if port != mine]


def test_an_admission_with_the_standing_cached_is_one_script_call(
    postgres_schema_url: str, private_redis: RedisServer
) -> None:
    store = replica(postgres_schema_url, private_redis.url)
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert counted(store) == [(100, True)]  # connects, loads the scripts (NOSCRIPT)
        with Sent(private_redis.url) as cached:
            assert counted(store) == [(100, True)]
        assert cached.names == ["evalsha"]
        store.set_user(UserState("acme", "user-1", "throttled", T0 + timedelta(hours=1), "abuse", T0))
        with Sent(private_redis.url) as missed:  # the version moved: the database read, then a count
            assert counted(store) == [(2, True), (100, True)]
        assert missed.names == ["evalsha", "evalsha"]
        with Sent(private_redis.url) as cached:
            assert counted(store) == [(2, True), (100, True)]
            assert counted(store) == [(2, False)]
        assert cached.names == ["evalsha", "evalsha"]
        # Counted on Redis under the keys every replica's single hits use.
        assert store.hit("user:acme:user-1", 100, 60, T0).count == 5
        assert store.redis_in_use
    finally:
        client.close()
        store.close()


def test_admission_survives_a_script_flush_and_a_restart_of_redis(
    postgres_schema_url: str, private_redis: RedisServer
) -> None:
    store = replica(postgres_schema_url, private_redis.url)
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert counted(store) == counted(store) == [(100, True)]
        client.script_flush()  # NOSCRIPT on the next call: the script is loaded again
        assert counted(store) == [(100, True)]
        assert store.redis_in_use
        assert store.hit("user:acme:user-1", 100, 60, T0).count == 4
        private_redis.stop()  # refused: the database's transaction admits meanwhile
        store.set_user(UserState("acme", "user-1", "blocked", None, "abuse", T0))
        assert counted(store) == []
        assert not store.redis_in_use
        store.set_user(UserState("acme", "user-1", "ok", None, "cleared", T0, "alice"))
        assert counted(store) == [(100, True)]  # counted in the database, which starts from zero
        assert SqlStore.hit(store, "user:acme:user-1", 100, 60, T0).count == 2
        private_redis.start()  # empty, and without the scripts
        time.sleep(0.3)  # cache_retry_s: Redis is tried again
        assert counted(store) == counted(store) == [(100, True)]
        assert store.redis_in_use
        assert store.hit("user:acme:user-1", 100, 60, T0).count == 3  # restarted empty
    finally:
        client.close()
        store.close()


def test_a_script_error_or_a_timeout_admits_from_the_database(
    postgres_schema_url: str, private_redis: RedisServer
) -> None:
    store = replica(postgres_schema_url, private_redis.url)
    client = redis.Redis.from_url(private_redis.url)
    try:
        store.set_user(UserState("acme", "user-1", "blocked", None, "abuse", T0))
        # The version key holding a list: GET fails inside the script (WRONGTYPE).
        client.delete(f"{PREFIX}user:acme:user-1:version")
        client.rpush(f"{PREFIX}user:acme:user-1:version", "not a version")
        assert counted(store) == []
        assert not store.redis_in_use
        client.delete(f"{PREFIX}user:acme:user-1:version")
        time.sleep(0.3)
        assert counted(store) == counted(store) == []
        assert store.redis_in_use
        client.client_pause(1500)  # every command waits: longer than cache_timeout_s (0.25 s)
        started = time.monotonic()
        assert counted(store) == []
        assert time.monotonic() - started < 1.0
        assert not store.redis_in_use
    finally:
        client.client_unpause()
        client.close()
        store.close()


def test_an_entry_cached_by_an_earlier_version_is_judged_in_python(
    postgres_schema_url: str, fresh_redis_url: str
) -> None:
    """Earlier versions cache the standing without ``until_us``: the script leaves an entry with an
    end to Python, which picks and counts in a second call; one without an end it judges itself."""
    store = replica(postgres_schema_url, fresh_redis_url)
    client = redis.Redis.from_url(fresh_redis_url)
    entry = f"{PREFIX}user:acme:user-1:state:0"

    def cache_as_before(status: str, until: datetime | None) -> None:
        old = {
            "tenant": "acme",
            "safety_id": "user-1",
            "status": status,
            "until": until.isoformat() if until else None,
            "reason": "abuse",
            "updated_at": T0.isoformat(),
            "updated_by": "gateway",
        }
        client.set(entry, json.dumps(old), ex=30)

    try:
        assert counted(store) == [(100, True)]  # connects, loads the scripts
        cache_as_before("blocked", T0 + timedelta(minutes=5))
        with Sent(fresh_redis_url) as sent:
            assert counted(store) == []  # the script's answer: Python picks no hits, counts nothing
        assert sent.names == ["evalsha"]
        cache_as_before("blocked", T0)  # ended at T0: no standing in force
        assert counted(store) == [(100, True)]
        with Sent(fresh_redis_url) as sent:
            assert counted(store) == [(100, True)]
        assert sent.names == ["evalsha", "evalsha"]  # the script's answer, then one count
        cache_as_before("throttled", None)  # no end: the script judges it
        with Sent(fresh_redis_url) as sent:
            assert counted(store) == [(2, True), (100, True)]
        assert sent.names == ["evalsha"]
        assert store.redis_in_use
    finally:
        client.close()
        store.close()
