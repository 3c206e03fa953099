"""Content words and their vectors: the offline text representation shared by the knowledge base
(:mod:`seawall.gateway.knowledge`), the topic guard (:mod:`seawall.gateway.topics`) and the review's
domain detector (:mod:`seawall.review.domains`).

Text is normalised (:func:`seawall.model.normalize.normalize`), lower-cased and cut into words;
function words ("how", "do", "I", "the", ...) are dropped, and each remaining *content word* gets
a vector from the embedded model's static token vectors (the IDF-weighted sum of its word pieces)
and a weight (its rarest piece's IDF). A text's sentence vector is the IDF-weighted mean of its
content-word vectors. Negations ("not", "never", "-n't", ...) are not content words; a text that
has one is marked ``negated``. English only; numpy only, no model run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from seawall.errors import ConfigurationError
from seawall.model.embeddings import TOKENIZER_FILE, VECTORS_FILE
from seawall.model.normalize import normalize

#: Characters of a text that are read; the texts compared are short questions.
MAX_QUERY_CHARS: Final = 2000

# Function words carry no topic: dropping them keeps "How long ... take?" from matching every
# other "How long ... ?" question. Negations are kept apart (see _NEGATION).
STOPWORDS: Final = frozenset(
    re.findall(
        r"\S+",
        """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i i'd i'll i'm i've if in into is it it's its
    itself just let's me might more most must my myself of off on once only or other ought our ours
    ourselves out over own please same shall she should so some such than that that's the their theirs
    them themselves then there there's these they this those through to too under until up upon us very
    was we were what what's when where which while who whom whose why will with would you your yours
    yourself yourselves also really get got ok okay hi hello hey thanks thank yes yeah s t d ll m re ve
    """,
    )
)
_NEGATION: Final = re.compile(
    r"\b(?:not|no|never|nothing|nobody|none|cannot|without|neither|nor)\b|n't\b|\b(?:cant|wont|dont|"
    r"doesnt|didnt|isnt|arent|wasnt|werent|havent|hasnt|shouldnt|wouldnt|couldnt)\b"
)
_WORD: Final = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SUFFIXES: Final = ("ing", "ed", "es", "s")


def _stem(word: str) -> str:
    """A deliberately light suffix stripper: plurals and -ed/-ing only."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True)
class TextFeatures:
    """What matching needs of one text: content words, their vectors and weights, a sentence vector."""

    words: tuple[str, ...]
    vectors: NDArray[np.float32]  # (n_words, dims), rows L2-normalised
    weights: NDArray[np.float32]  # (n_words,)
    sentence: NDArray[np.float32]  # (dims,), L2-normalised; zeros when there is no content word
    negated: bool

    @property
    def empty(self) -> bool:
        return not self.words


class TextSpace:
    """Content-word vectors from the embedded model's static token vectors; thread-safe to read.

    Built once per artefact directory (:func:`text_space`) and shared by the knowledge base, the
    topic guard and the review's domain detector. Word vectors are cached, so a vocabulary seen
    before costs one dictionary look-up; so are the features of the last few single texts, since
    each of those reads the same request.
    """

    #: Words whose vectors are kept; the cache is cleared when it grows past this.
    CACHE_WORDS = 100_000
    #: Single texts whose features are kept (least recently used first out).
    CACHE_TEXTS = 16

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
            vectors = np.load(directory / VECTORS_FILE)
            with np.load(directory / "weights.npz") as arrays:
                token_weights = np.asarray(arrays["token_weights"], dtype=np.float32)
        except Exception as exc:  # tokenizers raises plain Exception; numpy OSError/KeyError/ValueError
            raise ConfigurationError(
                f"the embedded model's token vectors in {directory} cannot be read: {exc}"
            ) from exc
        if vectors.shape[0] != token_weights.shape[0]:
            raise ConfigurationError(f"token vectors and token weights in {directory} disagree in size")
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self._weighted = vectors.astype(np.float32) * token_weights[:, None]
        self._token_weights = token_weights
        self.dims = int(vectors.shape[1])
        self._cache: dict[str, tuple[NDArray[np.float32], float]] = {}
        self._one = lru_cache(maxsize=self.CACHE_TEXTS)(self._features_of_one)

    def content_words(self, text: str) -> tuple[list[str], bool]:
        """The content words of ``text`` (lower-cased, stemmed) and whether it contains a negation."""
        lowered = normalize(text[:MAX_QUERY_CHARS]).lower().replace("\u2019", "'")
        negated = _NEGATION.search(lowered) is not None
        words = []
        for word in _WORD.findall(lowered):
            if word in STOPWORDS or _NEGATION.fullmatch(word) or word.endswith("n't"):
                continue
            words.append(_stem(word.removesuffix("'s")))
        return words, negated

    def _word_vectors(self, words: Iterable[str]) -> None:
        missing = sorted({word for word in words if word not in self._cache})
        if not missing:
            return
        if len(self._cache) + len(missing) > self.CACHE_WORDS:
            self._cache = {}
        for word, encoding in zip(
            missing, self._tokenizer.encode_batch(missing, add_special_tokens=False), strict=True
        ):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            if ids.size == 0:
                self._cache[word] = (np.zeros(self.dims, dtype=np.float32), 0.0)
                continue
            vector = self._weighted[ids].sum(axis=0)
            norm = float(np.linalg.norm(vector))
            self._cache[word] = (vector / max(norm, 1e-6), float(self._token_weights[ids].max()))

    def features(self, texts: Sequence[str]) -> list[TextFeatures]:
        """:class:`TextFeatures` of each text (batching amortises the tokenizer call)."""
        if len(texts) == 1:
            # A request's text, read by several checks: computed once. Keyed by the part that is
            # read, so no long text is kept.
            return [self._one(texts[0][:MAX_QUERY_CHARS])]
        return self._features(texts)

    def _features_of_one(self, text: str) -> TextFeatures:
        return self._features([text])[0]

    def _features(self, texts: Sequence[str]) -> list[TextFeatures]:
        parsed = [self.content_words(text) for text in texts]
        self._word_vectors(word for words, _ in parsed for word in words)
        out = []
        for words, negated in parsed:
            unique = list(dict.fromkeys(words))
            if not unique:
                out.append(
                    TextFeatures(
                        (),
                        np.zeros((0, self.dims), dtype=np.float32),
                        np.zeros(0, dtype=np.float32),
                        np.zeros(self.dims, dtype=np.float32),
                        negated,
                    )
                )
                continue
            vectors = np.stack([self._cache[word][0] for word in unique]).astype(np.float32)
            weights = np.asarray([self._cache[word][1] for word in unique], dtype=np.float32)
            sentence = (vectors * weights[:, None]).sum(axis=0)
            sentence /= max(float(np.linalg.norm(sentence)), 1e-6)
            out.append(TextFeatures(tuple(unique), vectors, weights, sentence.astype(np.float32), negated))
        return out


@lru_cache(maxsize=4)
def text_space(directory: Path | None = None) -> TextSpace:
    """One :class:`TextSpace` per artefact directory (default: the shipped model), shared."""
    from seawall.model.classifier import default_model_dir

    return TextSpace(directory or default_model_dir())


__all__ = ["MAX_QUERY_CHARS", "STOPWORDS", "TextFeatures", "TextSpace", "text_space"]
