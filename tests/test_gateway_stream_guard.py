"""The streaming output guard: hold-back, windowed scans, fail modes, and the release invariant.

The checks here are plain async functions standing in for the check callback (a keyword
checker, a slow one, a failing one, a counting one); the guard itself is the real one. One test
runs the guard on seawall's real embedded model.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence

import pytest

from seawall import load_settings
from seawall.errors import BackendError, ConfigurationError
from seawall.gateway.stream_guard import (
    GUARD_FAILED,
    Blocked,
    GuardVerdict,
    ScanEvent,
    StreamGuard,
    StreamGuardSettings,
    guard_stream,
    moderation_check,
)
from seawall.passages import focus_segments
from seawall.service import ModerationService, text_slices

KEYWORD = "FORBIDDEN"
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "hex")


class KeywordCheck:
    """Refuses any span containing ``KEYWORD``; remembers every span it was shown."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, text: str) -> GuardVerdict:
        self.seen.append(text)
        if KEYWORD in text:
            return GuardVerdict(allowed=False, categories=["keyword"], scores={"keyword": 1.0}, reason="k")
        return GuardVerdict(allowed=True, scores={"keyword": 0.0})

    @property
    def scanned_chars(self) -> int:
        return sum(len(text) for text in self.seen)


async def raising_check(text: str) -> GuardVerdict:
    raise BackendError("moderation backend unavailable")


async def buggy_check(text: str) -> GuardVerdict:
    raise KeyError("a bug in the check")


async def slow_check(text: str) -> GuardVerdict:
    await asyncio.sleep(5)
    return GuardVerdict(allowed=True)


def prose(rng: random.Random, n_chars: int, sentence_end: float = 0.0) -> str:
    """Random words; with ``sentence_end`` > 0, that share of them end a sentence."""
    words: list[str] = []
    length = 0
    while length < n_chars:
        word = rng.choice(WORDS)
        if rng.random() < sentence_end:
            word += rng.choice([".", "!", "?", ".\n"])
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:n_chars]


def chunk(text: str, rng: random.Random, low: int = 1, high: int = 12) -> list[str]:
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(low, high)
        pieces.append(text[i : i + n])
        i += n
    return pieces


async def run(guard: StreamGuard, deltas: Iterable[str]) -> list[str]:
    """Feed every delta and finish; the released pieces in order."""
    out: list[str] = []
    for delta in deltas:
        out.extend(await guard.feed(delta))
    out.extend(await guard.finish())
    return out


def settings(**overrides: object) -> StreamGuardSettings:
    values: dict[str, object] = {"hold_back_chars": 20, "scan_every_chars": 10, "window_chars": 50}
    values.update(overrides)
    return StreamGuardSettings(**values)  # type: ignore[arg-type]


def covered(events: Sequence[ScanEvent], start: int, end: int) -> bool:
    """``[start, end)`` lies inside the union of the spans that ``events`` cleared."""
    position = start
    for event in sorted((e for e in events if e.cleared), key=lambda e: e.start):
        if event.start <= position < event.end:
            position = event.end
        if position >= end:
            return True
    return position >= end


# ----------------------------------------------------------------- the basics


async def test_clean_stream_is_released_whole_and_in_order() -> None:
    text = prose(random.Random(1), 1000)
    guard = StreamGuard(KeywordCheck(), settings())
    pieces = await run(guard, chunk(text, random.Random(2)))
    assert "".join(pieces) == text == guard.released_text
    assert not guard.blocked and guard.verdict is None and guard.finished


async def test_nothing_is_released_before_hold_back_or_a_scan() -> None:
    guard = StreamGuard(KeywordCheck(), settings(hold_back_chars=20, scan_every_chars=10))
    assert await guard.feed("a" * 9) == []  # no scan yet
    assert await guard.feed("b" * 12) == ["a"]  # scanned 21 chars, 20 held back
    assert guard.released_text == "a"
    assert await guard.finish() == ["a" * 8 + "b" * 12]


async def test_keyword_split_across_deltas_is_caught_before_any_of_it_goes_out() -> None:
    before = "x" * 40 + " and then "
    deltas = [before[:25], before[25:] + "FORB", "IDDEN", " words after"]
    check = KeywordCheck()
    guard = StreamGuard(check, settings(hold_back_chars=20, scan_every_chars=10))
    pieces = await run(guard, deltas)
    assert guard.blocked and guard.verdict is not None and guard.verdict.categories == ["keyword"]
    released = "".join(pieces)
    assert released == guard.released_text
    assert before.startswith(released) and "F" not in released
    # The scan after "FORB" saw only half the word and allowed; the next one saw it whole.
    assert any(text.endswith("FORB") for text in check.seen)
    assert KEYWORD in check.seen[-1]


async def test_violation_at_the_very_end_is_caught_by_finish() -> None:
    text = prose(random.Random(3), 300) + " " + KEYWORD
    guard = StreamGuard(KeywordCheck(), settings(scan_every_chars=50))
    released: list[str] = []
    for delta in chunk(text, random.Random(4), 1, 3):
        released.extend(await guard.feed(delta))
    assert not guard.blocked
    released.extend(await guard.finish())
    assert guard.blocked
    assert KEYWORD not in "".join(released)
    final = guard.events[-1]
    assert final.final and final.outcome == "blocked" and final.end == len(text)


async def test_after_a_block_nothing_more_is_released_or_scanned() -> None:
    check = KeywordCheck()
    guard = StreamGuard(check, settings())
    await run(guard, [KEYWORD + "y" * 30])
    assert guard.blocked
    calls = len(check.seen)
    assert await guard.feed("z" * 500) == []
    assert await guard.finish() == []
    assert len(check.seen) == calls and guard.released_text == ""


async def test_feed_after_finish_is_a_programming_error() -> None:
    guard = StreamGuard(KeywordCheck(), settings())
    await run(guard, ["hello"])
    with pytest.raises(RuntimeError):
        await guard.feed("more")


async def test_finish_does_not_rescan_what_the_last_scan_covered() -> None:
    check = KeywordCheck()
    guard = StreamGuard(check, settings(hold_back_chars=20, scan_every_chars=10))
    assert await guard.feed("a" * 30) == ["a" * 10]
    assert await guard.finish() == ["a" * 20]
    assert len(check.seen) == 1


async def test_a_finished_sentence_goes_out_once_a_scan_cleared_it() -> None:
    """Sentence release: the first sentence leaves as soon as its end is known, long before
    ``hold_back_chars`` of newer text exist; the unfinished one stays until it is complete."""
    check = KeywordCheck()
    guard = StreamGuard(check, settings(hold_back_chars=200, scan_every_chars=30, window_chars=500))
    assert await guard.feed("The capital of France") == []
    assert await guard.feed(" is Paris.") == []  # its end is not known yet ("Paris.com")
    assert await guard.feed(" It lies") == ["The capital of France is Paris."]
    assert check.seen == ["The capital of France is Paris."]
    assert await guard.feed(" on the Seine.\nIts") == [" It lies on the Seine."]
    assert await guard.finish() == ["\nIts"]
    assert guard.released_text == "The capital of France is Paris. It lies on the Seine.\nIts"


async def test_a_violation_later_in_its_sentence_is_caught_before_the_sentence_goes_out() -> None:
    guard = StreamGuard(KeywordCheck(), settings(hold_back_chars=200, scan_every_chars=100))
    released = await run(guard, ["Fine. ", "Then the ", "FORB", "IDDEN", " part. More."])
    assert guard.blocked and "".join(released) == "Fine."


async def test_tiny_sentences_are_scanned_together() -> None:
    """After the first sentence, a sentence's end calls a scan only once half of
    ``scan_every_chars`` arrived: "and on. " over and over costs few scans."""
    check = KeywordCheck()
    guard = StreamGuard(check, settings(hold_back_chars=200, scan_every_chars=100, window_chars=500))
    released = await run(guard, ["and on. "] * 100)
    assert "".join(released) == "and on. " * 100
    assert len(check.seen) <= 2 * 800 // 100 + 2


async def test_hold_back_release_keeps_the_last_characters_back() -> None:
    guard = StreamGuard(KeywordCheck(), settings(hold_back_chars=200, release="hold_back"))
    assert await guard.feed("The capital of France is Paris.") == []
    assert await guard.feed(" It lies on the Seine.") == []  # fewer than 200 newer characters
    assert await guard.finish() == ["The capital of France is Paris. It lies on the Seine."]


# ----------------------------------------------------------------- the invariant


async def test_released_text_was_always_cleared_by_an_earlier_scan_over_random_chunkings() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        text = prose(rng, rng.randint(0, 1500), sentence_end=rng.choice([0.0, 0.05, 0.3]))
        has_keyword = rng.random() < 0.5
        if has_keyword:
            at = rng.randint(0, len(text))
            text = text[:at] + KEYWORD + text[at:]
        config = settings(
            hold_back_chars=rng.choice([0, 3, 8, 20, 200]),
            scan_every_chars=rng.choice([1, 7, 50, 100]),
            window_chars=rng.choice([0, 5, 60, 2000]),
            release=rng.choice(["sentence", "hold_back"]),
        )
        check = KeywordCheck()
        guard = StreamGuard(check, config)
        high = rng.choice([3, 40, 400])
        released = 0
        deltas = chunk(text, rng, 1, high)
        for step, delta in enumerate([*deltas, None]):
            pieces = await (guard.feed(delta) if delta is not None else guard.finish())
            new = sum(len(piece) for piece in pieces)
            context = (seed, step, config)
            # What goes out is the next slice of the answer, inside spans scans cleared before now.
            assert "".join(pieces) == text[released : released + new], context
            assert covered(guard.events, released, released + new), context
            released += new
        events = guard.events
        # The check really saw each span the guard says it scanned.
        assert [text[e.start : e.end] for e in events] == check.seen, seed
        assert guard.released_text == text[:released]
        if not has_keyword:
            assert released == len(text) and not guard.blocked, seed
        elif config.hold_back_chars >= len(KEYWORD) - 1:
            # A violation no longer than the hold-back (+1) is seen whole before any of it goes out.
            assert guard.blocked and released <= text.index(KEYWORD), (seed, config)


async def test_an_unfinished_sentence_is_judged_once_it_is_complete() -> None:
    """A half-written sentence can read as a violation that its end undoes."""

    class FragmentCheck(KeywordCheck):
        async def __call__(self, text: str) -> GuardVerdict:
            self.seen.append(text)
            if re.search(r"\bkill\s*$", text):  # "Then kill" alone reads like a threat
                return GuardVerdict(allowed=False, categories=["violence"], reason="fragment")
            return GuardVerdict(allowed=True)

    answer = (
        "Find the process id with pgrep first. Then kill the process with kill -9 if it hangs. "
        "You can also kill every process with a given name using pkill. That is all there is."
    )
    for seed in range(20):
        check = FragmentCheck()
        guard = StreamGuard(check, settings(hold_back_chars=80, scan_every_chars=7, window_chars=500))
        assert "".join(await run(guard, chunk(answer, random.Random(seed), 1, 5))) == answer, seed
        assert not guard.blocked and len(check.seen) > 3
        # Mid-stream scans stop at the end of a sentence (the last one sees the whole answer).
        assert all(span.rstrip()[-1] in ".!?" for span in check.seen), seed

    # An unfinished sentence longer than the hold-back is scanned as it stands: part of it is
    # about to go out.
    check = FragmentCheck()
    guard = StreamGuard(check, settings(hold_back_chars=10, scan_every_chars=5, window_chars=500))
    released = await run(
        guard, ["a very long sentence that goes on and on and on before it says kill", " it"]
    )
    assert guard.blocked and "kill" not in "".join(released)


# ----------------------------------------------------------------- failures


async def test_a_failing_check_fails_closed_by_default() -> None:
    guard = StreamGuard(raising_check, settings())
    pieces = await run(guard, ["some harmless text " * 5])
    assert pieces == [] and guard.blocked
    assert guard.verdict == GuardVerdict(allowed=False, reason=GUARD_FAILED)
    (event,) = guard.events
    assert event.outcome == "failed_closed"
    assert event.error is not None and "BackendError" in event.error and "unavailable" in event.error


async def test_a_failing_check_fails_open_when_configured_and_says_so() -> None:
    text = "some harmless text " * 20
    guard = StreamGuard(raising_check, settings(fail_mode="open"))
    pieces = await run(guard, chunk(text, random.Random(5)))
    assert "".join(pieces) == text and not guard.blocked
    assert guard.failed_open
    assert guard.events and all(e.outcome == "failed_open" and e.error for e in guard.events)


async def test_a_slow_check_times_out_and_fails_closed() -> None:
    guard = StreamGuard(slow_check, settings(check_timeout_s=0.05))
    began = time.perf_counter()
    pieces = await run(guard, ["x" * 100])
    assert time.perf_counter() - began < 2
    assert pieces == [] and guard.blocked and guard.verdict is not None
    assert guard.verdict.reason == GUARD_FAILED
    (event,) = guard.events
    assert event.outcome == "failed_closed" and event.error is not None and "0.05 s" in event.error
    assert 0.04 <= event.latency_s < 2


async def test_a_slow_check_times_out_and_fails_open_when_configured() -> None:
    guard = StreamGuard(slow_check, settings(check_timeout_s=0.02, fail_mode="open"))
    assert "".join(await run(guard, ["x" * 25])) == "x" * 25
    assert guard.failed_open and not guard.blocked


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_a_check_that_raises_a_bug_is_never_an_open_door(fail_mode: str) -> None:
    """Only GuardUnavailableError (and a timeout) follows the fail mode; a bug reaches the caller."""
    guard = StreamGuard(buggy_check, settings(fail_mode=fail_mode))
    assert await guard.feed("hi ") == []  # short of the first scan
    with pytest.raises(KeyError):
        await guard.feed("harmless text " * 4)
    assert guard.crashed is not None and "KeyError" in guard.crashed
    assert await guard.feed("more harmless text " * 4) == [] and await guard.finish() == []
    assert guard.released_text == "" and not guard.failed_open


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_a_check_that_answers_nonsense_is_a_bug_too(fail_mode: str) -> None:
    async def wrong(text: str) -> GuardVerdict:
        return True  # type: ignore[return-value]

    guard = StreamGuard(wrong, settings(fail_mode=fail_mode))
    with pytest.raises(TypeError, match="bool"):
        await run(guard, ["y" * 40])
    assert guard.released_text == "" and guard.crashed is not None and "bool" in guard.crashed


async def test_cancellation_is_not_a_guard_failure() -> None:
    guard = StreamGuard(slow_check, settings(check_timeout_s=None, fail_mode="open"))
    task = asyncio.create_task(guard.feed("z" * 50))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert guard.released_text == "" and guard.events == []


# ----------------------------------------------------------------- replacement and the adapter


async def test_replacement_is_sent_once_instead_of_the_withheld_text() -> None:
    guard = StreamGuard(KeywordCheck(), settings(replacement="[removed]"))
    text = "a" * 60 + KEYWORD + "b" * 60
    pieces = await run(guard, chunk(text, random.Random(6), 1, 4))
    assert pieces[-1] == "[removed]" and pieces.count("[removed]") == 1
    assert guard.blocked and KEYWORD not in guard.released_text
    assert "".join(pieces[:-1]) == guard.released_text  # the replacement is not model text


async def aiter_of(deltas: Iterable[str], log: list[str]) -> AsyncIterator[str]:
    try:
        for delta in deltas:
            log.append(delta)
            yield delta
    finally:
        log.append("<closed>")


@pytest.mark.parametrize("replacement", [None, "[removed]"])
async def test_guard_stream_ends_with_a_blocked_marker_and_closes_the_upstream(
    replacement: str | None,
) -> None:
    deltas = ["a" * 30, "b" * 30, KEYWORD, "c" * 30, "d" * 30, "e" * 30]
    pulled: list[str] = []
    guard = StreamGuard(KeywordCheck(), settings(replacement=replacement))
    items = [item async for item in guard_stream(aiter_of(deltas, pulled), guard)]
    marker = items[-1]
    assert isinstance(marker, Blocked) and marker.replaced is (replacement is not None)
    assert marker.verdict.categories == ["keyword"]
    texts = [item for item in items[:-1] if isinstance(item, str)]
    assert len(texts) == len(items) - 1
    if replacement is not None:
        assert texts[-1] == replacement
        texts = texts[:-1]
    assert "".join(texts) == guard.released_text and KEYWORD not in guard.released_text
    assert pulled[-1] == "<closed>" and "e" * 30 not in pulled  # stopped reading upstream


async def test_guard_stream_of_a_clean_stream_yields_only_text() -> None:
    text = prose(random.Random(7), 700)
    pulled: list[str] = []
    guard = StreamGuard(KeywordCheck())
    items = [item async for item in guard_stream(aiter_of(chunk(text, random.Random(8)), pulled), guard)]
    assert all(isinstance(item, str) for item in items)
    assert "".join(str(item) for item in items) == text


# ----------------------------------------------------------------- audit and cost


async def test_each_scan_is_recorded_for_the_audit_log() -> None:
    check = KeywordCheck()
    guard = StreamGuard(check, settings(hold_back_chars=20, scan_every_chars=10, window_chars=50))
    text = "y" * 95 + KEYWORD
    await run(guard, chunk(text, random.Random(9), 5, 5))
    events = guard.events
    assert len(events) == len(check.seen) >= 2
    assert [e.outcome for e in events] == ["allowed"] * (len(events) - 1) + ["blocked"]
    assert all(0 <= e.start < e.end <= len(text) and e.latency_s >= 0 for e in events)
    assert [e.end for e in events] == sorted(e.end for e in events)
    assert all(e.end - e.start <= 50 + 20 + 10 + 5 for e in events)  # window bounds every span
    assert events[-1].verdict.categories == ["keyword"] and events[-1].error is None
    record = json.loads(json.dumps([e.to_dict() for e in events]))
    assert record[-1]["outcome"] == "blocked" and record[-1]["verdict"]["allowed"] is False


async def test_cost_grows_linearly_with_the_answer() -> None:
    async def scanned(n_chars: int) -> tuple[int, int]:
        check = KeywordCheck()
        guard = StreamGuard(check)  # the defaults: 200 held back, a scan per 100, window 2000
        text = prose(random.Random(n_chars), n_chars)
        assert "".join(await run(guard, chunk(text, random.Random(10), 1, 8))) == text
        assert guard.scanned_chars == check.scanned_chars
        return check.scanned_chars, len(check.seen)

    short_cost, short_calls = await scanned(20_000)
    long_cost, long_calls = await scanned(80_000)
    # Four times the text, four times the work (a quadratic guard would do sixteen times).
    assert 3.6 <= long_cost / short_cost <= 4.4
    assert 3.6 <= long_calls / short_calls <= 4.4
    per_scan = 2000 + 200 + 100 + 8
    assert long_calls <= 80_000 / 100 + 2 and long_cost <= long_calls * per_scan


async def test_memory_holds_the_window_not_the_answer() -> None:
    guard = StreamGuard(KeywordCheck())
    for delta in chunk(prose(random.Random(11), 50_000), random.Random(12)):
        await guard.feed(delta)
    assert len(guard._buffer) + sum(map(len, guard._pending)) <= 2000 + 200 + 100 + 12


def test_settings_are_validated() -> None:
    for bad in (
        {"hold_back_chars": -1},
        {"scan_every_chars": 0},
        {"window_chars": -5},
        {"fail_mode": "ajar"},
        {"check_timeout_s": 0},
    ):
        with pytest.raises(ConfigurationError):
            StreamGuardSettings(**bad)  # type: ignore[arg-type]
    assert StreamGuardSettings().fail_mode == "closed"


def test_focus_segments_split_sentences_and_cut_long_ones() -> None:
    text = "First point here. Second one! A very long run on sentence " + "word " * 60
    segments = focus_segments(text, 60)
    assert "First point here." in segments and "Second one!" in segments
    assert "First point here. Second one!" in segments
    assert all(len(segment) <= 60 for segment in segments)
    assert text.strip() not in segments


# ----------------------------------------------------------------- the real embedded model


async def test_a_threat_streamed_through_the_embedded_model_never_reaches_the_client() -> None:
    service = ModerationService(load_settings())
    try:
        check = moderation_check(service)
        threat = "I will find you and I will kill you, I know where you live."
        answer = (
            "Sure, here is a summary of the meeting notes you asked for. The team agreed to ship "
            "the release on Friday after the final review. Marketing will prepare the announcement "
            "and support will update the help pages. One more thing, about our disagreement. "
            + threat
            + " See you at the next meeting."
        )
        guard = StreamGuard(check)
        items = [
            item async for item in guard_stream(aiter_of(chunk(answer, random.Random(13), 1, 4), []), guard)
        ]
        assert isinstance(items[-1], Blocked)
        assert {"violence", "harassment/threatening"} & set(items[-1].verdict.categories)
        released = "".join(item for item in items if isinstance(item, str))
        assert released == guard.released_text
        assert answer.startswith(released) and len(released) <= answer.index(threat)
        assert "kill" not in released and "find you" not in released

        # The control: a benign answer full of "kill" goes out whole.
        benign = (
            "To stop a runaway program on Linux, first find its process id with ps aux or pgrep. "
            "Then kill the process with kill followed by the id; if it ignores that, use kill -9. "
            "You can also kill every process with a given name using pkill. "
            "Be careful not to kill system services you depend on, such as your display manager."
        )
        control = StreamGuard(check)
        assert "".join(await run(control, chunk(benign, random.Random(14), 1, 4))) == benign
        assert not control.blocked and all(e.outcome == "allowed" for e in control.events)
    finally:
        await service.aclose()


async def test_any_text_is_judged_in_batches_and_slices_whatever_the_request_limits() -> None:
    """The gateway's checks are not bound by /v1/moderations' per-request limits (max_items, max_chars)."""
    service = ModerationService(load_settings(moderation={"max_items": 50, "max_chars": 600}))
    try:
        threat = "I will find you and I will kill you, I know where you live."
        sentences = [f"Item {number} is blue." for number in range(300)]
        benign = " ".join(sentences)
        hidden = " ".join([*sentences[:200], threat, *sentences[200:]])
        assert len(focus_segments(hidden, 200)) > 50 and len(hidden) > 600
        check = moderation_check(service)
        assert (await check(benign)).allowed
        verdict = await check(hidden)
        assert not verdict.allowed and {"violence", "harassment/threatening"} & set(verdict.categories)

        # One result per text, also for more texts than one call takes and for texts longer than
        # max_chars (judged as overlapping slices, the worst of which counts).
        threats_at_the_end = benign + " " + " ".join([threat] * 10)
        results = await service.moderate_texts([*sentences[:120], threats_at_the_end, benign])
        assert len(results) == 122
        assert results[120].flagged and not results[121].flagged
        assert not any(result.flagged for result in results[:120])
    finally:
        await service.aclose()


def test_text_slices_cover_the_text_and_overlap() -> None:
    text = "".join(chr(ord("a") + number % 26) for number in range(2_345))
    pieces = text_slices(text, 1_000)
    assert all(len(piece) <= 1_000 for piece in pieces)
    assert pieces[0] == text[:1_000] and text.endswith(pieces[-1])
    starts = [text.index(piece) if i == 0 else 900 * i for i, piece in enumerate(pieces)]
    assert all(text[start : start + len(piece)] == piece for start, piece in zip(starts, pieces, strict=True))
    assert len(pieces) == 3  # 0, 900 and 1,800: each overlaps the next by 100 characters
    assert text_slices("short", 1_000) == ["short"]
