"""Streaming output moderation: no text of a model's answer reaches the client unscanned.

A :class:`StreamGuard` sits between an upstream stream and the client. It knows nothing about
HTTP, SSE or OpenAI's chunk format: the gateway feeds it text deltas and sends on what it
returns.

* **Release.** With ``release="sentence"`` (the default) a finished sentence goes out as soon as
  a scan cleared it whole (a scan is due when the first sentence finishes, and later whenever a
  sentence finishes at least half of ``scan_every_chars`` after the last scan: a run of tiny
  sentences costs at most twice the scans), so the first token waits about one sentence plus
  one scan, not ``hold_back_chars`` of newer text. An unfinished sentence
  waits until it is complete, or, once it is longer than ``hold_back_chars`` (code, run-on
  text), all but its last ``hold_back_chars`` go out after a scan. A violation that starts in one
  delta and becomes apparent a few deltas later within its sentence is caught before its
  beginning has gone out; one that becomes apparent only a sentence later is not withheld
  (the earlier sentence was judged whole, with the window before it as context, and cleared).
  With ``release="hold_back"`` text is always released only once ``hold_back_chars`` of newer
  text exist after it (or at the end of the stream).
* **Scans.** Every ``scan_every_chars`` of new text (and, with sentence release, at the end of
  every sentence) the guard calls the check on one span: the
  last ``window_chars`` of the answer *plus* everything not yet released (the span always
  starts at or before the first unreleased character), so text split across deltas
  ("FORB" + "IDDEN") is seen whole and the check gets some preceding context.
* **Invariant.** Only text inside the span of a scan that cleared it is ever released: a scan
  that allowed its span moves the *cleared* frontier to the span's end, and release never
  goes past that frontier (:meth:`StreamGuard._release` clamps to it). A scan "clears" when the
  check allowed the span, or, in fail-open mode only, when the check failed and the event says so.
* **Violation.** The stream stops: nothing more is released, ever. With ``replacement`` set,
  that text is returned once instead of the withheld text; otherwise nothing is, and the
  gateway ends the stream with an error event (:func:`guard_stream` yields a :class:`Blocked`
  marker either way).
* **Fail mode.** A check that times out (``check_timeout_s``) or raises
  :class:`~seawall.errors.GuardUnavailableError` (its backend is down, slow or overloaded) is
  a guard failure. ``"closed"`` (the default) treats it as a violation with reason
  ``"guard_failed"``; ``"open"`` releases the span and records a ``failed_open`` event, so the
  audit log says which text went out unjudged. Anything else a check raises, or a check that
  returns something that is not a :class:`GuardVerdict`, is a bug, never an open door: the
  exception (a ``TypeError`` for the wrong answer) goes to the caller, :attr:`StreamGuard.crashed`
  says what happened, and nothing more is released. Cancellation (the client went away) is not
  a failure: it propagates.
* **Audit.** :attr:`StreamGuard.events` holds one :class:`ScanEvent` per scan: the span
  (character offsets into the answer), the verdict, the outcome, the latency and any error.

Cost, and what it costs in coverage: a scan looks at most ``window_chars`` plus the unreleased
text (about ``hold_back_chars + scan_every_chars`` plus one delta), and there is one scan per
``scan_every_chars``, so the characters checked grow linearly with the answer (about
``(window + hold_back + scan_every) / scan_every`` times its length) instead of quadratically,
and the guard keeps only that much of the answer in memory besides what it released. The
price: a violation that is apparent only given text older than ``window_chars`` is not caught
by these scans, and the final scan (in :meth:`StreamGuard.finish`) covers the window and the
unreleased tail, not the whole answer. A gateway that needs a whole-answer judgement must make
it after the stream, when it can no longer withhold anything.

Departures from the first design, and why:

* ``finish()`` skips the final scan when the last scan already ended at the end of the text:
  the same span would be checked twice.
* ``released_text`` is the model's text that went out; a replacement is not part of it.
* A mid-stream scan stops at the end of the last finished sentence when the unfinished one
  after it is no longer than the hold-back (it cannot be released yet anyway). Scored on their
  own, fragments such as "Then kill" were flagged before "the process with kill -9" arrived;
  scans still come every ``scan_every_chars``, and the final scan covers the tail.
* :func:`moderation_check` adapts seawall's :class:`~seawall.service.ModerationService` to a
  check and also scores each sentence of the span on its own, in the same batch. Measured on
  the embedded model: "I will find you and I will kill you, I know where you live." alone is
  flagged (max score 0.90), but after two or three sentences of a benign answer it is not
  (0.27-0.37), and neither is the whole answer moderated at once; the linear model averages
  evidence over a window, so benign context dilutes a threat. A scan span always carries
  ``hold_back_chars`` of context, so a whole-span check alone would release that threat.
  Backends that read long context well can use ``focus_chars=None``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, ValidationError

from seawall.errors import ConfigurationError, GuardUnavailableError
from seawall.passages import SENTENCE_END
from seawall.settings import FailMode, StreamGuardConfig

if TYPE_CHECKING:
    from seawall.service import ModerationService

log = logging.getLogger("seawall.gateway")

#: The reason of a verdict that a guard failure (not the check) decided.
GUARD_FAILED = "guard_failed"

#: ``allowed``/``blocked``: the check answered; ``failed_closed``/``failed_open``: it failed.
ScanOutcome = Literal["allowed", "blocked", "failed_closed", "failed_open"]


@dataclass
class GuardVerdict:
    """A check's judgement of one span of text."""

    allowed: bool
    #: Names of the categories that made the check refuse the text.
    categories: list[str] = field(default_factory=list)
    #: Scores by category, as the check reports them (may be empty).
    scores: dict[str, float] = field(default_factory=dict)
    #: Why, in words; ``"guard_failed"`` when the verdict comes from a guard failure.
    reason: str = ""


#: Judges one span of an answer. The gateway wraps a moderation backend in one (see
#: :func:`moderation_check`); a :class:`~seawall.errors.GuardUnavailableError` it raises counts as a
#: guard failure, anything else it raises as a bug.
Check = Callable[[str], Awaitable[GuardVerdict]]


class StreamGuardSettings(StreamGuardConfig):
    """How a :class:`StreamGuard` scans and releases a stream: the settings file's part
    (``gateway.stream_guard``: hold-back, scan interval, window, check timeout) and what the
    gateway decides itself. Invalid values raise :class:`~seawall.errors.ConfigurationError`.
    """

    model_config = ConfigDict(frozen=True)

    #: What a check that raises or times out means: ``"closed"`` stops the stream as a
    #: violation (reason ``"guard_failed"``); ``"open"`` releases the text and records that it did.
    fail_mode: FailMode = "closed"
    #: ``None``: a violation stops the stream with nothing more; a string: sent once instead of
    #: the withheld text before the stream stops.
    replacement: str | None = None

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid stream guard settings: {exc}") from exc


@dataclass(frozen=True)
class ScanEvent:
    """One scan, for the audit log."""

    #: The span checked, as character offsets into the answer: ``text[start:end]``.
    start: int
    end: int
    #: True for the scan :meth:`StreamGuard.finish` made.
    final: bool
    outcome: ScanOutcome
    verdict: GuardVerdict
    latency_s: float
    #: What went wrong when the check failed (exception type and message, or the timeout).
    error: str | None = None

    @property
    def cleared(self) -> bool:
        """Whether this scan let its span be released."""
        return self.outcome in ("allowed", "failed_open")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Blocked:
    """The last item of a guarded stream that was stopped."""

    verdict: GuardVerdict
    #: True when the configured replacement text was yielded just before this marker.
    replaced: bool


class StreamGuard:
    """Scans a streamed answer incrementally and releases only text a scan cleared.

    Use one guard per answer: ``await feed(delta)`` for each delta, then ``await finish()``;
    both return the text that may be sent now (often nothing). Calls are serialised, so
    concurrent callers cannot interleave a scan and a release.
    """

    def __init__(self, check: Check, settings: StreamGuardSettings | None = None) -> None:
        self.check = check
        self.settings = settings or StreamGuardSettings()
        # The answer from absolute offset ``_base`` on; deltas wait in ``_pending`` until a scan.
        self._buffer = ""
        self._base = 0
        self._pending: list[str] = []
        self._total = 0
        self._released = 0
        #: End of the span of the last scan that cleared; release never goes past it.
        self._cleared = 0
        self._last_scan_end = 0
        #: How much had arrived at the last scan (or skipped scan): scans come every
        #: ``scan_every_chars`` of new text, wherever the last one ended.
        self._last_scan_at = 0
        self._released_parts: list[str] = []
        self._events: list[ScanEvent] = []
        self._verdict: GuardVerdict | None = None
        self._finished = False
        self._scanned_chars = 0
        self._crashed: str | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ state

    @property
    def released_text(self) -> str:
        """The model's text released so far (a replacement is not part of it)."""
        return "".join(self._released_parts)

    @property
    def blocked(self) -> bool:
        return self._verdict is not None

    @property
    def verdict(self) -> GuardVerdict | None:
        """The verdict that stopped the stream, if one did."""
        return self._verdict

    @property
    def events(self) -> list[ScanEvent]:
        """Every scan so far, in order."""
        return list(self._events)

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def failed_open(self) -> bool:
        """Whether some released text went out unjudged because a check failed in fail-open mode."""
        return any(event.outcome == "failed_open" for event in self._events)

    @property
    def crashed(self) -> str | None:
        """What went wrong when a check failed in a way that is not a guard failure (a bug): the
        exception went to the caller, and nothing more is released."""
        return self._crashed

    @property
    def received_chars(self) -> int:
        return self._total

    @property
    def scanned_chars(self) -> int:
        """Characters handed to the check so far, over all scans (the guard's cost)."""
        return self._scanned_chars

    # ------------------------------------------------------------------ the stream

    async def feed(self, delta: str) -> list[str]:
        """Take the next delta; return the text that is safe to send now (possibly none)."""
        async with self._lock:
            if self.blocked or self._crashed:
                return []
            if self._finished:
                raise RuntimeError("feed() after finish(): a StreamGuard guards one answer")
            if not delta:
                return []
            self._pending.append(delta)
            self._total += len(delta)
            new_chars = self._total - self._last_scan_at
            due = new_chars >= self.settings.scan_every_chars
            if not due and self.settings.release == "sentence":
                # A finished sentence is due for a scan, the first one at once; later ones once
                # half of scan_every_chars arrived, so a run of tiny sentences ("and on. and on.")
                # costs at most twice the scans of the interval alone.
                soon = self._released == 0 or new_chars * 2 >= self.settings.scan_every_chars
                due = soon and self._sentence_finished()
            if not due:
                return []
            return await self._scan_and_release(final=False)

    async def finish(self) -> list[str]:
        """The stream ended: scan what is unreleased and release it, or block."""
        async with self._lock:
            if self._finished or self.blocked or self._crashed:
                self._finished = True
                return []
            self._finished = True
            if self._released == self._total:
                return []
            if self._cleared < self._total:
                return await self._scan_and_release(final=True)
            return self._release(self._total)

    # ------------------------------------------------------------------ internals

    async def _scan_and_release(self, *, final: bool) -> list[str]:
        self._take_pending()
        self._last_scan_at = self._total
        start = max(0, min(self._released, self._total - self.settings.window_chars))
        end = self._total if final else self._scan_end(start)
        if end <= self._last_scan_end and not final:
            return []  # no sentence finished since the last scan: nothing new to judge
        text = self._buffer[start - self._base : end - self._base]
        event = await self._scan(text, start, end, final=final)
        self._events.append(event)
        self._scanned_chars += end - start
        self._last_scan_end = end
        if not event.cleared:
            self._verdict = event.verdict
            self._buffer, self._pending = "", []
            replacement = self.settings.replacement
            return [replacement] if replacement is not None else []
        self._cleared = end
        if final or (self.settings.release == "sentence" and end < self._total):
            return self._release(end)  # the scan stopped after a finished sentence: all of it goes out
        return self._release(self._total - self.settings.hold_back_chars)

    def _sentence_finished(self) -> bool:
        """Whether a sentence has finished after the end of the last scan (a scan is then due)."""
        self._take_pending()
        for match in SENTENCE_END.finditer(self._buffer, max(0, self._last_scan_end - self._base)):
            if match.start() + self._base > self._last_scan_end:
                return True
        return False

    def _scan_end(self, start: int) -> int:
        """Where a mid-stream scan stops: after the last finished sentence, when the unfinished
        one after it is short enough to stay held back anyway.

        Scored on its own, a half-written sentence can read as a violation its end undoes
        ("Then kill" before "the process with kill -9"); it is judged once it is complete, and
        it cannot go out before then. An unfinished sentence longer than the hold-back is
        scanned as it stands, since part of it is about to be released.
        """
        text = self._buffer[start - self._base : self._total - self._base]
        boundary = start
        for match in SENTENCE_END.finditer(text):
            boundary = start + match.start()
        return self._total if self._total - boundary > self.settings.hold_back_chars else boundary

    async def _scan(self, text: str, start: int, end: int, *, final: bool) -> ScanEvent:
        timeout = self.settings.check_timeout_s
        began = time.perf_counter()
        verdict: GuardVerdict | None = None
        error: str | None = None
        try:
            answer = await asyncio.wait_for(self.check(text), timeout)
        except TimeoutError:
            error = f"the check did not answer within {timeout} s"
        except GuardUnavailableError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            self._crashed = f"{type(exc).__name__}: {exc}"
            raise
        else:
            if not isinstance(answer, GuardVerdict):
                self._crashed = f"the check returned {type(answer).__name__}, not a GuardVerdict"
                raise TypeError(self._crashed)
            verdict = answer
        latency = time.perf_counter() - began
        outcome: ScanOutcome
        if verdict is not None:
            outcome = "allowed" if verdict.allowed else "blocked"
        elif self.settings.fail_mode == "open":
            outcome = "failed_open"
            verdict = GuardVerdict(allowed=True, reason=GUARD_FAILED)
        else:
            outcome = "failed_closed"
            verdict = GuardVerdict(allowed=False, reason=GUARD_FAILED)
        return ScanEvent(start, end, final, outcome, verdict, latency, error)

    def _take_pending(self) -> None:
        if self._pending:
            self._buffer += "".join(self._pending)
            self._pending = []

    def _release(self, upto: int) -> list[str]:
        upto = min(upto, self._cleared)  # the invariant: nothing past what a scan cleared
        if upto <= self._released:
            return []
        self._take_pending()
        piece = self._buffer[self._released - self._base : upto - self._base]
        self._released = upto
        self._released_parts.append(piece)
        # Keep only what a later scan can look at: the window and the unreleased text.
        keep = max(0, min(self._released, self._total - self.settings.window_chars))
        if keep > self._base:
            self._buffer = self._buffer[keep - self._base :]
            self._base = keep
        return [piece]


async def guard_stream(deltas: AsyncIterable[str], guard: StreamGuard) -> AsyncIterator[str | Blocked]:
    """Yield the released text of ``deltas``, ending with a :class:`Blocked` marker if stopped.

    On a violation the upstream is not read any further, and it is closed (``aclose()``) when
    it can be, as it is when this generator is closed early. If the upstream raises, the
    exception propagates and the withheld text is not released.
    """
    try:
        async for delta in deltas:
            for piece in await guard.feed(delta):
                yield piece
            if guard.blocked:
                break
        else:
            for piece in await guard.finish():
                yield piece
        if guard.verdict is not None:
            yield Blocked(guard.verdict, replaced=guard.settings.replacement is not None)
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()


async def watch_stream(deltas: AsyncIterable[str], guard: StreamGuard) -> AsyncIterator[str]:
    """Shadow mode: yield every delta of ``deltas`` as it comes, unchanged and without hold-back,
    and feed it to ``guard`` beside, which decides what it would have released and where it would
    have stopped the stream (:attr:`StreamGuard.verdict`, :attr:`StreamGuard.released_text`) and
    stops nothing. After a violation, a guard failure or a bug in the check (:attr:`StreamGuard.crashed`)
    the guard is fed no more; the stream goes on."""
    watching = True
    try:
        async for delta in deltas:
            yield delta
            if not watching:
                continue
            try:
                await guard.feed(delta)
            except Exception:  # a bug in the check: guard.crashed says what; the stream goes on
                log.exception("the stream guard failed while watching a stream in shadow mode")
                watching = False
            watching = watching and not guard.blocked
        if watching:
            try:
                await guard.finish()
            except Exception:
                log.exception("the stream guard failed while watching a stream in shadow mode")
    finally:
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()


# ---------------------------------------------------------------------- seawall's moderation as a check


def moderation_check(
    service: ModerationService, *, model: str | None = None, focus_chars: int | None = 200
) -> Check:
    """A check backed by seawall's moderation service: refuse a span if any category is flagged.

    The span is scored whole and, with ``focus_chars`` set, also sentence by sentence (see
    :func:`focus_segments`), so benign context cannot dilute a violation (see the module's
    docstring). Scores are the highest over the pieces. Any span is judged, however many pieces
    it makes: :meth:`~seawall.service.ModerationService.moderate_texts` sends them in as many
    batches as they need, and there are at most about three characters of pieces per character
    of span (sentences, pairs of neighbouring ones, and the whole).
    """

    async def check(text: str) -> GuardVerdict:
        [result] = await service.moderate_texts([text], model, focus_chars=focus_chars)
        scores = {name: float(score) for name, score in result.category_scores.items()}
        categories = sorted(name for name, hit in result.categories.items() if hit)
        reason = f"flagged: {', '.join(categories)}" if categories else ""
        return GuardVerdict(allowed=not categories, categories=categories, scores=scores, reason=reason)

    return check
