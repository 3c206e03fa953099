"""Batch moderation: a corpus of JSONL or Parquet, in this process or on a Ray cluster.

::

    from seawall.batch import moderate_files, read_output
    report = moderate_files("chats.jsonl", "scored/", engine="ray")   # resumable
    for row in read_output(report.output): ...

    from seawall.batch import moderate_dataset                       # inside a Ray Data pipeline
    scored = moderate_dataset(ray.data.read_parquet("/shared/uploads/"), workers=8)

Every path goes through :func:`seawall.batch.rows.moderate_records`, the function
``seawall moderate`` uses, so a row's results are the same whichever engine scored it.
Ray is optional: ``pip install 'seawall[ray]'``.
"""

from __future__ import annotations

from typing import Any

from seawall.batch.files import read_output
from seawall.batch.rows import DEFAULT_CHUNK, moderate_items, moderate_records, output_row, record_input
from seawall.batch.runner import DEFAULT_BLOCK_ROWS, BatchReport, moderate_files
from seawall.batch.worker import BlockWorker
from seawall.settings import Settings, load_settings


class _DatasetWorker:
    """Ray Data callable class: one model load per actor, then Arrow batches of records → rows."""

    def __init__(self, settings: Settings, model: str | None, chunk: int) -> None:
        self._worker = BlockWorker(settings, model, chunk, ".", "parquet")

    def __call__(self, batch: Any) -> Any:
        from seawall.batch.files import rows_table

        return rows_table(self._worker.rows(batch.to_pylist()))


def moderate_dataset(
    dataset: Any,
    *,
    model: str | None = None,
    settings: Settings | None = None,
    chunk: int = DEFAULT_CHUNK,
    workers: int | tuple[int, int] = 1,
    threads_per_worker: int | None = None,
) -> Any:
    """A lazy Ray dataset of ``dataset``'s rows with a ``results`` column added.

    Each row needs an ``input`` or ``text`` column (a string, or a list of content parts).
    ``workers``: the actor pool's size, or ``(min, max)`` to let Ray Data scale it.
    ``threads_per_worker``: CPU threads each actor's model uses, reserved from Ray as its CPUs
    (default: ``moderation.threads``, else the cluster's CPUs divided among the most workers, at most
    one node's; see :mod:`seawall.batch.ray_engine`). Results are
    the Arrow form of what ``seawall moderate`` prints (``seawall.batch.files.table_rows`` turns
    a batch back into those objects). Not resumable by itself; :func:`moderate_files` is.
    """
    from seawall.batch.ray_engine import pool_shape, require_ray, worker_settings

    ray = require_ray()
    settings = settings or load_settings()
    size = {"size": workers} if isinstance(workers, int) else {"min_size": workers[0], "max_size": workers[1]}
    most = workers if isinstance(workers, int) else workers[1]
    _, threads = pool_shape(ray, most, threads_per_worker or settings.moderation.threads)
    return dataset.map_batches(
        _DatasetWorker,
        fn_constructor_args=(worker_settings(settings, threads), model, chunk),
        batch_size=chunk,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(**size),
        num_cpus=threads,
    )


__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "DEFAULT_CHUNK",
    "BatchReport",
    "BlockWorker",
    "moderate_dataset",
    "moderate_files",
    "moderate_items",
    "moderate_records",
    "output_row",
    "read_output",
    "record_input",
]
