"""Long texts on /v1/moderations: a harmful passage buried in harmless text is not diluted.

A text longer than ``moderation.passages_over_chars`` is also judged sentence by sentence (and by
pairs of neighbouring sentences); each category scores the highest of the whole and its passages.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import openai
import pytest

from conftest import THREAT, RunningServer, running_server
from seawall.categories import CATEGORIES
from seawall.passages import focus_segments, sentences
from seawall.service import ModerationService
from seawall.settings import load_settings

HATE = "All of those immigrants should be lined up and shot like dogs."
NOUNS = ["garden", "river", "kitchen", "library", "market", "station", "museum", "bridge", "harbour"]
VERBS = ["visited", "painted", "cleaned", "photographed", "described", "measured", "admired"]


def harmless_sentences(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct short harmless sentences (about 20,000 characters for 1,100)."""
    rng = random.Random(seed)
    return [
        f"On day {i} my cousin {rng.choice(VERBS)} the {rng.choice(NOUNS)} near the {rng.choice(NOUNS)}."
        for i in range(count)
    ]


def buried(passage: str, position: int, count: int = 1100) -> str:
    """``passage`` as one sentence among ``count`` harmless ones."""
    filler = harmless_sentences(count)
    return " ".join([*filler[:position], passage, *filler[position:]])


#: The mode long texts and their passages are read in whatever moderation.contextual says (``on``
#: reads them as ``auto``: tests/test_contextual_modes.py), so a passage alone is compared in it too.
LONG_TEXT_MODE = {"contextual": "auto"}


@pytest.fixture(scope="module")
def undiluted() -> Iterator[RunningServer]:
    with running_server(load_settings(moderation=LONG_TEXT_MODE)) as running:
        yield running


@pytest.fixture(scope="module")
def whole_only() -> Iterator[RunningServer]:
    """The same server with passage judging off: what the guarantee protects against."""
    settings = load_settings(moderation=LONG_TEXT_MODE)
    settings.moderation.passages_over_chars = 0
    with running_server(settings) as running:
        yield running


def scores_of(client: openai.OpenAI, text: str) -> tuple[bool, dict[str, float]]:
    result = client.moderations.create(input=text).model_dump(by_alias=True)["results"][0]
    return result["flagged"], result["category_scores"]


@pytest.mark.parametrize("passage", [f"{THREAT}.", HATE], ids=["threat", "hate"])
@pytest.mark.parametrize("position", [0, 550, 1100], ids=["start", "middle", "end"])
def test_a_buried_passage_scores_at_least_what_it_scores_alone(
    undiluted: RunningServer, passage: str, position: int
) -> None:
    text = buried(passage, position)
    assert 19_000 < len(text) < 200_000
    with undiluted.client() as client:
        alone_flagged, alone = scores_of(client, passage)
        flagged, scores = scores_of(client, text)
    assert alone_flagged and flagged
    for name in CATEGORIES:
        assert scores[name] >= alone[name] - 1e-4, name


def test_without_passages_the_same_threat_is_diluted(whole_only: RunningServer) -> None:
    """The regression this guards: judged only as a whole, the buried threat was not flagged."""
    with whole_only.client() as client:
        flagged, _ = scores_of(client, buried(f"{THREAT}.", 550))
        alone_flagged, _ = scores_of(client, THREAT)
    assert alone_flagged and not flagged


def test_a_long_harmless_text_stays_unflagged(undiluted: RunningServer) -> None:
    with undiluted.client() as client:
        flagged, scores = scores_of(client, " ".join(harmless_sentences(1100)))
    assert not flagged, {name: score for name, score in scores.items() if score > 0.3}


def test_texts_at_or_under_the_limit_are_judged_whole(undiluted: RunningServer) -> None:
    """Below ``passages_over_chars`` nothing changes: the same scores with passages on or off."""
    text = buried(f"{THREAT}.", 40, count=80)
    assert len(text) <= undiluted.settings.moderation.passages_over_chars
    settings = load_settings(moderation=LONG_TEXT_MODE)
    settings.moderation.passages_over_chars = 0
    with undiluted.client() as on, running_server(settings) as off_server, off_server.client() as off:
        assert scores_of(on, text) == scores_of(off, text)


def test_every_sentence_is_a_passage_and_the_cut_is_linear() -> None:
    text = " ".join(harmless_sentences(300)) + "\n" + "word " * 500
    segments = set(focus_segments(text, 200))
    for sentence in sentences(text, 200):
        assert sentence in segments
    assert all(len(segment) <= 200 for segment in segments)
    # Sentences and pairs of neighbours: at most about three times the text's characters.
    assert sum(len(segment) for segment in segments) <= 3.2 * len(text)


async def test_a_short_text_does_not_queue_behind_a_long_one() -> None:
    """Long texts and their passages are scored in a lane of their own: a short request sent while
    an 80,000-character text is being scored is answered before it. (Judged whole here: its passages
    would go to the backend in several calls, and a short request could slip in between them.)"""
    service = ModerationService(load_settings(moderation={"passages_over_chars": 0}))
    long = " ".join(harmless_sentences(2600))[:80_000]
    finished: list[str] = []

    async def moderate(name: str, text: str) -> None:
        await service.moderate([text])
        finished.append(name)

    try:
        await service.moderate(["warm up"])
        long_task = asyncio.create_task(moderate("long", long))
        await asyncio.sleep(0.3)
        assert not long_task.done(), "the long text finished before the short one was sent"
        await moderate("short", "have a lovely day")
        await long_task
    finally:
        await service.aclose()
    assert finished == ["short", "long"]
