"""Build a suite from the catalogue, the user's probes, plugins and strategies; freeze and load it.

The same options and seed give the same suite, case for case: planted values come from the
seed and the case id, strategy sampling and noise from ``random.Random`` seeded the same way.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from pathlib import Path

from seawall.errors import ConfigurationError
from seawall.redteam.cases import AttackCase, Suite
from seawall.redteam.catalogue import (
    FAMILIES,
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


def _hits(probe: Probe, pattern: str) -> bool:
    """Whether ``pattern`` (a probe id, an id prefix, ``prefix*`` or a family) names ``probe``."""
    return probe.id == pattern or probe.id.startswith(pattern.rstrip("*")) or probe.family == pattern


def _selected(probe: Probe, options: SuiteConfig) -> bool:
    def hit(patterns: Sequence[str]) -> bool:
        return any(_hits(probe, p) for p in patterns)

    if options.families is not None and probe.family not in options.families:
        return False
    if options.probes is not None and not hit(options.probes):
        return False
    return not hit(options.exclude)


def _named(names: Sequence[str], known: Sequence[str]) -> str:
    """``'x' (did you mean 'y'?), 'z'``: each name with the closest known one, if any is close."""
    described = []
    for name in names:
        near = difflib.get_close_matches(name, known, n=1)
        described.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    return ", ".join(described)


def check_selection(probes: Sequence[Probe], options: SuiteConfig) -> None:
    """ConfigurationError when ``suite.families`` names an unknown family, or an entry of
    ``suite.probes`` or ``suite.exclude`` names no probe: a typo would otherwise select nothing (or
    leave out nothing) without a word."""
    problems: list[str] = []
    families = sorted({*FAMILIES, *(p.family for p in probes)})
    if unknown := [f for f in options.families or [] if f not in families]:
        problems.append(
            f"suite.families: unknown family {_named(unknown, families)}; "
            "'seawall redteam list families' lists them"
        )
    names = [*(p.id for p in probes), *families]
    for field in ("probes", "exclude"):
        patterns: list[str] = getattr(options, field) or []
        if unmatched := [p for p in patterns if not any(_hits(probe, p) for probe in probes)]:
            problems.append(
                f"suite.{field}: {_named(unmatched, names)} {'match' if len(unmatched) > 1 else 'matches'} "
                "no probe id, id prefix or family; "
                "'seawall redteam list probes' lists them"
            )
    if problems:
        raise ConfigurationError("; ".join(problems))


def all_probes(options: SuiteConfig) -> list[Probe]:
    probes: list[Probe] = [*builtin_probes(), *grounding_probes()]
    probes += [FileProbe(Path(path)) for path in options.files]
    if options.plugins:
        probes += plugin_probes()
    return probes


def _nothing_selected(options: SuiteConfig) -> str:
    """Why the filters (each of which names something) select no probe together."""
    for field in ("families", "probes"):
        if getattr(options, field) == []:
            return f"the suite selects no probe: suite.{field} is empty (leave it out to take all)"
    if "custom" in (options.families or []) and not options.files:
        return (
            "the suite selects no probe: the family 'custom' holds the prompts of suite.files, which is empty"
        )
    given = [
        f"suite.{field} {value}"
        for field in ("families", "probes", "exclude")
        if (value := getattr(options, field)) is not None and (field != "exclude" or value)
    ]
    together = " together" if len(given) > 1 else ""
    return (
        f"the suite selects no probe: no probe passes {' and '.join(given)}{together}; "
        "widen the selection ('seawall redteam list probes' lists the probes and their families)"
    )


def _no_cases(selected: Sequence[Probe], skipped: Sequence[dict[str, str]]) -> str:
    """Why a suite whose filters selected probes still has no case."""
    if skipped and len(skipped) == len(selected):
        reasons = "; ".join(f"{s['probe']}: {s['reason']}" for s in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        return f"the suite has no cases: every selected probe was skipped ({reasons}{more})"
    names = ", ".join(p.id for p in selected[:5]) + (", ..." if len(selected) > 5 else "")
    return f"the suite has no cases: the selected probes ({names}) gave none"


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
    probes = all_probes(options)
    check_selection(probes, options)
    selected = [probe for probe in probes if _selected(probe, options)]
    if not selected:
        raise ConfigurationError(_nothing_selected(options))
    for probe in selected:
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
    if not cases:
        raise ConfigurationError(_no_cases(selected, skipped))
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

    if path.suffix != ".jsonl" and '"seawall.redteam.report/' in text[:200]:
        raise ConfigurationError(
            f"{path} is a scan's report.json: replay the cases.jsonl beside it, or a suite from freeze"
        )
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
