"""Image parts: data: URLs, fetched URLs, and every way they can go wrong, through a real server."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from conftest import (
    ImageHost,
    RunningServer,
    assert_openai_error,
    assert_result_shape,
    data_url,
    free_port,
    image_part,
    png_bytes,
    running_server,
    send_bytes,
    text_part,
)
from seawall.settings import load_settings

FETCH_TIMEOUT_S = 1.0
MAX_IMAGE_BYTES = 64 * 1024


def moderate(http: httpx.Client, *parts: dict[str, Any]) -> httpx.Response:
    return http.post("/v1/seawall/moderations", json={"input": list(parts)})


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def with_png_chunk(png: bytes, chunk_type: bytes, body: bytes) -> bytes:
    """``png`` with the body of its ``chunk_type`` chunk replaced (CRC recomputed, so it still verifies)."""
    out, position = png[:8], 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        data = body if kind == chunk_type else png[position + 8 : position + 8 + length]
        out += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        position += 12 + length
    return out


def huge_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of large dimensions that compresses to a few kilobytes."""
    return encoded(Image.new("1", (width, height), 0), "PNG")


# ----------------------------------------------------------------- data: URLs


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_common_formats_are_scored(http: httpx.Client, fmt: str) -> None:
    image = Image.new("RGB", (40, 30), (10, 200, 90))
    response = moderate(http, image_part(data_url(encoded(image, fmt), f"image/{fmt.lower()}")))
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert_result_shape(result)
    assert result["category_applied_input_types"]["sexual"] == ["image"]
    assert result["flagged"] is False
    assert 0.0 <= result["category_scores"]["sexual"] < 0.5


def test_uncommon_modes_are_scored(http: httpx.Client) -> None:
    parts = [
        image_part(data_url(png_bytes((9, 9), 3, mode="P"))),
        image_part(data_url(png_bytes((9, 9), (1, 2, 3, 4), mode="RGBA"))),
        image_part(data_url(png_bytes((9, 9), 1, mode="1"))),
        image_part(data_url(png_bytes((1, 1), 65000, mode="I;16"))),
    ]
    response = moderate(http, *parts)
    assert response.status_code == 200, response.text


def test_every_image_counts_toward_one_result(http: httpx.Client) -> None:
    one = moderate(http, image_part(data_url(png_bytes())))
    three = moderate(http, *[image_part(data_url(png_bytes((8 + i, 8), (i * 60, 0, 0)))) for i in range(3)])
    assert one.status_code == three.status_code == 200
    assert len(three.json()["results"]) == 1


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png,not-base64",
        "data:text/plain;base64,aGVsbG8=",
        "data:;base64,aGVsbG8=",
        "data:image/png;base64",
        "data:image/png;base64,%%%notbase64%%%",
        "data:image/png;base64,aGVsbG8",  # bad padding
        "data:image/png;base64,",
    ],
    ids=["not-base64", "not-an-image-type", "no-type", "no-comma", "bad-alphabet", "bad-padding", "empty"],
)
def test_malformed_data_urls(http: httpx.Client, url: str) -> None:
    error = assert_openai_error(moderate(http, text_part("x"), image_part(url)), 400, "invalid_image")
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "data",
    [
        b"definitely not an image",
        png_bytes()[:8],  # the signature alone
        png_bytes((64, 64))[:60],  # truncated
        encoded(Image.new("RGB", (32, 32)), "JPEG")[:200],  # truncated JPEG
        with_png_chunk(png_bytes(), b"IDAT", b"\x00not zlib at all, but a valid CRC"),
        with_png_chunk(png_bytes((64, 64)), b"IDAT", zlib.compress(b"\x00\x01")),  # too little pixel data
    ],
    ids=["garbage", "signature-only", "truncated-png", "truncated-jpeg", "corrupt-idat", "short-idat"],
)
def test_broken_image_bytes_are_400_not_500(http: httpx.Client, data: bytes) -> None:
    error = assert_openai_error(moderate(http, image_part(data_url(data))), 400, "invalid_image")
    assert "decode" in error["message"] or "empty" in error["message"]


def test_too_many_pixels(http: httpx.Client) -> None:
    data = huge_png(8000, 6000)  # 48 Mpx > the default 40 Mpx
    assert len(data) < 100_000
    started = time.monotonic()
    error = assert_openai_error(moderate(http, image_part(data_url(data))), 413, "payload_too_large")
    assert "8000x6000" in error["message"]
    assert time.monotonic() - started < 5


def test_decompression_bomb_is_413_not_400(http: httpx.Client) -> None:
    """Past Pillow's own bomb limit (~179 Mpx) the answer is still 'too large', not 'broken'."""
    data = huge_png(20_000, 10_000)
    error = assert_openai_error(moderate(http, image_part(data_url(data))), 413, "payload_too_large")
    assert error["type"] == "invalid_request_error"


def test_inline_image_over_the_byte_limit(http: httpx.Client) -> None:
    limit = load_settings().images.max_bytes
    payload = data_url(b"\x89PNG" + b"\x00" * (limit + 1024))
    assert_openai_error(moderate(http, image_part(payload)), 413, "payload_too_large")


# ----------------------------------------------------------------- URLs on default settings


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    with ImageHost() as host:
        host.routes["/ok.png"] = send_bytes(png_bytes((24, 24), (200, 200, 0)))
        yield host


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "10.1.2.3",
        "192.168.0.10",
        "169.254.169.254",
        "0.0.0.0",
        "2130706433",
    ],
)
def test_private_addresses_are_refused_by_default(
    http: httpx.Client, image_host: ImageHost, host: str
) -> None:
    before = len(image_host.hits)
    started = time.monotonic()
    url = f"https://{host}:{image_host.port}/ok.png"
    error = assert_openai_error(moderate(http, image_part(url)), 400, "invalid_image")
    assert time.monotonic() - started < 3
    assert "non-public" in error["message"] or "resolved" in error["message"]
    assert len(image_host.hits) == before


def test_plain_http_is_refused_by_default(http: httpx.Client, image_host: ImageHost) -> None:
    before = len(image_host.hits)
    error = assert_openai_error(moderate(http, image_part(image_host.url("/ok.png"))), 400, "invalid_image")
    assert "https" in error["message"]
    assert len(image_host.hits) == before


def test_url_fetch_can_be_switched_off() -> None:
    with running_server(load_settings(images={"allow_url_fetch": False})) as server, server.http() as http:
        error = assert_openai_error(
            moderate(http, image_part("https://example.com/a.png")), 400, "invalid_image"
        )
        assert "data:" in error["message"]
        assert moderate(http, image_part(data_url(png_bytes()))).status_code == 200


# ----------------------------------------------------------------- URLs fetched from a loopback host


def slow(seconds: float) -> Any:
    def handler(request: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        send_bytes(png_bytes())(request)

    return handler


def trickle(request: BaseHTTPRequestHandler) -> None:
    """Headers at once, then a byte every 0.2 s: each read is quick, the whole is not."""
    request.send_response(200)
    request.send_header("Content-Type", "image/png")
    request.send_header("Content-Length", "100")
    request.end_headers()
    for _ in range(100):
        request.wfile.write(b"\x00")
        request.wfile.flush()
        time.sleep(0.2)


def chunked_forever(request: BaseHTTPRequestHandler) -> None:
    """No Content-Length: stream chunks until the client hangs up (or 1 MiB)."""
    request.send_response(200)
    request.send_header("Content-Type", "image/png")
    request.send_header("Transfer-Encoding", "chunked")
    request.end_headers()
    block = b"\x00" * 8192
    for _ in range(128):
        request.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
    request.wfile.write(b"0\r\n\r\n")


def lying_length(request: BaseHTTPRequestHandler) -> None:
    request.send_response(200)
    request.send_header("Content-Type", "image/png")
    request.send_header("Content-Length", str(50 * 1024 * 1024))
    request.end_headers()
    request.wfile.write(b"\x89PNG")


def redirect(request: BaseHTTPRequestHandler) -> None:
    request.send_response(302)
    request.send_header("Location", "/ok.png")
    request.send_header("Content-Length", "0")
    request.end_headers()


@pytest.fixture(scope="module")
def fetch_host() -> Iterator[ImageHost]:
    with ImageHost() as host:
        host.routes.update(
            {
                "/ok.png": send_bytes(png_bytes((24, 24), (200, 200, 0))),
                "/photo.jpg": send_bytes(
                    encoded(Image.new("RGB", (50, 40), (9, 9, 9)), "JPEG"), "image/jpeg"
                ),
                "/page.html": send_bytes(b"<html>not an image</html>", "text/html"),
                "/slow.png": slow(FETCH_TIMEOUT_S * 3),
                "/trickle.png": trickle,
                "/endless.png": chunked_forever,
                "/lying.png": lying_length,
                "/redirect.png": redirect,
                "/big.png": send_bytes(b"\x89PNG" + b"\x00" * (MAX_IMAGE_BYTES * 2)),
            }
        )
        yield host


@pytest.fixture(scope="module")
def fetch_server() -> Iterator[RunningServer]:
    settings = load_settings(
        images={
            "allow_private_hosts": True,
            "allow_http": True,
            "fetch_timeout_s": FETCH_TIMEOUT_S,
            "max_bytes": MAX_IMAGE_BYTES,
        }
    )
    with running_server(settings) as running:
        yield running


@pytest.fixture
def fetch_http(fetch_server: RunningServer) -> Iterator[httpx.Client]:
    with fetch_server.http() as http:
        yield http


def test_image_url_is_fetched_and_scored(fetch_server: RunningServer, fetch_host: ImageHost) -> None:
    parts = [text_part("what is this?"), image_part(fetch_host.url("/ok.png"))]
    with fetch_server.client() as client:
        response = client.moderations.create(model="omni-moderation-latest", input=parts)  # type: ignore[arg-type]
        inline = client.moderations.create(
            model="omni-moderation-latest",
            input=[text_part("what is this?"), image_part(data_url(png_bytes((24, 24), (200, 200, 0))))],  # type: ignore[list-item]
        )
    assert "/ok.png" in fetch_host.hits
    (result,) = response.results
    assert result.category_applied_input_types.sexual == ["text", "image"]
    assert result.category_applied_input_types.violence == ["text"]
    # The same picture inline and fetched scores the same.
    assert result.category_scores.sexual == pytest.approx(inline.results[0].category_scores.sexual, abs=1e-6)


async def test_image_urls_through_the_async_sdk(fetch_server: RunningServer, fetch_host: ImageHost) -> None:
    async with fetch_server.async_client() as client:
        response = await client.moderations.create(
            model="omni-moderation-latest",
            input=[image_part(fetch_host.url("/ok.png")), image_part(fetch_host.url("/photo.jpg"))],  # type: ignore[list-item]
        )
    assert len(response.results) == 1
    assert "image" in response.results[0].category_applied_input_types.sexual


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/missing.png", 400, "invalid_image"),
        ("/page.html", 400, "invalid_image"),
        ("/redirect.png", 400, "invalid_image"),
        ("/big.png", 413, "payload_too_large"),
        ("/lying.png", 413, "payload_too_large"),
        ("/endless.png", 413, "payload_too_large"),
    ],
)
def test_bad_image_urls(
    fetch_http: httpx.Client, fetch_host: ImageHost, path: str, status: int, code: str
) -> None:
    started = time.monotonic()
    assert_openai_error(moderate(fetch_http, image_part(fetch_host.url(path))), status, code)
    assert time.monotonic() - started < FETCH_TIMEOUT_S + 2


@pytest.mark.parametrize("path", ["/slow.png", "/trickle.png"])
def test_slow_image_hosts_time_out_within_the_limit(
    fetch_http: httpx.Client, fetch_host: ImageHost, path: str
) -> None:
    started = time.monotonic()
    error = assert_openai_error(moderate(fetch_http, image_part(fetch_host.url(path))), 400, "invalid_image")
    elapsed = time.monotonic() - started
    assert FETCH_TIMEOUT_S * 0.8 <= elapsed < FETCH_TIMEOUT_S + 2, elapsed
    assert "within" in error["message"] or "Timeout" in error["message"]


def test_unreachable_image_url_fails_fast(fetch_http: httpx.Client) -> None:
    url = f"http://127.0.0.1:{free_port()}/nothing-listens-here.png"
    started = time.monotonic()
    error = assert_openai_error(moderate(fetch_http, image_part(url)), 400, "invalid_image")
    assert time.monotonic() - started < FETCH_TIMEOUT_S + 1
    assert "could not be fetched" in error["message"]


def test_one_bad_image_fails_the_whole_request(fetch_http: httpx.Client, fetch_host: ImageHost) -> None:
    parts = [image_part(fetch_host.url("/ok.png")), image_part(fetch_host.url("/missing.png"))]
    assert_openai_error(moderate(fetch_http, *parts), 400, "invalid_image")


def test_allowed_hosts_list(fetch_host: ImageHost) -> None:
    settings = load_settings(
        images={"allow_private_hosts": True, "allow_http": True, "allowed_hosts": ["images.example.org"]}
    )
    with running_server(settings) as server, server.http() as http:
        before = len(fetch_host.hits)
        error = assert_openai_error(
            moderate(http, image_part(fetch_host.url("/ok.png"))), 400, "invalid_image"
        )
        assert "allowed" in error["message"]
        assert len(fetch_host.hits) == before
    settings = load_settings(
        images={"allow_private_hosts": True, "allow_http": True, "allowed_hosts": ["127.0.0.1"]}
    )
    with running_server(settings) as server, server.http() as http:
        assert moderate(http, image_part(fetch_host.url("/ok.png"))).status_code == 200


def test_sdk_gets_a_typed_error_for_a_timeout(fetch_server: RunningServer, fetch_host: ImageHost) -> None:
    with fetch_server.client() as client, pytest.raises(openai.BadRequestError) as caught:
        client.moderations.create(model="local", input=[image_part(fetch_host.url("/slow.png"))])  # type: ignore[list-item]
    assert caught.value.code == "invalid_image"
