"""The red team's Python API: ``scan(target, suite) -> Report``.

``target`` is a :class:`~seawall.redteam.targets.Target`, a base URL (an OpenAI-compatible
server; pass ``model=``), a Python callable of the conversation, or a target config; ``suite``
a :class:`~seawall.redteam.cases.Suite`, a :class:`~seawall.redteam.config.SuiteConfig`, or
None for the default suite. With ``offline=True`` (the default of :func:`scan`) nothing but the
target is contacted: the harm detector uses the embedded moderation model, no judge is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from seawall.errors import ConfigurationError, InvalidRequestError
from seawall.redteam.cases import Suite
from seawall.redteam.config import (
    AppConfig,
    CallableTargetConfig,
    HTTPTargetConfig,
    OpenAITargetConfig,
    RedTeamConfig,
    SuiteConfig,
    api_key,
    unknown_backend,
)
from seawall.redteam.conversation import AttackerModel, LadderRewriter, Rewriter
from seawall.redteam.detectors import DetectorContext, local_moderation
from seawall.redteam.judge import Judge
from seawall.redteam.report import Report
from seawall.redteam.runner import Progress
from seawall.redteam.runner import ascan as _run
from seawall.redteam.suite import build_suite
from seawall.redteam.targets import (
    CallableTarget,
    HTTPTarget,
    OpenAITarget,
    ResponsesTarget,
    SeawallResponsesTarget,
    SeawallTarget,
    Target,
)

TargetLike = Target | str | Callable[..., Any] | OpenAITargetConfig | HTTPTargetConfig | CallableTargetConfig


def make_target(
    spec: TargetLike,
    *,
    model: str | None = None,
    timeout_s: float = 60.0,
    retries: int = 1,
    concurrency: int = 8,
) -> Target:
    """A :class:`Target` from anything :func:`scan` accepts."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, str):
        if not spec.startswith(("http://", "https://")):
            return CallableTarget(spec, timeout_s=timeout_s)
        if not model:
            raise ConfigurationError("a base URL target needs a model name (model=...)")
        return OpenAITarget(spec, model, timeout_s=timeout_s, retries=retries, max_connections=concurrency)
    if isinstance(spec, OpenAITargetConfig):
        classes = {
            ("openai", "chat"): OpenAITarget,
            ("seawall", "chat"): SeawallTarget,
            ("openai", "responses"): ResponsesTarget,
            ("seawall", "responses"): SeawallResponsesTarget,
        }
        cls = classes[spec.type, spec.api]
        return cls(
            spec.base_url,
            spec.model,
            api_key=api_key(spec.api_key_env),
            headers=spec.headers,
            timeout_s=timeout_s,
            retries=retries,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            extra_body=spec.extra_body,
            max_connections=concurrency,
            stream=spec.stream,
        )
    if isinstance(spec, HTTPTargetConfig):
        return HTTPTarget(
            spec.url,
            body=spec.body,
            reply_path=spec.reply_path,
            method=spec.method,
            headers=spec.headers,
            blocked_status=spec.blocked_status,
            stream=spec.stream,
            delta_path=spec.delta_path,
            tool_calls_path=spec.tool_calls_path,
            timeout_s=timeout_s,
            retries=retries,
            max_connections=concurrency,
        )
    if isinstance(spec, CallableTargetConfig):
        return CallableTarget(spec.callable, timeout_s=timeout_s)
    if callable(spec):
        return CallableTarget(spec, timeout_s=timeout_s)
    raise ConfigurationError(f"cannot make a target from {type(spec).__name__}")


async def ascan(
    target: TargetLike,
    suite: Suite | SuiteConfig | None = None,
    *,
    config: RedTeamConfig | None = None,
    model: str | None = None,
    app: AppConfig | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
) -> Report:
    """Scan ``target`` with ``suite``; see :func:`scan`."""
    config = config or RedTeamConfig()
    offline = config.offline if offline is None else offline
    backend = "local" if offline else config.detectors.moderation_backend
    if config.detectors.moderation and (reason := unknown_backend(backend)) is not None:
        raise ConfigurationError(f"detectors.moderation_backend: {reason}")  # set after the config was read
    app = app or config.app
    made = make_target(
        target,
        model=model,
        timeout_s=config.run.timeout_s,
        retries=config.run.retries,
        concurrency=config.run.concurrency,
    )
    if not isinstance(suite, Suite):
        suite = build_suite(suite or config.suite, app, takes_system_prompt=made.takes_system_prompt)
    if config.attacker is not None and config.attacker.rounds is not None:
        rounds = config.attacker.rounds
        suite = suite.model_copy(
            update={
                "cases": [c.model_copy(update={"iterate": rounds}) if c.iterate else c for c in suite.cases]
            }
        )
    context = DetectorContext(
        moderate=local_moderation(backend) if config.detectors.moderation else None,
        long_reply_chars=config.detectors.long_reply_chars,
    )
    judge = None
    notes: list[str] = []
    rewriter: Rewriter = LadderRewriter()
    if config.attacker is not None:
        if offline:
            notes.append("an attacker model is configured but --offline is set: the offline ladder was used")
        else:
            a = config.attacker
            rewriter = AttackerModel(
                a.base_url,
                a.model,
                api_key=api_key(a.api_key_env),
                timeout_s=a.timeout_s,
                temperature=a.temperature,
                seed=a.seed,
            )
    if config.judge is not None:
        if offline:
            notes.append("a judge is configured but --offline is set: it was not used")
        else:
            j = config.judge
            judge = Judge(j.base_url, j.model, api_key(j.api_key_env), j.timeout_s)
    settings = {
        "offline": offline,
        "moderation_backend": backend if config.detectors.moderation else None,
        "judge": None if judge is None else judge.model,
        "rewriter": rewriter.name,
        "concurrency": config.run.concurrency,
        "notes": notes,
    }
    try:
        return await _run(
            made,
            suite,
            concurrency=config.run.concurrency,
            context=context,
            judge=judge,
            progress=progress,
            settings=settings,
            rewriter=rewriter,
        )
    finally:
        await rewriter.aclose()
        if judge is not None:
            await judge.aclose()
        if made is not target:
            await made.aclose()


def scan(
    target: TargetLike,
    suite: Suite | SuiteConfig | None = None,
    *,
    config: RedTeamConfig | None = None,
    model: str | None = None,
    app: AppConfig | None = None,
    offline: bool | None = True,
    progress: Progress | None = None,
) -> Report:
    """Run a red-team scan and return its :class:`Report` (synchronous; use :func:`ascan` in a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(
            ascan(target, suite, config=config, model=model, app=app, offline=offline, progress=progress)
        )
    raise InvalidRequestError("seawall.redteam.scan() was called inside an event loop; await ascan() instead")
