"""Responses held for review (``review.hold_response: accepted``) are retrievable, end to end.

The official OpenAI SDK (``client.responses``) -> seawall on loopback (embedded moderation model,
a real SQLite store) -> the chat completions stand-in of ``test_responses_api`` (a loopback HTTP
server that records what it receives). A reviewer decides through the real review API
(``/v1/seawall/reviews/{id}/claim`` then ``/approve``, ``/edit`` or ``/reject``) with a reviewer
token, as the review tests do. ``GET /v1/responses/{id}`` gives the queued Response while the
review is pending and the decided one afterwards; ``previous_response_id`` is a 409 until then.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import SecretStr

from backend_standins import stand_in
from conftest import RunningServer, running_server
from seawall.store import open_store
from test_responses_api import (
    FOLLOW_UP,
    KEY,
    MODEL,
    OTHER_TENANT_KEY,
    SAME_TENANT_KEY,
    SECOND_ANSWER,
    Script,
    Setup,
    events_of,
    make_reply,
    response_time,
    settings_for,
    with_keys,
)

REVIEWER = "reviewer-token-queued-0001"
DRAFT = "Adults can usually take 200 to 400 mg of ibuprofen every 4 to 6 hours."
EDITED = "Please ask a pharmacist: the right dose depends on your health and other medicines."
HEALTH = "What is the maximum daily dose of ibuprofen for an adult?"
#: Held because the request declares its domain (no detector in the way of the test).
HELD = {"seawall": {"review": {"domain": "health"}}}


@contextmanager
def review_gateway(tmp: Path, **review: Any) -> Iterator[Setup]:
    """seawall with the review queue on (a request is held when it declares its domain) and
    Rita's reviewer token, in front of the recording stand-in whose answer is the draft; ``review``
    sets further review settings."""
    script = Script(answer=DRAFT)
    with stand_in(make_reply(script)) as upstream:
        settings = settings_for(tmp, upstream.url)
        review_settings = settings.review.model_copy(
            update={
                "enabled": True,
                "detect_domains": False,
                "uncertain_low": None,
                "reviewer_tokens": {"rita": SecretStr(REVIEWER)},
                **review,
            }
        )
        settings = settings.model_copy(update={"review": review_settings})
        with_keys(settings)
        with running_server(settings) as server:
            yield Setup(server, upstream, script, tmp / "audit.jsonl")


def fresh(setup: Setup) -> Setup:
    """``setup`` with the stand-in's script back to the draft and its recorded requests cleared."""
    for name, value in vars(Script(answer=DRAFT)).items():
        setattr(setup.script, name, value)
    setup.upstream.requests.clear()
    return setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with review_gateway(tmp_path_factory.mktemp("responses-queued"), hold_response="accepted") as setup:
        yield setup


@pytest.fixture
def gw(setup: Setup) -> Setup:
    return fresh(setup)


@dataclass
class Queued:
    """A response the SDK got back queued, and its review."""

    response: Any
    review: dict[str, Any]


def queue(client: openai.OpenAI, **fields: Any) -> Queued:
    raw = client.responses.with_raw_response.create(model=MODEL, input=HEALTH, extra_body=HELD, **fields)
    assert raw.status_code == 202, raw.text
    assert DRAFT not in raw.text
    response = raw.parse()
    assert response.status == "queued" and response.output == []
    return Queued(response, (response.model_extra or {})["seawall"]["review"])


def decide(server: RunningServer, review_id: str, action: str, **payload: str) -> dict[str, Any]:
    """A reviewer claims the item and decides it through the review API."""
    with server.http(headers={"authorization": f"Bearer {REVIEWER}"}) as http:
        http.post(f"/v1/seawall/reviews/{review_id}/claim").raise_for_status()
        decided = http.post(f"/v1/seawall/reviews/{review_id}/{action}", json=payload)
    decided.raise_for_status()
    return dict(decided.json())


def review_of(response: Any) -> dict[str, Any]:
    return dict((response.model_extra or {})["seawall"]["review"])


def test_a_queued_response_is_retrieved_queued_then_approved_and_continued(gw: Setup) -> None:
    with gw.client() as client:
        queued = queue(client)
        pending = client.responses.retrieve(queued.response.id)
        assert pending.status == "queued" and pending.output == [] and pending.id == queued.response.id
        assert review_of(pending)["id"] == queued.review["id"] and review_of(pending)["status"] == "pending"
        with pytest.raises(openai.ConflictError) as early:
            client.responses.create(model=MODEL, input=FOLLOW_UP, previous_response_id=queued.response.id)
        assert early.value.code == "previous_response_queued"
        assert early.value.param == "previous_response_id"
        assert queued.review["poll_url"] in early.value.message
        assert len(gw.chat_requests()) == 1  # refused before the upstream

        decide(gw.server, queued.review["id"], "approve")
        approved = client.responses.retrieve(queued.response.id)
        again = client.responses.retrieve(queued.response.id)
        gw.script.answer = SECOND_ANSWER
        continued = client.responses.create(
            model=MODEL, input=FOLLOW_UP, previous_response_id=queued.response.id
        )
    assert approved.status == "completed" and approved.output_text == DRAFT
    assert approved.error is None and approved.incomplete_details is None
    assert approved.id == queued.response.id and approved.created_at == queued.response.created_at
    assert approved.model == MODEL and approved.usage is not None and approved.usage.output_tokens == 7
    assert review_of(approved) == {
        "id": queued.review["id"],
        "status": "approved",
        "poll_url": queued.review["poll_url"],
    }
    assert again.model_dump() == approved.model_dump()  # the decided response was kept in its place
    assert continued.status == "completed" and continued.output_text == SECOND_ANSWER
    _, follow_up = gw.chat_requests()
    turns = [(m["role"], m["content"]) for m in follow_up.body["messages"][1:]]
    assert turns == [("user", HEALTH), ("assistant", DRAFT), ("user", FOLLOW_UP)]


def test_an_edited_streamed_response(gw: Setup) -> None:
    with gw.client() as client:
        events, error = events_of(
            client.responses.create(model=MODEL, input=HEALTH, extra_body=HELD, stream=True)
        )
        assert error is None and [e.type for e in events] == ["response.created", "response.queued"]
        queued = events[-1].response
        review_id = review_of(queued)["id"]
        assert client.responses.retrieve(queued.id).status == "queued"
        decide(gw.server, review_id, "edit", text=EDITED)
        edited = client.responses.retrieve(queued.id)
    assert edited.status == "completed" and edited.output_text == EDITED
    assert review_of(edited)["status"] == "edited" and DRAFT not in edited.model_dump_json()


def test_a_rejected_response_is_incomplete_with_the_rejection(gw: Setup) -> None:
    settings = gw.server.settings.review
    with gw.client() as client:
        queued = queue(client)
        decide(gw.server, queued.review["id"], "reject", reason="Dosage advice needs a pharmacist.")
        rejected = client.responses.retrieve(queued.response.id)
    assert rejected.status == "incomplete"
    assert rejected.incomplete_details is not None and rejected.incomplete_details.reason == "content_filter"
    assert rejected.output_text == settings.rejected_message and DRAFT not in rejected.model_dump_json()
    review = review_of(rejected)
    assert review["status"] == "rejected" and review["reason"] == "Dosage advice needs a pharmacist."


def test_another_key_cannot_read_a_queued_response(gw: Setup) -> None:
    with gw.client() as client:
        queued = queue(client)
    for key in (SAME_TENANT_KEY, OTHER_TENANT_KEY):
        with gw.client(key) as other, pytest.raises(openai.NotFoundError):
            other.responses.retrieve(queued.response.id)
    decide(gw.server, queued.review["id"], "approve")
    with gw.client(SAME_TENANT_KEY) as other, pytest.raises(openai.NotFoundError):
        other.responses.retrieve(queued.response.id)


def test_store_false_keeps_nothing_and_the_review_queue_answers(gw: Setup) -> None:
    with gw.client() as client:
        queued = queue(client, store=False)
        assert queued.response.store is False
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(queued.response.id)
        decide(gw.server, queued.review["id"], "approve")
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(queued.response.id)
        with pytest.raises(openai.NotFoundError) as continued:
            client.responses.create(model=MODEL, input=FOLLOW_UP, previous_response_id=queued.response.id)
    assert continued.value.code == "previous_response_not_found"
    with gw.server.http(headers={"authorization": f"Bearer {KEY}"}) as http:
        polled = http.get(queued.review["poll_url"]).json()
    assert polled["status"] == "approved"
    assert polled["completion"]["choices"][0]["message"]["content"] == DRAFT
    store = open_store(gw.server.settings.store)
    try:
        assert store.get_response(queued.response.id, response_time(queued.response)) is None
    finally:
        store.close()


def test_a_queued_response_whose_review_is_gone_has_failed(gw: Setup) -> None:
    with gw.client() as client:
        queued = queue(client)
        # An operator removes the item from the review queue (no API does: straight in the database).
        database = gw.audit_file.parent / "seawall.db"  # settings_for's store
        assert database.is_file()
        with sqlite3.connect(database) as connection:
            removed = connection.execute("DELETE FROM review_items WHERE id = ?", (queued.review["id"],))
            assert removed.rowcount == 1
        failed = client.responses.retrieve(queued.response.id)
        with pytest.raises(openai.BadRequestError) as continued:
            client.responses.create(model=MODEL, input=FOLLOW_UP, previous_response_id=queued.response.id)
    assert failed.status == "failed" and failed.output == []
    assert failed.error is not None and failed.error.code == "review_not_found"
    assert queued.review["id"] in failed.error.message
    assert continued.value.code == "previous_response_failed"
