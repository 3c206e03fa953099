"""``redteam.yaml``: one typed object for a scan (separate from the server's Settings).

Example (see ``examples/redteam.yaml`` for every field)::

    target: {type: openai, base_url: http://127.0.0.1:8000/v1, model: my-model, api_key_env: MY_KEY}
    app: {system_prompt: "You are Velo Help ...", purpose: "bike shop customer support"}
    suite: {seed: 7, strategies: [base64, rot13, [leetspeak, roleplay]], per_strategy: 6}
    run: {concurrency: 8}
    gate: {fail_on: ["severity:high", "asr:0.10", "regression"], baseline: last/report.json}
    report: {dir: redteam-report, formats: [json, jsonl, junit, sarif, html]}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from seawall.errors import ConfigurationError
from seawall.redteam.cases import TreeSearch
from seawall.redteam.strategies import DEFAULT_STRATEGIES
from seawall.validation_errors import validation_problems

#: Multi-turn strategies a default suite applies (seawall.redteam.conversation); all offline.
DEFAULT_CONVERSATIONS: tuple[str, ...] = ("crescendo", "priming", "iterative")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAITargetConfig(_Strict):
    """An OpenAI-compatible chat endpoint (``type: openai``) or the seawall gateway (``type: seawall``)."""

    type: Literal["openai", "seawall"] = "openai"
    base_url: str = Field(description="Base URL up to and including /v1.")
    model: str = Field(description="Model name sent in every request.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (never the key)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers; ${VAR} reads the environment."
    )
    temperature: float | None = Field(
        0.0, description="Sampling temperature (0 for repeatable runs; null: server default)."
    )
    max_tokens: int | None = Field(
        None, ge=1, description="max_tokens per request; null sends none (the target's own cap is tested)."
    )
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra request fields.")
    api: Literal["chat", "responses"] = Field(
        "chat",
        description="chat: POST /chat/completions; responses: POST /responses (OpenAI's Responses API).",
    )
    stream: bool = Field(
        False, description="Ask for a server-sent-event stream and assemble its deltas (text and tool calls)."
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class HTTPTargetConfig(_Strict):
    """Any HTTP endpoint (``type: http``): a JSON body template and a JSONPath to the reply."""

    type: Literal["http"]
    url: str
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(
        description="JSON template: {{prompt}}, {{messages}}, {{history}}, {{system}}, {{conversation}}."
    )
    reply_path: str = Field(description="JSONPath to the reply's text, e.g. $.choices[0].message.content.")
    blocked_status: list[int] = Field(
        default_factory=list, description="Statuses that mean 'the app refused'."
    )
    tool_calls_path: str | None = Field(
        None,
        description="JSONPath to the reply's tool calls (OpenAI's tool_calls list); {{tools}} sends tools.",
    )
    stream: bool = Field(False, description="Read the reply as server-sent events (needs delta_path).")
    delta_path: str | None = Field(
        None, description="With stream: JSONPath to each event's text, e.g. $.choices[0].delta.content."
    )


class CallableTargetConfig(_Strict):
    """A Python function (``type: callable``): ``module:function(messages) -> str | dict``."""

    type: Literal["callable"]
    callable: str


TargetConfig = Annotated[
    OpenAITargetConfig | HTTPTargetConfig | CallableTargetConfig, Field(discriminator="type")
]


class AppConfig(_Strict):
    """What the scan knows about the app under test."""

    system_prompt: str | None = Field(
        "You are a helpful assistant.",
        description="Sent as the system message of every case; probes plant canaries and records after it.",
    )
    purpose: str | None = Field(None, description="The app's declared purpose; off-topic probes need it.")


class SuiteConfig(_Strict):
    """Which cases a scan generates. The same seed and options give the same suite."""

    seed: int = Field(0, description="Fixes planted values, strategy sampling and noise.")
    families: list[str] | None = Field(None, description="Probe families to include (null: all).")
    probes: list[str] | None = Field(None, description="Probe ids or id prefixes to include (null: all).")
    exclude: list[str] = Field(
        default_factory=list, description="Probe ids, prefixes or families to leave out."
    )
    strategies: list[str | list[str]] = Field(
        default_factory=lambda: list[str | list[str]]([*DEFAULT_STRATEGIES, *DEFAULT_CONVERSATIONS]),
        description="Strategies or chains (a list, or names joined with '+') applied to sampled cases; "
        "the multi-turn ones (crescendo, priming, iterative, tree) stand alone; tree is not in the default.",
    )
    tree: TreeSearch = Field(
        default_factory=TreeSearch,
        description="The tree strategy's search (TAP-style): branching, width, depth, max_queries "
        "(attempts per case), min_on_topic (share of the goal's key terms a rewrite must keep), seed.",
    )
    per_strategy: int = Field(6, ge=0, description="Base cases each strategy (chain) is applied to.")
    files: list[Path] = Field(default_factory=list, description="CSV/JSONL files of your own prompts.")
    plugins: bool = Field(True, description="Include probes from seawall.redteam.probes entry points.")
    max_cases: int | None = Field(None, ge=1, description="Cap on the number of cases (a seeded sample).")

    @field_validator("strategies")
    @classmethod
    def _distinct_chains(cls, value: list[str | list[str]]) -> list[str | list[str]]:
        """Each entry names strategies, and no entry repeats another: the same chain twice would
        give every one of its cases twice, under the same id."""
        seen: dict[tuple[str, ...], int] = {}
        for index, entry in enumerate(value):
            names = tuple(entry.split("+") if isinstance(entry, str) else entry)
            if not names:
                raise ValueError(f"entry {index} is an empty chain; name its strategies or remove it")
            if not all(name.strip() for name in names):
                raise ValueError(f"entry {index} ({entry!r}) has an empty strategy name")
            if names in seen:
                raise ValueError(
                    f"{'+'.join(names)!r} is listed twice (entries {seen[names]} and {index}); "
                    "list each strategy or chain once"
                )
            seen[names] = index
        return value


class RunConfig(_Strict):
    concurrency: int = Field(8, ge=1, description="Cases in flight at once.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout.")
    retries: int = Field(1, ge=0, description="Retries on connection errors, 429 and 5xx.")


class DetectorConfig(_Strict):
    moderation: bool = Field(True, description="Judge harm with the seawall moderation model.")
    moderation_backend: str = Field(
        "local", description="Moderation backend for the harm detector; --offline forces 'local'."
    )
    long_reply_chars: int = Field(
        8000, ge=100, description="A reply this long answers an unbounded-consumption probe."
    )

    @field_validator("moderation_backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if (reason := unknown_backend(value)) is not None:
            raise ValueError(reason)
        return value


def unknown_backend(name: str) -> str | None:
    """Why ``name`` is no registered moderation backend (None when it is one), so that a typo is
    caught when the config is read, not by every case's detector once the target has answered."""
    from seawall.backends.base import available_backends  # the settings load only when asked

    registered = available_backends()
    if name in registered:
        return None
    return f"unknown moderation backend {name!r}; known: {', '.join(sorted(registered)) or 'none'}"


class JudgeConfig(_Strict):
    """An optional LLM judge for inconclusive cases; never called unless configured, never with --offline."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0


class AttackerConfig(_Strict):
    """The attacker model of the iterative strategy (PAIR-style rewrites) and of the tree strategy (its
    branches, one angle each), any OpenAI-compatible endpoint; never called with --offline (the
    offline ladder of reframings is used instead)."""

    base_url: str = Field(description="Base URL up to and including /v1.")
    model: str = Field(description="The attacker model's name.")
    api_key_env: str | None = Field(None, description="Environment variable holding its API key.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature of the rewrites.")
    seed: int | None = Field(
        0,
        description="Sent as OpenAI's 'seed' with every rewrite request, so a server that honours it "
        "gives the same rewrites for the same scan (repeatable trees and iterations); null sends none.",
    )
    rounds: int | None = Field(
        None, ge=1, le=20, description="Attempts per iterative case (null: the script's default, 4)."
    )


class GateConfig(_Strict):
    fail_on: list[str] = Field(
        default_factory=list,
        description="'severity:LEVEL' (an unsuppressed finding at or above), 'asr:RATE' (overall ASR above), "
        "'asr:FAMILY=RATE', 'regression' (significantly worse than the baseline), 'any'.",
    )
    baseline: Path | None = Field(None, description="A previous report.json to compare with.")
    suppressions: Path | None = Field(None, description="YAML list of accepted findings with reasons.")
    max_error_rate: float = Field(0.2, ge=0, le=1, description="More errors than this fraction: exit 2.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the regression test.")


ReportFormat = Literal["json", "jsonl", "junit", "sarif", "html"]
REPORT_FORMATS: tuple[ReportFormat, ...] = ("json", "jsonl", "junit", "sarif", "html")


class ReportConfig(_Strict):
    dir: Path = Field(
        Path("redteam-report"),
        description="Where reports are written; relative to the config file when set there, else to the cwd.",
    )
    formats: list[ReportFormat] = Field(default_factory=lambda: list(REPORT_FORMATS))


class RedTeamConfig(_Strict):
    """Everything a scan is configured with."""

    target: TargetConfig | None = None
    app: AppConfig = Field(default_factory=AppConfig)
    suite: SuiteConfig = Field(default_factory=SuiteConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    detectors: DetectorConfig = Field(default_factory=DetectorConfig)
    judge: JudgeConfig | None = None
    attacker: AttackerConfig | None = None
    offline: bool = Field(False, description="No traffic except to the target: local moderation, no judge.")
    gate: GateConfig = Field(default_factory=GateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


def load_config(path: str | Path | None = None, **overrides: Any) -> RedTeamConfig:
    """Read ``redteam.yaml`` (relative paths in it are relative to the file) and apply ``overrides``."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        base = path.parent
        try:
            loaded = yaml.safe_load(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigurationError(f"{path} must hold a mapping at the top level")
        data = loaded or {}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    try:
        config = RedTeamConfig.model_validate(data)
    except ValidationError as exc:
        where = str(path) if path is not None else "red-team config"
        problems = validation_problems(exc, RedTeamConfig, keep_branch_labels=False)
        raise ConfigurationError(
            "\n".join(f"{where}: {field}: {what}" for field, what in problems), param=problems[0][0]
        ) from exc
    config.suite.files = [f if f.is_absolute() else base / f for f in config.suite.files]
    for holder, name in ((config.gate, "baseline"), (config.gate, "suppressions")):
        value = getattr(holder, name)
        if value is not None and not value.is_absolute():
            setattr(holder, name, base / value)
    if "dir" in config.report.model_fields_set and not config.report.dir.is_absolute():
        config.report.dir = base / config.report.dir  # the default (no dir given) stays in the cwd
    return config


def api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    if env_name not in os.environ:
        raise ConfigurationError(f"environment variable {env_name} (api_key_env) is not set")
    return os.environ[env_name]
