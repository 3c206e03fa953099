"""Review items, their trail and user reports in the store, on a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

from seawall.store import Report, ReviewItem, SqlStore

T0 = datetime(2025, 5, 1, 9, 0, 0, tzinfo=UTC)


def item(review_id: str = "rev_1", *, created: datetime = T0, domain: str | None = "health") -> ReviewItem:
    return ReviewItem(
        id=review_id,
        tenant="acme",
        request_id=f"swreq-{review_id}",
        status="pending",
        created_at=created,
        request={"model": "m", "messages": [{"role": "user", "content": "What dose of ibuprofen?"}]},
        draft={
            "id": "chatcmpl-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "200 mg"}}],
        },
        completion_id="chatcmpl-x",
        domain=domain,
        reasons=("domain:health",),
        scores={"self-harm": 0.31},
        sources=({"title": "leaflet", "text": "Adults: 200-400 mg"},),
        notes="pharmacy app",
        webhook="https://hooks.example.com/x",
    )


def test_create_get_and_list_the_queue_in_order(store: SqlStore) -> None:
    store.create_review(item("rev_b", created=T0 + timedelta(seconds=5), domain="law"))
    store.create_review(item("rev_a"))
    got = store.get_review("rev_a")
    assert got == item("rev_a")  # every field round-trips, times stay UTC-aware
    assert store.get_review("rev_missing") is None
    assert [i.id for i in store.list_reviews(status="pending")] == ["rev_a", "rev_b"]
    assert [i.id for i in store.list_reviews(domain="law")] == ["rev_b"]
    assert [i.id for i in store.list_reviews(tenant="other")] == []
    assert store.review_counts() == {"pending": 2, "approved": 0, "edited": 0, "rejected": 0}
    [held] = store.list_review_events("rev_a")
    assert (held.action, held.actor, held.detail) == ("held", "gateway", {"reasons": ["domain:health"]})


def test_claim_is_exclusive_until_it_expires_then_the_item_is_claimable_again(store: SqlStore) -> None:
    store.create_review(item())
    claimed = store.claim_review("rev_1", "ann", T0, ttl_s=60)
    assert claimed is not None and claimed.claimed_by == "ann"
    assert claimed.claim_expires_at == T0 + timedelta(seconds=60)
    assert store.claim_review("rev_1", "bob", T0 + timedelta(seconds=59), ttl_s=60) is None
    assert store.list_reviews(claimable_at=T0 + timedelta(seconds=59)) == []
    # ann extends her own claim
    assert store.claim_review("rev_1", "ann", T0 + timedelta(seconds=30), ttl_s=60) is not None
    assert store.claim_review("rev_1", "bob", T0 + timedelta(seconds=80), ttl_s=60) is None
    # expired: back in the queue, and bob takes it
    later = T0 + timedelta(seconds=91)
    assert [i.id for i in store.list_reviews(claimable_at=later)] == ["rev_1"]
    taken = store.claim_review("rev_1", "bob", later, ttl_s=60)
    assert taken is not None and taken.claimed_by == "bob"
    # ann's expired claim no longer lets her decide
    assert store.decide_review("rev_1", "ann", "approve", later) is None
    assert [e.action for e in store.list_review_events("rev_1")] == ["held", "claimed", "claimed", "claimed"]


def test_decide_only_by_the_claimer_once_and_audited(store: SqlStore) -> None:
    store.create_review(item())
    assert store.decide_review("rev_1", "ann", "approve", T0) is None  # not claimed
    store.claim_review("rev_1", "ann", T0, ttl_s=60)
    assert store.decide_review("rev_1", "bob", "reject", T0, reason="no") is None
    decided = store.decide_review(
        "rev_1", "ann", "edit", T0 + timedelta(seconds=5), edited_text="Ask a pharmacist."
    )
    assert decided is not None
    assert (decided.status, decided.decision, decided.edited_text, decided.decided_by) == (
        "edited",
        "edit",
        "Ask a pharmacist.",
        "ann",
    )
    assert decided.decided_at == T0 + timedelta(seconds=5)
    assert store.decide_review("rev_1", "ann", "approve", T0 + timedelta(seconds=6)) is None  # decided once
    assert store.claim_review("rev_1", "ann", T0 + timedelta(seconds=7), ttl_s=60) is None
    trail = store.list_review_events("rev_1")
    assert [(e.action, e.actor) for e in trail] == [
        ("held", "gateway"),
        ("claimed", "ann"),
        ("edited", "ann"),
    ]
    assert trail[-1].detail == {"edited_chars": len("Ask a pharmacist.")}
    assert store.review_counts()["edited"] == 1 and store.review_counts()["pending"] == 0


def test_release_gives_the_item_back(store: SqlStore) -> None:
    store.create_review(item())
    assert store.release_review("rev_1", "ann", T0) is None
    store.claim_review("rev_1", "ann", T0, ttl_s=60)
    released = store.release_review("rev_1", "ann", T0 + timedelta(seconds=1))
    assert released is not None and released.claimed_by is None
    assert store.claim_review("rev_1", "bob", T0 + timedelta(seconds=2), ttl_s=60) is not None


def test_many_threads_claiming_one_item_exactly_one_wins(store: SqlStore) -> None:
    store.create_review(item())
    reviewers = [f"reviewer-{n}" for n in range(16)]
    barrier = threading.Barrier(len(reviewers))
    winners: list[str] = []
    errors: list[BaseException] = []

    def claim(name: str) -> None:
        try:
            barrier.wait()
            if store.claim_review("rev_1", name, T0, ttl_s=300) is not None:
                winners.append(name)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(name,)) for name in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(winners) == 1
    stored = store.get_review("rev_1")
    assert stored is not None and stored.claimed_by == winners[0]
    assert [e.actor for e in store.list_review_events("rev_1") if e.action == "claimed"] == winners


KILL_MID_DECISION = """
import os, signal, sys
from datetime import datetime, timedelta, UTC
from sqlalchemy import event
from seawall.settings import StoreSettings
from seawall.store import open_store

store = open_store(StoreSettings(url=sys.argv[1]))
T0 = datetime(2025, 5, 1, 9, 0, 0, tzinfo=UTC)

@event.listens_for(store.engine, "before_cursor_execute")
def die(conn, cursor, statement, parameters, context, executemany):
    # The decision's UPDATE ran; the server dies before its event is written and the commit.
    if statement.lstrip().upper().startswith("INSERT INTO REVIEW_EVENTS"):
        os.kill(os.getpid(), signal.SIGKILL)

store.decide_review("rev_1", "ann", "reject", T0 + timedelta(seconds=1), reason="unsafe")
print("not killed")
"""


def test_a_server_killed_mid_decision_leaves_the_item_pending_and_claimable_after_expiry(
    store: SqlStore, store_url: str
) -> None:
    store.create_review(item())
    store.claim_review("rev_1", "ann", T0, ttl_s=60)
    result = subprocess.run(
        [sys.executable, "-c", KILL_MID_DECISION, store_url], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -9, result.stdout + result.stderr
    after = store.get_review("rev_1")
    assert after is not None and after.status == "pending" and after.decision is None
    assert [e.action for e in store.list_review_events("rev_1")] == ["held", "claimed"]
    # nothing half-written: ann can still decide within her claim, or the item returns to the queue
    assert [i.id for i in store.list_reviews(claimable_at=T0 + timedelta(seconds=61))] == ["rev_1"]
    decided = store.decide_review("rev_1", "ann", "reject", T0 + timedelta(seconds=2), reason="unsafe")
    assert decided is not None and decided.status == "rejected"


def report(report_id: str, *, created: datetime = T0, category: str = "wrong") -> Report:
    return Report(
        id=report_id,
        tenant="acme",
        response_id="swreq-abc",
        category=category,  # type: ignore[arg-type]
        status="new",
        created_at=created,
        updated_at=created,
        comment="The dose is wrong.",
        contact="user@example.com",
        reporter="hash1",
        request_id="swreq-abc",
    )


def test_reports_triage_with_notes_and_trail(store: SqlStore) -> None:
    store.create_report(report("rpt_1"))
    store.create_report(report("rpt_2", created=T0 + timedelta(minutes=1), category="harmful"))
    assert store.get_report("rpt_1") == report("rpt_1")
    assert [r.id for r in store.list_reports()] == ["rpt_2", "rpt_1"]  # newest first
    assert [r.id for r in store.list_reports(category="harmful")] == ["rpt_2"]
    moved = store.triage_report(
        "rpt_1", "ann", T0 + timedelta(hours=1), status="investigating", note="checking"
    )
    assert moved is not None and moved.status == "investigating" and moved.updated_by == "ann"
    noted = store.triage_report("rpt_1", "bob", T0 + timedelta(hours=2), status=None, note="asked the vendor")
    assert noted is not None and noted.status == "investigating"
    assert [(n["by"], n["text"], n["status"]) for n in noted.notes] == [
        ("ann", "checking", "investigating"),
        ("bob", "asked the vendor", "investigating"),
    ]
    assert store.triage_report("rpt_missing", "ann", T0, status="resolved", note=None) is None
    assert store.report_counts() == {"new": 1, "investigating": 1, "resolved": 0, "dismissed": 0}
    assert [r.id for r in store.list_reports(status="new")] == ["rpt_2"]
    trail = store.list_review_events("rpt_1")
    assert [(e.action, e.actor) for e in trail] == [
        ("reported", "user"),
        ("triaged", "ann"),
        ("triaged", "bob"),
    ]
    assert trail[1].detail == {"from": "new", "to": "investigating", "note": "checking"}


def test_concurrent_notes_are_all_kept(store: SqlStore) -> None:
    store.create_report(report("rpt_1"))
    barrier = threading.Barrier(8)

    def note(n: int) -> None:
        barrier.wait()
        store.triage_report("rpt_1", f"r{n}", T0, status=None, note=f"note {n}")

    threads = [threading.Thread(target=note, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.get_report("rpt_1")
    assert final is not None
    assert sorted(n["text"] for n in final.notes) == sorted(f"note {n}" for n in range(8))
