"""Fetching and checking image parts before any backend sees them.

``data:`` URLs are decoded in place; ``https://`` URLs are fetched with a size
cap, a time limit, an optional host allow-list, and a refusal to reach
loopback or private addresses (so the service cannot be used to probe the
network it runs in). Every failure is a 4xx :class:`ImageError`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

from seawall.errors import ImageError, PayloadTooLargeError
from seawall.inputs import ImagePart
from seawall.settings import ImageSettings


class ImageLoader:
    """Turns :class:`ImagePart` URLs into checked image bytes."""

    def __init__(self, settings: ImageSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.fetch_timeout_s), follow_redirects=False
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def load(self, part: ImagePart) -> bytes:
        if part.url.startswith("data:"):
            data = self._decode_data_url(part.url)
        else:
            data = await self._fetch(part.url)
        self._check_decodable(data)
        return data

    def _decode_data_url(self, url: str) -> bytes:
        header, sep, payload = url.partition(",")
        if not sep or not header.startswith("data:image/") or ";base64" not in header:
            raise ImageError("image data URLs must look like 'data:image/<type>;base64,<data>'.")
        if len(payload) * 3 // 4 > self.settings.max_bytes:
            raise PayloadTooLargeError(f"image is larger than the {self.settings.max_bytes}-byte limit.")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(f"image data URL is not valid base64: {exc}") from exc

    async def _fetch(self, url: str) -> bytes:
        settings = self.settings
        if not settings.allow_url_fetch:
            raise ImageError("fetching image URLs is disabled on this server; send a data: URL.")
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and settings.allow_http):
            raise ImageError("image URLs must use https.")
        host = parts.hostname or ""
        if not host:
            raise ImageError("image URL has no host.")
        if settings.allowed_hosts and not any(
            host == allowed or (allowed.startswith(".") and host.endswith(allowed))
            for allowed in settings.allowed_hosts
        ):
            raise ImageError(f"image host {host!r} is not in the allowed list.")
        if not settings.allow_private_hosts:
            await self._refuse_private(host, parts.port or (443 if parts.scheme == "https" else 80))
        try:
            async with asyncio.timeout(settings.fetch_timeout_s):
                async with self._client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise ImageError(f"image URL answered HTTP {response.status_code}.")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > settings.max_bytes:
                        raise PayloadTooLargeError(
                            f"image is larger than the {settings.max_bytes}-byte limit."
                        )
                    chunks: list[bytes] = []
                    received = 0
                    async for chunk in response.aiter_bytes():
                        received += len(chunk)
                        if received > settings.max_bytes:
                            raise PayloadTooLargeError(
                                f"image is larger than the {settings.max_bytes}-byte limit."
                            )
                        chunks.append(chunk)
        except TimeoutError as exc:
            raise ImageError(f"image URL did not answer within {settings.fetch_timeout_s} s.") from exc
        except httpx.HTTPError as exc:
            raise ImageError(f"image URL could not be fetched: {exc.__class__.__name__}: {exc}") from exc
        return b"".join(chunks)

    @staticmethod
    async def _refuse_private(host: str, port: int) -> None:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ImageError(f"image host {host!r} could not be resolved.") from exc
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global:
                raise ImageError(f"image host {host!r} resolves to a non-public address; refused.")

    def _check_decodable(self, data: bytes) -> None:
        if not data:
            raise ImageError("image is empty.")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > self.settings.max_pixels:
                    raise PayloadTooLargeError(
                        f"image is {width}x{height}; the limit is {self.settings.max_pixels} pixels."
                    )
                # Decode the pixels, not only the headers: verify() passes files whose chunks check
                # out but whose data is corrupt, and those then failed inside the image model (a 500).
                image.load()
        except Image.DecompressionBombError as exc:
            # Pillow's own limit (twice its MAX_IMAGE_PIXELS) trips in open(), before the check above.
            raise PayloadTooLargeError(f"image is too large to decode: {exc}") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"image could not be decoded: {exc}") from exc
