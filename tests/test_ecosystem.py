""" "Change base_url, nothing else": the client libraries apps use, against a running seawall.

Each library is pointed at a seawall server on loopback (in front of a loopback stand-in for the
model server, which speaks the chat completions wire format and records what it receives) with
its ordinary configuration: a base URL and an API key. Covered: the OpenAI SDK (chat, streaming,
moderations), LangChain's ``ChatOpenAI`` (invoke and stream), LiteLLM as a client
(``litellm.completion`` with ``api_base``) and the OpenAI Agents SDK running a one-tool agent
through the gateway, with its chat completions model (``OpenAIChatCompletionsModel``) and with its
default, the Responses model (``OpenAIResponsesModel``, through ``/v1/responses``). Every error
seawall answers with (blocked input 400, rate limited 429, a bad key 401, an unknown model 404)
must reach each client as that client's ordinary typed error.

The libraries are pinned in the ``ecosystem`` extra (``make test`` installs it). Without one, its
tests skip with the reason, except under ``CI``, where they fail.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest
from starlette.responses import Response, StreamingResponse

from backend_standins import Recorded, StandIn, json_reply, stand_in
from conftest import RunningServer, running_server
from seawall.settings import load_settings

# LiteLLM fetches its model price list from the network at import unless told to use its copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

MODEL = "eco-model"
KEY = "sk-ecosystem-good"
ANSWER = "Paris is the capital of France."
TOOL_RESULT = "Sunny, 21 degrees in Paris"
AGENT_ANSWER = "It is sunny and 21 degrees in Paris."
THREAT = "I will find you and kill you, I know where you live."
QUESTION = "What is the capital of France?"


def need(module: str) -> ModuleType:
    """Import a client library of the ecosystem extra; skip without it (fail under CI)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{module} is not installed ({exc}): pip install -e '.[ecosystem]'"
        if os.environ.get("CI"):
            pytest.fail(f"CI must install the ecosystem extra: {reason}", pytrace=False)
        pytest.skip(reason)


# ----------------------------------------------------------------- the model server stand-in


def _completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def reply(request: Recorded) -> Response:
    """A model server: lists one model; calls the tool when offered one, then answers from its result."""
    if request.method == "GET" and request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "test"}]})
    if request.path != "/v1/chat/completions":
        return json_reply({"error": {"message": "not found", "type": "invalid_request_error"}}, 404)
    body = request.body
    last = body["messages"][-1]
    if body.get("tools") and last["role"] != "tool":
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
        }
        if not body.get("stream"):
            return json_reply(
                _completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
            )

        async def call_events() -> AsyncIterator[bytes]:  # as servers stream a call: one piece here
            yield _chunk({"role": "assistant", "content": None})
            yield _chunk({"tool_calls": [{**call, "index": 0}]})
            yield _chunk({}, "tool_calls")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(call_events(), media_type="text/event-stream")
    text = AGENT_ANSWER if last["role"] == "tool" else ANSWER
    if not body.get("stream"):
        return json_reply(_completion({"role": "assistant", "content": text}, "stop"))

    async def events() -> AsyncIterator[bytes]:
        yield _chunk({"role": "assistant", "content": ""})
        for start in range(0, len(text), 6):
            yield _chunk({"content": text[start : start + 6]})
        yield _chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@dataclass
class Seawall:
    server: RunningServer
    upstream: StandIn

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.upstream.requests if r.path == "/v1/chat/completions"]


def _settings(tmp: Path, upstream: StandIn, **gateway: Any) -> Any:
    return load_settings(
        data_dir=str(tmp),
        server={"api_keys": [KEY]},
        gateway={
            "enabled": True,
            "upstream": {"base_url": f"{upstream.url}/v1", "max_retries": 0},
            "risk": {"enabled": False},
            "rate_limits": {"per_user": None, "per_address_without_session": None},
            **gateway,
        },
    )


@pytest.fixture(scope="module")
def seawall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seawall]:
    with (
        stand_in(reply) as upstream,
        running_server(_settings(tmp_path_factory.mktemp("eco"), upstream)) as server,
    ):
        yield Seawall(server, upstream)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seawall]:
    """A seawall whose one API key has used up its requests: every call is a 429."""
    tmp = tmp_path_factory.mktemp("eco-limited")
    with stand_in(reply) as upstream:
        settings = _settings(tmp, upstream, rate_limits={"per_key": {"requests": 1, "window_s": 3600}})
        with running_server(settings) as server:
            body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]}
            with server.http(headers={"authorization": f"Bearer {KEY}"}) as http:
                assert http.post("/v1/chat/completions", json=body).status_code == 200
                assert http.post("/v1/chat/completions", json=body).status_code == 429
            yield Seawall(server, upstream)


# ----------------------------------------------------------------- the clients, configured plainly


def openai_chat(base_url: str, key: str, model: str, text: str) -> str:
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    return reply.choices[0].message.content or ""


def langchain_chat(base_url: str, key: str, model: str, text: str) -> str:
    chat_models = need("langchain_openai")
    llm = chat_models.ChatOpenAI(model=model, base_url=base_url, api_key=key, max_retries=0)
    return str(llm.invoke(text).content)


def litellm_chat(base_url: str, key: str, model: str, text: str) -> str:
    litellm = need("litellm")
    response = litellm.completion(
        model=f"openai/{model}",
        api_base=base_url,
        api_key=key,
        messages=[{"role": "user", "content": text}],
        max_retries=0,
    )
    return str(response.choices[0].message.content)


def agents_chat(base_url: str, key: str, model: str, text: str) -> str:
    agents = need("agents")
    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)
    agent = agents.Agent(
        name="Assistant",
        instructions="Answer briefly.",
        model=agents.OpenAIChatCompletionsModel(model=model, openai_client=client),
    )
    result = agents.Runner.run_sync(agent, text)
    return str(result.final_output)


def agents_responses_chat(base_url: str, key: str, model: str, text: str) -> str:
    """The Agents SDK's default model: the Responses API (``/v1/responses``)."""
    agents = need("agents")
    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)
    agent = agents.Agent(
        name="Assistant",
        instructions="Answer briefly.",
        model=agents.OpenAIResponsesModel(model=model, openai_client=client),
    )
    result = agents.Runner.run_sync(agent, text)
    return str(result.final_output)


CLIENTS: dict[str, Callable[[str, str, str, str], str]] = {
    "openai": openai_chat,
    "langchain": langchain_chat,
    "litellm": litellm_chat,
    "agents": agents_chat,
    "agents-responses": agents_responses_chat,
}


def typed_errors(client: str) -> dict[str, type[Exception]]:
    """The error class each client raises for seawall's 400, 429, 401 and 404."""
    if client == "litellm":
        litellm = need("litellm")
        return {
            "blocked": litellm.BadRequestError,
            "rate_limited": litellm.RateLimitError,
            "auth": litellm.AuthenticationError,
            "unknown_model": litellm.NotFoundError,
        }
    # The OpenAI SDK's own errors: LangChain's ChatOpenAI and the Agents SDK let them through.
    return {
        "blocked": openai.BadRequestError,
        "rate_limited": openai.RateLimitError,
        "auth": openai.AuthenticationError,
        "unknown_model": openai.NotFoundError,
    }


# ----------------------------------------------------------------- answers


@pytest.mark.parametrize("client", CLIENTS)
def test_a_plain_chat_call_is_answered_through_seawall(seawall: Seawall, client: str) -> None:
    before = len(seawall.chat_requests())
    assert CLIENTS[client](seawall.base_url, KEY, MODEL, QUESTION) == ANSWER
    [sent] = seawall.chat_requests()[before:]
    # What reached the model went through the gateway: its prompt first, a safety identifier.
    assert sent.body["messages"][0]["role"] == "system"
    assert sent.body["messages"][-1] == {"role": "user", "content": QUESTION}
    assert sent.body["safety_identifier"]


def test_openai_sdk_streams_and_moderates(seawall: Seawall) -> None:
    client = openai.OpenAI(base_url=seawall.base_url, api_key=KEY)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == ANSWER
    result = client.moderations.create(model="omni-moderation-latest", input=[THREAT, "hello"])
    assert [r.flagged for r in result.results] == [True, False]
    assert result.results[0].categories.harassment_threatening or result.results[0].categories.violence


def test_langchain_streams(seawall: Seawall) -> None:
    chat_models = need("langchain_openai")
    llm = chat_models.ChatOpenAI(model=MODEL, base_url=seawall.base_url, api_key=KEY)
    before = len(seawall.chat_requests())
    pieces = [str(chunk.content) for chunk in llm.stream(QUESTION)]
    # (How many pieces the text comes in is the stream guard's business: it releases scanned text.)
    assert "".join(pieces) == ANSWER
    [sent] = seawall.chat_requests()[before:]
    assert sent.body["stream"] is True


def test_litellm_streams(seawall: Seawall) -> None:
    litellm = need("litellm")
    stream = litellm.completion(
        model=f"openai/{MODEL}",
        api_base=seawall.base_url,
        api_key=KEY,
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == ANSWER


def test_an_agent_with_one_tool_runs_through_seawall(seawall: Seawall) -> None:
    agents = need("agents")
    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return TOOL_RESULT

    client = openai.AsyncOpenAI(base_url=seawall.base_url, api_key=KEY)
    agent = agents.Agent(
        name="Weather",
        instructions="Use the tool to answer questions about the weather.",
        tools=[get_weather],
        model=agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
    )
    before = len(seawall.chat_requests())
    result = asyncio.run(agents.Runner.run(agent, "What's the weather in Paris?"))
    assert result.final_output == AGENT_ANSWER
    assert calls == ["Paris"]
    first, second = seawall.chat_requests()[before:]
    assert first.body["tools"][0]["function"]["name"] == "get_weather"
    # The agent's instructions were demoted into the gateway's prompt, below its rules.
    assert [m["role"] for m in first.body["messages"]] == ["system", "user"]
    assert "Use the tool to answer questions about the weather." in first.body["messages"][0]["content"]
    # The tool's output reached the model fenced as untrusted content.
    tool_message = second.body["messages"][-1]
    assert tool_message["role"] == "tool" and TOOL_RESULT in tool_message["content"]
    assert "<<<UNTRUSTED" in tool_message["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_streamed"])
def test_an_agent_with_one_tool_runs_through_the_responses_api(seawall: Seawall, stream: bool) -> None:
    """The Agents SDK's default model (``OpenAIResponsesModel``) through ``/v1/responses``: the
    tool round trip, then a harmful input refused as the SDK's ``BadRequestError``."""
    agents = need("agents")
    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return TOOL_RESULT

    client = openai.AsyncOpenAI(base_url=seawall.base_url, api_key=KEY, max_retries=0)
    agent = agents.Agent(
        name="Weather",
        instructions="Use the tool to answer questions about the weather.",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel(model=MODEL, openai_client=client),
    )

    async def run(text: str) -> Any:
        if not stream:
            return await agents.Runner.run(agent, text)
        streamed = agents.Runner.run_streamed(agent, text)
        async for _ in streamed.stream_events():
            pass
        return streamed

    async def both() -> tuple[Any, BaseException | None]:  # one loop: the client's pool is bound to it
        answered = await run("What's the weather in Paris?")
        try:
            await run(THREAT)
        except Exception as exc:
            return answered, exc
        return answered, None

    before = len(seawall.chat_requests())
    responses_before = len([r for r in seawall.upstream.requests if r.path == "/v1/responses"])
    result, refused = asyncio.run(both())
    assert result.final_output == AGENT_ANSWER
    assert calls == ["Paris"]
    first, second = seawall.chat_requests()[before:]
    assert bool(first.body.get("stream")) is stream
    assert first.body["tools"][0]["function"]["name"] == "get_weather"
    # The agent's instructions came as the Responses request's instructions: demoted into the
    # gateway's prompt, below its rules.
    assert [m["role"] for m in first.body["messages"]] == ["system", "user"]
    assert "Use the tool to answer questions about the weather." in first.body["messages"][0]["content"]
    # The function call went back as the assistant's tool call; its output was fenced as untrusted.
    assert second.body["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    tool_message = second.body["messages"][-1]
    assert tool_message["role"] == "tool" and TOOL_RESULT in tool_message["content"]
    assert "<<<UNTRUSTED" in tool_message["content"]
    # The stand-in has no Responses API: seawall translated (nothing reached it on /v1/responses).
    assert len([r for r in seawall.upstream.requests if r.path == "/v1/responses"]) == responses_before

    assert isinstance(refused, openai.BadRequestError), refused
    assert refused.code == "content_policy_violation" and refused.status_code == 400
    assert len(seawall.chat_requests()) == before + 2  # refused before the model


# ----------------------------------------------------------------- errors, typed in every client


@pytest.mark.parametrize("client", CLIENTS)
def test_blocked_input_is_the_client_s_bad_request_error(seawall: Seawall, client: str) -> None:
    before = len(seawall.chat_requests())
    with pytest.raises(typed_errors(client)["blocked"]) as caught:
        CLIENTS[client](seawall.base_url, KEY, MODEL, THREAT)
    assert "content_policy_violation" in str(caught.value) or getattr(caught.value, "code", None) == (
        "content_policy_violation"
    )
    assert len(seawall.chat_requests()) == before  # refused before the model


@pytest.mark.parametrize("client", CLIENTS)
def test_rate_limited_is_the_client_s_rate_limit_error(limited: Seawall, client: str) -> None:
    with pytest.raises(typed_errors(client)["rate_limited"]):
        CLIENTS[client](limited.base_url, KEY, MODEL, QUESTION)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_bad_key_is_the_client_s_authentication_error(seawall: Seawall, client: str) -> None:
    with pytest.raises(typed_errors(client)["auth"]):
        CLIENTS[client](seawall.base_url, "sk-wrong", MODEL, QUESTION)


@pytest.mark.parametrize("client", CLIENTS)
def test_an_unknown_model_is_the_client_s_not_found_error(seawall: Seawall, client: str) -> None:
    before = len(seawall.chat_requests())
    with pytest.raises(typed_errors(client)["unknown_model"]):
        CLIENTS[client](seawall.base_url, KEY, "gpt-9-ultra", QUESTION)
    assert len(seawall.chat_requests()) == before


def test_the_openai_sdk_sees_seawall_s_error_body(seawall: Seawall) -> None:
    """The typed errors carry OpenAI's error fields, as from OpenAI itself."""
    client = openai.OpenAI(base_url=seawall.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9-ultra", messages=[{"role": "user", "content": QUESTION}])
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (
        404,
        "model_not_found",
        "model",
    )
    with httpx.Client() as http:
        response = http.get(f"{seawall.base_url}/models", headers={"authorization": f"Bearer {KEY}"})
    assert [m["id"] for m in response.json()["data"]] == [MODEL]
