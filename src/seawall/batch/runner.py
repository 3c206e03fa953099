"""A resumable batch run: plan the blocks, skip the finished ones, moderate the rest on an engine
(``single``: this process; ``ray``: an actor pool on a Ray cluster), record each finished block.

Both engines run :class:`seawall.batch.worker.BlockWorker`, which loads the model once and
moderates block after block through :func:`seawall.batch.rows.moderate_records`, the function
``seawall moderate`` uses too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from seawall import errors
from seawall.batch.files import (
    MANIFEST,
    MANIFEST_VERSION,
    Format,
    arrow,
    input_files,
    input_format,
    jsonl_records,
    load_manifest,
    part_name,
    plan_blocks,
    save_manifest,
)
from seawall.batch.rows import DEFAULT_CHUNK
from seawall.batch.worker import BlockWorker
from seawall.errors import DataError, SeawallError
from seawall.settings import Settings, load_settings

Engine = Literal["single", "ray"]
#: Input lines (or Parquet rows) per block: the unit of work, of progress and of resumption.
DEFAULT_BLOCK_ROWS = 2000


@dataclass
class BatchReport:
    """What a run did."""

    output: Path
    blocks: int
    skipped: int
    computed: int
    rows: int
    flagged: int
    seconds: float
    #: Blocks still to do (a run stopped by ``max_blocks``); 0 when the output is complete.
    remaining: int = 0


def moderate_files(
    inputs: Path | str | Sequence[Path | str],
    output: Path | str,
    *,
    engine: Engine = "single",
    output_format: Format | None = None,
    model: str | None = None,
    settings: Settings | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    chunk: int = DEFAULT_CHUNK,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    address: str | None = None,
    restart: bool = False,
    max_blocks: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchReport:
    """Moderate JSONL/Parquet ``inputs`` (files or folders) into part files in the ``output`` folder.

    Resumable: a rerun with the same inputs and options skips the blocks already finished (see
    :mod:`seawall.batch.files`); ``restart`` discards them first. ``engine="ray"`` runs the blocks
    on an actor pool of ``workers`` (default: the cluster's CPUs) of the Ray cluster at
    ``address`` (default: ``$RAY_ADDRESS``, else a local instance), each running the model on
    ``threads_per_worker`` CPU threads (default: ``moderation.threads``, else the node's cores
    divided among the workers; see :mod:`seawall.batch.ray_engine`). ``max_blocks`` stops after that
    many blocks (the rest wait for the next run). ``progress(rows_done, rows_total)`` is called
    as blocks finish. Bad input raises :class:`seawall.errors.DataError` naming the line; the
    blocks finished before it stay recorded.
    """
    if block_rows < 1 or chunk < 1:
        raise DataError("block_rows and chunk must be at least 1")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise DataError("threads_per_worker must be at least 1")
    if engine not in ("single", "ray"):
        raise DataError(f"unknown engine {engine!r}: use 'single' or 'ray'")
    started = time.perf_counter()
    paths = [Path(inputs)] if isinstance(inputs, str | Path) else [Path(p) for p in inputs]
    files = input_files(paths)
    fmt: Format = output_format or input_format(files[0])
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder: the batch output is a folder of part files")
    out.mkdir(parents=True, exist_ok=True)
    blocks = plan_blocks(files, block_rows)
    header = {
        "version": MANIFEST_VERSION,
        "inputs": [str(path.resolve()) for path in files],
        "block_rows": block_rows,
        "format": fmt,
        "model": model,
    }
    manifest = None if restart else load_manifest(out)
    if restart:
        _clear(out)
    if manifest is not None:
        differs = [key for key, value in header.items() if manifest.get(key) != value]
        if differs:
            raise DataError(
                f"{out} holds a run with other {', '.join(differs)}; use another output folder or --restart"
            )
    else:
        manifest = {**header, "blocks": {}}
    done: dict[str, Any] = manifest["blocks"]
    by_id = {block["id"]: block for block in blocks}
    for block_id in list(done):
        entry, block = done[block_id], by_id.get(block_id)
        if (
            block is None
            or entry["digest"] != block["digest"]
            or (entry["file"] and not (out / entry["file"]).is_file())
        ):
            del done[block_id]  # its input changed or its part file is gone: compute it again
    pending = [block for block in blocks if block["id"] not in done]
    skipped = len(blocks) - len(pending)
    if max_blocks is not None:
        pending = pending[:max_blocks]
    save_manifest(out, manifest)
    total = sum(block["count"] for block in blocks)
    finished = sum(by_id[block_id]["count"] for block_id in done)
    if progress is not None:
        progress(finished, total)

    settings = settings or load_settings()
    for block in pending:  # a part file left by an older run for a block that is computed again
        (out / part_name(block["id"], fmt)).unlink(missing_ok=True)
    computed = 0
    results = _run_single if engine == "single" else _run_ray
    try:
        with closing(
            results(pending, (settings, model, chunk, str(out), fmt), workers, address, threads_per_worker)
        ) as summaries:
            for summary in summaries:
                if summary["error"]:
                    kind = getattr(errors, str(summary["error_type"]), None)
                    if not (isinstance(kind, type) and issubclass(kind, SeawallError)):
                        kind = SeawallError
                    try:
                        error = kind(str(summary["error"]))
                    except TypeError:  # a class that wants more than a message
                        error = SeawallError(str(summary["error"]))
                    raise error
                _record(done, by_id[summary["id"]], summary)
                save_manifest(out, manifest)
                computed += 1
                finished += by_id[summary["id"]]["count"]
                if progress is not None:
                    progress(finished, total)
    finally:
        # A failure (bad input, a lost worker, Ctrl-C) may come before the driver heard of every
        # finished block: adopt the part files this run's workers wrote, so that none is lost.
        adopted = [
            block
            for block in pending
            if block["id"] not in done and (out / part_name(block["id"], fmt)).is_file()
        ]
        for block in adopted:
            _record(done, block, _summary(out / part_name(block["id"], fmt), fmt, block["id"]))
            computed += 1
        if adopted:
            save_manifest(out, manifest)
    remaining = len(blocks) - len(done)
    return BatchReport(
        output=out,
        blocks=len(blocks),
        skipped=skipped,
        computed=computed,
        rows=sum(entry["rows"] for entry in done.values()),
        flagged=sum(entry["flagged"] for entry in done.values()),
        seconds=time.perf_counter() - started,
        remaining=remaining,
    )


def _record(done: dict[str, Any], block: dict[str, Any], summary: dict[str, Any]) -> None:
    done[block["id"]] = {
        "digest": block["digest"],
        "rows": int(summary["rows"]),
        "flagged": int(summary["flagged"]),
        "file": str(summary["file"]),
    }


def _summary(path: Path, fmt: Format, block_id: str) -> dict[str, Any]:
    """A finished part file's summary, from the file itself."""
    if fmt == "jsonl":
        with path.open("rb") as stream:
            rows = [row for _, row in jsonl_records(stream, str(path))]
    else:
        _, pq = arrow()
        rows = pq.read_table(path, columns=["results"]).to_pylist()
    flagged = sum(any(result["flagged"] for result in row["results"]) for row in rows)
    return {"id": block_id, "rows": len(rows), "flagged": flagged, "file": path.name}


def _clear(out: Path) -> None:
    """Remove a previous run's manifest, part files and leftover temporary files."""
    for path in out.iterdir():
        ours = path.name.startswith("part-") or (path.name.startswith(".") and path.name.endswith(".tmp"))
        if path.is_file() and (ours or path.name == MANIFEST):
            path.unlink()


def _run_single(
    pending: list[dict[str, Any]],
    args: tuple[Any, ...],
    workers: int | None,
    address: str | None,
    threads: int | None,
) -> Generator[dict[str, Any]]:
    if not pending:
        return
    worker = BlockWorker(*args)
    try:
        for block in pending:
            yield worker(block)
    finally:
        worker.close()


def _run_ray(
    pending: list[dict[str, Any]],
    args: tuple[Any, ...],
    workers: int | None,
    address: str | None,
    threads: int | None,
) -> Generator[dict[str, Any]]:
    from seawall.batch.ray_engine import run_blocks

    yield from run_blocks(pending, args, workers, address, threads)
