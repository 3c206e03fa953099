"""Micro-batching: concurrent callers share one model call.

Scoring 64 texts at once costs little more than scoring one, so requests that
arrive while a batch is being scored are queued and scored together in the
next batch, on a worker thread; each caller gets its own slice back. A large
submission is split into batches of at most ``max_items``, and the queue is
bounded: when it is full, callers get :class:`seawall.errors.OverloadedError`
(HTTP 503) at once instead of waiting without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from seawall.errors import OverloadedError

Item = TypeVar("Item")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[Item, Out]):
    items: Sequence[Item]
    future: asyncio.Future[list[Out]]


class MicroBatcher(Generic[Item, Out]):
    """Collects items from concurrent ``submit`` calls and runs ``fn`` on each batch in a thread."""

    def __init__(
        self,
        fn: Callable[[list[Item]], list[Out]],
        *,
        window_s: float,
        max_items: int,
        max_queued_items: int = 100_000,
    ) -> None:
        self._fn = fn
        self._window_s = window_s
        self._max_items = max_items
        self._max_queued_items = max_queued_items
        self._queued_items = 0
        self._queue: asyncio.Queue[_Pending[Item, Out]] | None = None
        self._in_flight: list[_Pending[Item, Out]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[Item]) -> list[Out]:
        if not items:
            return []
        if self._queued_items + len(items) > self._max_queued_items:
            raise OverloadedError(
                f"the moderation queue is full ({self._queued_items} texts waiting); retry shortly."
            )
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue))
        loop = asyncio.get_running_loop()
        parts: list[_Pending[Item, Out]] = []
        for start in range(0, len(items), self._max_items):
            pending = _Pending(items[start : start + self._max_items], loop.create_future())
            parts.append(pending)
            self._queued_items += len(pending.items)
            self._queue.put_nowait(pending)
        results = await asyncio.gather(*(part.future for part in parts))
        return [out for chunk in results for out in chunk]

    async def _run(self, queue: asyncio.Queue[_Pending[Item, Out]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            size = len(batch[0].items)
            deadline = loop.time() + self._window_s
            while size < self._max_items:
                # Take whatever is already queued; wait for more only within the window.
                if not queue.empty():
                    pending = queue.get_nowait()
                else:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        pending = await asyncio.wait_for(queue.get(), timeout)
                    except TimeoutError:
                        break
                if size + len(pending.items) > self._max_items:
                    await self._score(batch)
                    batch, size = [], 0
                batch.append(pending)
                size += len(pending.items)
            await self._score(batch)

    async def _score(self, batch: list[_Pending[Item, Out]]) -> None:
        if not batch:
            return
        self._queued_items -= sum(len(pending.items) for pending in batch)
        live = [pending for pending in batch if not pending.future.done()]  # skip cancelled callers
        if not live:
            return
        flat = [item for pending in live for item in pending.items]
        self._in_flight = live
        try:
            outputs = await asyncio.to_thread(self._fn, flat)
        except Exception as exc:  # handed to every waiting caller, which re-raises it
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        offset = 0
        for pending in live:
            count = len(pending.items)
            if not pending.future.done():
                pending.future.set_result(outputs[offset : offset + count])
            offset += count

    async def aclose(self) -> None:
        """Stop the worker; callers still waiting get :class:`OverloadedError` rather than hanging."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        waiting = list(self._in_flight)
        if self._queue is not None:
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            self._queue = None
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(OverloadedError("the moderation service is shutting down."))
        self._in_flight = []
        self._queued_items = 0
