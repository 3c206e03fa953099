"""Batch files: JSONL and Parquet input cut into numbered blocks, part files written atomically,
and the manifest that makes a run resumable.

A block is a fixed range of an input file: ``block_rows`` physical lines of a JSONL file, or
``block_rows`` rows of a Parquet file. Its id (``FFFF-BBBBBB``: file number, block number) follows
from the inputs and ``block_rows`` alone, so a rerun plans the same blocks. Each finished block is
one part file in the output folder, written to a temporary name and renamed into place; the
manifest (``_seawall_batch.json``, also replaced atomically) lists the finished blocks with a
digest of the input they were computed from. A rerun skips every block that the manifest lists,
whose part file exists and whose input digest is unchanged, and computes the rest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from seawall.categories import CATEGORIES, EXTRA_LABELS
from seawall.errors import ConfigurationError, DataError

Format = Literal["jsonl", "parquet"]
MANIFEST = "_seawall_batch.json"
MANIFEST_VERSION = 1
_SUFFIXES: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}


def arrow() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or a :class:`ConfigurationError` naming the extra to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ConfigurationError(
            "Parquet needs pyarrow, which is not installed: pip install 'seawall[ray]'"
        ) from exc
    return pyarrow, pyarrow.parquet


def input_format(path: Path) -> Format:
    """The format of an input file, by its name."""
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise DataError(f"{path}: unknown input format (expected .jsonl, .ndjson or .parquet)") from None


def input_files(paths: Sequence[Path]) -> list[Path]:
    """The input files: each path a file, or a folder whose JSONL/Parquet files are taken in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
            if not found:
                raise DataError(f"{path}: no .jsonl or .parquet files in this folder")
            files.extend(found)
        elif path.is_file():
            input_format(path)
            files.append(path)
        else:
            raise DataError(f"no such file: {path}")
    if not files:
        raise DataError("no input files given")
    return files


def plan_blocks(files: Sequence[Path], block_rows: int) -> list[dict[str, Any]]:
    """The blocks of ``files``: plain dicts (they travel to workers) with the block's id, file,
    format, first line or row, count, byte range (JSONL) and input digest."""
    blocks: list[dict[str, Any]] = []
    for number, path in enumerate(files):
        scan = _scan_jsonl if input_format(path) == "jsonl" else _scan_parquet
        for index, block in enumerate(scan(path, block_rows)):
            block.update(id=f"{number:04d}-{index:06d}", file=str(path), format=input_format(path))
            blocks.append(block)
    return blocks


def _scan_jsonl(path: Path, block_rows: int) -> Iterator[dict[str, Any]]:
    """Line ranges of ``block_rows`` lines with their byte ranges and a BLAKE2 digest of their bytes."""
    first, count, start, position = 1, 0, 0, 0
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as stream:
        for line in stream:
            digest.update(line)
            position += len(line)
            count += 1
            if count == block_rows:
                yield {
                    "first": first,
                    "count": count,
                    "start": start,
                    "end": position,
                    "digest": digest.hexdigest(),
                }
                first, count, start = first + count, 0, position
                digest = hashlib.blake2b(digest_size=16)
    if count:
        yield {"first": first, "count": count, "start": start, "end": position, "digest": digest.hexdigest()}


def _scan_parquet(path: Path, block_rows: int) -> Iterator[dict[str, Any]]:
    """Row ranges of ``block_rows`` rows; the digest stands for the file's size, time and row count."""
    _, pq = arrow()

    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # pyarrow raises its own errors for a file that is not Parquet
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    stat = path.stat()
    for first in range(0, rows, block_rows):
        count = min(block_rows, rows - first)
        mark = f"{stat.st_size}:{stat.st_mtime_ns}:{rows}:{first}:{count}"
        yield {"first": first, "count": count, "start": 0, "end": 0, "digest": mark}


def jsonl_records(
    stream: io.BufferedIOBase | Any, source: str, first_line: int = 1
) -> Iterator[tuple[int, Any]]:
    """(line number, decoded JSON) for each non-blank line; bad UTF-8 or JSON names the line."""
    for number, raw in enumerate(stream, start=first_line):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}:{number}: not valid UTF-8 ({exc.reason})") from exc
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}:{number}: not valid JSON: {exc.msg}") from exc


def read_block(block: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """The records of ``block`` and where each comes from (``file:line`` or ``file: row N``)."""
    path = Path(block["file"])
    if block["format"] == "jsonl":
        with path.open("rb") as stream:
            stream.seek(block["start"])
            data = stream.read(block["end"] - block["start"])
        pairs = list(jsonl_records(io.BytesIO(data), str(path), block["first"]))
        return [record for _, record in pairs], [f"{path}:{number}" for number, _ in pairs]
    _, pq = arrow()

    first, count = block["first"], block["count"]
    parquet = pq.ParquetFile(path)
    groups, offset = [], 0
    for group in range(parquet.metadata.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        if offset + size > first and offset < first + count:
            groups.append((group, offset))
        offset += size
    table = parquet.read_row_groups([group for group, _ in groups])
    records = table.slice(first - groups[0][1], count).to_pylist() if groups else []
    return records, [f"{path}: row {first + n + 1}" for n in range(len(records))]


def part_name(block_id: str, fmt: Format) -> str:
    return f"part-{block_id}.{fmt}"


def write_part(rows: list[dict[str, Any]], path: Path, fmt: Format) -> None:
    """Write a block's output rows to ``path`` atomically (a temporary file renamed into place)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if fmt == "jsonl":
        with temporary.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    else:
        _, pq = arrow()

        pq.write_table(rows_table(rows), temporary)
    os.replace(temporary, path)


def result_arrow_type() -> Any:
    """The Arrow type of one result, as :meth:`seawall.results.ModerationResult.to_seawall` shapes it."""
    pa, _ = arrow()

    def struct(names: Sequence[str], kind: Any) -> Any:
        return pa.struct([(name, kind) for name in names])

    return pa.struct(
        [
            ("flagged", pa.bool_()),
            ("categories", struct(CATEGORIES, pa.bool_())),
            ("category_scores", struct(CATEGORIES, pa.float64())),
            ("category_applied_input_types", struct(CATEGORIES, pa.list_(pa.string()))),
            ("extra_scores", struct(EXTRA_LABELS, pa.float64())),
            ("extra_flags", struct(EXTRA_LABELS, pa.bool_())),
            ("not_assessed", pa.map_(pa.string(), pa.list_(pa.string()))),
            ("backend", pa.string()),
            ("notes", pa.list_(pa.string())),
        ]
    )


def rows_table(rows: list[dict[str, Any]]) -> Any:
    """Output rows as an Arrow table: the record's own columns plus a typed ``results`` column."""
    pa, _ = arrow()

    results = pa.array([row["results"] for row in rows], type=pa.list_(result_arrow_type()))
    # Every column any record has, in order of first appearance: Arrow takes a table's columns from
    # its first row, which would drop the fields later records add (a "text" after an "input").
    columns = list(dict.fromkeys(key for row in rows for key in row if key != "results"))
    fields = [{key: row.get(key) for key in columns} for row in rows]
    try:
        table = pa.Table.from_pylist(fields) if any(fields) else pa.table({})
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise DataError(
            f"the records' fields do not fit one Parquet type per column ({exc}); "
            "a field that is a string in some records and a list in others needs JSONL output"
        ) from exc
    if table.num_columns == 0:
        return pa.table({"results": results})
    return table.append_column("results", results)


def table_rows(table: Any) -> list[dict[str, Any]]:
    """Rows of an output table, shaped as the JSONL output holds them."""
    return [plain_row(row) for row in table.to_pylist()]


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """An output row read from Arrow, shaped as the JSONL output holds it (maps back to objects)."""
    for result in row.get("results") or []:
        result["not_assessed"] = dict(result["not_assessed"] or [])
    return row


def read_output(output: Path) -> Iterator[dict[str, Any]]:
    """Every output row of a finished (or partial) run, in input order, as the JSONL output holds them."""
    manifest = load_manifest(output)
    if manifest is None:
        raise DataError(f"{output}: no batch manifest ({MANIFEST}) here")
    for block_id in sorted(manifest["blocks"]):
        entry = manifest["blocks"][block_id]
        if not entry["file"]:
            continue
        path = output / entry["file"]
        if manifest["format"] == "jsonl":
            with path.open("rb") as stream:
                for _, row in jsonl_records(stream, str(path)):
                    yield row
        else:
            _, pq = arrow()

            yield from table_rows(pq.read_table(path))


def load_manifest(output: Path) -> dict[str, Any] | None:
    path = output / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable batch manifest ({exc}); remove it or use --restart") from exc
    if manifest.get("version") != MANIFEST_VERSION:
        raise DataError(
            f"{path}: batch manifest version {manifest.get('version')!r} is not {MANIFEST_VERSION}"
        )
    return manifest


def save_manifest(output: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically: a reader (or a crash) sees the old one or the new one."""
    temporary = output / f".{MANIFEST}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(temporary, output / MANIFEST)
