"""The moderation taxonomy: OpenAI's 13 categories plus seawall's extra labels."""

from __future__ import annotations

from typing import Final

CATEGORIES: Final[tuple[str, ...]] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

#: Labels the embedded model scores beyond OpenAI's categories; the gateway uses them.
EXTRA_LABELS: Final[tuple[str, ...]] = ("prompt_injection", "jailbreak")

ALL_LABELS: Final[tuple[str, ...]] = CATEGORIES + EXTRA_LABELS

#: A sub-category implies its parent (a threat is also harassment).
PARENT: Final[dict[str, str]] = {
    "harassment/threatening": "harassment",
    "hate/threatening": "hate",
    "illicit/violent": "illicit",
    "self-harm/intent": "self-harm",
    "self-harm/instructions": "self-harm",
    "sexual/minors": "sexual",
    "violence/graphic": "violence",
}

#: Categories OpenAI's omni-moderation assesses on images; the others are text-only there.
IMAGE_CATEGORIES: Final[frozenset[str]] = frozenset(
    {
        "self-harm",
        "self-harm/intent",
        "self-harm/instructions",
        "sexual",
        "violence",
        "violence/graphic",
    }
)


def with_parents(labels: set[str] | frozenset[str]) -> set[str]:
    """Return ``labels`` closed under the parent relation."""
    closed = set(labels)
    for label in labels:
        parent = PARENT.get(label)
        if parent:
            closed.add(parent)
    return closed
