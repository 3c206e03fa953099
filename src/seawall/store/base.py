"""The store protocol: what the gateway keeps between requests and across replicas.

One small protocol (:class:`Store`) with plain dataclasses in and out, so the gateway,
the CLI and tests never see SQL. :mod:`seawall.store.sql` implements it with SQLAlchemy 2
on SQLite (the embedded default) or PostgreSQL (several replicas sharing one database).

Every method is synchronous and safe to call from several threads; the gateway calls
them through ``asyncio.to_thread``. Times are timezone-aware UTC ``datetime`` values.
No raw user ids: users are known by their safety identifier, keys by their hash. Message
text is kept only where a person must read it: review items (the held request, its sources and
the draft) and user reports (the user's comment and contact).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

#: A request's risk level, from its moderation and injection scores.
RiskLevel = Literal["low", "medium", "high"]
#: Where a user stands in the escalation ladder.
UserStatus = Literal["ok", "warned", "throttled", "blocked", "review"]
#: A held answer's state: waiting for a reviewer, or decided.
ReviewStatus = Literal["pending", "approved", "edited", "rejected"]
#: What a reviewer decided.
ReviewDecision = Literal["approve", "edit", "reject"]
#: What a user reports an answer for.
ReportCategory = Literal["harmful", "wrong", "biased", "privacy", "other"]
#: Where a user report is in the triage queue.
ReportStatus = Literal["new", "investigating", "resolved", "dismissed"]
#: What became of a gateway request, as its audit record says (the gateway writes it; the
#: dashboard, the audit search and the metrics read it).
AuditOutcome = Literal[
    "ok",
    "refused_input",
    "off_topic",
    "knowledge_base",
    "held_for_review",
    "filtered_output",
    "blocked_stream",
    "guard_failed",
    "upstream_error",
    "invalid_request",
    "unauthorized",
    "user_blocked",
    "rate_limited",
    "client_disconnected",
    "error",
]

#: The values of each of those types, in the order above (for checks, choices and counts).
RISK_LEVELS: tuple[RiskLevel, ...] = get_args(RiskLevel)
REVIEW_STATUSES: tuple[ReviewStatus, ...] = get_args(ReviewStatus)
REPORT_CATEGORIES: tuple[ReportCategory, ...] = get_args(ReportCategory)
REPORT_STATUSES: tuple[ReportStatus, ...] = get_args(ReportStatus)
AUDIT_OUTCOMES: tuple[AuditOutcome, ...] = get_args(AuditOutcome)


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
class FilteredAnswer:
    """A model's answer that output moderation filtered or stopped.

    Counted per tenant and model, never charged to the user who asked: the user did not write it.
    """

    tenant: str
    model: str
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
    filtered_answers: dict[str, int] = field(default_factory=dict)  # model -> answers filtered


@dataclass(frozen=True)
class ReviewItem:
    """An answer held for human review: what the reviewer sees and what they decided.

    ``request`` holds the request's messages (and model), ``draft`` the upstream's completion as
    moderated; ``scores`` the moderation scores that were seen; ``reasons`` why it was held
    (``domain:health``, ``declared:law``, ``uncertain:violence``). A pending item is *claimable*
    when nobody holds a claim on it or the claim expired (``claim_expires_at`` in the past).
    """

    id: str  # "rev_" + 32 hex characters: unguessable, handed to the client
    tenant: str
    request_id: str
    status: ReviewStatus
    created_at: datetime
    request: dict[str, Any]
    draft: dict[str, Any]
    completion_id: str | None = None
    safety_id: str | None = None
    domain: str | None = None
    reasons: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    sources: tuple[dict[str, str], ...] = ()
    notes: str | None = None
    webhook: str | None = None
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    claim_expires_at: datetime | None = None
    decision: ReviewDecision | None = None
    edited_text: str | None = None
    reason: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None

    def claimable(self, now: datetime) -> bool:
        return self.status == "pending" and (
            self.claimed_by is None or self.claim_expires_at is None or self.claim_expires_at <= now
        )


@dataclass(frozen=True)
class ReviewEvent:
    """One entry of the trail of a review item or a report: who did what, when."""

    subject_id: str  # a review item's or a report's id
    action: str  # held, claimed, released, approved, edited, rejected; reported, triaged
    actor: str
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class Report:
    """A user's report about one answer, and where it is in the triage queue."""

    id: str  # "rpt_" + 24 hex characters
    tenant: str
    response_id: str  # the gateway's x-seawall-request-id or the completion id, as the user gave it
    category: ReportCategory
    status: ReportStatus
    created_at: datetime
    updated_at: datetime
    comment: str = ""
    contact: str | None = None
    reporter: str | None = None  # a hash of the reporting user, never the raw id
    request_id: str | None = None  # the gateway request it resolves to, when known
    review_id: str | None = None  # the held answer it is about, when there was one
    notes: tuple[dict[str, Any], ...] = ()  # {"at", "by", "text", "status"} in order
    updated_by: str | None = None


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

    def record_filtered_answer(self, answer: FilteredAnswer) -> None:
        """Count one answer that output moderation filtered (per tenant and model, not per user)."""
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

    def audit_chain(self, tenant: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored audit record in the order written, with its hash-chain links."""
        ...

    # ---------------------------------------------------------------- human review
    def create_review(self, item: ReviewItem) -> ReviewItem:
        """Store a new pending item and its ``held`` event in one transaction."""
        ...

    def get_review(self, review_id: str) -> ReviewItem | None: ...

    def list_reviews(
        self,
        *,
        tenant: str | None = None,
        status: ReviewStatus | None = None,
        domain: str | None = None,
        claimable_at: datetime | None = None,
        claimed_by: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ReviewItem]:
        """Items matching every filter, oldest first (the queue's order). ``claimable_at``: only
        pending items nobody holds a live claim on at that time."""
        ...

    def claim_review(self, review_id: str, reviewer: str, now: datetime, ttl_s: int) -> ReviewItem | None:
        """Claim a pending item for ``ttl_s`` seconds with one conditional update: it succeeds when
        nobody holds a live claim (or ``reviewer`` does: the claim is extended). The claimed item,
        or None when the claim was lost (unknown, decided, or claimed by someone else)."""
        ...

    def release_review(self, review_id: str, reviewer: str, now: datetime) -> ReviewItem | None:
        """Give up ``reviewer``'s live claim; None if they held none."""
        ...

    def decide_review(
        self,
        review_id: str,
        reviewer: str,
        decision: ReviewDecision,
        now: datetime,
        *,
        edited_text: str | None = None,
        reason: str | None = None,
    ) -> ReviewItem | None:
        """Record a decision, in one transaction with its event, if ``reviewer`` holds a live claim
        on the pending item; None otherwise (nothing changed)."""
        ...

    def review_counts(self, tenant: str | None = None) -> dict[str, int]:
        """Items per status (every status present, 0 when none)."""
        ...

    def list_review_events(self, subject_id: str) -> list[ReviewEvent]:
        """The trail of a review item or a report, oldest first."""
        ...

    # ---------------------------------------------------------------- user reports
    def create_report(self, report: Report) -> Report:
        """Store a new report and its ``reported`` event in one transaction."""
        ...

    def get_report(self, report_id: str) -> Report | None: ...

    def list_reports(
        self,
        *,
        tenant: str | None = None,
        status: ReportStatus | None = None,
        category: ReportCategory | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Report]:
        """Reports matching every filter, newest first."""
        ...

    def triage_report(
        self, report_id: str, actor: str, now: datetime, *, status: ReportStatus | None, note: str | None
    ) -> Report | None:
        """Move a report to ``status`` and/or add a note, with its event, in one transaction;
        None if the report does not exist."""
        ...

    def report_counts(self, tenant: str | None = None) -> dict[str, int]:
        """Reports per status (every status present, 0 when none)."""
        ...

    def close(self) -> None: ...
