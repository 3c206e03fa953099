"""The ``openai`` backend against a loopback stand-in for OpenAI's /v1/moderations."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from starlette.responses import Response

from backend_standins import Recorded, StandIn, backend_warnings, json_reply, serving, stand_in
from seawall.backends.base import create_backend
from seawall.backends.openai import MAX_PARALLEL_REQUESTS, OpenAIBackend, create
from seawall.categories import CATEGORIES, IMAGE_CATEGORIES
from seawall.errors import BackendError, BackendTimeoutError, ConfigurationError
from seawall.inputs import ImagePart, ModerationInput
from seawall.results import with_parent_flags
from seawall.server.app import create_app
from seawall.settings import Settings

API_KEY = "sk-test-0123456789abcdef-secret"


def scripted_scores(text: str) -> dict[str, float]:
    """Distinct, text-dependent scores per category, so a swapped or dropped mapping shows."""
    seed = sum(text.encode()) % 97
    return {name: round(((seed + 7 * index) % 100) / 100, 2) for index, name in enumerate(CATEGORIES)}


def scripted_flags(text: str) -> dict[str, bool]:
    """Flags that deliberately do not follow score >= 0.5: the backend must take OpenAI's booleans.

    They follow the taxonomy (a flagged sub-category flags its parent), as seawall's answers always do.
    """
    return with_parent_flags({name: index % 3 == 0 for index, name in enumerate(CATEGORIES)})


def openai_result(text: str, *, image: bool = False, applied: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {
        "flagged": any(scripted_flags(text).values()),
        "categories": scripted_flags(text),
        "category_scores": scripted_scores(text),
    }
    if applied:
        result["category_applied_input_types"] = {
            name: ["text", *(["image"] if image and name in IMAGE_CATEGORIES else [])] for name in CATEGORIES
        }
    return result


async def moderation_reply(request: Recorded) -> Response:
    """OpenAI's documented behaviour: strings → one result each; content parts → one result."""
    items = request.body["input"]
    if isinstance(items, str):
        items = [items]
    if items and isinstance(items[0], dict):
        text = " ".join(part["text"] for part in items if part["type"] == "text")
        has_image = any(part["type"] == "image_url" for part in items)
        results = [openai_result(text, image=has_image)]
    else:
        results = [openai_result(text) for text in items]
    return json_reply({"id": "modr-standin", "model": request.body["model"], "results": results})


@pytest.fixture
def upstream() -> Iterator[StandIn]:
    with stand_in(moderation_reply) as server:
        yield server


def settings_for(upstream: StandIn, **openai_settings: Any) -> Settings:
    values: dict[str, Any] = {"base_url": f"{upstream.url}/v1", "api_key": API_KEY, "max_retries": 0}
    values.update(openai_settings)
    return Settings(openai=values)


@pytest.fixture
async def backend(upstream: StandIn) -> Any:
    created = create(settings_for(upstream))
    yield created
    await created.aclose()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_maps_every_field_and_sends_the_documented_request(backend: OpenAIBackend, upstream: StandIn):
    texts = ["a calm sentence", "something else entirely"]
    results = await backend.moderate([ModerationInput.of_text(text) for text in texts])

    assert len(results) == 2
    for text, result in zip(texts, results, strict=True):
        assert result.category_scores == scripted_scores(text)
        assert result.categories == scripted_flags(text)
        assert result.applied_input_types == {name: ["text"] for name in CATEGORIES}
        assert result.backend == "openai"
        assert result.not_assessed == {}
        assert result.extra_scores == {}
    assert results[0].category_scores != results[1].category_scores
    assert results[0].to_openai()["flagged"] is True

    (request,) = upstream.requests
    assert request.method == "POST"
    assert request.path == "/v1/moderations"
    assert request.body == {"model": "omni-moderation-latest", "input": texts}
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_registered_under_its_name(upstream: StandIn):
    created = create_backend("openai", settings_for(upstream))
    try:
        assert isinstance(created, OpenAIBackend)
        assert created.name == "openai"
    finally:
        await created.aclose()


async def test_older_models_without_applied_input_types_mean_text(upstream: StandIn):
    async def old_model(request: Recorded) -> Response:
        result = openai_result("x", applied=False)
        result["category_scores"]["illicit"] = None  # text-moderation-* had no illicit categories
        del result["category_scores"]["illicit/violent"]
        return json_reply({"id": "modr-old", "model": "text-moderation-stable", "results": [result]})

    upstream.reply = old_model
    backend = create(settings_for(upstream, model="text-moderation-stable"))
    try:
        (result,) = await backend.moderate([ModerationInput.of_text("x")])
    finally:
        await backend.aclose()
    assert upstream.requests[0].body["model"] == "text-moderation-stable"
    for name in CATEGORIES:
        if name in ("illicit", "illicit/violent"):
            assert result.applied_input_types[name] == []
            assert result.category_scores[name] == 0.0
            assert result.categories[name] is False
        else:
            assert result.applied_input_types[name] == ["text"]
            assert result.category_scores[name] == scripted_scores("x")[name]
    # What the model did not judge is said to be unjudged, not passed as safe.
    assert result.not_assessed == {"illicit": ["text"], "illicit/violent": ["text"]}


async def test_categories_an_older_model_omits_on_an_image_input_are_not_assessed(upstream: StandIn):
    async def old_model(request: Recorded) -> Response:
        result = openai_result("x", applied=False)
        del result["category_scores"]["violence/graphic"]  # an image category
        del result["category_scores"]["hate"]  # a text-only category
        return json_reply({"id": "modr-old", "model": "text-moderation-stable", "results": [result]})

    upstream.reply = old_model
    backend = create(settings_for(upstream, model="text-moderation-stable"))
    try:
        (result,) = await backend.moderate(
            [ModerationInput(texts=("x",), images=(ImagePart("https://images.example/a.png"),))]
        )
    finally:
        await backend.aclose()
    expected = {name: ["image"] for name in IMAGE_CATEGORIES}  # the old model judged text only
    expected |= {"violence/graphic": ["text", "image"], "hate": ["text"]}
    assert result.not_assessed == expected
    assert result.applied_input_types["violence/graphic"] == []
    assert result.applied_input_types["violence"] == ["text"]


async def test_texts_are_sent_in_chunks_of_max_batch(upstream: StandIn):
    backend = create(settings_for(upstream, max_batch=3))
    texts = [f"text number {i}" for i in range(7)]
    try:
        results = await backend.moderate([ModerationInput.of_text(text) for text in texts])
    finally:
        await backend.aclose()

    sent = sorted((request.body["input"] for request in upstream.requests), key=lambda chunk: chunk[0])
    assert sent == [texts[0:3], texts[3:6], texts[6:7]]
    assert [result.category_scores for result in results] == [scripted_scores(text) for text in texts]


async def test_inputs_with_images_are_sent_alone_as_content_parts(backend: OpenAIBackend, upstream: StandIn):
    image = png_bytes()
    inputs = [
        ModerationInput.of_text("first"),
        ModerationInput(
            texts=("look at", "this"),
            images=(ImagePart(url="https://images.example/cat.png"),),
            image_bytes=(image,),
        ),
        ModerationInput.of_text("second"),
        ModerationInput(images=(ImagePart(url="https://images.example/unloaded.png"),)),
    ]
    results = await backend.moderate(inputs)

    bodies = [request.body["input"] for request in upstream.requests]
    assert len(bodies) == 3
    assert ["first", "second"] in bodies
    with_bytes = next(b for b in bodies if isinstance(b[0], dict) and b[0]["type"] == "text")
    assert with_bytes[0] == {"type": "text", "text": "look at\nthis"}
    url = with_bytes[1]["image_url"]["url"]
    assert with_bytes[1]["type"] == "image_url"
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == image
    assert [{"type": "image_url", "image_url": {"url": "https://images.example/unloaded.png"}}] in bodies

    assert results[0].category_scores == scripted_scores("first")
    assert results[2].category_scores == scripted_scores("second")
    assert results[1].category_scores == scripted_scores("look at\nthis")
    for name in CATEGORIES:
        expected = ["text", "image"] if name in IMAGE_CATEGORIES else ["text"]
        assert results[1].applied_input_types[name] == expected
    assert results[1].not_assessed == {}


async def test_image_categories_openai_did_not_judge_are_not_assessed(upstream: StandIn):
    async def text_only_judgement(request: Recorded) -> Response:
        return json_reply({"id": "m", "model": "m", "results": [openai_result("x", image=False)]})

    upstream.reply = text_only_judgement
    backend = create(settings_for(upstream))
    try:
        (result,) = await backend.moderate(
            [ModerationInput(images=(ImagePart("data:image/png;base64,AAAA"),), image_bytes=(png_bytes(),))]
        )
    finally:
        await backend.aclose()
    assert result.not_assessed == {name: ["image"] for name in IMAGE_CATEGORIES}


async def test_server_errors_name_the_status_and_log_the_details(
    upstream: StandIn, caplog: pytest.LogCaptureFixture
):
    async def broken(request: Recorded) -> Response:
        return json_reply({"error": {"message": "The server had an error", "type": "server_error"}}, 500)

    upstream.reply = broken
    backend = create(settings_for(upstream))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.moderate([ModerationInput.of_text("hello")])
    finally:
        await backend.aclose()
    assert not isinstance(caught.value, BackendTimeoutError)
    assert caught.value.status_code == 502
    # Clients learn which backend failed and the upstream status; nothing of the upstream's reply or address.
    assert caught.value.message == "the openai backend failed: upstream answered HTTP 500"
    body = str(caught.value.to_body())
    assert "The server had an error" not in body
    assert upstream.url not in body and "127.0.0.1" not in body
    # Operators find the address, the status and the error's type in the log; the upstream's message
    # only as its length and hash (it can quote the moderated text).
    logged = backend_warnings(caplog)
    assert f"HTTP 500: type server_error, message {fingerprint_of('The server had an error')}" in logged
    assert "The server had an error" not in caplog.text
    assert upstream.url in logged


async def test_max_retries_is_honoured(upstream: StandIn):
    async def overloaded(request: Recorded) -> Response:
        return json_reply({"error": {"message": "overloaded"}}, 503, headers={"retry-after-ms": "1"})

    upstream.reply = overloaded
    backend = create(settings_for(upstream, max_retries=2))
    try:
        with pytest.raises(BackendError, match="HTTP 503"):
            await backend.moderate([ModerationInput.of_text("hello")])
    finally:
        await backend.aclose()
    assert len(upstream.requests) == 3


async def test_a_slow_upstream_is_a_timeout(upstream: StandIn, caplog: pytest.LogCaptureFixture):
    async def slow(request: Recorded) -> Response:
        await asyncio.sleep(3)
        return await moderation_reply(request)

    upstream.reply = slow
    backend = create(settings_for(upstream, timeout_s=0.3))
    started = time.monotonic()
    try:
        with pytest.raises(BackendTimeoutError) as caught:
            await backend.moderate([ModerationInput.of_text("hello")])
    finally:
        await backend.aclose()
    assert time.monotonic() - started < 2.5
    assert caught.value.status_code == 504
    assert caught.value.message == "the openai backend failed: upstream did not answer in time"
    assert f"{upstream.url}/v1 did not answer within 0.3 s" in backend_warnings(caplog)


async def test_unreachable_upstream_is_a_backend_error(caplog: pytest.LogCaptureFixture):
    with serving(StandIn(reply=moderation_reply).app()) as server:
        closed_url = server.url
    backend = create(Settings(openai={"base_url": f"{closed_url}/v1", "api_key": API_KEY, "max_retries": 0}))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.moderate([ModerationInput.of_text("hello")])
    finally:
        await backend.aclose()
    assert caught.value.message == "the openai backend failed: upstream could not be reached"
    assert f"{closed_url}/v1 could not be reached" in backend_warnings(caplog)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"id": "m", "model": "m", "results": []}, "0 results for 2 inputs"),
        ({"id": "m", "model": "m"}, "no results for 2 inputs"),
        (
            {"id": "m", "model": "m", "results": [{"flagged": False}, {"flagged": False}]},
            "a result without category_scores",
        ),
        (
            {
                "id": "m",
                "model": "m",
                "results": [
                    openai_result("a"),
                    {**openai_result("b"), "category_scores": {**scripted_scores("b"), "hate": "high"}},
                ],
            },
            "non-numeric score for 'hate'",
        ),
    ],
)
async def test_malformed_replies_are_backend_errors(
    upstream: StandIn, caplog: pytest.LogCaptureFixture, body: dict[str, Any], complaint: str
):
    async def malformed(request: Recorded) -> Response:
        return json_reply(body)

    upstream.reply = malformed
    backend = create(settings_for(upstream))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.moderate([ModerationInput.of_text("a"), ModerationInput.of_text("b")])
    finally:
        await backend.aclose()
    assert caught.value.message == "the openai backend failed: upstream sent a malformed reply"
    assert complaint in backend_warnings(caplog)


async def test_a_non_json_reply_is_a_backend_error(upstream: StandIn, caplog: pytest.LogCaptureFixture):
    async def html(request: Recorded) -> Response:
        return Response("<html>gateway</html>", media_type="text/html")

    upstream.reply = html
    backend = create(settings_for(upstream))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.moderate([ModerationInput.of_text("a")])
    finally:
        await backend.aclose()
    assert "<html>" not in caught.value.message
    assert "malformed reply" in caught.value.message
    assert f"not JSON: {fingerprint_of('<html>gateway</html>')}" in backend_warnings(caplog)
    assert "gateway</html>" not in caplog.text


async def test_the_api_key_never_appears_in_errors_or_logs(
    upstream: StandIn, caplog: pytest.LogCaptureFixture
):
    async def rejects_key(request: Recorded) -> Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        return json_reply(
            {"error": {"message": f"Incorrect API key provided: {key}", "code": "bad_key"}}, 401
        )

    upstream.reply = rejects_key
    backend = create(settings_for(upstream))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.moderate([ModerationInput.of_text("a")])
    finally:
        await backend.aclose()
    assert upstream.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert caught.value.message == "the openai backend failed: upstream answered HTTP 401"
    assert API_KEY not in str(caught.value.to_body())
    assert API_KEY not in str(caught.value)
    logged = backend_warnings(caplog)
    assert "HTTP 401: code bad_key, message <" in logged
    assert API_KEY not in caplog.text


def fingerprint_of(text: str) -> str:
    """How the log names upstream text: its length and the start of its SHA-256 (computed here)."""
    return f"<{len(text)} chars, sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]}>"


MARKER = "zq-moderated-marker-7731"


@pytest.mark.parametrize(
    "echo",
    [
        pytest.param(
            lambda text: json_reply(
                {"error": {"message": f"Invalid input: {text!r}", "type": "invalid_request_error"}}, 400
            ),
            id="error-message",
        ),
        pytest.param(
            lambda text: json_reply({"error": {"message": "x", "code": text}}, 400), id="error-code"
        ),
        pytest.param(lambda text: json_reply({"detail": f"cannot moderate {text}"}, 422), id="other-body"),
        pytest.param(lambda text: Response(f"<pre>{text}</pre>", status_code=500), id="non-json-error"),
        pytest.param(lambda text: Response(f"<p>{text}</p>", media_type="text/html"), id="non-json-reply"),
        pytest.param(lambda text: json_reply({"results": [{"echo": text}]}), id="malformed-result"),
    ],
)
async def test_text_the_upstream_echoes_never_reaches_the_logs(
    upstream: StandIn, caplog: pytest.LogCaptureFixture, echo: Any
):
    """An upstream that quotes the moderated text back in an error (as validation errors do): no
    logger, at any level, writes it; the warning still names the status and the failure."""

    async def echoes(request: Recorded) -> Response:
        reply: Response = echo(str(request.body["input"]))
        return reply

    upstream.reply = echoes
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included
    backend = create(settings_for(upstream))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.moderate([ModerationInput.of_text(f"please judge {MARKER} for me")])
    finally:
        await backend.aclose()
    assert MARKER in str(upstream.requests[0].body)  # the text was sent, and echoed back
    assert MARKER not in caplog.text
    assert MARKER not in str(caught.value.to_body())
    logged = backend_warnings(caplog)
    assert f"OpenAI moderation at {upstream.url}/v1 " in logged
    assert "chars, sha256 " in logged


def test_a_missing_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        create(Settings())


async def test_the_key_falls_back_to_openai_api_key(monkeypatch: pytest.MonkeyPatch, upstream: StandIn):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-environment")
    backend = create(Settings(openai={"base_url": f"{upstream.url}/v1", "max_retries": 0}))
    try:
        await backend.moderate([ModerationInput.of_text("a")])
    finally:
        await backend.aclose()
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-from-environment"


async def test_empty_input_sends_nothing(backend: OpenAIBackend, upstream: StandIn):
    assert await backend.moderate([]) == []
    assert upstream.requests == []


async def test_the_request_limit_holds_across_concurrent_calls(upstream: StandIn):
    async def slow(request: Recorded) -> Response:
        await upstream.until_peak(MAX_PARALLEL_REQUESTS)
        return await moderation_reply(request)

    upstream.reply = slow
    backend = create(settings_for(upstream, max_batch=1))
    calls = 3
    try:
        answers = await asyncio.gather(
            *(
                backend.moderate(
                    [ModerationInput.of_text(f"call {c} text {i}") for i in range(MAX_PARALLEL_REQUESTS)]
                )
                for c in range(calls)
            )
        )
    finally:
        await backend.aclose()
    assert len(upstream.requests) == calls * MAX_PARALLEL_REQUESTS
    # One limit for the backend, not one per call: concurrent requests do not multiply it.
    assert upstream.max_in_flight == MAX_PARALLEL_REQUESTS
    for c, results in enumerate(answers):
        texts = [f"call {c} text {i}" for i in range(MAX_PARALLEL_REQUESTS)]
        assert [result.category_scores for result in results] == [scripted_scores(text) for text in texts]


# --- end to end: the seawall server, its openai backend, the official SDK as the client --------------


@pytest.fixture
def seawall_over_upstream(upstream: StandIn) -> Iterator[str]:
    settings = Settings(
        moderation={"backend": "openai"},
        openai={"base_url": f"{upstream.url}/v1", "api_key": API_KEY, "max_retries": 0},
    )
    with serving(create_app(settings), lifespan="on") as server:
        yield server.url


async def test_end_to_end_with_the_openai_sdk(seawall_over_upstream: str, upstream: StandIn):
    client = openai.AsyncOpenAI(base_url=f"{seawall_over_upstream}/v1", api_key="client-key", max_retries=0)
    try:
        texts = ["a calm sentence", "something else entirely"]
        response = await client.moderations.create(model="omni-moderation-latest", input=texts)
    finally:
        await client.close()

    assert response.model == "omni-moderation-latest"
    assert len(response.results) == 2
    for text, result in zip(texts, response.results, strict=True):
        wire = result.to_dict()
        assert wire["category_scores"] == scripted_scores(text)
        assert wire["categories"] == scripted_flags(text)
        assert wire["category_applied_input_types"] == {name: ["text"] for name in CATEGORIES}
        assert result.flagged is True
    (request,) = upstream.requests
    assert request.body["input"] == texts
    # seawall authenticates upstream with its own key, never the client's.
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert "client-key" not in request.raw.decode() + str(request.headers)


async def test_end_to_end_images_and_upstream_failure(
    seawall_over_upstream: str, upstream: StandIn, caplog: pytest.LogCaptureFixture
):
    image = png_bytes()
    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    client = openai.AsyncOpenAI(base_url=f"{seawall_over_upstream}/v1", api_key="client-key", max_retries=0)
    try:
        response = await client.moderations.create(
            input=[{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": data_url}}]
        )
        assert len(response.results) == 1
        applied = response.results[0].to_dict()["category_applied_input_types"]
        assert applied["sexual"] == ["text", "image"]
        sent = upstream.requests[0].body["input"]
        assert base64.b64decode(sent[1]["image_url"]["url"].split(",", 1)[1]) == image

        async def broken(request: Recorded) -> Response:
            return json_reply({"error": {"message": "upstream exploded"}}, 500)

        upstream.reply = broken
        with pytest.raises(openai.APIStatusError) as caught:
            await client.moderations.create(input="hello")
        assert caught.value.status_code == 502
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["type"] == "backend_error"
        assert caught.value.body["message"] == "the openai backend failed: upstream answered HTTP 500"
        raw_body = caught.value.response.text
        assert "upstream exploded" not in raw_body
        assert upstream.url not in raw_body and "127.0.0.1" not in raw_body
        logged = backend_warnings(caplog)
        assert f"{upstream.url}/v1 answered HTTP 500: message {fingerprint_of('upstream exploded')}" in logged
        assert "upstream exploded" not in caplog.text
    finally:
        await client.close()

    async with httpx.AsyncClient(base_url=seawall_over_upstream) as http:
        upstream.reply = moderation_reply
        extended = (await http.post("/v1/seawall/moderations", json={"input": "hi"})).json()
    assert extended["results"][0]["backend"] == "openai"
    assert extended["results"][0]["category_scores"] == scripted_scores("hi")
