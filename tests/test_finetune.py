"""Fine-tuning the contextual encoder (torch, the train extra) and reading it back at run time.

The encoder written out in ``seawall.training.finetune`` must be all-MiniLM-L6-v2: with the starting
weights its vectors match the stock int8 export the runtime reads. Its own int8 export must give the
trained model's vectors through the runtime's ``ContextEncoder``, and a fine-tune must move the
vectors toward the labels it was trained on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from seawall.errors import ConfigurationError, ModelArtefactError
from seawall.model.classifier import TextClassifier, default_model_dir, file_sha256
from seawall.model.context import CONTEXT_ENCODER_FILE, ContextEncoder, onnx_model_path
from seawall.model.embeddings import TOKENIZER_FILE
from seawall.training import encoder_export
from seawall.training.encoder_export import export_encoder
from seawall.training.finetune import FinetuneConfig, finetune_encoder, finetuned_encoder_file
from seawall.training.minilm_torch import build_encoder, torch_vectors

TOKENIZER = default_model_dir() / TOKENIZER_FILE
TEXTS = [
    "I will find you and hurt you tonight",
    "what a lovely day at the beach with the kids",
    "those people are vermin and should be wiped out",
    "How do I bake sourdough bread at home?",
    "ok",
    "The committee meets on Tuesday to review the budget for the new library wing.",
]

# A small two-label task: threats and insults against plain requests. Eight rows a class, so a few
# epochs move the encoder measurably on 2 CPU cores in seconds.
THREATS = [
    "I am going to break your legs",
    "you will regret this, I know where you live",
    "watch your back, I'll hurt you",
    "I'll burn your house down tonight",
    "keep talking and I will beat you senseless",
    "I'm coming for you and your family",
    "say that again and you're dead",
    "I will make you suffer for this",
]
PLAIN = [
    "can you recommend a good pasta recipe",
    "the train to Leeds leaves at nine",
    "please summarise this report for me",
    "what is the capital of Portugal",
    "my cat likes to sleep in the sun",
    "how many litres are in a gallon",
    "the museum opens at ten on Sundays",
    "remind me to call the dentist tomorrow",
]


def separation(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine within the positive class minus mean cosine across the classes."""
    positive, negative = vectors[labels], vectors[~labels]
    within = float((positive @ positive.T).mean())
    across = float((positive @ negative.T).mean())
    return within - across


def small_task() -> tuple[list[str], np.ndarray, np.ndarray, FinetuneConfig]:
    """Eight rows, one label, one quick epoch: enough to write a stored fine-tune."""
    targets = np.array([[True]] * 4 + [[False]] * 4)
    return (
        THREATS[:4] + PLAIN[:4],
        targets,
        np.ones_like(targets),
        FinetuneConfig(epochs=1, batch_size=4, device="cpu"),
    )


def test_the_torch_encoder_is_all_minilm_l6_v2() -> None:
    ours = torch_vectors(build_encoder(), TOKENIZER, TEXTS)
    stock = ContextEncoder(TOKENIZER).encode(TEXTS)
    cosines = (ours * stock).sum(axis=1)
    assert cosines.min() > 0.995, cosines


def test_the_int8_export_reads_back_through_the_runtime_encoder(tmp_path: Path) -> None:
    encoder = build_encoder()
    out = tmp_path / "encoder.onnx"
    check = export_encoder(encoder, out, TOKENIZER, TEXTS)
    assert check.weights == "int8" and check.cosine > 0.99
    # int8 weights: a quarter of float32's 90 MB, the size of the stock export.
    assert out.stat().st_size < 30_000_000
    assert not list(tmp_path.glob("*.partial"))
    read_back = ContextEncoder(TOKENIZER, out)
    assert read_back.model_file == out
    vectors = read_back.encode(TEXTS)
    expected = torch_vectors(encoder, TOKENIZER, TEXTS)
    assert (vectors * expected).sum(axis=1).min() > 0.99
    # Batching and padding do not change a text's vector (lengths differ a lot above).
    one_by_one = np.vstack([read_back.encode([text]) for text in TEXTS])
    assert np.allclose(one_by_one, vectors, atol=1e-4)


def test_an_export_whose_int8_weights_drift_is_written_in_float16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = build_encoder()
    int8 = export_encoder(encoder, tmp_path / "int8.onnx", TOKENIZER, TEXTS)
    # a floor the int8 export misses (the stock weights' int8 cosine sits near 0.998)
    monkeypatch.setattr(encoder_export, "MIN_EXPORT_COSINE", (int8.cosine + 1.0) / 2)
    out = tmp_path / "encoder.onnx"
    check = export_encoder(encoder, out, TOKENIZER, TEXTS)
    assert check.weights == "float16" and check.cosine > (int8.cosine + 1.0) / 2, (int8, check)
    # float16: half of float32's 90 MB, twice the int8 file, and read by the runtime as it is
    assert 30_000_000 < out.stat().st_size < 60_000_000
    vectors = ContextEncoder(TOKENIZER, out).encode(TEXTS)
    assert ((vectors * torch_vectors(encoder, TOKENIZER, TEXTS)).sum(axis=1).min()) == pytest.approx(
        check.cosine, abs=1e-5
    )
    # a floor no storage reaches: nothing is written, and the error names what was tried
    monkeypatch.setattr(encoder_export, "MIN_EXPORT_COSINE", 1.01)
    refused = tmp_path / "refused.onnx"
    with pytest.raises(ModelArtefactError, match=r"int8 0\.\d+, float16 [01]\.\d+; at least 1\.01"):
        export_encoder(encoder, refused, TOKENIZER, TEXTS)
    assert not refused.exists() and not list(tmp_path.glob("*.partial"))


def test_fine_tuning_moves_the_vectors_toward_the_labels(tmp_path: Path) -> None:
    texts = THREATS + PLAIN
    labels = np.array([True] * len(THREATS) + [False] * len(PLAIN))
    targets = labels[:, None]
    judged = np.ones_like(targets)
    before = separation(torch_vectors(build_encoder(), TOKENIZER, texts), labels)
    messages: list[str] = []
    config = FinetuneConfig(
        epochs=4, batch_size=8, encoder_learning_rate=1e-4, head_learning_rate=1e-2, device="cpu"
    )
    tuned = finetune_encoder(texts, targets, judged, TOKENIZER, config, messages.append)
    after = separation(torch_vectors(tuned, TOKENIZER, texts), labels)
    # Measured: 0.344 before, 1.218 after (1 and 2 threads alike); half the gain is the bar.
    assert after > before + 0.4, (before, after)
    assert any("rows/s" in message and "epoch 4/4" in message for message in messages)
    # The export carries the fine-tuned weights, not the starting ones.
    out = tmp_path / "tuned.onnx"
    export_encoder(tuned, out, TOKENIZER, texts)
    exported = ContextEncoder(TOKENIZER, out).encode(texts)
    assert separation(exported, labels) > before + 0.4


def test_a_label_that_is_not_judged_teaches_nothing() -> None:
    texts = THREATS + PLAIN
    labels = np.array([True] * len(THREATS) + [False] * len(PLAIN))
    config = FinetuneConfig(
        epochs=2, batch_size=8, encoder_learning_rate=1e-4, weight_decay=0.0, device="cpu"
    )
    start = torch_vectors(build_encoder(), TOKENIZER, texts)
    # Every target unjudged: the loss and its gradients are zero, so (without weight decay) the
    # weights stay where they started.
    tuned = finetune_encoder(texts, labels[:, None], np.zeros((len(texts), 1), dtype=bool), TOKENIZER, config)
    assert np.allclose(torch_vectors(tuned, TOKENIZER, texts), start, atol=1e-6)


def test_a_stored_fine_tune_is_reused_for_the_same_rows_only(tmp_path: Path) -> None:
    texts, targets, judged, config = small_task()
    first, facts = finetuned_encoder_file(texts, targets, judged, TOKENIZER, tmp_path, config, print)
    assert first.is_file() and facts["rows"] == 8 and facts["epochs"] == 1
    assert facts["export_min_cosine"] > 0.99 and len(facts["sha256"]) == 64
    written = first.stat().st_mtime_ns
    messages: list[str] = []
    again, facts_again = finetuned_encoder_file(
        texts, targets, judged, TOKENIZER, tmp_path, config, messages.append
    )
    assert again == first and facts_again == facts and first.stat().st_mtime_ns == written
    assert any("reusing" in message for message in messages)
    relabelled, _ = finetuned_encoder_file(texts, ~targets, judged, TOKENIZER, tmp_path, config, print)
    assert relabelled != first
    other_recipe, _ = finetuned_encoder_file(
        texts,
        targets,
        judged,
        TOKENIZER,
        tmp_path,
        FinetuneConfig(epochs=1, batch_size=4, seed=1, device="cpu"),
        print,
    )
    assert other_recipe not in (first, relabelled)
    assert facts["device"] == "cpu"


def test_a_damaged_stored_fine_tune_is_redone_not_reused(tmp_path: Path) -> None:
    texts, targets, judged, config = small_task()
    first, facts = finetuned_encoder_file(texts, targets, judged, TOKENIZER, tmp_path, config, print)
    first.write_bytes(first.read_bytes()[:1000])  # truncated, as by a full disk
    messages: list[str] = []
    again, facts_again = finetuned_encoder_file(
        texts, targets, judged, TOKENIZER, tmp_path, config, messages.append
    )
    assert again == first and not any("reusing" in message for message in messages)
    assert file_sha256(again) == facts_again["sha256"] == facts["sha256"]  # same seed, same weights
    first.with_suffix(".json").write_text("{ half a fil", encoding="utf-8")
    messages.clear()
    finetuned_encoder_file(texts, targets, judged, TOKENIZER, tmp_path, config, messages.append)
    assert not any("reusing" in message for message in messages)


def test_an_unwritable_store_fails_before_any_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    messages: list[str] = []
    with pytest.raises(ConfigurationError, match="not writable"):
        finetuned_encoder_file(
            THREATS,
            np.ones((8, 1), dtype=bool),
            np.ones((8, 1), dtype=bool),
            TOKENIZER,
            blocker / "store",
            FinetuneConfig(device="cpu"),
            messages.append,
        )
    assert messages == []


def test_bad_fine_tuning_input_is_refused_before_any_training() -> None:
    with pytest.raises(ConfigurationError, match="epoch"):
        FinetuneConfig(epochs=0)
    with pytest.raises(ConfigurationError, match="learning rates"):
        FinetuneConfig(encoder_learning_rate=0)
    with pytest.raises(ConfigurationError, match="weight decay"):
        FinetuneConfig(weight_decay=-0.1)
    with pytest.raises(ConfigurationError, match="at least one training row"):
        finetune_encoder([], np.zeros((0, 1), dtype=bool), np.zeros((0, 1), dtype=bool), TOKENIZER)
    with pytest.raises(ValueError, match="same rows"):
        finetune_encoder(["a", "b"], np.zeros((1, 1), dtype=bool), np.zeros((1, 1), dtype=bool), TOKENIZER)


def test_the_runtime_reads_the_fine_tuned_encoder_that_model_json_names(tmp_path: Path) -> None:
    artefacts = tmp_path / "model"
    shutil.copytree(default_model_dir(), artefacts)
    stock = TextClassifier.load(artefacts, multilingual="off")
    assert stock.context is not None
    assert stock.context.encoder.model_file == onnx_model_path()  # type: ignore[attr-defined]

    texts = THREATS + PLAIN
    labels = np.array([True] * len(THREATS) + [False] * len(PLAIN))
    config = FinetuneConfig(epochs=3, batch_size=8, encoder_learning_rate=1e-4, device="cpu")
    tuned = finetune_encoder(texts, labels[:, None], np.ones((len(texts), 1), dtype=bool), TOKENIZER, config)
    encoder_file = artefacts / CONTEXT_ENCODER_FILE
    export_encoder(tuned, encoder_file, TOKENIZER, texts)
    # A file model.json does not name is not read: the head was fitted on the stock encoder.
    stray = TextClassifier.load(artefacts, multilingual="off")
    assert stray.context is not None and stray.context.encoder.model_file == onnx_model_path()  # type: ignore[attr-defined]

    meta_file = artefacts / "model.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["contextual"]["encoder"] = {"file": CONTEXT_ENCODER_FILE, "sha256": file_sha256(encoder_file)}
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    reloaded = TextClassifier.load(artefacts, multilingual="off")
    assert reloaded.context is not None
    assert reloaded.context.encoder.model_file == encoder_file  # type: ignore[attr-defined]
    # Same head, another encoder: the contextual path's scores move; the fast path's do not.
    assert not np.allclose(reloaded.score(texts, "on"), stock.score(texts, "on"), atol=1e-3)
    assert np.allclose(reloaded.score(texts, "off"), stock.score(texts, "off"))

    # Another file under the name, or none: refused, never scored with a head it does not fit.
    shutil.copyfile(onnx_model_path(), encoder_file)
    with pytest.raises(ModelArtefactError, match="sha256 differs"):
        TextClassifier.load(artefacts, multilingual="off")
    encoder_file.unlink()
    with pytest.raises(ModelArtefactError, match="missing"):
        TextClassifier.load(artefacts, multilingual="off")
    # Without the contextual stage the encoder is not needed at all.
    assert TextClassifier.load(artefacts, contextual=False, multilingual="off").context is None


def test_a_damaged_encoder_file_is_a_clear_artefact_error(tmp_path: Path) -> None:
    damaged = tmp_path / "encoder.onnx"
    damaged.write_bytes(onnx_model_path().read_bytes()[:5000])
    with pytest.raises(ModelArtefactError, match="cannot load the sentence encoder"):
        ContextEncoder(TOKENIZER, damaged)
