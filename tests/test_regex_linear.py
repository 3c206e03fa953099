"""Every regular expression on the request path runs in linear time: on 100,000-character
pathological strings (runs of one character, of spaces, newlines or punctuation, and bait for
nested quantifiers and backtracking) a full scan (``finditer``, which is what ``search``,
``findall``, ``sub`` and ``split`` do at worst) takes at most ``RATIO`` times as long as on
plain prose of the same length, or ``FLOOR_S`` when that is more.

The floor is there because linear patterns with a literal prefix skip through prose almost for
free (the engine looks for the first character with memchr) and a pattern that matches at every
character of a run yields one match object per character: both linear, both far more than 20x a
scan that finds nothing. A pattern that backtracks quadratically takes seconds to minutes on
100,000 characters (``review.domains._CODE_SHAPES`` took 5.8 s on 20,000 newlines before it was
fixed), far above the floor.

Patterns are collected from the modules (module-level compiled patterns and those inside tuples
and dicts, such as the review domains' cues) plus the few written inline in functions.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.gateway.policy import _placeholders, render_template, template_placeholders
from seawall.model.normalize import normalize

LENGTH = 100_000
RATIO = 20
FLOOR_S = 0.05

#: Modules whose regexes see request data (message text, headers, upstream streams, answers).
MODULES = [
    "seawall.gateway.identity",
    "seawall.gateway.prompt",
    "seawall.gateway.stream_guard",
    "seawall.gateway.topics",
    "seawall.gateway.upstream",
    "seawall.gateway.knowledge",
    "seawall.gateway.limits",
    "seawall.gateway.messages",
    "seawall.gateway.parameters",
    "seawall.gateway.access",
    "seawall.model.normalize",
    "seawall.model.features",
    "seawall.review.domains",
    "seawall.text_space",
    "seawall.inputs",
    "seawall.messages",
    "seawall.images",
]
#: Written inline in functions on the request path (normalize's spaced-letter joiner, the
#: knowledge base's and topics' tokenizers).
INLINE = [r"[ .\-_*]", r"[a-z0-9]+", r"\S+", r",|;|/|\band\b|\bor\b|&"]
#: Not on the request path: the policy's template placeholders are read at start-up (they were a
#: regex, ``\{\{(.*?)\}\}``, quadratic on a run of "{{"; now a linear scan, tested below).
CONFIG_ONLY = {"seawall.gateway.policy"}

PLAIN = (
    "The quick brown fox jumps over the lazy dog near the river bank, and then it rests a while. "
    "Is it true? Yes: the dog did not move; the fox went home (it was late). "
)
SEEDS = {
    "letter": "a",
    "upper": "A",
    "digit": "1",
    "space": " ",
    "tab": "\t",
    "newline": "\n",
    "crlf": "\r\n",
    "space-newline": " \n",
    "dot": ".",
    "dash": "-",
    "underscore": "_",
    "punctuation": "!?",
    "quote": "'",
    "brace": "{",
    "paren": "(",
    "angle": "<",
    "letter-space": "a ",
    "letter-dot": "a.",
    "letter-underscore": "a_",
    "letter-digit": "a1",
    "leet": "k1ll3r@",
    "accented": "é",
    "cjk": "漢",
    "emoji": "🙂",
    "zero-width": "a\u200b",
    "mixed": "aA1@$ ",
    "sql-bait": "SELECT ",
    "call-bait": "f(",
    "call-space-bait": "x( ",
    "snake-bait": "a_b_",
    "error-bait": "AError",
    "fence-bait": "<<< ",
    "greeting-bait": "hi ",
    "sentence-bait": ". ",
    "hex": "0123456789abcdef",
}


def _repeat(seed: str, length: int = LENGTH) -> str:
    return (seed * (length // len(seed) + 1))[:length]


BAD = {name: _repeat(seed) for name, seed in SEEDS.items()}
#: Runs that end in a character that makes a greedy match fail at the very end.
BAD["run-then-paren"] = _repeat("a", LENGTH - 1) + "("
BAD["paren-then-run"] = "f(" + _repeat("x", LENGTH - 2)
BAD["fence-then-spaces"] = "<<<" + _repeat(" ", LENGTH - 3)
BAD["select-then-spaces"] = "SELECT" + _repeat(" ", LENGTH - 6)
#: The set run for the review domains' ~540 cue patterns (one template: a phrase between word
#: bounds), to keep the test's time down.
CUE_SEEDS = ["letter", "space", "dash", "newline", "letter-space", "accented", "mixed", "space-newline"]


def _patterns(value: Any, depth: int = 0) -> Iterator[re.Pattern[str]]:
    if isinstance(value, re.Pattern):
        yield value
    elif depth < 3 and isinstance(value, tuple | list | set | frozenset):
        for item in value:
            yield from _patterns(item, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            yield from _patterns(item, depth + 1)


def collect() -> dict[str, list[re.Pattern[str]]]:
    """Patterns by where they come from (module.attribute), deduplicated."""
    found: dict[str, list[re.Pattern[str]]] = {}
    seen: set[tuple[str, int]] = set()
    for name in MODULES:
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            for pattern in _patterns(value):
                if isinstance(pattern.pattern, str) and (pattern.pattern, pattern.flags) not in seen:
                    seen.add((pattern.pattern, pattern.flags))
                    found.setdefault(f"{name}.{attribute}", []).append(pattern)
    found["inline"] = [re.compile(source) for source in INLINE]
    return found


PATTERNS = collect()


def _scan_time(pattern: re.Pattern[str], text: str) -> float:
    began = time.perf_counter()
    for _ in pattern.finditer(text):
        pass
    return time.perf_counter() - began


def _best_of(measure: Callable[[], float], times: int = 3) -> float:
    return min(measure() for _ in range(times))


def _check(name: str, pattern: re.Pattern[str], seeds: list[str]) -> list[str]:
    plain = _repeat(PLAIN)
    baseline = _best_of(lambda: _scan_time(pattern, plain))
    budget = max(RATIO * baseline, FLOOR_S)
    slow = []
    for seed in seeds:
        text = BAD[seed]
        took = _scan_time(pattern, text)
        if took > budget:  # one slow run on a shared machine is not enough: take the best of three
            took = min(took, _best_of(lambda text=text: _scan_time(pattern, text)))  # type: ignore[misc]
        if took > budget:
            slow.append(
                f"{name} {pattern.pattern[:70]!r} on {seed!r}: {took * 1000:.1f} ms "
                f"(plain {baseline * 1000:.2f} ms, budget {budget * 1000:.0f} ms)"
            )
    return slow


def test_patterns_were_found() -> None:
    assert sum(len(patterns) for patterns in PATTERNS.values()) > 500  # the domain cues included
    assert "seawall.review.domains._CODE_SHAPES" in PATTERNS
    assert "seawall.model.normalize._LEET_TOKEN" in PATTERNS
    assert not CONFIG_ONLY & set(MODULES)


@pytest.mark.parametrize("name", sorted(name for name in PATTERNS if name != "seawall.review.domains.CUES"))
def test_request_path_regexes_run_in_linear_time(name: str) -> None:
    slow = [problem for pattern in PATTERNS[name] for problem in _check(name, pattern, sorted(BAD))]
    assert not slow, "\n".join(slow)


def test_review_domain_cues_run_in_linear_time() -> None:
    cues = PATTERNS["seawall.review.domains.CUES"]
    slow = [problem for pattern in cues for problem in _check("CUES", pattern, CUE_SEEDS)]
    assert not slow, "\n".join(slow)


@pytest.mark.parametrize("seed", sorted(BAD))
def test_normalize_runs_in_linear_time(seed: str) -> None:
    """The whole text normaliser (several regexes, homoglyph folding, leetspeak) as moderation runs it."""
    plain = _repeat(PLAIN)
    baseline = _best_of(lambda: _timed(normalize, plain), 2)
    took = _timed(normalize, BAD[seed])
    if took > max(RATIO * baseline, FLOOR_S):
        took = min(took, _best_of(lambda: _timed(normalize, BAD[seed]), 2))
    assert took <= max(RATIO * baseline, FLOOR_S), f"{seed}: {took:.3f} s vs plain {baseline:.3f} s"


def _timed(function: Callable[[str], Any], text: str) -> float:
    began = time.perf_counter()
    function(text)
    return time.perf_counter() - began


_OLD_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(st.sampled_from("{}a \n"), max_size=40))
def test_placeholder_scan_finds_what_the_regex_found(template: str) -> None:
    expected = [(m.start(), m.end(), m.group(1)) for m in _OLD_PLACEHOLDER.finditer(template)]
    assert list(_placeholders(template)) == expected


def test_placeholder_scan_is_linear() -> None:
    for seed in ("{", "{{ ", "}"):
        text = _repeat(seed) + " {{safety_instructions}}"
        began = time.perf_counter()
        with pytest.raises(ValueError):
            template_placeholders(text)
        assert time.perf_counter() - began < FLOOR_S * 4, seed
    assert render_template("{{a}}-{{ b }}-{{{c}}", {"a": "1", "b": "2", "{c": "3"}) == "1-2-3"
