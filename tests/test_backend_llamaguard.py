"""The ``llamaguard`` backend against a loopback stand-in for an OpenAI-compatible chat server."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.responses import Response

from backend_standins import Recorded, StandIn, backend_warnings, json_reply, serving, stand_in
from seawall.backends.base import create_backend
from seawall.backends.llamaguard import (
    WINDOW_CHARS,
    WINDOW_OVERLAP,
    LlamaGuardBackend,
    create,
    split_windows,
)
from seawall.categories import CATEGORIES, IMAGE_CATEGORIES
from seawall.errors import BackendError, BackendTimeoutError
from seawall.inputs import ImagePart, ModerationInput
from seawall.settings import Settings

#: The mapping the backend documents, written out independently (parents included).
EXPECTED_FLAGS: dict[str, set[str]] = {
    "S1": {"violence", "illicit/violent", "illicit"},
    "S2": {"illicit"},
    "S3": {"sexual", "illicit"},
    "S4": {"sexual/minors", "sexual"},
    "S5": set(),
    "S6": set(),
    "S7": set(),
    "S8": set(),
    "S9": {"illicit/violent", "illicit"},
    "S10": {"hate"},
    "S11": {"self-harm"},
    "S12": {"sexual"},
    "S13": set(),
    "S14": {"illicit"},
}


def token_logprobs(token: str, alternatives: dict[str, float]) -> dict[str, Any]:
    """One entry of ``choices[0].logprobs.content``, OpenAI's shape, from probabilities."""
    return {
        "token": token,
        "logprob": math.log(alternatives.get(token, 1e-9)),
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": alt, "logprob": math.log(p), "bytes": list(alt.encode())}
            for alt, p in alternatives.items()
        ],
    }


def chat_completion(content: Any, logprob_entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "meta-llama/Llama-Guard-3-8B",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": {"content": logprob_entries} if logprob_entries is not None else None,
            }
        ],
        "usage": {"prompt_tokens": 200, "completion_tokens": 3, "total_tokens": 203},
    }


#: user text → (reply content, probabilities of the first token's alternatives).
SCRIPT: dict[str, tuple[str, dict[str, float]]] = {
    "hello there": ("safe", {"safe": 0.97, "unsafe": 0.03}),
    "violent hate": ("unsafe\nS1,S10", {"unsafe": 0.6, "safe": 0.3, "The": 0.1}),
}


async def scripted_reply(request: Recorded) -> Response:
    text = request.body["messages"][-1]["content"]
    content, alternatives = SCRIPT.get(text, ("safe", {"safe": 0.99, "unsafe": 0.01}))
    if text.startswith("codes:"):
        content = "unsafe\n" + text.removeprefix("codes:")
        alternatives = {"unsafe": 0.9, "safe": 0.1}
    entries = None
    if request.body.get("logprobs"):
        first = content.split("\n")[0]
        entries = [token_logprobs(first, alternatives)]
    return json_reply(chat_completion(content, entries))


@pytest.fixture
def guard() -> Iterator[StandIn]:
    with stand_in(scripted_reply) as upstream:
        yield upstream


def settings_for(guard: StandIn, **values: Any) -> Settings:
    return Settings(llamaguard={"base_url": f"{guard.url}/v1", **values})


@pytest.fixture
async def backend(guard: StandIn) -> Any:
    created = create(settings_for(guard))
    yield created
    await created.aclose()


async def moderate_with(settings: Settings, inputs: list[ModerationInput]) -> list[Any]:
    backend = create(settings)
    try:
        return await backend.moderate(inputs)
    finally:
        await backend.aclose()


async def test_sends_one_chat_completion_per_input(backend: LlamaGuardBackend, guard: StandIn):
    await backend.moderate([ModerationInput.of_text("hello there"), ModerationInput.of_text("violent hate")])

    assert len(guard.requests) == 2
    by_text = {request.body["messages"][0]["content"]: request for request in guard.requests}
    assert set(by_text) == {"hello there", "violent hate"}
    for request in guard.requests:
        assert request.path == "/v1/chat/completions"
        assert request.body["model"] == "meta-llama/Llama-Guard-3-8B"
        assert request.body["messages"] == [
            {"role": "user", "content": request.body["messages"][0]["content"]}
        ]
        assert request.body["max_tokens"] <= 32
        assert request.body["temperature"] == 0
        assert request.body["logprobs"] is True
        assert request.body["top_logprobs"] >= 2
        assert "authorization" not in request.headers


async def test_api_key_is_sent_when_configured(guard: StandIn):
    await moderate_with(settings_for(guard, api_key="lg-key"), [ModerationInput.of_text("hello there")])
    assert guard.requests[0].headers["authorization"] == "Bearer lg-key"


async def test_registered_under_its_name(guard: StandIn):
    created = create_backend("llamaguard", settings_for(guard))
    try:
        assert isinstance(created, LlamaGuardBackend)
    finally:
        await created.aclose()


@pytest.mark.parametrize("code", sorted(EXPECTED_FLAGS, key=lambda c: int(c[1:])))
async def test_each_hazard_code_maps_onto_the_categories(guard: StandIn, code: str):
    (result,) = await moderate_with(
        settings_for(guard, request_logprobs=False), [ModerationInput.of_text(f"codes:{code}")]
    )
    expected = EXPECTED_FLAGS[code]
    assert {name for name, flagged in result.categories.items() if flagged} == expected
    assert result.category_scores == {name: (1.0 if name in expected else 0.0) for name in CATEGORIES}
    assert result.flagged is bool(expected)
    assert result.backend == "llamaguard"
    assert result.applied_input_types == {name: ["text"] for name in CATEGORIES}
    if expected:
        assert not any(code in note for note in result.notes)
    else:
        assert any(f"{code} (" in note and "not flagged" in note for note in result.notes)
    assert "logprobs" not in guard.requests[0].body


async def test_several_codes_and_unknown_codes(guard: StandIn):
    results = await moderate_with(
        settings_for(guard, request_logprobs=False),
        [ModerationInput.of_text("codes:S2, S12"), ModerationInput.of_text("codes:S11,S15")],
    )
    assert {n for n, f in results[0].categories.items() if f} == {"illicit", "sexual"}
    assert {n for n, f in results[1].categories.items() if f} == {"self-harm"}
    assert any("S15" in note for note in results[1].notes)


async def test_logprobs_become_the_score(backend: LlamaGuardBackend):
    safe, unsafe = await backend.moderate(
        [ModerationInput.of_text("hello there"), ModerationInput.of_text("violent hate")]
    )
    p_unsafe = 0.6 / (0.6 + 0.3)  # "The" is neither word and drops out
    named = {"violence", "illicit/violent", "illicit", "hate"}
    for name in CATEGORIES:
        if name in named:
            assert unsafe.category_scores[name] == pytest.approx(p_unsafe)
            assert unsafe.categories[name] is True
        else:
            assert unsafe.category_scores[name] == pytest.approx(0.1)
            assert unsafe.categories[name] is False
    assert safe.category_scores == pytest.approx({name: 0.03 for name in CATEGORIES})
    assert not safe.flagged


async def test_reads_the_first_non_whitespace_token_and_partial_words(guard: StandIn):
    async def llama_guard_3_style(request: Recorded) -> Response:
        entries = [
            token_logprobs("\n\n", {"\n\n": 0.99, "\n": 0.01}),
            token_logprobs("uns", {"uns": 0.2, " safe": 0.8}),
            token_logprobs("afe", {"afe": 1.0}),
        ]
        return json_reply(chat_completion("\n\nsafe", entries))

    guard.reply = llama_guard_3_style
    (result,) = await moderate_with(settings_for(guard), [ModerationInput.of_text("anything")])
    assert not result.flagged
    assert result.category_scores["violence"] == pytest.approx(0.1)  # min(P(unsafe) = 0.2, cap)
    assert result.category_scores["hate"] == pytest.approx(0.1)


async def test_without_logprobs_in_the_reply_the_verdict_decides(guard: StandIn):
    async def no_logprobs(request: Recorded) -> Response:
        return json_reply(chat_completion("unsafe\nS10"))

    guard.reply = no_logprobs
    (result,) = await moderate_with(settings_for(guard), [ModerationInput.of_text("anything")])
    assert guard.requests[0].body["logprobs"] is True
    assert result.category_scores == {name: (1.0 if name == "hate" else 0.0) for name in CATEGORIES}


async def test_images_are_not_assessed(backend: LlamaGuardBackend, guard: StandIn):
    image = ImagePart(url="https://images.example/a.png")
    with_text, image_only = await backend.moderate(
        [ModerationInput(texts=("violent hate",), images=(image,)), ModerationInput(images=(image,))]
    )
    assert len(guard.requests) == 1
    assert guard.requests[0].body["messages"][0]["content"] == "violent hate"
    assert with_text.not_assessed == {name: ["image"] for name in IMAGE_CATEGORIES}
    assert with_text.categories["hate"] is True
    assert image_only.not_assessed == {name: ["image"] for name in IMAGE_CATEGORIES}
    assert image_only.applied_input_types == {name: [] for name in CATEGORIES}
    assert not image_only.flagged


async def test_concurrency_is_bounded(guard: StandIn):
    async def slow(request: Recorded) -> Response:
        await guard.until_peak(2)
        return await scripted_reply(request)

    guard.reply = slow
    texts = [f"text {i}" for i in range(6)] + ["violent hate"]
    results = await moderate_with(
        settings_for(guard, concurrency=2), [ModerationInput.of_text(text) for text in texts]
    )
    assert len(guard.requests) == 7
    assert guard.max_in_flight == 2
    assert [r.flagged for r in results] == [False] * 6 + [True]


async def test_concurrency_is_per_backend_not_per_call(guard: StandIn):
    async def slow(request: Recorded) -> Response:
        await guard.until_peak(2)
        return await scripted_reply(request)

    guard.reply = slow
    backend = create(settings_for(guard, concurrency=2))
    try:
        await asyncio.gather(
            *(
                backend.moderate([ModerationInput.of_text(f"call {c} text {i}") for i in range(3)])
                for c in range(3)
            )
        )
    finally:
        await backend.aclose()
    assert len(guard.requests) == 9
    assert guard.max_in_flight == 2


# --- long texts: overlapping windows, one request each, verdicts combined ------------------------------


def filler(length: int) -> str:
    """Harmless text of exactly ``length`` characters."""
    words = "the quick brown fox jumps over the lazy dog and naps in the afternoon sun "
    return (words * (length // len(words) + 1))[:length]


async def windowed_reply(request: Recorded) -> Response:
    """Unsafe S10 (P 0.7) for a window holding HATE-MARK, S1 (P 0.9) for VIOLENCE-MARK, else safe."""
    text = request.body["messages"][-1]["content"]
    if "VIOLENCE-MARK" in text:
        content, alternatives = "unsafe\nS1", {"unsafe": 0.9, "safe": 0.1}
    elif "HATE-MARK" in text:
        content, alternatives = "unsafe\nS10", {"unsafe": 0.7, "safe": 0.3}
    else:
        content, alternatives = "safe", {"safe": 0.98, "unsafe": 0.02}
    return json_reply(chat_completion(content, [token_logprobs(content.split("\n")[0], alternatives)]))


async def test_long_texts_are_judged_in_windows_and_combined(guard: StandIn):
    text = filler(1_000) + "HATE-MARK" + filler(9_000) + "VIOLENCE-MARK" + filler(11_000)
    guard.reply = windowed_reply
    (result,) = await moderate_with(settings_for(guard), [ModerationInput.of_text(text)])

    sent = [request.body["messages"][0]["content"] for request in guard.requests]
    assert len(sent) == len(split_windows(text)) == 3
    assert all(len(window) <= WINDOW_CHARS for window in sent)
    assert sorted(sent) == sorted(split_windows(text))
    # Unsafe because some window is; the codes of every window; the highest P(unsafe).
    named = {"hate", "violence", "illicit/violent", "illicit"}
    assert {name for name, flagged in result.categories.items() if flagged} == named
    for name in CATEGORIES:
        assert result.category_scores[name] == pytest.approx(0.9 if name in named else 0.1)
    assert any("3 windows" in note for note in result.notes)


async def test_a_passage_across_a_window_edge_is_seen_whole(guard: StandIn):
    marker = "VIOLENCE-MARK"
    text = filler(WINDOW_CHARS - 5) + marker + filler(3_000)  # the first window cuts the marker
    guard.reply = windowed_reply
    (result,) = await moderate_with(settings_for(guard), [ModerationInput.of_text(text)])
    sent = sorted((request.body["messages"][0]["content"] for request in guard.requests), key=text.index)
    assert len(sent) == 2
    assert marker not in sent[0] and marker in sent[1]
    assert result.categories["violence"] is True


async def test_texts_up_to_the_window_are_sent_whole(backend: LlamaGuardBackend, guard: StandIn):
    text = filler(WINDOW_CHARS)
    (result,) = await backend.moderate([ModerationInput.of_text(text)])
    assert [request.body["messages"][0]["content"] for request in guard.requests] == [text]
    assert not any("window" in note for note in result.notes)


@pytest.mark.parametrize("length", [1, WINDOW_CHARS, WINDOW_CHARS + 1, 3 * WINDOW_CHARS, 50_001])
def test_windows_cover_the_text_and_overlap(length: int):
    text = "".join(chr(0x4E00 + i % 5000) for i in range(length))  # no two nearby characters alike
    windows = split_windows(text)
    assert all(0 < len(window) <= WINDOW_CHARS for window in windows)
    rebuilt = windows[0] + "".join(window[WINDOW_OVERLAP:] for window in windows[1:])
    assert rebuilt == text
    for first, second in itertools.pairwise(windows):
        assert first[-WINDOW_OVERLAP:] == second[:WINDOW_OVERLAP]


@pytest.mark.parametrize(
    "content",
    ["I cannot help with that.", "unsafe", "unsafe\nviolence", "", "safe-ish"],
)
async def test_replies_that_are_neither_safe_nor_unsafe_are_errors(
    guard: StandIn, caplog: pytest.LogCaptureFixture, content: str
):
    async def odd(request: Recorded) -> Response:
        return json_reply(chat_completion(content))

    guard.reply = odd
    with pytest.raises(BackendError) as caught:
        await moderate_with(settings_for(guard), [ModerationInput.of_text("anything")])
    assert caught.value.message == "the llamaguard backend failed: upstream sent a malformed reply"
    digest = hashlib.sha256(content.encode()).hexdigest()[:12]
    logged = backend_warnings(caplog)
    assert f"neither 'safe' nor 'unsafe\\nS<n>,...': <{len(content)} chars, sha256 {digest}>" in logged


@pytest.mark.parametrize(
    "reply",
    [
        json_reply({"object": "chat.completion", "choices": []}),
        json_reply({"error": "nope"}),
        json_reply(chat_completion(None)),
        Response("not json at all", media_type="text/plain"),
    ],
)
async def test_malformed_completions_are_errors(
    guard: StandIn, caplog: pytest.LogCaptureFixture, reply: Response
):
    async def malformed(request: Recorded) -> Response:
        return reply

    guard.reply = malformed
    with pytest.raises(BackendError) as caught:
        await moderate_with(settings_for(guard), [ModerationInput.of_text("anything")])
    assert caught.value.message == "the llamaguard backend failed: upstream sent a malformed reply"
    assert f"Llama Guard at {guard.url}/v1 sent a " in backend_warnings(caplog)


async def test_server_errors_name_the_status_and_hide_the_details(
    guard: StandIn, caplog: pytest.LogCaptureFixture
):
    async def broken(request: Recorded) -> Response:
        return json_reply({"error": f"bad token {request.headers.get('authorization')}"}, 503)

    guard.reply = broken
    with pytest.raises(BackendError) as caught:
        await moderate_with(settings_for(guard, api_key="lg-secret-key"), [ModerationInput.of_text("x")])
    assert not isinstance(caught.value, BackendTimeoutError)
    assert caught.value.status_code == 502
    # The client learns the backend and the upstream status: no internal URL, no upstream text.
    assert caught.value.message == "the llamaguard backend failed: upstream answered HTTP 503"
    body = str(caught.value.to_body())
    assert guard.url not in body and "127.0.0.1" not in body
    assert "bad token" not in body
    # The log has the details, with the key redacted.
    logged = backend_warnings(caplog)
    assert f"Llama Guard at {guard.url}/v1 answered HTTP 503" in logged
    assert "bad token" not in caplog.text  # the body is logged as its length and hash only
    assert "lg-secret-key" not in caplog.text


MARKER = "zq-moderated-marker-7731"


@pytest.mark.parametrize(
    "echo",
    [
        pytest.param(lambda text: json_reply({"error": f"cannot judge {text}"}, 400), id="error-body"),
        pytest.param(lambda text: Response(f"<pre>{text}</pre>", status_code=500), id="non-json-error"),
        pytest.param(
            lambda text: json_reply(chat_completion(f"I would rather not: {text}")), id="odd-verdict"
        ),
        pytest.param(lambda text: json_reply({"choices": [f"{text}"]}), id="malformed-choice"),
        pytest.param(lambda text: json_reply({"choices": [{"message": {"text": text}}]}), id="no-content"),
        pytest.param(lambda text: Response(f"{text} is not json", media_type="text/plain"), id="not-json"),
    ],
)
async def test_text_the_server_echoes_never_reaches_the_logs(
    guard: StandIn, caplog: pytest.LogCaptureFixture, echo: Any
):
    """A server that quotes the moderated text back, in an error or in an unexpected reply: no logger,
    at any level, writes it; the warning still names the server and what went wrong."""

    async def echoes(request: Recorded) -> Response:
        reply: Response = echo(request.body["messages"][0]["content"])
        return reply

    guard.reply = echoes
    caplog.set_level(logging.DEBUG)  # every logger, httpx's included
    with pytest.raises(BackendError) as caught:
        await moderate_with(settings_for(guard), [ModerationInput.of_text(f"please judge {MARKER}")])
    assert MARKER in str(guard.requests[0].body)  # the text was sent, and echoed back
    assert MARKER not in caplog.text
    assert MARKER not in str(caught.value.to_body())
    logged = backend_warnings(caplog)
    assert f"Llama Guard at {guard.url}/v1 " in logged
    assert "chars, sha256 " in logged


async def test_an_unreachable_server_is_a_backend_error(caplog: pytest.LogCaptureFixture):
    with serving(StandIn(reply=scripted_reply).app()) as server:
        closed_url = server.url
    with pytest.raises(BackendError) as caught:
        await moderate_with(
            Settings(llamaguard={"base_url": f"{closed_url}/v1"}), [ModerationInput.of_text("x")]
        )
    assert caught.value.message == "the llamaguard backend failed: upstream could not be reached"
    assert f"Llama Guard at {closed_url}/v1 could not be reached" in backend_warnings(caplog)


async def test_a_slow_server_is_a_timeout(guard: StandIn, caplog: pytest.LogCaptureFixture):
    async def slow(request: Recorded) -> Response:
        await asyncio.sleep(3)
        return await scripted_reply(request)

    guard.reply = slow
    with pytest.raises(BackendTimeoutError) as caught:
        await moderate_with(settings_for(guard, timeout_s=0.3), [ModerationInput.of_text("x")])
    assert caught.value.status_code == 504
    assert caught.value.message == "the llamaguard backend failed: upstream did not answer in time"
    assert f"Llama Guard at {guard.url}/v1 did not answer within 0.3 s" in backend_warnings(caplog)


async def test_one_failure_fails_the_batch_and_cancels_the_rest(guard: StandIn):
    async def one_breaks(request: Recorded) -> Response:
        if request.body["messages"][0]["content"] == "boom":
            return json_reply({"error": "boom"}, 500)
        await asyncio.sleep(0.5)
        return await scripted_reply(request)

    guard.reply = one_breaks
    with pytest.raises(BackendError, match="HTTP 500"):
        await moderate_with(
            settings_for(guard, concurrency=1),
            [ModerationInput.of_text("boom")] + [ModerationInput.of_text(f"t{i}") for i in range(5)],
        )
    # Requests queued behind the failure were never sent.
    assert len(guard.requests) <= 2
