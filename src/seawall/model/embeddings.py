"""Static sentence embeddings: a weighted mean of per-token vectors, numpy and tokenizers only.

The token vectors are distilled from all-MiniLM-L6-v2 by ``seawall train``
(see :mod:`seawall.training.distill`); each token's weight is its IDF in the
training corpus, so frequent function words count for little.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

TOKENIZER_FILE = "tokenizer.json"
VECTORS_FILE = "static_embeddings.npy"


class StaticEncoder:
    """Maps texts to L2-normalised ``dims``-dimensional vectors."""

    def __init__(
        self, tokenizer_file: Path, vectors: NDArray[np.float16], token_weights: NDArray[np.floating]
    ) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        if vectors.shape[0] != self._tokenizer.get_vocab_size() or token_weights.shape[0] != vectors.shape[0]:
            raise ValueError("static embeddings, token weights and tokenizer disagree on the vocabulary size")
        # Pre-scale rows by their weight so encoding is one gather and one sum.
        self._weighted = (vectors.astype(np.float32) * token_weights.astype(np.float32)[:, None]).astype(
            np.float32
        )
        self._weights = token_weights.astype(np.float32)
        self.dims = int(vectors.shape[1])

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [
            encoding.ids for encoding in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        ]

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        ids_per_text = self.token_ids(texts)
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        lengths = np.fromiter((len(ids) for ids in ids_per_text), dtype=np.int64, count=len(ids_per_text))
        if lengths.sum() == 0:
            return out
        flat = np.fromiter((i for ids in ids_per_text for i in ids), dtype=np.int64, count=int(lengths.sum()))
        nonempty = np.flatnonzero(lengths > 0)
        offsets = np.r_[0, np.cumsum(lengths)[:-1]][nonempty]
        sums = np.add.reduceat(self._weighted[flat], offsets, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        out[nonempty] = sums / np.maximum(norms, 1e-6)
        return out


def token_idf(encoder_ids: Sequence[Sequence[int]], vocab_size: int) -> NDArray[np.float32]:
    """Smoothed IDF of each token over a corpus of tokenised texts."""
    document_frequency = np.zeros(vocab_size, dtype=np.int64)
    for ids in encoder_ids:
        document_frequency[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    n_docs = max(len(encoder_ids), 1)
    return np.asarray(np.log((1 + n_docs) / (1 + document_frequency)) + 1.0, dtype=np.float32)
