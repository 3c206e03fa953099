"""Fine-tuning the contextual stage's encoder (all-MiniLM-L6-v2) on the training rows, with torch.

Only ``seawall train --finetune-rows N`` uses this module (the ``train`` extra); the runtime reads
the result as an ONNX file with int8 weights (float16 if int8 drifts; ``context_encoder.onnx``
beside the other artefacts) with
onnxruntime, exactly as it reads the stock encoder, so serving never needs torch.

Training: mean-pooled vectors → a linear head over every label, binary cross-entropy where the
label is judged (a label the row's source left unknown, or one the fast stage's screening ignores,
counts neither way), AdamW (no weight decay on biases and norms), a fixed seed, texts of similar
length batched together so padding stays short. The head is thrown away: the shipped contextual
head is refitted over the exported encoder's vectors, as for the stock encoder.

Fine-tunes are kept in a store folder under a digest of everything that decides them (rows,
labels, recipe, tokenizer, starting weights, torch version, device), so a rerun over the same rows
reuses the file. The store, the optimiser and the export serve the refusal classifier's fine-tune too
(``seawall.redteam.refusal_finetune``, which trains on whole answers instead of rows).

Measured on 2 CPU cores: about 24 rows a second; a GPU is used when torch sees one
(``FinetuneConfig.device``).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from seawall.errors import ConfigurationError
from seawall.model.classifier import file_sha256
from seawall.model.context import DIMS, MAX_TOKENS
from seawall.training.encoder_export import export_encoder
from seawall.training.minilm_torch import (
    TokenBatches,
    build_encoder,
    mean_pool,
    require_torch,
    starting_weights,
)

if TYPE_CHECKING:
    import torch

#: Bumped when the recipe's code changes, so a stored fine-tune is not reused across it.
RECIPE_VERSION = 1
#: Rows (spread over the whole sample) whose vectors check the export against the trained model.
EXPORT_CHECK_ROWS = 256


@dataclass(frozen=True)
class FinetuneConfig:
    """How the encoder is fine-tuned (the defaults are the recipe measured on 2 CPU cores)."""

    #: Passes over the fine-tuning rows (one measured; more costs time on a CPU).
    epochs: int = 1
    #: Rows a step.
    batch_size: int = 32
    #: AdamW's step size for the encoder (small: it starts from a good model).
    encoder_learning_rate: float = 3e-5
    #: AdamW's step size for the throw-away linear head (starts from random weights).
    head_learning_rate: float = 1e-3
    #: AdamW's weight decay on the encoder's weight matrices (not on biases and norms).
    weight_decay: float = 0.01
    #: Seeds the head's initial weights, dropout and the order of the batches.
    seed: int = 0
    #: torch device ("cpu", "cuda"); None: a GPU when torch sees one, else the CPU.
    device: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigurationError("fine-tuning needs at least one epoch and one row a batch")
        if self.encoder_learning_rate <= 0 or self.head_learning_rate <= 0:
            raise ConfigurationError("fine-tuning learning rates must be positive")
        if self.weight_decay < 0:
            raise ConfigurationError("fine-tuning weight decay cannot be negative")

    def torch_device(self) -> Any:
        torch = require_torch()
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def default_store() -> Path:
    """Where fine-tuned encoders are kept between runs, each under a digest of its rows and recipe."""
    return Path.home() / ".cache" / "seawall" / "encoders"


def check_ready(store: Path) -> None:
    """Fails fast, before any data is loaded, when fine-tuning could not run or keep its result:
    torch, safetensors, onnx or the starting weights missing, or the store not writable."""
    require_torch()
    starting_weights()
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError("exporting the encoder needs onnx: pip install 'seawall[train]'") from exc
    try:
        store.mkdir(parents=True, exist_ok=True)
        probe = store / ".writable"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(
            f"fine-tuned encoders are kept in {store}, which is not writable: {exc}"
        ) from exc


def fresh_start(
    config: FinetuneConfig, head_inputs: int, head_outputs: int
) -> tuple[torch.nn.Module, torch.nn.Module, Any, Any, random.Random]:
    """A fine-tune's starting point, seeded by ``config.seed``: the encoder with its starting weights
    and a throw-away linear head, both on the device; AdamW over them (weight decay on the encoder's
    weight matrices only, not on biases and norms; the head with its own, larger step size); the
    device; and the random generator that orders the batches."""
    torch = require_torch()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = config.torch_device()
    encoder = build_encoder().to(device)
    head = torch.nn.Linear(head_inputs, head_outputs).to(device)
    decayed = [p for name, p in encoder.named_parameters() if p.dim() > 1 and "norm" not in name]
    kept = [p for name, p in encoder.named_parameters() if not (p.dim() > 1 and "norm" not in name)]
    optimiser = torch.optim.AdamW(
        [
            {"params": decayed, "lr": config.encoder_learning_rate, "weight_decay": config.weight_decay},
            {"params": kept, "lr": config.encoder_learning_rate, "weight_decay": 0.0},
            {"params": head.parameters(), "lr": config.head_learning_rate, "weight_decay": 0.0},
        ]
    )
    return encoder, head, optimiser, device, rng


def finetune_encoder(
    texts: Sequence[str],
    targets: NDArray[np.bool_],
    judged: NDArray[np.bool_],
    tokenizer_file: Path,
    config: FinetuneConfig = FinetuneConfig(),
    progress: Callable[[str], None] = print,
) -> torch.nn.Module:
    """The encoder after ``config.epochs`` passes over ``texts`` (``targets``: rows × labels;
    ``judged``: where a target counts), on the CPU and in eval mode."""
    torch = require_torch()
    if len(texts) != len(targets) or targets.shape != judged.shape:
        raise ValueError("texts, targets and judged must describe the same rows")
    if not texts:
        raise ConfigurationError("fine-tuning needs at least one training row")
    encoder, head, optimiser, device, rng = fresh_start(config, DIMS, targets.shape[1])
    batches = TokenBatches(tokenizer_file, texts)
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
            logits = head(mean_pool(encoder(input_ids, mask, token_types), mask))
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
    return encoder.cpu().eval()


def _stored(encoder_file: Path, facts_file: Path) -> dict[str, Any] | None:
    """The facts of a stored fine-tune, if both files are there, readable and agree."""
    try:
        facts: dict[str, Any] = json.loads(facts_file.read_text(encoding="utf-8"))
        if facts.get("sha256") == file_sha256(encoder_file):
            return facts
    except (OSError, ValueError):
        pass
    return None


def finetuned_encoder_file(
    texts: Sequence[str],
    targets: NDArray[np.bool_],
    judged: NDArray[np.bool_],
    tokenizer_file: Path,
    store: Path,
    config: FinetuneConfig = FinetuneConfig(),
    progress: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]]:
    """The ONNX encoder (int8; float16 where int8 drifts) fine-tuned on these rows with this recipe,
    and what is known of it (rows, recipe, device, seconds, export storage and cosine, the file's
    sha256); reused from ``store`` when the same fine-tune was kept there before and its file is intact."""
    return stored_finetune(
        str(RECIPE_VERSION),
        texts,
        [
            np.ascontiguousarray(targets, dtype=bool).tobytes(),
            np.ascontiguousarray(judged, dtype=bool).tobytes(),
        ],
        lambda: finetune_encoder(texts, targets, judged, tokenizer_file, config, progress),
        tokenizer_file,
        store,
        config,
        progress,
    )


def stored_finetune(
    recipe: str,
    texts: Sequence[str],
    labels: Sequence[bytes],
    train: Callable[[], torch.nn.Module],
    tokenizer_file: Path,
    store: Path,
    config: FinetuneConfig,
    progress: Callable[[str], None],
) -> tuple[Path, dict[str, Any]]:
    """The ONNX export (int8; float16 where int8 drifts) of ``train()``'s encoder, kept in ``store``
    under a digest of ``recipe`` (names the training code and its version), the texts, their
    ``labels`` (bytes), the settings, the tokenizer, the starting weights, torch and the device; a later
    call with the same digest reuses an intact stored file without training."""
    torch = require_torch()
    check_ready(store)
    device = str(config.torch_device())
    digest = hashlib.sha256(
        f"{recipe}|{sorted(asdict(config).items())}|{device}|{torch.__version__}|{MAX_TOKENS}".encode()
    )
    digest.update(file_sha256(tokenizer_file).encode())
    digest.update(file_sha256(starting_weights()).encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    for part in labels:
        digest.update(part)
    name = digest.hexdigest()[:24]
    encoder_file = store / f"{name}.onnx"
    facts_file = store / f"{name}.json"
    facts = _stored(encoder_file, facts_file) if encoder_file.exists() else None
    if facts is not None:
        progress(f"reusing the encoder fine-tuned on these {len(texts)} rows before ({encoder_file})")
        return encoder_file, facts
    started = time.time()
    encoder = train()
    step = max(1, len(texts) // EXPORT_CHECK_ROWS)
    check = export_encoder(encoder, encoder_file, tokenizer_file, list(texts[::step]))
    facts = {
        "rows": len(texts),
        **asdict(config),
        "device": device,
        "torch": torch.__version__,
        "seconds": round(time.time() - started),
        "export_weights": check.weights,
        "export_min_cosine": round(check.cosine, 5),
        "sha256": file_sha256(encoder_file),
    }
    partial = facts_file.with_name(facts_file.name + ".partial")
    partial.write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    partial.replace(facts_file)
    progress(
        f"fine-tuned encoder written to {encoder_file} ({check.weights} export within cosine "
        f"{check.cosine:.4f})"
    )
    return encoder_file, facts
