"""Reading chat messages: the text and images of a message's content, the last user question.

Content is OpenAI's: a string, or a list of parts (``{"type": "text", "text"}``,
``{"type": "image_url", "image_url": {"url"}}``); anything else reads as empty. The gateway reads
messages with these helpers to moderate them, the review service to find a held request's
question, and the review desk to show a request to a person (``image="[image]"``).
"""

from __future__ import annotations

from typing import Any

#: Message fields in which OpenAI-compatible servers (vLLM, llama.cpp, DeepSeek) return a model's
#: reasoning beside its answer: output the gateway moderates, and a reviewer must see.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def text_of(content: Any, *, image: str | None = None) -> str:
    """The text of a message's content: the string, or its text parts joined by newlines.

    ``image``: what stands for each image part, in place (None: image parts are left out).
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif image is not None and part.get("type") == "image_url":
            parts.append(image)
    return "\n".join(parts)


def last_user_text(messages: Any, *, image: str | None = None) -> str:
    """The text of the last ``user`` message ("" if there is none); ``image`` as in :func:`text_of`."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"), image=image)
    return ""


def image_parts(content: Any) -> list[dict[str, Any]]:
    """The ``image_url`` parts of a message's content, as moderation input parts."""
    if not isinstance(content, list):
        return []
    return [
        {"type": "image_url", "image_url": part["image_url"]}
        for part in content
        if isinstance(part, dict)
        and part.get("type") == "image_url"
        and isinstance(part.get("image_url"), dict)
    ]


__all__ = ["REASONING_FIELDS", "image_parts", "last_user_text", "text_of"]
