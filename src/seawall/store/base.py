"""The store's role protocols: what the gateway keeps between requests and across replicas.

The store is a handful of small roles, each a protocol with plain dataclasses in and out, so
the gateway, the review desk, the UI, the CLI and tests never see SQL:

* :class:`KeyStore`: app API keys (hashed);
* :class:`CounterStore`: rate-limit counters (sliding window, atomic across replicas);
* :class:`LedgerStore`: the risk ledger (risk events, user states, filtered answers, the roll-up);
* :class:`AuditWriter`: keeping audit records, hash-chained per tenant (:mod:`seawall.store.chain`);
* :class:`AuditSearch`: reading them back (search, pages, the chain, the dashboard's counts);
  :class:`AuditStore` is both;
* :class:`ReviewStore`: held answers, their trail, user reports, the review desk's counts;
* :class:`UIAccountStore`: the web UI's local accounts and sessions;
* :class:`ResponseStore`: Responses API responses kept for ``previous_response_id``.

:class:`Store` is all of them at once (plus ``ping`` and ``close``): what
:func:`seawall.store.open_store` hands back and what one deployment shares. Code that needs one
role types against that role only (the rate limiter takes a :class:`CounterStore`), so a test can
hand it anything that plays the role. Two implementations: :mod:`seawall.store.sql` (SQLAlchemy 2
on SQLite, the embedded default, or PostgreSQL, for several replicas sharing one database), one
module per role over one database helper; :mod:`seawall.store.memory` (plain Python, one
process, for unit tests and demos). tests/test_store_contract.py runs the same tests on all three.

Every method is synchronous and safe to call from several threads; the gateway calls
them through ``asyncio.to_thread``. Times are timezone-aware UTC ``datetime`` values.
No raw user ids: users are known by their safety identifier, keys by their hash. Message
text is kept only where a person must read it: review items (the held request, its sources and
the draft) and user reports (the user's comment and contact), and where the app asked for it:
Responses API conversations stored to be continued (``store: true``; ``gateway.responses``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
#: What an app API key may do: every app route, or user reports only (``seawall keys create --scope``).
KeyScope = Literal["all", "feedback"]
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
KEY_SCOPES: tuple[KeyScope, ...] = get_args(KeyScope)
AUDIT_OUTCOMES: tuple[AuditOutcome, ...] = get_args(AuditOutcome)
#: The API a gateway request came through (the audit record's ``api``; records written before it
#: was recorded count as chat completions).
AuditAPI = Literal["chat.completions", "responses"]
AUDIT_APIS: tuple[AuditAPI, ...] = get_args(AuditAPI)
DEFAULT_AUDIT_API: AuditAPI = "chat.completions"


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
    #: What the key may do: ``all`` (every app route) or ``feedback`` (user reports only).
    scope: KeyScope = "all"

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
class Hit:
    """One request to count against a rate limit: at most ``limit`` per ``window_s`` in ``bucket``."""

    bucket: str
    limit: int
    window_s: int


@dataclass(frozen=True)
class Admission:
    """What :meth:`AdmissionStore.admit` read and counted in one transaction."""

    #: The user's stored state as read (expired or not: the caller judges it); None if never set.
    state: UserState | None
    #: One result per hit counted, in order; the last is the first refused one, if any was.
    results: tuple[RateLimitResult, ...]


@dataclass(frozen=True)
class HitsByStatus:
    """What :meth:`AdmissionStore.admit` counts, by the user's stored state: a table, not code, so
    a store can pick from it where the state is kept (Redis, in the script that reads the standing:
    :mod:`seawall.store.hot_state`) instead of reading the state back first. Called with a state,
    it picks in Python (what the SQL and memory stores do).

    ``free``: the hits for a user with no standing in force at ``now`` (none stored, ``ok``, or a
    ``until`` at or before ``now``: :meth:`UserState.in_force_at`); ``in_force``: those for each
    status in force (a status not in it counts nothing: a blocked user, say)."""

    now: datetime
    free: tuple[Hit, ...]
    in_force: Mapping[UserStatus, tuple[Hit, ...]]

    def __call__(self, state: UserState | None) -> Sequence[Hit]:
        if state is None or not state.in_force_at(self.now):
            return self.free
        return self.in_force.get(state.status, ())

    def distinct(self) -> tuple[Hit, ...]:
        """Every hit the table names, each once, in the order first named."""
        named = [*self.free, *(hit for hits in self.in_force.values() for hit in hits)]
        return tuple(dict.fromkeys(named))


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

    def in_force_at(self, now: datetime) -> bool:
        """Whether this state binds at ``now``: not ``ok`` and not run out (``until`` after ``now``)."""
        return self.status != "ok" and (self.until is None or self.until > now)


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


def has_reason(reasons: Iterable[str], wanted: str) -> bool:
    """Whether an item held for ``reasons`` was held for ``wanted``: one of them whole
    (``uncertain:harassment``), or, for a ``wanted`` without a colon, one of that kind
    (``uncertain`` matches ``uncertain:harassment``)."""
    return any(
        reason == wanted or (":" not in wanted and reason.partition(":")[0] == wanted) for reason in reasons
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

    @classmethod
    def decision(
        cls,
        review_id: str,
        status: str,
        reviewer: str,
        at: datetime,
        edited_text: str | None,
        reason: str | None,
    ) -> ReviewEvent:
        """The trail entry of a decision: the edit's length (never its text) and the reason."""
        detail: dict[str, Any] = {}
        if edited_text is not None:
            detail["edited_chars"] = len(edited_text)
        if reason:
            detail["reason"] = reason
        return cls(review_id, status, reviewer, at, detail)


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


@dataclass(frozen=True)
class AuditQuery:
    """The audit search's filters (all optional) and page."""

    outcome: str | None = None
    safety_id: str | None = None  # a safety identifier, or its first hex characters
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Only records with a ``shadow`` entry: what a control in shadow mode would have done.
    shadow: bool = False
    #: Only requests through this API (:data:`AUDIT_APIS`).
    api: str | None = None
    #: Only requests of users in this trust tier (the policy's ``tiers``).
    tier: str | None = None
    page: int = 1
    page_size: int = 50


@dataclass(frozen=True)
class AuditPage:
    """One page of audit records, newest first, and how many records match in all."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


#: (bucket start in epoch seconds, outcome, the record's ``risk``, requests): the dashboard's counts.
OutcomeRow = tuple[int, str | None, str | None, int]
#: (bucket start in epoch seconds, category, requests a decision flagged with it).
FlagRow = tuple[int, str, int]


@dataclass(frozen=True)
class DeskCounts:
    """The review desk's counts over ``[since, until)``, per time bucket (epoch seconds)."""

    held: dict[int, int]  # bucket -> items created
    decided: dict[int, tuple[int, float]]  # bucket -> (items decided, their seconds to decision summed)
    durations: list[float]  # seconds to decision of the latest (up to 20,000) decisions in range
    waiting_before: int  # items created before ``since`` and not decided by then
    pending: int  # pending items now
    claimed: int  # pending items with a live claim now
    oldest_pending: datetime | None
    reports: list[tuple[int, str, int]]  # (bucket, current status, reports created)
    report_totals: dict[str, int]  # status -> reports, all time


@dataclass(frozen=True)
class AccountRow:
    """A web UI account as stored (the password's argon2 hash included)."""

    name: str
    role: str
    password_hash: str
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None = None
    last_login_at: datetime | None = None


@dataclass(frozen=True)
class SessionRow:
    """A web UI session as stored: the SHA-256 of its token, never the token."""

    token_hash: str
    subject: str  # the account name, or the OIDC e-mail
    source: str  # "local" or "oidc"
    role: str  # the role at sign-in (OIDC); local sessions re-read the account's
    display_name: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class StoredResponse:
    """A Responses API response kept so that a later request can continue it (``previous_response_id``).

    ``input_items`` is the whole conversation the response answered, in the Responses API's item
    format (the previous responses' items first, then the request's own; never ``instructions``,
    which a continuation does not inherit); ``response`` is the Response object the client got,
    whose ``output`` continues the conversation. ``tenant`` and ``key_id`` say whose it is: only
    the same app key reads it back."""

    id: str  # "resp_" + hex
    tenant: str
    key_id: str | None
    created_at: datetime
    expires_at: datetime
    input_items: list[dict[str, Any]]
    response: dict[str, Any]


def operator_token_hash(token: str) -> str:
    """What the store keeps of an operator token (or a UI session token): its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class OperatorToken:
    """An operator's bearer token for the API and ``/metrics`` (made in the UI or with
    ``seawall tokens create``), as stored: its SHA-256, never the token."""

    id: str  # "tok_" + 12 hex characters; public
    name: str  # what it is for, e.g. "prometheus"
    role: str  # "reviewer" or "admin"
    token_hash: str
    prefix: str  # the token's first 8 characters, to recognise it in a list
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore(Protocol):
    """App API keys, stored hashed."""

    def create_key(
        self, name: str, tenant: str, key_hash: str, prefix: str, *, scope: KeyScope = "all"
    ) -> ApiKey:
        """Store a new key's hash; the caller generated the key and shows it once.
        InvalidRequestError (``duplicate_key``) when the hash is stored already."""
        ...

    def list_keys(self, tenant: str | None = None, *, include_revoked: bool = False) -> list[ApiKey]:
        """Keys, oldest first; active ones only unless ``include_revoked``."""
        ...

    def revoke_key(self, key_id: str) -> ApiKey:
        """Mark a key revoked (idempotent); raises seawall.errors.NotFoundError if unknown."""
        ...

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash (revoked ones too: the caller decides), touching last_used_at."""
        ...


class CounterStore(Protocol):
    """Rate-limit counters, shared by every replica."""

    def hit(self, bucket: str, limit: int, window_s: int, now: datetime) -> RateLimitResult:
        """Count one request against ``bucket`` (sliding window over two fixed windows),
        atomically across replicas. A refused hit is not counted."""
        ...

    def prune(self, now: datetime) -> int:
        """Forget windows that no hit at ``now`` or later reads; how many (``hit`` calls it now and then)."""
        ...


class LedgerStore(Protocol):
    """The risk ledger: users' risk events and escalation states, filtered answers, the roll-up."""

    def record_event(self, event: RiskEvent) -> None: ...

    def count_events(self, tenant: str, safety_id: str, level: RiskLevel, since: datetime) -> int:
        """How many events of ``level`` the user had at or after ``since``."""
        ...

    def get_user(self, tenant: str, safety_id: str) -> UserState | None: ...

    def set_user(self, state: UserState) -> None:
        """Insert or replace the user's state."""
        ...

    def list_users(
        self, tenant: str, *, since: datetime, status: UserStatus | None = None, limit: int = 100
    ) -> list[UserSummary]:
        """Users with a non-ok state or any event since ``since``, most high-risk events first
        (then most medium-risk events, then the latest event, then the id); ``status`` keeps only
        users in that state (``"ok"`` includes users with events and no stored state)."""
        ...

    def record_filtered_answer(self, answer: FilteredAnswer) -> None:
        """Count one answer that output moderation filtered (per tenant and model, not per user)."""
        ...

    def org_summary(self, tenant: str, since: datetime) -> OrgSummary:
        """Events per risk level (``medium`` and ``high`` always present), users with a high-risk
        event and filtered answers per model since ``since``; users per non-ok status now."""
        ...


class AdmissionStore(LedgerStore, CounterStore, Protocol):
    """A request's admission in one call: the user's standing read and its rate limits counted
    together (one transaction, one round trip where the store allows), for the gateway's hot path."""

    def admit(self, tenant: str, safety_id: str, hits: HitsByStatus, now: datetime) -> Admission:
        """Read the user's stored state, then count the hits ``hits`` names for that state (none for
        a blocked user, say), in order, as :meth:`~CounterStore.hit` would at ``now``, stopping at
        the first refused one; atomic like :meth:`~CounterStore.hit`, and the state is the stored one
        at that moment (no cache): a block written by any replica before the call is seen."""
        ...


class AuditWriter(Protocol):
    """Keeping the gateway's audit records."""

    def write_audit(self, record: dict[str, Any]) -> None:
        """Keep one audit record (the JSON the gateway writes), linked into its tenant's hash chain
        (:mod:`seawall.store.chain`): the stored copy gets ``prev_hash`` and ``hash``. A record
        whose ``request_id`` is stored already replaces it in searches; the earlier one stays in
        the chain, superseded. ``time``: ISO 8601 text or a datetime; the store's clock when absent.
        ValueError without a ``request_id``."""
        ...


class AuditSearch(Protocol):
    """Reading audit records back: the API's search, the UI's pages and dashboard, the chain."""

    def search_audit(
        self,
        tenant: str | None = None,
        *,
        safety_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit records matching every filter given, newest first (superseded ones left out)."""
        ...

    def audit_page(self, query: AuditQuery) -> AuditPage:
        """One page of the records matching ``query``, newest first, and how many match. A
        ``safety_id`` shorter than 64 hex characters matches as a prefix."""
        ...

    def get_audit(self, request_id: str) -> dict[str, Any] | None:
        """The current audit record of one request."""
        ...

    def audit_exists(self, request_id: str) -> bool:
        """Whether the store holds an audit record of ``request_id``."""
        ...

    def audit_tenants(self, limit: int = 100) -> list[str]:
        """Tenants that have audit records, in order, at most ``limit``."""
        ...

    def user_tiers(self, tenant: str, safety_ids: Sequence[str]) -> dict[str, str]:
        """The trust tier of each user's latest audit record that names one (superseded records
        left out), by safety identifier; users without such a record are absent."""
        ...

    def audit_counts(
        self, since: datetime, until: datetime, bucket_s: int, tenant: str | None = None
    ) -> tuple[list[OutcomeRow], list[FlagRow]]:
        """The dashboard's counts over records in ``[since, until)`` per bucket of ``bucket_s``
        seconds: requests per (bucket, outcome, risk), and per (bucket, category) the records
        any of whose decisions named the category."""
        ...

    def audit_chain(self, tenant: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored audit record (superseded ones too) in the order written, as
        ``(position, record)`` with its hash-chain links: what :func:`.chain.verify` walks."""
        ...


class AuditStore(AuditWriter, AuditSearch, Protocol):
    """Audit records, written and read."""


class ReviewStore(Protocol):
    """Answers held for human review, their trail, user reports, and the review desk's counts."""

    def create_review(self, item: ReviewItem) -> ReviewItem:
        """Store a new pending item and its ``held`` event in one transaction
        (InvalidRequestError ``duplicate_review`` when the id is taken)."""
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
        safety_id: str | None = None,
        reason: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ReviewItem]:
        """Items matching every filter, oldest first (the queue's order). ``claimable_at``: only
        pending items nobody holds a live claim on at that time; ``safety_id``: one end user's;
        ``reason``: held for it (:func:`has_reason`: a whole reason, or a kind such as ``uncertain``).
        ``limit`` counts matching items only."""
        ...

    def claim_review(self, review_id: str, reviewer: str, now: datetime, ttl_s: int) -> ReviewItem | None:
        """Claim a pending item for ``ttl_s`` seconds with one conditional update: it succeeds when
        nobody holds a live claim (or ``reviewer`` does: the claim is extended). The claimed item,
        or None when the claim was lost (unknown, decided, or claimed by someone else)."""
        ...

    def release_review(
        self, review_id: str, reviewer: str, now: datetime, *, by: str | None = None
    ) -> ReviewItem | None:
        """Give up ``reviewer``'s live claim; None if they held none. ``by``: an admin breaks the
        claim for them (the event is ``claim_broken`` by ``by``, naming the claimer)."""
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
        reporter: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Report]:
        """Reports matching every filter (``reporter``: the stored reporter hash), newest first."""
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

    def desk_counts(
        self, since: datetime, until: datetime, bucket_s: int, now: datetime, tenant: str | None = None
    ) -> DeskCounts:
        """Held answers, decisions, the queue and reports over ``[since, until)`` (the desk's figures)."""
        ...


class UIAccountStore(Protocol):
    """The web UI's local accounts and sessions (the rules, argon2 included, are
    :class:`seawall.ui.accounts.AccountStore`'s; this role only keeps rows)."""

    def create_account(self, name: str, role: str, password_hash: str, now: datetime) -> AccountRow:
        """A new enabled account; InvalidRequestError (param ``name``) when the name is taken."""
        ...

    def get_account(self, name: str) -> AccountRow | None: ...

    def list_accounts(self) -> list[AccountRow]:
        """Every account, by name."""
        ...

    def update_account(
        self,
        name: str,
        now: datetime,
        *,
        role: str | None = None,
        password_hash: str | None = None,
        disabled: bool | None = None,
    ) -> AccountRow:
        """Change what is given (``disabled``: True disables as of ``now``, False enables) and set
        ``updated_at``; the account as stored. NotFoundError when there is no such account."""
        ...

    def record_sign_in(self, name: str, now: datetime, password_hash: str | None = None) -> None:
        """Set ``last_login_at`` (and a re-hashed password, when given); ``updated_at`` stays."""
        ...

    def start_session(self, session: SessionRow) -> None:
        """Store a new session, forgetting the sessions that expired by its ``created_at``."""
        ...

    def find_session(self, token_hash: str) -> tuple[SessionRow, AccountRow | None] | None:
        """The session and, for a local one, its account (None when the account is gone)."""
        ...

    def touch_session(self, token_hash: str, now: datetime) -> None:
        """Set the session's ``last_seen_at``."""
        ...

    def end_session(self, token_hash: str) -> None: ...

    def end_sessions(self, subject: str, source: str) -> int:
        """End every session of one person; how many."""
        ...

    def create_token(self, token: OperatorToken) -> OperatorToken:
        """Store a new operator token (its hash); InvalidRequestError when the hash is taken."""
        ...

    def list_tokens(self, *, include_revoked: bool = False) -> list[OperatorToken]:
        """Operator tokens, oldest first; active ones only unless ``include_revoked``."""
        ...

    def revoke_token(self, token_id: str, now: datetime) -> OperatorToken:
        """Revoke a token (idempotent: the first time stays); NotFoundError when unknown."""
        ...

    def find_token(self, token_hash: str, now: datetime) -> OperatorToken | None:
        """The token with this hash (revoked ones too: the caller decides), touching
        ``last_used_at`` at most once a minute."""
        ...


class ResponseStore(Protocol):
    """Responses API responses kept to be continued, until they expire."""

    def save_response(self, stored: StoredResponse) -> None:
        """Keep ``stored`` (a response id is written once; saving it again replaces it)."""
        ...

    def get_response(self, response_id: str, now: datetime) -> StoredResponse | None:
        """The response, or None when there is none or it expired before ``now``."""
        ...

    def delete_response(self, response_id: str) -> bool:
        """Forget the response; whether there was one."""
        ...

    def prune_responses(self, now: datetime) -> int:
        """Delete the responses that expired before ``now``; how many."""
        ...


class Store(KeyStore, AdmissionStore, AuditStore, ReviewStore, UIAccountStore, ResponseStore, Protocol):
    """Every role at once: persistent state shared by every replica of one seawall deployment."""

    def ping(self) -> None:
        """Raise :class:`seawall.errors.StoreError` unless the store answers (health checks)."""
        ...

    def close(self) -> None: ...


__all__ = [
    "AUDIT_OUTCOMES",
    "KEY_SCOPES",
    "REPORT_CATEGORIES",
    "REPORT_STATUSES",
    "REVIEW_STATUSES",
    "RISK_LEVELS",
    "AccountRow",
    "Admission",
    "AdmissionStore",
    "ApiKey",
    "AuditOutcome",
    "AuditPage",
    "AuditQuery",
    "AuditSearch",
    "AuditStore",
    "AuditWriter",
    "CounterStore",
    "DeskCounts",
    "FilteredAnswer",
    "FlagRow",
    "Hit",
    "HitsByStatus",
    "KeyScope",
    "KeyStore",
    "LedgerStore",
    "OperatorToken",
    "OrgSummary",
    "OutcomeRow",
    "RateLimitResult",
    "Report",
    "ReportCategory",
    "ReportStatus",
    "ResponseStore",
    "ReviewDecision",
    "ReviewEvent",
    "ReviewItem",
    "ReviewStatus",
    "ReviewStore",
    "RiskEvent",
    "RiskLevel",
    "SessionRow",
    "Store",
    "StoredResponse",
    "UIAccountStore",
    "UserState",
    "UserStatus",
    "UserSummary",
    "has_reason",
    "operator_token_hash",
]
