"""Hashed word and character n-gram features, shared by training and inference.

The same code turns text into features when the model is trained (with
scikit-learn) and when it is served (with numpy alone), so the two can never
drift apart. Features are hashed (CRC-32) into one table of ``n_buckets``
rows: no vocabulary to ship, and unseen words still share character n-grams
with known ones, which is what makes misspellings and obfuscation land near
the original.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from seawall.model.normalize import normalize

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class FeatureConfig:
    """How text becomes features; stored next to the weights so both sides agree."""

    n_buckets: int = 1 << 19
    char_min: int = 3
    char_max: int = 5
    word_bigrams: bool = True
    #: Relative weight of the word block and the character block after each is L2-normalised.
    word_weight: float = 1.0
    char_weight: float = 1.0
    #: Scale of the static-embedding block (when the model has one) relative to the n-gram blocks.
    dense_weight: float = 1.0
    #: Undo obfuscation before featurising (off only to measure what normalisation is worth).
    normalize: bool = True
    #: Texts longer than this many words are scored window by window (worst window wins).
    window_words: int = 96
    window_stride: int = 64
    #: If set (e.g. 24), longer texts are also scored in windows this small, so one harmful sentence
    #: among benign ones is not diluted by them (any span of up to focus_words - focus_stride words
    #: lies whole in one). Off by default: measured on the held-out sources it raised recall on buried
    #: threats but cut any-category AUPRC from 0.79 to 0.68 (small windows of heated talk look worse).
    focus_words: int = 0
    focus_stride: int = 12

    def to_dict(self) -> dict[str, float | int | bool]:
        return dict(self.__dict__)


@dataclass
class SparseRows:
    """A batch of sparse rows in CSR form: row i is ``indices/values[indptr[i]:indptr[i+1]]``."""

    indptr: NDArray[np.int64]
    indices: NDArray[np.int32]
    values: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.indptr) - 1


def split_words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` as it is (no normalisation)."""
    return _WORD.findall(text.lower())


def _bucket(key: str, mask: int) -> int:
    return zlib.crc32(key.encode("utf-8")) & mask


#: Longer "words" (base64 blobs, URLs, keyboard mashing) are hashed but never cached.
CACHED_WORD_CHARS = 40


def _char_buckets(word: str, char_min: int, char_max: int, mask: int) -> tuple[int, ...]:
    if len(word) <= CACHED_WORD_CHARS:
        return _cached_char_buckets(word, char_min, char_max, mask)
    return _hash_char_ngrams(word, char_min, char_max, mask)


@lru_cache(maxsize=200_000)
def _cached_char_buckets(word: str, char_min: int, char_max: int, mask: int) -> tuple[int, ...]:
    # Cached per word: words repeat across texts, so most lookups skip the hashing. Only short
    # words are cached, which bounds the cache's memory (200,000 x 40 characters at most).
    return _hash_char_ngrams(word, char_min, char_max, mask)


def _hash_char_ngrams(word: str, char_min: int, char_max: int, mask: int) -> tuple[int, ...]:
    padded = f" {word} "
    buckets = []
    for size in range(char_min, char_max + 1):
        for start in range(0, max(len(padded) - size + 1, 0)):
            buckets.append(_bucket("c" + padded[start : start + size], mask))
    return tuple(buckets)


def _word_bucket(word: str, mask: int) -> int:
    return _cached_word_bucket(word, mask) if len(word) <= CACHED_WORD_CHARS else _bucket("w" + word, mask)


@lru_cache(maxsize=200_000)
def _cached_word_bucket(word: str, mask: int) -> int:
    return _bucket("w" + word, mask)


class Featurizer:
    """Turns texts into TF-IDF-weighted hashed n-gram rows."""

    def __init__(self, config: FeatureConfig, idf: NDArray[np.float32] | None = None) -> None:
        if config.n_buckets & (config.n_buckets - 1):
            raise ValueError("n_buckets must be a power of two")
        self.config = config
        self._mask = config.n_buckets - 1
        self.idf = idf if idf is not None else np.ones(config.n_buckets, dtype=np.float32)

    def words(self, text: str) -> list[str]:
        """The lower-cased words of ``text``, de-obfuscated unless the config turns that off."""
        return split_words(normalize(text) if self.config.normalize else text)

    def _row(self, words: Sequence[str]) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        cfg = self.config
        word_counts: dict[int, int] = {}
        char_counts: dict[int, int] = {}
        for word in words:
            bucket = _word_bucket(word, self._mask)
            word_counts[bucket] = word_counts.get(bucket, 0) + 1
            for cb in _char_buckets(word, cfg.char_min, cfg.char_max, self._mask):
                char_counts[cb] = char_counts.get(cb, 0) + 1
        if cfg.word_bigrams:
            for first, second in pairwise(words):
                bucket = _bucket(f"b{first} {second}", self._mask)
                word_counts[bucket] = word_counts.get(bucket, 0) + 1
        parts_idx: list[NDArray[np.int32]] = []
        parts_val: list[NDArray[np.float32]] = []
        for counts, weight in ((word_counts, cfg.word_weight), (char_counts, cfg.char_weight)):
            if not counts:
                continue
            idx = np.fromiter(counts.keys(), dtype=np.int32, count=len(counts))
            tf = np.fromiter(
                (1.0 + math.log(c) for c in counts.values()), dtype=np.float32, count=len(counts)
            )
            val = tf * self.idf[idx]
            norm = float(np.sqrt(np.dot(val, val)))
            if norm > 0:
                val *= weight / norm
            parts_idx.append(idx)
            parts_val.append(val)
        if not parts_idx:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        # Word and character buckets may collide; duplicates are summed by whoever multiplies.
        return np.concatenate(parts_idx), np.concatenate(parts_val)

    def windows(self, text: str) -> list[list[str]]:
        """The word windows a text is scored in (worst wins): large ones, plus small ones if it is long."""
        words = self.words(text)
        cfg = self.config
        windows = _slide(words, cfg.window_words, cfg.window_stride)
        if cfg.focus_words and len(words) > cfg.focus_words:
            windows += _slide(words, cfg.focus_words, cfg.focus_stride)
        return windows

    def transform_words(self, batch: Sequence[Sequence[str]]) -> SparseRows:
        """Feature rows for already-split word lists (one row per list)."""
        indptr = np.zeros(len(batch) + 1, dtype=np.int64)
        all_idx: list[NDArray[np.int32]] = []
        all_val: list[NDArray[np.float32]] = []
        for row, words in enumerate(batch):
            idx, val = self._row(words)
            all_idx.append(idx)
            all_val.append(val)
            indptr[row + 1] = indptr[row] + len(idx)
        indices = np.concatenate(all_idx) if all_idx else np.zeros(0, dtype=np.int32)
        values = np.concatenate(all_val) if all_val else np.zeros(0, dtype=np.float32)
        return SparseRows(indptr=indptr, indices=indices, values=values)

    def transform(self, texts: Sequence[str]) -> SparseRows:
        """One feature row per text, from its first window (training uses short texts)."""
        return self.transform_words([self.words(text)[: self.config.window_words * 4] for text in texts])


def _slide(words: list[str], size: int, stride: int) -> list[list[str]]:
    if len(words) <= size:
        return [words]
    return [words[start : start + size] for start in range(0, len(words) - size + stride, stride)]


def sparse_dot(rows: SparseRows, weights: NDArray[np.floating]) -> NDArray[np.float32]:
    """``rows @ weights`` for a CSR batch and a dense (n_buckets, n_labels) matrix, in numpy."""
    n_rows = len(rows)
    out = np.zeros((n_rows, weights.shape[1]), dtype=np.float32)
    if rows.indices.size == 0:
        return out
    contributions = weights[rows.indices].astype(np.float32) * rows.values[:, None]
    nonempty = np.flatnonzero(np.diff(rows.indptr) > 0)
    sums = np.add.reduceat(contributions, rows.indptr[nonempty], axis=0)
    out[nonempty] = sums
    return out
