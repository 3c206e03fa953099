"""The ``seawall`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from seawall.cli_support import ConfigOption, console, fail
from seawall.errors import DataError, SeawallError
from seawall.settings import ModerationSettings, Settings, load_settings

app = typer.Typer(help="seawall: a self-hosted safety layer for LLM applications.", no_args_is_help=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help=(
            "Folder for everything this instance keeps: store, secrets, audit buffer (data_dir; "
            "else $SEAWALL_DATA_DIR, else ~/.local/share/seawall)."
        ),
    ),
]


def _use_data_dir(data_dir: Path | None) -> None:
    """Point every setting of this process at ``data_dir`` (as ``SEAWALL_DATA_DIR`` would)."""
    if data_dir is not None:
        os.environ["SEAWALL_DATA_DIR"] = str(data_dir.expanduser())


@app.callback()
def main_options(data_dir: DataDirOption = None) -> None:
    """seawall: a self-hosted safety layer for LLM applications."""
    _use_data_dir(data_dir)


def _needs_first_account(settings: Settings) -> bool:
    """Whether nobody can sign in to the review desk yet: no OIDC, and no UI account in the store
    (read once before serving; a store that cannot be read says so when the server starts)."""
    if settings.ui.oidc is not None:
        return False
    from seawall.store import open_store  # SQLAlchemy loads only for the commands that use it

    try:
        store = open_store(settings.store)
    except SeawallError:
        return True
    try:
        return not store.list_accounts()
    except SeawallError:
        return True
    finally:
        store.close()


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (server.host).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (server.port); 0: a free one the OS picks (see --port-file).")
    ] = None,
    port_file: Annotated[
        Path | None,
        typer.Option(
            "--port-file",
            help=(
                "Write the port the server listens on to this file (the number and a newline) once it "
                "accepts requests; removed when it stops. With --port 0: how a script learns the port."
            ),
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Run the HTTP service (OpenAI-compatible /v1/moderations) on embedded defaults."""
    _use_data_dir(data_dir)
    from seawall.server.app import create_app, gateway_enabled
    from seawall.server.serving import check_port_file, serve_app

    overrides: dict[str, Any] = {}
    if host or port is not None:
        overrides["server"] = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    try:
        settings = load_settings(config, **overrides)
        if port_file is not None:
            check_port_file(port_file)
        application = create_app(settings)
    except SeawallError as exc:
        raise fail(exc.message) from exc
    if gateway_enabled(settings):
        upstream = settings.gateway.upstream.base_url
        upstream = upstream or "the bundled local model (started as a child process)"
        chat = f"; chat gateway in front of {upstream}"
        if settings.ui.enabled:
            chat += "; review desk at /ui/"
            if _needs_first_account(settings):
                chat += " (first account: seawall accounts create alice --role admin)"
    elif settings.gateway.enabled is False:
        chat = "; chat gateway off (gateway.enabled: false)"
    else:
        chat = "; chat gateway off (set gateway.upstream.base_url, or install 'seawall\\[local-llm]')"

    def announce(bound: int) -> None:
        console.print(
            f"seawall serving on http://{settings.server.host}:{bound}/v1 "
            f"(moderation backend: {settings.moderation.backend}{chat})"
        )

    status = serve_app(application, settings, on_listening=announce, port_file=port_file)
    if status != 0:
        raise typer.Exit(status)


def _utf8_lines(stream: BinaryIO, source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each non-blank line; invalid UTF-8 is an error that names the line."""
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise fail(f"{source}:{number}: not valid UTF-8 ({exc.reason})") from exc
        if line.strip():
            yield number, line


def _read_jsonl_records(
    stream: BinaryIO, source: str, limits: ModerationSettings
) -> tuple[list[Any], list[Any]]:
    """Records of a JSONL file (each a string or an object with 'input' or 'text') and their inputs;
    the first bad line (a malformed record, or an input over ``limits``) stops the command with
    its number, before anything is moderated."""
    from seawall.batch.files import jsonl_records
    from seawall.batch.rows import record_input

    records: list[Any] = []
    items: list[Any] = []
    try:
        for number, record in jsonl_records(stream, source):
            item = record_input(record, f"{source}:{number}")
            _check_input(item, limits, f"{source}:{number}")
            items.append(item)
            records.append(record)
    except SeawallError as exc:
        raise fail(exc.message) from exc
    return records, items


def _read_text_lines(stream: BinaryIO, source: str, limits: ModerationSettings) -> list[str]:
    """Each non-blank line of plain text is one input; the first bad line (not UTF-8, or over
    ``limits``) stops the command with its number, before anything is moderated."""
    lines: list[str] = []
    try:
        for number, line in _utf8_lines(stream, source):
            _check_input(line, limits, f"{source}:{number}")
            lines.append(line)
    except SeawallError as exc:
        raise fail(exc.message) from exc
    return lines


def _check_input(item: Any, limits: ModerationSettings, where: str) -> None:
    """The service's own checks of one input, up front: a line too long for it fails with its number
    here, not as "input[N]" of whichever batch it landed in, after the lines before it were scored."""
    from seawall.inputs import parse_input

    try:
        parse_input(item, max_items=limits.max_items, max_chars=limits.max_chars)
    except SeawallError as exc:
        raise DataError(f"{where}: {exc.message}") from exc


def progress_bar(label: str, *, disable: bool = False) -> Progress:
    """The CLI's progress bar for long runs over many texts: label, bar, done/total, time left."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    )


@app.command()
def moderate(
    text: Annotated[str | None, typer.Argument(help="Text to moderate; '-' reads lines from stdin.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="JSONL input ('-' for stdin): strings or {'input'|'text': ...}. With --engine ray: "
            "JSONL or Parquet files, or a folder of them.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="JSONL output (default stdout). With --engine ray: a folder of part files and a manifest.",
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Backend or OpenAI model name.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs per backend call.")] = 256,
    engine: Annotated[
        Literal["single", "ray"],
        typer.Option(help="single: this process; ray: an actor pool on Ray Data (the ray extra), resumable."),
    ] = "single",
    output_format: Annotated[
        Literal["jsonl", "parquet"] | None,
        typer.Option("--output-format", help="Ray engine: part files' format (default: the input's)."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray engine: the cluster to join, as ray.init(address=...) takes it "
            "(default $RAY_ADDRESS, else a local instance)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Ray engine: actors, one model each (default: the cluster's CPUs)."),
    ] = None,
    threads_per_worker: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Ray engine: CPU threads each actor's model uses, also reserved from Ray as its CPUs "
            "(default: moderation.threads, else a node's cores divided among the workers).",
        ),
    ] = None,
    block_rows: Annotated[
        int, typer.Option(min=1, help="Ray engine: input lines (or rows) per block, the unit of resumption.")
    ] = 2000,
    restart: Annotated[
        bool, typer.Option(help="Ray engine: discard the blocks a previous run finished in --output.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Moderate a text, or a JSONL file with a progress bar; prints JSON results.

    With --engine ray: a corpus of JSONL/Parquet on a Ray cluster, resumable (a rerun skips finished blocks).
    """
    if engine == "ray":
        _moderate_on_ray(
            file,
            output,
            model,
            batch_size,
            output_format,
            address,
            workers,
            threads_per_worker,
            block_rows,
            restart,
            config,
        )
        return
    from seawall.batch.rows import moderate_items, output_row
    from seawall.service import ModerationService

    if (text is None) == (file is None):
        raise fail("give either TEXT or --file")
    try:
        settings = load_settings(config)
    except SeawallError as exc:
        raise fail(exc.message) from exc
    limits = settings.moderation
    records: list[Any]
    if text == "-":
        records = _read_text_lines(sys.stdin.buffer, "<stdin>", limits)
        items = list(records)
    elif text is not None:
        records, items = [text], [text]
    elif str(file) == "-":
        records, items = _read_jsonl_records(sys.stdin.buffer, "<stdin>", limits)
    else:
        assert file is not None
        if not file.is_file():
            raise fail(f"no such file: {file}")
        if file.suffix.lower() == ".parquet":
            raise fail(f"{file}: Parquet input is read by the batch engine: add --engine ray")
        with file.open("rb") as stream:
            records, items = _read_jsonl_records(stream, str(file), limits)

    # The output is opened before any scoring (a bad path costs nothing) and each chunk's rows are
    # written as it finishes, so an interruption keeps what was done.
    try:
        out = output.open("w", encoding="utf-8") if output else sys.stdout
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or exc}") from exc
    done = {"rows": 0, "flagged": 0}

    async def run() -> None:
        service = ModerationService(settings)
        try:
            with progress_bar("moderating", disable=len(items) < 2 * batch_size) as progress:
                task = progress.add_task("moderate", total=len(items))
                for start in range(0, len(items), batch_size):
                    results = await moderate_items(
                        service, items[start : start + batch_size], model, chunk=batch_size
                    )
                    for record, found in zip(records[start : start + batch_size], results, strict=True):
                        row = output_row(record, found)
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
                        done["flagged"] += any(r["flagged"] for r in row["results"])
                    out.flush()
                    done["rows"] += len(results)
                    progress.advance(task, len(results))
        finally:
            await service.aclose()

    try:
        asyncio.run(run())
    except SeawallError as exc:
        raise fail(f"{exc.message} ({_kept(done['rows'], len(items), output)})") from exc
    except OSError as exc:
        raise fail(f"cannot write {output or 'stdout'}: {exc.strerror or exc}") from exc
    except KeyboardInterrupt:
        raise fail(f"interrupted: {_kept(done['rows'], len(items), output)}", 130) from None
    finally:
        if output:
            with contextlib.suppress(OSError):  # a full disk fails the close too; said above
                out.close()
    console.print(f"{done['rows']} input(s), {done['flagged']} flagged")


def _kept(done: int, total: int, output: Path | None) -> str:
    """What an ended run kept, for its message."""
    where = f"in {output}" if output else "above"
    return f"the first {done} of {total} results are {where}" if done else "no results were written"


def _moderate_on_ray(
    file: Path | None,
    output: Path | None,
    model: str | None,
    batch_size: int,
    output_format: Literal["jsonl", "parquet"] | None,
    address: str | None,
    workers: int | None,
    threads_per_worker: int | None,
    block_rows: int,
    restart: bool,
    config: Path | None,
) -> None:
    """``seawall moderate --engine ray``: a resumable batch run into an output folder."""
    from seawall.batch.ray_engine import require_ray
    from seawall.batch.runner import moderate_files

    if file is None or str(file) == "-":
        raise fail("--engine ray reads files: give --file PATH (JSONL or Parquet, or a folder of them)")
    if output is None:
        raise fail("--engine ray writes a folder of part files: give --output FOLDER")
    try:
        require_ray()
        settings = load_settings(config)
        with progress_bar("moderating") as progress:
            task = progress.add_task("moderate", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = moderate_files(
                file,
                output,
                engine="ray",
                output_format=output_format,
                model=model,
                settings=settings,
                block_rows=block_rows,
                chunk=batch_size,
                workers=workers,
                threads_per_worker=threads_per_worker,
                address=address,
                restart=restart,
                progress=advance,
            )
    except SeawallError as exc:
        raise fail(exc.message) from exc
    console.print(
        f"{report.rows} input(s), {report.flagged} flagged; {report.computed} block(s) computed, "
        f"{report.skipped} already done; output in {report.output}"
    )


@app.command("eval")
def evaluate(
    file: Annotated[
        Path,
        typer.Argument(
            help="Labeled JSONL: {'text', 'labels': [...]} per line ([] for benign), or the categories "
            "as 0/1 fields; a line with neither is an error."
        ),
    ],
    model: Annotated[str | None, typer.Option(help="Backend or OpenAI model name.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Per-category AUPRC, precision/recall/F1 at the configured thresholds, and any-category AUPRC."""
    from seawall.evaluation import evaluate_scores, read_labeled_jsonl, score_texts, scores_matrix
    from seawall.service import ModerationService

    try:
        settings = load_settings(config)
        labeled = read_labeled_jsonl(file)
    except SeawallError as exc:
        raise fail(exc.message) from exc
    except UnicodeDecodeError as exc:
        raise fail(f"{file}: not valid UTF-8 ({exc.reason})") from exc

    async def run() -> tuple[list[Any], dict[str, float]]:
        service = ModerationService(settings)
        try:
            with progress_bar("scoring") as progress:
                task = progress.add_task("eval", total=len(labeled.texts))
                results = await score_texts(
                    service, labeled.texts, model, progress=lambda n: progress.advance(task, n)
                )
            backend = await service.backend(service.backend_name(model))
            thresholds = dict(getattr(backend, "thresholds", {}))
        finally:
            await service.aclose()
        thresholds.update(settings.moderation.thresholds)
        return results, thresholds

    try:
        results, thresholds = asyncio.run(run())
    except SeawallError as exc:
        raise fail(exc.message) from exc
    # Thresholds: the backend's own (local) plus configured overrides; 0.5 where neither says.
    report = evaluate_scores(labeled.labels, scores_matrix(results), thresholds)
    if json_output:
        print(json.dumps(report, indent=1))
        return
    table = Table("category", "positives", "AUPRC", "precision", "recall", "F1")
    for name, row in report["labels"].items():
        table.add_row(
            name,
            str(row["positives"]),
            f"{row['auprc']:.3f}",
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
        )
    Console().print(table)
    summary = report["summary"]
    Console().print(
        f"rows {summary['rows']}, any-category positives {summary['any_positives']}, "
        f"any-category AUPRC {summary['any_auprc']}, precision {summary['any_precision']}, "
        f"recall {summary['any_recall']}, false-positive rate {summary['false_positive_rate']}"
    )


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Option(help="Folder of the public training sets.")] = Path("../shared/data"),
    authored: Annotated[
        Path | None,
        typer.Option(help="Folder of seawall's authored JSONL (default: data/authored in the repo)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write artefacts (default: the package's).")
    ] = None,
    limit_per_source: Annotated[
        int | None, typer.Option(min=1, help="Cap rows per source (quick runs).")
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option(help="Train on only these sources (repeatable).")
    ] = None,
    semantic: Annotated[
        bool, typer.Option(help="Add the static-embedding block distilled from MiniLM (train extra).")
    ] = True,
    screen_negatives: Annotated[
        bool,
        typer.Option(
            help="Leave out clean comment-corpus rows that a first pass finds suspect for categories "
            "their annotators never judged (sexual, violence, self-harm, illicit)."
        ),
    ] = True,
    contextual: Annotated[
        bool, typer.Option(help="Train the contextual stage (MiniLM vectors, a head, a per-label blend).")
    ] = True,
    embedding_cache: Annotated[
        Path | None,
        typer.Option(help="Where MiniLM vectors of training texts are cached (default ~/.cache/seawall)."),
    ] = None,
    finetune_rows: Annotated[
        int,
        typer.Option(
            min=0,
            help="Fine-tune the contextual stage's encoder on at most this many training rows a source "
            "(torch, the train extra; about 24 rows/s on 2 CPU cores, a GPU when there is one). "
            "0 keeps the stock all-MiniLM-L6-v2 frozen.",
        ),
    ] = 0,
    finetune_epochs: Annotated[int, typer.Option(min=1, help="Passes over the fine-tuning rows.")] = 1,
    context_head_seed: Annotated[
        list[int] | None,
        typer.Option(
            help="Fit one contextual head per seed (repeatable) and ship their mean "
            "(default: one head, seed 0, as the shipped model)."
        ),
    ] = None,
    multilingual: Annotated[
        Literal["train", "keep", "none"],
        typer.Option(
            help="The multilingual stage: train it anew (multilingual-e5, the multilingual extra; slow "
            "on a CPU until its vectors are cached), keep the one in --out (or copy the shipped one "
            "there) when only the English data changed, or none."
        ),
    ] = "train",
) -> None:
    """Train the embedded model, calibrate thresholds on the dev split, write artefacts and model card."""
    from seawall.model.classifier import default_model_dir
    from seawall.training.finetune import FinetuneConfig
    from seawall.training.train import TrainConfig, default_authored_dir, train

    if finetune_rows and not contextual:
        raise fail("--finetune-rows fine-tunes the contextual stage's encoder: it needs --contextual")
    if finetune_epochs != 1 and not finetune_rows:
        raise fail("--finetune-epochs applies to a fine-tune: give --finetune-rows too")
    if context_head_seed and not contextual:
        raise fail("--context-head-seed seeds the contextual stage's head: it needs --contextual")

    config = TrainConfig(
        data_dir=data,
        authored_dir=authored if authored is not None else default_authored_dir(),
        out_dir=out or default_model_dir(),
        limit_per_source=limit_per_source,
        sources=tuple(source) if source else None,
        semantic=semantic,
        screen_score=TrainConfig.screen_score if screen_negatives else None,
        contextual=contextual,
        finetune_rows_per_source=finetune_rows,
        finetune=FinetuneConfig(epochs=finetune_epochs),
        multilingual=multilingual,
    )
    if context_head_seed:
        config.context_head_seeds = tuple(dict.fromkeys(context_head_seed))
    if embedding_cache is not None:
        config.embedding_cache = embedding_cache
    try:
        report = train(config, progress=lambda message: console.print(message))
    except SeawallError as exc:
        raise fail(exc.message) from exc
    console.print(f"dev: {report['dev']['summary']}")
    for mode, figures in report["held_out"].items():
        console.print(f"held-out sources, contextual {mode}: {figures['summary']}")


@app.command("config")
def show_config(
    config: ConfigOption = None,
    output: Annotated[
        Literal["text", "yaml"],
        typer.Option(
            "--format",
            help="text: 'name = value' and the meaning below; yaml: a settings file with comments.",
        ),
    ] = "text",
) -> None:
    """Print every setting: its current value, default and meaning."""
    from seawall.settings_view import settings_text, settings_yaml

    try:
        settings = load_settings(config)
    except SeawallError as exc:
        raise fail(exc.message) from exc
    width = min(shutil.get_terminal_size((80, 24)).columns, 100)
    render = settings_yaml if output == "yaml" else settings_text
    sys.stdout.write(render(settings, width))


def _register_subcommands() -> None:
    from seawall.admin_cli import keys_app, org, users_app
    from seawall.redteam.cli import app as redteam_app
    from seawall.store.cli import app as db_app
    from seawall.store.cli import audit_app
    from seawall.ui.cli import accounts_app, tokens_app

    app.add_typer(keys_app, name="keys")
    app.add_typer(users_app, name="users")
    app.command("org")(org)
    app.add_typer(db_app, name="db")
    app.add_typer(audit_app, name="audit")
    app.add_typer(redteam_app, name="redteam")
    app.add_typer(accounts_app, name="accounts")
    app.add_typer(tokens_app, name="tokens")


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
