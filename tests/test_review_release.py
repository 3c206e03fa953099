"""What a decision on a held answer releases, and what a report may link to.

A reviewer approves what they are shown, so they are shown everything approving releases: every
choice, its tool calls and any reasoning beside it. An edited answer replaces the whole draft:
its reasoning and log probabilities (which spell out the draft's tokens) go with it. A report
links a conversation only of its own tenant, and the desk never shows another tenant's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from seawall.review.service import ReviewService, draft_text, final_completion
from seawall.settings import load_settings
from seawall.store import ReviewItem
from seawall.store.memory import MemoryStore

CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "transfer_funds", "arguments": '{"amount": 5}'},
}


def _draft() -> dict[str, Any]:
    return {
        "id": "chatcmpl-swreq-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Take two tablets.",
                    "reasoning_content": "DRAFT-REASONING",
                    "tool_calls": [CALL],
                },
                "logprobs": {"content": [{"token": "DRAFT-TOKEN", "logprob": -0.1}]},
                "finish_reason": "tool_calls",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "Take twenty tablets."},
                "finish_reason": "stop",
            },
        ],
    }


def _item(status: str, edited_text: str | None = None) -> ReviewItem:
    return ReviewItem(
        id="rev_" + "0" * 32,
        tenant="acme",
        request_id="swreq-1",
        status=status,  # type: ignore[arg-type]
        created_at=datetime.now(UTC),
        request={"messages": [{"role": "user", "content": "How many tablets?"}]},
        draft=_draft(),
        edited_text=edited_text,
    )


def test_the_reviewer_sees_every_choice_tool_call_and_reasoning_approval_releases() -> None:
    shown = draft_text(_draft())
    for released in (
        "Take two tablets.",
        "Take twenty tablets.",
        "transfer_funds",
        '{"amount": 5}',
        "DRAFT-REASONING",
    ):
        assert released in shown
    assert shown.startswith("[choice 1 of 2] ") and "[choice 2 of 2] " in shown
    assert draft_text({"choices": [{"message": {"content": "Only this."}}]}) == "Only this."
    approved = final_completion(_item("approved"))
    assert approved is not None and len(approved["choices"]) == 2  # released as it was shown


def test_an_edited_answer_carries_nothing_of_the_draft() -> None:
    edited = final_completion(_item("edited", "Ask your pharmacist."))
    assert edited is not None
    [choice] = edited["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Ask your pharmacist."}
    assert "logprobs" not in choice and choice["finish_reason"] == "stop"
    assert "DRAFT" not in str(edited)


def test_a_report_links_only_its_own_tenants_conversation() -> None:
    store = MemoryStore()
    store.write_audit({"request_id": "swreq-acme1", "tenant": "acme", "outcome": "ok"})
    service = ReviewService(store, load_settings().review)
    try:
        foreign = service.report("beta", response_id="chatcmpl-swreq-acme1", category="harmful", source="k1")
        own = service.report("acme", response_id="swreq-acme1", category="harmful", source="k2")
        not_yet_audited = service.report("beta", response_id="swreq-beta9", category="wrong", source="k1")
    finally:
        service.close()
    assert foreign.request_id is None  # another tenant's request is not linked
    assert own.request_id == "swreq-acme1"
    assert not_yet_audited.request_id == "swreq-beta9"  # its record may still be on its way
