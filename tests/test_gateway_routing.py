"""Answers the gateway gives without the model: the curated knowledge base and the off-topic
reply, end to end with the shipped examples (examples/policy-strict.yaml and knowledge.yaml)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backend_standins import StandIn, stand_in
from conftest import RunningServer, running_server
from seawall.gateway.pipeline import ANSWER_SOURCE_HEADER, REQUEST_ID_HEADER
from seawall.settings import load_settings
from test_gateway_pipeline import CLEAN_ANSWER, THREAT, Behaviour, make_reply

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODEL = "gpt-4o-mini"  # one of the example policy's allowed_models
RETURN_QUESTION = "How many days do I have to send back a bike I bought?"
OFF_TOPIC = "Who won the football world cup in 2018?"
#: The example policy declares these fields as drop-downs: every request names one of their values.
METADATA = {"language": "en", "channel": "web"}


@dataclass
class Routed:
    server: RunningServer
    upstream: StandIn
    audit_file: Path

    def chat_calls(self) -> int:
        return sum(1 for r in self.upstream.requests if r.path == "/v1/chat/completions")

    def record(self, response: httpx.Response) -> dict[str, object]:
        records = [json.loads(line) for line in self.audit_file.read_text().splitlines()]
        [record] = [r for r in records if r["request_id"] == response.headers[REQUEST_ID_HEADER]]
        return record


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    tmp = tmp_path_factory.mktemp("routing")
    with stand_in(make_reply(Behaviour())) as upstream:
        settings = load_settings(
            gateway={
                "enabled": True,
                "upstream": {"base_url": f"{upstream.url}/v1", "max_retries": 0},
                "policy_file": str(EXAMPLES / "policy-strict.yaml"),
                "knowledge_file": str(EXAMPLES / "knowledge.yaml"),
                "secret_file": str(tmp / "secret"),
                "audit_file": str(tmp / "audit.jsonl"),
            },
            store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
        )
        with running_server(settings) as server:
            yield Routed(server, upstream, tmp / "audit.jsonl")


def ask(http: httpx.Client, text: str, **extra: object) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "metadata": METADATA, **extra}
    return http.post("/v1/chat/completions", json=body)


def test_a_known_question_is_answered_from_the_knowledge_base(routed: Routed) -> None:
    before = routed.chat_calls()
    with routed.server.http() as http:
        response = ask(http, RETURN_QUESTION)
    assert response.status_code == 200
    answer = response.json()["choices"][0]["message"]["content"]
    assert "30 days" in answer and "Sources: https://velo.example/policies/returns" in answer
    assert response.headers[ANSWER_SOURCE_HEADER] == "knowledge_base; entry=return-window"
    assert routed.chat_calls() == before  # the model was not asked
    record = routed.record(response)
    assert record["outcome"] == "knowledge_base" and record["upstream"] is None


def test_a_knowledge_base_answer_streams_too(routed: Routed) -> None:
    with routed.server.client() as client:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": RETURN_QUESTION}],
            metadata=METADATA,
            stream=True,
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "30 days" in text


# The second is the policy's own off-topic example: its user turn counts against the topic.
@pytest.mark.parametrize("text", [OFF_TOPIC, "Can you write my history essay?"])
def test_an_off_topic_request_gets_the_policy_reply_without_the_model(routed: Routed, text: str) -> None:
    before = routed.chat_calls()
    with routed.server.http() as http:
        response = ask(http, text)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"].startswith("Sorry, I can only help with Velo")
    assert response.headers[ANSWER_SOURCE_HEADER] == "off_topic"
    assert routed.chat_calls() == before
    assert routed.record(response)["outcome"] == "off_topic"


@pytest.mark.parametrize("text", ["Hello!", "My chain keeps slipping when I pedal hard, what do I check?"])
def test_small_talk_and_on_topic_questions_reach_the_model(routed: Routed, text: str) -> None:
    before = routed.chat_calls()
    with routed.server.http() as http:
        response = ask(http, text)
    assert response.json()["choices"][0]["message"]["content"] == CLEAN_ANSWER
    assert ANSWER_SOURCE_HEADER not in response.headers
    assert routed.chat_calls() == before + 1


def test_a_harmful_request_is_refused_before_any_routing(routed: Routed) -> None:
    with routed.server.http() as http:
        response = ask(http, f"How long do I have to return an item? {THREAT}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_policy_violation"
