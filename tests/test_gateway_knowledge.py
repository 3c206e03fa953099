"""The curated knowledge base: loading, validation and matching with the real embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seawall.errors import ConfigurationError
from seawall.gateway.knowledge import DEFAULT_THRESHOLD, KnowledgeBase, KnowledgeEntry

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "knowledge.yaml"

YAML = """\
threshold: 0.5
entries:
  - id: refund-window
    questions: ["How long do I have to return an item?", "What is the refund window?"]
    answer: "You can return any item within 30 days of delivery for a full refund."
    sources: ["https://example.com/policies/returns"]
  - questions: ["How much does shipping cost?"]
    answer: "Shipping is free above 50 euros."
    sources: ["https://example.com/shipping"]
"""


@pytest.fixture(scope="module")
def shop() -> KnowledgeBase:
    return KnowledgeBase.load(EXAMPLE)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_loads_with_ids_sources_and_file_threshold(tmp_path: Path) -> None:
    kb = KnowledgeBase.load(write(tmp_path, "kb.yaml", YAML))
    assert len(kb) == 2
    assert kb.threshold == 0.5
    assert [entry.id for entry in kb.entries] == ["refund-window", "how-much-does-shipping-cost"]
    assert kb.entries[0].sources == ("https://example.com/policies/returns",)
    found = kb.match("what are the shipping costs?")
    assert found is not None and found.entry_id == "how-much-does-shipping-cost"
    assert found.answer == "Shipping is free above 50 euros."
    assert found.question == "How much does shipping cost?"
    assert 0.5 <= found.score <= 1.0


def test_threshold_argument_overrides_file_and_default(tmp_path: Path) -> None:
    path = write(tmp_path, "kb.yaml", YAML.replace("threshold: 0.5\n", ""))
    assert KnowledgeBase.load(path).threshold == DEFAULT_THRESHOLD
    strict = KnowledgeBase.load(path, threshold=0.99)
    assert strict.match("What are the shipping costs?") is None
    assert strict.match("What are the shipping costs?", threshold=0.5) is not None
    assert KnowledgeBase.load(write(tmp_path, "t.yaml", YAML), threshold=0.7).threshold == 0.7


def test_jsonl_loads_and_matches(tmp_path: Path) -> None:
    lines = [
        {
            "id": "lost-card",
            "questions": ["What should I do if I lose my card?", "How do I block my card?"],
            "answer": "Freeze it in the app.",
            "sources": ["faq#cards"],
        },
        {"questions": ["How do I change my PIN?"], "answer": "At any cash machine.", "sources": ["faq#pin"]},
    ]
    path = write(tmp_path, "kb.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    kb = KnowledgeBase.load(path)
    assert [e.id for e in kb.entries] == ["lost-card", "how-do-i-change-my-pin"]
    found = kb.match("My card was stolen, how do I block it?")
    assert found is not None and found.entry_id == "lost-card"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Can I return a bike after two weeks?", "return-window"),
        ("how long until my money is refunded", "refund-time"),
        ("Do you charge for delivery?", "delivery-cost"),
        ("where can i follow my parcel", "order-tracking"),
        ("I want to cancel the order I placed this morning", "cancel-order"),
        ("do you take paypal", "payment-methods"),
        ("Is the bike delivered fully assembled?", "assembly"),
    ],
)
def test_paraphrases_match(shop: KnowledgeBase, text: str, expected: str) -> None:
    found = shop.match(text)
    assert found is not None, text
    assert found.entry_id == expected


@pytest.mark.parametrize(
    "text",
    [
        "How much does the city bike cost?",  # shares "how much ... cost" with shipping cost
        "Can I cancel my newsletter subscription?",  # shares "cancel" with cancel-order
        "Can I track my rides with your app?",  # shares "track" with order tracking
        "How long does the e-bike battery take to charge?",
        "What is the capital of France?",
        "hello",
        "",
    ],
)
def test_near_misses_and_unrelated_do_not_match(shop: KnowledgeBase, text: str) -> None:
    assert shop.match(text) is None


def test_negation_does_not_match_the_positive_question(shop: KnowledgeBase) -> None:
    assert shop.match("What items can't be returned?") is None
    assert shop.match("What items can be returned?") is not None


def test_match_many_equals_match(shop: KnowledgeBase) -> None:
    texts = ["do you take paypal", "Write me a poem about spring.", "How long will shipping take?"]
    assert shop.match_many(texts) == [shop.match(text) for text in texts]
    assert shop.match_many([]) == []


def test_constructor_and_derived_id_collisions(tmp_path: Path) -> None:
    kb = KnowledgeBase([KnowledgeEntry("a", ("How do I reset my password?",), "Use the link.", ("doc",))])
    assert kb.match("how can I reset my password") is not None
    text = (
        "entries:\n"
        "  - {questions: ['How do I pay?'], answer: x, sources: [s]}\n"
        "  - {questions: ['How do I pay?!'], answer: y, sources: [s]}\n"
    )
    ids = [e.id for e in KnowledgeBase.load(write(tmp_path, "d.yaml", text)).entries]
    assert ids == ["how-do-i-pay", "how-do-i-pay-2"]


ENTRY = "{questions: ['How do I pay?'], answer: x, sources: [s]}"


@pytest.mark.parametrize(
    ("name", "text", "needles"),
    [
        ("kb.yaml", "entries: [\n", ["kb.yaml", "not valid YAML"]),
        ("kb.yaml", "- a\n- b\n", ["kb.yaml", "mapping", "not a list"]),
        ("kb.yaml", "", ["kb.yaml", "not nothing"]),
        ("kb.yaml", "threshold: 0.5\n", ["entries", "required"]),
        ("kb.yaml", "entries: []\n", ["entries", "non-empty list"]),
        ("kb.yaml", f"entries: [{ENTRY}]\nthreshhold: 0.5\n", ["unknown top-level field 'threshhold'"]),
        ("kb.yaml", f"entries: [{ENTRY}]\nthreshold: 1.5\n", ["threshold", "at most 1"]),
        ("kb.yaml", f"entries: [{ENTRY}]\nthreshold: true\n", ["threshold"]),
        ("kb.yaml", f"entries: [{ENTRY}]\nentries: [{ENTRY}]\n", ["duplicate key 'entries'"]),
        ("kb.yaml", "entries:\n  - just a string\n", ["entries[0] (line 2)", "mapping"]),
        (
            "kb.yaml",
            "entries:\n  - {questions: [a b], answer: x}\n",
            ["entries[0] (line 2).sources", "missing"],
        ),
        (
            "kb.yaml",
            "entries:\n  - {answer: x, sources: [s]}\n",
            ["entries[0] (line 2).questions", "missing"],
        ),
        (
            "kb.yaml",
            "entries:\n  - {questions: [pay], sources: [s]}\n",
            ["entries[0] (line 2).answer", "missing"],
        ),
        (
            "kb.yaml",
            "entries:\n  - {questions: 'How do I pay?', answer: x, sources: [s]}\n",
            ["entries[0] (line 2).questions", "non-empty list"],
        ),
        (
            "kb.yaml",
            "entries:\n  - {questions: ['How do I pay?', ''], answer: x, sources: [s]}\n",
            ["entries[0] (line 2).questions[1]", "non-empty string"],
        ),
        (
            "kb.yaml",
            "entries:\n  - {questions: ['How do I pay?'], answer: 3, sources: [s]}\n",
            ["entries[0] (line 2).answer"],
        ),
        (
            "kb.yaml",
            "entries:\n  - {questions: ['How do I pay?'], answer: x, sources: []}\n",
            ["entries[0] (line 2).sources", "non-empty list"],
        ),
        (
            "kb.yaml",
            "entries:\n  - {questions: ['How do I pay?'], answer: x, sources: [s], tags: [a]}\n",
            ["entries[0] (line 2).tags", "unknown field"],
        ),
        (
            "kb.yaml",
            "entries:\n  - {id: 'has space', questions: ['How do I pay?'], answer: x, sources: [s]}\n",
            ["entries[0] (line 2).id"],
        ),
        (
            "kb.yaml",
            f"entries:\n  - {{id: a, {ENTRY[1:]}\n"
            "  - {id: a, questions: ['Refunds?'], answer: y, sources: [s]}\n",
            ["entries[1] (line 3).id", "duplicate id 'a'"],
        ),
        (
            "kb.yaml",
            f"entries:\n  - {ENTRY}\n  - {{questions: ['how do i  PAY?'], answer: y, sources: [s]}}\n",
            ["also a question of entry"],
        ),
        (
            "kb.yaml",
            "entries:\n  - {questions: ['What is it?'], answer: x, sources: [s]}\n",
            ["no content word"],
        ),
        (
            "kb.jsonl",
            '{"questions": ["How do I pay?"], "answer": "x", "sources": ["s"]}\n{oops\n',
            ["kb.jsonl", "line 2", "not valid JSON"],
        ),
        (
            "kb.jsonl",
            '\n\n{"questions": ["How do I pay?"], "answer": "x", "sources": "s"}\n',
            ["kb.jsonl", "line 3.sources"],
        ),
        ("kb.jsonl", "\n", ["holds no entries"]),
        ("kb.txt", "entries: []\n", ["kb.txt", "unknown format '.txt'"]),
    ],
)
def test_every_mistake_names_file_entry_and_field(
    tmp_path: Path, name: str, text: str, needles: list[str]
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigurationError) as info:
        KnowledgeBase.load(path)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert name in str(info.value)


def test_missing_file_and_bad_threshold_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        KnowledgeBase.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigurationError, match="threshold"):
        KnowledgeBase.load(EXAMPLE, threshold=0.0)


def test_example_file_is_valid(shop: KnowledgeBase) -> None:
    assert len(shop) == 14
    assert all(entry.sources for entry in shop.entries)
