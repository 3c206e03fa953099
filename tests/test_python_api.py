"""The Python API: seawall.moderate / seawall.amoderate without a server."""

from __future__ import annotations

import asyncio

import pytest

import seawall
from conftest import (
    BENIGN_KILL,
    BENIGN_QUESTION,
    INJECTION,
    THREAT,
    assert_far_above,
    data_url,
    image_part,
    png_bytes,
    text_part,
)
from seawall import (
    CATEGORIES,
    EXTRA_LABELS,
    ConfigurationError,
    InvalidRequestError,
    ModelNotFoundError,
    ModerationResult,
    ModerationService,
    PayloadTooLargeError,
    Settings,
    load_settings,
)


def threat_score(result: ModerationResult) -> float:
    scores = result.category_scores
    return max(scores["harassment/threatening"], scores["violence"], scores["harassment"])


def assert_complete(result: ModerationResult) -> None:
    assert set(result.category_scores) == set(CATEGORIES)
    assert set(result.categories) == set(CATEGORIES)
    assert set(result.extra_scores) == set(EXTRA_LABELS)
    for score in [*result.category_scores.values(), *result.extra_scores.values()]:
        assert 0.0 <= score <= 1.0
    assert result.flagged is any(result.categories.values())


def test_moderate_a_string() -> None:
    results = seawall.moderate(THREAT)
    assert len(results) == 1
    (result,) = results
    assert isinstance(result, ModerationResult)
    assert_complete(result)
    assert result.flagged is True
    assert result.backend == "local"
    assert all(result.applied_input_types[name] == ["text"] for name in CATEGORIES)


def test_moderate_a_list_keeps_order() -> None:
    results = seawall.moderate([BENIGN_KILL, THREAT, INJECTION, BENIGN_QUESTION])
    assert len(results) == 4
    for result in results:
        assert_complete(result)
    benign, threat, injection, question = results
    assert_far_above(threat_score(threat), threat_score(benign))
    assert not benign.flagged
    assert_far_above(injection.extra_scores["prompt_injection"], question.extra_scores["prompt_injection"])


def test_moderate_with_openai_model_names_and_backend_name() -> None:
    by_model = {
        model: seawall.moderate(THREAT, model=model)[0] for model in ("omni-moderation-latest", "local")
    }
    assert by_model["omni-moderation-latest"].category_scores == pytest.approx(
        by_model["local"].category_scores
    )


def test_moderate_content_parts_with_an_image() -> None:
    (result,) = seawall.moderate([text_part("my cat"), image_part(data_url(png_bytes()))])
    assert_complete(result)
    assert "image" in result.applied_input_types["sexual"]
    assert "image" in result.not_assessed["violence"]
    body = result.to_seawall()
    assert "image" not in body["category_applied_input_types"]["violence"]
    assert body["not_assessed"]["self-harm"] == ["image"]


def test_results_serialise_to_openais_shape() -> None:
    (result,) = seawall.moderate("hello")
    body = result.to_openai()
    assert set(body) == {"flagged", "categories", "category_scores", "category_applied_input_types"}
    extended = result.to_seawall()
    assert set(extended) == set(body) | {"extra_scores", "extra_flags", "not_assessed", "backend", "notes"}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (5, InvalidRequestError),
        ([], InvalidRequestError),
        ([1, 2], InvalidRequestError),
        ([{"type": "video"}], InvalidRequestError),
        ("x" * 200_001, PayloadTooLargeError),
    ],
)
def test_bad_input_raises_seawall_errors(value: object, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        seawall.moderate(value)
    assert isinstance(caught.value, seawall.SeawallError)
    assert 400 <= caught.value.status_code < 500


def test_unknown_model_raises() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        seawall.moderate("hi", model="gpt-4o")
    assert caught.value.status_code == 404
    assert caught.value.param == "model"


async def test_amoderate() -> None:
    results = await seawall.amoderate([THREAT, BENIGN_KILL])
    assert len(results) == 2
    assert_far_above(threat_score(results[0]), threat_score(results[1]))
    # Concurrent calls in one loop are fine.
    many = await asyncio.gather(*(seawall.amoderate(f"message {i}") for i in range(8)))
    assert [len(r) for r in many] == [1] * 8


async def test_moderate_inside_a_running_loop_raises() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        seawall.moderate("hello")
    assert "amoderate" in caught.value.message
    # The documented way out: await amoderate, or run the sync call off the loop's thread.
    (result,) = await asyncio.to_thread(seawall.moderate, "hello")
    assert_complete(result)


def test_custom_thresholds_change_flags() -> None:
    (default,) = seawall.moderate("have a nice day")
    assert default.flagged is False
    everything = Settings(moderation={"thresholds": dict.fromkeys(CATEGORIES, 0.0)})
    (strict,) = seawall.moderate("have a nice day", settings=everything)
    assert strict.flagged is True
    assert all(strict.categories.values())
    assert strict.category_scores == pytest.approx(default.category_scores)

    # Thresholds just above / just below each score turn every flag off / the top one on.
    (threat,) = seawall.moderate(THREAT)
    scores = threat.category_scores
    assert max(scores.values()) < 0.999, "pick a less extreme example"
    above = {name: score + 1e-3 for name, score in scores.items()}
    (lenient,) = seawall.moderate(THREAT, settings=Settings(moderation={"thresholds": above}))
    assert lenient.flagged is False
    top = max(scores, key=lambda name: scores[name])
    below = {**above, top: scores[top] - 1e-3}
    (strict_top,) = seawall.moderate(THREAT, settings=Settings(moderation={"thresholds": below}))
    assert {name for name, on in strict_top.categories.items() if on} == {top}


def test_thresholds_from_load_settings_apply_to_one_category() -> None:
    (default,) = seawall.moderate(BENIGN_QUESTION)
    settings = load_settings(moderation={"thresholds": {"violence": 0.0}})
    (result,) = seawall.moderate(BENIGN_QUESTION, settings=settings)
    assert result.categories["violence"] is True
    assert {k: v for k, v in result.categories.items() if k != "violence"} == {
        k: v for k, v in default.categories.items() if k != "violence"
    }


@pytest.mark.parametrize("thresholds", [{"not-a-category": 0.5}, {"violence": 1.5}, {"violence": -0.1}])
def test_invalid_thresholds_are_rejected(thresholds: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        load_settings(moderation={"thresholds": thresholds})


async def test_service_can_be_reused_and_closed() -> None:
    service = ModerationService(load_settings())
    try:
        first = await service.moderate(["one", THREAT], "omni-moderation-latest")
        second = await service.moderate(THREAT)
    finally:
        await service.aclose()
    assert first.model == "omni-moderation-latest"
    assert second.model == "local"
    assert first.results[1].category_scores == pytest.approx(second.results[0].category_scores, abs=1e-5)


def test_public_api_is_exported() -> None:
    for name in seawall.__all__:
        assert hasattr(seawall, name), name
    assert isinstance(seawall.__version__, str)
