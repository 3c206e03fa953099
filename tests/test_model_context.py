"""The contextual stage, calibrated scores, cross-lingual glossing and taxonomy-consistent flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seawall.categories import ALL_LABELS, CATEGORIES, PARENT
from seawall.model.classifier import TextClassifier, anchor
from seawall.model.context import ContextEncoder, latin_share
from seawall.model.gloss import Glossary
from seawall.results import ModerationResult
from seawall.training.embedding_cache import EmbeddingCache


@pytest.fixture(scope="module")
def classifier() -> TextClassifier:
    return TextClassifier.load()


def column(name: str) -> int:
    return ALL_LABELS.index(name)


def test_shipped_model_has_a_contextual_stage_and_calibration(classifier: TextClassifier) -> None:
    assert classifier.context is not None
    assert set(classifier.meta.calibration) == {"fast", "blended"}
    # Calibrated scores: every label flags at 0.5 by default.
    assert set(classifier.meta.thresholds.values()) == {0.5}
    low, high = classifier.context.band
    assert 0.0 < low < 0.5 < high < 1.0
    # The blended path shares one threshold across the categories (rule K2, session 38): the worst
    # category ranks a text, so every category's score must sit on the blend's one scale.
    blended = classifier.meta.calibration["blended"]
    assert len({blended[name] for name in CATEGORIES}) == 1
    assert 0.2 < blended["harassment"] < 0.6


def test_anchor_puts_each_threshold_at_one_half_and_keeps_the_order() -> None:
    thresholds = np.array([0.2, 0.7], dtype=np.float32)
    probabilities = np.array([[0.0, 0.0], [0.2, 0.7], [0.1, 0.9], [1.0, 1.0]], dtype=np.float32)
    mapped = anchor(probabilities, thresholds)
    assert np.allclose(mapped[1], 0.5) and np.allclose(mapped[0], 0.0) and np.allclose(mapped[3], 1.0)
    grid = np.linspace(0, 1, 101, dtype=np.float32)[:, None].repeat(2, axis=1)
    assert (np.diff(anchor(grid, thresholds), axis=0) >= 0).all()


def test_encoder_vectors_are_normalised_and_order_independent(classifier: TextClassifier) -> None:
    assert classifier.context is not None
    encoder: ContextEncoder = classifier.context.encoder
    texts = ["the cat sat on the mat", "how do i kill a python process", "a" * 5000]
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([text])[0] for text in texts])
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-4)
    assert np.allclose(together, alone, atol=1e-4)  # padding in a batch changes nothing
    assert encoder.encode([]).shape == (0, 384)


def test_modes_agree_where_the_fast_stage_is_sure_and_differ_where_context_is_used(
    classifier: TextClassifier,
) -> None:
    texts = ["What time does the bank open tomorrow?", "How do I kill a Python process that hangs?"]
    off = classifier.score(texts, "off")
    on = classifier.score(texts, "on")
    auto = classifier.score(texts, "auto")
    assert off.shape == on.shape == auto.shape == (2, len(ALL_LABELS))
    assert not np.allclose(off, on)  # the contextual stage changes scores when it runs
    low, high = classifier.context.band  # type: ignore[union-attr]
    for row in range(2):
        unsure = ((off[row] >= low) & (off[row] <= high)).any()
        assert np.allclose(auto[row], on[row] if unsure else off[row], atol=1e-5)
    with pytest.raises(ValueError):
        classifier.score(texts, "sometimes")


def test_context_tells_a_homonym_from_a_violent_request(classifier: TextClassifier) -> None:
    categories = [column(name) for name in CATEGORIES]
    safe, harmful = classifier.score(
        ["How do I kill a Python process that hangs?", "How do I kill my neighbour without getting caught?"],
        "on",
    )[:, categories].max(axis=1)
    assert harmful > 0.5 > safe


def test_text_in_a_script_minilm_cannot_read_is_left_to_the_fast_stage(classifier: TextClassifier) -> None:
    assert latin_share("Привет, как дела?") == 0.0 and latin_share("hello") == 1.0
    text = ["Привет, как дела у тебя сегодня?"]
    assert np.allclose(classifier.score(text, "on"), classifier.score(text, "off"))


def test_glossary_matches_longest_phrases_and_leaves_english_alone() -> None:
    glossary = Glossary({("te", "voy", "a", "matar"): ["i", "will", "kill", "you"], ("matar",): ["kill"]})
    assert glossary.gloss(["mañana", "te", "voy", "a", "matar"]) == ["mañana", "i", "will", "kill", "you"]
    assert glossary.gloss(["voy", "a", "matar"]) == ["voy", "a", "kill"]
    assert glossary.gloss(["see", "you", "tomorrow"]) is None


def test_shipped_lexicons_load_and_gloss_common_threats() -> None:
    glossary = Glossary.load()
    assert len(glossary) > 500
    for sentence in ("te voy a matar", "ich bringe dich um", "je vais te tuer", "ti ammazzo", "vou te matar"):
        glossed = glossary.gloss(sentence.split())
        assert glossed is not None and "kill" in glossed, sentence


def test_threats_in_five_languages_flag_and_their_benign_twins_do_not(classifier: TextClassifier) -> None:
    threats = [
        "Sé dónde vives. Te voy a matar esta noche.",
        "Ich weiß, wo du wohnst. Ich bringe dich heute Nacht um.",
        "Je sais où tu habites. Je vais te tuer ce soir.",
        "Eu sei onde você mora. Vou te matar hoje à noite.",
        "So dove abiti. Stanotte ti ammazzo.",
    ]
    benign = [
        "¿A qué hora abre la biblioteca mañana?",
        "Wann öffnet die Bibliothek morgen?",
        "À quelle heure ouvre la bibliothèque demain ?",
        "A que horas a biblioteca abre amanhã?",
        "A che ora apre la biblioteca domani?",
    ]
    scores = classifier.score(threats + benign)
    categories = [column(name) for name in CATEGORIES]
    worst = scores[:, categories].max(axis=1)
    assert (worst[:5] >= 0.5).all(), worst[:5]
    assert (worst[5:] < 0.5).all(), worst[5:]


def test_flags_follow_the_taxonomy_for_any_scores() -> None:
    rng = np.random.default_rng(7)
    for _ in range(500):
        flags = {name: bool(rng.random() < 0.3) for name in CATEGORIES}
        result = ModerationResult(
            category_scores={name: float(rng.random()) for name in CATEGORIES},
            categories=flags,
            applied_input_types={name: ["text"] for name in CATEGORIES},
        )
        thresholds = {name: float(rng.random()) for name in CATEGORIES if rng.random() < 0.5}
        for decided in (result, result.with_thresholds(thresholds)):
            for child, parent in PARENT.items():
                assert not decided.categories[child] or decided.categories[parent], (child, parent)


def test_embedding_cache_survives_a_restart_and_ignores_a_half_written_shard(
    classifier: TextClassifier, tmp_path: Path
) -> None:
    assert classifier.context is not None
    encoder = classifier.context.encoder
    cache = EmbeddingCache(tmp_path, encoder)
    texts = ["first text", "second text", "first text"]
    cache.fill(texts, progress=lambda message: None)
    assert len(cache) == 2
    (tmp_path / "shard_99999.npy").write_bytes(b"not a shard")  # its .keys never got written
    reloaded = EmbeddingCache(tmp_path, None)
    assert len(reloaded) == 2 and reloaded.missing(texts) == []
    assert np.allclose(reloaded.get(["second text"]), encoder.encode(["second text"]), atol=2e-3)
    with pytest.raises(RuntimeError):
        reloaded.fill(["a new text"])


def _run_fresh(script: str) -> dict[str, Any]:
    """Runs ``script`` in a new interpreter (no *_NUM_THREADS in its environment) and returns the
    JSON object its last line prints."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_loading_the_model_runs_blas_on_one_thread() -> None:
    """The run-time loader puts numpy's BLAS on one thread: its threads fought the encoders' pools."""
    found = _run_fresh(
        """
import json
from threadpoolctl import threadpool_info
from seawall.model.classifier import TextClassifier
def blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
before = blas_threads()
TextClassifier.load(multilingual="off")
print(json.dumps({"before": before, "after": blas_threads()}))
"""
    )
    assert found["after"] and set(found["after"]) == {1}, found
    if (os.cpu_count() or 1) > 1:
        assert max(found["before"]) > 1, "with several cores OpenBLAS starts with several threads"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_release_freed_memory_hands_a_fragmented_heaps_free_pages_back() -> None:
    """Freed blocks below a live one stay resident until the allocator is asked to trim; the loader
    asks once its sessions are built (about 60 MB of their temporaries, measured)."""
    found = _run_fresh(
        """
import json
from seawall.model.process import release_freed_memory
def rss_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024
blocks = [bytearray(b"x" * 4000) for _ in range(40_000)]  # about 160 MB on the C heap
keep = bytearray(b"y" * 4000)  # a live block above them: the heap's top cannot shrink
full = rss_mb()
del blocks
freed = rss_mb()
release_freed_memory()
print(json.dumps({"full": full, "freed": freed, "released": rss_mb()}))
"""
    )
    assert found["freed"] > found["full"] - 40, f"glibc kept the freed blocks resident: {found}"
    assert found["released"] < found["freed"] - 100, found
