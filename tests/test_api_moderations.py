"""Wire compatibility of /v1/moderations and /v1/seawall/moderations through the official OpenAI SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from conftest import (
    BENIGN_KILL,
    BENIGN_QUESTION,
    INJECTION,
    MODEL_NAMES,
    THREAT,
    RunningServer,
    assert_far_above,
    assert_result_shape,
    data_url,
    image_part,
    png_bytes,
    text_part,
    threat_score,
)
from seawall.categories import CATEGORIES, EXTRA_LABELS, IMAGE_CATEGORIES

#: Image categories the embedded model judges; the other image categories are not assessed.
JUDGED_ON_IMAGES = {"sexual"}


def wire(response: Any) -> dict[str, Any]:
    """The SDK's typed response as the JSON it was parsed from (slash-separated category names)."""
    dumped: dict[str, Any] = response.model_dump(by_alias=True)
    return dumped


def seawall_moderate(client: openai.OpenAI, **body: Any) -> dict[str, Any]:
    """POST /v1/seawall/moderations through the SDK's own HTTP machinery."""
    answer: dict[str, Any] = client.post("/seawall/moderations", body=body, cast_to=object)
    return answer


# ----------------------------------------------------------------- text


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_single_string(client: openai.OpenAI, model: str) -> None:
    response = client.moderations.create(model=model, input=THREAT)
    body = wire(response)
    assert body["id"].startswith("modr-")
    assert body["model"] == model
    assert len(body["results"]) == 1
    result = body["results"][0]
    assert_result_shape(result)
    for name in CATEGORIES:
        assert result["category_applied_input_types"][name] == ["text"]
    # The SDK's typed view agrees with the raw one.
    typed = response.results[0]
    assert typed.flagged is result["flagged"]
    assert typed.category_scores.harassment_threatening == result["category_scores"]["harassment/threatening"]


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_list_of_strings_gives_one_result_each_in_order(client: openai.OpenAI, model: str) -> None:
    texts = [THREAT, BENIGN_KILL, "have a lovely day", THREAT]
    body = wire(client.moderations.create(model=model, input=texts))
    assert body["model"] == model
    assert len(body["results"]) == len(texts)
    for result in body["results"]:
        assert_result_shape(result)
    first, benign, lovely, last = body["results"]
    assert first["category_scores"] == pytest.approx(last["category_scores"], abs=1e-5)
    assert_far_above(threat_score(first), threat_score(benign))
    assert_far_above(threat_score(first), threat_score(lovely))


def test_an_omitted_or_null_model_is_openai_default_on_the_default_backend(server: RunningServer) -> None:
    with server.http() as http:
        named = http.post("/v1/moderations", json={"input": THREAT, "model": "omni-moderation-latest"})
        omitted = http.post("/v1/moderations", json={"input": THREAT})
        null = http.post("/v1/moderations", json={"input": THREAT, "model": None})
    for response in (omitted, null):
        assert response.status_code == 200
        body = response.json()
        assert body["model"] == "omni-moderation-latest"  # as OpenAI answers a request that names none
        assert_result_shape(body["results"][0])
        scores = body["results"][0]["category_scores"]
        assert scores == pytest.approx(named.json()["results"][0]["category_scores"], abs=1e-5)


def test_ids_are_unique(client: openai.OpenAI) -> None:
    ids = {client.moderations.create(model="omni-moderation-latest", input="hi").id for _ in range(3)}
    assert len(ids) == 3


def test_threat_scores_far_above_benign_use_of_the_same_verb(client: openai.OpenAI) -> None:
    threat, benign = wire(client.moderations.create(model="local", input=[THREAT, BENIGN_KILL]))["results"]
    assert_far_above(threat_score(threat), threat_score(benign))
    assert threat["flagged"] is True
    assert benign["flagged"] is False


def test_clearly_benign_text_is_not_flagged(client: openai.OpenAI) -> None:
    texts = ["Thank you for your help with my homework!", "The cat is sleeping on the sofa."]
    for result in wire(client.moderations.create(model="omni-moderation-latest", input=texts))["results"]:
        assert result["flagged"] is False
        assert max(result["category_scores"].values()) < 0.5


def test_empty_string_is_valid_input(client: openai.OpenAI) -> None:
    body = wire(client.moderations.create(model="omni-moderation-latest", input=""))
    assert len(body["results"]) == 1
    assert_result_shape(body["results"][0])
    assert body["results"][0]["flagged"] is False


def test_unicode_text_round_trips(client: openai.OpenAI) -> None:
    texts = ["héllo wörld 👋", "こんにちは", "k\u200bi\u200bl\u200bl", "mixed \U000e0041\U000e0042 tags"]
    body = wire(client.moderations.create(model="omni-moderation-latest", input=texts))
    assert len(body["results"]) == len(texts)
    for result in body["results"]:
        assert_result_shape(result)


# ----------------------------------------------------------------- images


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_text_and_image_parts_are_one_item(client: openai.OpenAI, model: str) -> None:
    parts = [text_part("a picture of my garden"), image_part(data_url(png_bytes((32, 24))))]
    body = wire(client.moderations.create(model=model, input=parts))
    assert body["model"] == model
    assert len(body["results"]) == 1
    result = body["results"][0]
    assert_result_shape(result)
    applied = result["category_applied_input_types"]
    for name in CATEGORIES:
        assert "text" in applied[name]
    # The embedded image model judges "sexual" only; the other image categories are not
    # assessed for the image, so they must not claim to be.
    assert "image" in applied["sexual"]
    for name in CATEGORIES:
        if name not in JUDGED_ON_IMAGES:
            assert "image" not in applied[name], name
    assert result["category_scores"]["sexual"] < 0.5  # a plain blue square


def test_image_only_input(client: openai.OpenAI) -> None:
    body = wire(
        client.moderations.create(model="omni-moderation-latest", input=[image_part(data_url(png_bytes()))])
    )
    result = body["results"][0]
    assert_result_shape(result)
    assert result["category_applied_input_types"]["sexual"] == ["image"]
    assert result["category_applied_input_types"]["harassment"] == []
    assert result["category_applied_input_types"]["violence"] == []


def test_several_images_and_formats_in_one_item(client: openai.OpenAI) -> None:
    import io

    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("RGB", (20, 20), (250, 250, 250)).save(jpeg, format="JPEG")
    parts = [
        image_part(data_url(png_bytes((10, 10), 128, mode="L"))),
        text_part("two pictures"),
        image_part(data_url(jpeg.getvalue(), "image/jpeg")),
        image_part(data_url(png_bytes((8, 8), (0, 0, 0, 0), mode="RGBA"))),
    ]
    body = wire(client.moderations.create(model="omni-moderation-latest", input=parts))
    assert len(body["results"]) == 1
    assert_result_shape(body["results"][0])


def test_seawall_route_lists_unassessed_image_categories(client: openai.OpenAI) -> None:
    parts = [text_part("my holiday photo"), image_part(data_url(png_bytes()))]
    body = seawall_moderate(client, model="omni-moderation-latest", input=parts)
    assert body["id"].startswith("modr-")
    (result,) = body["results"]
    assert_result_shape(result)
    not_assessed = result["not_assessed"]
    assert set(not_assessed) == set(IMAGE_CATEGORIES) - JUDGED_ON_IMAGES
    assert all(types == ["image"] for types in not_assessed.values())
    assert result["backend"] == "local"
    assert isinstance(result["notes"], list)


def test_seawall_route_text_only_has_nothing_unassessed(client: openai.OpenAI) -> None:
    body = seawall_moderate(client, model="local", input=["plain text"])
    assert body["model"] == "local"
    assert body["results"][0]["not_assessed"] == {}


# ----------------------------------------------------------------- seawall's extras


def test_seawall_route_has_extra_scores(client: openai.OpenAI) -> None:
    body = seawall_moderate(client, model="omni-moderation-latest", input=[INJECTION, BENIGN_QUESTION])
    assert len(body["results"]) == 2
    injection, question = body["results"]
    for result in body["results"]:
        assert_result_shape(result)
        assert set(result["extra_scores"]) == set(EXTRA_LABELS)
        for score in result["extra_scores"].values():
            assert 0.0 <= score <= 1.0
    extra = [result["extra_scores"]["prompt_injection"] for result in (injection, question)]
    assert_far_above(*extra)


def test_openai_route_has_exactly_openais_fields(client: openai.OpenAI) -> None:
    raw = client.moderations.with_raw_response.create(model="omni-moderation-latest", input="hello")
    body = raw.http_response.json()
    assert set(body) == {"id", "model", "results"}
    assert set(body["results"][0]) == {
        "flagged",
        "categories",
        "category_scores",
        "category_applied_input_types",
    }
    assert raw.http_response.headers["content-type"].startswith("application/json")


# ----------------------------------------------------------------- async and concurrency


async def test_async_client(server: RunningServer) -> None:
    async with server.async_client() as client:
        response = await client.moderations.create(
            model="text-moderation-stable", input=[THREAT, BENIGN_KILL]
        )
    body = wire(response)
    assert body["model"] == "text-moderation-stable"
    assert len(body["results"]) == 2
    assert_far_above(threat_score(body["results"][0]), threat_score(body["results"][1]))


async def test_concurrent_requests_match_sequential_results(server: RunningServer) -> None:
    texts = [
        f"{text} #{i}"
        for i, text in enumerate(
            [THREAT, BENIGN_KILL, INJECTION, BENIGN_QUESTION, "I love sunny afternoons"] * 10
        )
    ]
    async with server.async_client() as client:
        sequential = [
            wire(await client.moderations.create(model="omni-moderation-latest", input=text))
            for text in texts
        ]
        parallel = await asyncio.gather(
            *(client.moderations.create(model="omni-moderation-latest", input=text) for text in texts)
        )
        batch = wire(await client.moderations.create(model="omni-moderation-latest", input=texts))
    assert len(parallel) == 50
    for index, (alone, together) in enumerate(zip(sequential, map(wire, parallel), strict=True)):
        assert together["results"][0]["category_scores"] == pytest.approx(
            alone["results"][0]["category_scores"], abs=1e-4
        ), texts[index]
        assert together["results"][0]["flagged"] == alone["results"][0]["flagged"]
        assert batch["results"][index]["category_scores"] == pytest.approx(
            alone["results"][0]["category_scores"], abs=1e-4
        )
