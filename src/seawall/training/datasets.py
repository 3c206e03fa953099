"""Loaders that map each set in ``shared/data`` onto seawall's labels.

Each loader reads one folder and yields :class:`Example` rows, following the
mapping in ``shared/data/README.md`` (its cautions included: weak labels get
low weights, "other-unsafe" rows are left out rather than called benign, and
negatives from hostile sources are down-weighted). ``group`` keeps templated
or augmented variants together so they never straddle the train/dev split.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seawall.categories import ALL_LABELS, with_parents
from seawall.errors import DataError

csv.field_size_limit(10_000_000)

#: The labels a toxicity annotation speaks to.
_TOXICITY = frozenset({"harassment", "harassment/threatening", "hate", "hate/threatening"})


@dataclass(frozen=True)
class Example:
    text: str
    labels: frozenset[str]
    source: str
    group: str
    weight: float = 1.0
    #: Labels this source cannot speak to (its rows are neither positive nor negative there).
    unknown: frozenset[str] = field(default_factory=frozenset)


def _ex(
    text: str,
    labels: Iterable[str],
    source: str,
    group: str | None = None,
    weight: float = 1.0,
    unknown: Iterable[str] = (),
) -> Example | None:
    text = (text or "").strip()
    if len(text) < 2:
        return None
    closed = frozenset(with_parents(set(labels)))
    invalid = [label for label in closed | set(unknown) if label not in ALL_LABELS]
    if invalid:
        raise DataError(f"{source}: unknown labels {invalid}")
    return Example(
        text, closed, source, f"{source}:{group or _digest(text)}", weight, frozenset(unknown) - closed
    )


def _digest(text: str) -> str:
    return hashlib.sha1(re.sub(r"\W+", " ", text.lower()).strip().encode()).hexdigest()[:16]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", errors="replace")  # type: ignore[return-value]
    return path.open(encoding="utf-8", errors="replace")  # type: ignore[return-value]


def _csv_rows(path: Path, **kwargs: Any) -> Iterator[dict[str, str]]:
    with _open_text(path) as handle:
        yield from csv.DictReader(handle, **kwargs)


def _json(path: Path) -> Any:
    with _open_text(path) as handle:
        return json.load(handle)


def _lines(path: Path) -> list[str]:
    with _open_text(path) as handle:
        return [line.strip() for line in handle if line.strip()]


def _sample(rows: list[Example], n: int, seed: int = 13) -> list[Example]:
    if len(rows) <= n:
        return rows
    return random.Random(seed).sample(rows, n)


def _clean_tweet(text: str) -> str:
    text = re.sub(r"^(RT\s+)?(@\w+:?\s*)+", "", text)
    text = re.sub(r"&amp;", "&", text)
    text = re.sub(r"&lt;", "<", text)
    text = re.sub(r"&gt;", ">", text)
    text = re.sub(r"&#\d+;", " ", text)
    return re.sub(r"https?://\S+", "", text).strip()


# --- realistic user-written text: harassment, hate, threats ------------------------------------


def jigsaw_toxic_sample(root: Path) -> list[Example]:
    out = []
    with _open_text(root / "jigsaw_toxic_sample" / "jigsaw_balanced_12k.csv.gz") as handle:
        for row in csv.reader(handle):
            if len(row) < 2 or row[1] not in {"0", "1"}:
                continue
            out.append(_ex(row[0], ["harassment"] if row[1] == "1" else [], "jigsaw"))
    return [e for e in out if e]


def wiki_context_toxicity(root: Path) -> list[Example]:
    out = []
    for name in ("cat_large_gc.csv.gz", "cat_large_gn.csv.gz"):
        for row in _csv_rows(root / "wiki_context_toxicity" / name):
            toxic = row.get("label") == "1"
            out.append(
                _ex(row["text"], ["harassment"] if toxic else [], "wiki_ctx", weight=1.0 if toxic else 0.6)
            )
    return [e for e in out if e]


def wiki_toxicity_testset(root: Path) -> list[Example]:
    out = [
        _ex(row["comment"], ["harassment"] if row["toxic"] == "True" else [], "wiki_tox_test")
        for row in _csv_rows(root / "wiki_toxicity_testset" / "toxicity_nonfuzzed_testset.csv.gz")
    ]
    return [e for e in out if e]


def toxic_spans(root: Path) -> list[Example]:
    folder = root / "toxic_spans"
    comments = {row["comment_id"]: row["comment_text"] for row in _csv_rows(folder / "comments.csv.gz")}
    annotation_comment: dict[str, str] = {}
    not_toxic_votes: dict[str, list[bool]] = {}
    for row in _csv_rows(folder / "annotations.csv.gz"):
        annotation_comment[row["annotation"]] = row["comment_id"]
        not_toxic_votes.setdefault(row["comment_id"], []).append(row["not toxic"] == "True")
    votes: dict[str, dict[str, set[str]]] = {}
    for row in _csv_rows(folder / "spans.csv.gz"):
        comment = annotation_comment.get(row["annotation"])
        if comment:
            votes.setdefault(comment, {}).setdefault(row["type"], set()).add(row["annotation"])
    out = []
    for comment_id, text in comments.items():
        typed = {kind: len(annotators) for kind, annotators in votes.get(comment_id, {}).items()}
        labels: set[str] = set()
        if typed.get("Insult", 0) >= 2:
            labels.add("harassment")
        if typed.get("Identity based Attack", 0) >= 2:
            labels.add("hate")
        if typed.get("Threat", 0) >= 2:
            labels |= {"violence", "hate/threatening" if "hate" in labels else "harassment/threatening"}
        all_clear = not_toxic_votes.get(comment_id) and all(not_toxic_votes[comment_id])
        if labels or all_clear:
            out.append(_ex(text, labels, "toxic_spans"))
    return [e for e in out if e]


def davidson(root: Path) -> list[Example]:
    out = []
    for row in _csv_rows(root / "davidson" / "labeled_data.csv"):
        text = _clean_tweet(row["tweet"])
        cls = row["class"]
        if cls == "0":
            # Hate speech by the annotators' majority; whether it also torments a person is not judged.
            out.append(_ex(text, ["hate"], "davidson", weight=0.7, unknown=["harassment"]))
        elif cls == "1":
            # "Offensive" is mostly profanity and casual slurs with no target: by the labelling guide
            # crude language is not harassment by itself, so these rows teach neither way.
            out.append(_ex(text, [], "davidson", weight=0.25, unknown=_TOXICITY))
        else:
            out.append(_ex(text, [], "davidson", weight=0.8))
    return [e for e in out if e]


def convabuse(root: Path) -> list[Example]:
    out = []
    for split in ("train", "valid", "test"):
        for row in _csv_rows(root / "convabuse" / f"ConvAbuseEMNLP{split}.csv.gz"):
            annotators = sorted({key.split("_", 1)[0] for key in row if key.startswith("Annotator")})
            abusive = 0
            rated = 0
            kinds: dict[str, int] = {}
            for ann in annotators:
                if row.get(f"{ann}_is_abuse.1", "") == "":
                    continue
                rated += 1
                if any(row.get(f"{ann}_is_abuse.{v}") == "1" for v in ("-1", "-2", "-3")):
                    abusive += 1
                    for kind in (
                        "sexist",
                        "sex_harassment",
                        "homophobic",
                        "racist",
                        "transphobic",
                        "ableist",
                    ):
                        if row.get(f"{ann}_{kind}") == "1":
                            kinds[kind] = kinds.get(kind, 0) + 1
            if not rated:
                continue
            labels: set[str] = set()
            if abusive * 2 > rated:
                labels.add("harassment")
                if kinds.get("sex_harassment", 0) * 2 >= abusive:
                    labels.add("sexual")
                if any(
                    kinds.get(k, 0) * 2 >= abusive for k in ("sexist", "homophobic", "racist", "transphobic")
                ):
                    labels.add("hate")
            elif abusive:
                continue  # a minority saw abuse: too ambiguous to call either way
            out.append(_ex(row["user"], labels, "convabuse", group=row.get("conv_id")))
    return [e for e in out if e]


def edos(root: Path) -> list[Example]:
    out = []
    for row in _csv_rows(root / "edos" / "edos_labelled_aggregated.csv.gz"):
        vector = row["label_vector"]
        if row["label_sexist"] == "sexist":
            labels = {"hate"}
            if vector.startswith(("1.1", "1.2")):
                labels |= {"hate/threatening", "violence"}
            weight = 0.6 if vector.startswith(("3.3", "3.4", "4.")) else 1.0
            out.append(_ex(row["text"], labels, "edos", weight=weight))
        else:
            # "Not sexist" includes crude or violent posts: a soft negative (README caution).
            out.append(_ex(row["text"], [], "edos", weight=0.4))
    return [e for e in out if e]


def stormfront(root: Path) -> list[Example]:
    out = []
    for row in _csv_rows(root / "stormfront_hate" / "stormfront_sentences.csv.gz"):
        if row["label"] == "hate":
            out.append(_ex(row["text"], ["hate"], "stormfront", group=row["comment_id"]))
        elif row["label"] == "noHate":
            out.append(_ex(row["text"], [], "stormfront", group=row["comment_id"], weight=0.3))
    return [e for e in out if e]


_HATECHECK_BENIGN_PREFIXES = (
    "ident_",
    "counter_",
    "negate_neg",
    "profanity_nh",
    "slur_reclaimed",
    "slur_homonym",
    "target_obj",
)


def _hatecheck_labels(functionality: str, gold: str) -> set[str] | None:
    if gold == "hateful":
        labels = {"hate"}
        if functionality in {"threat_dir_h", "threat_norm_h"}:
            labels |= {"hate/threatening", "violence"}
        return labels
    if functionality in {"target_indiv_nh", "target_group_nh"}:
        return {"harassment"}
    if functionality.startswith(_HATECHECK_BENIGN_PREFIXES):
        return set()
    return None


def hatecheck(root: Path) -> list[Example]:
    out = []
    for row in _csv_rows(root / "hatecheck" / "test_suite_cases.csv"):
        labels = _hatecheck_labels(row["functionality"], row["label_gold"])
        if labels is not None:
            out.append(
                _ex(
                    row["test_case"],
                    labels,
                    "hatecheck",
                    group=row["templ_id"] or row["case_templ"],
                    weight=0.5,
                )
            )
    return [e for e in out if e]


def mhc(root: Path) -> list[Example]:
    out = []
    for path in sorted((root / "mhc").glob("*.csv.gz")):
        for row in _csv_rows(path):
            if row.get("disagreement_in_case") in {"True", "1", "true"}:
                continue
            labels = _hatecheck_labels(row["functionality"], row["label_gold"])
            if labels is not None:
                out.append(
                    _ex(row["test_case"], labels, "mhc", group=f"{path.stem}:{row['templ_id']}", weight=0.2)
                )
    return _sample([e for e in out if e], 9000)


def toxigen_seeds(root: Path) -> list[Example]:
    out = []
    for path in sorted((root / "toxigen_seeds" / "demonstrations").glob("*/*.txt")):
        hateful = path.name.startswith("hate")
        for line in _lines(path):
            out.append(_ex(line.lstrip("- "), ["hate"] if hateful else [], "toxigen"))
    return [e for e in out if e]


def identity_templates(root: Path) -> list[Example]:
    out = [
        _ex(
            row["phrase"],
            ["hate"] if row["toxicity"] == "toxic" else [],
            "identity_tpl",
            group=row["template"],
            weight=0.3,
        )
        for row in _csv_rows(root / "identity_templates" / "en_sentence_templates.csv")
    ]
    return _sample([e for e in out if e], 3000)


def mlma(root: Path) -> list[Example]:
    out = []
    for name in ("en_dataset_with_stop_words.csv", "fr_dataset.csv", "ar_dataset.csv"):
        for row in _csv_rows(root / "mlma" / name):
            sentiment = set(row.get("sentiment", "").split("_"))
            if sentiment == {"normal"}:
                out.append(_ex(_clean_tweet(row["tweet"]), [], "mlma", weight=0.5))
            elif "hateful" in sentiment and row.get("target") not in {"other", ""}:
                out.append(_ex(_clean_tweet(row["tweet"]), ["hate"], "mlma", weight=0.5))
            elif sentiment & {"offensive", "abusive", "disrespectful"}:
                out.append(_ex(_clean_tweet(row["tweet"]), ["harassment"], "mlma", weight=0.3))
    return [e for e in out if e]


def told_br(root: Path) -> list[Example]:
    out = []
    for row in _csv_rows(root / "told_br" / "ToLD-BR.csv.gz"):
        votes = {
            k: int(float(row[k] or 0))
            for k in ("homophobia", "obscene", "insult", "racism", "misogyny", "xenophobia")
        }
        labels: set[str] = set()
        if votes["insult"] >= 2:
            labels.add("harassment")
        if any(votes[k] >= 2 for k in ("homophobia", "racism", "misogyny", "xenophobia")):
            labels.add("hate")
        if labels or not any(votes.values()):
            out.append(_ex(_clean_tweet(row["text"]), labels, "told_br", weight=0.4))
    return _sample([e for e in out if e], 6000)


def korean_hate_speech(root: Path) -> list[Example]:
    out = []
    for name in ("train.tsv", "dev.tsv"):
        for row in _csv_rows(root / "korean_hate_speech" / name, delimiter="\t"):
            if row["hate"] == "hate":
                labels = {"hate"} if row["bias"] != "none" else {"harassment"}
                out.append(_ex(row["comments"], labels, "korean_hate", weight=0.4))
            elif row["hate"] == "none":
                out.append(_ex(row["comments"], [], "korean_hate", weight=0.4))
    return [e for e in out if e]


def cold(root: Path) -> list[Example]:
    out = []
    for name in ("train.csv.gz", "dev.csv.gz", "test.csv.gz"):
        for row in _csv_rows(root / "cold" / name):
            fine = row.get("fine-grained-label")
            if row["label"] == "1":
                labels = {"harassment"} if fine == "1" else {"hate"}
                out.append(_ex(row["TEXT"], labels, "cold", weight=0.3))
            else:
                out.append(_ex(row["TEXT"], [], "cold", weight=0.3))
    return _sample([e for e in out if e], 6000)


def rtp_challenging(root: Path) -> list[Example]:
    mapping = {
        "sexually_explicit": ["sexual"],
        "threat": ["harassment", "harassment/threatening", "violence"],
        "identity_attack": ["hate"],
        "insult": ["harassment"],
    }
    # severe_toxicity and profanity are Perspective's scores for crude language, which the
    # labelling guide does not count as harassment by itself: not used.
    out = []
    for attribute, labels in mapping.items():
        for line in _lines(root / "rtp_challenging" / f"rtp_{attribute}.txt"):
            out.append(_ex(line, labels, "rtp", weight=0.4))
    return [e for e in out if e]


# --- requests to a chatbot ---------------------------------------------------------------------


def advbench(root: Path) -> list[Example]:
    out = []
    for row in _json(root / "advbench" / "adv_bench_dataset.json")["data"]:
        subs = set(row.get("sub_categories", []))
        labels = {"illicit"}
        if subs & {"Violence/armed conflict", "Loss of life", "Bodily injury"}:
            labels |= {"illicit/violent", "violence"}
        if "Self-harm" in subs:
            labels = {"self-harm", "self-harm/instructions"}
        if "Harassment/abuse/intimidation" in subs:
            labels.add("harassment")
        if subs & {"Discrimination", "Dehumanisation/objectification"}:
            labels.add("hate")
        if "Sexualisation" in subs:
            labels.add("sexual")
        out.append(_ex(row["prompt"], labels, "advbench", weight=0.7))
    return [e for e in out if e]


_CATQA = {
    ("Illegal Activity", "Weapon"): {"illicit", "illicit/violent"},
    ("Child Abuse", "Content Sexual exploitation"): {"sexual/minors"},
    ("Child Abuse", "Online predation"): {"sexual/minors"},
    ("Child Abuse", "Physical abuse"): {"violence", "illicit/violent"},
    ("Child Abuse", "Emotional and psychological abuse"): {"harassment"},
    ("Child Abuse", "Neglect"): {"illicit"},
    ("Physical Harm", "Self-harm"): {"self-harm", "self-harm/instructions"},
}
_CATQA_CATEGORY = {
    "Illegal Activity": {"illicit"},
    "Malware Viruses": {"illicit"},
    "Economic Harm": {"illicit"},
    "Fraud/Deception": {"illicit"},
    "Adult Content": {"sexual"},
    "Physical Harm": {"illicit/violent", "violence"},
}


def catqa(root: Path) -> list[Example]:
    out = []
    for category, subcategories in _json(root / "catqa_harmfulqa" / "catqa_english.json").items():
        for subcategory, questions in subcategories.items():
            labels = _CATQA.get((category, subcategory))
            if labels is None and category == "Hate/Harass/Violence":
                lower = subcategory.lower()
                labels = (
                    {"hate"}
                    if "racial" in lower or "relig" in lower
                    else {"harassment"}
                    if "bully" in lower
                    else {"illicit/violent", "violence"}
                    if "terror" in lower
                    else {"violence"}
                )
            if labels is None:
                labels = _CATQA_CATEGORY.get(category)
            if labels is None:
                continue  # political, privacy, financial advice: other-unsafe, not benign
            for question in questions:
                out.append(_ex(question, labels, "catqa", group=f"{category}/{subcategory}", weight=0.7))
    return [e for e in out if e]


_DNA = {
    "S005hate": {"hate"},
    "S005bully": {"harassment"},
    "S006threat": {"harassment", "harassment/threatening"},
    "S006violence": {"violence"},
    "S006sh": {"self-harm"},
    "S006items": {"illicit", "illicit/violent"},
    "S006instructions": {"illicit"},
}


def donotanswer(root: Path) -> list[Example]:
    out = []
    for path in sorted((root / "donotanswer").glob("*.jsonl")):
        for line in _lines(path):
            row = json.loads(line)
            labels: set[str] = set()
            for intent in row.get("intents", []):
                if intent in _DNA:
                    labels |= _DNA[intent]
                elif intent.startswith("S004"):
                    labels.add("sexual")
                elif intent.startswith(("S003", "S008")):
                    labels.add("illicit")
            if labels:
                out.append(_ex(row["prompt"], labels, "donotanswer", weight=0.6))
    return [e for e in out if e]


_AILUMINATE = {
    "vcr": {"violence", "illicit", "illicit/violent"},
    "ncr": {"illicit"},
    "src": {"sexual", "illicit"},
    "cse": {"sexual/minors"},
    "sxc_prn": {"sexual"},
    "hte": {"hate"},
    "iwp": {"illicit", "illicit/violent"},
}
_FIRST_PERSON_SH = re.compile(r"\b(i|i'm|im|i've|my|me|myself)\b", re.I)


def ailuminate(root: Path) -> list[Example]:
    out = []
    for row in _csv_rows(root / "ailuminate" / "airr_official_1.0_demo_en_us_prompt_set_release.csv"):
        hazard = row["hazard"]
        labels = set(_AILUMINATE.get(hazard, set()))
        if hazard == "ssh":
            intent = _FIRST_PERSON_SH.search(row["prompt_text"]) and re.search(
                r"\b(want to|going to|plan|kill myself|end it|end my life|hurt myself)\b",
                row["prompt_text"],
                re.I,
            )
            labels = {"self-harm", "self-harm/intent" if intent else "self-harm/instructions"}
        if not labels:
            continue
        if row["persona"] == "skilled" and re.search(
            r"\b(pretend|role ?play|imagine|act as|story)\b", row["prompt_text"], re.I
        ):
            labels.add("jailbreak")
        out.append(_ex(row["prompt_text"], labels, "ailuminate", weight=0.8))
    return [e for e in out if e]


def tense_reformulation(root: Path) -> list[Example]:
    out = []
    for name in ("past_tense_en.txt", "future_tense_en.txt"):
        for line in _lines(root / "tense_reformulation" / name):
            out.append(_ex(line, ["illicit"], "tense", weight=0.3))
    return [e for e in out if e]


def simplesafetytests(root: Path) -> list[Example]:
    out = []
    for row in _csv_rows(root / "simplesafetytests" / "simplesafetytests_cases.csv"):
        area = row["harm_area"]
        prompt = row["prompts_final"]
        if area.startswith("Suicide"):
            labels = {
                "self-harm",
                "self-harm/intent" if _FIRST_PERSON_SH.search(prompt) else "self-harm/instructions",
            }
        elif area.startswith("Physical"):
            labels = {"violence", "illicit/violent"}
        elif area.startswith("Child"):
            labels = {"sexual/minors"} if re.search(r"sex|nude|naked|porn", prompt, re.I) else {"violence"}
        else:
            labels = {"illicit"}
        out.append(_ex(prompt, labels, "sst"))
    return [e for e in out if e]


# --- benign requests and hard negatives --------------------------------------------------------


def clinc_oos(root: Path) -> list[Example]:
    data = _json(root / "clinc_oos" / "data_full.json")
    out = [
        _ex(text, [], "clinc", group=intent, weight=0.5) for split in data.values() for text, intent in split
    ]
    return _sample([e for e in out if e], 5000)


def self_instruct(root: Path) -> list[Example]:
    out = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for line in _lines(root / "self_instruct" / name):
            row = json.loads(line)
            for instance in row.get("instances", [])[:1]:
                text = f"{row['instruction']}\n{instance.get('input', '')}".strip()
                out.append(_ex(text, [], "self_instruct"))
    return [e for e in out if e]


def mitre_frr(root: Path) -> list[Example]:
    out = [
        _ex(row["mutated_prompt"], [], "mitre_frr") for row in _json(root / "cyberseceval" / "mitre_frr.json")
    ]
    return [e for e in out if e]


def counsel_chat(root: Path) -> list[Example]:
    out = []
    seen: set[str] = set()
    for row in _csv_rows(root / "counsel_chat" / "20200325_counsel_chat.csv.gz"):
        question = f"{row['questionTitle']}. {row['questionText']}"
        if row["questionID"] not in seen and row["topic"] not in {
            "depression",
            "self-harm",
            "trauma",
            "eating-disorders",
        }:
            seen.add(row["questionID"])
            out.append(_ex(question, [], "counsel_chat", group=row["questionID"], weight=0.6))
        out.append(_ex(row["answerText"], [], "counsel_chat", group=row["questionID"], weight=0.3))
    return _sample([e for e in out if e], 1500)


_SH_EXPLICIT = re.compile(
    r"\b(kill(ing)? myself|suicid\w*|end(ing)? (my|it all)|cut(ting)? myself|self[- ]harm\w*|overdos\w*|"
    r"want to die|wanna die|don'?t want to (live|be alive)|slit\w* my|hang(ing)? myself)\b",
    re.I,
)
_SH_INTENT = re.compile(
    r"\b(i('m| am)? (going to|gonna|want to|wanna|will|plan to|thinking (about|of))"
    r"|i've been|i keep|tonight|i (cut|hurt))\b",
    re.I,
)


def diasafety(root: Path) -> list[Example]:
    out = []
    seen: set[str] = set()
    for split in ("train", "val", "test"):
        for row in _json(root / "diasafety" / f"{split}.json.gz"):
            context = row["context"]
            if context in seen:
                continue
            seen.add(context)
            if row["category"] == "Risk Ignorance":
                if _SH_EXPLICIT.search(context):
                    labels = {"self-harm"}
                    if _SH_INTENT.search(context):
                        labels.add("self-harm/intent")
                    out.append(_ex(context, labels, "diasafety", weight=0.6))
                else:
                    out.append(_ex(context, [], "diasafety", weight=0.4))
            elif row["category"] == "Unauthorized Expertise":
                out.append(_ex(context, [], "diasafety", weight=0.4))
    return [e for e in out if e]


def i2p(root: Path) -> list[Example]:
    out = []
    for row in _csv_rows(root / "i2p" / "unsafe-prompts4703.csv.gz"):
        categories = {c.strip() for c in row["categories"].split(",")}
        inappropriate = float(row["inappropriate_percentage"] or 0)
        nudity = float(row["nudity_percentage"] or 0)
        labels: set[str] = set()
        if "sexual" in categories and nudity >= 50:
            labels.add("sexual")
        if (
            inappropriate >= 70
            and categories & {"violence", "shocking"}
            and re.search(
                r"blood|gore|corpse|dead|wound|decapitat|mutilat|murder|kill|guts|severed",
                row["prompt"],
                re.I,
            )
        ):
            labels |= {"violence", "violence/graphic"}
        if labels:
            out.append(_ex(row["prompt"], labels, "i2p", weight=0.4))
        elif inappropriate < 20:
            out.append(_ex(row["prompt"], [], "i2p", weight=0.3))
    return [e for e in out if e]


# --- prompt injection and jailbreaks -----------------------------------------------------------


def injection_slabs(root: Path) -> list[Example]:
    out = []
    for name in ("train.csv", "validation.csv", "test.csv"):
        for row in _csv_rows(root / "injection_s-labs" / name):
            out.append(
                _ex(row["text"], ["prompt_injection"] if row["label"] == "1" else [], "slabs", weight=0.5)
            )
    return [e for e in out if e]


def injection_neuralchemy(root: Path) -> list[Example]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError("reading injection_neuralchemy needs pyarrow: pip install 'seawall[train]'") from exc
    out = []
    for split in ("train", "validation", "test"):
        table = pq.read_table(root / "injection_neuralchemy" / f"core-{split}.parquet").to_pylist()
        for row in table:
            if row["label"] == 1:
                labels = {"prompt_injection"}
                if row.get("category") in {"jailbreak", "persona_replacement"}:
                    labels = {"jailbreak"}
            else:
                labels = set()
            out.append(_ex(row["text"], labels, "neuralchemy", group=str(row.get("group_id")), weight=0.6))
    return [e for e in out if e]


def injection_misc(root: Path) -> list[Example]:
    out = []
    for row in _csv_rows(root / "injection_yanismiraoui" / "prompt_injections.csv"):
        out.append(_ex(row["prompt_injections"], ["prompt_injection"], "yanis", weight=0.5))
    for row in _json(root / "cyberseceval" / "prompt_injection.json"):
        out.append(_ex(row["user_input"], ["prompt_injection"], "cse_inj"))
        out.append(_ex(row["test_case_prompt"], [], "cse_inj", weight=0.5))
    for name in (
        "text_attack_train.json",
        "text_attack_test.json",
        "code_attack_train.json",
        "code_attack_test.json",
    ):
        for category, items in _json(root / "bipia" / name).items():
            for item in items:
                labels = {"prompt_injection"} | ({"illicit"} if name.startswith("code") else set())
                out.append(_ex(item, labels, "bipia", group=category))
    # Trivia questions are what injected tasks usually ask ("...and tell me the capital of France"):
    # on their own they are ordinary questions, and the injection head must learn that.
    for line in _lines(root / "tasktracker" / "trivia_pairs.txt"):
        question = line.removeprefix("Question:").split(" Answer:", 1)[0].strip()
        out.append(_ex(question, [], "tasktracker_trivia"))
    for line in _lines(root / "tasktracker" / "saved_injections.txt") + _lines(
        root / "tasktracker" / "saved_injections_test.txt"
    ):
        out.append(_ex(line, ["prompt_injection"], "tasktracker", weight=0.5))
    for technique, prompts in _json(root / "sysprompt_extraction" / "attacks.json").items():
        for prompt in prompts:
            out.append(_ex(prompt, ["prompt_injection"], "sysprompt", group=technique))
    for line in _lines(root / "asb" / "all_attack_tools.jsonl"):
        row = json.loads(line)
        out.append(_ex(row["Attacker Instruction"], ["prompt_injection"], "asb", weight=0.5))
    for line in _lines(root / "asb" / "all_normal_tools.jsonl"):
        row = json.loads(line)
        out.append(_ex(str(row.get("Description", "")), [], "asb", weight=0.5))
    return [e for e in out if e]


def injecagent(root: Path) -> list[Example]:
    out = []
    for name in (
        "test_cases_dh_base.json.gz",
        "test_cases_dh_enhanced.json.gz",
        "test_cases_ds_base.json.gz",
        "test_cases_ds_enhanced.json.gz",
    ):
        for row in _json(root / "injecagent" / name):
            out.append(
                _ex(
                    row["Tool Response"],
                    ["prompt_injection"],
                    "injecagent",
                    group=row["Attacker Instruction"],
                    weight=0.3,
                )
            )
            out.append(_ex(row["User Instruction"], [], "injecagent", weight=0.3))
    return _sample([e for e in out if e], 2500)


def jailbreaks(root: Path) -> list[Example]:
    out = []
    for prompt in _json(root / "jailbreak_inthewild" / "inthewild_jailbreak_llms.json"):
        out.append(_ex(prompt, ["jailbreak"], "jb_wild"))
    for path in sorted((root / "jailbreak_dan").glob("*.json")):
        for prompt in _json(path):
            out.append(_ex(prompt.replace("{generator.name}", "ChatGPT"), ["jailbreak"], "jb_dan"))
    for line in _lines(root / "tasktracker" / "jailbreaks_pair_attack.txt"):
        out.append(_ex(line, ["jailbreak"], "pair", weight=0.5))
    # Templates filled with harmful and benign asks: the wrapper is the jailbreak, the ask adds its own harm.
    payloads = [e for e in advbench(root)][:120]
    rng = random.Random(7)
    for path in sorted((root / "pyrit_jailbreak_templates" / "templates").glob("*.yaml")):
        raw = path.read_text(encoding="utf-8", errors="replace")
        match = re.search(r"^value: [>|]-?\n((?:[ \t]+.*\n?|\n)+)", raw, re.M)
        if not match:
            continue
        template = re.sub(r"^[ \t]{2}", "", match.group(1), flags=re.M)
        for payload in rng.sample(payloads, 2):
            text = template.replace("{{ prompt }}", payload.text)
            out.append(
                _ex(text, {"jailbreak"} | set(payload.labels), "pyrit_tpl", group=path.stem, weight=0.5)
            )
    return [e for e in out if e]


# --- seawall's own authored data ---------------------------------------------------------------


def authored(folder: Path) -> list[Example]:
    """The project's own examples (``data/authored/*.jsonl`` in the repository)."""
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        for number, line in enumerate(_lines(path), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON: {exc}") from exc
            where = f"{path}:{number}"
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{where}: a row must be an object with a 'text' string")
            out.append(
                _ex(
                    row["text"],
                    _label_list(row, "labels", where),
                    f"authored/{path.stem}",
                    group=row.get("group"),
                    weight=2.0,
                    # Labels the row's author did not judge: neither positive nor negative there.
                    unknown=_label_list(row, "unknown", where),
                )
            )
    return [e for e in out if e]


def _label_list(row: dict[str, Any], key: str, where: str) -> list[str]:
    """``row[key]`` as a list of label names (absent: empty); anything else is the author's mistake."""
    value = row.get(key, [])
    if not isinstance(value, list) or not all(isinstance(label, str) for label in value):
        raise DataError(f"{where}: {key!r} must be a list of label names, not {value!r}")
    return value


#: Sources used for training, by name.
TRAINING_SOURCES: dict[str, Callable[[Path], list[Example]]] = {
    "jigsaw": jigsaw_toxic_sample,
    "wiki_ctx": wiki_context_toxicity,
    "toxic_spans": toxic_spans,
    "davidson": davidson,
    "convabuse": convabuse,
    "edos": edos,
    "stormfront": stormfront,
    "hatecheck": hatecheck,
    "mhc": mhc,
    "toxigen": toxigen_seeds,
    "identity_tpl": identity_templates,
    "mlma": mlma,
    "told_br": told_br,
    "korean_hate": korean_hate_speech,
    "cold": cold,
    "rtp": rtp_challenging,
    "advbench": advbench,
    "catqa": catqa,
    "donotanswer": donotanswer,
    "ailuminate": ailuminate,
    "tense": tense_reformulation,
    "clinc": clinc_oos,
    "self_instruct": self_instruct,
    "mitre_frr": mitre_frr,
    "counsel_chat": counsel_chat,
    "diasafety": diasafety,
    "i2p": i2p,
    "slabs": injection_slabs,
    "neuralchemy": injection_neuralchemy,
    "injection_misc": injection_misc,
    "injecagent": injecagent,
    "jailbreaks": jailbreaks,
}

#: What the annotators of each comment corpus judged. A "clean" row of these sources is a
#: negative for these labels only: a not-sexist post may still be a gore anecdote or a sex joke,
#: so for the other categories training screens such rows before trusting them
#: (``train.screen_out_of_scope_negatives``). Sources not listed judged every category.
ANNOTATED_LABELS: dict[str, frozenset[str]] = {
    "jigsaw": _TOXICITY,
    "wiki_ctx": _TOXICITY,
    "toxic_spans": _TOXICITY,
    "davidson": _TOXICITY,
    "convabuse": _TOXICITY | {"sexual"},
    "edos": frozenset({"hate", "hate/threatening"}),
    "stormfront": frozenset({"hate", "hate/threatening"}),
    "mlma": _TOXICITY,
    "told_br": _TOXICITY,
    "korean_hate": _TOXICITY,
    "cold": _TOXICITY,
}

#: Whole sources never trained on: a realistic, out-of-source dev benchmark.
HELD_OUT_SOURCES: dict[str, Callable[[Path], list[Example]]] = {
    "wiki_tox_test": wiki_toxicity_testset,
    "sst": simplesafetytests,
}


def load_sources(
    root: Path,
    names: dict[str, Callable[[Path], list[Example]]],
    progress: Callable[[str, int], None] | None = None,
) -> list[Example]:
    if not root.is_dir():
        raise DataError(
            f"training data folder {root} does not exist (expected ../shared/data or --data PATH)"
        )
    rows: list[Example] = []
    for name, loader in names.items():
        try:
            loaded = loader(root)
        except FileNotFoundError as exc:
            raise DataError(f"source {name!r}: missing file {exc.filename}") from exc
        except (KeyError, ValueError) as exc:
            raise DataError(f"source {name!r}: unexpected format: {exc!r}") from exc
        rows.extend(loaded)
        if progress:
            progress(name, len(loaded))
    return rows
