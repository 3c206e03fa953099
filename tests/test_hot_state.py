"""The hot state of many replicas on Redis (``store.cache_url``): two stores on one PostgreSQL
database and one real Redis server play two replicas; Redis is stopped and started under them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from redis_server import RedisServer
from seawall.errors import ConfigurationError
from seawall.settings import StoreSettings
from seawall.store import UserState, open_store
from seawall.store.hot_state import HotStateSqlStore

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
