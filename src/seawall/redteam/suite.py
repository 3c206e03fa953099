"""Build a suite from the catalogue, the user's probes, plugins and strategies; freeze and load it.

The same options and seed give the same suite, case for case: planted values come from the
seed and the case id, strategy sampling and noise from ``random.Random`` seeded the same way.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from seawall.errors import ConfigurationError
from seawall.redteam.cases import AttackCase, Suite
from seawall.redteam.catalogue import (
    AuthoredProbe,
    FileProbe,
    Probe,
    ProbeContext,
    builtin_probes,
    plugin_probes,
)
from seawall.redteam.config import AppConfig, SuiteConfig
from seawall.redteam.conversation import conversation_strategies
from seawall.redteam.grounding import grounding_probes
from seawall.redteam.strategies import apply_chain, available_strategies, resolve_chain


def _selected(probe: Probe, options: SuiteConfig) -> bool:
    def hit(patterns: Sequence[str]) -> bool:
        return any(probe.id == p or probe.id.startswith(p.rstrip("*")) or probe.family == p for p in patterns)

    if options.families is not None and probe.family not in options.families:
        return False
    if options.probes is not None and not hit(options.probes):
        return False
    return not hit(options.exclude)


def all_probes(options: SuiteConfig) -> list[Probe]:
    probes: list[Probe] = [*builtin_probes(), *grounding_probes()]
    probes += [FileProbe(Path(path)) for path in options.files]
    if options.plugins:
        probes += plugin_probes()
    return probes


def build_suite(
    options: SuiteConfig | None = None, app: AppConfig | None = None, *, takes_system_prompt: bool = True
) -> Suite:
    """The cases a scan with these options sends."""
    options = options or SuiteConfig()
    app = app or AppConfig()
    context = ProbeContext(options.seed, app.system_prompt, app.purpose, takes_system_prompt)
    cases: list[AttackCase] = []
    transformable: set[str] = set()
    skipped: list[dict[str, str]] = []
    for probe in all_probes(options):
        if not _selected(probe, options):
            continue
        if isinstance(probe, AuthoredProbe):
            if probe.needs_purpose and not app.purpose:
                skipped.append(
                    {"probe": probe.id, "reason": "needs app.purpose (the app's declared purpose)"}
                )
                continue
            if probe.plant and probe.plant_into == "system" and not takes_system_prompt:
                skipped.append(
                    {"probe": probe.id, "reason": "plants a secret, but the target takes no system prompt"}
                )
                continue
        made = list(probe.cases(context))
        cases += made
        if probe.transformable:
            transformable |= {case.id for case in made}
    ids = [case.id for case in cases]
    if len(ids) != len(set(ids)):
        raise ConfigurationError("two probes produced the same case id")

    known = available_strategies()
    base = [case for case in cases if case.id in transformable]
    by_family: dict[str, list[AttackCase]] = {}
    for case in base:
        by_family.setdefault(case.family, []).append(case)
    transformed: list[AttackCase] = []
    conversations = conversation_strategies()
    for chain_spec in options.strategies:
        names = chain_spec.split("+") if isinstance(chain_spec, str) else list(chain_spec)
        multi = [n for n in names if n in conversations and n not in known]
        if multi and len(names) > 1:
            raise ConfigurationError(
                f"the multi-turn strategy {multi[0]!r} cannot be chained with others ({'+'.join(names)})"
            )
        conversation = conversations[multi[0]] if multi else None
        chain = [] if conversation else resolve_chain(chain_spec, known)
        name = conversation.name if conversation else "+".join(s.name for s in chain)
        rng = random.Random(f"{options.seed}|sample|{name}")
        pools = {family: rng.sample(members, len(members)) for family, members in sorted(by_family.items())}
        picked: list[AttackCase] = []
        while len(picked) < options.per_strategy and any(pools.values()):
            for family in sorted(pools):
                if pools[family] and len(picked) < options.per_strategy:
                    picked.append(pools[family].pop())
        if conversation is not None:
            for case in sorted(picked, key=lambda c: c.id):
                made_case = conversation.apply(case, random.Random(f"{options.seed}|{case.id}|{name}"))
                if made_case.tree is not None:
                    seed = options.seed if options.tree.seed is None else options.tree.seed
                    made_case = made_case.model_copy(
                        update={"tree": options.tree.model_copy(update={"seed": seed})}
                    )
                transformed.append(
                    made_case.model_copy(update={"id": f"{case.id}+{name}", "strategy": [name]})
                )
            continue
        draws = max(s.draws for s in chain)
        for case in sorted(picked, key=lambda c: c.id):
            for draw in range(draws):
                case_rng = random.Random(f"{options.seed}|{case.id}|{name}|{draw}")
                turns = apply_chain(chain, list(case.turns), case_rng)
                suffix = f"+{name}" + (f"~{draw}" if draws > 1 else "")
                transformed.append(
                    case.model_copy(
                        update={
                            "id": case.id + suffix,
                            "turns": turns,
                            "strategy": [s.name for s in chain],
                        }
                    )
                )
    cases += transformed
    if options.max_cases is not None and len(cases) > options.max_cases:
        rng = random.Random(f"{options.seed}|cap")
        cases = sorted(rng.sample(cases, options.max_cases), key=lambda c: c.id)
    return Suite(seed=options.seed, cases=cases, skipped=skipped)


def freeze(suite: Suite, path: Path) -> None:
    """Write ``suite`` as JSON, to be replayed exactly with :func:`load_suite`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(suite.model_dump_json(indent=1), encoding="utf-8")


def load_suite(path: Path) -> Suite:
    """A frozen suite (``freeze``) or the cases of a JSONL report (one result per line)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read suite {path}: {exc}") from exc
    import json

    try:
        if path.suffix == ".jsonl":
            cases = [
                AttackCase.model_validate(json.loads(line)["case"])
                for line in text.splitlines()
                if line.strip()
            ]
            return Suite(seed=-1, cases=cases)
        return Suite.model_validate_json(text)
    except (ValueError, KeyError) as exc:
        raise ConfigurationError(f"{path} is not a frozen suite or a JSONL report: {exc}") from exc
