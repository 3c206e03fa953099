"""Parsing the ``input`` of a moderation request into items to score.

OpenAI's wire format allows three shapes, and they mean different things:
a string is one item; a list of strings is one item per string; a list of
content parts (``{"type": "text"}`` / ``{"type": "image_url"}``) is *one*
multi-modal item. Everything is checked here so backends get clean data.

Image URLs are checked as far as that needs no network: their length, that
they parse (with httpx, the parser that will fetch them, so the check and the
fetch cannot disagree about the host), their port and their host name. The
number of images in the whole request is capped too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from seawall.errors import ImageError, InvalidRequestError, PayloadTooLargeError

#: Longest ``http(s)://`` image URL accepted; real image URLs are far shorter, and servers refuse
#: longer request lines anyway (``data:`` URLs are bounded by the body and image size limits instead).
MAX_URL_CHARS = 8192


@dataclass(frozen=True)
class ImagePart:
    """An image to judge: its URL as sent (``https://`` or ``data:``); bytes are fetched later."""

    url: str
    #: Where the request carried it (``input[2].image_url.url``): the ``param`` of an error about it.
    param: str = "input"


@dataclass(frozen=True)
class ModerationInput:
    """One item to moderate: some text and any number of images."""

    texts: tuple[str, ...] = ()
    images: tuple[ImagePart, ...] = ()
    #: Decoded image bytes, filled in by the image loader before scoring.
    image_bytes: tuple[bytes, ...] = field(default=(), compare=False, repr=False)
    #: A passage the service cut from a long text (its sweep against dilution): a backend may read
    #: it as it reads the long text itself (the local model: contextual ``auto`` under ``on``).
    passage: bool = False

    @property
    def text(self) -> str:
        """All text parts joined; what text classifiers score."""
        return "\n".join(self.texts)

    @classmethod
    def of_text(cls, text: str) -> ModerationInput:
        return cls(texts=(text,))


def parse_input(
    raw: Any, *, max_items: int, max_chars: int, max_images: int | None = None
) -> list[ModerationInput]:
    """Turn a request's ``input`` value into items, or raise a 4xx error that names the problem.

    ``max_images`` caps the image parts of the whole request (413 beyond it); None leaves the cap
    to the image loader, which enforces ``images.max_per_request`` before fetching anything.
    """
    if isinstance(raw, str):
        _check_text(raw, max_chars, "input")
        return [ModerationInput.of_text(raw)]
    if not isinstance(raw, list):
        raise InvalidRequestError(
            "'input' must be a string, a list of strings, or a list of content parts; "
            f"got {type(raw).__name__}.",
            param="input",
        )
    if not raw:
        raise InvalidRequestError("'input' must not be an empty list.", param="input")
    if len(raw) > max_items:
        raise PayloadTooLargeError(
            f"'input' has {len(raw)} items; the limit is {max_items} per request.", param="input"
        )
    if all(isinstance(item, str) for item in raw):
        for index, text in enumerate(raw):
            _check_text(text, max_chars, f"input[{index}]")
        return [ModerationInput.of_text(text) for text in raw]
    if all(isinstance(item, dict) for item in raw):
        if max_images is not None:
            check_image_count(sum(part.get("type") == "image_url" for part in raw), max_images)
        return [_parse_parts(raw, max_chars)]
    raise InvalidRequestError(
        "'input' lists must hold only strings or only content parts (objects with a 'type').",
        param="input",
    )


def check_image_count(count: int, limit: int) -> None:
    """413 when a request holds more than ``limit`` images (counted over the whole request)."""
    if count > limit:
        raise PayloadTooLargeError(
            f"'input' has {count} image parts; the limit is {limit} images per request.", param="input"
        )


def parse_image_url(url: str, param: str | None = None) -> httpx.URL:
    """An ``http(s)://`` image URL parsed as it will be fetched, or a 400 that says what is wrong."""
    if len(url) > MAX_URL_CHARS:
        raise ImageError(f"image URL has {len(url)} characters; the limit is {MAX_URL_CHARS}.", param=param)
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise ImageError(f"image URL is not a valid URL: {exc}", param=param) from exc
    if parsed.scheme not in ("http", "https"):
        raise ImageError("image URLs must be https:// (or data:) URLs.", param=param)
    if not host:
        raise ImageError("image URL has no host.", param=param)
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ImageError(f"image URL port {parsed.port} is out of range (1-65535).", param=param)
    if not _is_ip_literal(host) and not _is_valid_hostname(host):
        # getaddrinfo would raise UnicodeError (a 500) on these; they can never resolve anyway.
        raise ImageError("image URL host is not a valid host name.", param=param)
    return parsed


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_valid_hostname(host: str) -> bool:
    """DNS limits: at most 253 characters, labels of 1 to 63 (one trailing dot allowed)."""
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(0 < len(label) <= 63 for label in name.split("."))


def _check_text(text: str, max_chars: int, param: str) -> None:
    if len(text) > max_chars:
        raise PayloadTooLargeError(
            f"{param} has {len(text)} characters; the limit is {max_chars}.", param=param
        )


def _parse_parts(parts: Sequence[dict[str, Any]], max_chars: int) -> ModerationInput:
    texts: list[str] = []
    images: list[ImagePart] = []
    for index, part in enumerate(parts):
        param = f"input[{index}]"
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequestError(f"{param}.text must be a string.", param=f"{param}.text")
            _check_text(text, max_chars, f"{param}.text")
            texts.append(text)
        elif kind == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else None
            url_param = f"{param}.image_url.url"
            if not isinstance(url, str) or not url:
                raise InvalidRequestError(f"{url_param} must be a non-empty string.", param=url_param)
            if not url.startswith(("https://", "http://", "data:")):
                raise InvalidRequestError(f"{url_param} must be an https:// or data: URL.", param=url_param)
            if not url.startswith("data:"):
                parse_image_url(url, url_param)
            images.append(ImagePart(url=url, param=url_param))
        else:
            raise InvalidRequestError(
                f"{param}.type must be 'text' or 'image_url'; got {kind!r}.", param=f"{param}.type"
            )
    return ModerationInput(texts=tuple(texts), images=tuple(images))
