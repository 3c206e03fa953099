"""The review desk in the web UI: the queue of held answers, one item's page with its decisions,
and the triage of user reports. Every action calls :class:`~seawall.review.service.ReviewService`
directly (which audits it as an event), as the signed-in person (their account name or e-mail).

=====================================  =========  ==========================================
route                                  role       what
=====================================  =========  ==========================================
``GET /ui/review``                     reviewer   held answers: sort by risk, age or domain; filter by
                                                  status, tenant, user, domain, reason, claim
``GET /ui/review/{id}``                reviewer   request, sources, notes, draft, scores, trail
``POST /ui/review/{id}/claim|release`` reviewer   take or hand back the claim (CSRF-checked)
``POST /ui/review/{id}/approve|edit``  reviewer   decide (edit: ``text``; reject: ``reason``)
``POST /ui/review/{id}/reject``        reviewer
``POST /ui/review/{id}/break``         admin      end someone else's live claim (they left with it)
``POST /ui/review``                    reviewer   bulk: reject or release (approve) the ticked items
                                                  with one reason
``GET /ui/reports``                    reviewer   user reports by status and category
``GET /ui/reports/{id}``               reviewer   one report: the reported answer (or why it
                                                  cannot be shown), the comment, the request's
                                                  decisions and scores, the reporter's other
                                                  reports, notes and trail (contact: admins)
``POST /ui/reports/{id}``              reviewer   add a note, move to investigating; closing
                                                  (resolved, dismissed) or reopening: admins
=====================================  =========  ==========================================

A decision that loses a race (someone else holds the claim, the claim expired, the item is
decided already) shows the item again with the reason, status 409.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from seawall.errors import ConflictError, InvalidRequestError, NotFoundError
from seawall.messages import last_user_text, text_of
from seawall.review.service import CLOSED_REPORT, MAX_NOTE_CHARS, ReviewService, draft_text
from seawall.review.settings import DOMAINS
from seawall.store.base import (
    REPORT_CATEGORIES,
    REPORT_STATUSES,
    REVIEW_STATUSES,
    Report,
    ReviewItem,
    Store,
)
from seawall.ui.pages import Denied, form_field

if TYPE_CHECKING:
    from seawall.settings import Settings
    from seawall.ui.accounts import Session
    from seawall.ui.settings import Role

#: Items per queue page.
QUEUE_LIMIT = 200
#: Most items read (every filter applied by the store) to sort by risk (the queue says when it was cut).
SCAN_LIMIT = 2000
#: Queue orders: highest risk first, oldest first, by domain (then oldest first).
SORTS = ("risk", "age", "domain")
#: The kinds of hold reasons (``domain:health`` is of kind ``domain``).
REASON_KINDS = ("domain", "declared", "flagged", "uncertain")
REVIEW_ACTIONS = ("claim", "release", "approve", "edit", "reject", "break")
#: The reporter's other reports shown on a report's page (newest first).
HISTORY_LIMIT = 20


def _conversation(record: dict[str, Any] | None) -> list[dict[str, str]]:
    """The messages an audit record kept (``gateway.audit_content``), as role and text."""
    content = (record or {}).get("content")
    messages = content.get("messages") if isinstance(content, dict) else None
    return [
        {"role": str(message.get("role", "?")), "text": text_of(message.get("content"), image=IMAGE)}
        for message in messages or []
        if isinstance(message, dict)
    ]


def reported_decisions(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An audit record's decisions for the report page: step, action, categories and the top
    scores, highest first."""
    rows: list[dict[str, Any]] = []
    for entry in (record or {}).get("decisions") or []:
        if not isinstance(entry, dict):
            continue
        scores = sorted(
            ((str(name), float(value)) for name, value in (entry.get("scores") or {}).items()),
            key=lambda pair: -pair[1],
        )
        rows.append(
            {
                "step": str(entry.get("step", "?")),
                "action": str(entry.get("action", "?")),
                "categories": [str(c) for c in entry.get("categories") or []],
                "scores": scores[:5],
            }
        )
    return rows


DONE = {
    "claim": "claimed",
    "release": "released",
    "approve": "approved",
    "edit": "edited and approved",
    "reject": "rejected",
    "break": "claim broken",
}
#: How much a hold reason's kind adds to an item's risk (a flag outranks any score).
_REASON_WEIGHT = {"flagged": 2.0, "declared": 0.5, "domain": 0.5, "uncertain": 0.0}


def risk(item: ReviewItem) -> float:
    """An item's priority: its highest moderation score, plus the weight of its strongest reason
    (flagged 2, a high-risk domain 0.5): flagged first, then domains by score, then the rest."""
    top = max(item.scores.values(), default=0.0)
    weight = max((_REASON_WEIGHT.get(reason.partition(":")[0], 0.0) for reason in item.reasons), default=0.0)
    return round(top + weight, 4)


def sort_queue(items: list[ReviewItem], sort: str) -> list[ReviewItem]:
    """``items`` (oldest first, as the store lists them) in the queue's ``sort`` order."""
    if sort == "risk":
        return sorted(items, key=lambda item: (-risk(item), item.created_at))
    if sort == "domain":
        return sorted(items, key=lambda item: (item.domain is None, item.domain or "", item.created_at))
    return list(items)


def _reason_choices(items: list[ReviewItem]) -> list[str]:
    """The reason filter's choices: the kinds, then every reason the listed items have."""
    return [*REASON_KINDS, *sorted({reason for item in items for reason in item.reasons})]


def _bulk_notice(params: Any) -> str | None:
    what = params.get("bulk")
    if what not in ("rejected", "released"):
        return None
    try:
        done, skipped = int(params.get("done", "0")), int(params.get("skipped", "0"))
    except ValueError:
        return None
    text = f"{done} answer{'' if done == 1 else 's'} {what}"
    if skipped:
        text += f"; {skipped} skipped (claimed by someone else or decided already)"
    return text + "."


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago, roughly: '45 s', '12 min', '3 h 5 min', '2 d 4 h'."""
    if moment is None:
        return "—"
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    now = datetime.now(UTC)
    return age(datetime.fromtimestamp(now.timestamp() - seconds, UTC), now)


#: What stands for an image part where the desk shows a message.
IMAGE = "[image]"


def question(item: ReviewItem) -> str:
    """The last user message of a held answer's request (what was asked)."""
    return last_user_text(item.request.get("messages"), image=IMAGE) or "—"


#: Scores below this are left out of the item's score tables (counted instead).
SCORE_FLOOR = 0.01


def score_tables(item: ReviewItem) -> list[dict[str, Any]]:
    """The item's moderation scores as the reviewer sees them: one table for the request's and one
    for the draft's (when the hold recorded them apart; else one for both together), each score
    marked ``flagged`` (over the flag threshold, let through to a person), ``band`` (at or above the
    lowest hold band: an uncertain score) or ``below``."""
    hold = item.request.get("hold")
    tables: list[dict[str, Any]] = []
    if isinstance(hold, dict) and isinstance(hold.get("scores"), dict):
        band = hold.get("band") or {}
        flagged = hold.get("flagged") or {}
        sources = [("request", "The user's request"), ("draft", "The model's draft")]
        for whose, label in sources:
            scores = hold["scores"].get(whose) or {}
            lows = band.get(whose)
            if not isinstance(lows, dict):  # recorded before bands were kept per source
                lows = {"*": band["low"]} if band.get("low") is not None else {}
            tables.append(_table(whose, label, scores, set(flagged.get(whose) or []), lows))
        return tables
    kinds = {reason.partition(":")[2]: reason.partition(":")[0] for reason in item.reasons}
    marked = {name for name, kind in kinds.items() if kind == "flagged"}
    table = _table("both", "Request and draft together (not recorded apart)", item.scores, marked, {})
    for row in table["rows"]:
        if row["mark"] == "below" and kinds.get(row["name"]) == "uncertain":
            row["mark"] = "band"
    return [table]


_MARKS = {"flagged": "flagged", "band": "in the hold band", "below": "below"}


def _table(
    whose: str, label: str, scores: dict[str, Any], flagged: set[str], lows: dict[str, float]
) -> dict[str, Any]:
    """One score table; ``lows``: the hold band's start per category (``"*"``: any category)."""
    rows = []
    hidden = 0
    for name, value in sorted(scores.items(), key=lambda pair: -float(pair[1])):
        score = float(value)
        low = lows.get(name, lows.get("*"))
        mark = "flagged" if name in flagged else "band" if low is not None and score >= low else "below"
        if score < SCORE_FLOOR and mark == "below":
            hidden += 1
            continue
        rows.append({"name": name, "score": score, "mark": mark, "says": _MARKS[mark]})
    band_low = min(lows.values()) if lows else None
    return {"whose": whose, "label": label, "rows": rows, "hidden": hidden, "band_low": band_low}


def cut_off(item: ReviewItem) -> dict[str, Any] | None:
    """When the draft stopped at the token cap (``finish_reason: length``): the cap, if known."""
    choices = item.draft.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    if first.get("finish_reason") != "length":
        return None
    cap = item.request.get("max_tokens") or item.request.get("max_completion_tokens")
    usage = item.draft.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return {"cap": cap, "tokens": tokens}


class Pages(Protocol):
    """What the desk needs of the UI it is part of (:class:`seawall.ui.routes.UI` is one)."""

    settings: Settings

    @property
    def store(self) -> Store: ...

    def render(
        self,
        request: Request,
        template: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse: ...

    async def require(self, request: Request, role: Role = "reviewer") -> Session: ...

    async def check_csrf(self, request: Request, session: Session) -> None: ...


class Desk:
    """The review queue and report triage pages; :func:`seawall.ui.routes.build_ui_app` routes them."""

    def __init__(self, ui: Pages, review: Callable[[], ReviewService | None]) -> None:
        self.ui = ui
        self._shared = review
        self._own: ReviewService | None = None

    @property
    def service(self) -> ReviewService:
        """The gateway's service when it runs (``app.state.review``), else one of the UI's own."""
        shared = self._shared()
        if shared is not None:
            return shared
        if self._own is None or self._own.store is not self.ui.store:
            self._own = ReviewService(self.ui.store, self.ui.settings.review)
        return self._own

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None

    # ------------------------------------------------------------------ the queue

    async def queue(self, request: Request) -> Response:
        session = await self.ui.require(request)
        params = request.query_params
        status = params.get("status") or "pending"
        if status not in (*REVIEW_STATUSES, "all"):
            raise Denied(f"status must be one of {', '.join(REVIEW_STATUSES)} or all", 400)
        domain = params.get("domain") or None
        if domain is not None and domain not in DOMAINS:
            raise Denied(f"domain must be one of {', '.join(DOMAINS)}", 400)
        show = params.get("show") or "all"
        if show not in ("all", "claimable", "mine"):
            raise Denied("show must be all, claimable or mine", 400)
        sort = params.get("sort") or "risk"
        if sort not in SORTS:
            raise Denied(f"sort must be one of {', '.join(SORTS)}", 400)
        reason = (params.get("reason") or "")[:100] or None
        if reason is not None and reason.partition(":")[0] not in REASON_KINDS:
            raise Denied(f"reason must start with one of {', '.join(REASON_KINDS)}", 400)
        tenant = (params.get("tenant") or "")[:200] or None
        user = (params.get("user") or "")[:200] or None
        service = self.service
        found = await run_in_threadpool(
            service.queue,
            status=None if status == "all" else cast(Any, status),
            domain=domain,
            tenant=tenant,
            claimable=show == "claimable",
            claimed_by=session.subject if show == "mine" else None,
            safety_id=user,
            reason=reason,
            limit=SCAN_LIMIT,
        )
        scanned_all = len(found) < SCAN_LIMIT
        now = service.clock()
        items = sort_queue(found, sort)[:QUEUE_LIMIT]
        tenants = sorted({item.tenant for item in found} | ({tenant} if tenant else set()))
        return self.ui.render(
            request,
            "review_queue.html",
            page="review",
            items=items,
            now=now,
            status=status,
            statuses=REVIEW_STATUSES,
            domain=domain or "",
            domains=DOMAINS,
            show=show,
            sort=sort,
            sorts=SORTS,
            reason=reason or "",
            reasons=_reason_choices(found),
            tenant=tenant or "",
            tenants=tenants,
            user=user or "",
            me=session.subject,
            limit=QUEUE_LIMIT,
            scanned_all=scanned_all,
            risk=risk,
            notice=_bulk_notice(params),
        )

    async def bulk(self, request: Request) -> Response:
        """Reject or release (approve) the ticked items with one reason: each is claimed for the
        person and decided; items someone else holds, or decided already, are skipped and counted."""
        session = await self.ui.require(request)
        await self.ui.check_csrf(request, session)
        form = await request.form()
        action = form_field(form, "bulk_action", required=True, limit=20)
        if action not in ("reject", "release"):
            raise Denied("bulk_action must be reject or release", 400)
        reason = form_field(form, "reason", required=True, limit=MAX_NOTE_CHARS)
        ids = [str(value)[:100] for value in form.getlist("review_id") if str(value).strip()]
        if not ids:
            raise Denied("Tick at least one held answer.", 400)
        if len(ids) > QUEUE_LIMIT:
            raise Denied(f"At most {QUEUE_LIMIT} answers at once.", 400)
        service = self.service
        done = skipped = 0
        for review_id in dict.fromkeys(ids):
            try:
                await run_in_threadpool(service.claim, review_id, session.subject)
                await run_in_threadpool(
                    service.decide,
                    review_id,
                    session.subject,
                    "reject" if action == "reject" else "approve",
                    reason=reason,
                )
                done += 1
            except (ConflictError, NotFoundError):
                skipped += 1
        base = request.scope.get("root_path", "")
        query = urlencode(
            {"bulk": "rejected" if action == "reject" else "released", "done": done, "skipped": skipped}
        )
        return RedirectResponse(f"{base}/review?{query}", status_code=303)

    # ------------------------------------------------------------------ one item

    async def item(self, request: Request) -> Response:
        session = await self.ui.require(request)
        item = await self._get(request.path_params["review_id"])
        return await self._item_page(request, session, item, notice=request.query_params.get("done"))

    async def _get(self, review_id: str) -> ReviewItem:
        try:
            return await run_in_threadpool(self.service.get, review_id[:100])
        except NotFoundError:
            raise Denied(f"There is no held answer {review_id[:100]!r}.", 404) from None

    async def _item_page(
        self,
        request: Request,
        session: Session,
        item: ReviewItem,
        *,
        notice: str | None = None,
        conflict: str | None = None,
        status_code: int = 200,
        edited: str | None = None,
    ) -> Response:
        service = self.service
        view = service.reviewer_view(item)
        events = await run_in_threadpool(service.events, item.id)
        now = service.clock()
        mine = item.status == "pending" and not item.claimable(now) and item.claimed_by == session.subject
        messages = [
            {"role": str(message.get("role", "?")), "text": text_of(message.get("content"), image=IMAGE)}
            for message in (item.request.get("messages") or [])
            if isinstance(message, dict)
        ]
        has_audit = await run_in_threadpool(self.ui.store.audit_exists, item.request_id)
        recorded = item.request.get("hold")
        hold: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        return self.ui.render(
            request,
            "review_item.html",
            status_code,
            page="review",
            item=item,
            view=view,
            messages=messages,
            scores=sorted(item.scores.items(), key=lambda pair: -pair[1]),
            score_tables=score_tables(item),
            fired=[rule for rule in hold.get("rules") or [] if isinstance(rule, dict)],
            cut_off=cut_off(item),
            is_admin=session.is_admin,
            events=events,
            mine=mine,
            now=now,
            notice=notice if notice in DONE.values() else None,
            conflict=conflict,
            draft_text=edited if edited is not None else (item.edited_text or view["draft_text"]),
            has_audit=has_audit,
        )

    async def act(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in REVIEW_ACTIONS:
            raise HTTPException(404)
        session = await self.ui.require(request)
        await self.ui.check_csrf(request, session)
        review_id = request.path_params["review_id"][:100]
        form = await request.form()
        service = self.service
        text = form_field(form, "text", required=True, limit=MAX_NOTE_CHARS) if action == "edit" else None
        reason = (
            form_field(form, "reason", required=True, limit=MAX_NOTE_CHARS) if action == "reject" else None
        )
        if action == "break" and not session.is_admin:
            raise Denied("Only administrators break someone else's claim.")
        try:
            if action == "break":
                await run_in_threadpool(service.break_claim, review_id, session.subject)
            elif action == "claim":
                await run_in_threadpool(service.claim, review_id, session.subject)
            elif action == "release":
                await run_in_threadpool(service.release, review_id, session.subject)
            else:
                await run_in_threadpool(
                    service.decide, review_id, session.subject, cast(Any, action), text=text, reason=reason
                )
        except NotFoundError:
            await self._get(review_id)  # the 404 page
            raise
        except (ConflictError, InvalidRequestError) as exc:
            item = await self._get(review_id)
            return await self._item_page(
                request,
                session,
                item,
                conflict=exc.message,
                status_code=exc.status_code,
                edited=text,
            )
        base = request.scope.get("root_path", "")
        return RedirectResponse(
            f"{base}/review/{review_id}?" + urlencode({"done": DONE[action]}), status_code=303
        )

    # ------------------------------------------------------------------ reports

    async def reports(self, request: Request) -> Response:
        await self.ui.require(request)
        params = request.query_params
        status = params.get("status", "new")
        if status not in (*REPORT_STATUSES, "all"):
            raise Denied(f"status must be one of {', '.join(REPORT_STATUSES)} or all", 400)
        category = params.get("category") or None
        if category is not None and category not in REPORT_CATEGORIES:
            raise Denied(f"category must be one of {', '.join(REPORT_CATEGORIES)}", 400)
        service = self.service
        found = await run_in_threadpool(
            lambda: service.reports(
                status=None if status == "all" else cast(Any, status),
                category=cast(Any, category),
                limit=QUEUE_LIMIT,
            )
        )
        counts = await run_in_threadpool(self.ui.store.report_counts)
        return self.ui.render(
            request,
            "reports.html",
            page="reports",
            reports=found,
            status=status,
            statuses=REPORT_STATUSES,
            category=category or "",
            categories=REPORT_CATEGORIES,
            counts=counts,
            now=service.clock(),
            limit=QUEUE_LIMIT,
        )

    async def _report(self, report_id: str) -> Report:
        try:
            return await run_in_threadpool(self.service.get_report, report_id[:100])
        except NotFoundError:
            raise Denied(f"There is no report {report_id[:100]!r}.", 404) from None

    async def report(self, request: Request) -> Response:
        session = await self.ui.require(request)
        report = await self._report(request.path_params["report_id"])
        return await self._report_page(request, session, report, notice=request.query_params.get("done"))

    async def _report_page(
        self,
        request: Request,
        session: Session,
        report: Report,
        *,
        notice: str | None = None,
        status_code: int = 200,
        error: str | None = None,
    ) -> Response:
        service = self.service
        events = await run_in_threadpool(service.events, report.id)
        record = (
            await run_in_threadpool(self.ui.store.get_audit, report.request_id)
            if report.request_id is not None
            else None
        )
        if record is not None and record.get("tenant") != report.tenant:
            record = None  # another tenant's conversation is never shown with this report
        item = (
            await run_in_threadpool(service.store.get_review, report.review_id) if report.review_id else None
        )
        answer, why_not = self._reported_answer(report, record, item)
        history: list[Report] = []
        if report.reporter is not None:
            history = [
                other
                for other in await run_in_threadpool(
                    lambda: service.store.list_reports(reporter=report.reporter, limit=HISTORY_LIMIT + 1)
                )
                if other.id != report.id
            ][:HISTORY_LIMIT]
        if session.is_admin:
            choices = list(REPORT_STATUSES)
        elif report.status in CLOSED_REPORT:
            choices = [report.status]
        else:
            choices = [s for s in REPORT_STATUSES if s not in CLOSED_REPORT]
        return self.ui.render(
            request,
            "report_detail.html",
            status_code,
            page="reports",
            report=report,
            events=events,
            has_audit=record is not None,
            record=record,
            decisions=reported_decisions(record),
            answer=answer,
            why_not=why_not,
            conversation=_conversation(record),
            history=history,
            history_counts={s: sum(1 for r in history if r.status == s) for s in REPORT_STATUSES},
            choices=choices,
            now=service.clock(),
            notice="Report updated." if notice == "updated" else None,
            error=error,
        )

    def _reported_answer(
        self, report: Report, record: dict[str, Any] | None, item: ReviewItem | None
    ) -> tuple[str | None, str | None]:
        """The answer the user reported, or None and the plain reason it cannot be shown."""
        if item is not None:  # a held answer: the store keeps its draft (and any edit) for review
            return item.edited_text or draft_text(item.draft), None
        if record is None:
            if report.request_id is None:
                return None, (
                    f"The response id {report.response_id!r} is not one seawall gave out (seawall's ids "
                    "start with chatcmpl-swreq-, swreq- or rev_), so no request is linked to it."
                )
            return None, (
                f"There is no audit record of {report.request_id} in the store (it was not kept, "
                "or it was removed)."
            )
        content = record.get("content")
        if not isinstance(content, dict):
            return None, (
                "The audit record keeps no message text: gateway.audit_content is off, so only "
                "the decisions and scores below are known."
            )
        answers = [text_of(a) for a in content.get("answer") or [] if a is not None]
        if not answers:
            return None, f"The request ended without an answer (outcome {record.get('outcome')})."
        return "\n\n".join(answers), None

    async def triage(self, request: Request) -> Response:
        session = await self.ui.require(request)
        await self.ui.check_csrf(request, session)
        report = await self._report(request.path_params["report_id"])
        form = await request.form()
        status = form_field(form, "status", limit=20) or None
        note = form_field(form, "note", limit=MAX_NOTE_CHARS) or None
        if status == report.status:
            status = None  # only a note
        if status is not None and status not in REPORT_STATUSES:
            raise Denied(f"status must be one of {', '.join(REPORT_STATUSES)}", 400)
        closing = status in CLOSED_REPORT or report.status in CLOSED_REPORT
        if status is not None and not session.is_admin and closing:
            raise Denied("Only administrators close reports (resolved, dismissed) or reopen them.")
        if status is None and note is None:
            return await self._report_page(
                request, session, report, status_code=400, error="Choose a new status or write a note."
            )
        await run_in_threadpool(
            self.service.triage, report.id, session.subject, status=status, note=note, admin=session.is_admin
        )
        base = request.scope.get("root_path", "")
        return RedirectResponse(f"{base}/reports/{report.id}?done=updated", status_code=303)


__all__ = [
    "Desk",
    "Pages",
    "age",
    "cut_off",
    "duration",
    "question",
    "reported_decisions",
    "risk",
    "score_tables",
    "sort_queue",
]
