"""Image parts: data: URLs, fetched URLs, and every way they can go wrong, through a real server."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import os
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from conftest import (
    Handler,
    ImageHost,
    RunningServer,
    assert_openai_error,
    assert_result_shape,
    data_url,
    image_part,
    png_bytes,
    refusing_port,
    running_server,
    send_bytes,
    text_part,
)
from seawall.errors import ImageError, PayloadTooLargeError
from seawall.images import ImageLoader, is_public
from seawall.model.classifier import shared_classifier
from seawall.settings import ImageSettings, load_settings

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


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "MPO"])
def test_common_formats_are_scored(http: httpx.Client, fmt: str) -> None:
    image = Image.new("RGB", (40, 30), (10, 200, 90))
    if fmt == "MPO":  # a camera JPEG that carries a second picture: Pillow calls it MPO
        data = io.BytesIO()
        image.save(data, format="MPO", save_all=True, append_images=[Image.new("RGB", (40, 30))])
        payload = data.getvalue()
    else:
        payload = encoded(image, fmt)
    response = moderate(http, image_part(data_url(payload, f"image/{fmt.lower()}")))
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert_result_shape(result)
    assert result["category_applied_input_types"]["sexual"] == ["image"]
    assert result["flagged"] is False
    assert 0.0 <= result["category_scores"]["sexual"] < 0.5


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM", "TGA", "PCX"])
def test_other_formats_are_refused(http: httpx.Client, fmt: str) -> None:
    """Only PNG, JPEG, GIF and WebP: whatever the data URL claims, Pillow's other decoders are not tried."""
    data = encoded(Image.new("RGB", (40, 30), (10, 200, 90)), fmt)
    error = assert_openai_error(moderate(http, image_part(data_url(data))), 400, "invalid_image")
    assert "PNG, JPEG, GIF and WebP" in error["message"]


def test_decode_errors_do_not_leak_internals(http: httpx.Client) -> None:
    error = assert_openai_error(moderate(http, image_part(data_url(b"not an image"))), 400, "invalid_image")
    assert "BytesIO" not in error["message"] and "0x" not in error["message"]


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
        "0x7f.1",
        "127.1",
        "100.64.0.1",
        "224.0.0.1",
        "[fd00::1]",
        "[fe80::1]",
        "[ff02::1]",
        # IPv6 addresses that carry a private IPv4 one: mapped, compatible, 6to4, Teredo, NAT64.
        "[::ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[2002:7f00:1::1]",
        "[2002:a9fe:a9fe::1]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b:1::a00:1]",
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
    assert "could not be fetched" in error["message"] and "within" in error["message"]


def test_unreachable_image_url_fails_fast(fetch_http: httpx.Client) -> None:
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/nothing-listens-here.png"
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


# ----------------------------------------------------------------- malformed URLs are 400, never 500


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com:99999/a.png",
        "https://example.com:0/a.png",
        "https://example.com:abc/a.png",
        "https://[::1/a.png",
        "https://" + "a" * 64 + ".example.com/a.png",
        "https://" + "a." * 130 + "com/a.png",
        "https://images..example.com/a.png",
        "https://example.com/a\x7f.png",
        "https://:443/a.png",
        "https://example.com/" + "a" * 9000 + ".png",
    ],
    ids=[
        "port-too-big",
        "port-zero",
        "port-not-a-number",
        "unclosed-bracket",
        "label-over-63",
        "name-over-253",
        "empty-label",
        "control-character",
        "no-host",
        "over-8192-chars",
    ],
)
def test_malformed_image_urls_are_400(http: httpx.Client, url: str) -> None:
    error = assert_openai_error(moderate(http, text_part("x"), image_part(url)), 400, "invalid_image")
    assert error["param"] == "input[1].image_url.url"


async def test_malformed_urls_built_by_hand_are_400_too() -> None:
    """Parts built without the parser (the Python API) get the same checks from the loader."""
    from seawall.inputs import ImagePart

    loader = ImageLoader(ImageSettings())
    try:
        for url in ["https://example.com:99999/a.png", "https://" + "b" * 70 + ".com/a.png"]:
            with pytest.raises(ImageError):
                await loader.load(ImagePart(url=url))
    finally:
        await loader.aclose()


# ----------------------------------------------------------------- per-request limits


def noise_png(seed: int, size: int = 120) -> bytes:
    """A PNG that does not compress: about 3 bytes per pixel."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encoded(Image.fromarray(pixels, "RGB"), "PNG")


def test_images_per_request_are_capped(http: httpx.Client) -> None:
    limit = ImageSettings().max_per_request
    assert limit == 16
    parts = [image_part(data_url(png_bytes((8, 8), (i, 0, 0)))) for i in range(limit + 1)]
    error = assert_openai_error(moderate(http, text_part("look"), *parts), 413, "payload_too_large")
    assert "16" in error["message"] and "17" in error["message"]
    assert moderate(http, *parts[:limit]).status_code == 200


def test_images_per_request_is_a_setting() -> None:
    with running_server(load_settings(images={"max_per_request": 2})) as server, server.http() as http:
        parts = [image_part(data_url(png_bytes((8, 8), (i, 0, 0)))) for i in range(3)]
        error = assert_openai_error(moderate(http, *parts), 413, "payload_too_large")
        assert "limit is 2" in error["message"]
        assert moderate(http, *parts[:2]).status_code == 200


def test_image_bytes_per_request_are_capped(fetch_host: ImageHost) -> None:
    """Each image is under max_bytes; together they are over max_total_bytes, fetched or inline."""
    images = [noise_png(seed) for seed in range(3)]
    assert all(40_000 < len(data) < 50_000 for data in images)
    fetch_host.routes["/noise.png"] = send_bytes(images[0])
    settings = load_settings(
        images={"max_total_bytes": 100_000, "allow_private_hosts": True, "allow_http": True}
    )
    with running_server(settings) as server, server.http() as http:
        inline = [image_part(data_url(data)) for data in images]
        error = assert_openai_error(moderate(http, *inline), 413, "payload_too_large")
        assert "100000" in error["message"]
        mixed = [*inline[1:], image_part(fetch_host.url("/noise.png"))]
        assert_openai_error(moderate(http, *mixed), 413, "payload_too_large")
        assert moderate(http, *inline[:2]).status_code == 200


class Gauge:
    """How many requests a route is serving at once, and the most it ever served at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def counted(self, handler: Handler, hold_s: float) -> Handler:
        def wrapped(request: BaseHTTPRequestHandler) -> None:
            with self._lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            time.sleep(hold_s)
            try:
                handler(request)
            finally:
                with self._lock:
                    self.now -= 1

        return wrapped


def test_fetches_per_request_are_bounded(fetch_http: httpx.Client, fetch_host: ImageHost) -> None:
    gauge = Gauge()
    fetch_host.routes["/counted.png"] = gauge.counted(send_bytes(png_bytes((20, 20))), hold_s=0.3)
    parts = [image_part(fetch_host.url("/counted.png")) for _ in range(10)]
    assert moderate(fetch_http, *parts).status_code == 200
    assert gauge.peak == ImageSettings().fetch_concurrency == 4


def test_one_failure_cancels_the_other_fetches(fetch_host: ImageHost) -> None:
    """A failed image ends the request's other downloads at once, not when their time runs out."""
    ended: list[float] = []

    def endless(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        request.send_header("Content-Length", str(1_000_000))
        request.end_headers()
        try:
            for _ in range(400):  # 20 s unless the client hangs up
                request.wfile.write(b"\x00" * 16)
                request.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass
        ended.append(time.monotonic())

    def late_missing(request: BaseHTTPRequestHandler) -> None:
        time.sleep(0.4)
        request.send_response(404)
        request.send_header("Content-Length", "0")
        request.end_headers()

    fetch_host.routes["/endless-slow.png"] = endless
    fetch_host.routes["/late-missing.png"] = late_missing
    settings = load_settings(images={"allow_private_hosts": True, "allow_http": True, "fetch_timeout_s": 20})
    with running_server(settings) as server, server.http() as http:
        parts = [image_part(fetch_host.url(path)) for path in ("/endless-slow.png", "/late-missing.png")]
        assert_openai_error(moderate(http, *parts), 400, "invalid_image")
        answered = time.monotonic()
        deadline = answered + 3
        while not ended and time.monotonic() < deadline:
            time.sleep(0.05)
    assert ended, "the other download was still running 3 s after the request failed"
    assert ended[0] - answered < 1.5


def gradient_png(width: int = 6000, height: int = 6000) -> bytes:
    """A 36 Mpx PNG that is small to send but takes Pillow a good fraction of a second to decode."""
    ramp = np.add.outer(np.arange(height) % 256, np.arange(width) % 256).astype(np.uint8)
    return encoded(Image.fromarray(np.dstack([ramp, ramp[::-1], ramp[:, ::-1]]), "RGB"), "PNG")


def test_decoding_does_not_block_the_server() -> None:
    """While large images decode, the same server still answers other requests at once."""
    parts = [image_part(data_url(gradient_png()))] * 3
    # Three large decodes take seconds, and far longer on a loaded machine: the request may wait.
    with running_server(load_settings()) as server, server.http(timeout=120) as http:
        latencies: list[float] = []
        done = threading.Event()

        def poll() -> None:
            with server.http() as other:
                while not done.is_set():
                    started = time.monotonic()
                    assert other.get("/healthz").status_code == 200
                    latencies.append(time.monotonic() - started)
                    time.sleep(0.01)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            started = time.monotonic()
            assert moderate(http, *parts).status_code == 200
            took = time.monotonic() - started
        finally:
            done.set()
            poller.join()
    assert len(latencies) > 5
    # Decoding the three images is most of the request's time: a loop blocked by one decode would
    # keep a health check waiting about a third of it. A tenth of it (0.3 s on an idle machine)
    # scales with a loaded one, where every step, decoding included, is slower alike.
    assert max(latencies) < took / 10, (max(latencies), took)


# ----------------------------------------------------------------- SSRF: one lookup, one checked address


class Resolver:
    """DNS answers chosen by the test (real DNS cannot be steered here); counts the lookups."""

    def __init__(self, answers: dict[str, Sequence[str]], delay_s: float = 0.0) -> None:
        self.answers = answers
        self.delay_s = delay_s
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        await asyncio.sleep(self.delay_s)
        return list(self.answers[host])


def host_recorder(seen: list[str | None], data: bytes) -> Handler:
    def handler(request: BaseHTTPRequestHandler) -> None:
        seen.append(request.headers.get("Host"))
        send_bytes(data)(request)

    return handler


def loopback_settings(**values: Any) -> ImageSettings:
    return ImageSettings(allow_private_hosts=True, allow_http=True, fetch_timeout_s=2, **values)


async def test_the_checked_address_is_the_one_fetched(fetch_host: ImageHost) -> None:
    """httpx connects to the address that was resolved and checked; it never looks the name up again."""
    seen: list[str | None] = []
    fetch_host.routes["/named.png"] = host_recorder(seen, png_bytes((12, 12)))
    resolver = Resolver({"images.test": ["127.0.0.1"]})  # a name no real DNS knows
    loader = ImageLoader(loopback_settings(), resolver=resolver)
    try:
        (data,) = await loader.load_all([f"http://images.test:{fetch_host.port}/named.png"])
    finally:
        await loader.aclose()
    assert data == png_bytes((12, 12))
    assert resolver.lookups == ["images.test"]
    assert seen == [f"images.test:{fetch_host.port}"]  # the original Host header


async def test_any_private_answer_refuses_the_host(fetch_host: ImageHost) -> None:
    resolver = Resolver({"mixed.test": ["8.8.8.8", "127.0.0.1"], "mapped.test": ["::ffff:10.0.0.1"]})
    loader = ImageLoader(ImageSettings(allow_http=True), resolver=resolver)
    before = len(fetch_host.hits)
    try:
        for host in ("mixed.test", "mapped.test"):
            with pytest.raises(ImageError, match="non-public"):
                await loader.load_all([f"http://{host}:{fetch_host.port}/ok.png"])
    finally:
        await loader.aclose()
    assert len(fetch_host.hits) == before


async def test_the_lookup_counts_toward_the_time_limit() -> None:
    loader = ImageLoader(ImageSettings(fetch_timeout_s=0.5), resolver=Resolver({"slow.test": []}, delay_s=30))
    started = time.monotonic()
    try:
        with pytest.raises(ImageError, match="could not be fetched"):
            await loader.load_all(["https://slow.test/a.png"])
    finally:
        await loader.aclose()
    assert time.monotonic() - started < 2


async def test_next_address_is_tried_when_one_refuses(fetch_host: ImageHost) -> None:
    """As a browser does: an unreachable first address (e.g. IPv6 without a route) is not the end."""
    closed = "127.0.0.2"  # loopback too, but the image host listens on 127.0.0.1 only
    resolver = Resolver({"two.test": [closed, "127.0.0.1"]})
    loader = ImageLoader(loopback_settings(), resolver=resolver)
    try:
        (data,) = await loader.load_all([f"http://two.test:{fetch_host.port}/ok.png"])
    finally:
        await loader.aclose()
    assert data == png_bytes((24, 24), (200, 200, 0))


async def test_allowed_hosts_ignore_case(fetch_host: ImageHost) -> None:
    resolver = Resolver({"images.test": ["127.0.0.1"], "cdn.images.test": ["127.0.0.1"]})
    loader = ImageLoader(loopback_settings(allowed_hosts=["Images.TEST", ".Images.Test"]), resolver=resolver)
    try:
        for host in ("IMAGES.test", "cdn.images.test"):
            await loader.load_all([f"http://{host}:{fetch_host.port}/ok.png"])
        with pytest.raises(ImageError, match="allowed"):
            await loader.load_all([f"http://other.test:{fetch_host.port}/ok.png"])
    finally:
        await loader.aclose()


def test_embedded_ipv4_addresses_are_checked() -> None:
    private = ["::ffff:192.168.1.1", "2002:c0a8:101::", "64:ff9b::192.168.1.1", "64:ff9b:1::10.0.0.1"]
    public = ["8.8.8.8", "2606:4700::1111", "2002:808:808::", "64:ff9b::8.8.8.8"]
    assert not any(is_public(ipaddress.ip_address(address)) for address in private)
    assert all(is_public(ipaddress.ip_address(address)) for address in public)


#: A self-signed certificate for ``good.test`` (and nothing else), valid 2000-2100, with its key.
GOOD_TEST_CERT = """-----BEGIN CERTIFICATE-----
MIIBXjCCAQSgAwIBAgIBATAKBggqhkjOPQQDAjAUMRIwEAYDVQQDDAlnb29kLnRl
c3QwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMBQxEjAQBgNVBAMM
CWdvb2QudGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABEZK4Ru+J5wRJflz
P2f550Tuygeuj6nkKimSDnl1cSXHHq+PCIxsH1ksYvTkBsGwn2HPolybT1g1IlEF
3DPSLgOjRTBDMBQGA1UdEQQNMAuCCWdvb2QudGVzdDAMBgNVHRMBAf8EAjAAMB0G
A1UdDgQWBBTqbuwLQt0sxf3HYak7UqY5C2c+8zAKBggqhkjOPQQDAgNIADBFAiEA
4OfbgDUEA8lhCsnJfSTXb1H/IK5FwrwkthgT9IHUF6cCIBVhppUYTVw/eI24n1Js
6Kr2RbjjxToZtZzm1pzrQKqZ
-----END CERTIFICATE-----
"""
GOOD_TEST_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgvPH5ZiaXNhS6LvnG
pRdzViy3ZiX/fO3RkL4JV0b0OuKhRANCAARGSuEbviecESX5cz9n+edE7soHro+p
5Copkg55dXElxx6vjwiMbB9ZLGL05AbBsJ9hz6Jcm09YNSJRBdwz0i4D
-----END PRIVATE KEY-----
"""


@pytest.fixture(scope="module")
def tls_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ImageHost, list[str | None]]]:
    """An https image host on loopback serving the ``good.test`` certificate; records the SNI names."""
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_text(GOOD_TEST_CERT)
    (directory / "key.pem").write_text(GOOD_TEST_KEY)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    server_names: list[str | None] = []
    context.sni_callback = lambda _socket, name, _context: server_names.append(name)  # type: ignore[assignment,func-returns-value]
    with ImageHost() as host:
        host._server.socket = context.wrap_socket(host._server.socket, server_side=True)
        host.routes["/ok.png"] = send_bytes(png_bytes((10, 10), (1, 2, 3)))
        yield host, server_names


def trusting_client(tmp_path: Path) -> httpx.AsyncClient:
    """Configured like the loader's own client, but trusting the test certificate."""
    (tmp_path / "cert.pem").write_text(GOOD_TEST_CERT)
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    return httpx.AsyncClient(
        verify=context,
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def test_tls_is_verified_for_the_host_name_not_the_address(
    tls_host: tuple[ImageHost, list[str | None]], tmp_path: Path
) -> None:
    """Connecting to the checked address keeps TLS honest: SNI and certificate are the host name's."""
    host, server_names = tls_host
    resolver = Resolver({"good.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"]})
    loader = ImageLoader(loopback_settings(), trusting_client(tmp_path), resolver=resolver)
    try:
        (data,) = await loader.load_all([f"https://good.test:{host.port}/ok.png"])
        assert data == png_bytes((10, 10), (1, 2, 3))
        # Same address, but the certificate is not for this name: refused, not fetched.
        with pytest.raises(ImageError, match="could not be fetched"):
            await loader.load_all([f"https://evil.test:{host.port}/ok.png"])
    finally:
        await loader.aclose()
    assert server_names == ["good.test", "evil.test"]
    assert host.hits == ["/ok.png"]


# ----------------------------------------------------------------- fetch errors say nothing about the target


def status(code: int) -> Handler:
    def handler(request: BaseHTTPRequestHandler) -> None:
        request.send_response(code)
        request.send_header("Content-Length", "0")
        request.end_headers()

    return handler


@pytest.mark.parametrize("code", [404, 401, 500, 503, 204])
def test_fetch_errors_do_not_reveal_the_status(
    fetch_http: httpx.Client, fetch_host: ImageHost, code: int
) -> None:
    fetch_host.routes[f"/status-{code}.png"] = status(code)
    error = assert_openai_error(
        moderate(fetch_http, image_part(fetch_host.url(f"/status-{code}.png"))), 400, "invalid_image"
    )
    assert "could not be fetched" in error["message"]
    assert str(code) not in error["message"] and "HTTP" not in error["message"]


def test_refused_and_answered_look_the_same(fetch_http: httpx.Client, fetch_host: ImageHost) -> None:
    fetch_host.routes["/status-404.png"] = status(404)
    with refusing_port() as port:
        refused = moderate(fetch_http, image_part(f"http://127.0.0.1:{port}/a.png")).json()["error"]
    missing = moderate(fetch_http, image_part(fetch_host.url("/status-404.png"))).json()["error"]
    assert refused == missing
    assert "Error" not in refused["message"]


# ----------------------------------------------------------------- what the NSFW model sees

SKIN = (224, 172, 150)

#: An 8x8 picture (mostly skin tone) found by hill-climbing on open_nsfw: once scaled up to 224x224
#: it scores about 0.65, above open_nsfw's 0.5 but below the sexual category's text threshold.
NSFW_LIKE_PIXELS = {
    (0, 3): (226, 177, 104),
    (0, 6): (165, 170, 164),
    (1, 0): (255, 165, 187),
    (1, 1): (186, 152, 202),
    (1, 3): (196, 167, 130),
    (1, 4): (216, 192, 169),
    (1, 5): (220, 154, 184),
    (1, 6): (212, 171, 144),
    (1, 7): (230, 182, 127),
    (2, 7): (199, 198, 120),
    (3, 0): (255, 118, 210),
    (3, 5): (201, 113, 106),
    (4, 0): (197, 150, 139),
    (5, 3): (199, 173, 160),
    (6, 4): (248, 168, 177),
    (7, 3): (209, 156, 142),
    (7, 4): (207, 168, 126),
    (7, 5): (208, 174, 159),
}

#: An 8x8 alpha mask found the same way (from the picture above's brightness): skin tone through this
#: mask, on white, scores about 0.61; the same pixels with the alpha channel dropped (plain skin tone)
#: about 0.30, and on black about 0.25.
ALPHA_MASK = [
    [231, 255, 255, 237, 255, 255, 233, 255],
    [255, 255, 204, 230, 255, 255, 152, 255],
    [255, 255, 255, 255, 255, 255, 255, 241],
    [225, 255, 255, 255, 255, 196, 255, 255],
    [227, 255, 255, 255, 255, 255, 255, 255],
    [255, 255, 255, 248, 255, 255, 255, 255],
    [255, 255, 255, 255, 255, 255, 255, 255],
    [255, 255, 197, 237, 234, 253, 255, 194],
]


def nsfw_like_png() -> bytes:
    pixels = np.full((8, 8, 3), SKIN, dtype=np.uint8)
    for (row, column), color in NSFW_LIKE_PIXELS.items():
        pixels[row, column] = color
    return encoded(Image.fromarray(pixels, "RGB").resize((224, 224), Image.Resampling.BICUBIC), "PNG")


def alpha_only_png() -> Image.Image:
    """Uniform skin tone; the picture is in the alpha channel alone."""
    mask = Image.fromarray(np.array(ALPHA_MASK, dtype=np.uint8), "L").resize(
        (224, 224), Image.Resampling.BICUBIC
    )
    image = Image.new("RGBA", (224, 224), (*SKIN, 255))
    image.putalpha(mask)
    return image


def sexual_threshold() -> float:
    return shared_classifier(None).meta.thresholds["sexual"]


def sexual(http: httpx.Client, data: bytes) -> tuple[float, bool]:
    response = moderate(http, image_part(data_url(data)))
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    return result["category_scores"]["sexual"], result["categories"]["sexual"]


def test_image_score_and_flag_agree(http: httpx.Client) -> None:
    """The sexual score reaches the category's threshold exactly when the category is flagged."""
    threshold = sexual_threshold()
    score, flagged = sexual(http, nsfw_like_png())
    assert flagged and score >= threshold, (score, threshold)
    for benign in (
        png_bytes((50, 50)),
        png_bytes((50, 50), SKIN),
        encoded(Image.new("L", (30, 30), 90), "PNG"),
    ):
        score, flagged = sexual(http, benign)
        assert not flagged and score < threshold, (score, threshold)


def test_image_score_is_on_the_category_scale(http: httpx.Client) -> None:
    """open_nsfw's probability p is mapped piecewise-linearly: 0 -> 0, 0.5 -> threshold, 1 -> 1."""
    from seawall.model.nsfw import NSFWImageModel

    threshold = sexual_threshold()
    images = [png_bytes((50, 50), SKIN), nsfw_like_png()]
    probabilities = NSFWImageModel().score(images)
    assert probabilities[0] < 0.5 < probabilities[1]
    for data, p in zip(images, probabilities, strict=True):
        expected = p / 0.5 * threshold if p <= 0.5 else threshold + (p - 0.5) / 0.5 * (1 - threshold)
        assert sexual(http, data)[0] == pytest.approx(expected, abs=1e-6)


def test_an_operator_threshold_applies_to_images_too() -> None:
    settings = load_settings(moderation={"thresholds": {"sexual": 0.95}})
    with running_server(settings) as server, server.http() as http:
        score, flagged = sexual(http, nsfw_like_png())
    assert not flagged and score < 0.95


def test_content_drawn_only_in_the_alpha_channel_is_seen(http: httpx.Client) -> None:
    image = alpha_only_png()
    score, flagged = sexual(http, encoded(image, "PNG"))
    assert flagged and score >= sexual_threshold()
    # The worst of: alpha dropped, on white, on black.
    views = [image.convert("RGB")] + [
        Image.alpha_composite(Image.new("RGBA", image.size, background), image).convert("RGB")
        for background in ((255, 255, 255, 255), (0, 0, 0, 255))
    ]
    view_scores = [sexual(http, encoded(view, "PNG"))[0] for view in views]
    assert score == pytest.approx(max(view_scores), abs=1e-6)
    assert view_scores[0] < view_scores[1]


def test_opaque_images_score_as_before(http: httpx.Client) -> None:
    """An alpha channel that hides nothing changes nothing."""
    rgb = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    rgba = rgb.convert("RGBA")
    assert sexual(http, encoded(rgb, "PNG"))[0] == pytest.approx(
        sexual(http, encoded(rgba, "PNG"))[0], abs=1e-6
    )


# ----------------------------------------------------------------- the loader as a library


async def test_parts_of_one_request_share_its_limits() -> None:
    """A request's images load as one unit under one byte budget."""
    from seawall.inputs import parse_input

    (item,) = parse_input(
        [image_part(data_url(noise_png(seed))) for seed in range(3)], max_items=10, max_chars=100
    )
    loader = ImageLoader(ImageSettings(max_total_bytes=100_000))
    try:
        with pytest.raises(PayloadTooLargeError):
            await loader.load_all([part.url for part in item.images])
        (few,) = parse_input(
            [image_part(data_url(noise_png(seed))) for seed in range(2)], max_items=10, max_chars=100
        )
        loaded = await loader.load_all([part.url for part in few.images])
    finally:
        await loader.aclose()
    assert loaded == [noise_png(0), noise_png(1)]


def test_parse_input_can_cap_images() -> None:
    from seawall.inputs import parse_input

    parts = [text_part("a"), *[image_part(data_url(png_bytes())) for _ in range(3)]]
    with pytest.raises(PayloadTooLargeError, match="limit is 2"):
        parse_input(parts, max_items=10, max_chars=100, max_images=2)
    assert len(parse_input(parts, max_items=10, max_chars=100, max_images=3)[0].images) == 3
