"""A disk cache of contextual-encoder vectors, keyed by the exact text embedded.

Embedding the training rows with MiniLM is the slow part of training on a CPU
(about 100 texts/s on 2 cores); the cache makes every later run — a retrain
after relabelling, each leave-one-source-out fold — pay only for new texts.
Shards are appended, never rewritten, so an interrupted run keeps what it did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from seawall.model.context import DIMS, SentenceEncoder

#: Texts embedded between two shard writes (and progress reports).
SHARD = 2048


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


class EmbeddingCache:
    def __init__(self, directory: Path, encoder: SentenceEncoder | None, shard_size: int = SHARD) -> None:
        self.directory = directory
        self._encoder = encoder
        #: Texts per shard (a slower encoder keeps its progress with smaller shards).
        self.shard_size = shard_size
        directory.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, NDArray[np.float16]] = {}
        for keys_file in sorted(directory.glob("shard_*.keys")):
            vectors_file = keys_file.with_suffix(".npy")
            if not vectors_file.exists():
                continue  # a shard whose write was interrupted
            keys = keys_file.read_text(encoding="ascii").split()
            vectors = np.load(vectors_file)
            if len(keys) == len(vectors):
                self._rows.update(zip(keys, vectors, strict=True))

    def __len__(self) -> int:
        return len(self._rows)

    def missing(self, texts: Sequence[str]) -> list[str]:
        seen: set[str] = set()
        out = []
        for text in texts:
            key = text_key(text)
            if key not in self._rows and key not in seen:
                seen.add(key)
                out.append(text)
        return out

    def fill(self, texts: Sequence[str], progress: Callable[[str], None] = print) -> None:
        """Embed every text not yet cached, writing a shard every ``shard_size`` texts."""
        todo = self.missing(texts)
        if not todo:
            return
        if self._encoder is None:
            raise RuntimeError("the embedding cache has no encoder to fill it with")
        shard = len(list(self.directory.glob("shard_*.npy")))
        for start in range(0, len(todo), self.shard_size):
            chunk = todo[start : start + self.shard_size]
            vectors = self._encoder.encode(chunk).astype(np.float16)
            keys = [text_key(text) for text in chunk]
            name = self.directory / f"shard_{shard:05d}"
            np.save(name.with_suffix(".npy"), vectors)
            # The keys file is written last: a shard counts only once both halves exist.
            name.with_suffix(".keys").write_text("\n".join(keys) + "\n", encoding="ascii")
            shard += 1
            self._rows.update(zip(keys, vectors, strict=True))
            progress(f"embedded {min(start + self.shard_size, len(todo))}/{len(todo)} texts")

    def get(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), DIMS), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self._rows[text_key(text)]
        return out

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """The encoder's vectors, from the cache where it has them (a ``SentenceEncoder``)."""
        self.fill(texts, progress=lambda message: None)
        return self.get(texts)
