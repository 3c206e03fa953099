"""The moderation model card is written whole from the artefacts and evaluation.json, never by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seawall.errors import ModelArtefactError
from seawall.model.classifier import default_model_dir
from seawall.training.model_card import CARD_NOTES, EVALUATION_FILE, refresh_model_card


def _copy(tmp_path: Path, notes: dict[str, list[str]] | None = None) -> Path:
    """A copy of the shipped artefacts, with ``notes`` as evaluation.json's card notes when given."""
    folder = tmp_path / "artefacts"
    shutil.copytree(default_model_dir(), folder)
    if notes is not None:
        path = folder / EVALUATION_FILE
        evaluation = json.loads(path.read_text(encoding="utf-8"))
        evaluation[CARD_NOTES] = notes
        path.write_text(json.dumps(evaluation), encoding="utf-8")
    return folder


def test_the_shipped_card_is_what_the_generator_writes(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    refresh_model_card(folder)
    shipped = (default_model_dir() / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert (folder / "MODEL_CARD.md").read_text(encoding="utf-8") == shipped, (
        "MODEL_CARD.md was edited by hand: put the paragraph in evaluation.json's card_notes"
    )


def test_hand_written_notes_close_their_section_and_survive_a_rewrite(tmp_path: Path) -> None:
    folder = _copy(tmp_path, {"Thresholds": ["A note on the thresholds,\nover two lines."]})
    refresh_model_card(folder)
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    section = card.split("## Thresholds\n", 1)[1].split("\n## ", 1)[0]
    assert section.rstrip().endswith("A note on the thresholds,\nover two lines.")
    refresh_model_card(folder)
    assert (folder / "MODEL_CARD.md").read_text(encoding="utf-8") == card


def test_a_note_for_a_section_the_card_lacks_is_a_clear_error(tmp_path: Path) -> None:
    folder = _copy(tmp_path, {"No such section": ["text"]})
    with pytest.raises(ModelArtefactError, match="No such section"):
        refresh_model_card(folder)


def test_the_leave_one_source_out_means_are_computed_from_the_folds() -> None:
    card = (default_model_dir() / "MODEL_CARD.md").read_text(encoding="utf-8")
    evaluation = json.loads((default_model_dir() / EVALUATION_FILE).read_text(encoding="utf-8"))
    on = [fold["modes"]["on"]["any_auprc"] for fold in evaluation["loso"]]
    assert f"`on` {sum(on) / len(on):.4f};" in card


def test_the_card_says_how_a_fine_tuned_encoder_was_stored() -> None:
    from seawall.training.model_card import encoder_lines

    facts = {
        "fine_tuned": True,
        "rows": 4000,
        "epochs": 1,
        "batch_size": 32,
        "encoder_learning_rate": 2e-5,
        "seed": 0,
        "export_min_cosine": 0.9981,
    }
    # a store written before the float16 fallback names no storage: it was int8
    assert "(int8 weights, dequantised when loaded;" in "\n".join(encoder_lines(facts))
    drifted = "\n".join(encoder_lines(facts | {"export_weights": "float16", "export_min_cosine": 0.99999}))
    assert "(float16 weights, cast to float when loaded;" in drifted and "int8" not in drifted
    assert "within cosine 0.99999" in drifted
