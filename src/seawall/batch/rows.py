"""From input records to output rows: the one row → result function every batch engine uses.

A record is what one input line or table row holds: a string, or an object whose ``input`` (else
``text``) is a string or a list of content parts. Its output row is the record with a
``results`` list added (a string record becomes ``{"input": ..., "results": ...}``), each
result as :meth:`seawall.results.ModerationResult.to_seawall` gives it. ``seawall moderate``,
``seawall eval``, the Ray engine's workers and the Python API all go through
:func:`moderate_items`, so their scores cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from seawall.errors import DataError
from seawall.results import ModerationResult
from seawall.service import ModerationService

#: Texts per call to the moderation service when a caller does not say (the local model's batch).
DEFAULT_CHUNK = 256


def record_input(record: Any, where: str) -> Any:
    """The input to moderate in ``record``; ``where`` (``file:line``) prefixes the error when
    the record holds none."""
    if isinstance(record, str):
        return record
    if isinstance(record, dict) and ("input" in record or "text" in record):
        item = record["input"] if "input" in record else record["text"]
        if not isinstance(item, str | list):
            raise DataError(f"{where}: 'input'/'text' must be a string or a list of content parts")
        return item
    raise DataError(f"{where}: expected a string or an object with 'input' or 'text'")


def output_row(record: Any, results: Sequence[ModerationResult]) -> dict[str, Any]:
    """``record`` with its results added, in the shape ``seawall moderate`` prints."""
    body = [result.to_seawall() for result in results]
    return {**record, "results": body} if isinstance(record, dict) else {"input": record, "results": body}


async def moderate_items(
    service: ModerationService,
    items: Sequence[Any],
    model: str | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
    progress: Callable[[int], None] | None = None,
) -> list[list[ModerationResult]]:
    """The results of each item (a string, or a list of strings / content parts), in order.

    Plain strings are scored ``chunk`` at a time in one service call each; other items one by
    one. ``progress`` is told how many items each step finished.
    """
    out: list[list[ModerationResult]] = []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        results: dict[int, list[ModerationResult]] = {}
        strings = [i for i, item in enumerate(part) if isinstance(item, str)]
        if strings:
            batched = (await service.moderate([part[i] for i in strings], model)).results
            results.update({i: [result] for i, result in zip(strings, batched, strict=True)})
        for i, item in enumerate(part):
            if i not in results:
                results[i] = (await service.moderate(item, model)).results
        out.extend(results[i] for i in range(len(part)))
        if progress is not None:
            progress(len(part))
    return out


async def moderate_records(
    service: ModerationService,
    records: Sequence[Any],
    model: str | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
    where: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Output rows for ``records``; ``where`` names each record's place for error messages."""
    places = where if where is not None else [f"record {n}" for n in range(1, len(records) + 1)]
    items = [record_input(record, place) for record, place in zip(records, places, strict=True)]
    results = await moderate_items(service, items, model, chunk=chunk, progress=progress)
    return [output_row(record, found) for record, found in zip(records, results, strict=True)]
