"""Reading chat messages: the text and images of a message's content, the last user question.

Content is OpenAI's: a string, or a list of parts (``{"type": "text", "text"}``,
``{"type": "image_url", "image_url": {"url"}}``); anything else reads as empty.
"""

from __future__ import annotations

from typing import Any


def text_of(content: Any) -> str:
    """The text of a message's content: the string, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def last_user_text(messages: Any) -> str:
    """The text of the last ``user`` message ("" if there is none)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
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


__all__ = ["image_parts", "last_user_text", "text_of"]
