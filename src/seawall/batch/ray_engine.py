"""The Ray engine: blocks moderated by an actor pool on Ray Data (``pip install 'seawall[ray]'``).

Each actor is a :class:`seawall.batch.worker.BlockWorker`: it loads the model once and then
takes block after block. The blocks are a Ray dataset of one small descriptor per block (its
file, line or row range, digest), so Ray Data schedules them across the pool and streams each
block's summary back to the driver as soon as it is finished, in whatever order they finish.
The workers read their block's input and write its part file themselves: on a cluster, the
input and output paths must be on storage every node sees (a shared file system).

**Threads.** onnxruntime runs a session on every core of its machine unless told otherwise, so
several actors on one node would each start a thread per core and fight over them. Each actor
therefore gets a share: ``threads_per_worker`` (``--threads-per-worker``; else the settings'
``moderation.threads``; else the node's cores divided among the workers), set as
``moderation.threads`` in the settings it builds its model from, and reserved from Ray as the
actor's ``num_cpus``, so Ray places at most a node's CPUs / threads actors on it.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

from seawall.batch.worker import BlockWorker
from seawall.errors import ConfigurationError, SeawallError
from seawall.settings import Settings


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


def connect(address: str | None, workers: int | None, threads: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` (``None``: ``$RAY_ADDRESS``, else start a local
    instance with CPUs for ``workers`` actors of ``threads`` threads each: ``threads`` defaults to
    this machine's cores divided among the workers, and without ``workers`` the instance has every
    core); True when this call started it (the caller shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS")
    cpus = None
    if workers is not None:
        cpus = workers * (threads or max(1, (os.cpu_count() or 1) // workers))
    try:
        ray.init(
            address=address,
            num_cpus=None if target else cpus,  # a cluster's CPUs are the cluster's business
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=True,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"reach the Ray cluster at {target}" if target else "start a local Ray instance"
        raise ConfigurationError(f"cannot {where}: {exc}") from exc
    return True


def pool_shape(ray: Any, workers: int | None, threads: int | None) -> tuple[int, int]:
    """The actor pool's size and each actor's threads on the connected cluster: ``workers`` (default:
    its CPUs divided by ``threads``, or all of them) and ``threads`` (default: its CPUs divided among
    the workers, at most one node's). A :class:`ConfigurationError` when no node has ``threads`` CPUs:
    Ray could never place such an actor."""
    total = max(1, int(ray.cluster_resources().get("CPU", 1)))
    nodes = [int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    largest = max([*nodes, 1])
    if threads is None:
        size = workers or total
        return size, max(1, min(largest, total // size))
    if threads > largest:
        raise ConfigurationError(
            f"{threads} threads per worker: no node of the Ray cluster has that many CPUs (the largest has "
            f"{largest}); use --threads-per-worker {largest} or fewer"
        )
    return workers or max(1, total // threads), threads


def worker_settings(settings: Settings, threads: int) -> Settings:
    """``settings`` with the local model on ``threads`` CPU threads (``moderation.threads``)."""
    return settings.model_copy(
        update={"moderation": settings.moderation.model_copy(update={"threads": threads})}
    )


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
    pending: list[dict[str, Any]],
    args: tuple[Any, ...],
    workers: int | None,
    address: str | None,
    threads: int | None = None,
) -> Generator[dict[str, Any]]:
    """Each pending block's summary, as the actor pool finishes it. ``args`` are the
    :class:`BlockWorker`'s (settings first); each actor runs the model on ``threads`` threads
    (default: ``moderation.threads`` of the settings, else its share of the node's cores)."""
    ray = require_ray()
    if not pending:
        return
    settings: Settings = args[0]
    threads = threads or settings.moderation.threads
    started = connect(address, workers, threads)
    try:
        size, threads = pool_shape(ray, workers, threads)
        size = min(size, len(pending))
        args = (worker_settings(settings, threads), *args[1:])
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller shows progress in rows
        dataset = ray.data.from_items(pending, override_num_blocks=len(pending))
        dataset = dataset.map(
            BlockWorker,
            fn_constructor_args=args,
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=threads,  # what the actor's model uses, so Ray never packs more on a node
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
