"""The ``llamaguard`` backend: Llama Guard 3 or 4 behind any OpenAI-compatible chat server.

Each input is one ``POST {base_url}/chat/completions`` with the input's text as
the user message; the server (vLLM, Ollama, ...) applies Llama Guard's chat
template, which holds the policy. Requests run in parallel, at most
``llamaguard.concurrency`` at a time for the whole backend (shared by
concurrent calls, not per batch). Plain HTTP with httpx rather than the OpenAI
SDK: these servers often need no key, and the SDK would insist on one.

Long texts: a text longer than ``WINDOW_CHARS`` characters (8,000, about
2,000 tokens: well inside the context of any Llama Guard server together with
its policy prompt) would overflow the server's context if sent whole, so it is
cut into windows of at most ``WINDOW_CHARS`` characters, consecutive windows
overlapping by ``WINDOW_OVERLAP`` characters (so a passage shorter than that
is always seen whole by one window). Each window is one request; the input is
unsafe if any window is, its hazard codes are the union of the windows' codes,
and P(unsafe) is the highest of the windows'. The result's notes say how many
windows there were.

Llama Guard answers ``safe`` or ``unsafe`` followed by a line of hazard codes
(``unsafe\\nS1,S10``). Its codes map onto OpenAI's 13 categories like this
(sub-categories also flag their parent, as everywhere in seawall)::

    S1  violent crimes               violence, illicit/violent (+ illicit)
    S2  non-violent crimes           illicit
    S3  sex-related crimes           sexual, illicit
    S4  child sexual exploitation    sexual/minors, sexual
    S5  defamation                   -
    S6  specialized advice           -
    S7  privacy                      -
    S8  intellectual property        -
    S9  indiscriminate weapons       illicit/violent, illicit
    S10 hate                         hate
    S11 suicide & self-harm          self-harm
    S12 sexual content               sexual
    S13 elections                    -
    S14 code interpreter abuse       illicit

Codes marked ``-`` have no counterpart among the 13 categories: they are
recorded in the result's notes and flag nothing, because inventing a category
would be worse than saying so.

Scores: Llama Guard gives one probability, that of ``unsafe``, not one per
category. With logprobs, P(unsafe) is read from the first non-whitespace
token's ``top_logprobs`` (probabilities of tokens that spell the start of
``unsafe`` against those of ``safe``, normalised; Llama Guard 3 may emit a
newline first). The categories the verdict names get P(unsafe); every other
category gets ``min(P(unsafe), UNNAMED_CATEGORY_CAP)``, so doubt stays visible
without a default threshold ever flagging a category the model did not name.
Without logprobs, scores are 1.0 for named categories and 0.0 otherwise.

Llama Guard here judges text only: for inputs with images, the image
categories are listed in ``not_assessed`` rather than reported safe.

Failures: the API client sees that the llamaguard backend failed and the
server's HTTP status (or that it timed out, was unreachable or replied
nonsense); the server's URL and status go to the ``seawall.backends`` log, with
the API key redacted. Its error body or unexpected reply is logged only as its
length and hash: it can quote the moderated text (see :mod:`seawall.backends.remote`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from seawall.backends.remote import (
    MALFORMED,
    TIMED_OUT,
    UNREACHABLE,
    fingerprint,
    gather_or_cancel,
    http_status,
    upstream_error,
)
from seawall.categories import CATEGORIES, IMAGE_CATEGORIES, with_parents
from seawall.errors import BackendError
from seawall.inputs import ModerationInput
from seawall.results import ModerationResult
from seawall.settings import LlamaGuardBackendSettings, Settings

#: Hazard code → (name in Llama Guard's taxonomy, seawall categories it flags).
HAZARDS: dict[str, tuple[str, frozenset[str]]] = {
    "S1": ("violent crimes", frozenset({"violence", "illicit/violent"})),
    "S2": ("non-violent crimes", frozenset({"illicit"})),
    "S3": ("sex-related crimes", frozenset({"sexual", "illicit"})),
    "S4": ("child sexual exploitation", frozenset({"sexual/minors", "sexual"})),
    "S5": ("defamation", frozenset()),
    "S6": ("specialized advice", frozenset()),
    "S7": ("privacy", frozenset()),
    "S8": ("intellectual property", frozenset()),
    "S9": ("indiscriminate weapons", frozenset({"illicit/violent", "illicit"})),
    "S10": ("hate", frozenset({"hate"})),
    "S11": ("suicide & self-harm", frozenset({"self-harm"})),
    "S12": ("sexual content", frozenset({"sexual"})),
    "S13": ("elections", frozenset()),
    "S14": ("code interpreter abuse", frozenset({"illicit"})),
}

#: Highest score a category the verdict does not name can get from P(unsafe).
UNNAMED_CATEGORY_CAP = 0.1
#: Enough for "unsafe" and several codes; Llama Guard writes nothing else.
MAX_TOKENS = 20
TOP_LOGPROBS = 5
#: Longest text sent in one request; longer texts are judged in overlapping windows this long.
WINDOW_CHARS = 8_000
#: Characters consecutive windows share, so a passage cut at one window's end is whole in the next.
WINDOW_OVERLAP = 500


@dataclass
class Verdict:
    """A parsed Llama Guard reply."""

    unsafe: bool
    codes: list[str] = field(default_factory=list)


def parse_reply(content: str) -> Verdict:
    """Parse ``safe`` / ``unsafe\\nS1,S10``; anything else is a :class:`ValueError` with the reply's
    :func:`~seawall.backends.remote.fingerprint` (never its text)."""
    lines = [line.strip() for line in content.strip().splitlines() if line.strip()]
    head = lines[0].lower() if lines else ""
    if head == "safe":
        return Verdict(unsafe=False)
    if head == "unsafe":
        codes = [code.strip().upper() for line in lines[1:] for code in line.split(",") if code.strip()]
        if codes and all(code.startswith("S") and code[1:].isdigit() for code in codes):
            return Verdict(unsafe=True, codes=codes)
    raise ValueError(f"a reply that is neither 'safe' nor 'unsafe\\nS<n>,...': {fingerprint(content)}")


def split_windows(text: str, size: int = WINDOW_CHARS, overlap: int = WINDOW_OVERLAP) -> list[str]:
    """``text`` cut into windows of at most ``size`` characters, each sharing ``overlap`` with the next."""
    if not 0 <= overlap < size:
        raise ValueError("the overlap must be shorter than the window")
    windows: list[str] = []
    start = 0
    while True:
        end = min(start + size, len(text))
        windows.append(text[start:end])
        if end == len(text):
            return windows
        start = end - overlap


def combine_windows(judged: Sequence[tuple[Verdict, float | None]]) -> tuple[Verdict, float | None]:
    """One verdict for a text judged in windows: unsafe if any window is, every code, the highest P(unsafe).

    A window whose reply had no logprobs counts as P(unsafe) 1.0 if unsafe, else 0.0;
    if no window had logprobs, the combined probability is None too.
    """
    codes: list[str] = []
    for verdict, _ in judged:
        codes += [code for code in verdict.codes if code not in codes]
    unsafe = any(verdict.unsafe for verdict, _ in judged)
    if all(probability is None for _, probability in judged):
        return Verdict(unsafe=unsafe, codes=codes), None
    probability = max((p if p is not None else (1.0 if verdict.unsafe else 0.0)) for verdict, p in judged)
    return Verdict(unsafe=unsafe, codes=codes), probability


def unsafe_probability(logprobs: Any) -> float | None:
    """P(unsafe) from a chat completion's ``choices[0].logprobs``; None if it cannot be read."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    for entry in content:
        if not isinstance(entry, dict) or not str(entry.get("token", "")).strip():
            continue
        candidates = entry.get("top_logprobs") or [entry]
        mass = {"safe": 0.0, "unsafe": 0.0}
        for candidate in candidates:
            if not isinstance(candidate, dict) or not isinstance(candidate.get("logprob"), int | float):
                continue
            kind = _token_kind(str(candidate.get("token", "")))
            if kind is not None:
                mass[kind] += math.exp(candidate["logprob"])
        total = mass["safe"] + mass["unsafe"]
        return mass["unsafe"] / total if total > 0 else None
    return None


def _token_kind(token: str) -> str | None:
    """``unsafe``/``safe`` for a token that spells the start of either word (two letters at least)."""
    text = token.strip().lower()
    if len(text) < 2:
        return None
    for word in ("unsafe", "safe"):
        if text.startswith(word) or word.startswith(text):
            return word
    return None


class LlamaGuardBackend:
    """Asks a Llama Guard model, one chat completion per input, and maps its verdict."""

    name = "llamaguard"

    def __init__(self, settings: LlamaGuardBackendSettings) -> None:
        self.settings = settings
        headers = (
            {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
        )
        self._client = httpx.AsyncClient(
            base_url=settings.base_url, headers=headers, timeout=httpx.Timeout(settings.timeout_s)
        )
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def moderate(self, inputs: Sequence[ModerationInput]) -> list[ModerationResult]:
        return await gather_or_cancel(self._moderate_one(item) for item in inputs)

    async def _moderate_one(self, item: ModerationInput) -> ModerationResult:
        if not item.texts:
            return self._result(item, None, None)
        windows = split_windows(item.text)
        judged = await gather_or_cancel((self._judge(window) for window in windows), self._slots)
        verdict, probability = combine_windows(judged)
        notes: list[str] = []
        if len(windows) > 1:
            notes.append(
                f"llamaguard: {len(item.text)} characters judged in {len(windows)} windows "
                f"of at most {WINDOW_CHARS}"
            )
        return self._result(item, verdict, probability, notes)

    async def _judge(self, text: str) -> tuple[Verdict, float | None]:
        """One request: the verdict on ``text`` and P(unsafe) if logprobs were asked for and sent."""
        choice = await self._ask(text)
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise self._error(
                MALFORMED, f"{self._where} sent a reply without message content: {fingerprint(str(choice))}"
            )
        try:
            verdict = parse_reply(content)
        except ValueError as exc:
            raise self._error(MALFORMED, f"{self._where} sent {exc}") from exc
        probability = unsafe_probability(choice.get("logprobs")) if self.settings.request_logprobs else None
        return verdict, probability

    async def _ask(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        }
        if self.settings.request_logprobs:
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        where = self._where
        try:
            response = await self._client.post("chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise self._error(
                TIMED_OUT, f"{where} did not answer within {self.settings.timeout_s} s", timeout=True
            ) from exc
        except httpx.HTTPError as exc:
            raise self._error(UNREACHABLE, f"{where} could not be reached: {exc!r}") from exc
        if response.status_code != 200:
            raise self._error(
                http_status(response.status_code),
                f"{where} answered HTTP {response.status_code}: body {fingerprint(response.text)}",
            )
        try:
            payload = response.json()
            choice = payload["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise self._error(
                MALFORMED, f"{where} sent a malformed chat completion: {fingerprint(response.text)}"
            ) from exc
        if not isinstance(choice, dict):
            raise self._error(MALFORMED, f"{where} sent a malformed choice: {fingerprint(str(choice))}")
        return choice

    @property
    def _where(self) -> str:
        return f"Llama Guard at {self.settings.base_url}"

    def _error(self, reason: str, detail: str, *, timeout: bool = False) -> BackendError:
        """Log ``detail`` (key redacted) and return the generic error clients see."""
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        return upstream_error(self.name, reason, detail, secret=key, timeout=timeout)

    def _result(
        self,
        item: ModerationInput,
        verdict: Verdict | None,
        probability: float | None,
        window_notes: Sequence[str] = (),
    ) -> ModerationResult:
        named: set[str] = set()
        notes = list(window_notes)
        if verdict is not None and verdict.unsafe:
            for code in verdict.codes:
                hazard = HAZARDS.get(code)
                if hazard is None:
                    notes.append(f"llamaguard: unknown hazard code {code}; not flagged")
                elif not hazard[1]:
                    notes.append(
                        f"llamaguard: {code} ({hazard[0]}) is outside the 13 categories; not flagged"
                    )
                named |= hazard[1] if hazard else set()
            named = with_parents(named)
        if verdict is None:
            p_unsafe = 0.0
            notes.append("llamaguard: no text to assess")
        elif probability is None:
            p_unsafe = 1.0 if verdict.unsafe else 0.0
        else:
            p_unsafe = probability
        unnamed = min(p_unsafe, UNNAMED_CATEGORY_CAP) if probability is not None else 0.0
        scores = {name: (p_unsafe if name in named else unnamed) for name in CATEGORIES}
        categories = {name: name in named for name in CATEGORIES}
        applied = {name: (["text"] if item.texts else []) for name in CATEGORIES}
        not_assessed = {name: ["image"] for name in sorted(IMAGE_CATEGORIES)} if item.images else {}
        return ModerationResult(
            category_scores=scores,
            categories=categories,
            applied_input_types=applied,
            not_assessed=not_assessed,
            backend=self.name,
            notes=notes,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def create(settings: Settings) -> LlamaGuardBackend:
    return LlamaGuardBackend(settings.llamaguard)
