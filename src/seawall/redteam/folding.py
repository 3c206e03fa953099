"""Text folding shared by the detectors and the refusal classifier: undo what strategies do to text
(look-alike letters, invisible and tag characters) so rules and models read plain text."""

from __future__ import annotations

import re
import unicodedata

from seawall.redteam.strategies import HOMOGLYPHS

_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")
_TAGS = re.compile("[\U000e0000-\U000e007f]")
# Undo the homoglyph strategy: its look-alikes back to Latin.
_FOLD = {ord(look_alike): latin for latin, look_alike in HOMOGLYPHS.items()}
_SEPARATORS = re.compile(r"[\s\-‐‑–—_.·,:;'\"`*|/\\()\[\]]+")


def fold(text: str) -> str:
    """NFKC, look-alike letters to Latin, invisible characters removed, tag characters decoded."""
    text = _TAGS.sub(lambda m: chr(ord(m.group(0)) - 0xE0000), text)
    text = _ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text))
    return text.translate(_FOLD).replace("’", "'").replace("‘", "'")


def compact(text: str) -> str:
    """``text`` folded, casefolded, with every separator and punctuation mark removed."""
    return _SEPARATORS.sub("", fold(text)).casefold()
