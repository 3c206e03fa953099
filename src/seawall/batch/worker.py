"""The worker of a batch run: loads the model once, then turns block after block of input into a
part file (in this process for the single engine, as a Ray actor for the Ray engine)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seawall.batch.files import Format, part_name, read_block, write_part
from seawall.batch.rows import moderate_records
from seawall.errors import DataError, SeawallError
from seawall.service import ModerationService
from seawall.settings import Settings


class BlockWorker:
    """Moderates blocks into part files; one model load per instance (a Ray actor, or this process)."""

    def __init__(
        self, settings: Settings, model: str | None, chunk: int, output: str, output_format: Format
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._service = ModerationService(settings)
        self._model = model
        self._chunk = chunk
        self._output = Path(output)
        self._format: Format = output_format
        # Load the model now, once, rather than inside the first block.
        self._loop.run_until_complete(self._service.backend(self._service.backend_name(model)))

    def rows(self, records: Sequence[Any], where: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Output rows for ``records`` (what :func:`seawall.batch.moderate_dataset` uses)."""
        return self._loop.run_until_complete(
            moderate_records(self._service, records, self._model, chunk=self._chunk, where=where)
        )

    def __call__(self, block: dict[str, Any]) -> dict[str, Any]:
        """The block's summary; a seawall error (bad input) comes back in it rather than raised, so
        that the driver gets its message intact from any engine (Ray keeps only a traceback's text)."""
        try:
            summary = self._block(block)
        except SeawallError as exc:
            return {
                "id": block["id"],
                "rows": 0,
                "flagged": 0,
                "file": "",
                "error": exc.message,
                "error_type": type(exc).__name__,
            }
        return {**summary, "error": "", "error_type": ""}

    def _block(self, block: dict[str, Any]) -> dict[str, Any]:
        records, where = read_block(block)
        rows = self.rows(records, where)
        name = part_name(block["id"], self._format) if rows else ""
        if rows:
            try:
                write_part(rows, self._output / name, self._format)
            except DataError as exc:
                unit, first = (
                    ("lines", block["first"]) if block["format"] == "jsonl" else ("rows", block["first"] + 1)
                )
                place = f"{block['file']} {unit} {first}-{first + block['count'] - 1}"
                raise DataError(f"{place}: {exc.message}") from exc
        flagged = sum(any(result["flagged"] for result in row["results"]) for row in rows)
        return {"id": block["id"], "rows": len(rows), "flagged": flagged, "file": name}

    def close(self) -> None:
        self._loop.run_until_complete(self._service.aclose())
        self._loop.close()
