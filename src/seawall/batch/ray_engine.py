"""The Ray engine: blocks moderated by an actor pool on Ray Data (``pip install 'seawall[ray]'``).

Each actor is a :class:`seawall.batch.worker.BlockWorker`: it loads the model once and then
takes block after block. The blocks are a Ray dataset of one small descriptor per block (its
file, line or row range, digest), so Ray Data schedules them across the pool and streams each
block's summary back to the driver as soon as it is finished, in whatever order they finish.
The workers read their block's input and write its part file themselves: on a cluster, the
input and output paths must be on storage every node sees (a shared file system).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

from seawall.batch.worker import BlockWorker
from seawall.errors import ConfigurationError, SeawallError


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigurationError` that names the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigurationError(
            "the Ray engine needs Ray, which is not installed: pip install 'seawall[ray]'"
        ) from exc
    return ray


def connect(address: str | None, workers: int | None) -> bool:
    """Join the Ray cluster at ``address`` (``None``: ``$RAY_ADDRESS``, else start a local
    instance with ``workers`` CPUs); True when this call started it (the caller shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(
            address=address,
            num_cpus=None if target else workers,  # a cluster's CPUs are the cluster's business
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=True,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"reach the Ray cluster at {target}" if target else "start a local Ray instance"
        raise ConfigurationError(f"cannot {where}: {exc}") from exc
    return True


def seawall_cause(exc: BaseException) -> SeawallError | None:
    """The seawall error (a bad input line, a model that failed to load) behind a Ray error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SeawallError):
            return current
        cause = getattr(current, "cause", None)
        if isinstance(cause, SeawallError):
            return cause
        current = current.__cause__ or current.__context__
    return None


def run_blocks(
    pending: list[dict[str, Any]], args: tuple[Any, ...], workers: int | None, address: str | None
) -> Generator[dict[str, Any]]:
    """Each pending block's summary, as the actor pool finishes it."""
    ray = require_ray()
    if not pending:
        return
    started = connect(address, workers)
    try:
        size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = min(size, len(pending))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller shows progress in rows
        dataset = ray.data.from_items(pending, override_num_blocks=len(pending))
        dataset = dataset.map(
            BlockWorker,
            fn_constructor_args=args,
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=1,
        )
        try:
            yield from dataset.iter_rows()
        except Exception as exc:
            cause = seawall_cause(exc)
            if cause is None:
                raise
            # Ray's wrapper class derives from the seawall error; raise seawall's own class.
            kind = next(c for c in type(cause).__mro__ if c.__module__.startswith("seawall."))
            raise kind(cause.message) from exc
    finally:
        if started:
            ray.shutdown()
