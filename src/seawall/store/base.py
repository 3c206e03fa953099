"""The store protocol: what the gateway keeps between requests and across replicas.

One small protocol (:class:`Store`) with plain dataclasses in and out, so the gateway,
the CLI and tests never see SQL. :mod:`seawall.store.sql` implements it with SQLAlchemy 2
on SQLite (the embedded default) or PostgreSQL (several replicas sharing one database).

Every method is synchronous and safe to call from several threads; the gateway calls
them through ``asyncio.to_thread``. Times are timezone-aware UTC ``datetime`` values.
Nothing here holds message text or raw user ids: users are known by their safety
identifier, keys by their hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

#: A request's risk level, from its moderation and injection scores.
RiskLevel = Literal["low", "medium", "high"]
#: Where a user stands in the escalation ladder.
UserStatus = Literal["ok", "warned", "throttled", "blocked", "review"]


@dataclass(frozen=True)
class ApiKey:
    """An app's API key as stored: the hash, never the key itself."""

    id: str  # "key_" + 12 hex characters; public, shown by the CLI
    name: str
    tenant: str
    key_hash: str  # seawall.gateway.identity.hash_api_key(key)
    prefix: str  # the key's first 8 characters, to recognise it in a list
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class RateLimitResult:
    """One counted hit against a rate limit bucket."""

    allowed: bool
    count: float  # the bucket's (sliding-window) count after this hit, or at refusal
    limit: int
    reset_at: datetime  # when the current fixed window ends
    retry_after_s: float  # 0 when allowed


@dataclass(frozen=True)
class RiskEvent:
    """A medium- or high-risk request of one user (low-risk requests are not recorded)."""

    tenant: str
    safety_id: str
    level: RiskLevel
    at: datetime
    request_id: str
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserState:
    """A user's place on the escalation ladder."""

    tenant: str
    safety_id: str
    status: UserStatus
    until: datetime | None  # when a throttle/block ends by itself; None: until changed
    reason: str
    updated_at: datetime
    updated_by: str = "gateway"  # "gateway" or an admin's name


@dataclass(frozen=True)
class UserSummary:
    """One row of the users list: state plus recent risk counts."""

    state: UserState | None
    tenant: str
    safety_id: str
    high: int
    medium: int
    last_event_at: datetime | None


@dataclass(frozen=True)
class OrgSummary:
    """The organisation's roll-up over a window, for the figures a provider would look at."""

    tenant: str
    since: datetime
    events: dict[str, int] = field(default_factory=dict)  # risk level -> count
    users_with_high: int = 0
    users_by_status: dict[str, int] = field(default_factory=dict)  # status -> users (not "ok")


class Store(Protocol):
    """Persistent state shared by every replica of one seawall deployment."""

    # ---------------------------------------------------------------- app API keys
    def create_key(self, name: str, tenant: str, key_hash: str, prefix: str) -> ApiKey:
        """Store a new key's hash; the caller generated the key and shows it once."""
        ...

    def list_keys(self, tenant: str | None = None, *, include_revoked: bool = False) -> list[ApiKey]: ...

    def revoke_key(self, key_id: str) -> ApiKey:
        """Mark a key revoked (idempotent); raises seawall.errors.NotFoundError if unknown."""
        ...

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash (revoked ones too: the caller decides), touching last_used_at."""
        ...

    # ---------------------------------------------------------------- rate limits
    def hit(self, bucket: str, limit: int, window_s: int, now: datetime) -> RateLimitResult:
        """Count one request against ``bucket`` (sliding window over two fixed windows),
        atomically across replicas. A refused hit is not counted."""
        ...

    # ---------------------------------------------------------------- risk ledger
    def record_event(self, event: RiskEvent) -> None: ...

    def count_events(self, tenant: str, safety_id: str, level: RiskLevel, since: datetime) -> int: ...

    def get_user(self, tenant: str, safety_id: str) -> UserState | None: ...

    def set_user(self, state: UserState) -> None:
        """Insert or replace the user's state."""
        ...

    def list_users(
        self, tenant: str, *, since: datetime, status: UserStatus | None = None, limit: int = 100
    ) -> list[UserSummary]:
        """Users with a non-ok state or any event since ``since``, most high-risk events first."""
        ...

    def org_summary(self, tenant: str, since: datetime) -> OrgSummary: ...

    # ---------------------------------------------------------------- audit
    def write_audit(self, record: dict[str, Any]) -> None:
        """Keep one audit record (the JSON the gateway writes; request_id is unique)."""
        ...

    def search_audit(
        self,
        tenant: str | None = None,
        *,
        safety_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit records, newest first."""
        ...

    def close(self) -> None: ...
