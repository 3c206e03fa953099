"""Cross-lingual glossing: an English reading of Spanish, German, French, Portuguese and Italian text.

The model learned mostly from English. Before scoring, each word window is looked up in
the project's authored lexicons (``lexicon/gloss_<lang>.tsv``: a phrase of 1–4 words and
its English gloss); where phrases match, a copy of the window with them replaced by their
glosses ("te voy a matar" → "i am going to kill you") is scored as well, and the text
keeps the worse of the two. English text matches nothing (the lexicons avoid English
homographs), so it costs one dictionary lookup per word.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

from seawall.errors import ModelArtefactError
from seawall.model.features import split_words

#: Languages with a lexicon, in the order their files are read.
GLOSS_LANGUAGES = ("es", "de", "fr", "pt", "it")
#: The longest phrase a lexicon may hold, in words (as the featurizer splits them: "t'égorger" is two).
MAX_PHRASE = 6


def lexicon_dir() -> Path:
    return Path(str(resources.files("seawall.model") / "lexicon"))


class Glossary:
    """Phrase → English gloss, matched longest first over word lists."""

    def __init__(self, entries: dict[tuple[str, ...], list[str]]) -> None:
        self._entries = entries
        self._first_words = {phrase[0] for phrase in entries}

    @classmethod
    def load(cls, directory: Path | None = None) -> Glossary:
        directory = directory or lexicon_dir()
        entries: dict[tuple[str, ...], list[str]] = {}
        for lang in GLOSS_LANGUAGES:
            path = directory / f"gloss_{lang}.tsv"
            if not path.exists():
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip() or line.startswith("#"):
                    continue
                phrase, sep, english = line.partition("\t")
                # Split as scored text is split, so elisions and hyphens match ("tue-toi").
                words = tuple(split_words(phrase))
                if not sep or not words or not english.strip() or len(words) > MAX_PHRASE:
                    raise ModelArtefactError(f"{path}:{number}: expected 'phrase<TAB>english gloss'")
                # The first language to define a phrase keeps it (homographs across languages).
                entries.setdefault(words, split_words(english))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def gloss(self, words: Sequence[str]) -> list[str] | None:
        """``words`` with every known phrase replaced by its gloss; None when nothing matched."""
        out: list[str] = []
        matched = False
        position = 0
        while position < len(words):
            if words[position] in self._first_words:
                for size in range(min(MAX_PHRASE, len(words) - position), 0, -1):
                    english = self._entries.get(tuple(words[position : position + size]))
                    if english is not None:
                        out.extend(english)
                        position += size
                        matched = True
                        break
                else:
                    out.append(words[position])
                    position += 1
            else:
                out.append(words[position])
                position += 1
        return out if matched else None


@lru_cache(maxsize=1)
def shared_glossary() -> Glossary:
    return Glossary.load()
