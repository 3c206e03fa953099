"""The red team's data: an attack case, what a target answered, and the verdict on it.

Everything here is a pydantic model, so a suite, a result and a whole report
round-trip through JSON unchanged (freeze, replay, baselines).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["low", "medium", "high", "critical"]
SEVERITY_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class Verdict(StrEnum):
    """What a case showed. Only ``vulnerable`` and ``safe`` enter an attack success rate."""

    VULNERABLE = "vulnerable"
    SAFE = "safe"
    ERROR = "error"
    INCONCLUSIVE = "inconclusive"


class Document(BaseModel):
    """Untrusted text the target is given to work with (a retrieved page, a file)."""

    model_config = ConfigDict(extra="forbid")

    source: str
    text: str


class Check(BaseModel):
    """How a reply is judged: the detector's name and what it looks for.

    ``expect`` holds planted values (a marker, a canary, fake records) whose appearance in a
    reply is the attack's success; ``categories`` the moderation categories of a harmful goal;
    ``patterns`` regular expressions that show a task was done (for hallucination checks: that
    the answer holds the source's fact or corrects a false premise); ``contradicts`` regular
    expressions whose match contradicts the provided source (or affirms a false premise, or
    asserts invented details); ``entity`` a fictitious name.
    """

    model_config = ConfigDict(extra="forbid")

    detector: str
    expect: dict[str, str] = Field(default_factory=dict)
    categories: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    #: Tools whose call is the attack's success (agent probes: a dangerous tool nobody asked for).
    tools: list[str] = Field(default_factory=list)
    contradicts: list[str] = Field(default_factory=list)
    entity: str | None = None
    min_chars: int | None = None
    min_lines: int | None = None


class TreeSearch(BaseModel):
    """The ``tree`` strategy's search (TAP, "Tree of Attacks with Pruning"): at each depth every live
    attempt branches into ``branching`` rewrites, off-topic rewrites are pruned unsent, the answers
    are scored and the best ``width`` attempts live on, until one succeeds, ``depth`` is reached or
    ``max_queries`` attempts were sent (``suite.tree`` in redteam.yaml; each tree case carries a copy)."""

    model_config = ConfigDict(extra="forbid")

    branching: int = Field(3, ge=1, le=8, description="Rewrites of each live attempt per depth (B).")
    width: int = Field(3, ge=1, le=32, description="Attempts kept alive after each depth, best first (W).")
    depth: int = Field(3, ge=1, le=10, description="Rewriting depths after the request as written (D).")
    max_queries: int = Field(
        20,
        ge=2,
        le=1000,
        description="Attempts sent to the target per case, the request as written included.",
    )
    min_on_topic: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of the goal's key terms a rewrite must keep to be sent (else pruned unsent).",
    )
    seed: int | None = Field(
        None, description="Seeds the choice among more candidate rewrites than branching (null: suite.seed)."
    )


class AttackCase(BaseModel):
    """One attack: the conversation to hold with the target and how to judge its answer."""

    model_config = ConfigDict(extra="forbid")

    id: str
    probe: str
    family: str
    title: str
    severity: Severity = "medium"
    owasp: list[str] = Field(default_factory=list)
    atlas: list[str] = Field(default_factory=list)
    #: Threat ids of OWASP's "Agentic AI - Threats and Mitigations" (T2 Tool Misuse, ...).
    agentic: list[str] = Field(default_factory=list)
    goal: str = ""
    #: The system prompt to send (the app's own plus anything planted); None sends none.
    system: str | None = None
    #: The user turns, sent one after the other; each gets the target's real reply.
    turns: list[str]
    documents: list[Document] = Field(default_factory=list)
    #: A tool result placed (with its tool call) before the last user turn.
    tool_output: str | None = None
    #: The tool whose (pre-placed) call returned ``tool_output``.
    tool_output_name: str = "lookup"
    #: Authored messages placed before the first user turn (a fabricated earlier conversation for
    #: context priming, or an agent's earlier tool calls and their results), OpenAI-shaped.
    history: list[dict[str, Any]] = Field(default_factory=list)
    #: Tools offered to the target (OpenAI chat ``tools`` entries: ``{"type": "function", ...}``).
    tools: list[dict[str, Any]] = Field(default_factory=list)
    #: What each tool returns when the target calls it, by tool name (``*``: any other tool).
    tool_results: dict[str, str] = Field(default_factory=dict)
    #: Judge the reply to every user turn, not only the last: the conversation's verdict is
    #: vulnerable at the first turn that breaks (multi-turn strategies).
    judge_each_turn: bool = False
    #: Rounds of the iterative attacker (rewrite a refused attempt from the target's answer);
    #: 0: the turns are sent as written.
    iterate: int = 0
    #: The tree search (``tree`` strategy) this case runs instead of its last turn as written.
    tree: TreeSearch | None = None
    #: The catalogue goal (goals.yaml id) the case asks for, when it asks for one.
    goal_id: str | None = None
    #: The strategies applied to the last user turn, in order; empty for the probe as authored.
    strategy: list[str] = Field(default_factory=list)
    check: Check
    #: The probe's text before any strategy (for reports and replays).
    original: str = ""
    source: str = "builtin"

    @property
    def strategy_name(self) -> str:
        return "+".join(self.strategy) if self.strategy else "none"

    def attacker_text(self) -> str:
        """Everything the attacker wrote (turns, documents, tool output), for echo checks."""
        parts = [*self.turns, self.original, *(d.text for d in self.documents)]
        if self.tool_output:
            parts.append(self.tool_output)
        parts += [str(m.get("content") or "") for m in self.history]
        parts += list(self.tool_results.values())
        return "\n".join(parts)


class CaseResult(BaseModel):
    """A case, the target's replies and the verdict, with the evidence behind it."""

    model_config = ConfigDict(extra="forbid")

    case: AttackCase
    verdict: Verdict
    reason: str
    evidence: list[str] = Field(default_factory=list)
    replies: list[str] = Field(default_factory=list)
    #: The target refused the request itself (HTTP-level block): neither safe nor a success.
    blocked: bool = False
    error: str | None = None
    refused: bool | None = None
    #: The refusal classifier's label of the final reply: refusal, partial or compliance.
    refusal: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    judged_by: str = "rules"
    latency_ms: float = 0.0
    #: Why an accepted finding is suppressed (from the suppression file); None if it is not.
    suppressed: str | None = None
    #: The user turn (1-based) whose reply broke the target, for multi-turn and iterative cases.
    broke_at_turn: int | None = None
    #: The verdict on each turn's reply, for cases judged turn by turn.
    turn_verdicts: list[str] = Field(default_factory=list)
    #: The user turns actually sent, where they differ from the case's (the iterative attacker's).
    sent: list[str] = Field(default_factory=list)
    #: Every tool call the target made: ``{"turn", "name", "arguments"}`` (arguments as sent).
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.case.id


class Suite(BaseModel):
    """A generated (or frozen) list of cases; ``seed`` and ``fingerprint`` identify it."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["seawall.redteam.suite/1"] = "seawall.redteam.suite/1"
    seed: int
    cases: list[AttackCase]
    #: Probes left out, with why (e.g. off-topic probes without a declared purpose).
    skipped: list[dict[str, str]] = Field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        import hashlib

        payload = "\n".join(case.model_dump_json() for case in self.cases)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
