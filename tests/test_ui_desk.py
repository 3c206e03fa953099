"""The review desk in the web UI over HTTP (a real server on loopback, a real SQLite store): the queue,
an item's page and its decisions through ReviewService, report triage, roles, CSRF, races between
reviewers, the dashboard's review figures and the public widget script."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from seawall.review.service import HoldDecision, ReviewRequest, ReviewService
from seawall.review.settings import ReviewSettings
from seawall.store import SqlStore
from seawall.ui import queries
from test_ui_support import (
    ADMIN,
    REVIEWER,
    UIServer,
    add_accounts,
    audit_record,
    csrf_from,
    make_settings,
    open_ui_store,
    seed,
    sign_in,
    ui_server,
    ui_settings,
)

OTHER = ("ria", "ria-password-123")
QUESTION = "Can I take ibuprofen with my blood pressure tablets?"
DRAFT = "Ibuprofen can raise blood pressure; ask your pharmacist before combining them."
SOURCE = {"title": "Leaflet: ibuprofen", "text": "NSAIDs may reduce the effect of antihypertensives."}


def hold(
    service: ReviewService,
    *,
    question: str = QUESTION,
    domain: str = "health",
    request_id: str | None = None,
) -> str:
    """Hold an answer the way the gateway hook does (ReviewService.hold); its review id."""
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": question}]}
    decision = HoldDecision(
        reasons=(f"declared:{domain}",),
        domain=domain,
        scores={"self-harm": 0.31, "violence": 0.02},
        request=ReviewRequest(domain=domain, sources=(SOURCE,), notes="pharmacy chatbot"),
    )
    completion = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-test",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": DRAFT}, "finish_reason": "stop"}
        ],
    }
    pending = service.hold(
        decision,
        body,
        completion,
        request_id=request_id or f"swreq-{datetime.now(UTC).timestamp()}-{question[:5]}",
        tenant="default",
    )
    return str(pending["review_id"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    tmp = tmp_path_factory.mktemp("ui-desk")
    settings = make_settings(tmp)
    store = open_ui_store(settings)
    accounts = add_accounts(store)
    accounts.create(OTHER[0], "reviewer", OTHER[1])
    with ui_server(settings, ui_settings(tmp, login_attempts=1000), store) as running:
        yield running
    store.close()


@pytest.fixture(scope="module")
def service(server: UIServer) -> Iterator[ReviewService]:
    made = ReviewService(server.store, ReviewSettings(enabled=True))
    yield made
    made.close()


@contextmanager
def signed_in(server: UIServer, who: tuple[str, str]) -> Iterator[httpx.Client]:
    with server.http() as http:
        response = sign_in(http, *who)
        assert response.status_code == 303, response.text
        yield http


def token(http: httpx.Client, path: str = "/ui/review") -> str:
    page = http.get(path)
    assert page.status_code == 200, page.text
    return csrf_from(page.text)


def post(http: httpx.Client, path: str, **fields: str) -> httpx.Response:
    return http.post(path, data={"csrf_token": token(http), **fields})


# ----------------------------------------------------------------------------- roles and CSRF


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ui/review"),
        ("GET", "/ui/review/rev_x"),
        ("POST", "/ui/review/rev_x/claim"),
        ("GET", "/ui/reports"),
        ("GET", "/ui/reports/rpt_x"),
        ("POST", "/ui/reports/rpt_x"),
    ],
)
def test_anonymous_people_are_sent_to_sign_in(server: UIServer, method: str, path: str) -> None:
    with server.http() as http:
        response = http.request(method, path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login?next=")


def test_a_form_without_its_csrf_token_is_refused(server: UIServer, service: ReviewService) -> None:
    review_id = hold(service)
    report = service.report("default", response_id=review_id, category="wrong", comment="no")
    with signed_in(server, REVIEWER) as http:
        for path in (f"/ui/review/{review_id}/claim", f"/ui/reports/{report.id}"):
            refused = http.post(path, data={"status": "investigating", "csrf_token": "forged"})
            assert refused.status_code == 403 and "security token" in refused.text
            assert http.post(path, data={"status": "investigating"}).status_code == 403
    item = server.store.get_review(review_id)
    assert item is not None and item.claimed_by is None
    assert service.get_report(report.id).status == "new"


# ----------------------------------------------------------------------------- the queue and an item


def test_the_queue_lists_held_answers_with_age_and_filters(server: UIServer, service: ReviewService) -> None:
    health = hold(service)
    finance = hold(service, question="Should I move my pension into crypto?", domain="finance")
    with signed_in(server, REVIEWER) as http:
        page = http.get("/ui/review")
        assert page.status_code == 200
        assert health in page.text and finance in page.text
        row = page.text.split(f'data-review-id="{health}"')[1].split("</tr>")[0]
        assert "health" in row and "declared:health" in row and "blood pressure" in row
        assert " s</time>" in row or " min</time>" in row  # its age
        only_finance = http.get("/ui/review", params={"domain": "finance"}).text
        assert finance in only_finance and health not in only_finance
        assert health not in http.get("/ui/review", params={"show": "mine"}).text
        assert post(http, f"/ui/review/{health}/claim").status_code == 303
        mine = http.get("/ui/review", params={"show": "mine"}).text
        assert health in mine and finance not in mine
        assert health not in http.get("/ui/review", params={"show": "claimable"}).text
        assert http.get("/ui/review", params={"status": "bogus"}).status_code == 400
        assert http.get("/ui/review", params={"domain": "astrology"}).status_code == 400


def test_the_item_page_shows_everything_needed_to_judge(server: UIServer, service: ReviewService) -> None:
    review_id = hold(service)
    with signed_in(server, REVIEWER) as http:
        page = http.get(f"/ui/review/{review_id}")
    assert page.status_code == 200
    for expected in (QUESTION, DRAFT, SOURCE["title"], SOURCE["text"], "pharmacy chatbot", "declared:health"):
        assert expected in page.text, expected
    assert "self-harm" in page.text and "0.310" in page.text
    assert f'action="/ui/review/{review_id}/claim"' in page.text
    assert "/approve" not in page.text  # nothing to decide before claiming
    with signed_in(server, REVIEWER) as http:
        assert http.get("/ui/review/rev_nothing").status_code == 404


def test_claim_edit_and_approve_reach_the_client(server: UIServer, service: ReviewService) -> None:
    review_id = hold(service)
    edited = "Ask your pharmacist first: ibuprofen can weaken blood pressure tablets."
    with signed_in(server, REVIEWER) as http:
        claimed = post(http, f"/ui/review/{review_id}/claim")
        assert claimed.status_code == 303
        page = http.get(claimed.headers["location"])
        assert "Done: claimed." in page.text and "yours until" in page.text
        assert f'action="/ui/review/{review_id}/edit"' in page.text
        saved = post(http, f"/ui/review/{review_id}/edit", text=edited)
        assert saved.status_code == 303
        after = http.get(saved.headers["location"]).text
        assert "edited and approved" in after and edited in after
    final = service.poll(review_id)
    assert final["status"] == "edited"
    assert final["completion"]["choices"][0]["message"]["content"] == edited
    trail = [(event["action"], event["actor"]) for event in service.events(review_id)]
    assert ("claimed", REVIEWER[0]) in trail and trail[-1][1] == REVIEWER[0]


def test_reject_needs_a_reason_and_release_frees_the_item(server: UIServer, service: ReviewService) -> None:
    review_id = hold(service)
    with signed_in(server, REVIEWER) as http:
        post(http, f"/ui/review/{review_id}/claim")
        assert post(http, f"/ui/review/{review_id}/reject", reason="").status_code == 400
        assert post(http, f"/ui/review/{review_id}/release").status_code == 303
        item = server.store.get_review(review_id)
        assert item is not None and item.claimable(datetime.now(UTC))
        post(http, f"/ui/review/{review_id}/claim")
        assert post(http, f"/ui/review/{review_id}/reject", reason="unsafe advice").status_code == 303
    final = service.poll(review_id)
    assert (final["status"], final["reason"]) == ("rejected", "unsafe advice")


def test_someone_elses_claim_is_a_clear_409(server: UIServer, service: ReviewService) -> None:
    review_id = hold(service)
    with signed_in(server, REVIEWER) as rob, signed_in(server, OTHER) as ria:
        assert post(rob, f"/ui/review/{review_id}/claim").status_code == 303
        page = ria.get(f"/ui/review/{review_id}").text
        assert f"{REVIEWER[0]} is deciding this answer" in page
        lost = post(ria, f"/ui/review/{review_id}/claim")
        assert lost.status_code == 409
        assert 'role="alert"' in lost.text and f"claimed by {REVIEWER[0]}" in lost.text
        assert post(ria, f"/ui/review/{review_id}/approve").status_code == 409
        assert post(rob, f"/ui/review/{review_id}/approve").status_code == 303
        decided = post(ria, f"/ui/review/{review_id}/claim")
        assert decided.status_code == 409 and "approved already" in decided.text
    assert service.poll(review_id)["status"] == "approved"


def test_concurrent_claims_through_the_ui_exactly_one_wins(server: UIServer, service: ReviewService) -> None:
    with ExitStack() as stack:
        reviewers = [stack.enter_context(signed_in(server, who)) for who in (REVIEWER, OTHER)]
        tokens = [token(http) for http in reviewers]
        for _ in range(5):
            review_id = hold(service)
            barrier = threading.Barrier(2)
            statuses: list[int] = [0, 0]

            def claim(
                i: int,
                review_id: str = review_id,
                barrier: threading.Barrier = barrier,
                statuses: list[int] = statuses,
            ) -> None:
                barrier.wait()
                response = reviewers[i].post(f"/ui/review/{review_id}/claim", data={"csrf_token": tokens[i]})
                statuses[i] = response.status_code

            threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(statuses) == [303, 409], statuses
            item = server.store.get_review(review_id)
            assert item is not None
            winner = (REVIEWER[0], OTHER[0])[statuses.index(303)]
            assert item.claimed_by == winner


# ----------------------------------------------------------------------------- reports


def test_report_triage_roles_contact_notes_and_audit_link(server: UIServer, service: ReviewService) -> None:
    request_id = "swreq-desk-reported-0001"
    seed(server.store, [audit_record(at=datetime.now(UTC), request_id=request_id)])
    report = service.report(
        "default",
        response_id=f"chatcmpl-{request_id}",
        category="harmful",
        comment="It told me to double the dose.",
        contact="pat@example.org",
        reporter="pat",
    )
    with signed_in(server, REVIEWER) as rob:
        listed = rob.get("/ui/reports").text  # new reports first
        assert report.id in listed and "double the dose" in listed
        page = rob.get(f"/ui/reports/{report.id}").text
        assert f'href="/ui/audit/{request_id}"' in page
        assert "pat@example.org" not in page  # contact: admins only
        assert "<option>resolved</option>" not in page
        closed = post(rob, f"/ui/reports/{report.id}", status="resolved", note="done")
        assert closed.status_code == 403
        moved = post(rob, f"/ui/reports/{report.id}", status="investigating", note="checking the dose table")
        assert moved.status_code == 303
        assert report.id in rob.get("/ui/reports", params={"status": "investigating"}).text
        assert report.id not in rob.get("/ui/reports", params={"status": "new"}).text
        assert post(rob, f"/ui/reports/{report.id}", status="investigating").status_code == 400
    with signed_in(server, ADMIN) as alice:
        page = alice.get(f"/ui/reports/{report.id}").text
        assert "pat@example.org" in page
        resolved = post(alice, f"/ui/reports/{report.id}", status="resolved", note="dose table fixed")
        assert resolved.status_code == 303
        page = alice.get(resolved.headers["location"]).text
        assert "Report updated." in page and "checking the dose table" in page and "dose table fixed" in page
    with signed_in(server, REVIEWER) as rob:
        reopened = post(rob, f"/ui/reports/{report.id}", status="new")
        assert reopened.status_code == 403
        assert post(rob, f"/ui/reports/{report.id}", note="a late note").status_code == 303
    final = service.get_report(report.id)
    assert final.status == "resolved" and final.updated_by == REVIEWER[0]
    assert [note["by"] for note in final.notes] == [REVIEWER[0], ADMIN[0], REVIEWER[0]]


def test_a_report_page_shows_the_answer_decisions_scores_and_the_reporters_history(
    server: UIServer, service: ReviewService
) -> None:
    kept, bare = "swreq-desk-reported-kept", "swreq-desk-reported-bare"
    record = audit_record(at=datetime.now(UTC), request_id=kept, categories=["self-harm"])
    record["content"] = {
        "messages": [{"role": "user", "content": "How many pills is too many?"}],
        "answer": ["Take as many as you like."],
    }
    seed(server.store, [record, audit_record(at=datetime.now(UTC), request_id=bare)])
    reporter = f"pat-{datetime.now(UTC).timestamp()}"
    earlier = service.report("default", response_id="not-ours-1", category="other", reporter=reporter)
    service.triage(earlier.id, "rob", status="dismissed", note="spam", admin=True)
    kept_report = service.report(
        "default",
        response_id=f"chatcmpl-{kept}",
        category="harmful",
        comment="This is dangerous advice.",
        reporter=reporter,
    )
    bare_report = service.report("default", response_id=f"chatcmpl-{bare}", category="wrong")
    with signed_in(server, REVIEWER) as rob:
        page = rob.get(f"/ui/reports/{kept_report.id}").text
        assert '<div class="text" id="reported-answer">Take as many as you like.</div>' in page
        assert "How many pills is too many?" in page
        assert "This is dangerous advice." in page
        decisions = page.split('<table id="decisions">')[1].split("</table>")[0]
        assert "input_moderation" in decisions and "flag" in decisions and "self-harm 0.930" in decisions
        assert "risk <strong>low</strong>" in page
        history = page.split('id="reporter-history">')[1].split("</ul>")[0]
        assert "1 other report from this reporter: 1 dismissed." in history
        assert f'href="/ui/reports/{earlier.id}"' in history
        bare_page = rob.get(f"/ui/reports/{bare_report.id}").text
        assert 'id="reported-answer-missing">The audit record keeps no message text' in bare_page
        assert "gateway.audit_content is off" in bare_page
        assert "input_moderation" in bare_page.split('<table id="decisions">')[1]
        unknown_page = rob.get(f"/ui/reports/{earlier.id}").text
        assert "is not one seawall gave out" in unknown_page


def test_a_report_of_an_unknown_response_says_so(server: UIServer, service: ReviewService) -> None:
    report = service.report("default", response_id="something-else", category="other")
    with signed_in(server, ADMIN) as alice:
        page = alice.get(f"/ui/reports/{report.id}").text
        assert 'id="audit-link">not found' in page
        assert alice.get("/ui/reports", params={"status": "open"}).status_code == 400
        assert alice.get("/ui/reports/rpt_missing").status_code == 404


# ----------------------------------------------------------------------------- dashboard and widget


def test_dashboard_shows_the_review_desk_figures(server: UIServer, service: ReviewService) -> None:
    hold(service)  # one waiting answer of its own, whatever the other tests left in the shared store
    figures = queries.desk_figures(server.store, "24h")
    with signed_in(server, REVIEWER) as http:
        page = http.get("/ui/").text
    assert f'id="queue-depth"><a href="/ui/review">{figures.pending_now}</a>' in page
    assert figures.pending_now >= 1 and sum(figures.held) >= figures.pending_now
    for chart in ("review_flow", "queue_depth", "decision_time", "reports"):
        assert f'data-chart="{chart}"' in page
    assert '"queue_depth": [["waiting"' in page


def test_the_widget_is_public_small_and_cacheable(server: UIServer) -> None:
    with server.http() as http:
        response = http.get("/ui/widget.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "public" in response.headers["cache-control"] and "max-age=" in response.headers["cache-control"]
    assert "set-cookie" not in response.headers
    assert len(response.content) < 10_000
    assert b"/v1/feedback" in response.content and b"data-seawall-response-id" in response.content


# ----------------------------------------------------------------------------- queries


def test_desk_figures_count_held_decided_depth_and_reports(tmp_path: Any) -> None:
    settings = make_settings(tmp_path)
    store: SqlStore = open_ui_store(settings)
    try:
        now = datetime.now(UTC).replace(minute=30)
        clock_now = [now - timedelta(hours=30)]
        service = ReviewService(store, ReviewSettings(enabled=True), clock=lambda: clock_now[0])
        old = hold(service, request_id="swreq-old")  # before the range, still waiting
        clock_now[0] = now - timedelta(hours=3)
        first = hold(service, request_id="swreq-a")
        second = hold(service, request_id="swreq-b")
        clock_now[0] = now - timedelta(hours=3) + timedelta(minutes=10)
        service.claim(first, "rob")
        service.decide(first, "rob", "approve")
        clock_now[0] = now - timedelta(hours=1)
        service.claim(second, "rob")
        service.decide(second, "rob", "edit", text="better")
        for category in ("wrong", "harmful"):
            service.report("default", response_id=old, category=category, reporter=category)
        figures = queries.desk_figures(store, "24h", now=now)
        service.close()
    finally:
        store.close()
    assert sum(figures.held) == 2 and sum(figures.decided) == 2
    assert figures.queue_depth[-1] == 1 and max(figures.queue_depth) == 2
    assert figures.pending_now == 1 and figures.oldest_pending is not None
    assert figures.decision_p50_s == pytest.approx(600, abs=1)
    assert figures.decision_p95_s == pytest.approx(7200, abs=1)
    assert [m for m in figures.decision_minutes if m is not None] == [pytest.approx(10), pytest.approx(120)]
    assert figures.report_totals == {"new": 2, "investigating": 0, "resolved": 0, "dismissed": 0}
    assert sum(figures.reports["new"]) == 2
