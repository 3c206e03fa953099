"""Exporting a fine-tuned MiniLM to the ONNX file the runtime reads, with int8 weights.

The export is checked before it is written: its vectors, read back through the runtime's
``ContextEncoder``, must lie within ``MIN_EXPORT_COSINE`` of the torch model's, or nothing is
written. Weights are stored as int8 and dequantised inside the graph (Cast, Mul), which is how the
stock export is stored: the file is a quarter of float32's size, onnxruntime folds the
dequantisation into float weights when it loads the model, so scoring runs in float at the stock
encoder's speed, and the vectors stay within a cosine of about 0.998 of the float model's
(onnxruntime's dynamic int8 quantisation of the matrix products was measured at 0.92 to 0.98).
An encoder whose int8 export drifts beyond that (a long fine-tune can grow outlying weights: the
twentieth refusal round's read 0.986) is written with float16 weights instead, half float32's size,
rather than throwing the fine-tune away.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from seawall.errors import ConfigurationError, ModelArtefactError
from seawall.model.context import ContextEncoder
from seawall.training.minilm_torch import require_torch, torch_vectors

if TYPE_CHECKING:
    import torch

#: An export whose vectors drift further than this from the trained encoder's is refused.
MIN_EXPORT_COSINE = 0.99
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
#: How the weight matrices are stored, most compact first: the export tries each in turn.
WeightStorage = Literal["int8", "float16"]
STORAGES: tuple[WeightStorage, ...] = ("int8", "float16")


@dataclass(frozen=True)
class ExportCheck:
    """How an export was stored, and the smallest cosine between its vectors and the torch model's."""

    weights: WeightStorage
    cosine: float


def quantise_weights(model: Any, weights: WeightStorage = "int8") -> Any:
    """Stores the weight matrices of an ONNX graph as int8 (or float16), converted back in the graph.

    int8: a matrix product's weight (``MatMul``'s second input, shaped in × out) gets one scale per
    output column; an embedding table (``Gather``'s first input, one row per token) one scale per row,
    so a rare token's small row is not rounded on the scale of the largest. Symmetric, 127 levels.
    float16: the same matrices stored at half precision and cast back to float."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    scale_axis: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1:
            scale_axis[node.input[1]] = 0
        elif node.op_type == "Gather":
            scale_axis[node.input[0]] = 1
    dequantise = []
    for initializer in list(graph.initializer):
        axis = scale_axis.get(initializer.name)
        if axis is None or initializer.data_type != TensorProto.FLOAT or len(initializer.dims) != 2:
            continue
        values = numpy_helper.to_array(initializer).astype(np.float32)
        name = initializer.name
        graph.initializer.remove(initializer)
        if weights == "float16":
            graph.initializer.append(numpy_helper.from_array(values.astype(np.float16), f"{name}_float16"))
            dequantise.append(helper.make_node("Cast", [f"{name}_float16"], [name], to=TensorProto.FLOAT))
            continue
        scale = np.abs(values).max(axis=axis, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        levels = np.clip(np.rint(values / scale), -127, 127).astype(np.int8)
        graph.initializer.extend(
            [
                numpy_helper.from_array(levels, f"{name}_int8"),
                numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
            ]
        )
        dequantise.append(helper.make_node("Cast", [f"{name}_int8"], [f"{name}_float"], to=TensorProto.FLOAT))
        dequantise.append(helper.make_node("Mul", [f"{name}_float", f"{name}_scale"], [name]))
    # The dequantising nodes come first: a graph's nodes must be in dependency order.
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(dequantise + existing)
    return model


def export_encoder(
    encoder: torch.nn.Module, out_file: Path, tokenizer_file: Path, check_texts: Sequence[str]
) -> ExportCheck:
    """Writes the encoder as an ONNX file the runtime's ``ContextEncoder`` reads (atomically: a
    ``.partial`` file renamed into place), with int8 weights, or float16 where int8's vectors drift
    below ``MIN_EXPORT_COSINE`` from the torch encoder's on ``check_texts``; if both do, nothing is
    written."""
    torch = require_torch()
    try:
        import onnx
    except ImportError as exc:
        raise ConfigurationError("exporting the encoder needs onnx: pip install 'seawall[train]'") from exc
    if not check_texts:
        raise ValueError("export_encoder needs texts to check the export on")
    encoder = encoder.cpu().eval()
    axes = {0: "batch", 1: "tokens"}
    with tempfile.TemporaryDirectory() as scratch:
        full = Path(scratch) / "encoder.onnx"
        compact = Path(scratch) / "encoder-compact.onnx"
        example = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in INPUT_NAMES)
        with warnings.catch_warnings():
            # torch 2.13 calls the TorchScript exporter legacy; it needs no onnxscript and exports this
            # plain module exactly (the export is checked against the trained model below).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                encoder,
                example,
                str(full),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={name: axes for name in (*INPUT_NAMES, OUTPUT_NAME)},
                opset_version=17,
                dynamo=False,
            )
        expected = torch_vectors(encoder, tokenizer_file, check_texts)
        tried = []
        for weights in STORAGES:
            onnx.save(quantise_weights(onnx.load(str(full)), weights), str(compact))
            exported = ContextEncoder(tokenizer_file, compact).encode(check_texts)
            check = ExportCheck(weights, float((exported * expected).sum(axis=1).min()))
            if check.cosine >= MIN_EXPORT_COSINE:
                break
            tried.append(f"{weights} {check.cosine:.4f}")
        else:
            raise ModelArtefactError(
                f"every export of the fine-tuned encoder drifts from it (smallest cosine: "
                f"{', '.join(tried)}; at least {MIN_EXPORT_COSINE} is needed); nothing was written"
            )
        out_file.parent.mkdir(parents=True, exist_ok=True)
        partial = out_file.with_name(out_file.name + ".partial")
        partial.write_bytes(compact.read_bytes())
        partial.replace(out_file)
    return check
