"""The offline domain detector on the labelled fixtures, and the hold rules of ReviewService.

Fixtures (authored for seawall, tests/data/review/): ``domains_dev.jsonl`` — the detector's cues
were written and tuned on it; ``domains_holdout.jsonl`` — written next, first measured with the
detector frozen (any-domain P 0.94 / R 0.42), then looked at to widen the cue lists, so it is
no longer independent; ``domains_holdout2.jsonl`` — written after that, measured once: the
honest figure. The floors below guard against regressions; the printout gives the figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall.review import DomainDetector, ReviewService, ReviewSettings
from seawall.settings import StoreSettings
from seawall.store import SqlStore, open_store

DATA = Path(__file__).parent / "data" / "review"
DOMAINS = ("health", "finance", "law", "code")


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def detector() -> DomainDetector:
    return DomainDetector()


def figures(detector: DomainDetector, rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    found = [v.domain for v in detector.detect_many([row["text"] for row in rows])]
    truth = [row["domain"] for row in rows]
    out: dict[str, tuple[float, float]] = {}
    for domain in (*DOMAINS, "any"):
        if domain == "any":
            hits = [(f is not None, t is not None) for f, t in zip(found, truth, strict=True)]
        else:
            hits = [(f == domain, t == domain) for f, t in zip(found, truth, strict=True)]
        tp = sum(1 for f, t in hits if f and t)
        precision = tp / max(1, sum(1 for f, _ in hits if f))
        recall = tp / max(1, sum(1 for _, t in hits if t))
        out[domain] = (round(precision, 2), round(recall, 2))
    return out


@pytest.mark.parametrize(
    ("fixture", "floor_p", "floor_r"),
    [
        ("domains_dev.jsonl", 0.95, 0.95),
        ("domains_holdout.jsonl", 0.9, 0.85),
        ("domains_holdout2.jsonl", 0.9, 0.6),
    ],
)
def test_domain_detector_precision_and_recall(
    detector: DomainDetector, fixture: str, floor_p: float, floor_r: float
) -> None:
    rows = load(fixture)
    assert {row["domain"] for row in rows} == {*DOMAINS, None}
    result = figures(detector, rows)
    print(
        f"\n{fixture} ({len(rows)} texts): "
        + "; ".join(f"{d} P={p:.2f} R={r:.2f}" for d, (p, r) in result.items())
    )
    precision, recall = result["any"]
    assert precision >= floor_p and recall >= floor_r, result


def test_detector_examples(detector: DomainDetector) -> None:
    assert detector.detect("What is the maximum daily dose of paracetamol?").domain == "health"
    assert detector.detect("Should I move my pension into index funds?").domain == "finance"
    assert detector.detect("Can my landlord keep my deposit?").domain == "law"
    assert detector.detect("```python\nprint(x[0])\n``` raises IndexError").domain == "code"
    verdict = detector.detect("Write a poem about the sea.")
    assert verdict.domain is None and max(verdict.scores.values()) < detector.threshold
    assert DomainDetector(["law"]).detect("What is the maximum daily dose of paracetamol?").domain is None


# ----------------------------------------------------------------- the hold rules


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}"))
    yield opened
    opened.close()


def body(text: str, **review: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}]}
    if review:
        request["seawall"] = {"review": review}
    return request


def decision(step: str, action: str, categories: list[str], **scores: float) -> dict[str, Any]:
    return {"step": step, "action": action, "categories": categories, "scores": scores}


CLEAN = [decision("input_moderation", "allow", [], violence=0.01)]


def test_hold_rules(store: SqlStore, detector: DomainDetector) -> None:
    service = ReviewService(store, ReviewSettings(enabled=True, uncertain_low=0.3), detector=detector)
    try:
        assert service.should_hold(body("What is the capital of France?"), CLEAN) is None
        held = service.should_hold(body("Can I take ibuprofen with warfarin?"), CLEAN)
        assert held is not None and held.domain == "health" and held.reasons == ("domain:health",)
        declared = service.should_hold(body("Tell me about Paris", domain="law"), CLEAN)
        assert declared is not None and declared.reasons == ("declared:law",)
        # the app says: no high-risk domain here
        assert service.should_hold(body("Can I take ibuprofen with warfarin?", domain="none"), CLEAN) is None
        # the uncertain band: at or above uncertain_low, below the flag threshold (not flagged)
        band = [decision("output_moderation", "allow", [], harassment=0.42, violence=0.05)]
        uncertain = service.should_hold(body("What is the capital of France?"), band)
        assert uncertain is not None and uncertain.reasons == ("uncertain:harassment",)
        assert uncertain.domain is None and uncertain.scores["harassment"] == 0.42
        below = [decision("output_moderation", "allow", [], harassment=0.29)]
        assert service.should_hold(body("What is the capital of France?"), below) is None
        # a category flagged with the 'flag' action was let through: a person looks at it
        flagged = [decision("input_moderation", "flag", ["violence"], violence=0.91)]
        assert service.should_hold(body("What is the capital of France?"), flagged).reasons == (  # type: ignore[union-attr]
            "flagged:violence",
        )
        # an answer already refused or filtered is not held
        filtered = [decision("output_moderation", "filter", ["violence"], violence=0.95)]
        assert service.should_hold(body("Can I take ibuprofen with warfarin?"), filtered) is None
    finally:
        service.close()


def test_hold_settings_switches(store: SqlStore, detector: DomainDetector) -> None:
    off = ReviewService(store, ReviewSettings(enabled=False), detector=detector)
    no_detect = ReviewService(
        store, ReviewSettings(enabled=True, detect_domains=False, uncertain_low=None), detector=detector
    )
    only_code = ReviewService(store, ReviewSettings(enabled=True, domains=["code"]), detector=detector)
    try:
        question = body("Can I take ibuprofen with warfarin?")
        assert off.should_hold(question, CLEAN) is None
        assert no_detect.should_hold(question, CLEAN) is None
        assert no_detect.should_hold(body("x", domain="health"), CLEAN) is not None
        assert (
            no_detect.should_hold(body("x"), [decision("output_moderation", "allow", [], harassment=0.6)])
            is None
        )
        assert only_code.should_hold(question, CLEAN) is None
        assert only_code.should_hold(body("x", domain="health"), CLEAN) is None  # not a held domain here
        assert only_code.should_hold(body("Fix my Python TypeError"), CLEAN) is not None
    finally:
        for service in (off, no_detect, only_code):
            service.close()


@pytest.mark.parametrize(
    ("review", "param"),
    [
        ({"domain": "cooking"}, "seawall.review.domain"),
        ({"sources": "text"}, "seawall.review.sources"),
        ({"sources": [{"text": 3}]}, "seawall.review.sources[0]"),
        ({"sources": [{"text": "a", "url": "b"}]}, "seawall.review.sources[0]"),
        ({"notes": 5}, "seawall.review.notes"),
        ({"colour": "red"}, "seawall.review.colour"),
        ({"webhook": "https://not-allowed.example/x"}, "seawall.review.webhook"),
    ],
)
def test_bad_review_fields_are_400s_naming_the_field(
    store: SqlStore, review: dict[str, Any], param: str
) -> None:
    service = ReviewService(store, ReviewSettings())
    try:
        with pytest.raises(Exception) as refused:
            service.review_request(body("x", **review))
        assert refused.value.status_code == 400 and refused.value.param == param  # type: ignore[attr-defined]
    finally:
        service.close()


def test_sources_over_the_limit_are_413(store: SqlStore) -> None:
    service = ReviewService(store, ReviewSettings(max_sources_chars=10))
    try:
        with pytest.raises(Exception) as refused:
            service.review_request(body("x", sources=[{"title": "t", "text": "x" * 20}]))
        assert refused.value.status_code == 413  # type: ignore[attr-defined]
    finally:
        service.close()
