"""Hold rules (``review.rules``): what each condition matches, what the item keeps of why, the
defaults, the older settings they replace, and mistakes in a rule. Through
:class:`~seawall.review.service.ReviewService` with the real domain detector and a real SQLite
store; the gateway end of it (scan keys, the item page) is in tests/test_redteam_review.py and
tests/test_ui_queue_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from seawall.review.domains import DomainDetector
from seawall.review.rules import HoldContext
from seawall.review.service import ReviewService
from seawall.review.settings import HoldRule, ReviewSettings, default_rules
from seawall.settings import StoreSettings
from seawall.store import SqlStore, open_store

CODE_QUESTION = "How do I reverse a list in Python?"
HEALTH_QUESTION = "Can I take ibuprofen with warfarin?"
PLAIN = "What is the capital of France?"


@pytest.fixture(scope="module")
def detector() -> DomainDetector:
    return DomainDetector()


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


def asked(action: str = "allow", categories: list[str] | None = None, **scores: float) -> dict[str, Any]:
    return {"step": "input_moderation", "action": action, "categories": categories or [], "scores": scores}


def answered(action: str = "allow", categories: list[str] | None = None, **scores: float) -> dict[str, Any]:
    return {"step": "output_moderation", "action": action, "categories": categories or [], "scores": scores}


def service(store: SqlStore, detector: DomainDetector, **settings: Any) -> ReviewService:
    return ReviewService(store, ReviewSettings(enabled=True, **settings), detector=detector)


def test_the_defaults_hold_health_not_code_and_band_the_request_lower_than_the_answer(
    store: SqlStore, detector: DomainDetector
) -> None:
    defaults = service(store, detector)
    try:
        assert [rule.name for rule in defaults.rules.rules] == [rule.name for rule in default_rules()]
        quiet = [asked(harassment=0.01), answered(violence=0.02)]
        assert defaults.should_hold(body(CODE_QUESTION), quiet) is None
        held = defaults.should_hold(body(HEALTH_QUESTION), quiet)
        assert held is not None and held.reasons == ("domain:health",)
        # an answer scored 0.35 (a plot summary with a death in it) is not held; a request at 0.35 is
        assert defaults.should_hold(body(PLAIN), [asked(), answered(harassment=0.352)]) is None
        request_band = defaults.should_hold(body(PLAIN), [asked(illicit=0.35), answered()])
        assert request_band is not None and request_band.reasons == ("uncertain:illicit",)
        answer_band = defaults.should_hold(body(PLAIN), [asked(), answered(violence=0.55)])
        assert answer_band is not None and answer_band.reasons == ("uncertain:violence",)
        # a declared domain outside the rules is not held; 'none' turns detection off
        assert defaults.should_hold(body(PLAIN, domain="code"), quiet) is None
        assert defaults.should_hold(body(HEALTH_QUESTION, domain="none"), quiet) is None
    finally:
        defaults.close()


def test_the_older_settings_still_mean_what_they_meant(store: SqlStore, detector: DomainDetector) -> None:
    legacy = service(store, detector, uncertain_low=0.3, domains=["health", "finance", "law", "code"])
    try:
        held = legacy.should_hold(body(CODE_QUESTION), [asked()])
        assert held is not None and held.reasons == ("domain:code",)
        band = legacy.should_hold(body(PLAIN), [asked(), answered(harassment=0.352)])
        assert band is not None and band.reasons == ("uncertain:harassment",)
    finally:
        legacy.close()


def test_each_condition_of_a_rule(store: SqlStore, detector: DomainDetector) -> None:
    rules = [
        HoldRule(name="self-harm, early", band=(0.15, None), categories=["self-harm"], scores="request"),
        HoldRule(name="free tier finance", domains=["finance"], tiers=["free"]),
        HoldRule(name="answers near the line", band=(0.5, 0.7), scores="draft"),
        HoldRule(name="violence let through", flagged=True, categories=["violence"]),
    ]
    checked = service(store, detector, rules=rules)
    try:
        # categories and whose scores: self-harm on the request only
        low = checked.should_hold(body(PLAIN), [asked(**{"self-harm": 0.2}), answered()])
        assert low is not None and low.reasons == ("uncertain:self-harm",)
        assert checked.should_hold(body(PLAIN), [asked(), answered(**{"self-harm": 0.2})]) is None
        assert checked.should_hold(body(PLAIN), [asked(harassment=0.2), answered()]) is None
        # tiers: the rule needs the tier, and no tier matches no tier list
        finance = body("Should I move my pension into an index fund?")
        assert checked.should_hold(finance, [asked()]) is None
        assert checked.should_hold(finance, [asked()], HoldContext(tier="pro")) is None
        free = checked.should_hold(finance, [asked()], HoldContext(tier="free"))
        assert free is not None and free.reasons == ("domain:finance",) and free.domain == "finance"
        # a band with a top: [0.5, 0.7)
        assert checked.should_hold(body(PLAIN), [asked(), answered(violence=0.69)]) is not None
        assert checked.should_hold(body(PLAIN), [asked(), answered(violence=0.7)]) is None
        # flagged (the 'flag' action let it through): only the listed categories
        flagged = [asked("flag", ["violence"], violence=0.9)]
        assert checked.should_hold(body(PLAIN), flagged).reasons == ("flagged:violence",)  # type: ignore[union-attr]
        assert checked.should_hold(body(PLAIN), [asked("flag", ["hate"], hate=0.9)]) is None
        # refused or filtered already: nothing to hold, whatever the rules
        assert (
            checked.should_hold(body(PLAIN), [asked(**{"self-harm": 0.2}), answered("filter", ["x"])]) is None
        )
    finally:
        checked.close()


def test_the_item_keeps_why_each_rule_fired_and_whose_scores_they_were(
    store: SqlStore, detector: DomainDetector
) -> None:
    rules = [
        HoldRule(name="health", domains=["health"]),
        HoldRule(name="uncertain answers", band=(0.3, None), scores="draft"),
    ]
    checked = service(store, detector, rules=rules)
    try:
        decisions = [asked(harassment=0.05), answered("allow", [], violence=0.41, harassment=0.1)]
        held = checked.should_hold(body(HEALTH_QUESTION, domain="health"), decisions)
        assert held is not None and held.reasons == ("declared:health", "uncertain:violence")
        record = held.explanation
        assert record["rules"] == [
            {"rule": "health", "reason": "declared:health", "why": "declared by the app: health"},
            {
                "rule": "uncertain answers",
                "reason": "uncertain:violence",
                "why": "draft violence 0.410 in [0.30, flag)",
            },
        ]
        assert record["scores"]["request"] == {"harassment": 0.05}
        assert record["scores"]["draft"] == {"harassment": 0.1, "violence": 0.41}
        assert record["band"]["draft"] == {"*": 0.3} and record["band"]["request"] == {}
        pending = checked.hold(
            held,
            {**body(HEALTH_QUESTION), "max_tokens": 64},
            {"id": "c1", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "length"}]},
            request_id="swreq-1",
            tenant="t",
        )
        item = checked.get(pending["review_id"])
        assert item.request["hold"] == record and item.request["max_tokens"] == 64
        assert item.scores == {"harassment": 0.1, "violence": 0.41}  # the highest of each, as before
        # detected, with its score against the threshold
        detected = checked.should_hold(body(HEALTH_QUESTION), [asked()])
        assert detected is not None and detected.explanation["rules"][0]["why"].startswith(
            "detected health (score "
        )
    finally:
        checked.close()


def test_scan_traffic_is_held_only_when_it_asks(store: SqlStore, detector: DomainDetector) -> None:
    checked = service(store, detector)
    try:
        decisions = [asked(illicit=0.45)]
        assert checked.should_hold(body(PLAIN), decisions, HoldContext(scan=True)) is None
        asks = checked.should_hold(body(PLAIN), decisions, HoldContext(scan=True, scan_asks_hold=True))
        assert asks is not None and asks.reasons == ("uncertain:illicit",)
    finally:
        checked.close()


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "everything"}, "states no condition"),
        ({"name": "both", "band": [0.3, None], "flagged": True}, "separate rules"),
        ({"name": "upside down", "band": [0.6, 0.4]}, "0 <= low < high <= 1"),
        ({"name": "typo", "band": [0.3, None], "categories": ["violense"]}, "unknown categories"),
        (
            {"name": "loose", "domains": ["health"], "categories": ["violence"]},
            "goes with 'band' or 'flagged'",
        ),
        ({"name": "empty", "domains": []}, "an empty list matches nothing"),
        ({"name": "nowhere", "domains": ["cooking"]}, "domains"),
        ({"name": "extra", "domains": ["law"], "tier": ["free"]}, "tier"),
    ],
)
def test_a_mistake_in_a_rule_is_named(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ReviewSettings(rules=[rule])
    assert message in str(raised.value)
