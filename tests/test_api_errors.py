"""Bad requests get a clear 4xx in OpenAI's error shape: never a 500, never a hang."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from conftest import (
    RunningServer,
    assert_far_above,
    assert_openai_error,
    assert_result_shape,
    data_url,
    image_part,
    png_bytes,
    running_server,
    text_part,
    threat_score,
)
from seawall.settings import load_settings

# ----------------------------------------------------------------- malformed bodies


def test_empty_body(http: httpx.Client) -> None:
    response = http.post("/v1/moderations", content=b"", headers={"content-type": "application/json"})
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert "empty" in error["message"]


def test_malformed_json(http: httpx.Client) -> None:
    response = http.post(
        "/v1/moderations", content=b'{"input": "hi"', headers={"content-type": "application/json"}
    )
    error = assert_openai_error(response, 400)
    assert "JSON" in error["message"]


def test_non_utf8_body(http: httpx.Client) -> None:
    body = b'{"input": "caf\xe9 \xff\xfe"}'
    response = http.post("/v1/moderations", content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(response, 400)
    assert "not valid UTF-8 (byte 0xe9 at offset 14)" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain;charset=UTF-8"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"origin": "https://elsewhere.example"},  # a browser posting a typeless body
    ],
)
def test_bodies_a_web_page_could_post_from_another_site_are_refused(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    """A page on any site can make its visitor's browser post these to a loopback seawall without
    asking first (CORS simple requests); a JSON API never needs them."""
    body = json.dumps({"input": "hello"}).encode()
    for route in ("/v1/moderations", "/v1/seawall/moderations"):
        response = http.post(route, content=body, headers=headers)
        error = assert_openai_error(response, 415, "unsupported_media_type")
        assert "application/json" in error["message"]
    # the same body declared as JSON, or sent by a program that declares nothing, is read
    assert http.post("/v1/moderations", content=body, headers={"content-type": "application/json"}).is_success
    assert http.post("/v1/moderations", content=body).is_success


def test_lone_surrogate_escape_is_rejected_cleanly(http: httpx.Client) -> None:
    response = http.post(
        "/v1/moderations", content=b'{"input": "\\ud800"}', headers={"content-type": "application/json"}
    )
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert_openai_error(response, 400)


def test_deeply_nested_json(http: httpx.Client) -> None:
    body = b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert_openai_error(http.post("/v1/moderations", content=body), 400)


def test_body_is_a_json_list(http: httpx.Client) -> None:
    response = http.post("/v1/moderations", json=[{"input": "hi"}])
    error = assert_openai_error(response, 400)
    assert "object" in error["message"]


@pytest.mark.parametrize("body", [{}, {"model": "omni-moderation-latest"}, {"inputs": "typo"}])
def test_missing_input(http: httpx.Client, body: dict[str, Any]) -> None:
    error = assert_openai_error(http.post("/v1/moderations", json=body), 400)
    assert error["param"] == "input"


def test_empty_list(http: httpx.Client) -> None:
    error = assert_openai_error(http.post("/v1/moderations", json={"input": []}), 400)
    assert error["param"] == "input"


@pytest.mark.parametrize(
    "value",
    [
        42,
        3.5,
        True,
        None,
        {"text": "a dict, not a list"},
        [1, 2, 3],
        ["a string", {"type": "text", "text": "and a part"}],
        ["a string", None],
        [["nested"]],
    ],
    ids=["int", "float", "bool", "null", "dict", "numbers", "mixed", "string-and-null", "nested-list"],
)
def test_input_of_wrong_type(http: httpx.Client, value: Any) -> None:
    error = assert_openai_error(http.post("/v1/moderations", json={"input": value}), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "input"


def test_model_of_wrong_type(http: httpx.Client) -> None:
    error = assert_openai_error(http.post("/v1/moderations", json={"input": "hi", "model": 7}), 400)
    assert error["param"] == "model"


@pytest.mark.parametrize(
    ("parts", "param"),
    [
        ([{"type": "video", "video": {"url": "https://example.com/v.mp4"}}], "input[0].type"),
        ([{"text": "no type"}], "input[0].type"),
        ([text_part("ok"), {"type": "audio"}], "input[1].type"),
        ([{"type": "text"}], "input[0].text"),
        ([{"type": "text", "text": 5}], "input[0].text"),
        ([{"type": "image_url"}], "input[0].image_url.url"),
        ([{"type": "image_url", "image_url": {}}], "input[0].image_url.url"),
        ([{"type": "image_url", "image_url": {"url": ""}}], "input[0].image_url.url"),
        ([{"type": "image_url", "image_url": {"url": 5}}], "input[0].image_url.url"),
        ([{"type": "image_url", "image_url": "https://example.com/a.png"}], "input[0].image_url.url"),
        ([image_part("ftp://example.com/a.png")], "input[0].image_url.url"),
        ([image_part("file:///etc/passwd")], "input[0].image_url.url"),
        ([image_part("/relative/path.png")], "input[0].image_url.url"),
    ],
)
def test_bad_content_parts(http: httpx.Client, parts: list[Any], param: str) -> None:
    error = assert_openai_error(http.post("/v1/moderations", json={"input": parts}), 400)
    assert error["param"] == param


def test_sdk_surfaces_bad_input_as_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.moderations.create(model="omni-moderation-latest", input=[{"type": "video"}])  # type: ignore[list-item]
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "input[0].type"


# ----------------------------------------------------------------- models


@pytest.mark.parametrize("model", ["gpt-4o", "omni-moderation-2099-01-01", "LOCAL", ""])
def test_unknown_model(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.moderations.create(model=model, input="hello")
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize("model", ["openai", "cascade"])
def test_backend_this_server_is_not_set_up_for(model: str) -> None:
    """Asking for a registered backend that lacks its configuration is the client's 404, not a 500."""
    settings = load_settings(openai={"api_key": None, "base_url": "http://127.0.0.1:9/v1", "max_retries": 0})
    with running_server(settings) as server, server.http() as http:
        response = http.post("/v1/moderations", json={"input": "hello", "model": model})
    assert response.status_code in (404, 502), response.text
    error = assert_openai_error(response, response.status_code)
    if response.status_code == 404:
        assert error["code"] == "model_not_found"
        assert error["param"] == "model"


def test_unknown_model_on_the_seawall_route(http: httpx.Client) -> None:
    response = http.post("/v1/seawall/moderations", json={"input": "x", "model": "nope"})
    assert_openai_error(response, 404, "model_not_found")


# ----------------------------------------------------------------- limits


def test_ten_megabyte_string(http: httpx.Client) -> None:
    started = time.monotonic()
    response = http.post("/v1/moderations", json={"input": "a" * (10 * 1024 * 1024)})
    error = assert_openai_error(response, 413, "payload_too_large")
    assert error["param"] == "input"
    assert time.monotonic() - started < 10


def test_text_part_over_the_character_limit(http: httpx.Client) -> None:
    limit = load_settings().moderation.max_chars
    response = http.post("/v1/moderations", json={"input": [text_part("b" * (limit + 1))]})
    error = assert_openai_error(response, 413, "payload_too_large")
    assert error["param"] == "input[0].text"


def test_one_long_string_in_a_list_names_its_position(http: httpx.Client) -> None:
    limit = load_settings().moderation.max_chars
    response = http.post("/v1/moderations", json={"input": ["ok", "c" * (limit + 1)]})
    error = assert_openai_error(response, 413)
    assert error["param"] == "input[1]"


def test_text_at_the_character_limit_is_accepted(server: RunningServer) -> None:
    limit = load_settings().moderation.max_chars
    # 40,000 words read window by window: seconds on 2 idle cores, past the usual 30 s client timeout on
    # busy ones (seen with three other jobs on the machine); the timeout only bounds a hang here.
    with server.http(timeout=180) as http:
        response = http.post("/v1/moderations", json={"input": "word " * (limit // 5)})
    assert response.status_code == 200, response.text


def test_ten_thousand_items_over_the_default_limit(http: httpx.Client) -> None:
    response = http.post("/v1/moderations", json={"input": [f"item {i}" for i in range(10_000)]})
    error = assert_openai_error(response, 413, "payload_too_large")
    assert error["param"] == "input"
    assert "2048" in error["message"]


def test_body_over_the_default_limit(http: httpx.Client) -> None:
    limit = load_settings().server.max_body_bytes
    body = json.dumps({"input": "x" * (limit + 10)}).encode()
    response = http.post("/v1/moderations", content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, 413, "payload_too_large")


@pytest.fixture(scope="module")
def small_body_server() -> Iterator[RunningServer]:
    with running_server(load_settings(server={"max_body_bytes": 4096})) as running:
        yield running


def test_body_over_configured_limit(small_body_server: RunningServer) -> None:
    with small_body_server.http() as http:
        ok = http.post("/v1/moderations", json={"input": "x" * 3000})
        assert ok.status_code == 200
        too_big = http.post("/v1/moderations", json={"input": "x" * 5000})
    error = assert_openai_error(too_big, 413, "payload_too_large")
    assert "4096" in error["message"]


def test_chunked_body_over_configured_limit(small_body_server: RunningServer) -> None:
    """No Content-Length to trust: the limit holds while the body streams in."""

    def chunks() -> Iterator[bytes]:
        yield b'{"input": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    with small_body_server.http() as http:
        response = http.post(
            "/v1/moderations", content=chunks(), headers={"content-type": "application/json"}
        )
    assert "content-length" not in response.request.headers
    assert_openai_error(response, 413, "payload_too_large")


def test_body_limit_through_the_sdk(small_body_server: RunningServer) -> None:
    with small_body_server.client() as client, pytest.raises(openai.APIStatusError) as caught:
        client.moderations.create(model="omni-moderation-latest", input=["z" * 1000] * 5)
    assert caught.value.status_code == 413
    assert caught.value.code == "payload_too_large"


@pytest.fixture(scope="module")
def big_batch_server() -> Iterator[RunningServer]:
    with running_server(load_settings(moderation={"max_items": 10_000})) as running:
        yield running


def test_ten_thousand_items_when_settings_allow(big_batch_server: RunningServer) -> None:
    texts = [f"message number {i}: see you at the park" for i in range(10_000)]
    texts[1234] = "I am going to kill you, I know where you live and I will hurt your family"
    # How fast is bench/moderation_api.py's job; the client's timeout only bounds a hang here.
    with big_batch_server.http(timeout=120) as http:
        response = http.post("/v1/moderations", json={"model": "omni-moderation-latest", "input": texts})
    assert response.status_code == 200, response.text[:500]
    results = response.json()["results"]
    assert len(results) == 10_000
    assert_far_above(threat_score(results[1234]), threat_score(results[1233]))
    assert sum(result["flagged"] for result in results) < 100
    assert_result_shape(results[0])
    assert_result_shape(results[9999])


# ----------------------------------------------------------------- routes and methods


@pytest.mark.parametrize("path", ["/v1/nothing-here", "/", "/v1/moderation", "/v2/moderations"])
def test_unknown_route(http: httpx.Client, path: str) -> None:
    error = assert_openai_error(http.post(path, json={"input": "x"}), 404)
    assert error["code"] == "not_found"
    assert assert_openai_error(http.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/moderations"),
        ("PUT", "/v1/moderations"),
        ("DELETE", "/v1/seawall/moderations"),
        ("POST", "/healthz"),
    ],
)
def test_wrong_method(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path)
    error = assert_openai_error(response, 405)
    assert error["code"] == "method_not_allowed"
    assert response.headers["allow"] in ("POST", "GET")


def test_health_and_readiness(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


# ----------------------------------------------------------------- API keys


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[RunningServer]:
    with running_server(load_settings(server={"api_keys": ["sk-right-key", "sk-second-key"]})) as running:
        yield running


def test_missing_key(keyed_server: RunningServer) -> None:
    with keyed_server.http() as http:
        response = http.post("/v1/moderations", json={"input": "hello"})
    error = assert_openai_error(response, 401, "invalid_api_key")
    assert error["type"] == "authentication_error"


@pytest.mark.parametrize(
    "header",
    ["Basic c2stcmlnaHQta2V5", "Bearer", "bearer sk-wrong", "sk-right-key", "Bearer sk-right-key-not"],
)
def test_malformed_or_wrong_authorization_header(keyed_server: RunningServer, header: str) -> None:
    with keyed_server.http() as http:
        response = http.post("/v1/moderations", json={"input": "hello"}, headers={"authorization": header})
    assert_openai_error(response, 401)


def test_wrong_key_through_the_sdk(keyed_server: RunningServer) -> None:
    with (
        keyed_server.client(api_key="sk-wrong") as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        client.moderations.create(model="omni-moderation-latest", input="hello")
    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"


def test_key_is_checked_before_the_body_is_parsed(keyed_server: RunningServer) -> None:
    with keyed_server.http() as http:
        response = http.post("/v1/moderations", content=b"not json")
    assert_openai_error(response, 401)


@pytest.mark.parametrize("key", ["sk-right-key", "sk-second-key"])
def test_right_key_through_the_sdk(keyed_server: RunningServer, key: str) -> None:
    with keyed_server.client(api_key=key) as client:
        response = client.moderations.create(model="omni-moderation-latest", input="hello")
    assert len(response.results) == 1
    assert response.id.startswith("modr-")


async def test_right_key_through_the_async_sdk(keyed_server: RunningServer) -> None:
    async with keyed_server.async_client(api_key="sk-right-key") as client:
        body: Any = await client.post("/seawall/moderations", body={"input": ["a", "b"]}, cast_to=object)
    assert len(body["results"]) == 2


def test_health_needs_no_key(keyed_server: RunningServer) -> None:
    with keyed_server.http() as http:
        assert http.get("/healthz").status_code == 200


# ----------------------------------------------------------------- images (details in test_images.py)


def test_broken_image_bytes(http: httpx.Client) -> None:
    parts = [text_part("look"), image_part(data_url(b"this is not an image at all"))]
    error = assert_openai_error(http.post("/v1/moderations", json={"input": parts}), 400, "invalid_image")
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "input[1].image_url.url"  # the part that failed, as OpenAI names it


def test_bad_base64_names_its_image_part(http: httpx.Client) -> None:
    parts = [image_part(data_url(png_bytes())), text_part("look"), image_part("data:image/png;base64,@@@")]
    error = assert_openai_error(http.post("/v1/moderations", json={"input": parts}), 400, "invalid_image")
    assert error["param"] == "input[2].image_url.url"


def test_sdk_surfaces_image_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.moderations.create(
            model="omni-moderation-latest", input=[image_part(data_url(png_bytes()[:30]))]
        )
    assert caught.value.code == "invalid_image"
