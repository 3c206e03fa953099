"""Review items, their trail and user reports in the store, on a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

from seawall.store import ReviewItem, SqlStore

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
