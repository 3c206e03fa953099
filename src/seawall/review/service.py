"""Human review of held answers, and user reports: the rules, on top of the store.

Every method is synchronous (store calls; the routes and the gateway hook run them with
``asyncio.to_thread``), like :class:`seawall.gateway.risk.RiskLedger`.

**Holding.** :meth:`ReviewService.should_hold` decides from the request, the moderation
decisions the gateway made (its audit record's ``decisions``) and the request's context (tier,
scan traffic) whether an answer waits for a person, by the hold rules (``review.rules``,
:mod:`seawall.review.rules`): by default its domain is one of ``settings.domains`` (declared by
the app in ``seawall.review.domain`` or detected by :class:`~seawall.review.domains.DomainDetector`),
a moderation category was flagged with the ``flag`` action (let through, for a person to see), or
a category score is in the uncertain band ``[uncertain_low, flag threshold)``. The item keeps
which rules matched and why (``request["hold"]``). An answer the gateway already refused or
filtered is never held. :meth:`hold` stores the item (one transaction with its ``held`` event),
notifies, and returns the pending-review body (what the client then gets, a placeholder
completion, that body with 202, or the decision: :mod:`seawall.review.responses`).

**Deciding.** A reviewer claims an item (:meth:`claim`; a conditional UPDATE, so two reviewers
never hold one item; claims expire after ``claim_ttl_s`` and the item is claimable again), then
approves, edits or rejects it (:meth:`decide`; only the claimer, only while the claim lives; the
decision and its event are one transaction). The client polls (:meth:`poll`); the request's own
webhook, if it gave one, hears ``review.decided``; a request waiting for the decision
(``hold_response: wait``) is woken at once (:class:`~seawall.review.responses.DecisionWaiters`).

**Reports.** :meth:`report` stores a user's report about a response (rate-limited per user with
the store's ``hit``); :meth:`triage` moves it through new -> investigating -> resolved/dismissed
with notes. Every change leaves an event (:meth:`events`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from seawall.clock import Clock, utc_now
from seawall.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from seawall.messages import REASONING_FIELDS, last_user_text, text_of
from seawall.ratelimit import enforce
from seawall.review.domains import DomainDetector
from seawall.review.metrics import ReviewMetrics
from seawall.review.notify import Notifier, check_webhook_url
from seawall.review.responses import POLL_PATH, DecisionWaiters
from seawall.review.rules import HoldContext, HoldRules
from seawall.review.settings import DOMAINS, ReviewSettings
from seawall.store.base import (
    REPORT_CATEGORIES,
    REPORT_STATUSES,
    AuditSearch,
    CounterStore,
    Report,
    ReportCategory,
    ReportStatus,
    ReviewDecision,
    ReviewItem,
    ReviewStatus,
    ReviewStore,
)

#: The field of the ``seawall`` extension that carries review options.
REVIEW_FIELD = "review"
#: The ``object`` of the pending-review body.
PENDING_OBJECT = "chat.completion.pending"
_EXTENSION_KEYS = frozenset({"domain", "sources", "notes", "webhook"})


@dataclass(frozen=True)
class ReviewRequest:
    """What a request asked of review in ``seawall.review`` (checked)."""

    domain: str | None = None
    sources: tuple[dict[str, str], ...] = ()
    notes: str | None = None
    webhook: str | None = None


@dataclass(frozen=True)
class HoldDecision:
    """Why an answer is held: ``reasons`` like ``declared:health``, ``domain:law``,
    ``flagged:violence``, ``uncertain:harassment``; the domain; the scores that were seen."""

    reasons: tuple[str, ...]
    domain: str | None
    scores: dict[str, float]
    request: ReviewRequest
    #: The matched rules and why, the scores by whose they are (:meth:`RuleMatch.record`).
    explanation: dict[str, Any] = field(default_factory=dict)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


log = logging.getLogger("seawall.review")

_TITLE_WARNED = threading.Event()


def _warn_title_once() -> None:
    if not _TITLE_WARNED.is_set():
        _TITLE_WARNED.set()
        log.warning(
            "seawall.review.sources[].title is deprecated: send {'source', 'text'}, the shape of "
            "seawall.documents (title is still read for now)"
        )


def parse_review_request(extension: Any, settings: ReviewSettings) -> ReviewRequest:
    """The ``seawall.review`` field, checked; 400 naming the field for every mistake."""
    where = f"seawall.{REVIEW_FIELD}"
    if extension is None:
        return ReviewRequest()
    if not isinstance(extension, dict):
        raise InvalidRequestError(f"'{where}' must be an object", param=where)
    unknown = sorted(set(extension) - _EXTENSION_KEYS)
    if unknown:
        raise InvalidRequestError(
            f"unknown field(s) in '{where}': {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_EXTENSION_KEYS))})",
            param=f"{where}.{unknown[0]}",
        )
    domain = extension.get("domain")
    if domain is not None and domain not in DOMAINS and domain != "none":
        raise InvalidRequestError(
            f"'{where}.domain' must be one of {', '.join(DOMAINS)} (or 'none')", param=f"{where}.domain"
        )
    raw_sources = extension.get("sources") or []
    if not isinstance(raw_sources, list):
        raise InvalidRequestError("must be an array", param=f"{where}.sources")
    sources: list[dict[str, str]] = []
    for index, source in enumerate(raw_sources):
        at = f"{where}.sources[{index}]"
        # One shape with the documents of the extension field: {"source", "text"}. The older
        # {"title", "text"} is still read (deprecated: logged once per process).
        if (
            not isinstance(source, dict)
            or not isinstance(source.get("text"), str)
            or not isinstance(source.get("source", ""), str)
            or not isinstance(source.get("title", ""), str)
            or set(source) - {"source", "title", "text"}
            or ("source" in source and "title" in source)
        ):
            raise InvalidRequestError(
                f"{at} must be an object with a string 'text' and an optional string 'source' "
                "(as the extension field's documents)",
                param=at,
            )
        if "title" in source:
            _warn_title_once()
        label = source.get("source") or source.get("title") or f"source {index + 1}"
        sources.append({"title": label, "text": source["text"]})
    notes = extension.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise InvalidRequestError(f"'{where}.notes' must be a string", param=f"{where}.notes")
    total = sum(len(s["text"]) + len(s["title"]) for s in sources) + len(notes or "")
    if total > settings.max_sources_chars:
        raise PayloadTooLargeError(
            f"review sources and notes are {total} characters; the limit is {settings.max_sources_chars}",
            param=f"{where}.sources",
        )
    webhook = extension.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, str):
            raise InvalidRequestError(f"'{where}.webhook' must be a string", param=f"{where}.webhook")
        check_webhook_url(webhook, settings.notify, param=f"{where}.webhook")
    return ReviewRequest(domain, tuple(sources), notes, webhook)


#: Report statuses that close it: only an admin sets them or moves a report out of them.
CLOSED_REPORT: frozenset[str] = frozenset({"resolved", "dismissed"})
#: The longest reviewer's text (an edited answer) or triage note, as the desk's forms allow.
MAX_NOTE_CHARS = 20_000


class ReviewServiceStore(ReviewStore, CounterStore, AuditSearch, Protocol):
    """The roles the review service needs: review items and reports, counters for report limits, and
    audit records to check whose conversation a report names."""


class ReviewService:
    """Hold, poll, claim, decide; report and triage. Create once per app; :meth:`close` at the end."""

    def __init__(
        self,
        store: ReviewServiceStore,
        settings: ReviewSettings,
        *,
        notifier: Notifier | None = None,
        metrics: ReviewMetrics | None = None,
        detector: DomainDetector | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier if notifier is not None else Notifier(settings.notify)
        self.metrics = metrics if metrics is not None else ReviewMetrics(store)
        self._detector = detector
        self.rules = HoldRules(settings)
        self.clock = clock
        #: Requests waiting for a decision (hold_response wait), woken by :meth:`decide`.
        self.waiters = DecisionWaiters()
        self.metrics.count_waiting(self.waiters.total)

    def close(self) -> None:
        self.notifier.close()

    @property
    def detector(self) -> DomainDetector:
        if self._detector is None:
            self._detector = DomainDetector(
                self.rules.domains or self.settings.domains, threshold=self.settings.domain_threshold
            )
        return self._detector

    # ------------------------------------------------------------------ the gateway side

    def review_request(self, body: Mapping[str, Any]) -> ReviewRequest:
        """The request's ``seawall.review`` field, checked (400 on mistakes)."""
        extension = body.get("seawall")
        if not isinstance(extension, dict):
            return ReviewRequest()
        return parse_review_request(extension.get(REVIEW_FIELD), self.settings)

    def should_hold(
        self,
        body: Mapping[str, Any],
        decisions: Iterable[Mapping[str, Any]],
        context: HoldContext | None = None,
    ) -> HoldDecision | None:
        """Whether the answer to ``body`` waits for a reviewer, given the gateway's moderation
        ``decisions`` (audit record ``decisions``: step, action, categories, scores) and the request's
        ``context`` (the user's tier, scan traffic): the hold rules (:mod:`seawall.review.rules`)."""
        if not self.settings.enabled:
            return None
        request = self.review_request(body)

        def detect() -> tuple[str | None, float, float]:
            question = last_user_text(body.get("messages"))
            if not question:
                return None, 0.0, self.detector.threshold
            verdict = self.detector.detect(question)
            held: dict[str, float] = {
                name: score for name, score in verdict.scores.items() if name in self.rules.domains
            }
            best = max(held, key=lambda name: held[name], default=None)
            threshold = self.detector.threshold
            if best is None or held[best] < threshold:
                return None, max(held.values(), default=0.0), threshold
            return best, held[best], threshold

        match = self.rules.match(
            decisions, declared=request.domain, detect=detect, context=context or HoldContext()
        )
        if match is None or not match.fired:
            return None
        return HoldDecision(match.reasons, match.domain, match.seen.merged(), request, match.record())

    def hold(
        self,
        decision: HoldDecision,
        body: Mapping[str, Any],
        completion: Mapping[str, Any],
        *,
        request_id: str,
        tenant: str,
        safety_id: str | None = None,
    ) -> dict[str, Any]:
        """Store the draft ``completion`` for review and return the client's pending body (HTTP 202)."""
        now = self.clock()
        review_id = f"rev_{secrets.token_hex(16)}"
        request: dict[str, Any] = {"model": body.get("model"), "messages": body.get("messages") or []}
        for cap in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(cap), int):
                request[cap] = body[cap]
        if decision.explanation:
            request["hold"] = decision.explanation
        item = ReviewItem(
            id=review_id,
            tenant=tenant,
            request_id=request_id,
            status="pending",
            created_at=now,
            request=request,
            draft=dict(completion),
            completion_id=str(completion.get("id")) if completion.get("id") else None,
            safety_id=safety_id,
            domain=decision.domain,
            reasons=decision.reasons,
            scores={name: round(score, 4) for name, score in decision.scores.items()},
            sources=decision.request.sources,
            notes=decision.request.notes,
            webhook=decision.request.webhook,
        )
        self.store.create_review(item)
        self.metrics.held.labels(decision.reasons[0].split(":")[0]).inc()
        self.notifier.send("review.held", self._event_payload(item))
        return self.pending_body(item)

    def pending_body(self, item: ReviewItem) -> dict[str, Any]:
        """The pending-review response: OpenAI-like, with no choices yet."""
        return {
            "id": f"chatcmpl-pending-{item.request_id}",
            "object": PENDING_OBJECT,
            "created": int(item.created_at.timestamp()),
            "model": item.request.get("model"),
            "choices": [],
            "status": "pending_review",
            "review_id": item.id,
            "poll_url": POLL_PATH.format(id=item.id),
            "message": self.settings.pending_message,
            "reasons": [reason.split(":")[0] for reason in item.reasons],
        }

    # ------------------------------------------------------------------ the client side

    def poll(self, review_id: str, tenant: str | None = None) -> dict[str, Any]:
        """What the client sees of a held answer: its status, then the final completion or the
        reason for the rejection. ``tenant``: only that tenant's items (others are 404)."""
        item = self.store.get_review(review_id)
        if item is None or (tenant is not None and item.tenant != tenant):
            raise NotFoundError(f"no review item with id {review_id!r}", param="review_id")
        return self.client_view(item)

    def client_view(self, item: ReviewItem) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": item.id,
            "object": "seawall.review",
            "status": item.status,
            "request_id": item.request_id,
            "created_at": _iso(item.created_at),
            "decided_at": _iso(item.decided_at),
            "completion": final_completion(item),
            "reason": item.reason if item.status == "rejected" else None,
        }
        return view

    # ------------------------------------------------------------------ reviewers

    def get(self, review_id: str) -> ReviewItem:
        item = self.store.get_review(review_id)
        if item is None:
            raise NotFoundError(f"no review item with id {review_id!r}", param="review_id")
        return item

    def queue(
        self,
        *,
        status: ReviewStatus | None = "pending",
        domain: str | None = None,
        tenant: str | None = None,
        claimable: bool = False,
        claimed_by: str | None = None,
        safety_id: str | None = None,
        reason: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[ReviewItem]:
        """Review items, oldest first; ``claimable``: pending ones nobody holds a live claim on;
        ``safety_id``: one end user's; ``reason``: held for it, or for a reason of that kind."""
        return self.store.list_reviews(
            tenant=tenant,
            status=status,
            domain=domain,
            claimable_at=self.clock() if claimable else None,
            claimed_by=claimed_by,
            safety_id=safety_id,
            reason=reason,
            limit=limit,
            offset=offset,
        )

    def claim(self, review_id: str, reviewer: str) -> ReviewItem:
        """Claim an item (or extend one's claim); 409 ``review_claimed`` if someone else holds it,
        409 ``review_decided`` if it is decided, 404 if unknown."""
        claimed = self.store.claim_review(review_id, reviewer, self.clock(), self.settings.claim_ttl_s)
        if claimed is not None:
            return claimed
        item = self.get(review_id)
        if item.status != "pending":
            raise ConflictError(f"review {review_id} is {item.status} already", code="review_decided")
        raise ConflictError(
            f"review {review_id} is claimed by {item.claimed_by} until {_iso(item.claim_expires_at)}",
            code="review_claimed",
        )

    def release(self, review_id: str, reviewer: str) -> ReviewItem:
        released = self.store.release_review(review_id, reviewer, self.clock())
        if released is None:
            self.get(review_id)
            raise ConflictError(f"you hold no claim on review {review_id}", code="review_not_claimed")
        return released

    def break_claim(self, review_id: str, admin: str) -> ReviewItem:
        """An admin ends someone's live claim (they left with it): the item is claimable again and
        the trail says who broke whose claim. 409 ``review_not_claimed`` when nobody holds one."""
        item = self.get(review_id)
        now = self.clock()
        if item.status != "pending":
            raise ConflictError(f"review {review_id} is {item.status} already", code="review_decided")
        if item.claimable(now) or item.claimed_by is None:
            raise ConflictError(f"nobody holds a claim on review {review_id}", code="review_not_claimed")
        broken = self.store.release_review(review_id, item.claimed_by, now, by=admin)
        if broken is None:  # the claimer released it or decided in the meantime
            raise ConflictError(f"the claim on review {review_id} ended meanwhile", code="review_not_claimed")
        return broken

    def decide(
        self,
        review_id: str,
        reviewer: str,
        decision: ReviewDecision,
        *,
        text: str | None = None,
        reason: str | None = None,
    ) -> ReviewItem:
        """Approve, edit (with ``text``) or reject (with ``reason``) an item the reviewer claimed."""
        if decision not in ("approve", "edit", "reject"):
            raise InvalidRequestError("decision must be approve, edit or reject", param="decision")
        if decision == "edit" and not (text and text.strip()):
            raise InvalidRequestError("an edit needs the edited answer in 'text'", param="text")
        if decision == "reject" and not (reason and reason.strip()):
            raise InvalidRequestError("a rejection needs a 'reason'", param="reason")
        if decision != "edit" and text is not None:
            raise InvalidRequestError("'text' goes with the edit decision only", param="text")
        for name, value in (("text", text), ("reason", reason)):
            if value is not None and len(value) > MAX_NOTE_CHARS:
                raise PayloadTooLargeError(
                    f"'{name}' is {len(value)} characters; the limit is {MAX_NOTE_CHARS}", param=name
                )
        decided = self.store.decide_review(
            review_id,
            reviewer,
            decision,
            self.clock(),
            edited_text=text if decision == "edit" else None,
            reason=reason.strip() if reason else None,
        )
        if decided is None:
            item = self.get(review_id)
            if item.status != "pending":
                raise ConflictError(f"review {review_id} is {item.status} already", code="review_decided")
            raise ConflictError(
                f"claim review {review_id} before deciding it (your claim may have expired)",
                code="review_not_claimed",
            )
        self.waiters.notify(decided.id)
        self.metrics.decisions.labels(decision).inc()
        if decided.decided_at is not None:
            self.metrics.time_to_decision.observe((decided.decided_at - decided.created_at).total_seconds())
        payload = {**self._event_payload(decided), **self.client_view(decided)}
        self.notifier.send("review.decided", payload, webhook=decided.webhook)
        return decided

    def events(self, subject_id: str) -> list[dict[str, Any]]:
        return [
            {"action": e.action, "actor": e.actor, "at": _iso(e.at), "detail": e.detail}
            for e in self.store.list_review_events(subject_id)
        ]

    def reviewer_view(self, item: ReviewItem) -> dict[str, Any]:
        """Everything a reviewer sees of an item (the request, sources, draft, scores, claim)."""
        now = self.clock()
        return {
            "id": item.id,
            "object": "seawall.review_item",
            "status": item.status,
            "tenant": item.tenant,
            "request_id": item.request_id,
            "completion_id": item.completion_id,
            "domain": item.domain,
            "reasons": list(item.reasons),
            "scores": item.scores,
            "request": item.request,
            "sources": [dict(source) for source in item.sources],
            "notes": item.notes,
            "draft": item.draft,
            "draft_text": draft_text(item.draft),
            "claimed_by": None if item.claimable(now) else item.claimed_by,
            "claim_expires_at": None if item.claimable(now) else _iso(item.claim_expires_at),
            "claimable": item.claimable(now),
            "decision": item.decision,
            "edited_text": item.edited_text,
            "reason": item.reason,
            "decided_by": item.decided_by,
            "created_at": _iso(item.created_at),
            "decided_at": _iso(item.decided_at),
            "has_webhook": item.webhook is not None,
        }

    # ------------------------------------------------------------------ user reports

    def report(
        self,
        tenant: str,
        *,
        response_id: str,
        category: str,
        comment: str = "",
        contact: str | None = None,
        reporter: str | None = None,
        source: str | None = None,
    ) -> Report:
        """Store a user's report, rate-limited per ``source`` (what the client cannot choose: the
        routes pass the API key and address, or a trusted user header), else per ``reporter``.
        ``reporter``: the user's safety identifier (the gateway's HMAC of the user id; the routes
        compute it), digested again before it is kept; it names the reporter's history."""
        if not response_id or len(response_id) > 200:
            raise InvalidRequestError(
                "'response_id' is required (at most 200 characters)", param="response_id"
            )
        if category not in REPORT_CATEGORIES:
            raise InvalidRequestError(
                f"'category' must be one of {', '.join(REPORT_CATEGORIES)}", param="category"
            )
        if len(comment) > self.settings.max_comment_chars:
            raise PayloadTooLargeError(
                f"the comment is {len(comment)} characters; the limit is {self.settings.max_comment_chars}",
                param="comment",
            )
        if contact is not None and len(contact) > 320:
            raise InvalidRequestError("'contact' is at most 320 characters", param="contact")
        reporter_hash = _digest(tenant, reporter) if reporter else None
        limit = self.settings.feedback_limit
        counted = _digest(tenant, source) if source else reporter_hash
        bucket = f"feedback:{tenant}:{counted or 'anonymous'}"
        refusal = f"Too many reports: {limit.requests} per {limit.window_s} s."
        enforce(self.store, bucket, limit.requests, limit.window_s, self.clock(), refusal)
        request_id, review_id = self._resolve(response_id, tenant)
        now = self.clock()
        report = Report(
            id=f"rpt_{secrets.token_hex(12)}",
            tenant=tenant,
            response_id=response_id,
            category=category,  # type: ignore[arg-type]  # checked against REPORT_CATEGORIES above
            status="new",
            created_at=now,
            updated_at=now,
            comment=comment,
            contact=contact,
            reporter=reporter_hash,
            request_id=request_id,
            review_id=review_id,
        )
        self.store.create_report(report)
        self.metrics.reports.labels(category).inc()
        self.notifier.send("report.created", self._report_payload(report))
        return report

    def _resolve(self, response_id: str, tenant: str) -> tuple[str | None, str | None]:
        """The gateway request (and held answer) a response id names, when the store knows it and it
        is ``tenant``'s: a report never links another tenant's conversation."""
        if response_id.startswith("rev_"):
            item = self.store.get_review(response_id)
            if item is not None and item.tenant == tenant:
                return item.request_id, item.id
            return None, None
        request_id = None
        if response_id.startswith("swreq-"):
            request_id = response_id
        elif response_id.startswith("chatcmpl-pending-"):
            request_id = response_id.removeprefix("chatcmpl-pending-")
        elif response_id.startswith("chatcmpl-swreq-"):
            request_id = response_id.removeprefix("chatcmpl-")
        if request_id is None:
            return None, None
        # Its audit record may not be written yet (a report right after the answer): linked then, and
        # the desk checks the tenant again when it shows the record.
        record = self.store.get_audit(request_id)
        if record is not None and record.get("tenant") != tenant:
            return None, None
        return request_id, None

    def get_report(self, report_id: str) -> Report:
        found = self.store.get_report(report_id)
        if found is None:
            raise NotFoundError(f"no report with id {report_id!r}", param="report_id")
        return found

    def reports(
        self,
        *,
        status: ReportStatus | None = None,
        category: ReportCategory | None = None,
        tenant: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Report]:
        return self.store.list_reports(
            tenant=tenant, status=status, category=category, limit=limit, offset=offset
        )

    def triage(
        self, report_id: str, actor: str, *, status: str | None, note: str | None, admin: bool
    ) -> Report:
        """Move a report to ``status`` and/or add a ``note``. Only an ``admin`` closes a report
        (:data:`CLOSED_REPORT`) or reopens a closed one; the note is at most :data:`MAX_NOTE_CHARS`."""
        if status is not None and status not in REPORT_STATUSES:
            raise InvalidRequestError(f"'status' must be one of {', '.join(REPORT_STATUSES)}", param="status")
        if status is None and not (note and note.strip()):
            raise InvalidRequestError("give a 'status', a 'note' or both", param="status")
        if note is not None and len(note) > MAX_NOTE_CHARS:
            raise PayloadTooLargeError(
                f"the note is {len(note)} characters; the limit is {MAX_NOTE_CHARS}", param="note"
            )
        if status is not None and not admin:
            current = self.get_report(report_id).status
            if status != current and (status in CLOSED_REPORT or current in CLOSED_REPORT):
                raise PermissionDeniedError(
                    "Only administrators close reports (resolved, dismissed) or reopen them.",
                    code="admin_required",
                )
        updated = self.store.triage_report(
            report_id,
            actor,
            self.clock(),
            status=status,  # type: ignore[arg-type]  # checked against REPORT_STATUSES above
            note=note.strip() if note else None,
        )
        if updated is None:
            raise NotFoundError(f"no report with id {report_id!r}", param="report_id")
        return updated

    def report_view(self, report: Report) -> dict[str, Any]:
        return {
            "id": report.id,
            "object": "seawall.report",
            "tenant": report.tenant,
            "response_id": report.response_id,
            "request_id": report.request_id,
            "review_id": report.review_id,
            "category": report.category,
            "status": report.status,
            "comment": report.comment,
            "contact": report.contact,
            "notes": [dict(note) for note in report.notes],
            "created_at": _iso(report.created_at),
            "updated_at": _iso(report.updated_at),
            "updated_by": report.updated_by,
        }

    # ------------------------------------------------------------------ notifications

    def _event_payload(self, item: ReviewItem) -> dict[str, Any]:
        return {
            "id": item.id,
            "tenant": item.tenant,
            "request_id": item.request_id,
            "status": item.status,
            "domain": item.domain,
            "reasons": list(item.reasons),
            "created_at": _iso(item.created_at),
            "decided_by": item.decided_by,
        }

    def _report_payload(self, report: Report) -> dict[str, Any]:
        return {
            "id": report.id,
            "tenant": report.tenant,
            "response_id": report.response_id,
            "category": report.category,
            "comment": report.comment,
            "created_at": _iso(report.created_at),
        }


def final_completion(item: ReviewItem) -> dict[str, Any] | None:
    """The completion the client gets: the draft (approved), the draft with the reviewer's text
    as its only choice (edited), or None (pending, rejected)."""
    if item.status == "approved":
        return item.draft
    if item.status != "edited" or item.edited_text is None:
        return None
    choices = item.draft.get("choices") or [{"index": 0, "message": {"role": "assistant"}}]
    first = dict(choices[0])
    # The reviewer's text replaces the whole draft: its tool calls, reasoning and log probabilities
    # (which spell out the draft's tokens) go with it.
    message = {
        key: value
        for key, value in (first.get("message") or {}).items()
        if key not in ("tool_calls", "refusal", *REASONING_FIELDS)
    }
    first.pop("logprobs", None)
    first.update(
        index=0, message={**message, "role": "assistant", "content": item.edited_text}, finish_reason="stop"
    )
    return {**item.draft, "choices": [first]}


def draft_text(draft: Mapping[str, Any]) -> str:
    """Everything approving ``draft`` releases, as its reviewer reads it: every choice's text, its
    tool calls (name and arguments) and any reasoning beside it; choices are numbered when there
    are several."""
    choices = [choice for choice in draft.get("choices") or [] if isinstance(choice, dict)]
    shown = []
    for number, choice in enumerate(choices):
        message = choice.get("message") or {}
        lines = [text_of(message.get("content"))]
        for call in message.get("tool_calls") or []:
            function = (call or {}).get("function") or {}
            lines.append(f"[tool call] {function.get('name')}({function.get('arguments') or ''})")
        lines += [f"[{key}] {message[key]}" for key in REASONING_FIELDS if isinstance(message.get(key), str)]
        body = "\n".join(line for line in lines if line)
        shown.append(f"[choice {number + 1} of {len(choices)}] {body}" if len(choices) > 1 else body)
    return "\n\n".join(shown)


def _digest(tenant: str, user: str) -> str:
    return hashlib.sha256(f"{tenant}\x00{user}".encode()).hexdigest()[:32]


__all__ = [
    "CLOSED_REPORT",
    "MAX_NOTE_CHARS",
    "PENDING_OBJECT",
    "POLL_PATH",
    "HoldDecision",
    "ReviewRequest",
    "ReviewService",
    "draft_text",
    "final_completion",
    "parse_review_request",
]
