"""Parsing the ``input`` of a moderation request into items to score.

OpenAI's wire format allows three shapes, and they mean different things:
a string is one item; a list of strings is one item per string; a list of
content parts (``{"type": "text"}`` / ``{"type": "image_url"}``) is *one*
multi-modal item. Everything is checked here so backends get clean data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from seawall.errors import InvalidRequestError, PayloadTooLargeError


@dataclass(frozen=True)
class ImagePart:
    """An image to judge: its URL as sent (``https://`` or ``data:``); bytes are fetched later."""

    url: str


@dataclass(frozen=True)
class ModerationInput:
    """One item to moderate: some text and any number of images."""

    texts: tuple[str, ...] = ()
    images: tuple[ImagePart, ...] = ()
    #: Decoded image bytes, filled in by the image loader before scoring.
    image_bytes: tuple[bytes, ...] = field(default=(), compare=False, repr=False)

    @property
    def text(self) -> str:
        """All text parts joined; what text classifiers score."""
        return "\n".join(self.texts)

    @classmethod
    def of_text(cls, text: str) -> ModerationInput:
        return cls(texts=(text,))


def parse_input(raw: Any, *, max_items: int, max_chars: int) -> list[ModerationInput]:
    """Turn a request's ``input`` value into items, or raise a 4xx error that names the problem."""
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
        return [_parse_parts(raw, max_chars)]
    raise InvalidRequestError(
        "'input' lists must hold only strings or only content parts (objects with a 'type').",
        param="input",
    )


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
            if not isinstance(url, str) or not url:
                raise InvalidRequestError(
                    f"{param}.image_url.url must be a non-empty string.", param=f"{param}.image_url.url"
                )
            if not url.startswith(("https://", "http://", "data:")):
                raise InvalidRequestError(
                    f"{param}.image_url.url must be an https:// or data: URL.", param=f"{param}.image_url.url"
                )
            images.append(ImagePart(url=url))
        else:
            raise InvalidRequestError(
                f"{param}.type must be 'text' or 'image_url'; got {kind!r}.", param=f"{param}.type"
            )
    return ModerationInput(texts=tuple(texts), images=tuple(images))
