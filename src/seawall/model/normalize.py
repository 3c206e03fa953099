"""Undo the cheap obfuscations people use to slip text past filters.

Applied before featurising, at training and at inference alike:

* Unicode tag characters (U+E0000 block) hide ASCII text invisibly: decoded and kept.
* zero-width and bidi control characters split words: removed.
* NFKC folds full-width, mathematical and other compatibility letters (𝐤𝐢𝐥𝐥 → kill).
* Cyrillic/Greek homoglyphs inside Latin words (kіll with a Cyrillic і) → Latin.
* leetspeak inside words that mix letters with digits or symbols (k1ll, h@te) → letters.
* letters spelled out with separators (k i l l, k.i.l.l) → joined.
* long runs of a repeated letter (diiiie) → two.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_TAG_START: Final = 0xE0000
_TAG_END: Final = 0xE007F

_INVISIBLE: Final = dict.fromkeys(
    [
        *range(0x200B, 0x2010),  # zero-width space/joiners, LRM/RLM
        *range(0x202A, 0x202F),  # bidi embeddings and overrides
        *range(0x2060, 0x2065),  # word joiner, invisible operators
        *range(0x2066, 0x206A),  # bidi isolates
        *range(0xFE00, 0xFE10),  # variation selectors
        0x00AD,  # soft hyphen
        0x034F,  # combining grapheme joiner
        0x180E,  # Mongolian vowel separator
        0xFEFF,  # byte-order mark / zero-width no-break space
    ]
)

# Letters from other scripts that look like Latin ones.
_HOMOGLYPHS: Final = str.maketrans(
    {
        "а": "a",
        "в": "b",
        "е": "e",
        "ё": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "ѕ": "s",
        "і": "i",
        "ї": "i",
        "ј": "j",
        "ԁ": "d",
        "ɡ": "g",
        "ӏ": "l",
        "һ": "h",
        "ԛ": "q",
        "ԝ": "w",
        "ү": "y",
        "А": "A",
        "В": "B",
        "Е": "E",
        "К": "K",
        "М": "M",
        "Н": "H",
        "О": "O",
        "Р": "P",
        "С": "C",
        "Т": "T",
        "Х": "X",
        "Ѕ": "S",
        "І": "I",
        "Ј": "J",
        "α": "a",
        "β": "b",
        "ε": "e",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "Α": "A",
        "Β": "B",
        "Ε": "E",
        "Ζ": "Z",
        "Η": "H",
        "Ι": "I",
        "Κ": "K",
        "Μ": "M",
        "Ν": "N",
        "Ο": "O",
        "Ρ": "P",
        "Τ": "T",
        "Υ": "Y",
        "Χ": "X",
    }
)
_HOMOGLYPH_CHARS: Final = frozenset(chr(code) for code in _HOMOGLYPHS)

_LEET: Final = str.maketrans(
    {
        "0": "o",
        "1": "i",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "8": "b",
        "9": "g",
        "@": "a",
        "$": "s",
        "!": "i",
        "|": "l",
        "€": "e",
        "£": "l",
        "+": "t",
    }
)
_LEET_CHARS: Final = frozenset("0134578 9@$!|€£+".replace(" ", ""))
# A token with at least one letter and at least one leet character, e.g. "k1ll", "h@te", "$h!t".
_LEET_TOKEN: Final = re.compile(
    r"(?<![\w@$!|€£+])(?=[\w@$!|€£+]*[a-zA-Z])(?=[\w@$!|€£+]*[0-9@$!|€£+])[\w@$!|€£+]{3,}"
)
# One or two leet characters with a letter on each side: "k1ll", "n00b", "l33t".
_LEET_INSIDE: Final = re.compile(
    r"(?<=[^\W\d_])[" + re.escape("".join(sorted(_LEET_CHARS))) + r"]{1,2}(?=[^\W\d_])"
)
# Single letters separated by one space, dot, dash, underscore or asterisk: "k i l l", "k.i.l.l".
_SPACED_LETTERS: Final = re.compile(r"\b(?:[a-zA-Z][ .\-_*]){3,}[a-zA-Z]\b")
_REPEATS: Final = re.compile(r"([a-zA-Z])\1{2,}")
_MIXED_SCRIPT_WORD: Final = re.compile(r"\w+")


def decode_tag_characters(text: str) -> tuple[str, str]:
    """Split ``text`` into (visible text, the ASCII hidden in Unicode tag characters)."""
    if not any(_TAG_START <= ord(char) <= _TAG_END for char in text):
        return text, ""
    visible: list[str] = []
    hidden: list[str] = []
    for char in text:
        code = ord(char)
        if _TAG_START <= code <= _TAG_END:
            if 0x20 <= code - _TAG_START <= 0x7E:
                hidden.append(chr(code - _TAG_START))
        else:
            visible.append(char)
    return "".join(visible), "".join(hidden)


def _fold_homoglyphs(match: re.Match[str]) -> str:
    word = match.group(0)
    if _HOMOGLYPH_CHARS.isdisjoint(word) or not any("a" <= c.lower() <= "z" for c in word):
        return word
    return word.translate(_HOMOGLYPHS)


def _unleet(match: re.Match[str]) -> str:
    token = match.group(0)
    following = match.string[match.end() : match.end() + 1]
    if "@" in token and following == ".":
        return token  # an e-mail address, not "h@te"
    # Only leet characters between two letters prove obfuscation ("k1ll", "n00b"; not "5pm" or "mp3");
    # once proven, the token's other leet characters are decoded too ("$h!t").
    return token.translate(_LEET) if _LEET_INSIDE.search(token) else token


def _join_spaced(match: re.Match[str]) -> str:
    return re.sub(r"[ .\-_*]", "", match.group(0))


#: Characters whose NFKC form is longer than this are kept as they are ("ﷺ" expands to 18).
_MAX_EXPANSION = 3


def _fold_compatibility(text: str) -> str:
    """NFKC, except that no single character may expand into more than a few.

    A handful of ligatures expand up to 18-fold under NFKC; unchecked, a 200,000-character
    input of them would become 3.6 million characters of work.
    """
    folded = unicodedata.normalize("NFKC", text)
    if len(folded) <= len(text) + 64:
        return folded
    pieces = []
    for char in text:
        piece = unicodedata.normalize("NFKC", char)
        pieces.append(piece if len(piece) <= _MAX_EXPANSION else char)
    return unicodedata.normalize("NFC", "".join(pieces))


def normalize(text: str) -> str:
    """Return ``text`` with the obfuscations above undone (meaning kept, form canonical)."""
    visible, hidden = decode_tag_characters(text)
    if hidden:
        visible = f"{visible} {hidden}"
    cleaned = visible.translate(_INVISIBLE)
    cleaned = _fold_compatibility(cleaned)
    cleaned = _MIXED_SCRIPT_WORD.sub(_fold_homoglyphs, cleaned)
    cleaned = _LEET_TOKEN.sub(_unleet, cleaned)
    cleaned = _SPACED_LETTERS.sub(_join_spaced, cleaned)
    return _REPEATS.sub(r"\1\1", cleaned)
