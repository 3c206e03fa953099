"""The ``llamaguard`` backend: Llama Guard 3 or 4 behind any OpenAI-compatible chat server.

Each input is one ``POST {base_url}/chat/completions`` with the input's text as
the user message; the server (vLLM, Ollama, ...) applies Llama Guard's chat
template, which holds the policy. Requests run in parallel, at most
``llamaguard.concurrency`` at a time for the whole backend. Plain HTTP with
httpx rather than the OpenAI SDK: these servers often need no key, and the SDK
would insist on one.

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
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from seawall.categories import CATEGORIES, IMAGE_CATEGORIES, with_parents
from seawall.errors import BackendError, BackendTimeoutError
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


@dataclass
class Verdict:
    """A parsed Llama Guard reply."""

    unsafe: bool
    codes: list[str] = field(default_factory=list)


def parse_reply(content: str) -> Verdict:
    """Parse ``safe`` / ``unsafe\\nS1,S10``; anything else is a :class:`BackendError` naming the reply."""
    lines = [line.strip() for line in content.strip().splitlines() if line.strip()]
    head = lines[0].lower() if lines else ""
    if head == "safe":
        return Verdict(unsafe=False)
    if head == "unsafe":
        codes = [code.strip().upper() for line in lines[1:] for code in line.split(",") if code.strip()]
        if codes and all(code.startswith("S") and code[1:].isdigit() for code in codes):
            return Verdict(unsafe=True, codes=codes)
    raise BackendError(
        f"Llama Guard sent a reply that is neither 'safe' nor 'unsafe\\nS<n>,...': {content!r}"
    )


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
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=settings.base_url, headers=headers, timeout=httpx.Timeout(settings.timeout_s)
        )
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def moderate(self, inputs: Sequence[ModerationInput]) -> list[ModerationResult]:
        tasks = [asyncio.ensure_future(self._moderate_one(item)) for item in inputs]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _moderate_one(self, item: ModerationInput) -> ModerationResult:
        if not item.texts:
            return self._result(item, None, None)
        async with self._slots:
            choice = await self._ask(item.text)
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise BackendError(f"Llama Guard sent a reply without message content: {str(choice)[:200]}")
        verdict = parse_reply(content)
        probability = unsafe_probability(choice.get("logprobs")) if self.settings.request_logprobs else None
        return self._result(item, verdict, probability)

    async def _ask(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        }
        if self.settings.request_logprobs:
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        where = self.settings.base_url
        try:
            response = await self._client.post("chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise BackendTimeoutError(
                f"Llama Guard at {where} did not answer within {self.settings.timeout_s} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise BackendError(
                f"Llama Guard at {where} could not be reached: {exc.__class__.__name__}"
            ) from exc
        if response.status_code != 200:
            raise BackendError(
                self._redact(
                    f"Llama Guard at {where} answered HTTP {response.status_code}: {response.text[:200]}"
                )
            )
        try:
            payload = response.json()
            choice = payload["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(
                self._redact(
                    f"Llama Guard at {where} sent a malformed chat completion: {response.text[:200]!r}"
                )
            ) from exc
        if not isinstance(choice, dict):
            raise BackendError(f"Llama Guard at {where} sent a malformed choice: {str(choice)[:200]}")
        return choice

    def _redact(self, message: str) -> str:
        """An error body may echo the key back; it goes no further than this process."""
        key = self.settings.api_key
        return message.replace(key, "[redacted]") if key else message

    def _result(
        self, item: ModerationInput, verdict: Verdict | None, probability: float | None
    ) -> ModerationResult:
        named: set[str] = set()
        notes: list[str] = []
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
