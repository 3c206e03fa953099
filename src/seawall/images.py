"""Fetching and checking image parts before any backend sees them.

``data:`` URLs are decoded in place; ``https://`` URLs (``http://`` only when
``images.allow_http`` is on) are fetched. Every failure is a 4xx
:class:`ImageError`, or a 413 for the size limits.

Limits. Per image: ``images.max_bytes`` and ``images.max_pixels``. Per request:
``images.max_per_request`` images, ``images.max_total_bytes`` over all of them,
and at most ``images.fetch_concurrency`` fetched and decoded at once. The images
of one request load as one unit: when one fails, the others are cancelled.
Decoding runs in a worker thread, never on the event loop.

Formats. PNG, JPEG, GIF and WebP only, as Pillow detects them from the bytes
(the declared MIME type is not trusted). Pillow is not even asked to try its
other decoders (TIFF, BMP, ICO, PSD, ...), which keeps the rarer and more fragile
parsers out of reach of anyone who can send a request.

Fetching without becoming a proxy into the local network (SSRF; the rules are
:mod:`seawall.netguard`'s, shared with review webhooks). The host is
resolved once, inside the fetch's time limit, and every address it resolves to
must be public; for IPv6 addresses that embed an IPv4 one (IPv4-mapped,
IPv4-compatible, 6to4, Teredo, NAT64) the embedded address must be public too.
The request then goes to a checked address, with the original ``Host`` header
and with the host name as TLS server name (httpx's ``sni_hostname`` request
extension), so the certificate is still verified for the host name, not the
address. httpx never resolves the name itself, so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot redirect the fetch.
We chose this over letting httpx connect and then checking the peer address
(``network_stream.get_extra_info("server_addr")``): by then a connection to the
private address has already been made and the request sent, which is itself
the harm for many internal services.

Connections are not kept alive between fetches: the pool is keyed by address,
and a connection verified for one host name must not be reused for another that
resolves to the same address. Redirects are not followed, and proxies from the
environment are not used (the address check only means something for a direct
connection). Whatever the cause (a status other than 200, a refused connection,
a TLS failure, a timeout), a failed fetch reads the same to the client; the
details go to the debug log. Otherwise the service would tell its users which
ports are open and which hosts are alive.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
from collections.abc import Sequence

import httpx
from PIL import GifImagePlugin, Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from seawall.errors import ImageError, PayloadTooLargeError, SeawallError
from seawall.inputs import ImagePart, check_image_count, parse_image_url
from seawall.netguard import (
    IPAddress,
    NonPublicAddress,
    Resolver,
    check_addresses,
    embedded_ipv4,
    is_public,
    literal_address,
    resolve_host,
)
from seawall.settings import ImageSettings

logger = logging.getLogger(__name__)

# Imported so the decoders named in ACCEPTED_FORMATS are registered before the first Image.open.
_ACCEPTED_PLUGINS = (GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin)

#: The Pillow decoders tried. Camera JPEGs that carry extra pictures come out of the JPEG decoder
#: as Pillow's "MPO" format, and are accepted as JPEG.
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "GIF", "WEBP")
ACCEPTED_FORMATS_TEXT = "PNG, JPEG, GIF and WebP"


class _ByteBudget:
    """The image bytes one request may still take (``images.max_total_bytes``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise PayloadTooLargeError(
                f"the request's images together are larger than the {self.limit}-byte limit."
            )


class ImageLoader:
    """Turns :class:`ImagePart` URLs into checked image bytes."""

    def __init__(
        self,
        settings: ImageSettings,
        client: httpx.AsyncClient | None = None,
        *,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.settings = settings
        self._resolve = resolver
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.fetch_timeout_s),
            follow_redirects=False,
            trust_env=False,
            # No reuse: connections are pooled by address (see the module docstring).
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def load(self, part: ImagePart) -> bytes:
        """One image's checked bytes (a request's images go through :meth:`load_all` together)."""
        return (await self.load_all([part.url]))[0]

    async def load_all(self, urls: Sequence[str], params: Sequence[str] | None = None) -> list[bytes]:
        """Checked bytes for each image URL of one request, in order, under the request's limits.

        At most ``fetch_concurrency`` images load at once; the first failure
        cancels the others and is raised, naming its image's ``params`` entry (where the request
        carried it) unless it names another.
        """
        check_image_count(len(urls), self.settings.max_per_request)
        budget = _ByteBudget(self.settings.max_total_bytes)
        slots = asyncio.Semaphore(self.settings.fetch_concurrency)
        where = list(params) if params is not None else [None] * len(urls)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._load_named(url, param, budget, slots))
                    for url, param in zip(urls, where, strict=True)
                ]
        except BaseExceptionGroup as failed:
            # The group cancelled the other loads; the first failure is the answer.
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _load_named(
        self, url: str, param: str | None, budget: _ByteBudget, slots: asyncio.Semaphore
    ) -> bytes:
        try:
            return await self._load_one(url, budget, slots)
        except SeawallError as exc:
            if exc.param is None:
                exc.param = param
            raise

    async def _load_one(self, url: str, budget: _ByteBudget, slots: asyncio.Semaphore) -> bytes:
        async with slots:
            if url.startswith("data:"):
                data = self._decode_data_url(url)
                budget.take(len(data))
            else:
                data = await self._fetch(url, budget)
            # Decoding a large image takes a while; the event loop must keep serving meanwhile.
            await asyncio.to_thread(self._check_decodable, data)
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

    def _fetch_failed(self) -> ImageError:
        # One message for every cause, so that answers do not map the network (see the module docstring).
        return ImageError(
            "image URL could not be fetched: it must answer 200 with the image within "
            f"{self.settings.fetch_timeout_s:g} s, without redirects."
        )

    async def _fetch(self, url: str, budget: _ByteBudget) -> bytes:
        settings = self.settings
        if not settings.allow_url_fetch:
            raise ImageError("fetching image URLs is disabled on this server; send a data: URL.")
        parsed = parse_image_url(url)
        if parsed.scheme != "https" and not settings.allow_http:
            raise ImageError("image URLs must use https.")
        host = parsed.raw_host.decode("ascii")
        if not self._host_allowed(host):
            raise ImageError(f"image host {host!r} is not in the allowed list.")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            async with asyncio.timeout(settings.fetch_timeout_s):
                addresses = await self._checked_addresses(host, port)
                return await self._download(parsed, addresses, budget)
        except TimeoutError as exc:
            logger.debug("image fetch from %s timed out after %s s", host, settings.fetch_timeout_s)
            raise self._fetch_failed() from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            logger.debug("image fetch from %s failed: %r", host, exc)
            raise self._fetch_failed() from exc

    def _host_allowed(self, host: str) -> bool:
        if not self.settings.allowed_hosts:
            return True
        host = host.lower().rstrip(".")
        for entry in self.settings.allowed_hosts:
            allowed = entry.strip().lower().rstrip(".")
            if host == allowed or (allowed.startswith(".") and host.endswith(allowed)):
                return True
        return False

    async def _checked_addresses(self, host: str, port: int) -> list[str]:
        """``host``'s addresses, resolved once; all of them public unless private hosts are allowed.

        A host that is an address (``2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``) is read as
        the operating system reads it, without asking the resolver."""
        literal = literal_address(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = list(await self._resolve(host, port))
            except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
                logger.debug("image host %s could not be resolved: %r", host, exc)
                raise ImageError(f"image host {host!r} could not be resolved.") from exc
        if not addresses:
            raise ImageError(f"image host {host!r} could not be resolved.")
        try:
            return check_addresses(addresses, allow_private=self.settings.allow_private_hosts)
        except NonPublicAddress:
            raise ImageError(f"image host {host!r} resolves to a non-public address; refused.") from None

    async def _download(self, url: httpx.URL, addresses: Sequence[str], budget: _ByteBudget) -> bytes:
        """GET ``url`` from the first of ``addresses`` that takes the connection."""
        refused: httpx.ConnectError | None = None
        for address in addresses:
            try:
                return await self._get(url, address, budget)
            except httpx.ConnectError as exc:
                # As browsers do: e.g. an IPv6 address first on a machine without an IPv6 route.
                refused = exc
        assert refused is not None  # addresses is never empty
        raise refused

    async def _get(self, url: httpx.URL, address: str, budget: _ByteBudget) -> bytes:
        settings = self.settings
        host = url.raw_host.decode("ascii")
        # Connect to the checked address; Host header and TLS server name (hence the certificate
        # check) stay the host name's.
        async with self._client.stream(
            "GET",
            url.copy_with(host=address),
            headers={"Host": url.netloc.decode("ascii")},
            extensions={"sni_hostname": host},
        ) as response:
            if response.status_code != 200:
                logger.debug("image URL on %s answered HTTP %s", host, response.status_code)
                raise self._fetch_failed()
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > settings.max_bytes:
                raise PayloadTooLargeError(f"image is larger than the {settings.max_bytes}-byte limit.")
            chunks: list[bytes] = []
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > settings.max_bytes:
                    raise PayloadTooLargeError(f"image is larger than the {settings.max_bytes}-byte limit.")
                budget.take(len(chunk))
                chunks.append(chunk)
        return b"".join(chunks)

    def _check_decodable(self, data: bytes) -> None:
        """Raise unless ``data`` is a whole image in an accepted format within the pixel limit."""
        if not data:
            raise ImageError("image is empty.")
        try:
            # formats=: Pillow tries only these decoders, and anything else is "unidentified".
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                width, height = image.size
                if width * height > self.settings.max_pixels:
                    raise PayloadTooLargeError(
                        f"image is {width}x{height}; the limit is {self.settings.max_pixels} pixels."
                    )
                # Decode the pixels, not only the headers: verify() passes files whose chunks check
                # out but whose data is corrupt, and those then failed inside the image model (a 500).
                image.load()
        except PayloadTooLargeError:
            raise
        except Image.DecompressionBombError as exc:
            # Pillow's own limit (twice its MAX_IMAGE_PIXELS) trips in open(), before the check above.
            raise PayloadTooLargeError("image is too large to decode.") from exc
        except Exception as exc:
            # Hostile bytes make Pillow raise many different types; each means "not a usable image".
            # Its messages are not passed on (some hold object addresses).
            logger.debug("image could not be decoded: %r", exc)
            raise ImageError(
                f"image could not be decoded; the accepted formats are {ACCEPTED_FORMATS_TEXT}."
            ) from exc


__all__ = [
    "ACCEPTED_FORMATS",
    "ACCEPTED_FORMATS_TEXT",
    "IPAddress",
    "ImageLoader",
    "Resolver",
    "embedded_ipv4",
    "is_public",
    "resolve_host",
]
