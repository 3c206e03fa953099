"""The policy's ``models`` map: a client-facing model name served by an upstream model of another
name, through the official OpenAI SDK -> seawall on loopback -> a recording chat stand-in.

What a client sees: ``/v1/models`` lists the mapped name (beside the upstream's own names, unless
``allowed_models`` narrows them), a request for it is sent upstream under the upstream's name, the
answer's ``model`` is the name the client asked for (plain, streamed and on the Responses API), and
a name nobody serves (or mapped onto a model the upstream does not list) is a 404
``model_not_found``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from backend_standins import stand_in
from conftest import running_server
from seawall.errors import ConfigurationError
from seawall.gateway.pipeline import REQUEST_ID_HEADER
from seawall.gateway.policy import policy_from_dict
from seawall.settings import Settings, load_settings
from test_responses_api import CLEAN_ANSWER, MODEL, QUESTION, Script, StandIn, make_reply

CLIENT_NAME = "gpt-4o-mini"
POLICY = f"""\
name: Test Helper
purpose: You answer general knowledge questions for the test suite.
allowed_topics: [geography, general knowledge]
off_topic_reply: Sorry, I can only help with general knowledge.
models:
  {CLIENT_NAME}:
    upstream: {MODEL}
  gpt-ghost:
    upstream: not-on-the-upstream
"""


def settings_for(tmp: Path, upstream_url: str, policy: str) -> Settings:
    path = tmp / "policy.yaml"
    path.write_text(policy)
    return load_settings(
        gateway={
            "enabled": True,
            "upstream": {"base_url": f"{upstream_url}/v1", "max_retries": 0, "total_timeout_s": 20},
            "policy_file": str(path),
            "secret_file": str(tmp / "secret"),
            "audit_file": str(tmp / "audit.jsonl"),
            "risk": {"enabled": False},
            "rate_limits": {"per_user": None},
        },
        store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
    )


@pytest.fixture
def upstream() -> Iterator[StandIn]:
    with stand_in(make_reply(Script())) as standin:
        yield standin


def sent_models(upstream: StandIn) -> list[str]:
    return [r.body["model"] for r in upstream.requests if r.path == "/v1/chat/completions"]


def test_a_mapped_name_is_listed_sent_upstream_under_its_name_and_answered_under_the_clients(
    tmp_path: Path, upstream: StandIn
) -> None:
    with running_server(settings_for(tmp_path, upstream.url, POLICY)) as server, server.client() as client:
        listed = sorted(model.id for model in client.models.list())
        assert listed == sorted([CLIENT_NAME, MODEL])

        completion = client.chat.completions.create(
            model=CLIENT_NAME, messages=[{"role": "user", "content": QUESTION}]
        )
        assert completion.model == CLIENT_NAME and completion.choices[0].message.content == CLEAN_ANSWER
        chunks = list(
            client.chat.completions.create(
                model=CLIENT_NAME, messages=[{"role": "user", "content": QUESTION}], stream=True
            )
        )
        assert {chunk.model for chunk in chunks} == {CLIENT_NAME}
        response = client.responses.create(model=CLIENT_NAME, input=QUESTION)
        assert response.model == CLIENT_NAME and response.output_text == CLEAN_ANSWER
        streamed = list(client.responses.create(model=CLIENT_NAME, input=QUESTION, stream=True))
        assert streamed[-1].type == "response.completed" and streamed[-1].response.model == CLIENT_NAME
        assert sent_models(upstream) == [MODEL] * 4

        # The upstream's own name is still served as itself; a name nobody serves is a 404.
        direct = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
        assert direct.model == MODEL
        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(model="gpt-9-ultra", messages=[{"role": "user", "content": "hi"}])
        assert unknown.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError) as unknown_responses:
            client.responses.create(model="gpt-9-ultra", input="hi")
        assert unknown_responses.value.code == "model_not_found"
        # A name mapped onto a model the upstream does not list is neither listed nor served.
        with pytest.raises(openai.NotFoundError) as ghost:
            client.chat.completions.create(model="gpt-ghost", messages=[{"role": "user", "content": "hi"}])
        assert ghost.value.code == "model_not_found" and "'not-on-the-upstream'" in ghost.value.message
        raw = client.chat.completions.with_raw_response.create(
            model=CLIENT_NAME, messages=[{"role": "user", "content": QUESTION}]
        )
    assert sent_models(upstream)[-1] == MODEL and len(sent_models(upstream)) == 6
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    [record] = [r for r in records if r["request_id"] == raw.headers[REQUEST_ID_HEADER]]
    assert record["model"] == CLIENT_NAME and record["upstream"]["model"] == MODEL


def test_allowed_models_names_client_facing_names(tmp_path: Path, upstream: StandIn) -> None:
    policy = POLICY + f"limits:\n  allowed_models: [{CLIENT_NAME}]\n"
    with running_server(settings_for(tmp_path, upstream.url, policy)) as server, server.client() as client:
        assert [model.id for model in client.models.list()] == [CLIENT_NAME]
        answer = client.chat.completions.create(
            model=CLIENT_NAME, messages=[{"role": "user", "content": QUESTION}]
        )
        assert answer.model == CLIENT_NAME
        with pytest.raises(openai.NotFoundError) as hidden:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
        assert hidden.value.code == "model_not_found"
    assert sent_models(upstream) == [MODEL]


def test_a_mapping_without_an_upstream_name_is_refused_at_load_time() -> None:
    base = {"name": "x", "purpose": "y", "allowed_topics": ["z"], "off_topic_reply": "no"}
    with pytest.raises(ConfigurationError) as missing:
        policy_from_dict({**base, "models": {CLIENT_NAME: {}}})
    assert missing.value.param == f"models.{CLIENT_NAME}.upstream"
    with pytest.raises(ConfigurationError) as typo:
        policy_from_dict({**base, "models": {CLIENT_NAME: {"upstrem": MODEL}}})
    assert "upstrem" in str(typo.value)
    assert (
        policy_from_dict({**base, "models": {CLIENT_NAME: {"upstream": MODEL}}}).upstream_model(CLIENT_NAME)
        == MODEL
    )
