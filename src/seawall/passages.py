"""Cutting text into the passages that are judged on their own, so context cannot dilute them.

A classifier that scores a long text (or a long window of it) as one piece averages a threat in
one sentence with the harmless sentences around it: measured with the shipped model, a threat
that scores 0.98 alone falls below its flag threshold with about 150 characters of harmless text
beside it. :func:`focus_segments` cuts a text into every sentence and every pair of neighbouring
sentences, at most ``max_chars`` long, which the gateway's guards, the stream guard and
``/v1/moderations`` on long texts (``moderation.passages_over_chars``) judge on their own.

A sentence longer than ``max_chars`` is cut at spaces into pieces that overlap by half. The cut is
linear in the text's length (the sentence split is one regex pass without backtracking) and
yields at most about three times the text's characters.
"""

from __future__ import annotations

import re
from itertools import pairwise

SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


def sentences(text: str, max_chars: int) -> list[str]:
    """The sentences of ``text`` (split after . ! ? ; : and at line breaks), none over ``max_chars``."""
    pieces: list[str] = []
    for part in SENTENCE_END.split(text):
        if part.strip():
            pieces.extend(_cut(part.strip(), max_chars))
    return pieces


def focus_segments(text: str, max_chars: int) -> list[str]:
    """The sentences of ``text`` and pairs of neighbouring ones, each at most ``max_chars`` long
    (the text itself left out)."""
    pieces = sentences(text, max_chars)
    segments = list(pieces)
    for first, second in pairwise(pieces):
        if len(first) + 1 + len(second) <= max_chars:
            segments.append(f"{first} {second}")
    return list(dict.fromkeys(segment for segment in segments if segment != text.strip()))


def _cut(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    words = sentence.split()
    pieces: list[str] = []
    start = 0
    while start < len(words):
        end, length = start, 0
        while end < len(words) and (end == start or length + 1 + len(words[end]) <= max_chars):
            length += len(words[end]) + (1 if end > start else 0)
            end += 1
        pieces.append(" ".join(words[start:end]))
        if end >= len(words):
            break
        start = max(start + 1, (start + end) // 2)
    return pieces
