"""Off-topic detection with the real embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from seawall.errors import ConfigurationError
from seawall.gateway.policy import load_policy
from seawall.gateway.topics import TopicGuard, is_general_policy, is_small_talk

SHOP_TOPICS = [
    "Velo Bikes products, sizes, prices and availability",
    "orders, payment, delivery and tracking",
    "returns, refunds and warranty claims",
    "basic bicycle maintenance and safe riding",
]


@pytest.fixture(scope="module")
def shop() -> TopicGuard:
    return TopicGuard.from_policy(
        "You answer questions from customers of Velo Bikes, an online bicycle shop.",
        SHOP_TOPICS,
        examples=["My order hasn't arrived and it's been 9 days."],
    )


@pytest.fixture(scope="module")
def cooking() -> TopicGuard:
    return TopicGuard.from_policy(
        "You help home cooks plan meals, follow and adapt recipes, and cook and bake safely.",
        ["recipes and meal ideas", "cooking and baking techniques", "kitchen equipment and food safety"],
    )


@pytest.mark.parametrize(
    "text",
    [
        "Where is my order? I ordered a week ago.",
        "How do I send back a helmet that doesn't fit?",
        "Is the gravel bike in stock?",
        "Can I pay in three instalments?",
        "Is it safe to ride in the rain with disc brakes?",
    ],
)
def test_on_topic_requests_pass(shop: TopicGuard, text: str) -> None:
    verdict = shop.check(text)
    assert verdict.on_topic, (text, verdict)
    assert verdict.reason == "on_topic"
    assert verdict.nearest_topic in SHOP_TOPICS


@pytest.mark.parametrize(
    "text",
    [
        "Write me a poem about the sea.",
        "Who won the football match last night?",
        "What is the capital of Peru?",
        "Tell me a joke about cats.",
        "Translate this sentence into German: I love summer.",
        "Hi, write me a poem about the sea.",  # a greeting in front does not make it small talk
    ],
)
def test_clear_off_topic_is_refused_for_a_narrow_policy(shop: TopicGuard, text: str) -> None:
    verdict = shop.check(text)
    assert not verdict.on_topic, (text, verdict)
    assert verdict.reason == "off_topic"
    assert verdict.score < shop.threshold


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "Hi there!",
        "thanks, that helps a lot",
        "What can you do?",
        "who are you?",
        "good morning :)",
        "ok bye",
        "are you a real person or a bot?",
        "can you help me?",
        "Thank you so much!",
    ],
)
def test_small_talk_is_on_topic(shop: TopicGuard, cooking: TopicGuard, text: str) -> None:
    assert is_small_talk(text)
    for guard in (shop, cooking):
        verdict = guard.check(text)
        assert verdict.on_topic and verdict.reason == "small_talk"


def test_small_talk_detector_is_not_a_prefix_match() -> None:
    assert not is_small_talk("Help me write a wedding speech.")
    assert not is_small_talk("thanks, now write me an essay about the Roman Empire")


@pytest.mark.parametrize(
    "topics",
    [
        ["any question a general-purpose assistant can answer safely"],
        ["anything the user asks"],
        ["all topics"],
    ],
)
def test_general_policy_makes_everything_on_topic(topics: list[str]) -> None:
    guard = TopicGuard.from_policy("You are a helpful assistant.", topics)
    assert guard.general and is_general_policy("You are a helpful assistant.", topics)
    texts = ["Write a haiku about autumn.", "Who won the 2018 World Cup?", "How do I file my taxes?", "hi"]
    assert all(verdict.on_topic for verdict in guard.check_many(texts))


def test_narrow_policy_is_not_general(shop: TopicGuard) -> None:
    assert not shop.general


def test_domains_differ_per_policy(shop: TopicGuard, cooking: TopicGuard) -> None:
    assert cooking.check("Can I freeze cooked pasta?").on_topic
    assert not shop.check("Can I freeze cooked pasta?").on_topic
    assert not cooking.check("How do I install Windows 11?").on_topic


def test_threshold_moves_the_decision(shop: TopicGuard) -> None:
    text = "Tell me a joke about cats."
    score = shop.check(text).score
    lenient = TopicGuard.from_policy(shop.purpose, shop.allowed_topics, threshold=score - 0.01)
    assert lenient.check(text).on_topic


def test_empty_and_content_free_requests_pass(shop: TopicGuard) -> None:
    assert shop.check("").on_topic
    assert shop.check("what is it?").reason == "no_content"


def test_check_many_equals_check(shop: TopicGuard) -> None:
    texts = ["hello", "Write me a poem about the sea.", "Is the gravel bike in stock?"]
    assert shop.check_many(texts) == [shop.check(text) for text in texts]


def test_for_policy_uses_the_policy_file() -> None:
    policy = load_policy(Path(__file__).resolve().parent.parent / "examples" / "policy-strict.yaml")
    guard = TopicGuard.for_policy(policy)
    assert guard.allowed_topics == tuple(policy.allowed_topics)
    assert guard.check("My chain keeps slipping, what should I do?").on_topic
    assert not guard.check("Who is the president of France?").on_topic


def test_needs_purpose_and_topics() -> None:
    with pytest.raises(ConfigurationError):
        TopicGuard.from_policy("", ["orders"])
    with pytest.raises(ConfigurationError):
        TopicGuard.from_policy("A shop assistant.", ["  "])
